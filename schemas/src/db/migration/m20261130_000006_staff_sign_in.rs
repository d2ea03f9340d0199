//! What signing staff in over HTTP needs: a password hash, how many sessions they take at once,
//! and the time before which their tokens are no longer accepted (set when they are disabled or
//! their role is lowered, and loaded by the gateway at start).

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000006_staff_sign_in"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters a table one column at a time.
        let columns = [
            // PHC string (argon2id); staff without one cannot sign in with a password.
            text_null(Agents::PasswordHash),
            integer(Agents::Capacity).default(3).to_owned(),
            // Unix seconds; 0: never revoked.
            big_integer(Agents::TokensNotBefore).default(0).to_owned(),
        ];
        for column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Agents::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Agents::PasswordHash,
            Agents::Capacity,
            Agents::TokensNotBefore,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Agents::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    PasswordHash,
    Capacity,
    TokensNotBefore,
}

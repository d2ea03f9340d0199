//! Usernames are unique regardless of case: `Ann` and `ann` were two accounts, which a person
//! reading the record (or signing in) takes for one. A unique index on the lowercase username
//! holds it for every writer. Usernames are ASCII (`people::valid_username`), so SQLite's and
//! PostgreSQL's `lower` agree.
//!
//! A database that already holds two usernames differing only by case cannot take the index:
//! the migration then stops and names them, so that an admin renames one (a direct update of
//! `agents.subject`) before upgrading, rather than courtchat picking one.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261212_000012_staff_username_folded"
    }
}

const INDEX: &str = "idx_agents_subject_folded";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        let clashes = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT lower(subject) AS folded FROM agents GROUP BY lower(subject) \
                 HAVING COUNT(*) > 1 ORDER BY 1 LIMIT 10",
            ))
            .await?;
        if !clashes.is_empty() {
            let names: Vec<String> = clashes
                .iter()
                .filter_map(|row| row.try_get::<String>("", "folded").ok())
                .collect();
            return Err(DbErr::Migration(format!(
                "usernames must be unique regardless of case, but these name more than one \
                 member of staff: {}; rename all but one of each, then start again",
                names.join(", ")
            )));
        }
        db.execute_unprepared(&format!(
            "CREATE UNIQUE INDEX {INDEX} ON agents (lower(subject))"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX {INDEX}"))
            .await?;
        Ok(())
    }
}

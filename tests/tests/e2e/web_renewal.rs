//! A conversation longer than an applicant token, in the browser (issue 27, point 3): on a
//! server whose applicant tokens last six seconds, the phone page (tests/js/web-renewal.mjs)
//! stays in its conversation for about four of them, renewing its token each time, and its
//! connection indicator never leaves "online"; what it writes at the end is accepted into the
//! same session, and every renewal is on the record with that session.

use schemas::db::entities::{audit_event, message};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use testkit::{TestDatabase, TestStack};

use super::web_desk::Script;

#[tokio::test]
async fn the_phone_page_renews_its_token_and_stays_online() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start_with(TestDatabase::chosen().await?, |config| {
        config.admin.applicant_token_ttl_secs = 6;
    })
    .await?;
    let mut script = Script::start(
        &js,
        "web-renewal.mjs",
        &json!({
            "chromium": js.chromium,
            "base": stack.http_url("").trim_end_matches('/'),
            "stay_ms": 22_000,
            "artifacts": super::node::artifacts_dir(),
        }),
    )?;
    let result = script.next().await;
    let stderr = script.finish();
    let result = result.map_err(|err| anyhow::anyhow!("{err:#}\n{stderr}"))?;
    anyhow::ensure!(result["ok"] == true, "{result:#}\n{stderr}");
    assert_eq!(result["errors"], json!([]), "{result}");
    // Online from the first connection to the last: never "offline" or "reconnecting".
    assert_eq!(result["states"], json!(["online"]), "{result}");
    assert_ne!(result["last"], "sending", "{result}");

    let session = result["session"].as_str().unwrap_or_default().to_owned();
    let renewals = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("applicant.token.renewed"))
        .filter(audit_event::Column::SessionId.eq(&session))
        .all(stack.store().connection())
        .await?;
    assert!(renewals.len() >= 3, "{} renewals", renewals.len());
    let last = message::Entity::find()
        .filter(message::Column::SessionId.eq(&session))
        .all(stack.store().connection())
        .await?;
    assert!(
        last.iter()
            .any(|row| row.body.contains("long after my first token")),
        "{last:?}"
    );
    stack.shutdown().await;
    Ok(())
}

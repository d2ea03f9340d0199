//! One conversation through both browser pages in headless Chromium (tests/js/web-conversation.mjs):
//! an applicant on the phone page, two agents on their desks, a lock handed from one to the
//! other with the session, an internal note, a dropped connection, the survey. What each page
//! showed is checked here against the stored record.

use courtchat::StaffRole;
use serde_json::{Value, json};
use testkit::TestStack;

use super::{node, staff};

fn seqs(shown: &Value) -> Vec<u64> {
    shown
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["seq"].as_u64())
        .collect()
}

/// The sequence numbers of a page's messages (not its notes or events).
fn message_seqs(shown: &Value) -> Vec<u64> {
    shown
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["kind"] == "message")
        .filter_map(|entry| entry["seq"].as_u64())
        .collect()
}

#[tokio::test]
async fn an_applicant_and_two_agents_hold_one_conversation_in_the_browser() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    let root = staff::add_signed_in(&stack, "root", StaffRole::Admin).await?;
    for name in ["ann", "bob"] {
        staff::add_to_team(&stack, name, StaffRole::Agent, None, Some(3)).await?;
    }
    let base = stack.http_url("");
    let config = json!({
        "chromium": js.chromium,
        "base": base.trim_end_matches('/'),
        "password": staff::PASSWORD,
        "artifacts": node::artifacts_dir(),
        "mqttPath": stack.config().mqtt.websocket.path,
    });
    let seen = node::run(&js, "web-conversation.mjs", config).await?;
    assert_eq!(seen["errors"], json!([]), "page errors: {seen}");
    assert_eq!(
        seen["typingShownForNote"], false,
        "the applicant saw note typing"
    );

    // The stored record, as the admin API reads it.
    let session = seen["session"].as_str().unwrap_or_default();
    let transcript: Value = reqwest::Client::new()
        .get(stack.http_url(&format!("/v1/sessions/{session}/transcript")))
        .bearer_auth(&root)
        .send()
        .await?
        .json()
        .await?;
    let entries = transcript["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stored: Vec<u64> = entries.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let public: Vec<u64> = entries
        .iter()
        .filter(|e| e["kind"] != "note")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let notes: Vec<&str> = entries
        .iter()
        .filter(|e| e["kind"] == "note")
        .filter_map(|e| e["body"].as_str())
        .collect();
    assert_eq!(notes, ["Check the renewal backlog first."]);

    let messages: Vec<u64> = entries
        .iter()
        .filter(|e| e["kind"] == "text")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    // The applicant saw every message, once each, in the session's order, the drop and return
    // included, and of the events only public ones (its page leaves out a status change that
    // the next event says in words); Bob, who holds the session at the end, saw all of it.
    assert_eq!(message_seqs(&seen["applicant"]), messages, "{seen}");
    let applicant = seqs(&seen["applicant"]);
    assert!(applicant.windows(2).all(|w| w[0] < w[1]), "{applicant:?}");
    assert!(
        applicant.iter().all(|seq| public.contains(seq)),
        "{applicant:?}"
    );
    assert_eq!(message_seqs(&seen["bob"]), messages, "{seen}");
    assert_eq!(seqs(&seen["bob"]), stored, "{seen}");
    let applicant_text = seen["applicant"].to_string();
    assert!(
        !applicant_text.contains("renewal backlog"),
        "{applicant_text}"
    );
    // Ann saw the conversation in the same order up to her leaving.
    let ann = seqs(&seen["ann"]);
    assert!(
        !ann.is_empty() && stored.starts_with(&ann),
        "{ann:?} {stored:?}"
    );

    // The lock went from Ann to Bob with the session, and the survey answer is stored.
    let holders: Vec<&str> = transcript["lock_history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|change| change["actor"].as_str())
        .collect();
    assert!(holders.contains(&"ann"), "{holders:?}");
    assert_eq!(transcript["survey"]["rating"], 4, "{transcript}");
    assert_eq!(transcript["survey"]["comment"], "Quick and clear.");
    assert_eq!(transcript["session"]["state"], "closed");
    stack.shutdown().await;
    Ok(())
}

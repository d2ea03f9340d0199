//! The agent desk (`/desk/`) in real Chromium against the real server: two agents and a
//! supervisor work one applicant's session through the page, the applicant being a Rust MQTT
//! client. Two scenarios, one test each:
//! - sign-in, the offer on becoming available, the reply lock and its refusal, replies and notes
//!   (which never reach the applicant), the same stream on every desk, catching up after a
//!   network drop with no gap and no duplicate, a supervisor's takeover, read receipts, close,
//!   accessibility and screenshots;
//! - desktop notifications while the tab is in the background (and none while it is looked at),
//!   renewing the lease, escalating, reloading a signed-in desk, a transfer back to a team's
//!   queue, and leaving.
//!
//! The browser side is tests/js/web-desk.mjs (`scenario` in its configuration); it stops at the
//! points where the applicant acts and waits for this side (see [`Script`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use courtchat::StaffRole;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::{TestClientV5, filter};
use tokio::sync::mpsc;

use super::chat::{kiosk_with_session, submit};
use super::staff;

/// How long the browser may take between two steps (sign-ins, reconnects and axe runs).
const STEP_PATIENCE: Duration = Duration::from_secs(120);

/// The Node script, running: its output lines arrive on a channel (read by a thread, as the
/// test crate's tokio has no process support), and each answer goes to its stdin as a line.
pub(super) struct Script {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Script {
    pub(super) fn start(
        js: &testkit::JsClients,
        script: &str,
        config: &Value,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new("node")
            .arg(script)
            .arg(config.to_string())
            .current_dir(&js.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Ok(Self {
            child,
            stdin,
            lines,
            stderr,
        })
    }

    /// The next JSON line the script prints (a step, or its result).
    pub(super) async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            let line = tokio::time::timeout(STEP_PATIENCE, self.lines.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("the desk script said nothing for {STEP_PATIENCE:?}")
                })?;
            let Some(line) = line else {
                anyhow::bail!("the desk script ended early");
            };
            // Only JSON lines are the script's; anything else is a library's chatter.
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return Ok(value);
            }
            eprintln!("web-desk.mjs: {line}");
        }
    }

    pub(super) fn answer(&mut self, answer: Value) -> anyhow::Result<()> {
        writeln!(self.stdin, "{answer}")?;
        Ok(self.stdin.flush()?)
    }

    pub(super) fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.join().unwrap_or_default()
    }
}

async fn get(stack: &TestStack, token: &str, path: &str) -> anyhow::Result<Value> {
    let response = reqwest::Client::new()
        .get(stack.http_url(path))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
    Ok(response.json().await?)
}

/// The seqs of the session's transcript, as the API has them.
async fn transcript_seqs(
    stack: &TestStack,
    token: &str,
    session: &str,
) -> anyhow::Result<Vec<u64>> {
    let transcript = get(stack, token, &format!("/v1/sessions/{session}/transcript")).await?;
    Ok(transcript["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["seq"].as_u64())
        .collect())
}

/// The message bodies the applicant has received on its messages topic since last asked.
async fn applicant_messages(kiosk: &mut TestClientV5) -> Vec<Value> {
    kiosk
        .publishes_within(Duration::from_secs(1))
        .await
        .into_iter()
        .filter(|publish| String::from_utf8_lossy(&publish.topic).ends_with("/messages"))
        .filter_map(|publish| serde_json::from_slice(&publish.payload).ok())
        .collect()
}

fn seq_list(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect()
}

/// The desk tests' staff, all in "licensing" with room for three sessions: agents Ann and Bob,
/// supervisor Sue.
async fn desk_team(stack: &TestStack) -> anyhow::Result<()> {
    for (name, role) in [
        ("ann", StaffRole::Agent),
        ("bob", StaffRole::Agent),
        ("sue", StaffRole::Supervisor),
    ] {
        staff::add_to_team(stack, name, role, Some("licensing"), Some(3)).await?;
    }
    Ok(())
}

/// What web-desk.mjs needs to run `scenario` against `stack`.
fn script_config(
    js: &testkit::JsClients,
    stack: &TestStack,
    scenario: &str,
    applicant: &str,
) -> Value {
    json!({
        "chromium": js.chromium,
        "base": stack.http_url(""),
        "password": staff::PASSWORD,
        "scenario": scenario,
        "applicant": applicant,
        "mqttPath": stack.config().mqtt.websocket.path,
        "artifacts": super::node::artifacts_dir(),
    })
}

/// The script finished its scenario, and no page logged an error it did not expect.
fn assert_clean(result: &Value, stderr: &str) {
    assert_eq!(result["ok"], true, "{result:#}\n{stderr}");
    assert_eq!(
        result["unexpectedErrors"],
        json!([]),
        "page or console errors: {result:#}"
    );
}

#[tokio::test]
async fn agents_and_a_supervisor_work_a_session_at_the_desk() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    desk_team(&stack).await?;
    let sue = staff::sign_in(&stack, "sue").await?;

    // The applicant opens a session (nobody is available yet, so it waits), reads its messages
    // topic and writes.
    let applicant = "kiosk-desk-1";
    let (mut kiosk, session) = kiosk_with_session(&stack, applicant, "kiosk").await?;
    kiosk
        .subscribe(vec![filter(
            &format!("cc/v1/sessions/{session}/messages"),
            QoS::AtLeastOnce,
        )])
        .await?;
    let ack = submit(
        &mut kiosk,
        format!("cc/v1/sessions/{session}/submit/{applicant}"),
        json!({"client_msg_id": "m1", "type": "message", "body": "My licence expired last week."}),
    )
    .await?;
    assert_eq!(ack["status"], "accepted", "{ack}");

    let artifacts = super::node::artifacts_dir();
    let mut config = script_config(&js, &stack, "supervised", applicant);
    config["session"] = json!(session);
    let mut script = Script::start(&js, "web-desk.mjs", &config)?;
    let outcome = drive(&stack, &mut script, &mut kiosk, &session, &sue, applicant).await;
    let stderr = script.finish();
    let result =
        outcome.map_err(|error| anyhow::anyhow!("{error:#}\nweb-desk.mjs stderr:\n{stderr}"))?;

    assert_clean(&result, &stderr);
    for screen in ["signIn", "desk", "phone"] {
        assert_eq!(
            result["violations"][screen],
            json!([]),
            "axe, {screen}: {result:#}"
        );
    }
    assert!(
        result["signInError"]
            .as_str()
            .is_some_and(|e| e.contains("wrong password")),
        "{result:#}"
    );
    assert!(
        result["lockRefusal"]
            .as_str()
            .is_some_and(|e| e.contains("ann")),
        "{result:#}"
    );
    assert!(
        result["leaseShown"]
            .as_str()
            .is_some_and(|e| e.contains("s left")),
        "{result:#}"
    );
    assert!(
        result["typingSeen"]
            .as_str()
            .is_some_and(|e| e.contains("bob is writing an internal note")),
        "{result:#}"
    );
    assert_ne!(result["offlineState"], "online", "{result:#}");
    // After the drop, both desks hold exactly the transcript: nothing missing, nothing twice.
    let transcript = seq_list(&result["transcriptSeqs"]);
    assert_eq!(seq_list(&result["annSeqsAfter"]), transcript, "{result:#}");
    assert_eq!(seq_list(&result["bobSeqsAfter"]), transcript, "{result:#}");
    assert_eq!(
        seq_list(&result["annFinal"]),
        transcript_seqs(&stack, &sue, &session).await?,
        "{result:#}"
    );
    assert_eq!(result["bobSignedOut"], true, "{result:#}");
    for name in ["desk-sign-in", "desk-conversation", "desk-phone"] {
        assert!(
            artifacts.join(format!("{name}.png")).is_file(),
            "{name}.png"
        );
    }
    stack.shutdown().await;
    Ok(())
}

/// Answers the script's steps as the applicant and checks the server's side of each; returns
/// the script's result.
async fn drive(
    stack: &TestStack,
    script: &mut Script,
    kiosk: &mut TestClientV5,
    session: &str,
    sue: &str,
    applicant: &str,
) -> anyhow::Result<Value> {
    let topic = format!("cc/v1/sessions/{session}/submit/{applicant}");
    loop {
        let line = script.next().await?;
        let Some(step) = line["step"].as_str() else {
            return Ok(line);
        };
        match step {
            "replies_sent" => {
                // The applicant has both agents' replies and not the note.
                let received = applicant_messages(kiosk).await;
                let bodies: Vec<&str> = received
                    .iter()
                    .filter_map(|entry| entry["body"].as_str())
                    .collect();
                anyhow::ensure!(
                    bodies.contains(&"Hello, this is Ann.")
                        && bodies.contains(&"Bob here, taking over."),
                    "the applicant's messages: {received:?}"
                );
                anyhow::ensure!(
                    received.iter().all(|entry| entry["kind"] != "note"
                        && entry["body"] != "Check the renewal backlog."),
                    "a note reached the applicant: {received:?}"
                );
                script.answer(json!({}))?;
            }
            "offline" => {
                // While Ann's desk is away, the applicant writes three times.
                for (id, body) in [
                    ("m2", "Are you still there?"),
                    ("m3", "I have my receipt number."),
                    ("m4", "It is 4471."),
                ] {
                    let ack = submit(
                        kiosk,
                        topic.clone(),
                        json!({"client_msg_id": id, "type": "message", "body": body}),
                    )
                    .await?;
                    anyhow::ensure!(ack["status"] == "accepted", "{ack}");
                }
                let transcript = transcript_seqs(stack, sue, session).await?;
                script.answer(json!({ "transcript": transcript }))?;
            }
            "read" => {
                let last = transcript_seqs(stack, sue, session)
                    .await?
                    .last()
                    .copied()
                    .unwrap_or_default();
                let seq = line["seq"].as_u64().unwrap_or_default();
                anyhow::ensure!(seq <= last, "{seq} past {last}");
                let ack = submit(
                    kiosk,
                    topic.clone(),
                    json!({"client_msg_id": "r1", "type": "receipt", "delivered_seq": last, "read_seq": last}),
                )
                .await?;
                anyhow::ensure!(ack["status"] == "accepted", "{ack}");
                script.answer(json!({}))?;
            }
            "closed" => {
                let closed = listed(stack, sue, "/v1/sessions?state=closed", session).await?;
                anyhow::ensure!(!closed.is_null(), "the session is not listed as closed");
                script.answer(json!({}))?;
            }
            other => anyhow::bail!("unknown step {other}: {line}"),
        }
    }
}

#[tokio::test]
async fn an_agent_is_notified_in_the_background_and_hands_a_session_on() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    desk_team(&stack).await?;
    // Nobody is in "renewals": a session transferred there stays in the queue.
    let sue = staff::sign_in(&stack, "sue").await?;

    let applicant = "kiosk-desk-2";
    let config = script_config(&js, &stack, "handed-on", applicant);
    let mut script = Script::start(&js, "web-desk.mjs", &config)?;
    let outcome = drive_handed_on(&stack, &mut script, &sue, applicant).await;
    let stderr = script.finish();
    let (result, seen) =
        outcome.map_err(|error| anyhow::anyhow!("{error:#}\nweb-desk.mjs stderr:\n{stderr}"))?;

    assert_clean(&result, &stderr);
    let session = seen.session.as_str();
    let tag = format!("courtchat-{session}");
    // The desk's own button asked, and the (recording) browser granted.
    assert_eq!(result["permission"], "granted", "{result:#}");

    // In the background, the offer is notified: one notification, tagged with the session (a
    // click on it opened that session, or the script would have stopped), and a count in the
    // title.
    let assigned = &result["assigned"];
    assert_eq!(
        assigned["notifications"],
        json!([{
            "title": "New session assigned",
            "body": "A kiosk session is yours.",
            "tag": tag,
            "whileHidden": true,
        }]),
        "{result:#}"
    );
    assert!(
        assigned["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("(1) ")),
        "{result:#}"
    );
    // Then the applicant's message, by name and body.
    let messaged = &result["messaged"];
    assert_eq!(
        messaged["notifications"][1],
        json!({
            "title": format!("Message from {applicant}"),
            "body": messaged["body"],
            "tag": tag,
            "whileHidden": true,
        }),
        "{result:#}"
    );
    assert_eq!(
        messaged["notifications"].as_array().map(Vec::len),
        Some(2),
        "{result:#}"
    );
    assert!(
        messaged["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("(2) ")),
        "{result:#}"
    );
    // In the foreground, a message adds no notification and no count.
    let visible = &result["visible"];
    assert_eq!(
        visible["notifications"], messaged["notifications"],
        "{result:#}"
    );
    assert_eq!(visible["title"], "Agent desk · courtchat", "{result:#}");

    // Renew moved the lease's expiry forward, as both desks show it.
    let lease = &result["lease"];
    let before = lease["beforeRenew"].as_u64().unwrap_or(u64::MAX);
    for desk in ["annAfter", "bobAfter"] {
        assert!(
            lease[desk].as_u64().is_some_and(|after| after > before),
            "{desk}: {result:#}"
        );
    }

    // After the reload, the reopened conversation is the transcript as it was then: the same
    // seqs in the same order, so nothing is missing and nothing is drawn twice.
    assert_eq!(result["reloaded"]["signInShown"], false, "{result:#}");
    assert_eq!(
        seq_list(&result["reloaded"]["seqs"]),
        seen.transcript_at_reload,
        "{result:#}"
    );
    stack.shutdown().await;
    Ok(())
}

/// What [`drive_handed_on`] gave the script, to check its result against.
struct HandedOn {
    session: String,
    transcript_at_reload: Vec<u64>,
}

/// The session's events in the transcript, in order (an event entry's body is the event as
/// JSON).
async fn transcript_events(
    stack: &TestStack,
    token: &str,
    session: &str,
) -> anyhow::Result<Vec<Value>> {
    let transcript = get(stack, token, &format!("/v1/sessions/{session}/transcript")).await?;
    Ok(transcript["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["kind"] == "event")
        .map(|entry| {
            let body = entry["body"].as_str().unwrap_or_default();
            serde_json::from_str(body).unwrap_or_else(|_| entry["body"].clone())
        })
        .collect())
}

/// Whether `session` is in the list at `path` (a page of sessions).
async fn listed(
    stack: &TestStack,
    token: &str,
    path: &str,
    session: &str,
) -> anyhow::Result<Value> {
    let page = get(stack, token, path).await?;
    Ok(page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"] == session)
        .cloned()
        .unwrap_or(Value::Null))
}

/// The "handed-on" scenario's applicant side: opens the session when the desk is in the
/// background, writes when asked, and checks the server's record of each action.
async fn drive_handed_on(
    stack: &TestStack,
    script: &mut Script,
    sue: &str,
    applicant: &str,
) -> anyhow::Result<(Value, HandedOn)> {
    let mut opened: Option<(TestClientV5, String)> = None;
    let mut transcript_at_reload = Vec::new();
    let mut written = 0;
    loop {
        let line = script.next().await?;
        let Some(step) = line["step"].as_str() else {
            let (_, session) = opened.ok_or_else(|| anyhow::anyhow!("no session: {line}"))?;
            let seen = HandedOn {
                session,
                transcript_at_reload,
            };
            return Ok((line, seen));
        };
        if step == "open" {
            let (mut kiosk, session) = kiosk_with_session(stack, applicant, "kiosk").await?;
            kiosk
                .subscribe(vec![filter(
                    &format!("cc/v1/sessions/{session}/messages"),
                    QoS::AtLeastOnce,
                )])
                .await?;
            script.answer(json!({ "session": session }))?;
            opened = Some((kiosk, session));
            continue;
        }
        let Some((kiosk, session)) = opened.as_mut() else {
            anyhow::bail!("step {step} before the session is open");
        };
        let session = session.as_str();
        match step {
            "write" => {
                written += 1;
                let ack = submit(
                    kiosk,
                    format!("cc/v1/sessions/{session}/submit/{applicant}"),
                    json!({"client_msg_id": format!("w{written}"), "type": "message", "body": line["body"]}),
                )
                .await?;
                anyhow::ensure!(ack["status"] == "accepted", "{ack}");
                script.answer(json!({}))?;
            }
            "renewed" => {
                // The audit trail has Ann's acquiring, then her renewing under the same epoch
                // (a renewal, not a second acquisition).
                let transcript =
                    get(stack, sue, &format!("/v1/sessions/{session}/transcript")).await?;
                let history: Vec<&Value> = transcript["lock_history"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|change| change["actor"] == "ann")
                    .collect();
                let actions: Vec<&str> = history
                    .iter()
                    .filter_map(|change| change["action"].as_str())
                    .collect();
                anyhow::ensure!(
                    actions == ["lock.acquired", "lock.renewed"]
                        && history[0]["detail"]["epoch"] == history[1]["detail"]["epoch"],
                    "ann's lock history: {history:?}"
                );
                script.answer(json!({}))?;
            }
            "escalated" => {
                let found = listed(stack, sue, "/v1/sessions?state=escalated", session).await?;
                anyhow::ensure!(!found.is_null(), "the session is not escalated");
                script.answer(json!({}))?;
            }
            "reloaded" => {
                transcript_at_reload = transcript_seqs(stack, sue, session).await?;
                script.answer(json!({ "transcript": transcript_at_reload }))?;
            }
            "transferred" => {
                // Back in the queue, for the team it was sent to, with nobody assigned.
                let queued = listed(stack, sue, "/v1/queue", session).await?;
                anyhow::ensure!(
                    queued["team"] == "renewals" && queued["assigned_agent"].is_null(),
                    "the session is not waiting for renewals: {queued}"
                );
                // The transfer is recorded as Ann's, and she has left.
                let events = transcript_events(stack, sue, session).await?;
                let transferred = events.iter().position(|e| {
                    e["type"] == "transferred" && e["from"] == "ann" && e["to_team"] == "renewals"
                });
                let left = events
                    .iter()
                    .rposition(|e| e["type"] == "left" && e["subject"] == "ann");
                anyhow::ensure!(
                    matches!((transferred, left), (Some(t), Some(l)) if t < l),
                    "no transfer then leaving by ann: {events:?}"
                );
                script.answer(json!({}))?;
            }
            "left" => {
                // The applicant is told, on its own stream, that Bob left.
                let mut heard = Vec::new();
                for _ in 0..5 {
                    heard.extend(applicant_messages(kiosk).await);
                    if heard.iter().any(|entry| {
                        entry["event"]["type"] == "left" && entry["event"]["subject"] == "bob"
                    }) {
                        break;
                    }
                }
                anyhow::ensure!(
                    heard.iter().any(|entry| entry["event"]["type"] == "left"
                        && entry["event"]["subject"] == "bob"),
                    "the applicant did not see bob leave: {heard:?}"
                );
                script.answer(json!({}))?;
            }
            other => anyhow::bail!("unknown step {other}: {line}"),
        }
    }
}

//! MQTT.js, the client the dashboard and kiosk web client use, against the real server: in Node
//! over all four listener kinds (QoS 2, and with MQTT 5 topic aliases, a subscription
//! identifier, the server keep alive and publish properties) and in headless Chromium over
//! WebSocket and secure WebSocket, each with MQTT 3.1.1 and 5.0. The scripts live in tests/js.

use std::collections::BTreeMap;

use courtchat::Role;
use serde_json::{Value, json};
use testkit::{TestCertificate, TestDatabase, TestStack};

async fn run_script(
    js: &testkit::JsClients,
    script: &str,
    config: Value,
) -> anyhow::Result<Vec<Value>> {
    Ok(serde_json::from_value(
        super::node::run(js, script, config).await?,
    )?)
}

fn tokens(stack: &TestStack, prefix: &str, kinds: &[&str]) -> BTreeMap<String, String> {
    kinds
        .iter()
        .flat_map(|kind| [4, 5].map(|version| format!("{prefix}-{kind}-v{version}")))
        .map(|client_id| {
            let token = stack.token(&client_id, Role::Applicant);
            (client_id, token)
        })
        .collect()
}

#[tokio::test]
async fn mqttjs_in_node_over_every_listener() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let certificate = TestCertificate::generate()?;
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        certificate.configure(config)
    })
    .await?;
    let tls = stack.mqtt_tls_addr().expect("TLS is configured");
    let config = json!({
        "urls": {
            "tcp": format!("mqtt://{}", stack.mqtt_tcp_addr()),
            "tls": format!("mqtts://{tls}"),
            "ws": stack.mqtt_ws_url(),
            "wss": stack.mqtt_wss_url(),
        },
        "ca": certificate.pem,
        "tokens": tokens(&stack, "js-node", &["tcp", "tls", "ws", "wss"]),
    });
    let results = run_script(&js, "node-clients.mjs", config).await?;
    assert_eq!(results.len(), 8, "{results:?}");
    for result in &results {
        let version = result["protocolVersion"].as_u64();
        let v5 = version == Some(5);
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["grantedQos"], 2, "{result}");
        assert_eq!(result["deliveredQos"], json!([2, 2, 1]), "{result}");
        let topic = format!(
            "sandbox/js/{}/{}",
            result["kind"].as_str().unwrap_or_default(),
            if v5 { 5 } else { 4 }
        );
        // The first delivery names the topic and sets alias 1, the others name only the alias,
        // which MQTT.js resolves for QoS 0 and 1. (MQTT.js 5.16 hands a QoS 2 message over with
        // the topic its PUBLISH carried, empty when it came by alias: the second is not
        // checked. PROTOCOL.md says so to browser clients.)
        assert_eq!(result["topics"][0], topic, "{result}");
        assert_eq!(result["topics"][2], topic, "{result}");
        let (aliases, identifiers, keep_alive) = if v5 {
            (json!([1, 1, 1]), json!([42]), json!(300))
        } else {
            (json!([null, null, null]), json!([]), Value::Null)
        };
        assert_eq!(result["topicAliases"], aliases, "{result}");
        assert_eq!(result["subscriptionIdentifiers"], identifiers, "{result}");
        assert_eq!(result["serverKeepAlive"], keep_alive, "{result}");
        if v5 {
            assert_eq!(result["payloadFormatIndicator"], true, "{result}");
            assert_eq!(
                result["responseTopic"],
                format!("{topic}/replies"),
                "{result}"
            );
            assert_eq!(result["correlationData"], "req-1", "{result}");
            let client_id = format!("js-node-{}-v5", result["kind"].as_str().unwrap_or_default());
            assert_eq!(
                result["userProperties"],
                json!({ "trace": client_id }),
                "{result}"
            );
        }
        // An applicant may not read the agents' queue: SUBACK 0x80 (3.1.1) or 0x87 (5.0).
        assert_eq!(
            result["deniedCode"],
            if v5 { 0x87 } else { 0x80 },
            "{result}"
        );
        let content_type = if v5 { json!("text/plain") } else { Value::Null };
        assert_eq!(result["contentType"], content_type, "{result}");
    }
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn mqttjs_in_a_browser_over_websockets() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let certificate = TestCertificate::generate()?;
    let stack = TestStack::start_with(TestDatabase::sqlite()?, |config| {
        certificate.configure(config);
        // The probe runs in an about:blank page, whose origin is opaque ("null"): only a
        // configured origin lets a page other than the server's own connect.
        config.mqtt.websocket.allowed_origins = vec!["null".to_owned()];
    })
    .await?;
    let config = json!({
        "chromium": js.chromium,
        "urls": { "ws": stack.mqtt_ws_url(), "wss": stack.mqtt_wss_url() },
        "tokens": tokens(&stack, "js-browser", &["ws", "wss"]),
    });
    let results = run_script(&js, "browser-clients.mjs", config).await?;
    assert_eq!(results.len(), 4, "{results:?}");
    for result in &results {
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(
            (
                result["grantedQos"].as_u64(),
                result["deliveredQos"].as_u64()
            ),
            (Some(1), Some(1)),
            "{result}"
        );
        assert!(
            result["payload"]
                .as_str()
                .is_some_and(|p| p.starts_with("hello from js-browser")),
            "{result}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

/// Shared subscriptions, retained messages and a persistent session's queue, as MQTT.js sees
/// them over WebSocket (see tests/js/node-shared-retained.mjs).
#[tokio::test]
async fn mqttjs_shared_subscriptions_retained_messages_and_offline_queue() -> anyhow::Result<()> {
    let Some(js) = testkit::js_clients() else {
        return Ok(());
    };
    let stack = TestStack::start().await?;
    let tokens: BTreeMap<String, String> = ["pub", "member-a", "member-b", "reader", "away"]
        .iter()
        .flat_map(|name| [4, 5].map(|version| format!("js-{name}-v{version}")))
        .map(|client_id| {
            let token = stack.token(&client_id, Role::Agent);
            (client_id, token)
        })
        .collect();
    let config = json!({ "url": stack.mqtt_ws_url(), "tokens": tokens });
    let results = run_script(&js, "node-shared-retained.mjs", config).await?;
    assert_eq!(results.len(), 2, "{results:?}");
    for result in &results {
        let v5 = result["protocolVersion"] == 5;
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["sharedGranted"], json!([1, 1]), "{result}");
        assert_eq!(result["sharedCounts"], json!([2, 2]), "in turn: {result}");
        let retained = &result["retained"];
        assert_eq!(
            (&retained["payload"], &retained["retain"], &retained["qos"]),
            (&json!("kept"), &json!(true), &json!(1)),
            "{result}"
        );
        if v5 {
            assert_eq!(retained["contentType"], "text/plain", "{result}");
            assert_eq!(
                retained["userProperties"],
                json!({"b": ["2", "3"], "a": "1"}),
                "{result}"
            );
        }
        assert_eq!(result["sessionPresent"], true, "{result}");
        assert_eq!(
            result["queued"],
            json!([["first", 1], ["second", 0], ["third", 1]]),
            "{result}"
        );
    }
    stack.shutdown().await;
    Ok(())
}

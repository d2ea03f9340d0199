//! `/metrics` on the admin listener: what a conversation and a refused client leave in it, a
//! real Prometheus server scraping it and answering a query, and the Grafana dashboard and the
//! alerting rules in deploy/ naming only metrics the server exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::TestStack;
use testkit::mqtt::try_connect_v5;

use super::chat::{self, submit};

const REQUIRE_PROMETHEUS_ENV: &str = "COURTCHAT_TEST_REQUIRE_PROMETHEUS";

/// `tool` on PATH, or None with a notice (a failure when CI requires it).
fn tool(tool: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var(REQUIRE_PROMETHEUS_ENV).as_deref() != Ok("1"),
            "{REQUIRE_PROMETHEUS_ENV}=1 but {tool} is not installed"
        );
        eprintln!("skipped: {tool} is not installed (Debian package prometheus)");
    }
    found
}

async fn scrape(stack: &TestStack) -> anyhow::Result<String> {
    let response = reqwest::get(stack.http_url("/metrics")).await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    let content_type = response.headers()["content-type"].to_str()?.to_owned();
    anyhow::ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Ok(response.text().await?)
}

/// The value of the sample `series` (name and labels as exported), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// The metric families the server exports (from the `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `courtchat_…` name in a PromQL expression, with a histogram's series suffix taken
/// off (the family of `x_bucket` is `x`).
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("courtchat_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn a_conversation_and_a_refusal_show_in_the_metrics_and_prometheus_reads_them()
-> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    // A kiosk opens a session and writes; a client with a bad token is refused.
    let (mut kiosk, session) = chat::kiosk_with_session(&stack, "kiosk-m", "kiosk").await?;
    let ack = submit(
        &mut kiosk,
        format!("cc/v1/sessions/{session}/submit/kiosk-m"),
        json!({"client_msg_id": "m1", "type": "message", "body": "hello"}),
    )
    .await?;
    assert_eq!(ack["status"], "accepted", "{ack}");
    let addr = stack.mqtt_tcp_addr();
    let mut bad = rumqttc::v5::MqttOptions::new("intruder", addr.ip().to_string(), addr.port());
    bad.set_credentials("intruder", "not-a-token");
    let _ = try_connect_v5(bad).await;

    let text = scrape(&stack).await?;
    // The pipeline's own service connection and the kiosk.
    let kiosks = sample(
        &text,
        r#"courtchat_connections{listener="tcp",role="applicant"}"#,
    );
    assert_eq!(kiosks, Some(1.0), "{text}");
    let accepted = sample(&text, "courtchat_submissions_accepted_total").unwrap_or(0.0);
    assert!(accepted >= 2.0, "open and message: {accepted}");
    let refused = sample(
        &text,
        r#"courtchat_connects_refused_total{reason="bad_credentials"}"#,
    );
    assert_eq!(refused, Some(1.0), "{text}");
    let committed = sample(&text, "courtchat_submission_to_commit_seconds_count").unwrap_or(0.0);
    assert!(committed >= 2.0, "{committed}");
    let chain = sample(&text, "courtchat_audit_chain_length_entries").unwrap_or(0.0);
    // The open (the request and its entry) and the message; the refusal follows on its own.
    assert!(chain >= 3.0, "{chain}: {text}");
    assert_eq!(sample(&text, "courtchat_pipeline_ready"), Some(1.0));
    assert!(sample(&text, "courtchat_process_resident_memory_bytes").unwrap_or(0.0) > 1e6);
    // The kiosk goes: its connection is no longer counted.
    kiosk.disconnect().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(&stack).await?;
        let live = r#"courtchat_connections{listener="tcp",role="applicant"}"#;
        if sample(&text, live) == Some(0.0) {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A real Prometheus scrapes the admin listener and answers a query about it.
    let Some(prometheus) = tool("prometheus") else {
        stack.shutdown().await;
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let target = stack
        .http_url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: courtchat\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )?;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let mut server = std::process::Command::new(prometheus)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let query =
        format!("http://127.0.0.1:{port}/api/v1/query?query=courtchat_submissions_accepted_total");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let value = loop {
        let answer: Option<Value> = match reqwest::get(&query).await {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        let value = answer.as_ref().and_then(|a| {
            a["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
        });
        if let Some(value) = value {
            break value;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = server.kill();
            anyhow::bail!("Prometheus never had the metric: {answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(value >= 2.0, "Prometheus read {value}");
    stack.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_exported_metrics() -> anyhow::Result<()> {
    let stack = TestStack::start().await?;
    let exported = families(&scrape(&stack).await?);
    stack.shutdown().await;
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");

    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        deploy.join("grafana/dashboards/courtchat.json"),
    )?)?;
    let mut named = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(
            !targets.is_empty(),
            "a panel without a query: {}",
            panel["title"]
        );
        for target in targets {
            let names = names_in(target["expr"].as_str().unwrap_or_default());
            assert!(!names.is_empty(), "{}: {target}", panel["title"]);
            named.extend(names);
        }
    }
    let rules = std::fs::read_to_string(deploy.join("prometheus/alerts.yml"))?;
    named.extend(names_in(&rules));
    let unknown: BTreeSet<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(unknown.is_empty(), "named but not exported: {unknown:?}");
    for wanted in [
        "pipeline_ready",
        "submission_to_commit_seconds",
        "submissions_rejected_total",
        "audit_intact",
    ] {
        assert!(
            rules.contains(&format!("courtchat_{wanted}")),
            "no alert on {wanted}"
        );
    }

    if let Some(promtool) = tool("promtool") {
        let checked = std::process::Command::new(promtool)
            .args(["check", "rules"])
            .arg(deploy.join("prometheus/alerts.yml"))
            .output()?;
        assert!(
            checked.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    Ok(())
}

#[test]
fn names_are_read_out_of_expressions() {
    assert_eq!(
        names_in("histogram_quantile(0.9, rate(courtchat_x_seconds_bucket[5m])) / courtchat_y"),
        ["courtchat_x_seconds", "courtchat_y"]
    );
}

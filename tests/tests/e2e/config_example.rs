//! deploy/courtchat.example.toml is what operators copy; it must stay a valid configuration.

use std::path::PathBuf;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/courtchat.example.toml")
}

#[test]
fn the_deploy_example_parses() -> anyhow::Result<()> {
    let config = courtchat::Config::load(Some(&example()), std::iter::empty())?;
    // The example shows the defaults, except where it demonstrates a change (exposing MQTT).
    assert_eq!(config.mqtt.tcp.listen.to_string(), "0.0.0.0:1883");
    assert_eq!(config.database, courtchat::Config::default().database);
    Ok(())
}

#[test]
fn the_deploy_example_mentions_every_key() -> anyhow::Result<()> {
    // Every key of the effective configuration appears in the example, so operators can find it.
    let text = std::fs::read_to_string(example())?;
    let rendered = courtchat::Config::default().to_redacted_toml();
    let table: toml::Table = rendered.parse()?;
    let mut missing = Vec::new();
    walk(&table, "", &mut |key| {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        if !text.contains(&format!("{leaf} =")) {
            missing.push(key.to_owned());
        }
    });
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    Ok(())
}

fn walk(table: &toml::Table, prefix: &str, visit: &mut impl FnMut(&str)) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => walk(inner, &path, visit),
            _ => visit(&path),
        }
    }
}

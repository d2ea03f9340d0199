//! Which denials are recorded whole and which are counted, as a specification.

use super::*;

const WINDOW: Duration = Duration::from_secs(60);

fn config(max_tracked: usize) -> DenialsConfig {
    DenialsConfig {
        max_field_bytes: 32,
        fold_window_secs: WINDOW.as_secs(),
        max_tracked,
    }
}

fn denial(kind: DenialKind, from: [u8; 4], actor: &str) -> Denial {
    Denial {
        kind,
        peer: SocketAddr::from((from, 40_000)),
        actor: Bounded::new(actor, 32),
        target: None,
        reason: Bounded::new("not authorized", 32),
        at: SystemTime::UNIX_EPOCH,
    }
}

/// A record as a short line: `single <kind> <actor>` or `folded <kind> <by> <count>`.
fn line(record: &DenialRecord) -> String {
    match record {
        DenialRecord::Single(d) => format!("single {} {}", d.kind.as_str(), d.actor.text),
        DenialRecord::Folded(f) => format!("folded {} {} {}", f.kind.as_str(), f.by, f.count),
    }
}

#[test]
fn fields_are_cut_at_a_character_boundary_and_keep_their_length() {
    let rows = [
        ("kiosk-1", 32, "kiosk-1", false),
        ("", 32, "", false),
        (
            &"x".repeat(61_440) as &str,
            32,
            &"x".repeat(32) as &str,
            true,
        ),
        // "é" is two bytes: the cut never splits it.
        ("ééé", 3, "é", true),
    ];
    for (text, max, kept, truncated) in rows {
        let bounded = Bounded::new(text, max);
        assert_eq!(
            (bounded.text.as_str(), bounded.len, bounded.truncated()),
            (kept, text.len(), truncated),
            "{max}"
        );
    }
}

#[test]
fn repeats_within_a_window_are_counted_and_reported_when_it_ends() {
    use DenialKind::{Connect, Publish, Subscribe};
    let start = Instant::now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    // (seconds after start, denial) -> what is recorded because of it
    let rows: Vec<(u64, Denial, Vec<&str>)> = vec![
        (
            0,
            denial(Connect, [10, 0, 0, 1], "a"),
            vec!["single connect a"],
        ),
        // Another client id from the same address folds: the address is the key.
        (1, denial(Connect, [10, 0, 0, 1], "b"), vec![]),
        (2, denial(Connect, [10, 0, 0, 1], "c"), vec![]),
        (
            3,
            denial(Connect, [10, 0, 0, 2], "a"),
            vec!["single connect a"],
        ),
        // A subject's publishes and subscribes fold apart, and apart from its address.
        (
            4,
            denial(Publish, [10, 0, 0, 1], "kiosk"),
            vec!["single publish kiosk"],
        ),
        (
            5,
            denial(Subscribe, [10, 0, 0, 1], "kiosk"),
            vec!["single subscribe kiosk"],
        ),
        (6, denial(Publish, [10, 0, 0, 9], "kiosk"), vec![]),
        // The window of 10.0.0.1 is over: its count, then a new window.
        (
            60,
            denial(Connect, [10, 0, 0, 1], "d"),
            vec!["folded connect 10.0.0.1 2", "single connect d"],
        ),
        (61, denial(Connect, [10, 0, 0, 1], "e"), vec![]),
    ];
    let mut folder = Folder::new(&config(100));
    for (secs, denial, expected) in rows {
        let records: Vec<String> = folder.observe(denial, at(secs)).iter().map(line).collect();
        assert_eq!(records, expected, "at {secs} s");
    }
    // Windows over by 65 s: 10.0.0.2 folded nothing; kiosk's publishes folded one.
    let due: Vec<String> = folder.due(at(65)).iter().map(line).collect();
    assert_eq!(due, ["folded publish kiosk 1"]);
    assert!(folder.due(at(65)).is_empty(), "reported once");
    let drained: Vec<String> = folder.drain().iter().map(line).collect();
    assert_eq!(drained, ["folded connect 10.0.0.1 1"]);
}

#[test]
fn beyond_the_tracked_keys_denials_of_a_kind_fold_together() {
    use DenialKind::Connect;
    let now = Instant::now();
    let mut folder = Folder::new(&config(2));
    let mut recorded = Vec::new();
    for n in 0..10u8 {
        let records = folder.observe(denial(Connect, [10, 0, 0, n], "x"), now);
        recorded.extend(records.iter().map(line));
    }
    // Two addresses followed; the third opens the overflow window, the rest fold into it.
    assert_eq!(recorded, ["single connect x"; 3]);
    let drained: Vec<String> = folder.drain().iter().map(line).collect();
    assert_eq!(drained, ["folded connect others 7"]);
}

#[test]
fn every_denial_is_accounted_for_once() {
    let start = Instant::now();
    let mut folder = Folder::new(&config(3));
    let mut accounted = 0;
    let attempts = 5_000u64;
    for n in 0..attempts {
        let from = [10, 0, (n % 7) as u8, (n % 5) as u8];
        let kind = [DenialKind::Connect, DenialKind::Publish][(n % 2) as usize];
        let records = folder.observe(
            denial(kind, from, &format!("s{}", n % 4)),
            start + Duration::from_millis(n * 37),
        );
        accounted += records.iter().map(DenialRecord::count).sum::<u64>();
        if n % 100 == 0 {
            let due = folder.due(start + Duration::from_millis(n * 37));
            accounted += due.iter().map(DenialRecord::count).sum::<u64>();
        }
    }
    accounted += folder.drain().iter().map(DenialRecord::count).sum::<u64>();
    assert_eq!(accounted, attempts);
}

#[test]
fn settings_that_cannot_work_name_their_key() {
    let rows = [
        (
            DenialsConfig {
                max_field_bytes: 8,
                ..DenialsConfig::default()
            },
            "mqtt.denials.max_field_bytes",
        ),
        (
            DenialsConfig {
                fold_window_secs: 0,
                ..DenialsConfig::default()
            },
            "mqtt.denials.fold_window_secs",
        ),
        (
            DenialsConfig {
                max_tracked: 0,
                ..DenialsConfig::default()
            },
            "mqtt.denials.max_tracked",
        ),
    ];
    for (config, key) in rows {
        assert_eq!(config.check().unwrap_err().0, key);
    }
    assert!(DenialsConfig::default().check().is_ok());
}

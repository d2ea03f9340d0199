//! The session target's checks on stable Rust: each seed script run and what it must have
//! produced, the seed corpus kept current, and seeded random scripts.

use std::path::PathBuf;

use super::model::World;
use super::script::{self, AliasUse, Step};
use super::seeds::{self, at, publish, subscribe, v5};
use super::*;

fn seed(name: &str) -> Vec<(usize, Step)> {
    seeds::scripts()
        .into_iter()
        .find(|(seed, _)| *seed == name)
        .map(|(_, steps)| steps)
        .expect("a seed of that name")
}

/// Copies of each publish (by tag) each client received.
fn copies(world: &World) -> Vec<Vec<usize>> {
    world
        .sent
        .iter()
        .map(|sent| {
            (0..script::CLIENTS)
                .map(|client| sent.copies.get(&client).copied().unwrap_or(0))
                .collect()
        })
        .collect()
}

#[test]
fn every_seed_reads_back_as_written() {
    for (name, steps) in seeds::scripts() {
        assert_eq!(script::read(&script::write(&steps)), steps, "{name}");
    }
}

#[test]
fn a_qos2_publish_is_forwarded_once_until_released() {
    let world = run(&seed("qos2-flow"));
    // m0 once, although sent again before PUBREL; after PUBREL, sent again under the released
    // id, it is a new publish (m1). m2 (denied) reaches no one.
    assert_eq!(
        copies(&world),
        vec![vec![0, 1, 0, 0], vec![0, 1, 0, 0], vec![0, 0, 0, 0]]
    );
    assert_eq!(
        world.clients[0].session.unreleased,
        [1].into(),
        "the resend after release is held again; the denied publish never was"
    );
}

#[test]
fn the_receive_maximum_ends_the_connection_at_one_more() {
    let world = run(&seed("receive-maximum"));
    assert!(!world.clients[0].live, "a fourth unreleased publish");
    // The same three, and one sent again under a held id, were fine.
    assert_eq!(world.clients[0].session.unreleased.len(), 3);
}

#[test]
fn deliveries_wait_for_the_subscribers_receive_maximum() {
    let world = run(&seed("outbound-window"));
    assert_eq!(
        copies(&world),
        vec![vec![0, 1, 0, 0], vec![0, 1, 0, 0], vec![0, 1, 0, 0]]
    );
    assert!(world.clients[1].session.outstanding.is_empty());
}

#[test]
fn inbound_aliases_resolve_and_bad_ones_end_the_connection() {
    let world = run(&seed("aliases-in"));
    let topics: Vec<&str> = world.sent.iter().map(|s| s.topic.as_str()).collect();
    // The second publish names `a/c` by alias 1; alias 2 was never set (0x82).
    assert_eq!(topics, ["a/c", "a/c", "a/b", "a/b", "x"]);
    assert_eq!(copies(&world)[1], vec![0, 1, 0, 0]);
    assert!(!world.clients[0].live);

    let world = run(&seed("alias-invalid"));
    assert!(!world.clients[0].live, "alias 0 is 0x94");
    for alias in [ALIAS_MAXIMUM + 1, u16::MAX] {
        let world = run(&[
            (0, v5(3, 0)),
            (0, publish(at::A_B, 0, 1, AliasUse::Set(alias))),
        ]);
        assert!(!world.clients[0].live, "alias {alias}");
    }
}

#[test]
fn outbound_aliases_stay_within_the_clients_maximum() {
    let world = run(&seed("aliases-out"));
    let client = &world.clients[1];
    assert_eq!(client.aliases_out.len(), 2, "{:?}", client.aliases_out);
    assert!(copies(&world).iter().all(|c| c[1] == 1));
}

#[test]
fn a_delivery_too_large_for_the_client_is_dropped_and_sets_no_alias() {
    let world = run(&seed("too-large"));
    // To `cc/v1/sessions/s1/notes` nothing fits in 16 bytes; to `x` everything does.
    assert_eq!(
        copies(&world),
        vec![
            vec![0; 4],
            vec![0, 1, 0, 0],
            vec![0; 4],
            vec![0, 1, 0, 0],
            vec![0; 4]
        ]
    );
    let client = &world.clients[1];
    assert_eq!(client.aliases_out.len(), 1, "{:?}", client.aliases_out);
    assert_eq!(client.aliases_out.get(&1).map(|t| &t[..]), Some(&b"x"[..]));
    assert!(client.session.outstanding.is_empty());
    assert!(
        !client.live,
        "alias 0 ends the connection, in a DISCONNECT that fits"
    );
}

#[test]
fn a_delivery_through_three_subscriptions_carries_their_three_identifiers() {
    // Found by the fuzzer: rumqttc's reader loses all but two (see `wire::repair`).
    let world = run(&seed("identifiers"));
    assert_eq!(copies(&world), vec![vec![0, 1, 0, 0], vec![0, 1, 0, 0]]);
}

#[test]
fn each_shared_group_gets_one_copy() {
    let world = run(&seed("shared"));
    let sent = copies(&world);
    // a/b: group g (one of 1, 2, 3), group h (3) and 3's a/+.
    assert_eq!(sent[0].iter().sum::<usize>(), 3, "{sent:?}");
    assert_eq!(
        world.sent[0].by_group.len(),
        2,
        "{:?}",
        world.sent[0].by_group
    );
    // x: only group h.
    assert_eq!(sent[3], vec![0, 0, 0, 1]);
    // In turn: g's three copies of a/b, a/c, a/b went to three members.
    let g = |tag: usize| (1..4).find(|c| sent[tag][*c] > 0 && (*c != 3 || sent[tag][3] == 3));
    assert!(g(0).is_some() && g(1).is_some());
}

#[test]
fn a_persistent_member_gets_its_copy_when_it_returns() {
    let world = run(&seed("persistent-share"));
    assert_eq!(copies(&world), vec![vec![1, 0, 0, 0], vec![1, 0, 0, 0]]);
    assert!(world.clients[0].session.outstanding.is_empty());
}

#[test]
fn mqtt_3_1_1_clients_keep_qos2_and_are_disconnected_when_denied() {
    let world = run(&seed("v4-qos2"));
    assert_eq!(copies(&world)[0], vec![0, 1, 0, 0]);
    assert!(!world.clients[0].live, "a denied 3.1.1 publish disconnects");
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/session")
}

/// Regenerates (with `UPDATE_FUZZ_CORPUS=1`) or checks `fuzz/corpus/session/seed-*`.
#[test]
fn the_committed_session_corpus_is_current() {
    let update = std::env::var("UPDATE_FUZZ_CORPUS").is_ok_and(|v| v == "1");
    let dir = corpus_dir();
    let seeds = super::seeds();
    let mut stale = Vec::new();
    for (name, bytes) in &seeds {
        let path = dir.join(format!("seed-{name}"));
        if std::fs::read(&path).ok().as_ref() != Some(bytes) {
            if update {
                std::fs::create_dir_all(&dir).expect("create the corpus directory");
                std::fs::write(&path, bytes).expect("write a seed");
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with("seed-") && !seeds.iter().any(|(n, _)| file == format!("seed-{n}")) {
            if update {
                std::fs::remove_file(entry.path()).expect("remove an old seed");
            } else {
                stale.push(entry.path().display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale fuzz seeds (run `UPDATE_FUZZ_CORPUS=1 cargo test -p broker`): {stale:?}"
    );
}

/// The inputs that made the fuzzer fail before the harness or the gateway was put right
/// (`fuzz/corpus/session/found-*`, kept as they were found) pass.
#[test]
fn the_inputs_the_fuzzer_found_pass() {
    let mut found = 0;
    for entry in std::fs::read_dir(corpus_dir())
        .expect("the corpus")
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("found-") {
            let input = std::fs::read(entry.path()).expect("a found input");
            check(&input);
            found += 1;
        }
    }
    assert!(found >= 4, "{found} found inputs");
}

/// Runs [`check`] on random scripts and on the seeds with random bytes spliced in:
/// `COURTCHAT_PROPERTY_CASES` / 10 of them (default 2,000), from `COURTCHAT_PROPERTY_SEED`.
#[test]
fn random_scripts_keep_the_properties() {
    let cases: usize = std::env::var("COURTCHAT_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(2_000, |n: usize| n / 10);
    let mut state: u64 = std::env::var("COURTCHAT_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5E55_1011);
    let mut next = move || {
        // SplitMix64, as the connection target's property test.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let seeds: Vec<Vec<u8>> = super::seeds().into_iter().map(|(_, b)| b).collect();
    for case in 0..cases {
        let mut input = seeds[next() as usize % seeds.len()].clone();
        for _ in 0..1 + next() % 6 {
            let at = next() as usize % (input.len() + 1);
            match next() % 3 {
                0 => input.insert(at, next() as u8),
                1 if at < input.len() => input[at] = next() as u8,
                _ => input.truncate(at.max(4)),
            }
        }
        if std::panic::catch_unwind(|| check(&input)).is_err() {
            panic!("case {case} failed (see the panic above); input: {input:02x?}");
        }
    }
}

#[test]
fn a_subscription_identifier_of_0_and_no_local_on_a_share_are_protocol_errors() {
    let zero = Step::Subscribe {
        filter: at::PLUS,
        qos: 0,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        id: script::IdUse::Zero,
    };
    let no_local_share = Step::Subscribe {
        filter: at::SHARE_G_PLUS,
        qos: 0,
        no_local: true,
        retain_as_published: false,
        retain_handling: 0,
        id: script::IdUse::None,
    };
    for step in [zero, no_local_share] {
        let world = run(&[(0, v5(3, 0)), (0, step.clone())]);
        assert!(!world.clients[0].live, "{step:?}");
    }
    let world = run(&[(0, v5(3, 0)), (0, subscribe(at::SHARE_G_PLUS, 1))]);
    assert!(world.clients[0].live);
}

#[test]
fn a_session_resumed_across_versions_keeps_its_unreleased_publishes() {
    // Found by the fuzzer, in the harness: a 3.1.1 session holds any number of unreleased QoS 2
    // publishes, and resumed over MQTT 5 it keeps them; only new ones are capped.
    let persistent = |v5| Step::Connect {
        v5,
        clean_start: false,
        expiry: 120,
        receive_maximum: 2,
        alias_maximum: 0,
        will: false,
        small_packets: false,
        keep_alive: 0,
    };
    let mut steps = vec![(0, persistent(false))];
    steps.extend((1..=4).map(|pkid| (0, publish(at::A_B, 2, pkid, AliasUse::None))));
    steps.extend([
        (0, Step::Drop),
        (0, persistent(true)),
        (0, Step::PubRel { pkid: 1 }),
        (0, Step::Resend { pkid: 2 }),
        (0, publish(at::A_B, 2, 5, AliasUse::None)),
    ]);
    let world = run(&steps);
    let client = &world.clients[0];
    assert_eq!(client.session.unreleased, [2, 3, 4].into());
    assert!(!client.live, "a new one beyond the receive maximum: 0x93");
}

/// A client with a persistent session gets `a/c` at QoS 1 and leaves without answering it, then
/// comes back allowing `small` packets (and one alias, which a full topic then costs room for),
/// and gets `x`, which fits either way.
fn away_with_a_delivery_in_flight(small: bool) -> Vec<(usize, Step)> {
    let persistent = |small_packets| Step::Connect {
        v5: true,
        clean_start: false,
        expiry: 120,
        receive_maximum: 2,
        alias_maximum: 1,
        will: false,
        small_packets,
        keep_alive: 0,
    };
    vec![
        (0, persistent(false)),
        (0, subscribe(at::ALL, 1)),
        (1, seeds::v4()),
        (1, publish(at::A_C, 1, 1, AliasUse::None)),
        (0, Step::Drop),
        (0, persistent(small)),
        (1, publish(at::X, 1, 2, AliasUse::None)),
    ]
}

#[test]
fn a_resumed_session_sends_its_deliveries_in_flight_again() {
    let world = run(&away_with_a_delivery_in_flight(false));
    // m0 once new, once again (DUP, not counted); m1 new.
    assert_eq!(copies(&world), vec![vec![1, 0, 0, 0], vec![1, 0, 0, 0]]);
    assert_eq!(world.clients[0].session.outstanding.len(), 2);
}

#[test]
fn a_delivery_too_large_to_send_again_ends_its_flow() {
    // Found by the fuzzer, in the harness: the 17-byte DUP does not fit in 16, and the gateway
    // drops it as if its flow had ended (MQTT 5 §3.1.2.11.4), freeing its packet id.
    let world = run(&away_with_a_delivery_in_flight(true));
    assert_eq!(copies(&world), vec![vec![1, 0, 0, 0], vec![1, 0, 0, 0]]);
    assert_eq!(world.clients[0].session.outstanding.len(), 1, "m1 alone");
}

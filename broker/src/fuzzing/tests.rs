//! The fuzz entry point's checks on stable Rust: the issue's byte sequences as a table, the seed
//! corpus kept current, and a seeded property test over mutations of the seeds.
//!
//! The property test is a hand-written generator loop rather than proptest: it adds no crate to
//! a lock file others are editing, its inputs are the same structure-aware mutations of valid
//! packets that give the fuzzer its start, and a failure prints the input and the seed that
//! reproduce it. What proptest would add, shrinking, `cargo fuzz tmin` does for a failing input.

use std::path::PathBuf;

use super::*;

fn after_v5_connect(bytes: &[u8]) -> Verdict {
    let mut stream = v5_connect();
    stream.extend_from_slice(bytes);
    connection(&stream, stream.len(), CHECK_MAX_PACKET_SIZE)
}

#[test]
fn what_a_v5_connection_makes_of_the_bytes_of_issue_10() {
    let mut publish_ends_early = vec![0x32, 0x15, 0x00, 0x11];
    publish_ends_early.extend_from_slice(b"cc/v1/open/fz-chk");
    publish_ends_early.extend_from_slice(&[0x00, 0x09]);
    let malformed = End::Closed { code: 0x81 };
    let rows: &[(&[u8], End)] = &[
        (&[0xE0, 0x00], End::Disconnected { with_will: false }),
        (&[0xE0, 0x01, 0x00], End::Disconnected { with_will: false }),
        (&[0xE0, 0x01, 0x04], End::Disconnected { with_will: true }),
        (
            &[0xE0, 0x02, 0x04, 0x00],
            End::Disconnected { with_will: true },
        ),
        (&publish_ends_early, malformed.clone()),
        (&[0x82, 0x02, 0x00, 0x09], malformed.clone()),
        (&[0xF0, 0x02, 0x19, 0x00], End::Closed { code: 0x82 }),
        (&[0xF0, 0x00], End::Closed { code: 0x82 }),
        (&[0xC0, 0x00], End::Waiting),
        (&[], End::Waiting),
    ];
    for (bytes, expected) in rows {
        let mut with_ping = bytes.to_vec();
        with_ping.extend_from_slice(&[0xC0, 0x00]);
        let verdict = after_v5_connect(&with_ping);
        assert_eq!(&verdict.end, expected, "{bytes:02x?}");
        if *expected != End::Waiting {
            assert_eq!(
                verdict.consumed,
                v5_connect().len() + bytes.len(),
                "{bytes:02x?}: the connection stops at the packet that ends it"
            );
        }
        check(&with_ping);
    }
}

#[test]
fn every_seed_is_a_valid_connection() {
    for (name, bytes) in seeds() {
        let verdict = connection(&bytes, bytes.len(), CHECK_MAX_PACKET_SIZE);
        assert!(verdict.version.is_some(), "{name}: {verdict:?}");
        let expected_end = if name.ends_with("auth") {
            End::Closed { code: 0x82 }
        } else if name.ends_with("disconnect-with-will") {
            End::Disconnected { with_will: true }
        } else if name.contains("disconnect") || name.ends_with("all") {
            End::Disconnected { with_will: false }
        } else {
            End::Waiting
        };
        assert_eq!(verdict.end, expected_end, "{name}: {verdict:?}");
        check(&bytes);
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/connection")
}

/// Regenerates (with `UPDATE_FUZZ_CORPUS=1`) or checks the committed seed corpus: one file per
/// seed, named `seed-…`. Other files there (inputs a fuzzing run found and someone kept) are
/// left alone.
#[test]
fn the_committed_seed_corpus_is_current() {
    let update = std::env::var("UPDATE_FUZZ_CORPUS").is_ok_and(|v| v == "1");
    let dir = corpus_dir();
    let seeds = seeds();
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
        let known = seeds.iter().any(|(name, _)| file == format!("seed-{name}"));
        if file.starts_with("seed-") && !known {
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

/// SplitMix64: a few lines, good enough to spread mutations, and the same sequence everywhere
/// for a given seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that sit on the boundaries the framing and the parsers decide on: lengths of 0, one
/// varint byte's limit and its continuation bit, reason codes, property identifiers.
const INTERESTING: [u8; 12] = [
    0x00, 0x01, 0x02, 0x04, 0x7F, 0x80, 0xFF, 0x0B, 0x19, 0x23, 0x26, 0xE0,
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len);
                bytes[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                bytes[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                bytes.insert(at, rng.next() as u8);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(8)).min(len);
                bytes.drain(at..end);
            }
            4 => bytes.truncate(rng.below(len + 1)),
            5 => {
                // Another stream's tail: packets after a CONNECT they were not written for.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                bytes.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let copy = bytes[at..end].to_vec();
                bytes.splice(end..end, copy);
            }
            _ => bytes.push(rng.next() as u8),
        }
    }
    bytes
}

/// Runs [`check`] on mutations of the seeds: `COURTCHAT_PROPERTY_CASES` of them (default
/// 20,000), from `COURTCHAT_PROPERTY_SEED` (default fixed, so CI is repeatable).
#[test]
fn mutated_streams_keep_the_properties() {
    let cases: usize = std::env::var("COURTCHAT_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("COURTCHAT_PROPERTY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x00C0_C4A7);
    let seeds: Vec<Vec<u8>> = seeds().into_iter().map(|(_, bytes)| bytes).collect();
    let mut rng = Rng(seed);
    let mut ends = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..cases {
        let input = mutate(&mut rng, &seeds);
        let outcome = std::panic::catch_unwind(|| {
            check(&input);
            connection(&input, input.len(), CHECK_MAX_PACKET_SIZE).end
        });
        match outcome {
            Ok(end) => *ends.entry(format!("{end:?}")).or_default() += 1,
            Err(_) => panic!(
                "case {case} of seed {seed} failed (see the panic above); input: {input:02x?}"
            ),
        }
    }
    // The mutations must reach every kind of outcome, or the test exercises less than it says.
    for kind in ["Waiting", "Refused", "Disconnected", "Closed"] {
        assert!(
            ends.keys().any(|end| end.starts_with(kind)),
            "no input ended {kind}: {ends:?}"
        );
    }
}

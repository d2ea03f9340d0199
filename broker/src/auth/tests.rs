//! The authenticators and token keys against tokens of every kind (a table per rule).

use super::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::path::PathBuf;
use std::time::SystemTime;

fn hs256() -> (tempfile::TempDir, TokenKeys) {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthConfig {
        secret_file: dir.path().join("sub/secret"),
        ..AuthConfig::default()
    };
    let keys = TokenKeys::load(&config).unwrap();
    (dir, keys)
}

fn connect<'a>(client_id: &'a str, password: Option<&'a str>) -> ConnectInfo<'a> {
    ConnectInfo {
        client_id,
        username: None,
        password: password.map(str::as_bytes),
    }
}

#[test]
fn the_secret_file_is_created_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuthConfig {
        secret_file: dir.path().join("data/token-secret"),
        ..AuthConfig::default()
    };
    let first = TokenKeys::load(&config).unwrap();
    let token = first
        .mint(
            "kiosk-1",
            Role::Applicant,
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
    // A second load reads the same secret, so tokens stay valid across restarts.
    assert!(TokenKeys::load(&config).unwrap().verify(&token).is_ok());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config.secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn participant_roles_are_roles_of_the_same_name() {
    use schemas::db::entities::participant::ParticipantRole as Row;
    use schemas::wire::ParticipantRole as Wire;
    let table = [
        (Wire::Applicant, Row::Applicant, Role::Applicant),
        (Wire::Agent, Row::Agent, Role::Agent),
        (Wire::Supervisor, Row::Supervisor, Role::Supervisor),
    ];
    for (wire, row, role) in table {
        assert_eq!(Role::from(wire), role);
        assert_eq!(Role::from(row), role);
    }
}

#[test]
fn jwt_decisions() {
    let (_dir, keys) = hs256();
    let now = SystemTime::now();
    let valid = keys
        .mint("kiosk-1", Role::Applicant, Duration::from_secs(60), now)
        .unwrap();
    let expired = keys
        .mint(
            "kiosk-1",
            Role::Applicant,
            Duration::ZERO,
            now - Duration::from_secs(120),
        )
        .unwrap();
    let (_other_dir, other_keys) = hs256();
    let foreign = other_keys
        .mint("kiosk-1", Role::Applicant, Duration::from_secs(60), now)
        .unwrap();
    let chain = AuthChain::new(vec![Box::new(JwtAuthenticator::new(keys))]);

    let accepted = chain
        .authenticate(&connect("kiosk-1", Some(&valid)))
        .unwrap();
    assert_eq!(
        (accepted.subject.as_str(), accepted.role, accepted.anonymous),
        ("kiosk-1", Role::Applicant, false)
    );

    type Expectation = fn(&Refusal) -> bool;
    let rows: &[(&str, Option<&str>, Expectation)] = &[
        ("kiosk-1", None, |r| matches!(r, Refusal::NotAuthorized(_))),
        ("kiosk-1", Some("not-a-jwt"), |r| {
            matches!(r, Refusal::BadCredentials(_))
        }),
        ("kiosk-1", Some(&expired), |r| {
            matches!(r, Refusal::BadCredentials(_))
        }),
        ("kiosk-1", Some(&foreign), |r| {
            matches!(r, Refusal::BadCredentials(_))
        }),
        ("kiosk-2", Some(&valid), |r| {
            matches!(r, Refusal::NotAuthorized(_))
        }),
    ];
    for (client_id, password, expected) in rows {
        let refusal = chain
            .authenticate(&connect(client_id, *password))
            .unwrap_err();
        assert!(expected(&refusal), "{client_id} {password:?}: {refusal:?}");
    }
}

#[test]
fn minted_tokens_carry_their_issue_time() {
    let (_dir, keys) = hs256();
    let at = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    let token = keys
        .mint("agent-1", Role::Agent, Duration::from_secs(60), at)
        .unwrap();
    // Verification checks `exp` against the real clock, so read the claims unverified.
    let mut lenient = Validation::new(Algorithm::HS256);
    lenient.insecure_disable_signature_validation();
    lenient.validate_exp = false;
    let claims = jsonwebtoken::decode::<Claims>(&token, &DecodingKey::from_secret(&[]), &lenient)
        .unwrap()
        .claims;
    assert_eq!(claims.iat, Some(4_000_000_000));
}

#[test]
fn revoked_tokens_are_refused() {
    let (_dir, keys) = hs256();
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mint = |subject, at| {
        keys.mint(subject, Role::Agent, Duration::from_secs(3600), at)
            .unwrap()
    };
    let old = mint("agent-1", now - Duration::from_secs(10));
    let fresh = mint("agent-1", now);
    let other = mint("agent-2", now - Duration::from_secs(10));
    let revocations = StaffRevocations::new();
    revocations.revoke("agent-1", secs);
    let chain = AuthChain::new(vec![Box::new(
        JwtAuthenticator::new(keys).with_revocations(revocations),
    )]);
    assert!(matches!(
        chain.authenticate(&connect("agent-1", Some(&old))),
        Err(Refusal::NotAuthorized(_))
    ));
    let accepted = chain
        .authenticate(&connect("agent-1", Some(&fresh)))
        .unwrap();
    assert_eq!(accepted.issued_at, Some(secs));
    assert!(
        chain
            .authenticate(&connect("agent-2", Some(&other)))
            .is_ok()
    );
}

#[test]
fn anonymous_clients_are_marked() {
    let (_dir, keys) = hs256();
    let chain = AuthChain::new(vec![
        Box::new(JwtAuthenticator::new(keys)),
        Box::new(AnonymousAuthenticator {
            role: Role::Anonymous,
        }),
    ]);
    let identity = chain.authenticate(&connect("guest", None)).unwrap();
    assert!(identity.anonymous);
    // A wrong token is still refused: anonymous access is for clients without credentials.
    assert!(chain.authenticate(&connect("guest", Some("bad"))).is_err());
}

/// Standard base64 for PEM armour; test-only, to write key files generated at test time.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        base64(der)
    )
}

#[test]
fn base64_matches_the_rfc_vectors() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), expected);
    }
}

#[test]
fn eddsa_key_pairs_sign_and_verify() {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    // SubjectPublicKeyInfo for Ed25519: the algorithm identifier, then the raw key.
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());

    let dir = tempfile::tempdir().unwrap();
    let (public, private) = (
        dir.path().join("public.pem"),
        dir.path().join("private.pem"),
    );
    std::fs::write(&public, pem("PUBLIC KEY", &spki)).unwrap();
    std::fs::write(&private, pem("PRIVATE KEY", pkcs8.as_ref())).unwrap();
    let config = AuthConfig {
        algorithm: TokenAlgorithm::EdDSA,
        public_key_file: public.clone(),
        private_key_file: private,
        issuer: "courtchat-test".to_owned(),
        ..AuthConfig::default()
    };
    let keys = TokenKeys::load(&config).unwrap();
    let token = keys
        .mint(
            "agent-1",
            Role::Agent,
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
    let claims = keys.verify(&token).unwrap();
    assert_eq!((claims.sub.as_str(), claims.role), ("agent-1", Role::Agent));

    // A verifier with only the public key accepts the token but cannot mint.
    let verifier = TokenKeys::load(&AuthConfig {
        private_key_file: PathBuf::new(),
        ..config.clone()
    })
    .unwrap();
    assert!(verifier.verify(&token).is_ok());
    assert!(
        verifier
            .mint("x", Role::Agent, Duration::from_secs(1), SystemTime::now())
            .is_err()
    );
    // The issuer is enforced.
    let strict = TokenKeys::load(&AuthConfig {
        issuer: "someone-else".to_owned(),
        ..config
    })
    .unwrap();
    assert!(strict.verify(&token).is_err());
    // An HS256 token is not accepted by an EdDSA verifier.
    let (_dir, hs) = hs256();
    let hs_token = hs
        .mint(
            "agent-1",
            Role::Agent,
            Duration::from_secs(60),
            SystemTime::now(),
        )
        .unwrap();
    assert!(verifier.verify(&hs_token).is_err());
}

#[test]
fn a_token_issued_in_the_future_is_refused_beyond_the_tolerated_skew() {
    let keys = shared_secret_keys();
    let now = SystemTime::now();
    let tolerated = AuthConfig::default().iat_leeway;
    assert_eq!(tolerated, 60, "the documented default");
    // (seconds the token's iat lies ahead of the verifier's clock, accepted)
    let rows = [
        (0, true),
        (tolerated, true),
        (tolerated + 1, false),
        (3600, false),
    ];
    for (ahead, accepted) in rows {
        let token = keys
            .mint(
                "agent-1",
                Role::Agent,
                Duration::from_secs(7200),
                now + Duration::from_secs(ahead),
            )
            .unwrap();
        assert_eq!(keys.verify_at(&token, now).is_ok(), accepted, "{ahead} s");
        // The gateway refuses it as bad credentials (CONNACK 0x86 / 0x04).
        let chain = AuthChain::new(vec![Box::new(JwtAuthenticator::new(shared_secret_keys()))]);
        let outcome = chain.authenticate(&connect("agent-1", Some(&token)));
        if ahead > tolerated {
            assert!(
                matches!(outcome, Err(Refusal::BadCredentials(ref reason)) if reason.contains("future")),
                "{ahead} s: {outcome:?}"
            );
        }
    }
}

/// Keys from one inline secret: two loads verify each other's tokens.
fn shared_secret_keys() -> TokenKeys {
    TokenKeys::load(&AuthConfig {
        secret: "a-test-secret-of-thirty-two-bytes-at-least".to_owned(),
        ..AuthConfig::default()
    })
    .unwrap()
}

#[test]
fn details_travel_in_the_token_and_bad_ones_are_neither_signed_nor_accepted() {
    use schemas::wire::Channel;
    let keys = shared_secret_keys();
    let now = SystemTime::now();
    let details = TokenDetails {
        id: Some("3f0c9a".to_owned()),
        channel: Some(Channel::Kiosk),
        team: Some("licensing".to_owned()),
    };
    let token = keys
        .mint_with(
            "ap-1",
            Role::Applicant,
            Duration::from_secs(60),
            now,
            details.clone(),
        )
        .unwrap();
    assert_eq!(keys.verify(&token).unwrap().details(), details);
    let chain = AuthChain::new(vec![Box::new(JwtAuthenticator::new(shared_secret_keys()))]);
    let identity = chain.authenticate(&connect("ap-1", Some(&token))).unwrap();
    assert_eq!(identity.token, details);
    // A token without details (`courtchat token`) has none.
    let plain = keys
        .mint("ap-2", Role::Applicant, Duration::from_secs(60), now)
        .unwrap();
    assert_eq!(
        keys.verify(&plain).unwrap().details(),
        TokenDetails::default()
    );

    // What the server would refuse it does not sign.
    let bad = [
        TokenDetails {
            id: Some(String::new()),
            ..TokenDetails::default()
        },
        TokenDetails {
            id: Some("x".repeat(65)),
            ..TokenDetails::default()
        },
        TokenDetails {
            id: Some("has space".to_owned()),
            ..TokenDetails::default()
        },
        TokenDetails {
            team: Some("left\u{202E}right".to_owned()),
            ..TokenDetails::default()
        },
        TokenDetails {
            team: Some("t".repeat(129)),
            ..TokenDetails::default()
        },
    ];
    for details in bad {
        assert!(
            keys.mint_with(
                "ap-1",
                Role::Applicant,
                Duration::from_secs(60),
                now,
                details.clone()
            )
            .is_err(),
            "{details:?}"
        );
    }
}

#[test]
fn an_ended_token_is_refused_while_the_subjects_other_tokens_work() {
    let keys = shared_secret_keys();
    let now = SystemTime::now();
    let mint = |id: &str| {
        keys.mint_with(
            "ann",
            Role::Admin,
            Duration::from_secs(3600),
            now,
            TokenDetails {
                id: Some(id.to_owned()),
                ..TokenDetails::default()
            },
        )
        .unwrap()
    };
    let (first, second) = (mint("t-1"), mint("t-2"));
    let revocations = StaffRevocations::new();
    let chain = AuthChain::new(vec![Box::new(
        JwtAuthenticator::new(shared_secret_keys()).with_revocations(revocations.clone()),
    )]);
    revocations.end_token("ann", "t-1", unix(now) + 3600);
    assert!(matches!(
        chain.authenticate(&connect("ann", Some(&first))),
        Err(Refusal::NotAuthorized(_))
    ));
    assert!(chain.authenticate(&connect("ann", Some(&second))).is_ok());
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn pseudonyms_are_stable_short_and_keyed() {
    let keys = shared_secret_keys();
    let same = shared_secret_keys();
    let (_dir, other) = hs256();
    let name = "correct horse battery staple";
    let pseudonym = keys.pseudonym(name);
    assert_eq!(pseudonym.len(), 16);
    assert!(pseudonym.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        pseudonym,
        same.pseudonym(name),
        "the same key, the same pseudonym"
    );
    assert_ne!(pseudonym, keys.pseudonym("correct horse battery stapler"));
    assert_ne!(
        pseudonym,
        other.pseudonym(name),
        "another server's key, another pseudonym"
    );
    assert!(!pseudonym.contains("horse"));
}

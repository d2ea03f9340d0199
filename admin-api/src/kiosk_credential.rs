//! A kiosk's machine credential, `cck_<kiosk id>_<secret>`, and the random names the kiosk path
//! hands out: kiosk ids (`k-…`) and applicant subjects (`ap-…`).
//!
//! The secret is 256 random bits, so its SHA-256 is all the database needs to hold: unlike a
//! password it cannot be guessed from a dictionary, and a slow hash would only slow the kiosks
//! down. The kiosk id travels in the credential so that it is looked up by primary key and its
//! hash compared in constant time, instead of the database being searched by a secret.

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// What every kiosk credential starts with, so that one pasted into the wrong place (a log, a
/// ticket) is recognisable, and one sent to this API is told from a staff JWT.
pub const PREFIX: &str = "cck_";

const KIOSK_ID_PREFIX: &str = "k-";
/// Random bytes in a kiosk id: ids are not secret, they only have to be unique.
const KIOSK_ID_BYTES: usize = 8;
/// Random bytes in a secret: 256 bits.
const SECRET_BYTES: usize = 32;
const SUBJECT_PREFIX: &str = "ap-";
/// Random bytes in an applicant subject: 96 bits, so that nobody guesses another applicant's
/// client id (and their ack topic) in the token's lifetime.
const SUBJECT_BYTES: usize = 12;

/// The system's random numbers failed (they do not, on a working machine).
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct RandomError;

fn random<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomError)?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_lower_hex(text: &str, bytes: usize) -> bool {
    text.len() == 2 * bytes && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new kiosk's id and credential, made from `id` and `secret` bytes.
#[derive(Debug)]
pub struct Issued {
    pub kiosk_id: String,
    /// `cck_<kiosk id>_<secret>`: shown once, to the admin who enrols the kiosk.
    pub credential: String,
    /// What the database keeps of it ([`digest`] of the secret).
    pub hash: String,
}

impl Issued {
    pub fn from_bytes(id: [u8; KIOSK_ID_BYTES], secret: [u8; SECRET_BYTES]) -> Self {
        let kiosk_id = format!("{KIOSK_ID_PREFIX}{}", hex(&id));
        let secret = hex(&secret);
        Self {
            credential: format!("{PREFIX}{kiosk_id}_{secret}"),
            hash: digest(&secret),
            kiosk_id,
        }
    }

    pub fn random() -> Result<Self, RandomError> {
        Ok(Self::from_bytes(random()?, random()?))
    }
}

/// A credential as presented, split; nothing is verified yet.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    pub kiosk_id: &'a str,
    secret: &'a str,
}

/// Splits `text` into a kiosk id and a secret, if it has a credential's shape.
pub fn parse(text: &str) -> Option<Presented<'_>> {
    let (kiosk_id, secret) = text.strip_prefix(PREFIX)?.split_once('_')?;
    let well_formed = kiosk_id
        .strip_prefix(KIOSK_ID_PREFIX)
        .is_some_and(|id| is_lower_hex(id, KIOSK_ID_BYTES))
        && is_lower_hex(secret, SECRET_BYTES);
    well_formed.then_some(Presented { kiosk_id, secret })
}

/// Whether `kiosk_id` has the shape of a kiosk id (anything else names no kiosk).
pub fn valid_kiosk_id(kiosk_id: &str) -> bool {
    kiosk_id
        .strip_prefix(KIOSK_ID_PREFIX)
        .is_some_and(|id| is_lower_hex(id, KIOSK_ID_BYTES))
}

/// Lowercase hex of the SHA-256 of `secret`.
pub fn digest(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

impl Presented<'_> {
    /// Whether the secret is the one whose digest is `stored`; compared in constant time, so
    /// that the answer's timing says nothing about how much of it was right.
    pub fn matches(&self, stored: &str) -> bool {
        digest(self.secret)
            .as_bytes()
            .ct_eq(stored.as_bytes())
            .into()
    }
}

/// A fresh applicant subject, `ap-` and 24 hex digits: a valid MQTT client id and topic level.
pub fn applicant_subject_from(bytes: [u8; SUBJECT_BYTES]) -> String {
    format!("{SUBJECT_PREFIX}{}", hex(&bytes))
}

pub fn applicant_subject() -> Result<String, RandomError> {
    Ok(applicant_subject_from(random()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_credential_parses_back_and_matches_only_its_hash() {
        let issued = Issued::from_bytes([0xab; 8], [0x01; 32]);
        assert_eq!(issued.kiosk_id, "k-abababababababab");
        assert_eq!(
            issued.credential,
            format!("cck_k-abababababababab_{}", "01".repeat(32))
        );
        let presented = parse(&issued.credential).expect("well formed");
        assert_eq!(presented.kiosk_id, issued.kiosk_id);
        assert!(presented.matches(&issued.hash));
        let other = Issued::from_bytes([0xab; 8], [0x02; 32]);
        assert!(!presented.matches(&other.hash));
        assert!(!presented.matches(""), "an empty hash matches nothing");
        assert_eq!(issued.hash.len(), 64);
        assert!(!issued.hash.contains(&"01".repeat(32)), "not the secret");
    }

    #[test]
    fn only_the_credential_shape_parses() {
        let good = format!("cck_k-{}_{}", "0".repeat(16), "f".repeat(64));
        assert!(parse(&good).is_some());
        for bad in [
            String::new(),
            "cck_".to_owned(),
            "eyJhbGciOiJIUzI1NiJ9.e30.x".to_owned(),
            good.to_uppercase(),
            format!("cck_k-{}_{}", "0".repeat(15), "f".repeat(64)),
            format!("cck_k-{}_{}", "0".repeat(16), "f".repeat(63)),
            format!("cck_k-{}_{}", "0".repeat(16), "F".repeat(64)),
            format!("cck_x-{}_{}", "0".repeat(16), "f".repeat(64)),
            format!("cck_k-{}_{}_", "0".repeat(16), "f".repeat(64)),
            format!("cck_k-{}-{}", "0".repeat(16), "f".repeat(64)),
            format!(" cck_k-{}_{}", "0".repeat(16), "f".repeat(64)),
        ] {
            assert!(parse(&bad).is_none(), "{bad:?}");
        }
        assert!(valid_kiosk_id("k-0123456789abcdef"));
        assert!(!valid_kiosk_id("k-0123456789ABCDEF"));
        assert!(!valid_kiosk_id("k-0123"));
    }

    #[test]
    fn applicant_subjects_are_client_ids_and_random() {
        assert_eq!(
            applicant_subject_from([0; 12]),
            format!("ap-{}", "0".repeat(24))
        );
        let (a, b) = (applicant_subject().unwrap(), applicant_subject().unwrap());
        assert_ne!(a, b);
        assert!(a.len() == 27 && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        let (x, y) = (Issued::random().unwrap(), Issued::random().unwrap());
        assert_ne!(x.kiosk_id, y.kiosk_id);
        assert_ne!(x.hash, y.hash);
    }
}

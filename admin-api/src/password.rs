//! Staff passwords: stored only as an argon2id hash (a PHC string carrying its own salt and
//! parameters), compared only through it.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// The shortest password accepted for staff.
pub const MIN_LENGTH: usize = 12;
/// The longest: hashing cost grows with the input, and nobody types more.
pub const MAX_LENGTH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password must be {MIN_LENGTH} to {MAX_LENGTH} characters long")]
    Length,
    #[error("the password could not be hashed: {0}")]
    Hash(String),
}

/// The argon2id hash of `password` with a fresh random salt (the crate's default parameters,
/// which follow OWASP's recommendation for argon2id).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let length = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(PasswordError::Length);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| PasswordError::Hash(err.to_string()))
}

/// Whether `password` is the one `stored` (a PHC string) was made from. A malformed stored hash
/// matches nothing.
pub fn verify(stored: &str, password: &str) -> bool {
    if password.len() > MAX_LENGTH * 4 {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of nothing anyone can type, compared against when the account does not exist, so that
/// a wrong username costs as long as a wrong password and the answer's timing does not tell
/// which accounts exist.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("\u{0}decoy password, never valid\u{0}").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify(&stored, "correct horse battery"));
        assert!(!verify(&stored, "correct horse batterY"));
        assert!(!verify(&stored, ""));
        // Salted: the same password hashes differently each time.
        assert_ne!(stored, hash("correct horse battery").unwrap());
    }

    #[test]
    fn lengths_outside_the_bounds_are_refused() {
        assert!(matches!(hash("short"), Err(PasswordError::Length)));
        assert!(matches!(
            hash(&"x".repeat(MAX_LENGTH + 1)),
            Err(PasswordError::Length)
        ));
        assert!(
            hash(&"é".repeat(MIN_LENGTH)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn a_malformed_stored_hash_matches_nothing() {
        assert!(!verify("not a hash", "anything at all"));
        assert!(!verify(decoy(), "anything at all"));
    }
}

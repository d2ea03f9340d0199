//! Unguessable values for the flow: state, nonce and the PKCE verifier (RFC 7636), each 256
//! random bits in unpadded base64url, which is also what PKCE's verifier alphabet allows.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::OidcError;

/// 256 random bits, base64url without padding (43 characters).
pub fn random_token() -> Result<String, OidcError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| OidcError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The S256 challenge of a PKCE verifier: base64url(SHA-256(verifier)).
pub(crate) fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_challenge_is_the_unpadded_base64url_sha256_of_the_verifier() {
        // Computed apart, with Python's hashlib and base64.
        assert_eq!(
            super::challenge("dBjftJeZ4CVP-mJ92K1uJGHXXeEm8qThwvJm1fE1aBk"),
            "U1TzjfOgJLEeu58IT7NSYRon5nsbmr9Enke5WfF3-JQ"
        );
        let (a, b) = (
            super::random_token().unwrap(),
            super::random_token().unwrap(),
        );
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }
}

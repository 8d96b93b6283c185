//! The HMAC key every signed token of this product uses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use voice_domain::ports::Secret;

/// HMAC-SHA256, the one MAC of every token this product signs.
pub type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 key: the self-hosted server signs its voice tokens and resume tokens with
/// one (the messages differ in shape, so one kind can never pass for the other). Its `Debug`
/// never shows the key.
#[derive(Clone)]
pub struct HmacKey {
    key: Secret,
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey([redacted])")
    }
}

impl HmacKey {
    /// A key from the configured secret (its UTF-8 bytes are the key).
    pub fn new(secret: Secret) -> Self {
        Self { key: secret }
    }

    /// A fresh random 256-bit key from the OS, as text, for configuring or storing it (the
    /// self-hosted data directory keeps one so tokens survive restarts).
    pub fn random_secret() -> Secret {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Secret::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A MAC keyed with this key, to sign a message or check a signature with
    /// `Mac::verify_slice` (constant time; never compare signatures with `==`).
    pub fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC accepts keys of any length")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_256_bits_and_differ() {
        let a = HmacKey::random_secret();
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_ne!(a.expose(), HmacKey::random_secret().expose());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = HmacKey::new(Secret::new("0123456789abcdef0123456789abcdef"));
        assert!(!format!("{key:?}").contains("0123456789"));
    }
}

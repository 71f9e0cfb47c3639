//! Encryption at rest of `writeOnly` (secret) configuration values: AES-256-GCM with a
//! random nonce per seal and the installation as associated data, so a sealed blob
//! cannot be moved to another installation.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;

/// Seals and opens secret configuration values.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    /// HMAC key for `fingerprint`, derived from the secrets key (never the key itself).
    mac_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer from a 32-byte key given as 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<Self, String> {
        let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("secrets key is not hex: {e}"))?;
        if bytes.len() != 32 {
            return Err(format!("secrets key must be 32 bytes (64 hex digits), found {} bytes", bytes.len()));
        }
        let mac_key: [u8; 32] = {
            use sha2::Digest as _;
            sha2::Sha256::new().chain_update(b"kiosk request fingerprint\0").chain_update(&bytes).finalize().into()
        };
        Ok(Self { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)), mac_key })
    }

    /// A keyed digest (HMAC-SHA-256) of `parts`, each length-prefixed: what a request
    /// asked, kept to compare with a retry's, which reveals nothing of the request (its
    /// secret config values included) to a reader of the database.
    pub fn fingerprint(&self, parts: &[&str]) -> String {
        use hmac::Mac as _;
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.mac_key) else {
            return String::new();
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new random key, as hex.
    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        hex::encode(key)
    }

    pub fn seal(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: context.as_bytes() })
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, String> {
        if sealed.len() < 12 {
            return Err("sealed value too short".into());
        }
        let (nonce, body) = sealed.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: context.as_bytes() })
            .map_err(|_| "sealed value does not open with this key (wrong key or tampered)".to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let s = Sealer::from_hex(&Sealer::generate_hex()).unwrap();
        let sealed = s.seal(b"sk-live-123", "t1/i1");
        assert!(!sealed.windows(11).any(|w| w == b"sk-live-123"));
        assert_eq!(s.open(&sealed, "t1/i1").unwrap(), b"sk-live-123");
        assert!(s.open(&sealed, "t2/i1").is_err());
        assert!(Sealer::from_hex("abcd").unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn fingerprints_are_keyed_and_separate_their_parts() {
        let (a, b) = (Sealer::from_hex(&"11".repeat(32)).unwrap(), Sealer::from_hex(&"22".repeat(32)).unwrap());
        let asked = ["install", r#"{"config":{"apiKey":"sk-live-123"}}"#];
        assert_eq!(a.fingerprint(&asked), a.fingerprint(&asked));
        assert_eq!(a.fingerprint(&asked).len(), 64);
        assert_ne!(a.fingerprint(&asked), b.fingerprint(&asked), "another key, another digest");
        assert_ne!(a.fingerprint(&["ab", "c"]), a.fingerprint(&["a", "bc"]));
        // Not the plain digest a reader of the database could test guesses against.
        use sha2::Digest as _;
        let plain = hex::encode(sha2::Sha256::digest(asked.concat()));
        assert_ne!(a.fingerprint(&asked), plain);
    }
}

//! Randomness, hashing and the token vault (IdP tokens encrypted at rest).
//!
//! The vault key lives in `secret_key_file` (generated on first start, mode 0600). Tokens are
//! sealed with XChaCha20-Poly1305; the associated data binds each ciphertext to its identity, so
//! a ciphertext copied onto another identity does not open. Each ciphertext names its key by
//! an id, so the key can be rotated: the new key seals, and the keys listed in
//! `previous_secret_key_files` still open what they sealed.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// `n` random bytes from a CSPRNG, base64url without padding.
pub fn random_token(n: usize) -> String {
    // `thread_rng` is a CSPRNG (ChaCha) seeded and periodically reseeded from the OS: as
    // unpredictable as `OsRng`, without a system call per token.
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new user's id: the creation time in milliseconds (12 hex digits), then 12 random bytes
/// (base64url). Ids made later sort after earlier ones, so a new user's records land at the
/// end of the trees keyed by user id (one page stays in the cache) instead of on a random
/// page each. The time is no secret: the account shows `created_at`.
pub fn new_user_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    format!("{:012x}{}", millis & 0xffff_ffff_ffff, random_token(12))
}

/// Whether `text` has the shape of [`new_user_id`]: 12 hex digits, then 16 base64url
/// characters.
pub fn looks_like_user_id(text: &str) -> bool {
    text.len() == 28
        && text.bytes().take(12).all(|b| b.is_ascii_hexdigit())
        && text
            .bytes()
            .skip(12)
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A value derived from a login's `state` with a key made at startup (HMAC-SHA-256,
/// base64url): the nonce (`label` "nonce") and the PKCE verifier ("pkce") of a login. They are
/// as unpredictable as random ones without the key, which never leaves the process, and the
/// pending-login table need not store them. A restart drops pending logins, and the key with
/// them.
pub fn login_secret(label: &str, state: &str) -> String {
    use hmac::digest::KeyInit;
    use hmac::{Hmac, Mac};
    // Keyed once (one SHA-256 block, HMAC's own key size); each use clones the keyed state.
    static KEYED: std::sync::OnceLock<Hmac<Sha256>> = std::sync::OnceLock::new();
    let mut mac = KEYED
        .get_or_init(|| {
            let mut key = [0u8; 64];
            rand::rngs::OsRng.fill_bytes(&mut key);
            <Hmac<Sha256> as KeyInit>::new(&key.into())
        })
        .clone();
    mac.update(label.as_bytes());
    mac.update(&[0]);
    mac.update(state.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Lowercase hex SHA-256: how cookie values are stored, so a database copy holds no usable
/// session.
pub fn sha256_hex(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// Constant-time equality of two strings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A vault failure. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The key file could not be read or created.
    #[error("secret key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    /// A ciphertext did not open: wrong key, tampered, or bound to another identity.
    #[error("sealed data does not open with this key")]
    Open,
    /// Sealing failed.
    #[error("sealing failed")]
    Seal,
}

/// `[1][nonce][ciphertext]`: no key id (read with every key).
const SEALED_V1: u8 = 1;
/// `[2][key id: 8][nonce: 24][ciphertext]`.
const SEALED_V2: u8 = 2;

/// Encrypts tokens at rest.
pub struct TokenVault {
    /// The sealing key first, then the previous ones (open only).
    keys: Vec<([u8; 8], XChaCha20Poly1305)>,
}

fn key_id(key: &[u8; 32]) -> [u8; 8] {
    let digest = Sha256::digest(key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

impl fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenVault([redacted])")
    }
}

impl TokenVault {
    /// A vault with the given 32-byte key.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self {
            keys: vec![(key_id(key), XChaCha20Poly1305::new(Key::from_slice(key)))],
        }
    }

    /// Adds a previous key: it opens what it sealed, and seals nothing new.
    pub fn with_previous(mut self, key: &[u8; 32]) -> Self {
        self.keys
            .push((key_id(key), XChaCha20Poly1305::new(Key::from_slice(key))));
        self
    }

    /// The current key file, plus previous key files (which must exist) for rotation.
    pub fn load(path: &Path, previous: &[std::path::PathBuf]) -> Result<Self, VaultError> {
        let mut vault = Self::load_or_create(path)?;
        for old in previous {
            let key = read_key(old)?.ok_or_else(|| VaultError::KeyFile {
                path: old.display().to_string(),
                reason: "not found (a previous key must exist)".into(),
            })?;
            vault = vault.with_previous(&key);
        }
        Ok(vault)
    }

    /// Reads the key file, or creates it (mode 0600) with a fresh random key.
    pub fn load_or_create(path: &Path) -> Result<Self, VaultError> {
        let fail = |reason: String| VaultError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        match read_key(path) {
            Ok(Some(key)) => Ok(Self::from_key(&key)),
            Err(err) => Err(err),
            Ok(None) => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|err| fail(err.to_string()))?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(path).map_err(|err| fail(err.to_string()))?;
                file.write_all(URL_SAFE_NO_PAD.encode(key).as_bytes())
                    .and_then(|_| file.write_all(b"\n"))
                    .and_then(|_| file.sync_all())
                    .map_err(|err| fail(err.to_string()))?;
                Ok(Self::from_key(&key))
            }
        }
    }

    /// Encrypts `plaintext`, bound to `context` (e.g. the identity key).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self.keys[0]
            .1
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| VaultError::Seal)?;
        let mut out = Vec::with_capacity(9 + nonce.len() + ciphertext.len());
        out.push(SEALED_V2);
        out.extend_from_slice(&self.keys[0].0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`seal`](Self::seal) produced with the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        let attempt = |cipher: &XChaCha20Poly1305, nonce: &[u8], msg: &[u8]| {
            cipher
                .decrypt(XNonce::from_slice(nonce), Payload { msg, aad: context })
                .map_err(|_| VaultError::Open)
        };
        match sealed.first() {
            Some(&SEALED_V2) if sealed.len() >= 33 => {
                let (id, rest) = sealed[1..].split_at(8);
                let (_, cipher) = self
                    .keys
                    .iter()
                    .find(|(key, _)| key == id)
                    .ok_or(VaultError::Open)?;
                attempt(cipher, &rest[..24], &rest[24..])
            }
            Some(&SEALED_V1) if sealed.len() >= 25 => self
                .keys
                .iter()
                .find_map(|(_, cipher)| attempt(cipher, &sealed[1..25], &sealed[25..]).ok())
                .ok_or(VaultError::Open),
            _ => Err(VaultError::Open),
        }
    }
}

/// Reads a key file; `None` when it does not exist.
fn read_key(path: &Path) -> Result<Option<[u8; 32]>, VaultError> {
    let fail = |reason: String| VaultError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| {
                fail("not a base64url key (delete it to generate a new one; stored tokens are then lost)".into())
            })?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| fail("the key must be 32 bytes".into()))?;
            Ok(Some(key))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(fail(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_sort_by_creation_and_stay_unpredictable() {
        let first = new_user_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later: Vec<String> = (0..100).map(|_| new_user_id()).collect();
        assert!(later.iter().all(|id| *id > first), "a later id sorts after");
        let distinct: std::collections::BTreeSet<_> = later.iter().collect();
        assert_eq!(
            distinct.len(),
            100,
            "ids made in the same millisecond differ"
        );
        for id in &later {
            assert_eq!(id.len(), 12 + 16);
            assert!(id[..12].bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    #[test]
    fn seal_round_trips_and_binds_context() -> Result<(), VaultError> {
        let vault = TokenVault::from_key(&[7u8; 32]);
        let sealed = vault.seal(b"idp\0alice", b"access-token-value")?;
        assert!(
            !sealed.windows(6).any(|w| w == b"access"),
            "plaintext visible"
        );
        assert_eq!(vault.open(b"idp\0alice", &sealed)?, b"access-token-value");
        assert!(
            vault.open(b"idp\0mallory", &sealed).is_err(),
            "context not bound"
        );
        let other = TokenVault::from_key(&[8u8; 32]);
        assert!(
            other.open(b"idp\0alice", &sealed).is_err(),
            "other key opened it"
        );
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(vault.open(b"idp\0alice", &tampered).is_err());
        Ok(())
    }

    #[test]
    fn key_file_is_created_once_and_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub/key");
        let sealed = TokenVault::load_or_create(&path)?.seal(b"c", b"x")?;
        assert_eq!(
            TokenVault::load_or_create(&path)?.open(b"c", &sealed)?,
            b"x"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path)?.permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&path, "garbage")?;
        let err = TokenVault::load_or_create(&path)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("base64url")));
        Ok(())
    }

    #[test]
    fn rotated_keys_still_open_what_they_sealed() -> Result<(), VaultError> {
        let old = TokenVault::from_key(&[1u8; 32]);
        let sealed_by_old = old.seal(b"ctx", b"kept")?;
        let rotated = TokenVault::from_key(&[2u8; 32]).with_previous(&[1u8; 32]);
        assert_eq!(rotated.open(b"ctx", &sealed_by_old)?, b"kept");
        let sealed_by_new = rotated.seal(b"ctx", b"new")?;
        assert_eq!(
            &sealed_by_new[1..9],
            &key_id(&[2u8; 32]),
            "sealed with the new key"
        );
        assert!(old.open(b"ctx", &sealed_by_new).is_err());
        let forgotten = TokenVault::from_key(&[2u8; 32]);
        assert!(
            forgotten.open(b"ctx", &sealed_by_old).is_err(),
            "without the old key it stays shut"
        );
        Ok(())
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
        assert_eq!(sha256_hex("abc").len(), 64);
        assert!(
            constant_time_eq("abc", "abc")
                && !constant_time_eq("abc", "abd")
                && !constant_time_eq("a", "ab")
        );
    }
}

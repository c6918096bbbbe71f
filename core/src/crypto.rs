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

/// The keys that derive a login's nonce and PKCE verifier from its `state` (HMAC-SHA-256,
/// base64url): one per vault key, derived from it. They are as unpredictable as random values
/// without the key, the pending-login store keeps neither, and every replica that shares
/// `secret_key_file` derives the same ones, so a login started on one finishes on another. The
/// first key derives; a login names its key by id ([`LoginSecrets::key_id`]), so one started
/// before a key rotation re-derives with the previous key.
#[derive(Clone)]
pub struct LoginSecrets {
    keys: Vec<(String, hmac::Hmac<Sha256>)>,
}

impl fmt::Debug for LoginSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginSecrets([redacted])")
    }
}

impl LoginSecrets {
    /// From vault keys, the current one first.
    fn from_keys<'a>(keys: impl IntoIterator<Item = &'a [u8; 32]>) -> Self {
        use hmac::digest::KeyInit;
        use hmac::Mac;
        // HMAC pads a key shorter than its 64-byte block with zeros: the padded block is the
        // same key, and a fixed-size one cannot be refused.
        let keyed = |key: &[u8]| {
            let mut block = [0u8; 64];
            block[..key.len()].copy_from_slice(key);
            <hmac::Hmac<Sha256> as KeyInit>::new(&block.into())
        };
        let keys = keys
            .into_iter()
            .map(|key| {
                // Its own key, not the vault's: the vault key only ever seals.
                let mut derive = keyed(key);
                derive.update(b"authnz login secrets v1");
                let own = derive.finalize().into_bytes();
                (hex(&key_id(key)), keyed(&own))
            })
            .collect();
        Self { keys }
    }

    /// With a fresh random key (a store used without a vault, as in tests).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self::from_keys([&key])
    }

    /// The id of the key that derives now.
    pub fn key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// `label` ("nonce", "pkce") of the login with this `state`, with the current key.
    pub fn derive(&self, label: &str, state: &str) -> String {
        Self::with(&self.keys[0].1, label, state)
    }

    /// [`LoginSecrets::derive`] with the key of that id, if the vault still has it.
    pub fn derive_with(&self, key_id: &str, label: &str, state: &str) -> Option<String> {
        self.keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, mac)| Self::with(mac, label, state))
    }

    fn with(mac: &hmac::Hmac<Sha256>, label: &str, state: &str) -> String {
        use hmac::Mac;
        // Keyed once; each use clones the keyed state.
        let mut mac = mac.clone();
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(state.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
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

/// Writes a fresh random key to `path` (mode 0600, base64url and a newline: the format
/// `secret_key_file` takes), creating its directory; refuses a file that exists.
pub fn write_new_key(path: &Path) -> Result<[u8; 32], VaultError> {
    let fail = |reason: String| VaultError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|err| fail(err.to_string()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::AlreadyExists => {
            fail("exists already; a key is never overwritten (move it away first)".into())
        }
        _ => fail(err.to_string()),
    })?;
    file.write_all(URL_SAFE_NO_PAD.encode(key).as_bytes())
        .and_then(|_| file.write_all(b"\n"))
        .and_then(|_| file.sync_all())
        .map_err(|err| fail(err.to_string()))?;
    Ok(key)
}

/// Encrypts tokens at rest.
pub struct TokenVault {
    /// The sealing key first, then the previous ones (open only).
    keys: Vec<([u8; 8], XChaCha20Poly1305)>,
    /// The raw keys, in the same order, for the login secrets derived from them.
    raw: Vec<[u8; 32]>,
    login: LoginSecrets,
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
            raw: vec![*key],
            login: LoginSecrets::from_keys([key]),
        }
    }

    /// The keys that derive logins' nonces and PKCE verifiers, from this vault's keys.
    pub fn login_secrets(&self) -> &LoginSecrets {
        &self.login
    }

    /// Adds a previous key: it opens what it sealed, and seals nothing new.
    pub fn with_previous(mut self, key: &[u8; 32]) -> Self {
        self.keys
            .push((key_id(key), XChaCha20Poly1305::new(Key::from_slice(key))));
        self.raw.push(*key);
        self.login = LoginSecrets::from_keys(&self.raw);
        self
    }

    /// The current key file, plus previous key files (which must exist) for rotation.
    pub fn load(path: &Path, previous: &[std::path::PathBuf]) -> Result<Self, VaultError> {
        Self::load_with(Self::load_or_create(path)?, previous)
    }

    /// [`TokenVault::load`] for a shared database: the key file must exist (replicas share
    /// one; none of them may make its own).
    pub fn load_shared(path: &Path, previous: &[std::path::PathBuf]) -> Result<Self, VaultError> {
        let key = read_key(path)?.ok_or_else(|| VaultError::KeyFile {
            path: path.display().to_string(),
            reason: "not found: with [server.postgres] every replica must be given the same key \
                     file, made once with `authnz keygen PATH`"
                .into(),
        })?;
        Self::load_with(Self::from_key(&key), previous)
    }

    fn load_with(mut vault: Self, previous: &[std::path::PathBuf]) -> Result<Self, VaultError> {
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
        match read_key(path) {
            Ok(Some(key)) => Ok(Self::from_key(&key)),
            Err(err) => Err(err),
            Ok(None) => Ok(Self::from_key(&write_new_key(path)?)),
        }
    }

    /// Whether `sealed` was sealed with the current key (not a previous one).
    pub fn sealed_with_current(&self, sealed: &[u8]) -> bool {
        sealed.first() == Some(&SEALED_V2) && sealed.get(1..9) == Some(&self.keys[0].0[..])
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
    fn replicas_sharing_a_key_derive_the_same_login_secrets_and_a_rotation_keeps_old_logins() {
        let (key, other) = ([7u8; 32], [8u8; 32]);
        let a = TokenVault::from_key(&key);
        let b = TokenVault::from_key(&key);
        let (a, b) = (a.login_secrets(), b.login_secrets());
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(a.derive("nonce", "state-1"), b.derive("nonce", "state-1"));
        assert_ne!(a.derive("nonce", "state-1"), a.derive("pkce", "state-1"));
        assert_ne!(a.derive("nonce", "state-1"), a.derive("nonce", "state-2"));
        // Another key derives other values: its logins do not finish here.
        let c = TokenVault::from_key(&other);
        assert_ne!(c.login_secrets().key_id(), a.key_id());
        assert_ne!(
            c.login_secrets().derive("nonce", "state-1"),
            a.derive("nonce", "state-1")
        );
        assert_eq!(
            c.login_secrets()
                .derive_with(a.key_id(), "nonce", "state-1"),
            None
        );
        // After a rotation the new key derives, and a login started before it re-derives.
        let rotated = TokenVault::from_key(&other).with_previous(&key);
        let rotated = rotated.login_secrets();
        assert_eq!(rotated.key_id(), c.login_secrets().key_id());
        assert_eq!(
            rotated.derive_with(a.key_id(), "pkce", "state-1"),
            Some(a.derive("pkce", "state-1"))
        );
        // Not the vault key itself, and never in `Debug`.
        assert_ne!(a.derive("nonce", "s"), URL_SAFE_NO_PAD.encode(key));
        assert_eq!(format!("{a:?}"), "LoginSecrets([redacted])");
    }

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

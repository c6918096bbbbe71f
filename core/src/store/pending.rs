//! Sign-ins in progress, held in memory: single use, expiring, and bounded.
//!
//! A pending login lives for the seconds between `/login` and `/callback`. Keeping it in memory
//! rather than in sled makes `/login` write nothing to disk (sled's copy-on-write nodes and log
//! made it the most expensive part of a login), and means a crash can never bring back a state
//! that was already used. A restart drops the sign-ins in progress: those people click again.
//!
//! The table holds at most `capacity` logins. When it is full the oldest is dropped, so a flood
//! of `/login` costs bounded memory and never stops new sign-ins (the per-client cap answers
//! 429 to the flooder itself).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::PendingLogin;

/// The first 16 bytes of SHA-256 of the state: fixed size, and not chosen by whoever sent it.
type Key = [u8; 16];

fn key_of(state: &str) -> Key {
    let digest = Sha256::digest(state.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Keys are already uniform hash output: their first eight bytes are the hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// What every login to one IdP shares, stored once.
#[derive(PartialEq, Eq)]
struct Binding {
    idp: String,
    issuer: String,
    client_id: String,
    redirect_uri: String,
}

struct Entry {
    /// Insertion order, for dropping the oldest.
    seq: u64,
    created_at: i64,
    generation: u64,
    binding: Arc<Binding>,
    /// A flag, then nonce, PKCE verifier, browser hash, next and link user joined by NUL (none
    /// contains one).
    secrets: Box<str>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    order: VecDeque<(u64, Key)>,
    bindings: Vec<Arc<Binding>>,
    next_seq: u64,
}

/// The in-memory table of pending logins.
pub struct PendingTable {
    inner: Mutex<Inner>,
    capacity: std::sync::atomic::AtomicUsize,
}

/// The default `max_pending_logins`.
pub const DEFAULT_CAPACITY: usize = 100_000;

impl Default for PendingTable {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            capacity: DEFAULT_CAPACITY.into(),
        }
    }
}

impl PendingTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets how many logins are kept before the oldest is dropped.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity
            .store(capacity.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Stores a login; `false` (and nothing stored) when a field holds a NUL.
    pub fn put(&self, state: &str, login: &PendingLogin) -> bool {
        let parts = [
            login.nonce.as_str(),
            &login.pkce_verifier,
            &login.browser_hash,
            &login.next,
            login.link_user_id.as_deref().unwrap_or(""),
        ];
        if parts.iter().any(|part| part.contains('\0')) {
            return false;
        }
        // A leading L or N tells whether a link user is present (it may be empty).
        let flag = if login.link_user_id.is_some() {
            "L"
        } else {
            "N"
        };
        let secrets = format!("{flag}{}", parts.join("\0"));
        let key = key_of(state);
        let capacity = self.capacity.load(std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.lock();
        let binding = inner.binding(login);
        while inner.entries.len() >= capacity {
            if !inner.drop_oldest() {
                break;
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.push_back((seq, key));
        inner.entries.insert(
            key,
            Entry {
                seq,
                created_at: login.created_at,
                generation: login.generation,
                binding,
                secrets: secrets.into_boxed_str(),
            },
        );
        inner.compact_order();
        true
    }

    /// Removes and returns the login: of two racing callbacks, one gets it.
    pub fn take(&self, state: &str) -> Option<PendingLogin> {
        let entry = self.lock().entries.remove(&key_of(state))?;
        Some(entry.login())
    }

    /// Drops logins created before `created_before`; returns how many.
    pub fn sweep(&self, created_before: i64) -> usize {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner
            .entries
            .retain(|_, entry| entry.created_at >= created_before);
        let removed = before - inner.entries.len();
        inner.compact_order();
        inner
            .bindings
            .retain(|binding| Arc::strong_count(binding) > 1);
        removed
    }

    /// How many logins are held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no login is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every login by the hex of its key, for [`super::Store::dump`].
    pub fn snapshot(&self) -> Vec<(Vec<u8>, PendingLogin)> {
        let inner = self.lock();
        inner
            .entries
            .iter()
            .map(|(key, entry)| {
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                (hex.into_bytes(), entry.login())
            })
            .collect()
    }
}

impl Inner {
    fn binding(&mut self, login: &PendingLogin) -> Arc<Binding> {
        let wanted = Binding {
            idp: login.idp.clone(),
            issuer: login.issuer.clone(),
            client_id: login.client_id.clone(),
            redirect_uri: login.redirect_uri.clone(),
        };
        if let Some(found) = self.bindings.iter().find(|b| ***b == wanted) {
            return found.clone();
        }
        let binding = Arc::new(wanted);
        if self.bindings.len() < 1024 {
            self.bindings.push(binding.clone());
        }
        binding
    }

    /// Drops the oldest login still held; `false` when none is.
    fn drop_oldest(&mut self) -> bool {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|entry| entry.seq == seq) {
                self.entries.remove(&key);
                return true;
            }
        }
        false
    }

    /// `order` keeps keys of logins already taken until they reach its front; rebuild it when
    /// those outnumber the live ones, so it stays within twice the table.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(seq, key)| entries.get(key).is_some_and(|entry| entry.seq == *seq));
        }
    }
}

impl Entry {
    fn login(&self) -> PendingLogin {
        let (flag, rest) = self.secrets.split_at(self.secrets.len().min(1));
        let mut parts = rest.split('\0');
        let mut part = || parts.next().unwrap_or_default().to_string();
        let (nonce, pkce_verifier, browser_hash, next, link) =
            (part(), part(), part(), part(), part());
        let link_user_id = (flag == "L").then_some(link);
        PendingLogin {
            idp: self.binding.idp.clone(),
            issuer: self.binding.issuer.clone(),
            client_id: self.binding.client_id.clone(),
            redirect_uri: self.binding.redirect_uri.clone(),
            nonce,
            pkce_verifier,
            next,
            browser_hash,
            created_at: self.created_at,
            link_user_id,
            generation: self.generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(created_at: i64, link: Option<&str>) -> PendingLogin {
        PendingLogin {
            idp: "corp".into(),
            issuer: "https://idp.example".into(),
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1/authnz/corp/callback".into(),
            nonce: "n".into(),
            pkce_verifier: String::new(),
            next: "/after".into(),
            browser_hash: "b".into(),
            created_at,
            link_user_id: link.map(str::to_string),
            generation: 3,
        }
    }

    #[test]
    fn round_trips_single_use() {
        let table = PendingTable::default();
        assert!(table.put("s1", &login(5, None)));
        assert!(table.put("s2", &login(6, Some("user-1"))));
        assert!(table.put("s3", &login(6, Some(""))));
        assert_eq!(table.take("s1"), Some(login(5, None)));
        assert_eq!(table.take("s1"), None);
        assert_eq!(table.take("s2"), Some(login(6, Some("user-1"))));
        assert_eq!(table.take("s3"), Some(login(6, Some(""))));
        assert!(table.is_empty());
    }

    #[test]
    fn a_nul_is_refused() {
        let table = PendingTable::default();
        let mut bad = login(1, None);
        bad.next = "/a\0b".into();
        assert!(!table.put("s", &bad));
        assert_eq!(table.take("s"), None);
    }

    #[test]
    fn full_drops_the_oldest_and_order_stays_bounded() {
        let table = PendingTable::default();
        table.set_capacity(3);
        for i in 0..5 {
            assert!(table.put(&format!("s{i}"), &login(i, None)));
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.take("s0"), None, "oldest dropped");
        assert_eq!(table.take("s1"), None, "second oldest dropped");
        assert!(table.take("s4").is_some());
        for i in 0..10_000 {
            table.put(&format!("t{i}"), &login(i, None));
            table.take(&format!("t{i}"));
        }
        let held = table.len();
        assert!(table.lock().order.len() <= 2 * held + 1025);
        assert_eq!(table.len(), 2, "s2 and s3 are still held");
        assert_eq!(table.lock().bindings.len(), 1, "one IdP, one binding");
    }

    #[test]
    fn sweep_removes_only_expired() {
        let table = PendingTable::default();
        table.put("old", &login(10, None));
        table.put("new", &login(100, None));
        assert_eq!(table.sweep(50), 1);
        assert_eq!(table.take("old"), None);
        assert!(table.take("new").is_some());
    }
}

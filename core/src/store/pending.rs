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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::PendingLogin;
use crate::crypto::LoginSecrets;

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
    idp_fingerprint: String,
    secret_key_id: String,
}

struct Entry {
    /// The key it is stored under.
    key: Key,
    created_at: i64,
    binding: Arc<Binding>,
    /// The browser hash (SHA-256), raw, when `extra` is `None`.
    browser: [u8; 32],
    /// PKCE off: no verifier.
    no_pkce: bool,
    /// `None` for the usual login: nonce and verifier derived from the state
    /// ([`LoginSecrets`], with the binding's key), a hex browser hash, `next` = "/", no link user, no
    /// step-up. Otherwise a flag, then nonce, PKCE verifier, browser hash, next, link user,
    /// `max_age` and `acr_values` joined by NUL (none contains one).
    extra: Option<Box<str>>,
}

/// Logins in insertion order, oldest first, and an index from key to position. A login is
/// dropped once `capacity` newer ones were started. A taken login leaves a hole that goes as it
/// reaches the front, so the queue spans only from the oldest login still held to the newest:
/// small when logins complete, at most `capacity` under a flood. The index is sized once: no
/// growth spikes.
#[derive(Default)]
struct Inner {
    /// Key to sequence number (position = sequence - `front_seq`).
    index: HashMap<Key, u64, BuildHasherDefault<KeyHasher>>,
    queue: std::collections::VecDeque<Option<Entry>>,
    /// The sequence number of the queue's front.
    front_seq: u64,
    capacity: usize,
    bindings: Vec<Arc<Binding>>,
}

/// The in-memory table of pending logins.
pub struct PendingTable {
    inner: Mutex<Inner>,
    /// What nonces and PKCE verifiers are derived with: the vault's, once the server sets them.
    secrets: std::sync::RwLock<LoginSecrets>,
}

/// The default `max_pending_logins`.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// How many logins the table has room for before it grows.
const INITIAL_ROOM: usize = 4096;

impl Default for PendingTable {
    fn default() -> Self {
        let table = Self {
            inner: Mutex::default(),
            secrets: std::sync::RwLock::new(LoginSecrets::random()),
        };
        table.set_capacity(DEFAULT_CAPACITY);
        table
    }
}

impl PendingTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets how many logins are kept before the oldest is dropped; drops every login held
    /// (it is set at startup).
    pub fn set_capacity(&self, capacity: usize) {
        let capacity = capacity.max(1);
        // A small start that grows with the logins actually held: reserving the table's size
        // up front made memory creep for hours, as the queue's window slid through a buffer
        // it had never touched. The index gets twice the room, so deletions never make it grow.
        let reserve = capacity.min(INITIAL_ROOM);
        let mut inner = self.lock();
        *inner = Inner {
            index: HashMap::with_capacity_and_hasher(2 * reserve, Default::default()),
            queue: std::collections::VecDeque::with_capacity(reserve),
            capacity,
            ..Inner::default()
        };
    }

    /// Derives nonces and PKCE verifiers with `secrets` from now on (the server sets the
    /// vault's at startup, before any login).
    pub fn set_secrets(&self, secrets: LoginSecrets) {
        *self
            .secrets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = secrets;
    }

    fn secrets(&self) -> LoginSecrets {
        self.secrets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stores a login; `false` (and nothing stored) when a field holds a NUL.
    pub fn put(&self, state: &str, login: &PendingLogin) -> bool {
        let max_age = login.max_age.map(|age| age.to_string()).unwrap_or_default();
        let acr_values = login.acr_values.join(" ");
        let parts = [
            login.nonce.as_str(),
            &login.pkce_verifier,
            &login.browser_hash,
            &login.next,
            login.link_user_id.as_deref().unwrap_or(""),
            &max_age,
            &acr_values,
        ];
        if parts.iter().any(|part| part.contains('\0')) {
            return false;
        }
        let no_pkce = login.pkce_verifier.is_empty();
        let browser = hex32(&login.browser_hash);
        let derived = |label: &str| {
            self.secrets()
                .derive_with(&login.secret_key_id, label, state)
        };
        let compact = login.next == "/"
            && login.link_user_id.is_none()
            && login.max_age.is_none()
            && login.acr_values.is_empty()
            && browser.is_some()
            && derived("nonce").is_some_and(|nonce| nonce == login.nonce)
            && (no_pkce || derived("pkce").is_some_and(|pkce| pkce == login.pkce_verifier));
        let extra = (!compact).then(|| {
            // A leading L or N tells whether a link user is present (it may be empty).
            let flag = if login.link_user_id.is_some() {
                "L"
            } else {
                "N"
            };
            format!("{flag}{}", parts.join("\0")).into_boxed_str()
        });
        let key = key_of(state);
        let mut inner = self.lock();
        let binding = inner.binding(login);
        let entry = Entry {
            key,
            created_at: login.created_at,
            binding,
            browser: browser.unwrap_or_default(),
            no_pkce,
            extra,
        };
        inner.remove(&key);
        // A login is dropped once `capacity` newer ones were started: the queue (holes
        // included) never spans more.
        while inner.queue.len() >= inner.capacity {
            inner.drop_front();
        }
        let seq = inner.front_seq + inner.queue.len() as u64;
        inner.queue.push_back(Some(entry));
        inner.index.insert(key, seq);
        true
    }

    /// Removes and returns the login: of two racing callbacks, one gets it.
    pub fn take(&self, state: &str) -> Option<PendingLogin> {
        let entry = self.lock().remove(&key_of(state))?;
        Some(entry.login(state, &self.secrets()))
    }

    /// Drops logins created before `created_before`; returns how many.
    pub fn sweep(&self, created_before: i64) -> usize {
        let mut inner = self.lock();
        let Inner { index, queue, .. } = &mut *inner;
        let mut removed = 0;
        for slot in queue.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|entry| entry.created_at < created_before)
            {
                if let Some(entry) = slot.take() {
                    index.remove(&entry.key);
                    removed += 1;
                }
            }
        }
        inner.pop_holes();
        inner
            .bindings
            .retain(|binding| Arc::strong_count(binding) > 1);
        inner.shrink();
        removed
    }

    /// How many logins are held.
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// Whether no login is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every login by the hex of its key, for [`super::Store::dump`] (derived secrets show as
    /// "(derived)").
    pub fn snapshot(&self) -> Vec<(Vec<u8>, PendingLogin)> {
        let inner = self.lock();
        inner
            .queue
            .iter()
            .flatten()
            .map(|entry| {
                let hex = crate::crypto::hex(&entry.key);
                let mut login = entry.login("", &LoginSecrets::random());
                if entry.extra.is_none() {
                    // Derived from the state, which only the browser holds.
                    login.nonce = "(derived)".into();
                    if !entry.no_pkce {
                        login.pkce_verifier = "(derived)".into();
                    }
                }
                (hex.into_bytes(), login)
            })
            .collect()
    }
}

impl Inner {
    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let seq = self.index.remove(key)?;
        let position = usize::try_from(seq.checked_sub(self.front_seq)?).ok()?;
        let entry = self.queue.get_mut(position)?.take();
        self.pop_holes();
        entry
    }

    /// Drops the oldest login held (and the holes before it).
    /// After a flood: gives back the room of logins no longer held, once it is four times
    /// what is held (so a steady load does not shrink and grow again).
    fn shrink(&mut self) {
        let floor = self.capacity.min(INITIAL_ROOM);
        let queue = self.queue.len().max(floor);
        if self.queue.capacity() > 4 * queue {
            self.queue.shrink_to(2 * queue);
        }
        let index = 2 * self.index.len().max(floor);
        if self.index.capacity() > 4 * index {
            self.index.shrink_to(2 * index);
        }
    }

    fn drop_front(&mut self) {
        self.pop_holes();
        if let Some(Some(oldest)) = self.queue.pop_front() {
            self.index.remove(&oldest.key);
        }
        self.front_seq += 1;
        self.pop_holes();
    }

    fn pop_holes(&mut self) {
        while matches!(self.queue.front(), Some(None)) {
            self.queue.pop_front();
            self.front_seq += 1;
        }
    }

    fn binding(&mut self, login: &PendingLogin) -> Arc<Binding> {
        let wanted = Binding {
            idp: login.idp.clone(),
            issuer: login.issuer.clone(),
            client_id: login.client_id.clone(),
            redirect_uri: login.redirect_uri.clone(),
            idp_fingerprint: login.idp_fingerprint.clone(),
            secret_key_id: login.secret_key_id.clone(),
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
}

impl Entry {
    /// The login, given the state it was stored under.
    fn login(&self, state: &str, secrets: &LoginSecrets) -> PendingLogin {
        let mut login = PendingLogin {
            idp: self.binding.idp.clone(),
            issuer: self.binding.issuer.clone(),
            client_id: self.binding.client_id.clone(),
            redirect_uri: self.binding.redirect_uri.clone(),
            nonce: String::new(),
            pkce_verifier: String::new(),
            next: "/".to_string(),
            browser_hash: crate::crypto::hex(&self.browser),
            created_at: self.created_at,
            link_user_id: None,
            idp_fingerprint: self.binding.idp_fingerprint.clone(),
            secret_key_id: self.binding.secret_key_id.clone(),
            max_age: None,
            acr_values: Vec::new(),
        };
        match &self.extra {
            None => {
                let derived = |label: &str| {
                    secrets
                        .derive_with(&self.binding.secret_key_id, label, state)
                        .unwrap_or_default()
                };
                login.nonce = derived("nonce");
                if !self.no_pkce {
                    login.pkce_verifier = derived("pkce");
                }
            }
            Some(extra) => {
                let (flag, rest) = extra.split_at(extra.len().min(1));
                let mut parts = rest.split('\0');
                let mut part = || parts.next().unwrap_or_default().to_string();
                login.nonce = part();
                login.pkce_verifier = part();
                login.browser_hash = part();
                login.next = part();
                let link = part();
                login.link_user_id = (flag == "L").then_some(link);
                login.max_age = part().parse().ok();
                login.acr_values = part()
                    .split(' ')
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
        login
    }
}

/// 64 lowercase hex digits as 32 bytes.
fn hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(created_at: i64, link: Option<&str>) -> PendingLogin {
        PendingLogin {
            pkce_verifier: String::new(),
            next: "/after".into(),
            link_user_id: link.map(str::to_string),
            idp_fingerprint: "fingerprint".into(),
            ..super::super::conformance::sample_pending(created_at)
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
    fn the_usual_login_is_stored_compactly_and_comes_back_whole() {
        let table = PendingTable::default();
        let secrets = LoginSecrets::random();
        table.set_secrets(secrets.clone());
        for pkce in [true, false] {
            let state = format!("state-{pkce}");
            let mut usual = login(7, None);
            usual.next = "/".into();
            usual.secret_key_id = secrets.key_id().into();
            usual.nonce = secrets.derive("nonce", &state);
            usual.pkce_verifier = if pkce {
                secrets.derive("pkce", &state)
            } else {
                String::new()
            };
            usual.browser_hash = crate::crypto::sha256_hex("browser");
            assert!(table.put(&state, &usual));
            assert!(table
                .lock()
                .queue
                .iter()
                .flatten()
                .all(|e| e.extra.is_none()));
            assert_eq!(table.take(&state), Some(usual));
        }
        assert!(std::mem::size_of::<Option<Entry>>() <= 96);
        // Another state's secrets are not this one's: stored in full, and still correct.
        let mut odd = login(7, None);
        odd.next = "/".into();
        odd.secret_key_id = secrets.key_id().into();
        odd.nonce = secrets.derive("nonce", "other");
        odd.browser_hash = crate::crypto::sha256_hex("browser");
        assert!(table.put("mine", &odd));
        assert!(table
            .lock()
            .queue
            .iter()
            .flatten()
            .all(|e| e.extra.is_some()));
        assert_eq!(table.take("mine"), Some(odd));
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
    fn room_follows_what_is_held() {
        let table = PendingTable::default();
        for i in 0..50_000 {
            table.put(&format!("s{i}"), &login(i, None));
        }
        let flooded = table.lock().queue.capacity();
        assert!(flooded >= 50_000);
        // The flood is swept (its logins expired): the room goes back.
        assert_eq!(table.sweep(50_000), 50_000);
        let inner = table.lock();
        assert!(
            inner.queue.capacity() < flooded / 4,
            "queue room given back"
        );
        assert!(
            inner.index.capacity() <= 4 * 2 * INITIAL_ROOM,
            "index room given back"
        );
        drop(inner);
        // Steady logins that complete stay in the initial room.
        for i in 0..20_000 {
            table.put(&format!("t{i}"), &login(i, None));
            table.take(&format!("t{i}"));
        }
        assert!(table.lock().queue.capacity() <= 2 * INITIAL_ROOM);
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
        assert_eq!(
            table.len(),
            0,
            "s2 and s3 were dropped: 3 newer logins started since"
        );
        assert!(
            table.lock().queue.is_empty(),
            "completed logins leave nothing"
        );
        assert!(
            table.lock().index.capacity() < 64,
            "nor does the index grow"
        );
        table.put("held", &login(1, None));
        for i in 0..2 {
            table.put(&format!("x{i}"), &login(i, None));
            table.take(&format!("x{i}"));
        }
        assert!(
            table.take("held").is_some(),
            "held while fewer than 3 came after"
        );
        table.put("u1", &login(1, None));
        table.put("u2", &login(2, None));
        table.put("u1", &login(3, None));
        assert_eq!(table.len(), 2, "a state stored twice is held once");
        assert_eq!(table.take("u2").map(|l| l.created_at), Some(2));
        assert_eq!(table.take("u1").map(|l| l.created_at), Some(3));
        assert_eq!(table.lock().bindings.len(), 1, "one IdP, one binding");
        // A flood with no completions: the oldest go first, the newest stay.
        let table = PendingTable::default();
        table.set_capacity(100);
        for i in 0..1_000 {
            table.put(&format!("f{i}"), &login(i, None));
        }
        assert_eq!(table.len(), 100);
        assert_eq!(table.lock().queue.len(), 100);
        assert!(table.take("f899").is_none() && table.take("f900").is_some());
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

//! The sled backend of [`Store`]: one tree per collection, multi-tree sled transactions for
//! writes that belong together.
//!
//! sled holds an exclusive lock on its directory, so one process owns a database.

use std::collections::BTreeMap;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Db, Transactional, Tree};

use super::linking;
use super::pending::PendingTable;
use super::{
    decode, encode, identity_key, normalize_email, ApiKey, CompletedLogin, Dump, EmailOwner,
    Identity, LoginOutcome, PendingLogin, RemoveOutcome, Session, Store, StoreError, StoreResult,
    User,
};

/// Group commit: callers that ask for durability while a flush is running share the next one,
/// so 32 concurrent logins cost a few fsyncs, not 32 in a row.
#[derive(Default)]
struct GroupCommit {
    /// Callers that asked, numbered from 1 (each after its writes were applied).
    requested: std::sync::atomic::AtomicU64,
    /// Every caller numbered up to this is durable.
    durable: std::sync::atomic::AtomicU64,
    /// One flush at a time; fair, so waiters are served in order.
    turn: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    async fn sync(&self, db: Db) -> StoreResult<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.requested.fetch_add(1, SeqCst) + 1;
        let _turn = self.turn.lock().await;
        if self.durable.load(SeqCst) >= ticket {
            return Ok(()); // a flush that started after our writes has finished
        }
        // Everyone numbered up to here applied their writes before taking a number, so this
        // flush covers them all. It runs on the blocking pool: no runtime thread waits on the
        // disk (sled's `flush_async` hung under 32 concurrent callbacks).
        if self.requested.load(SeqCst) > ticket {
            // Others are already waiting: give the rest of this burst a moment to join, so one
            // flush (a sealed log buffer, a write and a sync on sled's IO threads) serves more.
            tokio::time::sleep(COMMIT_WINDOW).await;
        }
        let covered = self.requested.load(SeqCst);
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|err| StoreError::Backend(err.to_string()))?
            .map_err(backend)?;
        self.durable.fetch_max(covered, SeqCst);
        Ok(())
    }
}

/// How long a flush waits for more callers when others are already queued behind it.
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// The sled database of authnz.
pub struct SledStore {
    db: Db,
    commit: std::sync::Arc<GroupCommit>,
    logins: std::sync::Arc<LoginBatcher>,
    /// Sign-ins in progress live in memory (see [`PendingTable`]), not in sled.
    pending: PendingTable,
    accounts: AccountTrees,
    api_keys: Tree,
    user_api_keys: Tree,
    signups: Tree,
    /// Identities from before issuers were recorded whose entry was not configured when the
    /// database was migrated: they get its issuer when it is.
    legacy_identities: Tree,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

fn txn_error(err: TransactionError<StoreError>) -> StoreError {
    match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => backend(err),
    }
}

fn abort(err: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(err)
}

/// `a \0 b \0 c ...`
fn key_of(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// Sessions by expiry live in the `sessions` tree under this first byte (a session's own key is
/// hex, so never starts with it): written in the same transactions as the sessions themselves
/// (sled's tuple transactions stop at nine trees), read by the sweep.
const EXPIRY: u8 = 0xff;

/// `EXPIRY, expires_at (big-endian), hash`: ordered by expiry.
fn expiry_key(expires_at: i64, hash: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + hash.len());
    key.push(EXPIRY);
    key.extend_from_slice(&(expires_at.max(0) as u64).to_be_bytes());
    key.extend_from_slice(hash.as_bytes());
    key
}

/// `parts \0` — the prefix of every key that starts with these parts.
fn prefix_of(parts: &[&str]) -> Vec<u8> {
    let mut prefix = key_of(parts);
    prefix.push(0);
    prefix
}

fn get_in<T: for<'de> serde::Deserialize<'de>>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(abort),
        None => Ok(None),
    }
}

fn get<T: for<'de> serde::Deserialize<'de>>(tree: &Tree, key: &[u8]) -> StoreResult<Option<T>> {
    match tree.get(key).map_err(backend)? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Keys of `tree` that start with `prefix` (read outside a transaction: sled transactions
/// cannot scan). Callers re-check what they read inside their transaction.
fn keys_with_prefix(tree: &Tree, prefix: &[u8]) -> StoreResult<Vec<Vec<u8>>> {
    tree.scan_prefix(prefix)
        .map(|entry| entry.map(|(key, _)| key.to_vec()).map_err(backend))
        .collect()
}

/// How many logins one transaction and flush may carry at most.
const MAX_LOGIN_BATCH: usize = 128;

/// While logins arrive together, the writer lets the oldest waiting one wait this long before
/// it writes the batch, so that more share it: each batch costs sled two log writes and their
/// syncs, and the wakeups of its IO threads. At 32 concurrent callbacks this took the callback
/// from 3.2k to 4k/s and its p99 from 18 to 13 ms; a lone login never waits.
const LOGIN_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_micros(2000);

/// The trees of accounts: users, identities, tokens, sessions and their indexes; a login
/// writes them all.
#[derive(Clone)]
struct AccountTrees {
    users: Tree,
    usernames: Tree,
    emails: Tree,
    identities: Tree,
    user_identities: Tree,
    tokens: Tree,
    sessions: Tree,
    user_sessions: Tree,
    identity_sessions: Tree,
    /// Deleting a user reads its index entries before its transaction (sled transactions cannot
    /// scan), so it holds this exclusively from the scan to the commit, while every transaction
    /// that may add to a user (logins, API keys) holds it shared: a connect racing the deletion
    /// either lands before the scan (and is deleted too) or finds the user gone, never leaves an
    /// identity without its user.
    membership: std::sync::Arc<std::sync::RwLock<()>>,
}

/// [`AccountTrees`] inside a transaction.
type LoginView = (
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
);

impl AccountTrees {
    /// Held while a transaction may add records to a user (see `membership`).
    fn adding(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held by a user's deletion, from reading its index entries to its commit.
    fn deleting(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.membership
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One login in its own transaction.
    fn apply_one(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        self.apply(std::slice::from_ref(login))
            .map_err(txn_error)?
            .pop()
            .ok_or_else(|| StoreError::Backend("a login transaction returned nothing".into()))
    }

    /// Applies `logins` in order in one transaction, each seeing those before it. One refused
    /// login aborts them all with its error.
    fn apply(
        &self,
        logins: &[CompletedLogin],
    ) -> Result<Vec<LoginOutcome>, TransactionError<StoreError>> {
        let _adding = self.adding();
        (
            &self.users,
            &self.usernames,
            &self.emails,
            &self.identities,
            &self.user_identities,
            &self.tokens,
            &self.sessions,
            &self.user_sessions,
            &self.identity_sessions,
        )
            .transaction(|trees| {
                logins
                    .iter()
                    .map(|login| apply_login(trees, login))
                    .collect()
            })
    }
}

/// Durable logins, batched: logins that arrive while a batch is being written share the next
/// transaction and flush. sled rolls its log buffer (a write on its IO threads) for every
/// transaction and syncs it for every flush, so at 32 concurrent callbacks one transaction per
/// batch instead of per login is most of the difference.
struct LoginBatcher {
    db: Db,
    trees: AccountTrees,
    queue: std::sync::Mutex<LoginQueue>,
}

type LoginReply = tokio::sync::oneshot::Sender<StoreResult<LoginOutcome>>;

struct WaitingLogin {
    login: CompletedLogin,
    reply: LoginReply,
    arrived: std::time::Instant,
}

#[derive(Default)]
struct LoginQueue {
    waiting: Vec<WaitingLogin>,
    /// A writer is running on the blocking pool; it takes what waits before it stops.
    writing: bool,
}

impl LoginBatcher {
    async fn commit(
        self: std::sync::Arc<Self>,
        login: CompletedLogin,
    ) -> StoreResult<LoginOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let start_writer = {
            let mut queue = self.lock();
            queue.waiting.push(WaitingLogin {
                login,
                reply,
                arrived: std::time::Instant::now(),
            });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start_writer {
            tokio::task::spawn_blocking(move || self.write_all());
        }
        answer
            .await
            .map_err(|_| StoreError::Backend("the login writer stopped".into()))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes batches until none waits.
    fn write_all(&self) {
        let _unstuck = Unstuck(self);
        let mut together = false; // the last batch had company: more are likely on their way
        loop {
            if together {
                std::thread::sleep(self.window_left());
            }
            let batch = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.writing = false;
                    return;
                }
                let rest = queue.waiting.len().saturating_sub(MAX_LOGIN_BATCH);
                let mut batch = std::mem::take(&mut queue.waiting);
                queue.waiting = batch.split_off(batch.len() - rest);
                batch
            };
            together = batch.len() > 1;
            let (logins, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|waiting| (waiting.login, waiting.reply))
                .unzip();
            for (reply, result) in replies.into_iter().zip(self.write(&logins)) {
                let _ = reply.send(result); // the caller may have gone; its login stands
            }
        }
    }

    /// How much longer the oldest waiting login may wait for company.
    fn window_left(&self) -> std::time::Duration {
        let queue = self.lock();
        match queue.waiting.first() {
            Some(oldest) if queue.waiting.len() < MAX_LOGIN_BATCH => {
                LOGIN_BATCH_WINDOW.saturating_sub(oldest.arrived.elapsed())
            }
            _ => std::time::Duration::ZERO,
        }
    }

    /// One transaction for the batch, then one flush. If a login of the batch is refused, each
    /// login gets its own transaction, so the others are unaffected.
    fn write(&self, logins: &[CompletedLogin]) -> Vec<StoreResult<LoginOutcome>> {
        let mut results: Vec<StoreResult<LoginOutcome>> = match self.trees.apply(logins) {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(TransactionError::Abort(_)) if logins.len() > 1 => logins
                .iter()
                .map(|login| self.trees.apply_one(login))
                .collect(),
            Err(TransactionError::Abort(err)) => vec![Err(err)],
            Err(TransactionError::Storage(err)) => {
                logins.iter().map(|_| Err(backend(err.clone()))).collect()
            }
        };
        if results.iter().any(Result::is_ok) {
            if let Err(err) = self.db.flush() {
                for result in results.iter_mut().filter(|result| result.is_ok()) {
                    *result = Err(backend(err.clone()));
                }
            }
        }
        results
    }
}

/// The first byte of a stored sign-up that carries its expiry (8 bytes, big-endian) before the
/// record; a record itself (JSON) never starts with it.
const SIGNUP_WITH_EXPIRY: u8 = 0xff;

/// The expiry of a stored sign-up, if it carries one.
fn signup_expiry(value: &[u8]) -> Option<i64> {
    match value {
        [SIGNUP_WITH_EXPIRY, rest @ ..] if rest.len() >= 8 => {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&rest[..8]);
            Some(i64::from_be_bytes(bytes))
        }
        _ => None,
    }
}

/// The record of a stored sign-up.
fn signup_record(value: &[u8]) -> &[u8] {
    match signup_expiry(value) {
        Some(_) => &value[9..],
        None => value,
    }
}

/// Should a writer ever unwind, the next login starts a new one instead of waiting forever
/// (the logins it held get "the login writer stopped").
struct Unstuck<'a>(&'a LoginBatcher);

impl Drop for Unstuck<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().writing = false;
        }
    }
}

/// One login's reads and writes inside a login transaction. A refused login aborts before it
/// writes anything.
fn apply_login(trees: &LoginView, login: &CompletedLogin) -> TxResult<LoginOutcome> {
    let (
        users,
        usernames,
        emails,
        identities,
        user_identities,
        tokens,
        sessions,
        user_sessions,
        identity_sessions,
    ) = trees;
    let id_key = identity_key(&login.idp, &login.subject);
    let existing: Option<Identity> = get_in(identities, &id_key)?;
    let owner: Option<EmailOwner> = match linking::email_key(login) {
        Some(email) => get_in(emails, email.as_bytes())?,
        None => None,
    };
    let found = linking::Found {
        identity: existing.as_ref(),
        email_owner: owner.as_ref(),
    };
    let (user, created, linked, identity) = match linking::decide(login, found).map_err(abort)? {
        linking::Link::Returning { user_id } => {
            let user: User = get_in(users, user_id.as_bytes())?
                .ok_or_else(|| abort(StoreError::Corrupt("identity without its user".into())))?;
            let mut identity = existing.ok_or_else(|| {
                abort(StoreError::Corrupt("a returning identity vanished".into()))
            })?;
            identity.issuer = Some(login.issuer.clone());
            identity.email = login.email.clone();
            identity.email_verified = login.email_verified;
            identity.last_login_at = login.now;
            (user, false, false, identity)
        }
        link => {
            let (user, created) = match link {
                linking::Link::Join { user_id } => {
                    let user: User = get_in(users, user_id.as_bytes())?
                        .ok_or_else(|| abort(StoreError::NoSuchUser))?;
                    (user, false)
                }
                _ => {
                    let username = linking::allocate_username(&login.username, |candidate| {
                        Ok::<_, ConflictableTransactionError<StoreError>>(
                            usernames.get(candidate.as_bytes())?.is_some(),
                        )
                    })?
                    .ok_or_else(|| abort(StoreError::UsernameExhausted))?;
                    let user = User {
                        id: login.new_user_id.clone(),
                        username: username.clone(),
                        email: login.email.clone(),
                        display_name: login.display_name.clone(),
                        created_at: login.now,
                    };
                    users.insert(user.id.as_bytes(), encode(&user).map_err(abort)?)?;
                    usernames.insert(username.as_bytes(), user.id.as_bytes())?;
                    if let Some((email, owner)) = linking::email_entry(login, &user.id) {
                        emails.insert(email.as_bytes(), encode(&owner).map_err(abort)?)?;
                    }
                    (user, true)
                }
            };
            user_identities.insert(key_of(&[&user.id, &login.idp, &login.subject]), &[][..])?;
            let identity = Identity {
                idp: login.idp.clone(),
                subject: login.subject.clone(),
                issuer: Some(login.issuer.clone()),
                user_id: user.id.clone(),
                email: login.email.clone(),
                email_verified: login.email_verified,
                linked_at: login.now,
                last_login_at: login.now,
            };
            let linked = !created;
            (user, created, linked, identity)
        }
    };
    identities.insert(id_key.as_slice(), encode(&identity).map_err(abort)?)?;
    let replaced_tokens = tokens
        .insert(id_key.as_slice(), login.sealed_tokens.as_slice())?
        .map(|old| old.to_vec())
        .filter(|old| *old != login.sealed_tokens);
    let session = Session {
        user_id: user.id.clone(),
        idp: login.idp.clone(),
        subject: login.subject.clone(),
        created_at: login.now,
        expires_at: login.session_expires_at,
        sid: login.sid.clone(),
        csrf: login.csrf.clone(),
        id_token: login.sealed_id_token.clone(),
    };
    sessions.insert(
        login.session_hash.as_bytes(),
        encode(&session).map_err(abort)?,
    )?;
    sessions.insert(
        expiry_key(login.session_expires_at, &login.session_hash),
        &[][..],
    )?;
    user_sessions.insert(key_of(&[&user.id, &login.session_hash]), &[][..])?;
    identity_sessions.insert(
        key_of(&[&login.idp, &login.subject, &login.session_hash]),
        &[][..],
    )?;
    Ok(LoginOutcome {
        user,
        created,
        linked,
        replaced_tokens,
    })
}

impl SledStore {
    /// Opens (or creates) the database in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|err| StoreError::Backend(format!("cannot open {}: {err}", dir.display())))?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        // Databases from before pending logins moved to memory: free their old tree.
        db.drop_tree("pending_logins").map_err(backend)?;
        let trees = AccountTrees {
            users: tree("users")?,
            usernames: tree("usernames")?,
            emails: tree("emails")?,
            identities: tree("identities")?,
            user_identities: tree("user_identities")?,
            tokens: tree("tokens")?,
            sessions: tree("sessions")?,
            user_sessions: tree("user_sessions")?,
            identity_sessions: tree("identity_sessions")?,
            membership: std::sync::Arc::default(),
        };
        Self {
            logins: std::sync::Arc::new(LoginBatcher {
                db: db.clone(),
                trees: trees.clone(),
                queue: std::sync::Mutex::default(),
            }),
            pending: PendingTable::default(),
            commit: std::sync::Arc::default(),
            accounts: trees,
            api_keys: tree("api_keys")?,
            user_api_keys: tree("user_api_keys")?,
            signups: tree("signups")?,
            legacy_identities: tree("legacy_identities")?,
            db,
        }
        .with_expiry_index()
    }

    /// [`SledStore::open`] for a database just closed in this process: sled's background
    /// flusher may hold the directory lock a moment after the drop, so this retries for ~2 s.
    pub fn reopen(dir: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let mut reopened = Self::open(dir, cache_bytes);
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            reopened = Self::open(dir, cache_bytes);
        }
        reopened
    }

    /// Databases from before the expiry index: index every session once.
    fn with_expiry_index(self) -> StoreResult<Self> {
        let indexed = self
            .accounts
            .sessions
            .scan_prefix([EXPIRY])
            .next()
            .transpose()
            .map_err(backend)?
            .is_some();
        if !indexed {
            for entry in self.accounts.sessions.iter() {
                let (key, value) = entry.map_err(backend)?;
                if let Ok(session) = decode::<Session>(&value) {
                    let hash = String::from_utf8_lossy(&key).into_owned();
                    self.accounts
                        .sessions
                        .insert(expiry_key(session.expires_at, &hash), &[][..])
                        .map_err(backend)?;
                }
            }
        }
        Ok(self)
    }

    /// How many sign-ins in progress are kept before the oldest is dropped
    /// (`max_pending_logins`).
    pub fn set_pending_capacity(&self, capacity: usize) {
        self.pending.set_capacity(capacity);
    }

    /// Flushes to disk.
    pub fn flush(&self) -> StoreResult<()> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn trees(&self) -> [(&'static str, &Tree); 12] {
        [
            ("users", &self.accounts.users),
            ("usernames", &self.accounts.usernames),
            ("emails", &self.accounts.emails),
            ("identities", &self.accounts.identities),
            ("user_identities", &self.accounts.user_identities),
            ("tokens", &self.accounts.tokens),
            ("sessions", &self.accounts.sessions),
            ("user_sessions", &self.accounts.user_sessions),
            ("identity_sessions", &self.accounts.identity_sessions),
            ("api_keys", &self.api_keys),
            ("user_api_keys", &self.user_api_keys),
            ("signups", &self.signups),
        ]
    }

    /// Removes sessions (and their index entries) by hash.
    fn remove_sessions(&self, hashes: &[String]) -> StoreResult<usize> {
        let mut removed = 0;
        for hash in hashes {
            let trees = (
                &self.accounts.sessions,
                &self.accounts.user_sessions,
                &self.accounts.identity_sessions,
            );
            let done = trees
                .transaction(|(sessions, user_sessions, identity_sessions)| {
                    let Some(session) = get_in::<Session>(sessions, hash.as_bytes())? else {
                        return Ok(false);
                    };
                    sessions.remove(hash.as_bytes())?;
                    sessions.remove(expiry_key(session.expires_at, hash))?;
                    user_sessions.remove(key_of(&[&session.user_id, hash]))?;
                    identity_sessions.remove(key_of(&[&session.idp, &session.subject, hash]))?;
                    Ok(true)
                })
                .map_err(txn_error)?;
            if done {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Store for SledStore {
    fn put_pending_login(&self, state: &str, login: &PendingLogin) -> StoreResult<()> {
        if self.pending.put(state, login) {
            Ok(())
        } else {
            Err(StoreError::Corrupt(
                "a pending login field holds NUL".into(),
            ))
        }
    }

    fn take_pending_login(&self, state: &str) -> StoreResult<Option<PendingLogin>> {
        // Removed under the table's lock: of two racing callbacks, one gets it.
        Ok(self.pending.take(state))
    }

    fn sweep_pending_logins(&self, created_before: i64) -> StoreResult<usize> {
        Ok(self.pending.sweep(created_before))
    }

    fn sweep_expired(&self, now: i64) -> StoreResult<usize> {
        // The expiry index, oldest first: only expired sessions are read.
        let mut expired = Vec::new();
        let mut orphans = Vec::new();
        for entry in self.accounts.sessions.scan_prefix([EXPIRY]) {
            let (key, _) = entry.map_err(backend)?;
            let Some(expires) = key.get(1..9) else {
                orphans.push(key);
                continue;
            };
            let expires = u64::from_be_bytes(expires.try_into().unwrap_or([0xff; 8]));
            if expires > now.max(0) as u64 {
                break;
            }
            let hash = String::from_utf8_lossy(&key[9..]).into_owned();
            if self
                .accounts
                .sessions
                .contains_key(hash.as_bytes())
                .map_err(backend)?
            {
                expired.push(hash);
            } else {
                orphans.push(key);
            }
        }
        for key in orphans {
            self.accounts.sessions.remove(key).map_err(backend)?;
        }
        self.remove_sessions(&expired)
    }

    fn complete_login(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        self.accounts.apply_one(login)
    }

    fn complete_login_durable<'a>(
        &'a self,
        login: CompletedLogin,
    ) -> futures_util::future::BoxFuture<'a, StoreResult<LoginOutcome>> {
        Box::pin(self.logins.clone().commit(login))
    }

    fn session(&self, session_hash: &str) -> StoreResult<Option<Session>> {
        get(&self.accounts.sessions, session_hash.as_bytes())
    }

    fn delete_session(&self, session_hash: &str) -> StoreResult<bool> {
        Ok(self.remove_sessions(&[session_hash.to_string()])? == 1)
    }

    fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        get(&self.accounts.users, user_id.as_bytes())
    }

    fn identity(&self, idp: &str, subject: &str) -> StoreResult<Option<Identity>> {
        get(&self.accounts.identities, &identity_key(idp, subject))
    }

    fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
        let prefix = prefix_of(&[user_id]);
        let mut out = Vec::new();
        for key in keys_with_prefix(&self.accounts.user_identities, &prefix)? {
            if let Some(identity) = get(&self.accounts.identities, &key[prefix.len()..])? {
                out.push(identity);
            }
        }
        Ok(out)
    }

    fn sealed_tokens(&self, idp: &str, subject: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .accounts
            .tokens
            .get(identity_key(idp, subject))
            .map_err(backend)?
            .map(|bytes| bytes.to_vec()))
    }

    fn remove_identity(
        &self,
        user_id: &str,
        idp: &str,
        subject: &str,
        keep_session: Option<&str>,
    ) -> StoreResult<RemoveOutcome> {
        let id_key = identity_key(idp, subject);
        let linked = keys_with_prefix(&self.accounts.user_identities, &prefix_of(&[user_id]))?;
        let trees = (
            &self.accounts.identities,
            &self.accounts.user_identities,
            &self.accounts.tokens,
        );
        let outcome = trees
            .transaction(|(identities, user_identities, tokens)| {
                let Some(identity) = get_in::<Identity>(identities, &id_key)? else {
                    return Ok(RemoveOutcome::NotFound);
                };
                if identity.user_id != user_id {
                    return Ok(RemoveOutcome::NotFound);
                }
                // Count the user's identities inside the transaction (the scan only lists keys).
                let mut alive = 0;
                for key in &linked {
                    if user_identities.get(key)?.is_some() {
                        alive += 1;
                    }
                }
                if alive <= 1 {
                    return Ok(RemoveOutcome::LastIdentity);
                }
                identities.remove(id_key.as_slice())?;
                user_identities.remove(key_of(&[user_id, idp, subject]))?;
                let sealed = tokens
                    .remove(id_key.as_slice())?
                    .map(|bytes| bytes.to_vec());
                Ok(RemoveOutcome::Removed(sealed))
            })
            .map_err(txn_error)?;
        if matches!(outcome, RemoveOutcome::Removed(_)) {
            let hashes: Vec<String> = keys_with_prefix(
                &self.accounts.identity_sessions,
                &prefix_of(&[idp, subject]),
            )?
            .iter()
            .filter_map(|key| key.rsplit(|b| *b == 0).next())
            .map(|hash| String::from_utf8_lossy(hash).into_owned())
            .filter(|hash| Some(hash.as_str()) != keep_session)
            .collect();
            self.remove_sessions(&hashes)?;
        }
        Ok(outcome)
    }

    fn repoint_session(&self, session_hash: &str, idp: &str, subject: &str) -> StoreResult<bool> {
        let trees = (&self.accounts.sessions, &self.accounts.identity_sessions);
        trees
            .transaction(|(sessions, identity_sessions)| {
                let Some(mut session) = get_in::<Session>(sessions, session_hash.as_bytes())?
                else {
                    return Ok(false);
                };
                identity_sessions.remove(key_of(&[
                    &session.idp,
                    &session.subject,
                    session_hash,
                ]))?;
                session.idp = idp.to_string();
                session.subject = subject.to_string();
                session.sid = None;
                session.id_token = None;
                sessions.insert(session_hash.as_bytes(), encode(&session).map_err(abort)?)?;
                identity_sessions.insert(key_of(&[idp, subject, session_hash]), &[][..])?;
                Ok(true)
            })
            .map_err(txn_error)
    }

    fn replace_tokens(
        &self,
        idp: &str,
        subject: &str,
        expected: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        let swapped = self
            .accounts
            .tokens
            .compare_and_swap(identity_key(idp, subject), Some(expected), Some(new))
            .map_err(backend)?;
        Ok(swapped.is_ok())
    }

    fn delete_tokens(&self, idp: &str, subject: &str) -> StoreResult<()> {
        self.accounts
            .tokens
            .remove(identity_key(idp, subject))
            .map(|_| ())
            .map_err(backend)
    }

    fn end_identity_sessions(
        &self,
        idp: &str,
        subject: Option<&str>,
        sid: Option<&str>,
    ) -> StoreResult<usize> {
        let prefix = match subject {
            Some(subject) => prefix_of(&[idp, subject]),
            None => prefix_of(&[idp]),
        };
        let mut hashes = Vec::new();
        for key in keys_with_prefix(&self.accounts.identity_sessions, &prefix)? {
            let hash = key.rsplit(|b| *b == 0).next().unwrap_or_default();
            let hash = String::from_utf8_lossy(hash).into_owned();
            if let Some(sid) = sid {
                let session: Option<Session> = get(&self.accounts.sessions, hash.as_bytes())?;
                if session.and_then(|s| s.sid).as_deref() != Some(sid) {
                    continue;
                }
            }
            hashes.push(hash);
        }
        self.remove_sessions(&hashes)
    }

    fn identity_has_other_sessions(
        &self,
        idp: &str,
        subject: &str,
        except: &str,
        now: i64,
    ) -> StoreResult<bool> {
        for key in keys_with_prefix(
            &self.accounts.identity_sessions,
            &prefix_of(&[idp, subject]),
        )? {
            let hash = key.rsplit(|b| *b == 0).next().unwrap_or_default();
            if hash == except.as_bytes() {
                continue;
            }
            let session: Option<Session> = get(&self.accounts.sessions, hash)?;
            if session.is_some_and(|s| s.expires_at > now) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        let _deleting = self.accounts.deleting();
        let identity_keys =
            keys_with_prefix(&self.accounts.user_identities, &prefix_of(&[user_id]))?;
        let session_keys = keys_with_prefix(&self.accounts.user_sessions, &prefix_of(&[user_id]))?;
        let key_keys = keys_with_prefix(&self.user_api_keys, &prefix_of(&[user_id]))?;
        let trees = (
            &self.accounts.users,
            &self.accounts.usernames,
            &self.accounts.emails,
            &self.accounts.identities,
            &self.accounts.user_identities,
            &self.accounts.tokens,
            &self.accounts.sessions,
            &self.accounts.user_sessions,
            &self.accounts.identity_sessions,
            &self.api_keys,
            &self.user_api_keys,
        );
        trees
            .transaction(
                |(
                    users,
                    usernames,
                    emails,
                    identities,
                    user_identities,
                    tokens,
                    sessions,
                    user_sessions,
                    identity_sessions,
                    api_keys,
                    user_api_keys,
                )| {
                    let Some(user) = get_in::<User>(users, user_id.as_bytes())? else {
                        return Ok(false);
                    };
                    users.remove(user_id.as_bytes())?;
                    usernames.remove(user.username.as_bytes())?;
                    if let Some(email) = &user.email {
                        let key = normalize_email(email);
                        if get_in::<EmailOwner>(emails, key.as_bytes())?
                            .is_some_and(|o| o.user_id == user_id)
                        {
                            emails.remove(key.as_bytes())?;
                        }
                    }
                    let prefix = prefix_of(&[user_id]).len();
                    for key in &identity_keys {
                        user_identities.remove(key.as_slice())?;
                        identities.remove(&key[prefix..])?;
                        tokens.remove(&key[prefix..])?;
                    }
                    for key in &session_keys {
                        user_sessions.remove(key.as_slice())?;
                        let hash = &key[prefix..];
                        if let Some(session) = get_in::<Session>(sessions, hash)? {
                            let hash = String::from_utf8_lossy(hash);
                            identity_sessions.remove(key_of(&[
                                &session.idp,
                                &session.subject,
                                &hash,
                            ]))?;
                            sessions.remove(expiry_key(session.expires_at, &hash))?;
                        }
                        sessions.remove(hash)?;
                    }
                    for key in &key_keys {
                        user_api_keys.remove(key.as_slice())?;
                        api_keys.remove(&key[prefix..])?;
                    }
                    Ok(true)
                },
            )
            .map_err(txn_error)
    }

    fn put_api_key(&self, key_hash: &str, key: &ApiKey) -> StoreResult<()> {
        let _adding = self.accounts.adding();
        let trees = (&self.api_keys, &self.user_api_keys);
        if self
            .accounts
            .users
            .get(key.user_id.as_bytes())
            .map_err(backend)?
            .is_none()
        {
            return Err(StoreError::NoSuchUser);
        }
        trees
            .transaction(|(api_keys, user_api_keys)| {
                api_keys.insert(key_hash.as_bytes(), encode(key).map_err(abort)?)?;
                user_api_keys.insert(key_of(&[&key.user_id, key_hash]), key.id.as_bytes())?;
                Ok(())
            })
            .map_err(txn_error)
    }

    fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        get(&self.api_keys, key_hash.as_bytes())
    }

    fn api_keys_of(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        let prefix = prefix_of(&[user_id]);
        let mut out = Vec::new();
        for key in keys_with_prefix(&self.user_api_keys, &prefix)? {
            if let Some(api_key) = get(&self.api_keys, &key[prefix.len()..])? {
                out.push(api_key);
            }
        }
        Ok(out)
    }

    fn delete_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool> {
        let prefix = prefix_of(&[user_id]);
        for entry in self.user_api_keys.scan_prefix(&prefix) {
            let (key, id) = entry.map_err(backend)?;
            if id.as_ref() == key_id.as_bytes() {
                let hash = key[prefix.len()..].to_vec();
                let trees = (&self.api_keys, &self.user_api_keys);
                trees
                    .transaction(|(api_keys, user_api_keys)| {
                        api_keys.remove(hash.as_slice())?;
                        user_api_keys.remove(key.as_ref())?;
                        Ok(())
                    })
                    .map_err(txn_error)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn put_signup(&self, id: &str, expires_at: i64, record: &[u8]) -> StoreResult<()> {
        let mut value = Vec::with_capacity(record.len() + 9);
        value.push(SIGNUP_WITH_EXPIRY);
        value.extend_from_slice(&expires_at.to_be_bytes());
        value.extend_from_slice(record);
        self.signups
            .insert(id.as_bytes(), value)
            .map(|_| ())
            .map_err(backend)
    }

    fn sweep_signups(&self, now: i64) -> StoreResult<usize> {
        let mut swept = 0;
        for entry in self.signups.iter() {
            let (id, value) = entry.map_err(backend)?;
            // A record written before expiries were kept is swept too: sign-ups last minutes.
            if signup_expiry(&value).is_none_or(|expires_at| expires_at < now)
                && self
                    .signups
                    .compare_and_swap(&id, Some(&value), None as Option<&[u8]>)
                    .map_err(backend)?
                    .is_ok()
            {
                swept += 1;
            }
        }
        Ok(swept)
    }

    fn take_signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .signups
            .remove(id.as_bytes())
            .map_err(backend)?
            .map(|bytes| signup_record(&bytes).to_vec()))
    }

    fn signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .signups
            .get(id.as_bytes())
            .map_err(backend)?
            .map(|bytes| signup_record(&bytes).to_vec()))
    }

    fn migrate_issuers(&self, issuers: &BTreeMap<String, String>) -> StoreResult<usize> {
        const DONE: &[u8] = b"identity-issuers-migrated";
        // The first start of a version that records issuers looks at every identity; later
        // ones only at those whose entry was missing then.
        let candidates: Vec<Vec<u8>> = if self.db.get(DONE).map_err(backend)?.is_none() {
            let mut keys = Vec::new();
            for entry in self.accounts.identities.iter() {
                let (key, value) = entry.map_err(backend)?;
                if decode::<Identity>(&value)?.issuer.is_none() {
                    keys.push(key.to_vec());
                }
            }
            keys
        } else {
            self.legacy_identities
                .iter()
                .keys()
                .map(|key| key.map(|key| key.to_vec()).map_err(backend))
                .collect::<StoreResult<_>>()?
        };
        let mut migrated = 0;
        for key in candidates {
            let (identities, legacy) = (&self.accounts.identities, &self.legacy_identities);
            let given = (identities, legacy)
                .transaction(|(identities, legacy)| {
                    let Some(mut identity) = get_in::<Identity>(identities, &key)? else {
                        legacy.remove(key.as_slice())?;
                        return Ok(false);
                    };
                    if identity.issuer.is_some() {
                        legacy.remove(key.as_slice())?;
                        return Ok(false);
                    }
                    match issuers.get(&identity.idp) {
                        Some(issuer) => {
                            identity.issuer = Some(issuer.clone());
                            identities.insert(key.as_slice(), encode(&identity).map_err(abort)?)?;
                            legacy.remove(key.as_slice())?;
                            Ok(true)
                        }
                        None => {
                            legacy.insert(key.as_slice(), &[][..])?;
                            Ok(false)
                        }
                    }
                })
                .map_err(txn_error)?;
            migrated += usize::from(given);
        }
        self.db.insert(DONE, &[1u8][..]).map_err(backend)?;
        self.flush()?;
        Ok(migrated)
    }

    fn probe(&self) -> StoreResult<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        self.db
            .insert(b"authnz-write-probe", &now.to_be_bytes())
            .map_err(backend)?;
        self.flush()
    }

    fn sync(&self) -> futures_util::future::BoxFuture<'static, StoreResult<()>> {
        let db = self.db.clone();
        let commit = self.commit.clone();
        Box::pin(async move { commit.sync(db).await })
    }

    fn dump(&self) -> StoreResult<Dump> {
        let mut out = Dump::new();
        let mut pending = std::collections::BTreeMap::new();
        for (key, login) in self.pending.snapshot() {
            pending.insert(key, encode(&login)?);
        }
        out.insert("pending_logins".to_string(), pending);
        let mut expiry = std::collections::BTreeMap::new();
        for (name, tree) in self.trees() {
            let mut records = std::collections::BTreeMap::new();
            for entry in tree.iter() {
                let (key, value) = entry.map_err(backend)?;
                if name == "sessions" && key.first() == Some(&EXPIRY) {
                    expiry.insert(key.to_vec(), value.to_vec());
                } else {
                    records.insert(key.to_vec(), value.to_vec());
                }
            }
            out.insert(name.to_string(), records);
        }
        out.insert("session_expiry".to_string(), expiry);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_passes_the_conformance_suite() -> Result<(), Box<dyn std::error::Error>> {
        super::super::conformance::run_all(&|| {
            let dir = tempfile::tempdir()?;
            let store = SledStore::open(dir.path(), 8 << 20)?;
            Ok((
                Box::new(store) as Box<dyn Store>,
                Box::new(dir) as Box<dyn std::any::Any>,
            ))
        })
    }

    #[test]
    fn data_survives_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let login = super::super::conformance::sample_login("idp", "sub-1", "u1", "s1");
        {
            let store = SledStore::open(dir.path(), 8 << 20)?;
            store.complete_login(&login)?;
            store.flush()?;
        }
        let store = SledStore::reopen(dir.path(), 8 << 20)?;
        let identity = store.identity("idp", "sub-1")?;
        assert_eq!(identity.map(|i| i.user_id), Some("u1".to_string()));
        assert!(store.session("s1")?.is_some());
        Ok(())
    }

    /// A batch: a new user; a second IdP claiming the first one's verified email (refused); the
    /// first identity again (returning); a new user wanting the same username.
    fn batch() -> Vec<CompletedLogin> {
        use super::super::conformance::sample_login;
        let first = sample_login("a", "s1", "u1", "x1");
        let mut conflict = sample_login("b", "s2", "u2", "x2");
        conflict.email = first.email.clone();
        let again = sample_login("a", "s1", "u-unused", "x3");
        let other = sample_login("c", "s4", "u4", "x4");
        vec![first, conflict, again, other]
    }

    #[test]
    fn a_batch_of_logins_equals_the_same_logins_one_by_one(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (one_dir, batch_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let one_by_one = SledStore::open(one_dir.path(), 8 << 20)?;
        let batched = SledStore::open(batch_dir.path(), 8 << 20)?;
        let expected: Vec<_> = batch()
            .iter()
            .map(|login| one_by_one.complete_login(login))
            .collect();
        let results = batched.logins.write(&batch());
        assert_eq!(results.len(), 4);
        for (got, want) in results.iter().zip(&expected) {
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
                _ => panic!("batched {got:?} but one by one {want:?}"),
            }
        }
        assert!(matches!(results[1], Err(StoreError::EmailConflict)));
        let returning = results[2].as_ref().map_err(|err| err.to_string())?;
        assert!(!returning.created && returning.user.id == "u1");
        let other = results[3].as_ref().map_err(|err| err.to_string())?;
        assert!(other.created && other.user.username != "alice");
        assert_eq!(batched.dump()?, one_by_one.dump()?);
        // Alone in its batch, a refused login keeps its own error too.
        let alone = batched.logins.write(&batch()[1..2]);
        assert!(matches!(alone[..], [Err(StoreError::EmailConflict)]));
        Ok(())
    }

    #[test]
    fn concurrent_durable_logins_each_get_their_own_outcome(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = std::sync::Arc::new(SledStore::open(dir.path(), 8 << 20)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()?;
        let outcomes = runtime.block_on(async {
            let mut tasks = Vec::new();
            // 40 new people, and 20 logins racing for one new identity.
            for i in 0..60 {
                let store = store.clone();
                let mut login = super::super::conformance::sample_login(
                    "idp",
                    &format!("sub-{}", if i < 40 { i } else { 99 }),
                    &format!("user-{i}"),
                    &format!("session-{i}"),
                );
                login.username = format!("person{i}");
                tasks.push(tokio::spawn(async move {
                    store.complete_login_durable(login).await
                }));
            }
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await);
            }
            outcomes
        });
        let mut racing_users = std::collections::BTreeSet::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let outcome = outcome?.map_err(|err| err.to_string())?;
            if i < 40 {
                assert!(outcome.created && outcome.user.id == format!("user-{i}"));
            } else {
                racing_users.insert(outcome.user.id);
            }
            assert!(store.session(&format!("session-{i}"))?.is_some());
        }
        assert_eq!(racing_users.len(), 1, "one user for one identity");
        assert_eq!(store.dump()?["users"].len(), 41);
        Ok(())
    }

    fn login_expiring(subject: &str, session: &str, expires_at: i64) -> CompletedLogin {
        let mut login = super::super::conformance::sample_login("idp", subject, subject, session);
        login.username = subject.into();
        login.session_expires_at = expires_at;
        login
    }

    #[test]
    fn identities_from_before_issuers_take_their_entrys_issuer(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // Records as the version before issuers wrote them.
        let dir = tempfile::tempdir()?;
        {
            let db = sled::open(dir.path())?;
            let identities = db.open_tree("identities")?;
            for (idp, subject) in [("corp", "42"), ("gone", "7")] {
                let old = serde_json::json!({"idp": idp, "subject": subject, "user_id": "u1",
                    "email": null, "email_verified": false, "linked_at": 1, "last_login_at": 1});
                identities.insert(identity_key(idp, subject), serde_json::to_vec(&old)?)?;
            }
            db.flush()?;
        }
        let store = SledStore::reopen(dir.path(), 8 << 20)?;
        let issuers = |names: &[&str]| -> BTreeMap<String, String> {
            names
                .iter()
                .map(|name| (name.to_string(), format!("https://{name}.example")))
                .collect()
        };
        assert_eq!(store.migrate_issuers(&issuers(&["corp"]))?, 1);
        let issuer = |idp: &str, subject: &str| {
            store
                .identity(idp, subject)
                .ok()
                .flatten()
                .and_then(|identity| identity.issuer)
        };
        assert_eq!(
            issuer("corp", "42").as_deref(),
            Some("https://corp.example")
        );
        assert_eq!(issuer("gone", "7"), None, "its entry is not configured");
        // Later starts look only at those waiting; an entry that comes back gives them its own.
        assert_eq!(store.migrate_issuers(&issuers(&["corp"]))?, 0);
        assert_eq!(store.migrate_issuers(&issuers(&["corp", "gone"]))?, 1);
        assert_eq!(issuer("gone", "7").as_deref(), Some("https://gone.example"));
        assert_eq!(store.legacy_identities.len(), 0);
        Ok(())
    }

    #[test]
    fn the_sweep_reads_the_expiry_index() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path(), 8 << 20)?;
        store.complete_login(&login_expiring("a", "s-early", 2_000))?;
        store.complete_login(&login_expiring("b", "s-late", 5_000))?;
        store.complete_login(&login_expiring("c", "s-gone", 1_500))?;
        assert!(store.delete_session("s-gone")?);
        assert_eq!(
            store.dump()?["session_expiry"].len(),
            2,
            "deleting drops its entry"
        );
        // An entry whose session vanished another way is cleaned up, not counted.
        store
            .accounts
            .sessions
            .insert(expiry_key(1_000, "s-orphan"), &[][..])?;
        assert_eq!(store.sweep_expired(3_000)?, 1);
        assert!(store.session("s-early")?.is_none());
        assert!(store.session("s-late")?.is_some());
        let dump = store.dump()?;
        assert_eq!(dump["session_expiry"].len(), 1);
        assert_eq!(dump["sessions"].len(), 1);
        assert!(store.delete_user("b")?);
        assert!(
            store.dump()?["session_expiry"].is_empty(),
            "deleting the user drops it"
        );
        Ok(())
    }

    #[test]
    fn an_old_database_gets_its_expiry_index() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        {
            let store = SledStore::open(dir.path(), 8 << 20)?;
            store.complete_login(&login_expiring("a", "s-early", 2_000))?;
            for entry in store.accounts.sessions.scan_prefix([EXPIRY]) {
                store.accounts.sessions.remove(entry?.0)?;
            }
            assert!(store.dump()?["session_expiry"].is_empty());
            store.flush()?;
        }
        let store = SledStore::reopen(dir.path(), 8 << 20)?;
        assert_eq!(store.dump()?["session_expiry"].len(), 1);
        assert_eq!(store.sweep_expired(3_000)?, 1);
        Ok(())
    }
}

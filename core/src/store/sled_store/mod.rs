//! The sled backend of [`Store`]: one tree per collection, multi-tree sled transactions for
//! writes that belong together.
//!
//! sled holds an exclusive lock on its directory, so one process owns a database.

/// Where the key canary is kept, in the default tree.
const KEY_CANARY: &[u8] = b"authnz-key-canary";

mod batch;
mod keys;
mod layout;
mod roles;
#[cfg(test)]
mod tests;

use batch::*;
use keys::*;

use std::collections::BTreeMap;

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use sled::{Db, Transactional, Tree};

use super::linking;

use super::pending::PendingTable;

use super::{
    decode, encode, identity_key, normalize_email, ApiKey, CompletedLogin, Dump, EmailOwner,
    Identity, LoginOutcome, PendingLogin, RemoveOutcome, Session, StoreError, StoreResult, User,
};

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
            sessions: tree("sessions")?,
            identity_sessions: tree("identity_sessions")?,
            membership: std::sync::Arc::default(),
        };
        layout::fold_old_trees(&db, &trees)?;
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

    /// Derives logins' nonces and PKCE verifiers with the vault's keys (see
    /// [`crate::crypto::LoginSecrets`]).
    pub fn set_login_secrets(&self, secrets: crate::crypto::LoginSecrets) {
        self.pending.set_secrets(secrets);
    }

    /// Flushes to disk.
    pub fn flush(&self) -> StoreResult<()> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn trees(&self) -> [(&'static str, &Tree); 9] {
        [
            ("users", &self.accounts.users),
            ("usernames", &self.accounts.usernames),
            ("emails", &self.accounts.emails),
            ("identities", &self.accounts.identities),
            ("sessions", &self.accounts.sessions),
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
            let trees = (&self.accounts.sessions, &self.accounts.identity_sessions);
            let done = trees
                .transaction(|(sessions, identity_sessions)| {
                    let Some(session) = get_in::<Session>(sessions, hash.as_bytes())? else {
                        return Ok(false);
                    };
                    sessions.remove(hash.as_bytes())?;
                    sessions.remove(expiry_key(session.expires_at, hash))?;
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

/// The operations, synchronous: sled is embedded and answers in microseconds, so they run on
/// the caller's task. The role traits (`roles.rs`) hand them to the flows.
impl SledStore {
    pub fn put_pending_login(&self, state: &str, login: &PendingLogin) -> StoreResult<()> {
        if self.pending.put(state, login) {
            Ok(())
        } else {
            Err(StoreError::Corrupt(
                "a pending login field holds NUL".into(),
            ))
        }
    }

    pub fn take_pending_login(&self, state: &str) -> StoreResult<Option<PendingLogin>> {
        // Removed under the table's lock: of two racing callbacks, one gets it.
        Ok(self.pending.take(state))
    }

    pub fn sweep_pending_logins(&self, created_before: i64) -> StoreResult<usize> {
        Ok(self.pending.sweep(created_before))
    }

    pub fn sweep_expired(&self, now: i64) -> StoreResult<usize> {
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

    pub fn complete_login(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        self.accounts.apply_one(login)
    }

    pub fn complete_login_durable<'a>(
        &'a self,
        login: CompletedLogin,
    ) -> futures_util::future::BoxFuture<'a, StoreResult<LoginOutcome>> {
        Box::pin(self.logins.clone().commit(login))
    }

    pub fn session(&self, session_hash: &str) -> StoreResult<Option<Session>> {
        get(&self.accounts.sessions, session_hash.as_bytes())
    }

    pub fn delete_session(&self, session_hash: &str) -> StoreResult<bool> {
        Ok(self.remove_sessions(&[session_hash.to_string()])? == 1)
    }

    pub fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(String, Session)>> {
        let mut sessions = Vec::new();
        for hash in self.session_hashes_of(user_id)? {
            // An entry whose session ended since the scan is skipped.
            if let Some(session) = self.session(&hash)? {
                if session.user_id == user_id {
                    sessions.push((hash, session));
                }
            }
        }
        Ok(sessions)
    }

    /// The hashes of the sessions of a user's identities (read outside a transaction).
    fn session_hashes_of(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let mut hashes = Vec::new();
        for key in self
            .user_record(user_id)?
            .map(|r| r.identities)
            .unwrap_or_default()
        {
            let mut prefix = key;
            prefix.push(0);
            for entry in keys_with_prefix(&self.accounts.identity_sessions, &prefix)? {
                hashes.push(String::from_utf8_lossy(&entry[prefix.len()..]).into_owned());
            }
        }
        Ok(hashes)
    }

    fn user_record(&self, user_id: &str) -> StoreResult<Option<UserRecord>> {
        record(&self.accounts.users, user_id.as_bytes())
    }

    fn identity_record(&self, key: &[u8]) -> StoreResult<Option<Record<Identity>>> {
        record(&self.accounts.identities, key)
    }

    pub fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        Ok(self.user_record(user_id)?.map(|record| record.user))
    }

    pub fn identity(&self, idp: &str, subject: &str) -> StoreResult<Option<Identity>> {
        Ok(self
            .identity_record(&identity_key(idp, subject))?
            .map(|record| record.value))
    }

    pub fn email_owner(&self, email: &str) -> StoreResult<Option<EmailOwner>> {
        get(&self.accounts.emails, email.as_bytes())
    }

    pub fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
        let mut out = Vec::new();
        for key in self
            .user_record(user_id)?
            .map(|r| r.identities)
            .unwrap_or_default()
        {
            if let Some(record) = self.identity_record(&key)? {
                out.push(record.value);
            }
        }
        Ok(out)
    }

    pub fn sealed_tokens(&self, idp: &str, subject: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .identity_record(&identity_key(idp, subject))?
            .and_then(|record| record.tail))
    }

    pub fn remove_identity(
        &self,
        user_id: &str,
        idp: &str,
        subject: &str,
        keep_session: Option<&str>,
    ) -> StoreResult<RemoveOutcome> {
        let id_key = identity_key(idp, subject);
        let trees = (
            &self.accounts.users,
            &self.accounts.identities,
            &self.accounts.sessions,
            &self.accounts.identity_sessions,
        );
        let outcome = trees
            .transaction(|(users, identities, sessions, identity_sessions)| {
                let Some(identity) = record_in::<Record<Identity>>(identities, &id_key)? else {
                    return Ok(RemoveOutcome::NotFound);
                };
                let Some(mut user) = record_in::<UserRecord>(users, user_id.as_bytes())? else {
                    return Ok(RemoveOutcome::NotFound);
                };
                if identity.value.user_id != user_id {
                    return Ok(RemoveOutcome::NotFound);
                }
                user.identities.retain(|key| *key != id_key);
                let Some(remaining) = user.identities.first() else {
                    return Ok(RemoveOutcome::LastIdentity);
                };
                // The session kept carries on under a remaining identity, in this same
                // transaction: every session stays indexed under an identity of its user.
                if let Some(hash) = keep_session {
                    if let Some(session) = get_in::<Session>(sessions, hash.as_bytes())? {
                        if session.idp == idp && session.subject == subject {
                            let (other_idp, other_subject) = split_identity_key(remaining)
                                .ok_or_else(|| {
                                    abort(StoreError::Corrupt("a malformed identity key".into()))
                                })?;
                            repoint_in(
                                sessions,
                                identity_sessions,
                                hash,
                                session,
                                other_idp,
                                other_subject,
                            )?;
                        }
                    }
                }
                identities.remove(id_key.as_slice())?;
                put_in(users, user_id.as_bytes(), &user)?;
                Ok(RemoveOutcome::Removed(identity.tail))
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

    pub fn repoint_session(
        &self,
        session_hash: &str,
        idp: &str,
        subject: &str,
    ) -> StoreResult<bool> {
        let trees = (&self.accounts.sessions, &self.accounts.identity_sessions);
        trees
            .transaction(|(sessions, identity_sessions)| {
                let Some(session) = get_in::<Session>(sessions, session_hash.as_bytes())? else {
                    return Ok(false);
                };
                repoint_in(
                    sessions,
                    identity_sessions,
                    session_hash,
                    session,
                    idp,
                    subject,
                )?;
                Ok(true)
            })
            .map_err(txn_error)
    }

    pub fn replace_tokens(
        &self,
        idp: &str,
        subject: &str,
        expected: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        let key = identity_key(idp, subject);
        self.accounts
            .identities
            .transaction(|identities| {
                let Some(mut record) = record_in::<Record<Identity>>(identities, &key)? else {
                    return Ok(false);
                };
                if record.tail.as_deref() != Some(expected) {
                    return Ok(false);
                }
                record.tail = Some(new.to_vec());
                put_in(identities, &key, &record)?;
                Ok(true)
            })
            .map_err(txn_error)
    }

    pub fn delete_tokens(&self, idp: &str, subject: &str) -> StoreResult<()> {
        let key = identity_key(idp, subject);
        self.accounts
            .identities
            .transaction(|identities| {
                if let Some(mut record) = record_in::<Record<Identity>>(identities, &key)? {
                    if record.tail.take().is_some() {
                        put_in(identities, &key, &record)?;
                    }
                }
                Ok(())
            })
            .map_err(txn_error)
    }

    pub fn end_identity_sessions(
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

    pub fn identity_has_other_sessions(
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

    pub fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        let _deleting = self.accounts.deleting();
        let session_hashes = self.session_hashes_of(user_id)?;
        let key_keys = keys_with_prefix(&self.user_api_keys, &prefix_of(&[user_id]))?;
        let trees = (
            &self.accounts.users,
            &self.accounts.usernames,
            &self.accounts.emails,
            &self.accounts.identities,
            &self.accounts.sessions,
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
                    sessions,
                    identity_sessions,
                    api_keys,
                    user_api_keys,
                )| {
                    let Some(UserRecord {
                        user,
                        identities: identity_keys,
                    }) = record_in(users, user_id.as_bytes())?
                    else {
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
                    for key in &identity_keys {
                        identities.remove(key.as_slice())?;
                    }
                    for hash in &session_hashes {
                        if let Some(session) = get_in::<Session>(sessions, hash.as_bytes())? {
                            identity_sessions.remove(key_of(&[
                                &session.idp,
                                &session.subject,
                                hash,
                            ]))?;
                            sessions.remove(expiry_key(session.expires_at, hash))?;
                        }
                        sessions.remove(hash.as_bytes())?;
                    }
                    let prefix = prefix_of(&[user_id]).len();
                    for key in &key_keys {
                        user_api_keys.remove(key.as_slice())?;
                        api_keys.remove(&key[prefix..])?;
                    }
                    Ok(true)
                },
            )
            .map_err(txn_error)
    }

    pub fn put_api_key(&self, key_hash: &str, key: &ApiKey) -> StoreResult<()> {
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

    pub fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        get(&self.api_keys, key_hash.as_bytes())
    }

    pub fn api_keys_of(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        let prefix = prefix_of(&[user_id]);
        let mut out = Vec::new();
        for key in keys_with_prefix(&self.user_api_keys, &prefix)? {
            if let Some(api_key) = get(&self.api_keys, &key[prefix.len()..])? {
                out.push(api_key);
            }
        }
        Ok(out)
    }

    pub fn delete_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool> {
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

    pub fn put_signup(&self, id: &str, expires_at: i64, record: &[u8]) -> StoreResult<()> {
        let mut value = Vec::with_capacity(record.len() + 9);
        value.push(SIGNUP_WITH_EXPIRY);
        value.extend_from_slice(&expires_at.to_be_bytes());
        value.extend_from_slice(record);
        self.signups
            .insert(id.as_bytes(), value)
            .map(|_| ())
            .map_err(backend)
    }

    pub fn sweep_signups(&self, now: i64) -> StoreResult<usize> {
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

    pub fn take_signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .signups
            .remove(id.as_bytes())
            .map_err(backend)?
            .map(|bytes| signup_record(&bytes).to_vec()))
    }

    pub fn signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .signups
            .get(id.as_bytes())
            .map_err(backend)?
            .map(|bytes| signup_record(&bytes).to_vec()))
    }

    pub fn migrate_issuers(&self, issuers: &BTreeMap<String, String>) -> StoreResult<usize> {
        const DONE: &[u8] = b"identity-issuers-migrated";
        // The first start of a version that records issuers looks at every identity; later
        // ones only at those whose entry was missing then.
        let candidates: Vec<Vec<u8>> = if self.db.get(DONE).map_err(backend)?.is_none() {
            let mut keys = Vec::new();
            for entry in self.accounts.identities.iter() {
                let (key, value) = entry.map_err(backend)?;
                if Record::<Identity>::decode(&value)?.value.issuer.is_none() {
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
                    let Some(mut record) = record_in::<Record<Identity>>(identities, &key)? else {
                        legacy.remove(key.as_slice())?;
                        return Ok(false);
                    };
                    if record.value.issuer.is_some() {
                        legacy.remove(key.as_slice())?;
                        return Ok(false);
                    }
                    match issuers.get(&record.value.idp) {
                        Some(issuer) => {
                            record.value.issuer = Some(issuer.clone());
                            put_in(identities, &key, &record)?;
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

    pub fn key_canary(&self) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .db
            .get(KEY_CANARY)
            .map_err(backend)?
            .map(|value| value.to_vec()))
    }

    pub fn put_key_canary(&self, sealed: &[u8]) -> StoreResult<()> {
        self.db.insert(KEY_CANARY, sealed).map_err(backend)?;
        self.flush()
    }

    pub fn probe(&self) -> StoreResult<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        self.db
            .insert(b"authnz-write-probe", &now.to_be_bytes())
            .map_err(backend)?;
        self.flush()
    }

    pub fn sync(&self) -> futures_util::future::BoxFuture<'static, StoreResult<()>> {
        let db = self.db.clone();
        let commit = self.commit.clone();
        Box::pin(async move { commit.sync(db).await })
    }

    pub fn dump(&self) -> StoreResult<Dump> {
        let mut out = Dump::new();
        let mut pending = std::collections::BTreeMap::new();
        for (key, login) in self.pending.snapshot() {
            pending.insert(key, encode(&login)?);
        }
        out.insert("pending_logins".to_string(), pending);
        let mut expiry = std::collections::BTreeMap::new();
        // What rides in a record's value is listed as it was once stored: a token per
        // identity, an index entry `user \0 idp \0 subject` per identity of a user.
        let mut tokens = std::collections::BTreeMap::new();
        let mut user_identities = std::collections::BTreeMap::new();
        for (name, tree) in self.trees() {
            let mut records = std::collections::BTreeMap::new();
            for entry in tree.iter() {
                let (key, value) = entry.map_err(backend)?;
                if name == "sessions" && key.first() == Some(&EXPIRY) {
                    expiry.insert(key.to_vec(), value.to_vec());
                } else if name == "users" {
                    let record = UserRecord::decode(&value)?;
                    for identity in &record.identities {
                        user_identities.insert([&key[..], &[0], identity].concat(), vec![]);
                    }
                    records.insert(key.to_vec(), split_record(&value).0.to_vec());
                } else if name == "identities" {
                    let (json, tail) = split_record(&value);
                    if let Some(sealed) = tail {
                        tokens.insert(key.to_vec(), sealed.to_vec());
                    }
                    records.insert(key.to_vec(), json.to_vec());
                } else {
                    records.insert(key.to_vec(), value.to_vec());
                }
            }
            out.insert(name.to_string(), records);
        }
        out.insert("tokens".to_string(), tokens);
        out.insert("user_identities".to_string(), user_identities);
        out.insert("session_expiry".to_string(), expiry);
        Ok(out)
    }
}

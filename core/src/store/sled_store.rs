//! The sled backend of [`Store`]: one tree per collection, multi-tree sled transactions for
//! writes that belong together.
//!
//! sled holds an exclusive lock on its directory, so one process owns a database.

use std::collections::BTreeMap;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Db, Transactional, Tree};

use super::{
    decode, encode, identity_key, username_candidates, CompletedLogin, Dump, Identity,
    LoginOutcome, PendingLogin, Session, Store, StoreError, StoreResult, User,
};

/// The sled database of authnz.
pub struct SledStore {
    db: Db,
    pending: Tree,
    users: Tree,
    usernames: Tree,
    identities: Tree,
    user_identities: Tree,
    tokens: Tree,
    sessions: Tree,
}

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

impl SledStore {
    /// Opens (or creates) the database in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> StoreResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|err| StoreError::Backend(format!("cannot open {}: {err}", dir.display())))?;
        let tree = |name: &str| db.open_tree(name).map_err(backend);
        Ok(Self {
            pending: tree("pending_logins")?,
            users: tree("users")?,
            usernames: tree("usernames")?,
            identities: tree("identities")?,
            user_identities: tree("user_identities")?,
            tokens: tree("tokens")?,
            sessions: tree("sessions")?,
            db,
        })
    }

    /// Flushes to disk.
    pub fn flush(&self) -> StoreResult<()> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn trees(&self) -> [(&'static str, &Tree); 7] {
        [
            ("pending_logins", &self.pending),
            ("users", &self.users),
            ("usernames", &self.usernames),
            ("identities", &self.identities),
            ("user_identities", &self.user_identities),
            ("tokens", &self.tokens),
            ("sessions", &self.sessions),
        ]
    }
}

fn user_identity_key(user_id: &str, idp: &str, subject: &str) -> Vec<u8> {
    let mut key = user_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&identity_key(idp, subject));
    key
}

fn get_in<T: for<'de> serde::Deserialize<'de>>(
    tree: &TransactionalTree,
    key: &[u8],
) -> Result<Option<T>, ConflictableTransactionError<StoreError>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(abort),
        None => Ok(None),
    }
}

impl Store for SledStore {
    fn put_pending_login(&self, state: &str, login: &PendingLogin) -> StoreResult<()> {
        self.pending
            .insert(state.as_bytes(), encode(login)?)
            .map(|_| ())
            .map_err(backend)
    }

    fn take_pending_login(&self, state: &str) -> StoreResult<Option<PendingLogin>> {
        // `remove` returns the old value atomically: of two racing callbacks, one gets it.
        match self.pending.remove(state.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn sweep_pending_logins(&self, created_before: i64) -> StoreResult<usize> {
        let mut removed = 0;
        for entry in self.pending.iter() {
            let (key, value) = entry.map_err(backend)?;
            let expired = match decode::<PendingLogin>(&value) {
                Ok(login) => login.created_at < created_before,
                Err(_) => true,
            };
            if expired && self.pending.remove(&key).map_err(backend)?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn complete_login(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        let id_key = identity_key(&login.idp, &login.subject);
        let trees = (
            &self.users,
            &self.usernames,
            &self.identities,
            &self.user_identities,
            &self.tokens,
            &self.sessions,
        );
        trees
            .transaction(
                |(users, usernames, identities, user_identities, tokens, sessions)| {
                    let existing: Option<Identity> = get_in(identities, &id_key)?;
                    let (user, created, identity) = match existing {
                        Some(mut identity) => {
                            let user: User = get_in(users, identity.user_id.as_bytes())?
                                .ok_or_else(|| {
                                    abort(StoreError::Corrupt("identity without its user".into()))
                                })?;
                            identity.email = login.email.clone();
                            identity.email_verified = login.email_verified;
                            identity.last_login_at = login.now;
                            (user, false, identity)
                        }
                        None => {
                            let mut username = None;
                            for candidate in username_candidates(&login.username) {
                                if usernames.get(candidate.as_bytes())?.is_none() {
                                    username = Some(candidate);
                                    break;
                                }
                            }
                            let username =
                                username.ok_or_else(|| abort(StoreError::UsernameExhausted))?;
                            let user = User {
                                id: login.new_user_id.clone(),
                                username: username.clone(),
                                email: login.email.clone(),
                                display_name: login.display_name.clone(),
                                created_at: login.now,
                            };
                            users.insert(user.id.as_bytes(), encode(&user).map_err(abort)?)?;
                            usernames.insert(username.as_bytes(), user.id.as_bytes())?;
                            user_identities.insert(
                                user_identity_key(&user.id, &login.idp, &login.subject),
                                &[][..],
                            )?;
                            let identity = Identity {
                                idp: login.idp.clone(),
                                subject: login.subject.clone(),
                                user_id: user.id.clone(),
                                email: login.email.clone(),
                                email_verified: login.email_verified,
                                linked_at: login.now,
                                last_login_at: login.now,
                            };
                            (user, true, identity)
                        }
                    };
                    identities.insert(id_key.as_slice(), encode(&identity).map_err(abort)?)?;
                    tokens.insert(id_key.as_slice(), login.sealed_tokens.as_slice())?;
                    let session = Session {
                        user_id: user.id.clone(),
                        idp: login.idp.clone(),
                        subject: login.subject.clone(),
                        created_at: login.now,
                        expires_at: login.session_expires_at,
                    };
                    sessions.insert(
                        login.session_hash.as_bytes(),
                        encode(&session).map_err(abort)?,
                    )?;
                    Ok(LoginOutcome { user, created })
                },
            )
            .map_err(txn_error)
    }

    fn session(&self, session_hash: &str) -> StoreResult<Option<Session>> {
        match self
            .sessions
            .get(session_hash.as_bytes())
            .map_err(backend)?
        {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn delete_session(&self, session_hash: &str) -> StoreResult<bool> {
        Ok(self
            .sessions
            .remove(session_hash.as_bytes())
            .map_err(backend)?
            .is_some())
    }

    fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        match self.users.get(user_id.as_bytes()).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn identity(&self, idp: &str, subject: &str) -> StoreResult<Option<Identity>> {
        match self
            .identities
            .get(identity_key(idp, subject))
            .map_err(backend)?
        {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
        let mut prefix = user_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for entry in self.user_identities.scan_prefix(&prefix) {
            let (key, _) = entry.map_err(backend)?;
            if let Some(bytes) = self.identities.get(&key[prefix.len()..]).map_err(backend)? {
                out.push(decode(&bytes)?);
            }
        }
        Ok(out)
    }

    fn sealed_tokens(&self, idp: &str, subject: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .tokens
            .get(identity_key(idp, subject))
            .map_err(backend)?
            .map(|bytes| bytes.to_vec()))
    }

    fn dump(&self) -> StoreResult<Dump> {
        let mut out = BTreeMap::new();
        for (name, tree) in self.trees() {
            let mut records = BTreeMap::new();
            for entry in tree.iter() {
                let (key, value) = entry.map_err(backend)?;
                records.insert(key.to_vec(), value.to_vec());
            }
            out.insert(name.to_string(), records);
        }
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
        let store = SledStore::open(dir.path(), 8 << 20)?;
        let identity = store.identity("idp", "sub-1")?;
        assert_eq!(identity.map(|i| i.user_id), Some("u1".to_string()));
        assert!(store.session("s1")?.is_some());
        Ok(())
    }
}

//! The tree layout: how records and index entries are keyed, and reading them inside and
//! outside transactions.

use super::*;

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

pub(super) fn backend(err: sled::Error) -> StoreError {
    StoreError::Backend(err.to_string())
}

pub(super) fn txn_error(err: TransactionError<StoreError>) -> StoreError {
    match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => backend(err),
    }
}

pub(super) fn abort(err: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(err)
}

/// `a \0 b \0 c ...`
pub(super) fn key_of(parts: &[&str]) -> Vec<u8> {
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
pub(super) const EXPIRY: u8 = 0xff;

/// `EXPIRY, expires_at (big-endian), hash`: ordered by expiry.
pub(super) fn expiry_key(expires_at: i64, hash: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + hash.len());
    key.push(EXPIRY);
    key.extend_from_slice(&(expires_at.max(0) as u64).to_be_bytes());
    key.extend_from_slice(hash.as_bytes());
    key
}

/// `parts \0` — the prefix of every key that starts with these parts.
pub(super) fn prefix_of(parts: &[&str]) -> Vec<u8> {
    let mut prefix = key_of(parts);
    prefix.push(0);
    prefix
}

pub(super) fn get_in<T: for<'de> serde::Deserialize<'de>>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(abort),
        None => Ok(None),
    }
}

pub(super) fn get<T: for<'de> serde::Deserialize<'de>>(
    tree: &Tree,
    key: &[u8],
) -> StoreResult<Option<T>> {
    match tree.get(key).map_err(backend)? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Keys of `tree` that start with `prefix` (read outside a transaction: sled transactions
/// cannot scan). Callers re-check what they read inside their transaction.
pub(super) fn keys_with_prefix(tree: &Tree, prefix: &[u8]) -> StoreResult<Vec<Vec<u8>>> {
    tree.scan_prefix(prefix)
        .map(|entry| entry.map(|(key, _)| key.to_vec()).map_err(backend))
        .collect()
}

/// The trees of accounts: users (each with the keys of its identities), identities (each with
/// its sealed tokens), sessions and their indexes; a login writes them all.
///
/// sled splits a leaf at 16 keys whatever their size and keeps a few hundred bytes of metadata
/// resident per page, so what a person costs in memory (and in the time to open the database)
/// follows the number of keys stored for them: what belongs to one record rides in its value
/// (see [`Record`]) rather than under keys of its own.
#[derive(Clone)]
pub(super) struct AccountTrees {
    pub(super) users: Tree,
    pub(super) usernames: Tree,
    pub(super) emails: Tree,
    pub(super) identities: Tree,
    pub(super) sessions: Tree,
    pub(super) identity_sessions: Tree,
    /// Deleting a user reads its index entries before its transaction (sled transactions cannot
    /// scan), so it holds this exclusively from the scan to the commit, while every transaction
    /// that may add to a user (logins, API keys) holds it shared: a connect racing the deletion
    /// either lands before the scan (and is deleted too) or finds the user gone, never leaves an
    /// identity without its user.
    pub(super) membership: std::sync::Arc<std::sync::RwLock<()>>,
}

/// [`AccountTrees`] inside a transaction.
pub(super) type LoginView = (
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
    TransactionalTree,
);

/// A stored record and what rides with it: `json`, or `json \0 tail` (JSON text never holds a
/// raw NUL). A user's tail is the JSON list of its identities' `[idp, subject]`; an identity's
/// is its sealed tokens, as the vault made them.
pub(super) struct Record<T> {
    pub(super) value: T,
    pub(super) tail: Option<Vec<u8>>,
}

/// What a record tree stores under one key, read and written whole.
pub(super) trait Stored: Sized {
    fn decode(bytes: &[u8]) -> StoreResult<Self>;
    fn encode(&self) -> StoreResult<Vec<u8>>;
}

impl<T: serde::Serialize + for<'de> serde::Deserialize<'de>> Stored for Record<T> {
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        let (json, tail) = split_record(bytes);
        Ok(Record {
            value: decode(json)?,
            tail: tail.map(<[u8]>::to_vec),
        })
    }

    fn encode(&self) -> StoreResult<Vec<u8>> {
        Ok(join_record(encode(&self.value)?, self.tail.as_deref()))
    }
}

/// `json`, then `\0 tail` if there is one.
pub(super) fn join_record(mut json: Vec<u8>, tail: Option<&[u8]>) -> Vec<u8> {
    if let Some(tail) = tail {
        json.reserve(tail.len() + 1);
        json.push(0);
        json.extend_from_slice(tail);
    }
    json
}

/// The JSON of a stored record, and its tail if it has one (see [`Record`]).
pub(super) fn split_record(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|byte| *byte == 0) {
        Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
        None => (bytes, None),
    }
}

/// A user and the keys (`idp \0 subject`) of its identities.
pub(super) struct UserRecord {
    pub(super) user: User,
    pub(super) identities: Vec<Vec<u8>>,
}

impl Stored for UserRecord {
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        let record = Record::<User>::decode(bytes)?;
        let pairs: Vec<(String, String)> = match &record.tail {
            Some(tail) => decode(tail)?,
            None => Vec::new(),
        };
        Ok(UserRecord {
            user: record.value,
            identities: pairs
                .iter()
                .map(|(idp, subject)| identity_key(idp, subject))
                .collect(),
        })
    }

    fn encode(&self) -> StoreResult<Vec<u8>> {
        let pairs: Vec<(&str, &str)> = self
            .identities
            .iter()
            .filter_map(|key| split_identity_key(key))
            .collect();
        Ok(join_record(encode(&self.user)?, Some(&encode(&pairs)?)))
    }
}

/// `idp` and `subject` of an identity key.
pub(super) fn split_identity_key(key: &[u8]) -> Option<(&str, &str)> {
    let at = key.iter().position(|byte| *byte == 0)?;
    Some((
        std::str::from_utf8(&key[..at]).ok()?,
        std::str::from_utf8(&key[at + 1..]).ok()?,
    ))
}

/// The record under `key`, read inside a transaction.
pub(super) fn record_in<R: Stored>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<R>> {
    match tree.get(key)? {
        Some(bytes) => R::decode(&bytes).map(Some).map_err(abort),
        None => Ok(None),
    }
}

/// The record under `key`.
pub(super) fn record<R: Stored>(tree: &Tree, key: &[u8]) -> StoreResult<Option<R>> {
    match tree.get(key).map_err(backend)? {
        Some(bytes) => R::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

pub(super) fn put_in<R: Stored>(tree: &TransactionalTree, key: &[u8], record: &R) -> TxResult<()> {
    tree.insert(key, record.encode().map_err(abort)?)?;
    Ok(())
}

/// The session `hash` carried on under the identity `idp`/`subject` (of the same user): its
/// entry under the identity moves, and what it held of its sign-in at the old one goes.
pub(super) fn repoint_in(
    sessions: &TransactionalTree,
    identity_sessions: &TransactionalTree,
    hash: &str,
    mut session: Session,
    idp: &str,
    subject: &str,
) -> TxResult<()> {
    identity_sessions.remove(key_of(&[&session.idp, &session.subject, hash]))?;
    identity_sessions.insert(key_of(&[idp, subject, hash]), &[][..])?;
    session.idp = idp.to_string();
    session.subject = subject.to_string();
    session.sid = None;
    session.id_token = None;
    sessions.insert(hash.as_bytes(), encode(&session).map_err(abort)?)?;
    Ok(())
}

impl AccountTrees {
    /// Held while a transaction may add records to a user (see `membership`).
    pub(super) fn adding(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.membership
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held by a user's deletion, from reading its index entries to its commit.
    pub(super) fn deleting(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.membership
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One login in its own transaction.
    pub(super) fn apply_one(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        self.apply(std::slice::from_ref(login))
            .map_err(txn_error)?
            .pop()
            .ok_or_else(|| StoreError::Backend("a login transaction returned nothing".into()))
    }

    /// Applies `logins` in order in one transaction, each seeing those before it. One refused
    /// login aborts them all with its error.
    pub(super) fn apply(
        &self,
        logins: &[CompletedLogin],
    ) -> Result<Vec<LoginOutcome>, TransactionError<StoreError>> {
        let _adding = self.adding();
        (
            &self.users,
            &self.usernames,
            &self.emails,
            &self.identities,
            &self.sessions,
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

/// The first byte of a stored sign-up that carries its expiry (8 bytes, big-endian) before the
/// record; a record itself (JSON) never starts with it.
pub(super) const SIGNUP_WITH_EXPIRY: u8 = 0xff;

/// The expiry of a stored sign-up, if it carries one.
pub(super) fn signup_expiry(value: &[u8]) -> Option<i64> {
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
pub(super) fn signup_record(value: &[u8]) -> &[u8] {
    match signup_expiry(value) {
        Some(_) => &value[9..],
        None => value,
    }
}

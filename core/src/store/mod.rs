//! Storage: the [`Store`] trait, its records, and the conformance suite every backend passes.
//!
//! The flows speak to storage only through this trait, in operations that match what they
//! do (take a pending login, complete a login), so that each operation can be one atomic
//! transaction in the backend. sled is the embedded default ([`sled_store::SledStore`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod cached;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod linking;
pub mod pending;
pub mod postgres;
pub mod sled_store;

pub use cached::Cached;
pub use postgres::PgStore;
pub use sled_store::SledStore;

/// A storage failure. Its message never contains record contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed (I/O, corruption).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// The backend cannot be reached now (a database gone away, no connection free in time):
    /// the request may succeed when retried.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The database's schema does not fit this binary (migrations).
    #[error("database schema: {0}")]
    Schema(String),
    /// A stored record could not be decoded.
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    /// No free username could be found.
    #[error("could not allocate a unique username")]
    UsernameExhausted,
    /// A new identity's email belongs to another user, and linking is not allowed.
    #[error("the email address belongs to an existing account")]
    EmailConflict,
    /// The identity is already linked to another user.
    #[error("the identity is linked to another account")]
    LinkedElsewhere,
    /// The identity is new and `require_existing` was set.
    #[error("a new account needs confirmation")]
    NeedsConfirmation,
    /// The user to link to does not exist (any more).
    #[error("the account does not exist")]
    NoSuchUser,
    /// The identity was linked under another issuer than the entry's current one.
    #[error("the identity belongs to another issuer")]
    IssuerChanged,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Every record of a store, by collection name, then key.
pub type Dump = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A login between `/login` and `/callback`: single use, expiring, bound to one browser.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The IdP entry name the login was started for.
    pub idp: String,
    /// Issuer, client and redirect URI the authorize request was made with (mix-up defence).
    pub issuer: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to send the browser afterwards: a same-origin path, or a URL on a configured
    /// app (validated again when it is used).
    pub next: String,
    /// SHA-256 of the pre-login cookie that binds this login to one browser.
    pub browser_hash: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Connect flow: the logged-in user who started it (kept server-side, never in the URL).
    #[serde(default)]
    pub link_user_id: Option<String>,
    /// Which IdP configuration the login started under: a fingerprint of what it depends on
    /// (see `Idp::fingerprint`), the same in every replica that loaded the same entry.
    #[serde(default)]
    pub idp_fingerprint: String,
    /// The id of the key its nonce and PKCE verifier are derived with
    /// ([`crate::crypto::LoginSecrets`]).
    #[serde(default)]
    pub secret_key_id: String,
    /// Step-up: the `max_age` asked for; the ID token's `auth_time` must then be that recent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i64>,
    /// Step-up: the `acr_values` asked for; the ID token's `acr` must then be one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("idp", &self.idp)
            .field("issuer", &self.issuer)
            .field("next", &self.next)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Who holds a verified email address (the `emails` index). Only verified addresses are
/// indexed: an unverified one claims nothing (SECURITY F56, F58).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailOwner {
    pub user_id: String,
    /// Whether an IdP that config marks authoritative for the address's domain verified it;
    /// only such addresses may ever be auto-linked (SECURITY F57).
    pub authoritative: bool,
}

/// An API key of a user. The key itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id (shown in lists, used to delete).
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// One IdP identity of a user, stored under (idp, subject) and belonging to (issuer, subject):
/// a login from another issuer never matches it, even under the same entry name (SECURITY I73).
/// Email is never an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub idp: String,
    pub subject: String,
    /// The issuer of the entry when the identity was linked (or when a database from before
    /// issuers were recorded was migrated). `None`: unknown, matches no login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub user_id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Unix seconds.
    pub linked_at: i64,
    pub last_login_at: i64,
    /// The groups its IdP gave at its latest login, as the IdP names them; `None`: unknown
    /// (the IdP signalled an overage, or no login recorded them yet).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

/// A browser or API session. Stored under the SHA-256 of its cookie value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    /// The identity the session was started with.
    pub idp: String,
    pub subject: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// The IdP session id (`sid` claim), for back-channel logout.
    #[serde(default)]
    pub sid: Option<String>,
    /// The CSRF token that this session's state-changing form posts must carry.
    #[serde(default)]
    pub csrf: String,
    /// The ID token of this session's own login, sealed (base64url), for its RP-initiated
    /// logout: never another login's of the same identity (SECURITY I76).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// What the person signed in with, for their list of sessions: browser and system as the
    /// user agent named them (`Firefox on Linux`), never the raw header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Where from, approximately: the network of the address the login came from
    /// (`203.0.113.0/24`, `2001:db8:1::/48`), never the address itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Everything a successful callback writes, in one transaction.
#[derive(Clone, Serialize, Deserialize)]
pub struct CompletedLogin {
    pub idp: String,
    pub subject: String,
    /// The entry's configured issuer: an existing identity must belong to it.
    #[serde(default)]
    pub issuer: String,
    /// Issuers the entry had before a real move (`previous_issuers`): their identities match
    /// too, and take `issuer` from this login on.
    #[serde(default)]
    pub previous_issuers: Vec<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    /// The wanted username, already made safe; the store makes it unique.
    pub username: String,
    /// The IdP tokens, already encrypted.
    pub sealed_tokens: Vec<u8>,
    /// SHA-256 of the new session cookie.
    pub session_hash: String,
    /// Used only when the identity is new.
    pub new_user_id: String,
    pub now: i64,
    pub session_expires_at: i64,
    /// The IdP session id (`sid`), if the ID token had one.
    pub sid: Option<String>,
    /// The identity's groups from this login (see [`Identity::groups`]).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// The new session's CSRF token.
    pub csrf: String,
    /// The login's ID token, sealed for the new session (see [`Session::id_token`]).
    pub sealed_id_token: Option<String>,
    /// The new session's [`Session::device`] and [`Session::network`].
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    /// Whether an IdP authoritative for the email's domain verified it (see [`EmailOwner`]).
    pub email_authoritative: bool,
    /// How a new identity whose verified email belongs to another user is treated.
    pub on_email_match: EmailMatch,
    /// Connect flow: attach the identity to this (logged-in) user.
    pub link_to: Option<String>,
    /// Create no user: fail with [`StoreError::NeedsConfirmation`] when the identity is new.
    pub require_existing: bool,
}

/// What to do when a new identity's email is held by an existing user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailMatch {
    /// Refuse (409): the person must log in to that account and connect this IdP.
    Refuse,
    /// Link to that account, if both sides are authoritative and verified; refuse otherwise.
    LinkIfAuthoritative,
}

/// What a completed login did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    pub user: User,
    /// Whether the user was created by this login.
    pub created: bool,
    /// Whether the identity was newly linked to an existing user.
    pub linked: bool,
    /// The sealed tokens this login replaced, if they differed (to revoke what they hold).
    pub replaced_tokens: Option<Vec<u8>>,
}

/// What removing an identity did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Removed, with the sealed tokens it had (to revoke them).
    Removed(Option<Vec<u8>>),
    /// The user has no such identity.
    NotFound,
    /// It is the user's last way to log in.
    LastIdentity,
}

/// Sign-ins in progress: single use, expiring.
#[async_trait]
pub trait PendingLogins {
    /// Saves a pending login under its `state`.
    async fn put_pending_login(&self, state: &str, login: &PendingLogin) -> StoreResult<()>;

    /// Removes and returns the pending login of `state`: a second call returns `None`, also
    /// through another store object on the same database.
    async fn take_pending_login(&self, state: &str) -> StoreResult<Option<PendingLogin>>;

    /// Removes pending logins created before `created_before`; returns how many.
    async fn sweep_pending_logins(&self, created_before: i64) -> StoreResult<usize>;
}

/// Users, their identities and the sealed IdP tokens of each identity.
#[async_trait]
pub trait Identities {
    /// Finds or creates the user of (idp, subject), updates the identity, stores the sealed
    /// tokens and starts the session: all or nothing. Concurrent calls for the same new
    /// identity create exactly one user, also through several store objects.
    async fn complete_login(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome>;

    /// [`Identities::complete_login`], durable when it returns (as after [`Upkeep::sync`]). A
    /// backend may write concurrent logins in one transaction and flush; each login still
    /// stands or falls on its own.
    async fn complete_login_durable(&self, login: CompletedLogin) -> StoreResult<LoginOutcome>;

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>>;

    async fn identity(&self, idp: &str, subject: &str) -> StoreResult<Option<Identity>>;

    /// Who holds a verified address in the email index (the address as
    /// [`normalize_email`] keys it).
    async fn email_owner(&self, email: &str) -> StoreResult<Option<EmailOwner>>;

    /// The identities of a user, ordered by (idp, subject).
    async fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>>;

    /// The sealed tokens of an identity.
    async fn sealed_tokens(&self, idp: &str, subject: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Removes an identity of `user_id` and its tokens, unless it is the user's last one, and
    /// ends the sessions that were started with it, except `keep_session` (the caller's).
    async fn remove_identity(
        &self,
        user_id: &str,
        idp: &str,
        subject: &str,
        keep_session: Option<&str>,
    ) -> StoreResult<RemoveOutcome>;

    /// Replaces an identity's sealed tokens if they are still `expected` (compare-and-swap):
    /// returns whether it replaced them.
    async fn replace_tokens(
        &self,
        idp: &str,
        subject: &str,
        expected: &[u8],
        new: &[u8],
    ) -> StoreResult<bool>;

    /// Removes an identity's sealed tokens.
    async fn delete_tokens(&self, idp: &str, subject: &str) -> StoreResult<()>;

    /// Removes a user and everything of theirs (identities, tokens, sessions, API keys, email
    /// index) in one transaction.
    async fn delete_user(&self, user_id: &str) -> StoreResult<bool>;

    /// Gives identities from before issuers were recorded the issuer of their entry, from
    /// `issuers` (entry name to issuer). Those of entries not configured now wait for the start
    /// or reload that configures them. Returns how many were given one.
    async fn migrate_issuers(&self, issuers: &BTreeMap<String, String>) -> StoreResult<usize>;
}

/// Browser and API sessions.
#[async_trait]
pub trait Sessions {
    async fn session(&self, session_hash: &str) -> StoreResult<Option<Session>>;

    /// Ends a session; returns whether it existed.
    async fn delete_session(&self, session_hash: &str) -> StoreResult<bool>;

    /// A user's sessions with their hashes, expired ones too (the callers check `expires_at`).
    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(String, Session)>>;

    /// Removes sessions that expired before `now`; returns how many.
    async fn sweep_expired(&self, now: i64) -> StoreResult<usize>;

    /// Makes a session count as started with another identity of its user (after the one it
    /// was started with is disconnected); returns whether the session exists.
    async fn repoint_session(
        &self,
        session_hash: &str,
        idp: &str,
        subject: &str,
    ) -> StoreResult<bool>;

    /// Ends every session of an identity (all of them, or those with IdP session `sid`);
    /// returns how many.
    async fn end_identity_sessions(
        &self,
        idp: &str,
        subject: Option<&str>,
        sid: Option<&str>,
    ) -> StoreResult<usize>;

    /// Whether a session other than `except` is alive for an identity.
    async fn identity_has_other_sessions(
        &self,
        idp: &str,
        subject: &str,
        except: &str,
        now: i64,
    ) -> StoreResult<bool>;
}

/// API keys, stored under the SHA-256 of their secret.
#[async_trait]
pub trait ApiKeys {
    /// Saves an API key under the SHA-256 of its secret.
    async fn put_api_key(&self, key_hash: &str, key: &ApiKey) -> StoreResult<()>;

    /// The API key of a secret's hash.
    async fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;

    /// A user's API keys.
    async fn api_keys_of(&self, user_id: &str) -> StoreResult<Vec<ApiKey>>;

    /// Deletes a user's API key by its public id; returns whether it existed.
    async fn delete_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool>;
}

/// First logins waiting for the person's confirmation, opaque to the store.
#[async_trait]
pub trait Signups {
    /// Saves a pending sign-up until `expires_at` (Unix seconds).
    async fn put_signup(&self, id: &str, expires_at: i64, record: &[u8]) -> StoreResult<()>;

    /// Removes pending sign-ups that expired before `now` (they hold sealed IdP tokens);
    /// returns how many.
    async fn sweep_signups(&self, now: i64) -> StoreResult<usize>;

    /// Removes and returns a pending sign-up.
    async fn take_signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Reads a pending sign-up without consuming it.
    async fn signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>>;
}

/// What the server needs of the store itself: durability, health, the key canary.
#[async_trait]
pub trait Upkeep {
    /// Which backend this is, for `/readyz` and the status API (`sled`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Makes every write so far durable: called before answering a client about a write it
    /// must not lose (a completed login, a deletion).
    async fn sync(&self) -> StoreResult<()>;

    /// Every record, by collection name: for tests that assert nothing changed, and backups.
    async fn dump(&self) -> StoreResult<Dump>;

    /// Writes a small record and makes it durable: whether the store can take writes now
    /// (the server probes it, so that `/readyz` tells a full disk or a database gone away).
    async fn probe(&self) -> StoreResult<()>;

    /// The key canary: a small record sealed with the vault's key at the first start, by which
    /// a server started with another key notices. `None` before the first start.
    async fn key_canary(&self) -> StoreResult<Option<Vec<u8>>>;

    /// Stores the key canary, durably.
    async fn put_key_canary(&self, sealed: &[u8]) -> StoreResult<()>;
}

/// The storage of authnz: every role, each operation atomic. The flows hold an
/// `Arc<dyn Store>`; a backend implements the role traits.
pub trait Store:
    PendingLogins + Identities + Sessions + ApiKeys + Signups + Upkeep + Send + Sync + 'static
{
}

impl<T> Store for T where
    T: PendingLogins + Identities + Sessions + ApiKeys + Signups + Upkeep + Send + Sync + 'static
{
}

/// Whether `identity` belongs to an entry whose issuer is `issuer` (and was `previous` before a
/// real move): logins, bearer tokens and logout tokens all ask this, every backend applies it.
pub fn identity_belongs_to(identity: &Identity, issuer: &str, previous: &[String]) -> bool {
    identity
        .issuer
        .as_deref()
        .is_some_and(|recorded| recorded == issuer || previous.iter().any(|old| old == recorded))
}

/// The lowercase form of an email address, as the index keys it.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// Decodes a record.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// `idp \0 subject`: the key of an identity. Neither part may contain NUL (subjects are
/// validated before they get here).
pub(crate) fn identity_key(idp: &str, subject: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(idp.len() + subject.len() + 1);
    key.extend_from_slice(idp.as_bytes());
    key.push(0);
    key.extend_from_slice(subject.as_bytes());
    key
}

/// Candidate usernames for a wanted one: `name`, `name2`, ... `name999`, then `name-` and eight
/// random characters: 999 look-alike accounts cannot lock the real person out of a first login.
pub(crate) fn username_candidates(wanted: &str) -> impl Iterator<Item = String> + '_ {
    use rand::Rng;
    std::iter::once(wanted.to_string())
        .chain((2..1000).map(move |n| format!("{wanted}{n}")))
        .chain((0..8).map(move |_| {
            const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let mut rng = rand::thread_rng();
            let suffix: String = (0..8)
                .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
                .collect();
            format!("{wanted}-{suffix}")
        }))
}

/// The identity key, as the token vault binds ciphertexts to it.
pub fn identity_key_public(idp: &str, subject: &str) -> Vec<u8> {
    identity_key(idp, subject)
}

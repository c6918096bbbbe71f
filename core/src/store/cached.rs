//! A read cache in front of an embedded backend: the records every signed-in request reads
//! (its session, the user, the user's identities, who holds their addresses) stay in
//! memory, so that `/api/users/me` and the forward-auth check answer without a database read.
//!
//! Only for a store no other process writes (sled locks its directory): every write passes
//! through here and forgets what it may have changed before it returns, so the request after a
//! logout, a deletion or a disconnect reads the store again. With PostgreSQL another replica
//! writes behind this process's back, so there it is not used. Expiry needs no forgetting: the
//! callers check `expires_at` on every read, cached or not.
//!
//! A read that started before a write forgets anything does not fill the cache (an epoch,
//! bumped by every forgetting, under the same lock as the fill), so a value read just before a
//! write can never be served after it. Token records are never cached.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    normalize_email, ApiKey, ApiKeys, CompletedLogin, Dump, EmailOwner, Identities, Identity,
    LoginOutcome, PendingLogin, PendingLogins, RemoveOutcome, Session, Sessions, Signups, Store,
    StoreResult, Upkeep, User,
};

/// How many records of each kind are kept; past it, that kind is dropped at once and fills
/// again from the requests that follow (bounded memory, no bookkeeping per read).
pub const CACHED_RECORDS: usize = 4096;

/// `inner`, with its hot reads answered from memory.
pub struct Cached<S> {
    inner: S,
    views: Mutex<Views>,
}

#[derive(Default)]
struct Views {
    /// Bumped by every forgetting: a read that saw another epoch does not fill.
    epoch: u64,
    sessions: HashMap<String, Session>,
    users: HashMap<String, User>,
    identities: HashMap<String, Vec<Identity>>,
    /// `None`: nobody holds the address (an address gains an owner only by a login naming it).
    emails: HashMap<String, Option<EmailOwner>>,
    /// The cached sessions and addresses of each user, to forget them with the user.
    sessions_of: HashMap<String, Vec<String>>,
    emails_of: HashMap<String, Vec<String>>,
}

impl Views {
    fn forget_user(&mut self, user_id: &str) {
        self.epoch += 1;
        self.users.remove(user_id);
        self.identities.remove(user_id);
        for hash in self.sessions_of.remove(user_id).unwrap_or_default() {
            self.sessions.remove(&hash);
        }
        for address in self.emails_of.remove(user_id).unwrap_or_default() {
            self.emails.remove(&address);
        }
    }

    fn forget_session(&mut self, hash: &str) {
        self.epoch += 1;
        if let Some(session) = self.sessions.remove(hash) {
            if let Some(hashes) = self.sessions_of.get_mut(&session.user_id) {
                hashes.retain(|h| h != hash);
            }
        }
    }

    fn forget_email(&mut self, address: &str) {
        self.epoch += 1;
        if let Some(Some(owner)) = self.emails.remove(address) {
            if let Some(addresses) = self.emails_of.get_mut(&owner.user_id) {
                addresses.retain(|a| a != address);
            }
        }
    }

    fn forget_all(&mut self) {
        let epoch = self.epoch + 1;
        *self = Views {
            epoch,
            ..Views::default()
        };
    }
}

/// Inserts into a bounded map: a full one is emptied first.
fn bounded_insert<T>(map: &mut HashMap<String, T>, key: &str, value: T) -> bool {
    let full = map.len() >= CACHED_RECORDS;
    if full {
        map.clear();
    }
    map.insert(key.to_string(), value);
    full
}

impl<S: Store> Cached<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            views: Mutex::default(),
        }
    }

    fn views(&self) -> MutexGuard<'_, Views> {
        self.views
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The epoch a read starts in, or the cached value.
    fn lookup<T: Clone>(&self, pick: impl Fn(&Views) -> Option<&T>) -> Result<T, u64> {
        let views = self.views();
        pick(&views).cloned().ok_or(views.epoch)
    }

    /// Fills the cache with what a read that started in `epoch` found, unless something was
    /// forgotten since.
    fn fill(&self, epoch: u64, put: impl FnOnce(&mut Views)) {
        let mut views = self.views();
        if views.epoch == epoch {
            put(&mut views);
        }
    }

    /// Forgets the user a login completed for (and the one it linked to) and its address.
    fn after_login(
        &self,
        link_to: Option<&str>,
        email: Option<&str>,
        outcome: &StoreResult<LoginOutcome>,
    ) {
        let mut views = self.views();
        match outcome {
            Ok(outcome) => {
                views.forget_user(&outcome.user.id);
                if let Some(target) = link_to {
                    views.forget_user(target);
                }
                // The login's address may have gained its owner (or, should a rule ever
                // move one, another).
                if let Some(email) = email {
                    views.forget_email(&normalize_email(email));
                }
            }
            // Nothing was written; forgetting everything costs a refill, never a stale answer.
            Err(_) => views.forget_all(),
        }
    }
}

#[async_trait]
impl<S: Store> PendingLogins for Cached<S> {
    async fn put_pending_login(&self, state: &str, login: &PendingLogin) -> StoreResult<()> {
        self.inner.put_pending_login(state, login).await
    }

    async fn take_pending_login(&self, state: &str) -> StoreResult<Option<PendingLogin>> {
        self.inner.take_pending_login(state).await
    }

    async fn sweep_pending_logins(&self, created_before: i64) -> StoreResult<usize> {
        self.inner.sweep_pending_logins(created_before).await
    }
}

#[async_trait]
impl<S: Store> Identities for Cached<S> {
    async fn complete_login(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        let outcome = self.inner.complete_login(login).await;
        self.after_login(login.link_to.as_deref(), login.email.as_deref(), &outcome);
        outcome
    }

    async fn complete_login_durable(&self, login: CompletedLogin) -> StoreResult<LoginOutcome> {
        let (link_to, email) = (login.link_to.clone(), login.email.clone());
        let outcome = self.inner.complete_login_durable(login).await;
        self.after_login(link_to.as_deref(), email.as_deref(), &outcome);
        outcome
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        let epoch = match self.lookup(|views| views.users.get(user_id)) {
            Ok(user) => return Ok(Some(user)),
            Err(epoch) => epoch,
        };
        let user = self.inner.user(user_id).await?;
        if let Some(user) = &user {
            self.fill(epoch, |views| {
                bounded_insert(&mut views.users, user_id, user.clone());
            });
        }
        Ok(user)
    }

    async fn identity(&self, idp: &str, subject: &str) -> StoreResult<Option<Identity>> {
        self.inner.identity(idp, subject).await
    }

    async fn email_owner(&self, email: &str) -> StoreResult<Option<EmailOwner>> {
        let epoch = match self.lookup(|views| views.emails.get(email)) {
            Ok(owner) => return Ok(owner),
            Err(epoch) => epoch,
        };
        let owner = self.inner.email_owner(email).await?;
        self.fill(epoch, |views| {
            if bounded_insert(&mut views.emails, email, owner.clone()) {
                views.emails_of.clear();
            }
            if let Some(owner) = &owner {
                views
                    .emails_of
                    .entry(owner.user_id.clone())
                    .or_default()
                    .push(email.to_string());
            }
        });
        Ok(owner)
    }

    async fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
        let epoch = match self.lookup(|views| views.identities.get(user_id)) {
            Ok(identities) => return Ok(identities),
            Err(epoch) => epoch,
        };
        let identities = self.inner.identities_of(user_id).await?;
        self.fill(epoch, |views| {
            bounded_insert(&mut views.identities, user_id, identities.clone());
        });
        Ok(identities)
    }

    async fn sealed_tokens(&self, idp: &str, subject: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.sealed_tokens(idp, subject).await
    }

    async fn remove_identity(
        &self,
        user_id: &str,
        idp: &str,
        subject: &str,
        keep_session: Option<&str>,
    ) -> StoreResult<RemoveOutcome> {
        let outcome = self
            .inner
            .remove_identity(user_id, idp, subject, keep_session)
            .await;
        // The identity's sessions are the user's: forgotten with the user.
        self.views().forget_user(user_id);
        outcome
    }

    async fn replace_tokens(
        &self,
        idp: &str,
        subject: &str,
        expected: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        self.inner.replace_tokens(idp, subject, expected, new).await
    }

    async fn delete_tokens(&self, idp: &str, subject: &str) -> StoreResult<()> {
        self.inner.delete_tokens(idp, subject).await
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        let deleted = self.inner.delete_user(user_id).await;
        self.views().forget_user(user_id);
        deleted
    }

    async fn migrate_issuers(&self, issuers: &BTreeMap<String, String>) -> StoreResult<usize> {
        let migrated = self.inner.migrate_issuers(issuers).await;
        self.views().forget_all();
        migrated
    }
}

#[async_trait]
impl<S: Store> Sessions for Cached<S> {
    async fn session(&self, session_hash: &str) -> StoreResult<Option<Session>> {
        let epoch = match self.lookup(|views| views.sessions.get(session_hash)) {
            Ok(session) => return Ok(Some(session)),
            Err(epoch) => epoch,
        };
        let session = self.inner.session(session_hash).await?;
        if let Some(session) = &session {
            self.fill(epoch, |views| {
                if bounded_insert(&mut views.sessions, session_hash, session.clone()) {
                    views.sessions_of.clear();
                }
                views
                    .sessions_of
                    .entry(session.user_id.clone())
                    .or_default()
                    .push(session_hash.to_string());
            });
        }
        Ok(session)
    }

    async fn delete_session(&self, session_hash: &str) -> StoreResult<bool> {
        let deleted = self.inner.delete_session(session_hash).await;
        self.views().forget_session(session_hash);
        deleted
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(String, Session)>> {
        self.inner.sessions_of(user_id).await
    }

    async fn sweep_expired(&self, now: i64) -> StoreResult<usize> {
        let swept = self.inner.sweep_expired(now).await;
        if !matches!(swept, Ok(0)) {
            self.views().forget_all();
        }
        swept
    }

    async fn repoint_session(
        &self,
        session_hash: &str,
        idp: &str,
        subject: &str,
    ) -> StoreResult<bool> {
        let repointed = self.inner.repoint_session(session_hash, idp, subject).await;
        self.views().forget_session(session_hash);
        repointed
    }

    async fn end_identity_sessions(
        &self,
        idp: &str,
        subject: Option<&str>,
        sid: Option<&str>,
    ) -> StoreResult<usize> {
        let ended = self.inner.end_identity_sessions(idp, subject, sid).await;
        // Which sessions ended is the backend's to know (a back-channel logout by `sid`).
        self.views().forget_all();
        ended
    }

    async fn identity_has_other_sessions(
        &self,
        idp: &str,
        subject: &str,
        except: &str,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner
            .identity_has_other_sessions(idp, subject, except, now)
            .await
    }
}

#[async_trait]
impl<S: Store> ApiKeys for Cached<S> {
    async fn put_api_key(&self, key_hash: &str, key: &ApiKey) -> StoreResult<()> {
        self.inner.put_api_key(key_hash, key).await
    }

    async fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        self.inner.api_key(key_hash).await
    }

    async fn api_keys_of(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.inner.api_keys_of(user_id).await
    }

    async fn delete_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool> {
        self.inner.delete_api_key(user_id, key_id).await
    }
}

#[async_trait]
impl<S: Store> Signups for Cached<S> {
    async fn put_signup(&self, id: &str, expires_at: i64, record: &[u8]) -> StoreResult<()> {
        self.inner.put_signup(id, expires_at, record).await
    }

    async fn sweep_signups(&self, now: i64) -> StoreResult<usize> {
        self.inner.sweep_signups(now).await
    }

    async fn take_signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.take_signup(id).await
    }

    async fn signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.signup(id).await
    }
}

#[async_trait]
impl<S: Store> Upkeep for Cached<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn sync(&self) -> StoreResult<()> {
        self.inner.sync().await
    }

    async fn dump(&self) -> StoreResult<Dump> {
        self.inner.dump().await
    }

    async fn probe(&self) -> StoreResult<()> {
        self.inner.probe().await
    }

    async fn key_canary(&self) -> StoreResult<Option<Vec<u8>>> {
        self.inner.key_canary().await
    }

    async fn put_key_canary(&self, sealed: &[u8]) -> StoreResult<()> {
        self.inner.put_key_canary(sealed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{run_all, sample_login, Backend, Fresh};
    use crate::store::SledStore;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    struct CachedSled;

    #[async_trait]
    impl Backend for CachedSled {
        async fn fresh(&self) -> Result<Fresh, Box<dyn std::error::Error + Send + Sync>> {
            let dir = tempfile::tempdir()?;
            let store: std::sync::Arc<dyn Store> =
                std::sync::Arc::new(Cached::new(SledStore::open(dir.path(), 8 << 20)?));
            Ok(Fresh {
                other: std::sync::Arc::clone(&store),
                store,
                guard: Box::new(dir),
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn cached_sled_passes_the_conformance_suite() -> TestResult {
        run_all(&CachedSled).await
    }

    /// Everything the cache may hold, read through it and from the backend: equal after every
    /// write, although each write found the cache warm.
    async fn same_as_backend(cached: &Cached<SledStore>, step: &str) -> TestResult {
        let inner = &cached.inner;
        for hash in ["x1", "x2", "x3", "x4", "x5"] {
            if cached.session(hash).await? != Sessions::session(inner, hash).await? {
                return Err(format!("after {step}: session {hash} is stale").into());
            }
        }
        for user in ["u1", "u2", "u3"] {
            if cached.user(user).await? != Identities::user(inner, user).await? {
                return Err(format!("after {step}: user {user} is stale").into());
            }
            if cached.identities_of(user).await? != Identities::identities_of(inner, user).await? {
                return Err(format!("after {step}: identities of {user} are stale").into());
            }
        }
        for address in [
            "s1.a@example.test",
            "s2.b@example.test",
            "s3.c@example.test",
            "new@example.test",
        ] {
            if cached.email_owner(address).await? != Identities::email_owner(inner, address).await?
            {
                return Err(format!("after {step}: the owner of {address} is stale").into());
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn no_write_leaves_a_stale_record_behind() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Cached::new(SledStore::open(dir.path(), 8 << 20)?);
        same_as_backend(&store, "nothing").await?;
        store
            .complete_login(&sample_login("a", "s1", "u1", "x1"))
            .await?;
        same_as_backend(&store, "a first login").await?;
        let mut linked = sample_login("b", "s2", "", "x2");
        linked.link_to = Some("u1".into());
        store.complete_login_durable(linked).await?;
        same_as_backend(&store, "a connect").await?;
        let mut again = sample_login("a", "s1", "", "x4");
        again.groups = Some(vec!["admins".into()]);
        again.email = Some("new@example.test".into());
        again.display_name = Some("Alice".into());
        store.complete_login(&again).await?;
        same_as_backend(&store, "a login with new groups and address").await?;
        store
            .complete_login(&sample_login("c", "s3", "u2", "x3"))
            .await?;
        same_as_backend(&store, "another user").await?;
        store.delete_session("x1").await?;
        same_as_backend(&store, "a logout").await?;
        store.repoint_session("x2", "a", "s1").await?;
        same_as_backend(&store, "a repointed session").await?;
        store.remove_identity("u1", "b", "s2", None).await?;
        same_as_backend(&store, "a disconnect").await?;
        store.end_identity_sessions("c", None, None).await?;
        same_as_backend(&store, "a back-channel logout").await?;
        let mut refused = sample_login("d", "s9", "u3", "x5");
        refused.email = Some("s3.c@example.test".into());
        assert!(store.complete_login(&refused).await.is_err());
        same_as_backend(&store, "a refused login").await?;
        store.delete_user("u1").await?;
        same_as_backend(&store, "an account deletion").await?;
        store.complete_login(&refused).await.ok();
        store.migrate_issuers(&BTreeMap::new()).await?;
        same_as_backend(&store, "an issuer migration").await?;
        let mut short = sample_login("e", "s5", "u3", "x5");
        short.session_expires_at = 1_200;
        store.complete_login(&short).await?;
        store.session("x5").await?;
        store.sweep_expired(1_500).await?;
        same_as_backend(&store, "a sweep").await
    }

    #[test]
    fn a_read_from_before_a_write_does_not_fill() -> TestResult {
        let dir = tempfile::tempdir()?;
        let store = Cached::new(SledStore::open(dir.path(), 8 << 20)?);
        let session = sample_session();
        // A read starts (cache miss), a logout forgets the session, then the read returns.
        let Err(epoch) = store.lookup(|views| views.sessions.get("x1")) else {
            return Err("nothing cached yet".into());
        };
        store.views().forget_session("x1");
        store.fill(epoch, |views| {
            views.sessions.insert("x1".into(), session.clone());
        });
        assert!(
            store.views().sessions.is_empty(),
            "a stale read filled the cache"
        );
        // Without a write in between it fills.
        let Err(epoch) = store.lookup(|views| views.sessions.get("x1")) else {
            return Err("nothing cached yet".into());
        };
        store.fill(epoch, |views| {
            views.sessions.insert("x1".into(), session);
        });
        assert_eq!(store.views().sessions.len(), 1);
        Ok(())
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut map = HashMap::new();
        for i in 0..CACHED_RECORDS * 3 {
            bounded_insert(&mut map, &i.to_string(), i);
            assert!(map.len() <= CACHED_RECORDS);
        }
    }

    fn sample_session() -> Session {
        Session {
            user_id: "u1".into(),
            idp: "a".into(),
            subject: "s1".into(),
            created_at: 0,
            expires_at: i64::MAX,
            sid: None,
            csrf: String::new(),
            id_token: None,
            device: None,
            network: None,
        }
    }
}

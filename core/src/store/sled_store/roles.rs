//! The role traits of the store, answered by [`SledStore`]'s synchronous operations.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::SledStore;
use crate::store::{
    ApiKey, ApiKeys, CompletedLogin, Dump, EmailOwner, Identities, Identity, LoginOutcome,
    PendingLogin, PendingLogins, RemoveOutcome, Session, Sessions, Signups, StoreResult, Upkeep,
    User,
};

#[async_trait]
impl PendingLogins for SledStore {
    async fn put_pending_login(&self, state: &str, login: &PendingLogin) -> StoreResult<()> {
        SledStore::put_pending_login(self, state, login)
    }

    async fn take_pending_login(&self, state: &str) -> StoreResult<Option<PendingLogin>> {
        SledStore::take_pending_login(self, state)
    }

    async fn sweep_pending_logins(&self, created_before: i64) -> StoreResult<usize> {
        SledStore::sweep_pending_logins(self, created_before)
    }
}

#[async_trait]
impl Identities for SledStore {
    async fn complete_login(&self, login: &CompletedLogin) -> StoreResult<LoginOutcome> {
        SledStore::complete_login(self, login)
    }

    async fn complete_login_durable(&self, login: CompletedLogin) -> StoreResult<LoginOutcome> {
        SledStore::complete_login_durable(self, login).await
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        SledStore::user(self, user_id)
    }

    async fn identity(&self, idp: &str, subject: &str) -> StoreResult<Option<Identity>> {
        SledStore::identity(self, idp, subject)
    }

    async fn email_owner(&self, email: &str) -> StoreResult<Option<EmailOwner>> {
        SledStore::email_owner(self, email)
    }

    async fn identities_of(&self, user_id: &str) -> StoreResult<Vec<Identity>> {
        SledStore::identities_of(self, user_id)
    }

    async fn sealed_tokens(&self, idp: &str, subject: &str) -> StoreResult<Option<Vec<u8>>> {
        SledStore::sealed_tokens(self, idp, subject)
    }

    async fn remove_identity(
        &self,
        user_id: &str,
        idp: &str,
        subject: &str,
        keep_session: Option<&str>,
    ) -> StoreResult<RemoveOutcome> {
        SledStore::remove_identity(self, user_id, idp, subject, keep_session)
    }

    async fn replace_tokens(
        &self,
        idp: &str,
        subject: &str,
        expected: &[u8],
        new: &[u8],
    ) -> StoreResult<bool> {
        SledStore::replace_tokens(self, idp, subject, expected, new)
    }

    async fn delete_tokens(&self, idp: &str, subject: &str) -> StoreResult<()> {
        SledStore::delete_tokens(self, idp, subject)
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        SledStore::delete_user(self, user_id)
    }

    async fn migrate_issuers(&self, issuers: &BTreeMap<String, String>) -> StoreResult<usize> {
        SledStore::migrate_issuers(self, issuers)
    }
}

#[async_trait]
impl Sessions for SledStore {
    async fn session(&self, session_hash: &str) -> StoreResult<Option<Session>> {
        SledStore::session(self, session_hash)
    }

    async fn delete_session(&self, session_hash: &str) -> StoreResult<bool> {
        SledStore::delete_session(self, session_hash)
    }

    async fn sessions_of(&self, user_id: &str) -> StoreResult<Vec<(String, Session)>> {
        SledStore::sessions_of(self, user_id)
    }

    async fn sweep_expired(&self, now: i64) -> StoreResult<usize> {
        SledStore::sweep_expired(self, now)
    }

    async fn repoint_session(
        &self,
        session_hash: &str,
        idp: &str,
        subject: &str,
    ) -> StoreResult<bool> {
        SledStore::repoint_session(self, session_hash, idp, subject)
    }

    async fn end_identity_sessions(
        &self,
        idp: &str,
        subject: Option<&str>,
        sid: Option<&str>,
    ) -> StoreResult<usize> {
        SledStore::end_identity_sessions(self, idp, subject, sid)
    }

    async fn identity_has_other_sessions(
        &self,
        idp: &str,
        subject: &str,
        except: &str,
        now: i64,
    ) -> StoreResult<bool> {
        SledStore::identity_has_other_sessions(self, idp, subject, except, now)
    }
}

#[async_trait]
impl ApiKeys for SledStore {
    async fn put_api_key(&self, key_hash: &str, key: &ApiKey) -> StoreResult<()> {
        SledStore::put_api_key(self, key_hash, key)
    }

    async fn api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        SledStore::api_key(self, key_hash)
    }

    async fn api_keys_of(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        SledStore::api_keys_of(self, user_id)
    }

    async fn delete_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool> {
        SledStore::delete_api_key(self, user_id, key_id)
    }
}

#[async_trait]
impl Signups for SledStore {
    async fn put_signup(&self, id: &str, expires_at: i64, record: &[u8]) -> StoreResult<()> {
        SledStore::put_signup(self, id, expires_at, record)
    }

    async fn sweep_signups(&self, now: i64) -> StoreResult<usize> {
        SledStore::sweep_signups(self, now)
    }

    async fn take_signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        SledStore::take_signup(self, id)
    }

    async fn signup(&self, id: &str) -> StoreResult<Option<Vec<u8>>> {
        SledStore::signup(self, id)
    }
}

#[async_trait]
impl Upkeep for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn sync(&self) -> StoreResult<()> {
        SledStore::sync(self).await
    }

    async fn dump(&self) -> StoreResult<Dump> {
        SledStore::dump(self)
    }

    async fn probe(&self) -> StoreResult<()> {
        SledStore::probe(self)
    }

    async fn key_canary(&self) -> StoreResult<Option<Vec<u8>>> {
        SledStore::key_canary(self)
    }

    async fn put_key_canary(&self, sealed: &[u8]) -> StoreResult<()> {
        SledStore::put_key_canary(self, sealed)
    }
}

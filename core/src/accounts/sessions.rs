//! A person's sessions: listing them under public ids, and ending one (here, from another
//! browser, or at logout) with what goes with it.

use crate::crypto::sha256_hex;
use crate::store::{Session, StoreError};

use super::Accounts;

/// A session as its owner sees it: a public id (never the cookie, nor the hash the store keys
/// it by), the hash, and the record.
pub struct Listed {
    pub id: String,
    pub hash: String,
    pub session: Session,
}

/// The public id of a session: derived from its hash, so it names the session without being a
/// way to look it up or to present it.
pub fn session_id(hash: &str) -> String {
    sha256_hex(&format!("authnz session id\0{hash}"))[..32].to_string()
}

impl Accounts<'_> {
    /// The user's live sessions, newest first.
    pub async fn sessions(&self, user_id: &str, now: i64) -> Result<Vec<Listed>, StoreError> {
        let mut listed: Vec<Listed> = self
            .store
            .sessions_of(user_id)
            .await?
            .into_iter()
            .filter(|(_, session)| session.expires_at > now && session.user_id == user_id)
            .map(|(hash, session)| Listed {
                id: session_id(&hash),
                hash,
                session,
            })
            .collect();
        listed.sort_by(|a, b| (b.session.created_at, &b.id).cmp(&(a.session.created_at, &a.id)));
        Ok(listed)
    }

    /// Ends a session. The identity's stored tokens go with the last session that used them
    /// (SECURITY G64). Returns whether the session existed.
    pub async fn end_session(
        &self,
        hash: &str,
        session: &Session,
        now: i64,
    ) -> Result<bool, StoreError> {
        if !self
            .store
            .identity_has_other_sessions(&session.idp, &session.subject, hash, now)
            .await?
        {
            self.store
                .delete_tokens(&session.idp, &session.subject)
                .await?;
        }
        self.store.delete_session(hash).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_id_is_neither_the_hash_nor_reversible_to_it() {
        let hash = sha256_hex("cookie");
        let id = session_id(&hash);
        assert_eq!(id.len(), 32);
        assert!(!hash.contains(&id));
        assert_eq!(id, session_id(&hash), "stable");
        assert_ne!(id, session_id(&sha256_hex("other cookie")));
    }
}

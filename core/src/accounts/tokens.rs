//! The IdP tokens kept for an identity (sealed in the vault), and a session's own ID token.

use super::Error;
use crate::protocol::{Idp, IdpTokens};
use crate::store::identity_key_public;

use super::Accounts;

/// What a session's sealed ID token is bound to: its identity, apart from the tokens' own.
pub fn id_token_context(idp: &str, subject: &str) -> Vec<u8> {
    let mut context = b"id_token\0".to_vec();
    context.extend_from_slice(&identity_key_public(idp, subject));
    context
}

impl Accounts<'_> {
    /// The ID token of a session's own login, if it kept one.
    pub fn session_id_token(&self, session: &crate::store::Session) -> Option<String> {
        use base64::Engine;
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(session.id_token.as_deref()?)
            .ok()?;
        let plain = self
            .vault
            .open(&id_token_context(&session.idp, &session.subject), &sealed)
            .ok()?;
        String::from_utf8(plain).ok()
    }

    /// A later login replaced an identity's tokens: the refresh (and access) token it held is
    /// revoked at the IdP in the background, so that no grant outlives what authnz keeps and a
    /// disconnect or deletion leaves none alive (SECURITY I77).
    pub(super) fn revoke_replaced(
        &self,
        idp: &std::sync::Arc<Idp>,
        subject: &str,
        replaced: &[u8],
        new: &crate::protocol::IdpTokens,
    ) {
        let Some(old) = self
            .vault
            .open(&identity_key_public(&idp.config.name, subject), replaced)
            .ok()
            .and_then(|plain| serde_json::from_slice::<crate::protocol::IdpTokens>(&plain).ok())
        else {
            return;
        };
        let stale = crate::protocol::IdpTokens {
            refresh_token: old
                .refresh_token
                .filter(|token| new.refresh_token.as_ref() != Some(token)),
            access_token: if old.access_token == new.access_token {
                String::new()
            } else {
                old.access_token
            },
            id_token: String::new(),
            expires_at: None,
            scope: None,
            token_type: old.token_type,
            dpop_key: old.dpop_key,
        };
        if stale.refresh_token.is_none() && stale.access_token.is_empty() {
            return;
        }
        let idp = std::sync::Arc::clone(idp);
        tokio::spawn(async move {
            if let Err(err) = idp.revoke(&stale).await {
                tracing::warn!(idp = %idp.config.name, error = %err, "revoking the tokens a login replaced failed");
            }
        });
    }

    /// The sealed tokens of an identity, opened.
    pub async fn open_tokens(
        &self,
        idp: &str,
        subject: &str,
    ) -> Result<Option<(Vec<u8>, IdpTokens)>, Error> {
        let Some(sealed) = self.store.sealed_tokens(idp, subject).await? else {
            return Ok(None);
        };
        let plain = self
            .vault
            .open(&identity_key_public(idp, subject), &sealed)
            .map_err(|_| {
                Error::Internal("stored tokens do not open with the current key".into())
            })?;
        let tokens = serde_json::from_slice(&plain)
            .map_err(|_| Error::Internal("stored tokens are unreadable".into()))?;
        Ok(Some((sealed, tokens)))
    }
}

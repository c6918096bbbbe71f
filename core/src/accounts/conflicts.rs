//! A first sign-in refused because its email address belongs to an account, and the way on.
//!
//! Where the IdP entry lets a person connect an address's account by hand (`link_existing`
//! other than `never`), the refusal is kept as an intent, for as long as a sign-in may take:
//! the IdP to connect, the account that holds the address, and the browser that tried, under
//! an opaque id. The person signs in to that account the way they did before and is then
//! offered the ordinary connect flow for the IdP (a fresh login there, its form with the
//! session's CSRF token). The intent grants nothing itself: it shows that offer, in the same
//! browser, to that account alone.

use serde::{Deserialize, Serialize};

use super::{Accounts, Error};
use crate::crypto::random_token;
use crate::store::normalize_email;

/// What an intent record says it is, so that a parked sign-up (kept beside it) never reads as
/// one, nor one as a sign-up.
const CONNECT: &str = "connect";

/// A refused first sign-in, kept so that its IdP can be connected to the address's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectIntent {
    /// Always `connect`.
    intent: String,
    /// The IdP entry to connect.
    pub idp: String,
    /// The account that holds the address.
    pub owner: String,
    /// The address the IdP gave, shown back to the person it belongs to.
    pub email: String,
    /// Whether the IdP verified it: only then may the page name the account's ways in.
    pub email_verified: bool,
    /// SHA-256 of the pre-login cookie of the browser that tried.
    pub browser_hash: String,
    pub expires_at: i64,
}

/// Why an intent id shows nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum IntentRefused {
    /// Unknown, expired, or not an intent.
    Unknown,
    /// Kept for another browser.
    OtherBrowser,
}

impl Accounts<'_> {
    /// Keeps the refused sign-in of `email` at `idp` as an intent; `None` when the address has
    /// no owner any more (deleted meanwhile): then the plain refusal stands.
    pub(super) async fn park_intent(
        &self,
        idp: &str,
        email: &str,
        email_verified: bool,
        browser_hash: String,
        now: i64,
    ) -> Result<Option<String>, Error> {
        let Some(owner) = self.store.email_owner(&normalize_email(email)).await? else {
            return Ok(None);
        };
        let intent = ConnectIntent {
            intent: CONNECT.to_string(),
            idp: idp.to_string(),
            owner: owner.user_id,
            email: email.to_string(),
            email_verified,
            browser_hash,
            expires_at: now + crate::config::LOGIN_TTL.as_secs() as i64,
        };
        let record = serde_json::to_vec(&intent)
            .map_err(|_| Error::Internal("intent encoding failed".into()))?;
        let id = random_token(32);
        self.store
            .put_signup(&id, intent.expires_at, &record)
            .await?;
        Ok(Some(id))
    }

    /// The intent `id`, for the browser whose pre-login cookie hashes to `browser_hash`.
    pub async fn intent(
        &self,
        id: &str,
        browser_hash: Option<&str>,
        now: i64,
    ) -> Result<Result<ConnectIntent, IntentRefused>, Error> {
        let Some(bytes) = self.store.signup(id).await? else {
            return Ok(Err(IntentRefused::Unknown));
        };
        let Ok(intent) = serde_json::from_slice::<ConnectIntent>(&bytes) else {
            return Ok(Err(IntentRefused::Unknown));
        };
        if intent.intent != CONNECT || intent.expires_at <= now {
            return Ok(Err(IntentRefused::Unknown));
        }
        let bound = browser_hash
            .is_some_and(|hash| crate::crypto::constant_time_eq(hash, &intent.browser_hash));
        if !bound {
            return Ok(Err(IntentRefused::OtherBrowser));
        }
        Ok(Ok(intent))
    }

    /// Forgets the intent `id` (its offer was taken up or turned down).
    pub async fn drop_intent(&self, id: &str) -> Result<(), Error> {
        self.store.take_signup(id).await?;
        Ok(())
    }
}

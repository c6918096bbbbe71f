//! Accounts: turning a verified login into a local user, identity, sealed tokens and session.
//!
//! An identity is keyed by (IdP, subject) and nothing else: an email address never finds or
//! links an account here, so a changed or unverified email cannot take one over.

use authnz_plugin::MapError;

use crate::config::LinkPolicy;
use crate::crypto::TokenVault;
use crate::crypto::{random_token, sha256_hex};
use crate::protocol::{Idp, VerifiedLogin};
use crate::store::{
    identity_key_public, CompletedLogin, EmailMatch, LoginOutcome, Store, StoreError,
};

mod conflicts;
pub mod device;
mod error;
mod groups;
pub mod sessions;
mod tokens;

pub use conflicts::{ConnectIntent, IntentRefused};
pub use error::Error;
pub use groups::{groups_of, MAX_GROUPS};

pub use tokens::id_token_context;

/// Local names nobody gets from an IdP claim as they are.
const RESERVED_USERNAMES: &[&str] = &[
    "admin",
    "administrator",
    "root",
    "system",
    "authnz",
    "api",
    "me",
];

/// A safe local username from an IdP's suggestion: lowercase ASCII letters, digits, `.`, `_`
/// and `-`, at most 40 characters, never empty and never a reserved name. The store makes it
/// unique by appending a number.
pub fn local_username(wanted: Option<&str>) -> String {
    let mut out = String::new();
    for c in wanted
        .unwrap_or_default()
        .chars()
        .flat_map(char::to_lowercase)
    {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
        if out.len() >= 40 {
            break;
        }
    }
    let trimmed = out.trim_matches(|c| matches!(c, '-' | '.' | '_'));
    let name = if trimmed.is_empty() { "user" } else { trimmed };
    if RESERVED_USERNAMES.contains(&name) {
        format!("{name}-user")
    } else {
        name.to_string()
    }
}

/// How a verified login ended.
pub enum Finished {
    /// Logged in: the outcome and the new session cookie value.
    LoggedIn(LoginOutcome, String),
    /// A first login waiting for the person to confirm the new account
    /// (`require_create_confirmation`): the opaque sign-up id.
    NeedsConfirmation(String),
    /// A first login whose address belongs to an account that may connect this IdP by hand:
    /// the refusal, and the opaque id of the intent kept to offer the way
    /// ([`LoginContext::offer_connect`]).
    EmailInUse(Error, String),
}

/// A first login parked until the person confirms it (never in a URL but for its opaque id).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingSignup {
    pub login: CompletedLogin,
    pub next: String,
    /// SHA-256 of the pre-login cookie of the browser that logged in.
    pub browser_hash: String,
    /// What the confirmation form must post back.
    pub csrf: String,
    pub expires_at: i64,
}

/// Where a login came from, beyond the verified claims.
pub struct LoginContext<'a> {
    /// A planted or previous session: ended, the session id always changes (SECURITY G62).
    pub old_session: Option<&'a str>,
    /// Connect flow: the logged-in user the identity is to be added to.
    pub link_to: Option<String>,
    pub next: String,
    pub browser_hash: String,
    pub now: i64,
    /// The browser and system of the login ([`device::label`]) and its network
    /// ([`device::network`]), for the person's list of sessions.
    pub device: Option<String>,
    pub network: Option<String>,
    /// Whether a person reads the answer (a browser): then an address that belongs to an
    /// account which may connect this IdP keeps an intent ([`Finished::EmailInUse`]).
    pub offer_connect: bool,
}

/// What account operations work on: the store and the token vault, nothing of the server.
#[derive(Clone, Copy)]
pub struct Accounts<'a> {
    pub store: &'a std::sync::Arc<dyn Store>,
    pub vault: &'a TokenVault,
    /// How long a new session lasts.
    pub session_ttl: std::time::Duration,
}

impl Accounts<'_> {
    /// Maps and stores a verified login and starts its session, in one transaction; or parks it
    /// for confirmation.
    pub async fn finish_login(
        &self,
        idp: &std::sync::Arc<Idp>,
        verified: VerifiedLogin,
        cx: LoginContext<'_>,
    ) -> Result<Finished, Error> {
        let mapped = mapped_identity(idp, &verified.claims)?;
        if let Some(user_id) = &cx.link_to {
            self.check_may_connect(idp, user_id, Some(&mapped.subject))
                .await?;
        }
        let (sealed_tokens, sealed_id_token) = self.seal(idp, &mapped.subject, &verified.tokens)?;
        let email_authoritative = email_authoritative(idp, &mapped);
        let session_cookie = random_token(32);
        let login = CompletedLogin {
            idp: idp.config.name.clone(),
            subject: mapped.subject.clone(),
            issuer: idp.config.issuer.clone(),
            previous_issuers: idp.config.previous_issuers.clone(),
            email: mapped.email.clone(),
            email_verified: mapped.email_verified,
            display_name: mapped.display_name.clone(),
            username: local_username(mapped.username.as_deref()),
            sealed_tokens,
            session_hash: sha256_hex(&session_cookie),
            new_user_id: crate::crypto::new_user_id(),
            now: cx.now,
            session_expires_at: cx.now + self.session_ttl.as_secs() as i64,
            sid: verified.claims.str("sid").map(str::to_string),
            groups: groups_of(
                idp.config.groups_claim.as_deref(),
                &verified.claims,
                &mapped,
            ),
            csrf: random_token(32),
            sealed_id_token,
            device: cx.device,
            network: cx.network,
            email_authoritative,
            on_email_match: match idp.config.link_existing {
                LinkPolicy::VerifiedEmail => EmailMatch::LinkIfAuthoritative,
                LinkPolicy::Never | LinkPolicy::Confirm => EmailMatch::Refuse,
            },
            require_existing: idp.config.require_create_confirmation && cx.link_to.is_none(),
            link_to: cx.link_to,
        };
        // Only a login that must be confirmed can come back for a sign-up: copy just that one.
        let for_signup = login.require_existing.then(|| login.clone());
        // Durable before the person is told they are logged in.
        let new_tokens = verified.tokens;
        match self.store.complete_login_durable(login).await {
            Ok(mut outcome) => {
                if let Some(old) = cx.old_session {
                    self.store.delete_session(old).await?;
                    self.store.sync().await?;
                }
                if let Some(replaced) = outcome.replaced_tokens.take() {
                    self.revoke_replaced(idp, &mapped.subject, &replaced, &new_tokens);
                }
                Ok(Finished::LoggedIn(outcome, session_cookie))
            }
            Err(StoreError::NeedsConfirmation) => {
                let login = for_signup
                    .ok_or_else(|| Error::Internal("a confirmation nobody asked for".into()))?;
                self.park_signup(login, cx.next, cx.browser_hash, cx.now)
                    .await
            }
            Err(StoreError::EmailConflict)
                if cx.offer_connect && idp.config.link_existing != LinkPolicy::Never =>
            {
                let refusal = login_error(StoreError::EmailConflict, idp);
                let Some(email) = mapped.email.as_deref() else {
                    return Err(refusal);
                };
                match self
                    .park_intent(
                        &idp.config.name,
                        email,
                        mapped.email_verified,
                        cx.browser_hash,
                        cx.now,
                    )
                    .await?
                {
                    Some(intent) => Ok(Finished::EmailInUse(refusal, intent)),
                    None => Err(refusal),
                }
            }
            Err(err) => Err(login_error(err, idp)),
        }
    }

    /// Whether the account may connect (another) identity at `idp`: always where the entry
    /// allows several accounts; otherwise only while it has none there but `subject` itself.
    pub async fn check_may_connect(
        &self,
        idp: &Idp,
        user_id: &str,
        subject: Option<&str>,
    ) -> Result<(), Error> {
        if idp.config.several_accounts {
            return Ok(());
        }
        let linked = self.store.identities_of(user_id).await?;
        if linked.iter().any(|identity| {
            identity.idp == idp.config.name && Some(identity.subject.as_str()) != subject
        }) {
            return Err(Error::AlreadyConnected(format!(
                "this account is already connected to {}; disconnect it first to connect another {} account",
                idp.config.label, idp.config.label
            )));
        }
        Ok(())
    }

    /// The identity's tokens, sealed to it, and its ID token, sealed to the session (for its
    /// own logout, SECURITY I76), base64url.
    fn seal(
        &self,
        idp: &Idp,
        subject: &str,
        tokens: &crate::protocol::IdpTokens,
    ) -> Result<(Vec<u8>, Option<String>), Error> {
        let plain = serde_json::to_vec(tokens)
            .map_err(|_| Error::Internal("token encoding failed".into()))?;
        let sealed_tokens = self
            .vault
            .seal(&identity_key_public(&idp.config.name, subject), &plain)
            .map_err(|_| Error::Internal("token sealing failed".into()))?;
        let sealed_id_token = (!tokens.id_token.is_empty())
            .then(|| {
                self.vault.seal(
                    &id_token_context(&idp.config.name, subject),
                    tokens.id_token.as_bytes(),
                )
            })
            .transpose()
            .map_err(|_| Error::Internal("token sealing failed".into()))?
            .map(|sealed| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
            });
        Ok((sealed_tokens, sealed_id_token))
    }

    /// Parks a first login until the person confirms the new account; returns its sign-up.
    async fn park_signup(
        &self,
        mut login: CompletedLogin,
        next: String,
        browser_hash: String,
        now: i64,
    ) -> Result<Finished, Error> {
        login.require_existing = false;
        let id = random_token(32);
        let signup = PendingSignup {
            login,
            next,
            browser_hash,
            csrf: random_token(32),
            expires_at: now + crate::config::LOGIN_TTL.as_secs() as i64,
        };
        let record = serde_json::to_vec(&signup)
            .map_err(|_| Error::Internal("sign-up encoding failed".into()))?;
        self.store
            .put_signup(&id, signup.expires_at, &record)
            .await?;
        Ok(Finished::NeedsConfirmation(id))
    }
}

/// The provider's mapping of the verified claims, with the entry's `username_claim`; the
/// subject must be one an identity can be keyed by.
fn mapped_identity(
    idp: &Idp,
    claims: &authnz_plugin::VerifiedClaims,
) -> Result<authnz_plugin::MappedIdentity, Error> {
    let mut mapped = idp
        .config
        .provider
        .map_identity(claims)
        .map_err(|err| match err {
            MapError::Denied(reason) => Error::Denied(reason),
            MapError::Invalid(reason) => Error::ClaimsUnusable(reason),
            MapError::Failed(reason) => Error::ProviderFailed(reason),
            _ => Error::ClaimsUnusable("the identity could not be mapped".into()),
        })?;
    if let Some(claim) = &idp.config.username_claim {
        // `username_claim = "email"` takes the local part, as a username should not be an address.
        if let Some(value) = claims.str(claim) {
            mapped.username = Some(value.split('@').next().unwrap_or(value).to_string());
        }
    }
    if !crate::protocol::valid_subject(&mapped.subject) {
        return Err(Error::ClaimsUnusable(
            "the identity has no valid subject".into(),
        ));
    }
    Ok(mapped)
}

/// Whether the IdP verified the address and is listed as authoritative for its domain.
fn email_authoritative(idp: &Idp, mapped: &authnz_plugin::MappedIdentity) -> bool {
    mapped.email_verified
        && mapped
            .email
            .as_deref()
            .and_then(|email| email.rsplit_once('@'))
            .is_some_and(|(_, domain)| {
                idp.config
                    .trusted_email_domains
                    .iter()
                    .any(|trusted| trusted.eq_ignore_ascii_case(domain))
            })
}

/// The 409s of account linking, with what the person can do.
pub fn login_error(err: StoreError, idp: &Idp) -> Error {
    match err {
        StoreError::EmailConflict => Error::EmailInUse(
            match idp.config.link_existing {
                LinkPolicy::Never => "An account with this email address already exists. Sign in with the provider you used before.".to_string(),
                _ => format!(
                    "An account with this email address already exists. Sign in to it with the provider you used before, then connect {} from your account page.",
                    idp.config.label
                ),
            },
        ),
        StoreError::LinkedElsewhere => Error::IdentityInUse(
            format!("This {} identity is already connected to another account.", idp.config.label),
        ),
        StoreError::NoSuchUser => Error::AccountGone,
        StoreError::IssuerChanged => {
            tracing::warn!(idp = %idp.config.name, "a login matched an identity of another issuer and was refused; if the provider really moved, list its old issuer in previous_issuers");
            Error::IssuerChanged(
                format!(
                    "This {} account was connected when the provider had another address, so it cannot sign in to it now. An administrator can tell authnz that the provider moved.",
                    idp.config.label
                ),
            )
        }
        other => Error::Store(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_made_safe() {
        let cases = [
            (Some("Alice"), "alice"),
            (Some("bob smith"), "bob-smith"),
            (Some("../../etc"), "etc"),
            (Some("<script>"), "script"),
            (Some("admin"), "admin-user"),
            (Some("ROOT"), "root-user"),
            (Some(""), "user"),
            (None, "user"),
            (Some("éva"), "va"),
            (Some("a\u{0}b"), "a-b"),
        ];
        for (wanted, expected) in cases {
            assert_eq!(local_username(wanted), expected, "{wanted:?}");
        }
        assert_eq!(local_username(Some(&"x".repeat(100))).len(), 40);
    }
}

//! Who is calling: a session cookie, an API key (`Authorization: Bearer authnz_...`) or an
//! IdP's access token (`accepted_audiences`). A bearer credential reads, and acts only within
//! what it was issued for ([`Caller::check_session_change`]); managing credentials and the
//! account needs the session.

use std::collections::HashMap;

use poem::Request;
use poem_openapi::auth::{ApiKey as ApiKeyAuth, Bearer};
use poem_openapi::SecurityScheme;

use super::error::{FlowError, Status};
use crate::crypto::sha256_hex;
use crate::state::App;
use crate::store::{Session, User};

use super::request::{check_same_origin, check_session_csrf};

/// The browser session cookie.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "authnz_session", key_in = "cookie")]
pub struct SessionAuth(ApiKeyAuth);

/// A personal API key, `authnz_...`, created with `POST /api/keys`; or a JWT access token
/// issued by an IdP that lists `accepted_audiences`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct ApiKeyBearer(Bearer);

/// The session cookie or an API key.
#[derive(SecurityScheme)]
pub enum Auth {
    Session(SessionAuth),
    ApiKey(ApiKeyBearer),
}

impl Auth {
    /// A session cookie's value as the credential.
    pub(crate) fn session_cookie(value: String) -> Self {
        Auth::Session(SessionAuth(ApiKeyAuth { key: value }))
    }
}

/// Who is calling.
pub struct Caller {
    pub user: User,
    /// The cookie session (hash and record), when authenticated by cookie.
    pub session: Option<(String, Session)>,
    /// With an IdP access token: the identity (IdP name, subject) it was issued for.
    pub idp_token: Option<(String, String)>,
}

impl Caller {
    /// Managing credentials and the account (API keys, connect, disconnect, deleting the
    /// account, reading an IdP's stored tokens) needs the browser session and its CSRF token:
    /// a bearer credential acts only within what it was issued for, so that a stolen or
    /// expiring one cannot mint a lasting one or take the account (SECURITY I71).
    pub fn check_session_change(
        &self,
        app: &App,
        req: &Request,
        form: &HashMap<String, String>,
    ) -> Result<(), FlowError> {
        if self.session.is_none() {
            return Err(session_required());
        }
        check_csrf(app, req, self, form)
    }
}

/// The 403 of a bearer credential where the browser session is needed.
pub(crate) fn session_required() -> FlowError {
    FlowError::new(
        Status::Forbidden,
        "session_required",
        "this needs a signed-in browser session (with its CSRF token); an API key or access token cannot do it",
    )
}

/// The prefix of every API key.
pub const API_KEY_PREFIX: &str = "authnz_";

/// Resolves the caller; 401 when the session, key or token is unknown, expired or invalid.
pub async fn caller(app: &App, auth: &Auth) -> Result<Caller, FlowError> {
    let unauthorized = || FlowError::unauthorized("unauthorized", "log in first");
    let now = app.clock.now();
    let (user_id, session, idp_token) = match auth {
        Auth::Session(cookie) => {
            let hash = sha256_hex(&cookie.0.key);
            let session = session_by_hash(app, &hash)
                .await?
                .ok_or_else(unauthorized)?;
            (session.user_id.clone(), Some((hash, session)), None)
        }
        Auth::ApiKey(bearer) if bearer.0.token.starts_with(API_KEY_PREFIX) => {
            let key = app
                .store
                .api_key(&sha256_hex(&bearer.0.token))
                .await?
                .ok_or_else(unauthorized)?;
            if key.expires_at.is_some_and(|expires| expires <= now) {
                return Err(unauthorized());
            }
            (key.user_id, None, None)
        }
        Auth::ApiKey(bearer) => {
            let (user_id, idp, subject) = idp_access_token_user(app, &bearer.0.token, now)
                .await
                .ok_or_else(unauthorized)?;
            (user_id, None, Some((idp, subject)))
        }
    };
    let user = app.store.user(&user_id).await?.ok_or_else(unauthorized)?;
    Ok(Caller {
        user,
        session,
        idp_token,
    })
}

/// The user of an IdP-issued JWT access token, for IdPs that list `accepted_audiences`: the
/// token's `iss` picks the IdP, which verifies it; the provider's own policy and subject
/// mapping apply as at a login (hosted domain, tenants, allowed IdPs), and the mapped subject
/// must be a linked identity. Returns the user id, the IdP name and the subject.
pub(crate) async fn idp_access_token_user(
    app: &App,
    token: &str,
    now: i64,
) -> Option<(String, String, String)> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claimed: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let iss = claimed.get("iss")?.as_str()?.to_string();
    let generation = app.current();
    let idp = generation
        .idps
        .iter()
        .find(|idp| !idp.config.accepted_audiences.is_empty() && idp.issuer_matches(&iss))?;
    let claims = match idp.verify_access_token(token, now).await {
        Ok(claims) => claims,
        Err(reason) => {
            tracing::info!(idp = %idp.config.name, reason, "bearer access token rejected");
            return None;
        }
    };
    let subject = match idp.config.provider.map_identity(&claims) {
        Ok(mapped) if crate::protocol::valid_subject(&mapped.subject) => mapped.subject,
        Ok(_) => return None,
        Err(err) => {
            tracing::info!(idp = %idp.config.name, reason = %err, "bearer access token refused by the provider's policy");
            return None;
        }
    };
    let identity = app
        .store
        .identity(&idp.config.name, &subject)
        .await
        .ok()??;
    if !idp.owns(&identity) {
        tracing::info!(idp = %idp.config.name, "bearer access token of an identity linked under another issuer");
        return None;
    }
    Some((identity.user_id, idp.config.name.clone(), subject))
}

/// Whether `user_id` is named in `[server] admins` (by its id, or by one of its identities).
pub(crate) async fn is_admin(app: &App, user_id: &str) -> Result<bool, FlowError> {
    if app.server.admins.is_empty() {
        return Ok(false);
    }
    let identities = app.store.identities_of(user_id).await?;
    Ok(app.server.admins.iter().any(|admin| match admin {
        crate::config::AdminRef::User(id) => id == user_id,
        crate::config::AdminRef::Identity { idp, subject } => identities
            .iter()
            .any(|identity| &identity.idp == idp && &identity.subject == subject),
    }))
}

/// The caller, if an admin.
pub(crate) async fn admin(app: &App, auth: &Auth) -> Result<Caller, FlowError> {
    let caller = caller(app, auth).await?;
    if is_admin(app, &caller.user.id).await? {
        Ok(caller)
    } else {
        Err(FlowError::new(
            Status::Forbidden,
            "not_an_admin",
            "this needs an admin named in [server] admins",
        ))
    }
}

/// The session of the request, from the cookie value.
pub async fn session_of(
    app: &App,
    cookie_value: &str,
) -> Result<Option<crate::store::Session>, FlowError> {
    session_by_hash(app, &sha256_hex(cookie_value)).await
}

/// [`session_of`] for a cookie already hashed.
pub async fn session_by_hash(
    app: &App,
    hash: &str,
) -> Result<Option<crate::store::Session>, FlowError> {
    let session = app.store.session(hash).await?;
    Ok(session.filter(|session| session.expires_at > app.clock.now()))
}

/// A cookie-authenticated state change must be same-origin and carry the session's CSRF
/// token; API-key calls cannot be forged by a browser and need neither (SECURITY G64, G65).
pub fn check_csrf(
    app: &App,
    req: &Request,
    caller: &Caller,
    form: &HashMap<String, String>,
) -> Result<(), FlowError> {
    let Some((_, session)) = &caller.session else {
        return Ok(());
    };
    check_same_origin(app, req)?;
    check_session_csrf(req, session, form)
}

//! The account endpoints: connecting and disconnecting identities (with revocation at the
//! IdP), confirming a new account, API keys, the IdP access token for the application,
//! deleting the account, and back-channel logout from IdPs.
//!
//! Authentication is the session cookie, an API key (`Authorization: Bearer authnz_...`) or an
//! IdP's access token (`accepted_audiences`). State-changing requests made with the cookie must
//! be same-origin and carry the session's CSRF token (`X-CSRF-Token` header, or a `csrf` form
//! field). Managing credentials and the account needs the session: a bearer credential reads,
//! and acts only within what it was issued for ([`Caller::check_session_change`]).

use std::collections::HashMap;
use std::sync::Arc;

use poem::web::Data;
use poem::{Body, Request};
use poem_openapi::auth::{ApiKey as ApiKeyAuth, Bearer};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, Tags};

use crate::accounts::{self, PendingSignup};
use crate::api::{
    check_same_origin, cookie, error_responses, set_cookie, start_login, ErrorBody, IdentityView,
    LoginRedirect, Me, MeError, MeResponse, LOGIN_COOKIE, SESSION_COOKIE,
};
use crate::app::{prefers_html, App};
use crate::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::error::{FlowError, Status};
use crate::pages::{escape, page};
use crate::protocol::IdpTokens;
use crate::store::{identity_key_public, ApiKey, RemoveOutcome, Session, User};

#[derive(Tags)]
enum AccountTags {
    /// Identities, API keys and tokens of the logged-in user.
    Account,
    /// Server status and configuration reload, for the admins named in the config.
    Admin,
}

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
fn session_required() -> FlowError {
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
            let session = crate::api::session_by_hash(app, &hash)?.ok_or_else(unauthorized)?;
            (session.user_id.clone(), Some((hash, session)), None)
        }
        Auth::ApiKey(bearer) if bearer.0.token.starts_with(API_KEY_PREFIX) => {
            let key = app
                .store
                .api_key(&sha256_hex(&bearer.0.token))?
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
    let user = app.store.user(&user_id)?.ok_or_else(unauthorized)?;
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
async fn idp_access_token_user(
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
    let identity = app.store.identity(&idp.config.name, &subject).ok()??;
    if !idp.owns(&identity) {
        tracing::info!(idp = %idp.config.name, "bearer access token of an identity linked under another issuer");
        return None;
    }
    Some((identity.user_id, idp.config.name.clone(), subject))
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
    crate::api::check_session_csrf(req, session, form)
}

error_responses!(ConnectError {
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
    /// No IdP of that name is configured.
    NotFound = 404,
    /// The IdP could not be reached.
    BadGateway = 502,
    /// The IdP lacks its credentials.
    Unavailable = 503,
    /// Too many logins started.
    TooMany = 429,
});

#[derive(ApiResponse)]
pub enum ConnectResponse {
    /// The IdP URL to open in this browser; the identity signed in there is added to the
    /// logged-in account (409 at the callback if it belongs to another account).
    #[oai(status = 200)]
    Ok(Json<LoginRedirect>, #[oai(header = "Set-Cookie")] String),
    /// A browser form post is sent straight to the IdP.
    #[oai(status = 303)]
    Redirect(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

error_responses!(SignupError {
    /// The sign-up was started in another browser.
    BadRequest = 400,
    /// Unknown, used or expired sign-up.
    NotFound = 404,
    /// Cross-site request or wrong CSRF token.
    Forbidden = 403,
    /// The identity or email was taken meanwhile.
    Conflict = 409,
});

#[derive(ApiResponse)]
pub enum SignupPage {
    /// The confirmation page: who is about to get an account, and the button that creates it.
    #[oai(status = 200)]
    Page(Html<String>),
}

#[derive(ApiResponse)]
pub enum SignupDone {
    /// Account created and logged in: a session cookie and a redirect to `next`.
    #[oai(status = 303)]
    Created(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

error_responses!(DisconnectError {
    /// `subject` is needed: the account has several identities at this IdP.
    BadRequest = 400,
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
    /// The account has no such identity.
    NotFound = 404,
    /// It is the account's last way to log in.
    Conflict = 409,
    /// The IdP did not confirm the revocation; nothing was removed.
    BadGateway = 502,
});

#[derive(ApiResponse)]
pub enum DisconnectPage {
    /// The confirmation page, with one button per identity at this IdP.
    #[oai(status = 200)]
    Page(Html<String>),
}

/// A removed identity.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Disconnected {
    pub idp: String,
    pub subject: String,
    /// Whether the IdP revoked the tokens (false: it offers no revocation endpoint).
    pub revoked_at_idp: bool,
}

#[derive(ApiResponse)]
pub enum DisconnectResponse {
    /// The identity and its tokens are gone; the account stays.
    #[oai(status = 200)]
    Ok(Json<Disconnected>),
    /// A browser form post goes back to the account page.
    #[oai(status = 303)]
    Redirect(#[oai(header = "Location")] String),
}

/// A JSON string and only a string: the framework's own `String` would also take `false` or
/// `42` and make text of it, which the published schema does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictString(pub String);

impl poem_openapi::types::Type for StrictString {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> std::borrow::Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        <String as poem_openapi::types::Type>::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ParseFromJSON for StrictString {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(serde_json::Value::String(text)) => Ok(Self(text)),
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

impl poem_openapi::types::ToJSON for StrictString {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

/// A new API key's name and lifetime.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct NewApiKey {
    /// What it is for, e.g. "laptop scripts".
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: StrictString,
    /// Days until it expires; absent: it does not expire.
    #[oai(validator(minimum(value = "1"), maximum(value = "3650")))]
    pub expires_in_days: poem_openapi::types::MaybeUndefined<i64>,
}

/// An API key (never the secret, except once, at creation).
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// The secret: only in the answer to its creation. Store it now; it cannot be shown again.
    pub key: Option<String>,
}

impl ApiKeyView {
    fn of(key: ApiKey, secret: Option<String>) -> Self {
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            created_at: key.created_at,
            expires_at: key.expires_at,
            key: secret,
        }
    }
}

error_responses!(KeysError {
    /// The body is not a valid JSON key request.
    BadRequest = 400,
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
    /// No such key.
    NotFound = 404,
    /// The body is not JSON.
    UnsupportedMediaType = 415,
});

#[derive(ApiResponse)]
pub enum CreatedKey {
    /// The key, with its secret shown this once.
    #[oai(status = 201)]
    Created(Json<ApiKeyView>),
}

#[derive(ApiResponse)]
pub enum KeyList {
    /// The user's API keys, without secrets.
    #[oai(status = 200)]
    Ok(Json<Vec<ApiKeyView>>),
}

#[derive(ApiResponse)]
pub enum KeyDeleted {
    /// Deleted: the key no longer works.
    #[oai(status = 204)]
    Deleted,
}

/// An IdP access token for the application.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AccessTokenView {
    pub access_token: String,
    pub token_type: String,
    /// Unix seconds, when known.
    pub expires_at: Option<i64>,
    pub scope: Option<String>,
}

error_responses!(TokenError {
    /// `subject` is needed: several identities at this IdP.
    BadRequest = 400,
    /// Not logged in, or the IdP refused to refresh (the session is then ended: log in again).
    Unauthorized = 401,
    /// A cross-site request, or a bearer credential that was not issued for this identity.
    Forbidden = 403,
    /// No identity at that IdP, or no tokens kept for it.
    NotFound = 404,
    /// The IdP could not be reached.
    BadGateway = 502,
});

#[derive(ApiResponse)]
pub enum TokenResponse {
    /// A currently valid access token (refreshed at the IdP when it had expired).
    #[oai(status = 200)]
    Ok(Json<AccessTokenView>),
}

error_responses!(DeleteError {
    /// `confirm` is missing.
    BadRequest = 400,
    /// `confirm` is not the account's username.
    Invalid = 422,
    /// Not logged in.
    Unauthorized = 401,
    /// Cross-site request or missing CSRF token.
    Forbidden = 403,
});

/// What deleting the account did.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Deleted {
    pub deleted: bool,
    /// Identities whose tokens the IdP revoked.
    pub revoked: Vec<String>,
    /// Identities whose tokens could not be revoked (the IdP has no revocation endpoint or
    /// did not answer); they are deleted here all the same.
    pub not_revoked: Vec<String>,
}

#[derive(ApiResponse)]
pub enum DeleteResponse {
    /// The account and everything of it are gone; the session cookie is cleared.
    #[oai(status = 200)]
    Ok(Json<Deleted>, #[oai(header = "Set-Cookie")] String),
}

error_responses!(BackchannelError {
    /// The logout token is missing or invalid (signature, issuer, audience, events, nonce...).
    BadRequest = 400,
    /// No IdP of that name is configured.
    NotFound = 404,
    /// The IdP's keys could not be fetched.
    BadGateway = 502,
});

/// What a back-channel logout did.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct BackchannelResult {
    /// Sessions ended.
    pub sessions_ended: u64,
}

#[derive(ApiResponse)]
pub enum BackchannelResponse {
    /// The matching sessions are ended.
    #[oai(status = 200)]
    Ok(Json<BackchannelResult>),
}

/// The sealed tokens of an identity, opened.
pub fn open_tokens(
    app: &App,
    idp: &str,
    subject: &str,
) -> Result<Option<(Vec<u8>, IdpTokens)>, FlowError> {
    let Some(sealed) = app.store.sealed_tokens(idp, subject)? else {
        return Ok(None);
    };
    let plain = app
        .vault
        .open(&identity_key_public(idp, subject), &sealed)
        .map_err(|_| FlowError::internal("stored tokens do not open with the current key"))?;
    let tokens = serde_json::from_slice(&plain)
        .map_err(|_| FlowError::internal("stored tokens are unreadable"))?;
    Ok(Some((sealed, tokens)))
}

/// The one identity of the caller at `idp` (or the one with `subject`).
fn pick_identity(
    app: &App,
    caller: &Caller,
    idp: &str,
    subject: Option<&str>,
) -> Result<String, FlowError> {
    let mut subjects: Vec<String> = app
        .store
        .identities_of(&caller.user.id)?
        .into_iter()
        .filter(|identity| identity.idp == idp)
        .map(|identity| identity.subject)
        .collect();
    if let Some(subject) = subject {
        subjects.retain(|s| s == subject);
    }
    match subjects.len() {
        0 => Err(FlowError::new(
            Status::NotFound,
            "no_such_identity",
            "this account has no such identity",
        )),
        1 => Ok(subjects.remove(0)),
        _ => Err(FlowError::bad_request(
            "subject_required",
            "this account has several identities at this IdP: name one with ?subject=",
        )),
    }
}

error_responses!(AdminError {
    /// Not logged in.
    Unauthorized = 401,
    /// Not an admin (`[server] admins`), or a cross-site request.
    Forbidden = 403,
    /// The new configuration is invalid: nothing changed (the message lists every problem).
    Invalid = 422,
});

/// The server's state for admins.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AdminStatus {
    pub health: crate::api::Health,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Refused reloads since start.
    pub reload_failures: u64,
    /// Unix seconds of the last reload attempt.
    pub last_reload_attempt_at: Option<i64>,
}

#[derive(ApiResponse)]
pub enum AdminStatusResponse {
    /// Every IdP's state, the configuration generation and the reloads.
    #[oai(status = 200)]
    Ok(Json<AdminStatus>),
}

/// A successful reload.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Reloaded {
    /// The generation now in force.
    pub generation: u64,
}

#[derive(ApiResponse)]
pub enum ReloadResponse {
    /// The new configuration is in force; logins already started finish with the old one.
    #[oai(status = 200)]
    Ok(Json<Reloaded>),
}

/// The caller, if an admin.
async fn admin(app: &App, auth: &Auth) -> Result<Caller, FlowError> {
    let caller = caller(app, auth).await?;
    let identities = app.store.identities_of(&caller.user.id)?;
    let listed = app.server.admins.iter().any(|admin| match admin {
        crate::config::AdminRef::User(id) => id == &caller.user.id,
        crate::config::AdminRef::Identity { idp, subject } => identities
            .iter()
            .any(|identity| &identity.idp == idp && &identity.subject == subject),
    });
    if listed {
        Ok(caller)
    } else {
        Err(FlowError::new(
            Status::Forbidden,
            "not_an_admin",
            "this needs an admin named in [server] admins",
        ))
    }
}

/// The account API.
pub struct AccountApi;

#[OpenApi]
impl AccountApi {
    /// Connects another IdP identity to the logged-in account: answers the IdP URL to open in
    /// this browser (a browser form post is redirected). The link intent is kept server-side.
    #[oai(
        path = "/authnz/:idp/connect",
        method = "post",
        tag = "AccountTags::Account"
    )]
    async fn connect(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        /// The IdP name from the config.
        idp: Path<String>,
        /// Where to go afterwards (a path on this server).
        next: Query<Option<String>>,
        body: Body,
    ) -> Result<ConnectResponse, ConnectError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &crate::api::form_of(body).await)?;
        let (url, cookie) = start_login(
            app,
            req,
            &idp.0,
            next.0.as_deref(),
            Some(caller.user.id.clone()),
        )
        .await?;
        Ok(if prefers_html(req) {
            ConnectResponse::Redirect(url, cookie)
        } else {
            ConnectResponse::Ok(Json(LoginRedirect { redirect_uri: url }), cookie)
        })
    }

    /// The page that asks the person to confirm a new account (`require_create_confirmation`).
    #[oai(
        path = "/authnz/:idp/create_user",
        method = "get",
        tag = "AccountTags::Account"
    )]
    async fn create_user_page(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        /// The opaque sign-up id from the callback's redirect.
        signup: Query<String>,
    ) -> Result<SignupPage, SignupError> {
        let app = *app;
        let record = pending_signup(app, req, &signup.0, false)?;
        let label = app
            .idp(&idp.0)
            .map(|idp| idp.config.label.clone())
            .unwrap_or_default();
        let body = format!(
            "<p>This is your first sign-in with <strong>{}</strong>. An account will be created:</p>\
<table><tr><th>Username</th><td>{}</td></tr><tr><th>Email</th><td>{}</td></tr></table>\
<form method=\"post\"><input type=\"hidden\" name=\"signup\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<button type=\"submit\" id=\"create\">Create my account</button></form>\
<p><a class=\"button secondary\" href=\"/\">Cancel</a></p>",
            escape(&label),
            escape(&record.login.username),
            escape(record.login.email.as_deref().unwrap_or("")),
            escape(&signup.0),
            escape(&record.csrf),
        );
        Ok(SignupPage::Page(Html(page("Create your account", &body))))
    }

    /// Confirms and creates the account of a parked first login (form fields `signup` and
    /// `csrf`), then logs in.
    #[oai(
        path = "/authnz/:idp/create_user",
        method = "post",
        tag = "AccountTags::Account"
    )]
    async fn create_user(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        body: Body,
    ) -> Result<SignupDone, SignupError> {
        let app = *app;
        check_same_origin(app, req)?;
        let form = crate::api::form_of(body).await;
        let id = form.get("signup").cloned().unwrap_or_default();
        let record = pending_signup(app, req, &id, false)?;
        if !constant_time_eq(
            form.get("csrf").map(String::as_str).unwrap_or(""),
            &record.csrf,
        ) {
            return Err(FlowError::new(
                Status::Forbidden,
                "csrf_token_invalid",
                "the confirmation lacks its CSRF token",
            )
            .into());
        }
        // Single use from here on.
        let record = pending_signup(app, req, &id, true)?;
        let idp = app
            .idp(&idp.0)
            .filter(|idp| idp.config.name == record.login.idp)
            .ok_or_else(|| {
                FlowError::bad_request(
                    "invalid_signup",
                    "this sign-up belongs to another identity provider",
                )
            })?;
        let mut login = record.login;
        let session_cookie = random_token(32);
        login.session_hash = sha256_hex(&session_cookie);
        let now = app.clock.now();
        login.now = now;
        login.session_expires_at = now + app.server.session_ttl.as_secs() as i64;
        let outcome = app
            .store
            .complete_login_durable(login)
            .await
            .map_err(|err| accounts::login_error(err, &idp))?;
        // A session planted in this browser before ends here, as at every login (SECURITY G62).
        if let Some(planted) = cookie(req, SESSION_COOKIE) {
            app.store.delete_session(&sha256_hex(&planted))?;
            app.store.sync().await?;
        }
        tracing::info!(idp = %idp.config.name, user = %outcome.user.id, "account created after confirmation");
        Ok(SignupDone::Created(
            app.server.url(&record.next),
            set_cookie(
                app,
                SESSION_COOKIE,
                &session_cookie,
                "/",
                app.server.session_ttl.as_secs() as i64,
            ),
        ))
    }

    /// The page that confirms disconnecting this IdP from the account.
    #[oai(
        path = "/authnz/:idp/disconnect",
        method = "get",
        tag = "AccountTags::Account"
    )]
    async fn disconnect_page(
        &self,
        app: Data<&Arc<App>>,
        auth: Auth,
        idp: Path<String>,
    ) -> Result<DisconnectPage, DisconnectError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let identities: Vec<_> = app
            .store
            .identities_of(&caller.user.id)?
            .into_iter()
            .filter(|identity| identity.idp == idp.0)
            .collect();
        if identities.is_empty() {
            return Err(FlowError::new(
                Status::NotFound,
                "no_such_identity",
                "this account has no identity at this provider",
            )
            .into());
        }
        let csrf = caller
            .session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default();
        let forms: String = identities
            .iter()
            .map(|identity| {
                format!(
                    "<form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"subject\" value=\"{}\">\
<button type=\"submit\" class=\"disconnect\">Disconnect {} ({})</button></form>",
                    escape(&csrf),
                    escape(&identity.subject),
                    escape(&idp.0),
                    escape(identity.email.as_deref().unwrap_or(&identity.subject)),
                )
            })
            .collect();
        let body = format!(
            "<p>Disconnecting removes this provider's tokens from authnz (and revokes them at the provider where it can). Your account stays.</p>{forms}<p><a class=\"button secondary\" href=\"/\">Cancel</a></p>"
        );
        Ok(DisconnectPage::Page(Html(page(
            "Disconnect a provider",
            &body,
        ))))
    }

    /// Disconnects an identity: revokes its tokens at the IdP (RFC 7009) where it can, then
    /// removes the tokens and the link. The account stays; its last way to log in cannot be
    /// removed (409).
    #[oai(
        path = "/authnz/:idp/disconnect",
        method = "post",
        tag = "AccountTags::Account"
    )]
    async fn disconnect(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        idp: Path<String>,
        /// The identity's subject, when the account has several at this IdP.
        subject: Query<Option<String>>,
        body: Body,
    ) -> Result<DisconnectResponse, DisconnectError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let form = crate::api::form_of(body).await;
        caller.check_session_change(app, req, &form)?;
        let wanted = subject.0.or_else(|| form.get("subject").cloned());
        let subject = pick_identity(app, &caller, &idp.0, wanted.as_deref())?;
        if app.store.identities_of(&caller.user.id)?.len() <= 1 {
            return Err(FlowError::new(
                Status::Conflict,
                "last_identity",
                "this is the account's only way to log in; connect another provider first",
            )
            .into());
        }
        let mut revoked = false;
        if let (Some(runtime), Some((_, tokens))) =
            (app.idp(&idp.0), open_tokens(app, &idp.0, &subject)?)
        {
            revoked = runtime.revoke(&tokens).await?;
        }
        match app.store.remove_identity(
            &caller.user.id,
            &idp.0,
            &subject,
            caller.session.as_ref().map(|(hash, _)| hash.as_str()),
        )? {
            RemoveOutcome::Removed(_) => {
                // The caller's session carries on under one of the remaining identities.
                if let Some((hash, session)) = &caller.session {
                    if session.idp == idp.0 && session.subject == subject {
                        if let Some(other) =
                            app.store.identities_of(&caller.user.id)?.into_iter().next()
                        {
                            app.store
                                .repoint_session(hash, &other.idp, &other.subject)?;
                        }
                    }
                }
            }
            RemoveOutcome::NotFound => {
                return Err(FlowError::new(
                    Status::NotFound,
                    "no_such_identity",
                    "this account has no such identity",
                )
                .into())
            }
            RemoveOutcome::LastIdentity => {
                return Err(FlowError::new(
                    Status::Conflict,
                    "last_identity",
                    "this is the account's only way to log in",
                )
                .into())
            }
        }
        tracing::info!(idp = %idp.0, user = %caller.user.id, revoked, "identity disconnected");
        Ok(if prefers_html(req) {
            DisconnectResponse::Redirect("/".to_string())
        } else {
            DisconnectResponse::Ok(Json(Disconnected {
                idp: idp.0,
                subject,
                revoked_at_idp: revoked,
            }))
        })
    }

    /// Creates a personal API key for scripts (`Authorization: Bearer <key>` on `/api/*`).
    /// The key is shown once; only its hash is stored.
    #[oai(path = "/api/keys", method = "post", tag = "AccountTags::Account")]
    async fn create_key(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        request: Json<NewApiKey>,
    ) -> Result<CreatedKey, KeysError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        if request.0.expires_in_days.is_null() {
            return Err(FlowError::bad_request(
                "invalid_request",
                "expires_in_days is a number of days; leave it out for a key that does not expire",
            )
            .into());
        }
        let secret = format!("{API_KEY_PREFIX}{}", random_token(32));
        let now = app.clock.now();
        let key = ApiKey {
            id: random_token(9),
            user_id: caller.user.id.clone(),
            name: request.0.name.0,
            prefix: secret.chars().take(API_KEY_PREFIX.len() + 4).collect(),
            created_at: now,
            expires_at: request
                .0
                .expires_in_days
                .value()
                .map(|days| now + days * 86_400),
        };
        app.store.put_api_key(&sha256_hex(&secret), &key)?;
        Ok(CreatedKey::Created(Json(ApiKeyView::of(key, Some(secret)))))
    }

    /// The user's API keys (without their secrets).
    #[oai(path = "/api/keys", method = "get", tag = "AccountTags::Account")]
    async fn list_keys(&self, app: Data<&Arc<App>>, auth: Auth) -> Result<KeyList, KeysError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let keys = app
            .store
            .api_keys_of(&caller.user.id)?
            .into_iter()
            .map(|key| ApiKeyView::of(key, None))
            .collect();
        Ok(KeyList::Ok(Json(keys)))
    }

    /// Deletes an API key.
    #[oai(
        path = "/api/keys/:id",
        method = "delete",
        tag = "AccountTags::Account"
    )]
    async fn delete_key(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        id: Path<String>,
    ) -> Result<KeyDeleted, KeysError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        if app.store.delete_api_key(&caller.user.id, &id.0)? {
            Ok(KeyDeleted::Deleted)
        } else {
            Err(FlowError::new(Status::NotFound, "no_such_key", "no such API key").into())
        }
    }

    /// A valid IdP access token of the logged-in user, for the application to call the IdP's
    /// APIs; refreshed at the IdP when expired. A refused refresh ends the session.
    #[oai(
        path = "/api/users/me/tokens/:idp",
        method = "get",
        tag = "AccountTags::Account"
    )]
    async fn access_token(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        idp: Path<String>,
        /// The identity's subject, when the account has several at this IdP.
        subject: Query<Option<String>>,
    ) -> Result<TokenResponse, TokenError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        // A cross-site GET rides on the Lax cookie; a refused refresh would end the session.
        if caller.session.is_some() {
            check_same_origin(app, req)?;
        }
        // An IdP's access token reads its own identity's tokens, nothing else; an API key none
        // (SECURITY I71).
        let issued_for = match (&caller.session, &caller.idp_token) {
            (Some(_), _) => None,
            (None, Some((token_idp, token_subject))) if token_idp == &idp.0 => {
                Some(token_subject.clone())
            }
            _ => return Err(session_required().into()),
        };
        let subject = pick_identity(
            app,
            &caller,
            &idp.0,
            subject.0.as_deref().or(issued_for.as_deref()),
        )?;
        if issued_for.is_some_and(|issued_for| issued_for != subject) {
            return Err(session_required().into());
        }
        let runtime = app.idp(&idp.0).ok_or_else(|| {
            FlowError::new(
                Status::NotFound,
                "unknown_idp",
                "this identity provider is no longer configured",
            )
        })?;
        let no_tokens = || {
            FlowError::new(
                Status::NotFound,
                "no_tokens",
                "no tokens are kept for this identity; log in again",
            )
        };
        let expiring = |tokens: &IdpTokens, now: i64| {
            tokens.expires_at.is_some_and(|expires| expires <= now + 30)
        };
        let (mut sealed, mut tokens) = open_tokens(app, &idp.0, &subject)?.ok_or_else(no_tokens)?;
        let mut now = app.clock.now();
        // One refresh per identity at a time; whoever waited takes what it left.
        let _refreshing = if expiring(&tokens, now) {
            let guard = app
                .refreshing
                .lock(identity_key_public(&idp.0, &subject))
                .await;
            (sealed, tokens) =
                open_tokens(app, &idp.0, &subject)?.ok_or_else(crate::protocol::reauthenticate)?;
            now = app.clock.now();
            Some(guard)
        } else {
            None
        };
        let fresh = if expiring(&tokens, now) {
            match runtime.refresh(&tokens, &subject, now).await {
                Ok(fresh) => {
                    let plain = serde_json::to_vec(&fresh)
                        .map_err(|_| FlowError::internal("token encoding failed"))?;
                    let resealed = app
                        .vault
                        .seal(&identity_key_public(&idp.0, &subject), &plain)
                        .map_err(|_| FlowError::internal("token sealing failed"))?;
                    // Atomic: a concurrent refresh that won keeps its (rotated) tokens.
                    if !app
                        .store
                        .replace_tokens(&idp.0, &subject, &sealed, &resealed)?
                    {
                        tracing::info!(idp = %idp.0, "tokens were refreshed concurrently");
                    }
                    fresh
                }
                Err(err) if err.status == Status::Unauthorized => {
                    // SECURITY E50: no retry loop; the session that relied on them ends. Tokens
                    // the IdP refused are dead: dropped (I77); tokens a bad refresh answer came
                    // for are kept as they were (E49).
                    if err.code == "reauthenticate" {
                        app.store.delete_tokens(&idp.0, &subject)?;
                    }
                    if let Some((hash, _)) = &caller.session {
                        app.store.delete_session(hash)?;
                    }
                    app.store.sync().await?;
                    return Err(err.into());
                }
                Err(err) => return Err(err.into()),
            }
        } else {
            tokens
        };
        Ok(TokenResponse::Ok(Json(AccessTokenView {
            access_token: fresh.access_token,
            token_type: "Bearer".to_string(),
            expires_at: fresh.expires_at,
            scope: fresh.scope,
        })))
    }

    /// The logged-in user and their linked identities.
    #[oai(path = "/api/users/me", method = "get", tag = "AccountTags::Account")]
    async fn me(&self, auth: Auth, app: Data<&Arc<App>>) -> Result<MeResponse, MeError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        let csrf_token = caller
            .session
            .as_ref()
            .map(|(_, session)| session.csrf.clone());
        let user = caller.user;
        let identities = app
            .store
            .identities_of(&user.id)
            .map_err(FlowError::from)?
            .into_iter()
            .map(|identity| IdentityView {
                idp: identity.idp,
                subject: identity.subject,
                email: identity.email,
                email_verified: identity.email_verified,
                linked_at: identity.linked_at,
                last_login_at: identity.last_login_at,
            })
            .collect();
        Ok(MeResponse::Ok(Json(Me {
            id: user.id,
            username: user.username,
            email: user.email,
            display_name: user.display_name,
            created_at: user.created_at,
            identities,
            csrf_token,
        })))
    }

    /// Deletes the account: revokes every token at its IdP where possible, then removes the
    /// user, identities, tokens, sessions and API keys in one transaction. `confirm` must be
    /// the account's username.
    #[oai(
        path = "/api/users/me",
        method = "delete",
        tag = "AccountTags::Account"
    )]
    async fn delete_me(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
        /// The account's username, to confirm.
        confirm: Query<String>,
    ) -> Result<DeleteResponse, DeleteError> {
        let app = *app;
        let caller = caller(app, &auth).await?;
        caller.check_session_change(app, req, &HashMap::new())?;
        if confirm.0 != caller.user.username {
            return Err(FlowError::new(
                Status::Invalid,
                "confirmation_mismatch",
                "confirm with the account's username",
            )
            .into());
        }
        let (mut revoked, mut not_revoked) = (Vec::new(), Vec::new());
        for identity in app.store.identities_of(&caller.user.id)? {
            let label = format!("{}:{}", identity.idp, identity.subject);
            let outcome = match (
                app.idp(&identity.idp),
                open_tokens(app, &identity.idp, &identity.subject),
            ) {
                (Some(runtime), Ok(Some((_, tokens)))) => {
                    runtime.revoke(&tokens).await.unwrap_or(false)
                }
                _ => false,
            };
            if outcome {
                revoked.push(label);
            } else {
                not_revoked.push(label);
            }
        }
        let deleted = app.store.delete_user(&caller.user.id)?;
        app.store.sync().await?;
        tracing::info!(user = %caller.user.id, "account deleted");
        Ok(DeleteResponse::Ok(
            Json(Deleted {
                deleted,
                revoked,
                not_revoked,
            }),
            set_cookie(app, SESSION_COOKIE, "", "/", 0),
        ))
    }

    /// The server's state: every IdP, the configuration generation and the reloads (admins).
    #[oai(path = "/api/admin/status", method = "get", tag = "AccountTags::Admin")]
    async fn admin_status(
        &self,
        app: Data<&Arc<App>>,
        auth: Auth,
    ) -> Result<AdminStatusResponse, AdminError> {
        let app = *app;
        admin(app, &auth).await?;
        let reload = app.reload_status();
        Ok(AdminStatusResponse::Ok(Json(AdminStatus {
            health: crate::api::health(app, true).await,
            reloads: reload.reloads,
            reload_failures: reload.failures,
            last_reload_attempt_at: reload.last_attempt_at,
        })))
    }

    /// Re-reads `idps.toml` and swaps in every IdP at once, or, if anything in it is wrong,
    /// changes nothing and answers every problem (admins). `SIGHUP` and saving the file do the
    /// same.
    #[oai(
        path = "/api/admin/reload",
        method = "post",
        tag = "AccountTags::Admin"
    )]
    async fn admin_reload(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        auth: Auth,
    ) -> Result<ReloadResponse, AdminError> {
        let app = *app;
        let caller = admin(app, &auth).await?;
        check_csrf(app, req, &caller, &HashMap::new())?;
        match app.reload() {
            Ok(generation) => Ok(ReloadResponse::Ok(Json(Reloaded { generation }))),
            Err(problems) => {
                Err(FlowError::new(Status::Invalid, "invalid_config", problems).into())
            }
        }
    }

    /// OpenID Connect Back-Channel Logout: the IdP posts a signed `logout_token`; the
    /// sessions it names (by `sub` or `sid`) end.
    #[oai(
        path = "/authnz/:idp/backchannel-logout",
        method = "post",
        tag = "AccountTags::Account"
    )]
    async fn backchannel_logout(
        &self,
        app: Data<&Arc<App>>,
        idp: Path<String>,
        body: Body,
    ) -> Result<BackchannelResponse, BackchannelError> {
        let app = *app;
        let runtime = app.idp(&idp.0).ok_or_else(|| {
            FlowError::new(Status::NotFound, "unknown_idp", "no such identity provider")
        })?;
        let form = crate::api::form_of(body).await;
        let token = form.get("logout_token").ok_or_else(|| {
            FlowError::bad_request("invalid_logout_token", "logout_token is missing")
        })?;
        let now = app.clock.now();
        let claims = runtime.verify_logout_token(token, now).await?;
        if !app
            .used_logout_tokens
            .first_use(&idp.0, &claims.jti, claims.replayable_until, now)
        {
            tracing::info!(idp = %idp.0, "logout token replayed");
            return Err(FlowError::bad_request(
                "invalid_logout_token",
                "this logout token was already used",
            )
            .into());
        }
        // Sessions belong to the provider's mapping of `sub` (Entra: `tid:oid`): map it as a
        // login is mapped. A provider that cannot map a logout token's few claims is matched by
        // `sid` alone where there is one, else by the raw `sub`.
        let subject = claims.sub.as_ref().and_then(|sub| {
            let mapped = runtime
                .config
                .provider
                .map_identity(&authnz_plugin::VerifiedClaims {
                    issuer: runtime.config.issuer.clone(),
                    subject: sub.clone(),
                    claims: claims.claims.clone(),
                })
                .ok()
                .map(|mapped| mapped.subject)
                .filter(|mapped| crate::protocol::valid_subject(mapped));
            match (mapped, &claims.sid) {
                (Some(mapped), _) => Some(mapped),
                (None, Some(_)) => None,
                (None, None) => Some(sub.clone()),
            }
        });
        // A logout token of this issuer ends nothing of an identity linked under another.
        if let Some(subject) = &subject {
            if app
                .store
                .identity(&idp.0, subject)?
                .is_some_and(|identity| !runtime.owns(&identity))
            {
                return Ok(BackchannelResponse::Ok(Json(BackchannelResult {
                    sessions_ended: 0,
                })));
            }
        }
        let ended =
            app.store
                .end_identity_sessions(&idp.0, subject.as_deref(), claims.sid.as_deref())?;
        tracing::info!(idp = %idp.0, ended, "back-channel logout");
        Ok(BackchannelResponse::Ok(Json(BackchannelResult {
            sessions_ended: ended as u64,
        })))
    }
}

/// Reads (or with `take`, consumes) a pending sign-up, checking expiry and the browser.
fn pending_signup(
    app: &App,
    req: &Request,
    id: &str,
    take: bool,
) -> Result<PendingSignup, FlowError> {
    let invalid = || {
        FlowError::new(
            Status::NotFound,
            "invalid_signup",
            "this sign-up is unknown, used or expired; sign in again",
        )
    };
    let bytes = if take {
        app.store.take_signup(id)?
    } else {
        app.store.signup(id)?
    };
    let record: PendingSignup =
        serde_json::from_slice(&bytes.ok_or_else(invalid)?).map_err(|_| invalid())?;
    if record.expires_at <= app.clock.now() {
        return Err(invalid());
    }
    let bound = cookie(req, LOGIN_COOKIE)
        .is_some_and(|binding| constant_time_eq(&sha256_hex(&binding), &record.browser_hash));
    if !bound {
        return Err(FlowError::bad_request(
            "browser_mismatch",
            "this sign-up was started in another browser",
        ));
    }
    Ok(record)
}

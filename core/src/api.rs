//! The documented HTTP API: `/authnz/*` (the login flow) and `/api/*` (the logged-in user).
//!
//! Handlers are thin: they parse and check the request, call `protocol` and `accounts`, and
//! turn a [`FlowError`] into the response variant of its status. Doc comments here become the
//! OpenAPI spec (`openapi/openapi.json`), so they never contain a secret.

use std::collections::HashMap;
use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Html, Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::accounts;
use crate::app::{prefers_html, App};
use crate::config::LOGIN_TTL;
use crate::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::error::{FlowError, Status};

/// The session cookie.
pub const SESSION_COOKIE: &str = "authnz_session";
/// The pre-login cookie that binds a pending login to the browser that started it.
pub const LOGIN_COOKIE: &str = "authnz_login";

#[derive(Tags)]
enum ApiTags {
    /// Logging in and out through an identity provider.
    Authnz,
}

/// An error: a stable machine-readable code and a message for people.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ErrorBody {
    /// E.g. `invalid_state`, `id_token_invalid`, `unknown_idp`.
    pub error: String,
    pub message: String,
}

impl From<FlowError> for ErrorBody {
    fn from(err: FlowError) -> Self {
        Self {
            error: err.code.to_string(),
            message: err.message,
        }
    }
}

/// Declares a per-endpoint error response enum and its conversion from [`FlowError`]; a status
/// the endpoint does not document becomes a 500.
macro_rules! error_responses {
    ($(#[$meta:meta])* $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $status:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(ApiResponse)]
        pub enum $name {
            $(
                $(#[doc = $doc])*
                #[oai(status = $status)]
                $variant(Json<ErrorBody>),
            )+
            /// Storage failure.
            #[oai(status = 500)]
            Internal(Json<ErrorBody>),
        }

        impl From<crate::store::StoreError> for $name {
            fn from(err: crate::store::StoreError) -> Self {
                FlowError::from(err).into()
            }
        }

        impl From<FlowError> for $name {
            fn from(err: FlowError) -> Self {
                match err.status.code() {
                    $($status => $name::$variant(Json(err.into())),)+
                    _ => $name::Internal(Json(err.into())),
                }
            }
        }
    };
}

pub(crate) use error_responses;

error_responses!(LoginError {
    /// No IdP of that name is configured.
    NotFound = 404,
    /// A dev IdP login from a client off this machine.
    Forbidden = 403,
    /// The IdP's discovery document could not be fetched or is unsafe.
    BadGateway = 502,
    /// The IdP is configured but lacks its credentials (see `/healthz`).
    Unavailable = 503,
    /// Too many logins were started by this client, or in all, in the last ten minutes.
    TooMany = 429,
});

error_responses!(CallbackError {
    /// Bad or mismatched callback input: no, unknown, expired, replayed or foreign `state`,
    /// a browser without the pre-login cookie, a wrong `iss`, duplicated parameters, no `code`,
    /// or an error reported by the IdP.
    BadRequest = 400,
    /// The ID token or userinfo failed verification, or the IdP refused the code.
    Unauthorized = 401,
    /// The provider denied this identity (e.g. not in the allowed domain), or a connect flow
    /// finished outside the session that started it.
    Forbidden = 403,
    /// The email belongs to another account (sign in to it and connect), or the identity is
    /// connected to another account.
    Conflict = 409,
    /// No IdP of that name is configured.
    NotFound = 404,
    /// The IdP failed or answered something unusable.
    BadGateway = 502,
});

error_responses!(LogoutError {
    /// The request came from another site (CSRF).
    Forbidden = 403,
});

// (The session cookie scheme is declared once, in `account_api`.)

error_responses!(MeError {
    /// No valid session.
    Unauthorized = 401,
});

/// One configured IdP, for building login buttons.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IdpSummary {
    /// The `<name>` in URLs.
    pub name: String,
    pub label: String,
    pub icon: Option<String>,
    pub kind: String,
    /// Path that starts a login: `/authnz/<name>/login`.
    pub login_path: String,
}

#[derive(ApiResponse)]
pub enum IdpListResponse {
    /// The IdPs, in config order.
    #[oai(status = 200)]
    Ok(Json<Vec<IdpSummary>>),
}

/// Where to send the person's browser.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none, example)]
pub struct LoginRedirect {
    /// The IdP's authorization URL (authorization-code flow with state, nonce and PKCE S256).
    pub redirect_uri: String,
}

#[derive(ApiResponse)]
pub enum LoginResponse {
    /// The URL to open in the browser that made this request. The `authnz_login` cookie set
    /// here binds the login to that browser: the callback is refused in any other.
    #[oai(status = 200)]
    Ok(Json<LoginRedirect>, #[oai(header = "Set-Cookie")] String),
    /// A browser asking for HTML is sent straight to the IdP.
    #[oai(status = 303)]
    Redirect(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

#[derive(ApiResponse)]
pub enum CallbackResponse {
    /// Logged in: a fresh `authnz_session` cookie, and a redirect to `next` (or `/`). With
    /// `require_create_confirmation`, a first login goes to the confirmation page instead
    /// (`/authnz/{idp}/create_user?signup=<opaque id>`), without a session.
    #[oai(status = 303)]
    LoggedIn(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] Option<String>,
    ),
}

/// The result of a logout.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct LogoutResult {
    /// Whether a session was ended.
    pub logged_out: bool,
    /// The IdP's end-session URL to visit to log out there too, when it has one.
    pub end_session_url: Option<String>,
}

#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// The session is over; its cookie is cleared.
    #[oai(status = 200)]
    Ok(Json<LogoutResult>, #[oai(header = "Set-Cookie")] String),
    /// A browser form post is sent back to the start page.
    #[oai(status = 303)]
    Redirect(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] String,
    ),
}

/// A linked IdP identity.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IdentityView {
    pub idp: String,
    /// The subject (`sub`) at that IdP.
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Unix seconds.
    pub linked_at: i64,
    /// Unix seconds.
    pub last_login_at: i64,
}

/// The logged-in user.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Me {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub identities: Vec<IdentityView>,
    /// With a cookie session: the token its state-changing requests carry in `X-CSRF-Token`.
    pub csrf_token: Option<String>,
}

#[derive(ApiResponse)]
pub enum MeResponse {
    /// The user and their linked identities.
    #[oai(status = 200)]
    Ok(Json<Me>),
}

/// The state of one IdP.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct IdpHealth {
    pub name: String,
    pub kind: String,
    /// `ready` (discovered), `pending` (not yet discovered), `failing` (the last discovery
    /// failed) or `unavailable` (credentials missing from the config).
    pub state: String,
    /// Why it is failing or unavailable.
    pub reason: Option<String>,
    /// Unix seconds of the last successful discovery.
    pub discovered_at: Option<i64>,
    /// JWKS fetches so far (discovery and key-rotation refetches).
    pub jwks_fetches: u64,
}

/// Liveness and the state of every IdP.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct Health {
    /// `ok` while the server serves.
    pub status: String,
    /// Whether every configured IdP has been discovered.
    pub ready: bool,
    /// The configuration generation in force (1 at start, +1 per reload).
    pub generation: u64,
    /// Unix seconds when it was loaded.
    pub loaded_at: i64,
    /// Why the last reload was refused (the previous configuration stays in force), if it was.
    pub reload_error: Option<String>,
    /// `ok`, or `failing` while the database cannot take writes (a full disk): not ready.
    pub store: String,
    /// Why the store fails (admin API only).
    pub store_error: Option<String>,
    pub idps: Vec<IdpHealth>,
}

/// The health report (shared by `/healthz`, `/readyz` and the admin API). Only `detail` (the
/// admin API) says why an entry is unavailable: the reason names files and environment
/// variables, which are nobody else's business.
pub async fn health(app: &App, detail: bool) -> Health {
    let generation = app.current();
    let mut idps = Vec::new();
    for idp in &generation.idps {
        let discovered_at = idp.discovered_at().await;
        let (state, reason) = match (discovered_at, idp.last_error()) {
            (Some(_), _) => ("ready", None),
            (None, Some(error)) => ("failing", Some(error)),
            (None, None) => ("pending", None),
        };
        idps.push(IdpHealth {
            name: idp.config.name.clone(),
            kind: idp.config.kind.clone(),
            state: state.to_string(),
            reason,
            discovered_at,
            jwks_fetches: idp
                .counters
                .jwks_fetches
                .load(std::sync::atomic::Ordering::Relaxed),
        });
    }
    for entry in &generation.config.unavailable {
        idps.push(IdpHealth {
            name: entry.name.clone(),
            kind: entry.kind.clone(),
            state: "unavailable".to_string(),
            reason: Some(if detail {
                entry.reason.clone()
            } else {
                "its credentials are not configured yet (admins: see /api/admin/status)".to_string()
            }),
            discovered_at: None,
            jwks_fetches: 0,
        });
    }
    let store_failure = app.store_failure();
    Health {
        status: "ok".to_string(),
        ready: store_failure.is_none()
            && idps
                .iter()
                .all(|idp| idp.state == "ready" || idp.state == "unavailable"),
        store: if store_failure.is_some() {
            "failing"
        } else {
            "ok"
        }
        .to_string(),
        store_error: store_failure.filter(|_| detail),
        generation: generation.number,
        loaded_at: generation.loaded_at,
        reload_error: app.reload_status().last_error.map(|error| {
            if detail {
                error
            } else {
                "the last reload was refused; the previous configuration stays in force (admins: see /api/admin/status)".to_string()
            }
        }),
        idps,
    }
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Every IdP is discovered.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Some IdP is still being discovered or failing, or the database cannot take writes.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// Prometheus text exposition format.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Ok(PlainText<String>),
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The server is alive; each IdP's state.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

/// The authnz API.
pub struct Api;

/// The value of a cookie in the request.
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(poem::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A `Set-Cookie` value with the attributes every authnz cookie carries. Under https the name
/// takes the `__Host-` prefix (Secure, `Path=/`, no `Domain`), so that a sibling subdomain
/// cannot toss in a cookie of its own (SECURITY I78); [`host_cookies`] maps it back on the way
/// in.
pub fn set_cookie(app: &App, name: &str, value: &str, path: &str, max_age: i64) -> String {
    if app.server.secure_cookies() {
        format!("{HOST_PREFIX}{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax; Secure")
    } else {
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax")
    }
}

/// The prefix of the cookie names under https.
pub const HOST_PREFIX: &str = "__Host-";

/// Under https, the request's cookies as the handlers read them: `__Host-authnz_*` under their
/// plain names, and a plain `authnz_*` cookie dropped, since anyone on a sibling subdomain can set
/// that one (SECURITY I78). Over http (loopback) the cookies pass as they are.
pub async fn host_cookies<E: poem::Endpoint>(
    next: E,
    mut req: Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    let secure = req
        .data::<Arc<App>>()
        .is_some_and(|app| app.server.secure_cookies());
    if secure {
        let ours = |name: &str| name == SESSION_COOKIE || name == LOGIN_COOKIE;
        let pairs: Vec<String> = req
            .headers()
            .get_all(poem::http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                match name.strip_prefix(HOST_PREFIX) {
                    Some(plain) if ours(plain) => Some(pair[HOST_PREFIX.len()..].to_string()),
                    _ if ours(name) => None,
                    _ => Some(pair.to_string()),
                }
            })
            .collect();
        let headers = req.headers_mut();
        headers.remove(poem::http::header::COOKIE);
        if let Ok(value) = poem::http::HeaderValue::from_str(&pairs.join("; ")) {
            if !pairs.is_empty() {
                headers.insert(poem::http::header::COOKIE, value);
            }
        }
    }
    Ok(next.call(req).await?.into_response())
}

/// Validates `next`: a same-origin path, or `/`. Absolute URLs, scheme-relative `//host`,
/// backslashes and control characters (raw or percent-encoded) all fall back to `/`.
pub fn safe_next(app: &App, next: Option<&str>) -> String {
    safe_next_on(&app.server.public_url, next)
}

/// [`safe_next`] against a given public URL.
pub fn safe_next_on(base: &url::Url, next: Option<&str>) -> String {
    let Some(next) = next.filter(|next| !next.is_empty()) else {
        return "/".to_string();
    };
    let decoded: String =
        url::form_urlencoded::parse(format!("x={}", next.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
    let suspicious = |text: &str| {
        !text.starts_with('/')
            || text.starts_with("//")
            || text.contains('\\')
            || text.chars().any(char::is_control)
    };
    if next.len() > 2048 || suspicious(next) || suspicious(&decoded) {
        return "/".to_string();
    }
    match base.join(next) {
        // `/.//evil` normalises to `//evil`, which a browser reads as another host.
        Ok(url) if url.origin() == base.origin() && !url.path().starts_with("//") => {
            let mut out = url.path().to_string();
            if let Some(query) = url.query() {
                out.push('?');
                out.push_str(query);
            }
            out
        }
        _ => "/".to_string(),
    }
}

/// Starts a login (or, with `link_user`, a connect flow for that logged-in user): stores the
/// pending login and returns the authorize URL and the pre-login cookie to set.
pub async fn start_login(
    app: &App,
    req: &Request,
    idp_name: &str,
    next: Option<&str>,
    link_user: Option<String>,
) -> Result<(String, String), FlowError> {
    if app
        .current()
        .config
        .unavailable
        .iter()
        .any(|entry| entry.name == idp_name)
    {
        return Err(FlowError::new(
            Status::Unavailable,
            "idp_unavailable",
            "this identity provider is not set up on this server yet",
        ));
    }
    let generation = app.current();
    let client = client_of(app, req);
    if generation.idp(idp_name).is_some()
        && app.limiter.admit(
            client,
            app.clock.now(),
            app.server.max_logins_per_client,
            app.server.max_pending_logins,
        ) == crate::app::Admission::TooMany
    {
        return Err(FlowError::new(
            Status::TooMany,
            "too_many_logins",
            "too many sign-ins were started; wait a few minutes and try again",
        ));
    }
    let idp = generation.idp(idp_name).ok_or_else(|| {
        FlowError::new(Status::NotFound, "unknown_idp", "no such identity provider")
    })?;
    if idp.config.kind == "dev" {
        check_loopback_client(app, req)?;
    }
    let next = safe_next(app, next);
    // One pre-login cookie per browser: reuse it so that logins in two tabs both work.
    let binding = cookie(req, LOGIN_COOKIE)
        .filter(|value| {
            value.len() == 43
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .unwrap_or_else(|| random_token(32));
    let now = app.clock.now();
    let mut request = idp.authorize(next, sha256_hex(&binding), now).await?;
    request.pending.link_user_id = link_user;
    request.pending.generation = generation.number;
    app.metrics.login_started(idp_name);
    app.store
        .put_pending_login(&request.state, &request.pending)?;
    let cookie = set_cookie(
        app,
        LOGIN_COOKIE,
        &binding,
        "/authnz",
        LOGIN_TTL.as_secs() as i64,
    );
    Ok((request.url, cookie))
}

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        Self {
            error: "invalid_state".into(),
            message: "this sign-in is unknown or was already used".into(),
        }
    }
}

impl poem_openapi::types::Example for LoginRedirect {
    fn example() -> Self {
        Self {
            redirect_uri: "https://organization.okta.com/oauth2/v1/authorize?response_type=code&client_id=0oa1example&redirect_uri=https%3A%2F%2Flogin.example.org%2Fauthnz%2Fokta%2Fcallback&scope=openid+email+profile&state=Qm9vNjR...&nonce=bm9uY2U...&code_challenge=E9Melhoa...&code_challenge_method=S256".into(),
        }
    }
}

impl poem_openapi::types::Example for Me {
    fn example() -> Self {
        Self {
            id: "8Jo8tX6lw8xZChKyDfOGWw".into(),
            username: "ann".into(),
            email: Some("ann@example.org".into()),
            display_name: Some("Ann Example".into()),
            created_at: 1_796_012_777,
            identities: vec![IdentityView {
                idp: "okta".into(),
                subject: "00u1abcd2EFGH3ijk4l5".into(),
                email: Some("ann@example.org".into()),
                email_verified: true,
                linked_at: 1_796_012_777,
                last_login_at: 1_796_012_777,
            }],
            csrf_token: Some("V-V7Me_x9YkJx4CnRHShWM440xo34B2GXQtNbojr3tY".into()),
        }
    }
}

/// The callback's query, refusing duplicated parameters (SECURITY A9).
pub(crate) fn callback_params(query: &str) -> Result<HashMap<String, String>, FlowError> {
    let mut params = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if params
            .insert(key.into_owned(), value.into_owned())
            .is_some()
        {
            return Err(FlowError::bad_request(
                "duplicate_parameter",
                "a callback parameter was given twice",
            ));
        }
    }
    Ok(params)
}

/// The callback's work, without the metrics around it.
async fn callback_flow(
    app: &App,
    req: &Request,
    idp_name: &str,
) -> Result<CallbackResponse, FlowError> {
    if !app.idp_known(idp_name) {
        return Err(FlowError::new(
            Status::NotFound,
            "unknown_idp",
            "no such identity provider",
        ));
    }
    let params = callback_params(req.uri().query().unwrap_or_default())?;
    let state = params
        .get("state")
        .filter(|state| !state.is_empty())
        .ok_or_else(|| FlowError::bad_request("missing_state", "the callback has no state"))?;
    // Single use: removed now, whatever happens next (SECURITY A4).
    let pending = app
        .store
        .take_pending_login(state)
        .map_err(FlowError::from)?
        .ok_or_else(|| {
            FlowError::bad_request(
                "invalid_state",
                "this sign-in is unknown or was already used",
            )
        })?;
    // The IdP the login started with, even if a reload replaced it since.
    let idp = app
        .idp_of_generation(idp_name, pending.generation)
        .ok_or_else(|| {
            FlowError::new(Status::NotFound, "unknown_idp", "no such identity provider")
        })?;
    if idp.config.kind == "dev" {
        check_loopback_client(app, req)?;
    }
    let now = app.clock.now();
    if now - pending.created_at > LOGIN_TTL.as_secs() as i64 || now < pending.created_at - 60 {
        return Err(FlowError::bad_request(
            "expired_state",
            "this sign-in took too long and expired",
        ));
    }
    if pending.idp != idp.config.name
        || pending.issuer != idp.config.issuer
        || pending.client_id != idp.config.client_id
        || pending.redirect_uri != idp.redirect_uri
    {
        return Err(FlowError::bad_request(
            "state_mismatch",
            "this sign-in was started for another identity provider",
        ));
    }
    let bound = cookie(req, LOGIN_COOKIE)
        .is_some_and(|binding| constant_time_eq(&sha256_hex(&binding), &pending.browser_hash));
    if !bound {
        return Err(FlowError::bad_request(
            "browser_mismatch",
            "this sign-in was started in another browser (or cookies are blocked)",
        ));
    }
    if let Some(error) = params.get("error") {
        let description = params
            .get("error_description")
            .map(String::as_str)
            .unwrap_or("");
        tracing::info!(idp = %idp.config.name, error = %crate::error::loggable(error), "IdP reported an error");
        return Err(FlowError::bad_request(
            "idp_error",
            format!("the identity provider reported: {error} {description}")
                .trim()
                .to_string(),
        ));
    }
    match params.get("iss") {
        Some(iss) if !idp.issuer_matches(iss) => {
            return Err(FlowError::bad_request(
                "issuer_mismatch",
                "the response came from another issuer",
            ));
        }
        None if idp.promises_iss().await? => {
            return Err(FlowError::bad_request(
                "issuer_missing",
                "the response lacks the issuer it promised",
            ));
        }
        _ => {}
    }
    let code = params
        .get("code")
        .filter(|code| !code.is_empty())
        .ok_or_else(|| {
            FlowError::bad_request("missing_code", "the callback has no authorization code")
        })?;
    // Connect flow: the session that started it must still be the one finishing it.
    let current = cookie(req, SESSION_COOKIE).map(|value| sha256_hex(&value));
    if let Some(link_user) = &pending.link_user_id {
        let session = match &current {
            Some(hash) => app.store.session(hash).map_err(FlowError::from)?,
            None => None,
        };
        if session.is_none_or(|s| &s.user_id != link_user || s.expires_at <= now) {
            return Err(FlowError::new(
                Status::Forbidden,
                "connect_session_mismatch",
                "connecting an identity must finish in the session that started it",
            ));
        }
    }
    let verified = idp.complete(&pending, code, now).await?;
    let finished = accounts::finish_login(
        app,
        &idp,
        verified,
        accounts::LoginContext {
            old_session: current.as_deref(),
            link_to: pending.link_user_id.clone(),
            next: pending.next.clone(),
            browser_hash: pending.browser_hash.clone(),
            now,
        },
    )
    .await?;
    match finished {
        accounts::Finished::LoggedIn(outcome, session_cookie) => {
            tracing::info!(idp = %idp.config.name, user = %outcome.user.id, created = outcome.created, linked = outcome.linked, "login completed");
            Ok(CallbackResponse::LoggedIn(
                app.server.url(&pending.next),
                Some(set_cookie(
                    app,
                    SESSION_COOKIE,
                    &session_cookie,
                    "/",
                    app.server.session_ttl.as_secs() as i64,
                )),
            ))
        }
        accounts::Finished::NeedsConfirmation(signup) => {
            let mut url = url::Url::parse(
                &app.server
                    .url(&format!("/authnz/{}/create_user", idp.config.name)),
            )
            .map_err(|_| FlowError::internal("bad public URL"))?;
            url.query_pairs_mut().append_pair("signup", &signup);
            Ok(CallbackResponse::LoggedIn(url.to_string(), None))
        }
    }
}

/// Blocks cross-site state-changing requests (SECURITY G64, G65).
pub fn check_same_origin(app: &App, req: &Request) -> Result<(), FlowError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let refused = || {
        FlowError::new(
            Status::Forbidden,
            "cross_site_request",
            "cross-site requests are refused",
        )
    };
    // Fetch metadata, when the browser sends it, is authoritative.
    match header("sec-fetch-site") {
        Some("same-origin" | "none") => return Ok(()),
        Some(_) => return Err(refused()),
        None => {}
    }
    match header("origin") {
        // A page with `Referrer-Policy: no-referrer` posts `Origin: null`; without fetch
        // metadata that cannot be told apart from another site, so it is refused.
        Some(origin) if origin != app.server.public_url.origin().ascii_serialization() => {
            Err(refused())
        }
        // Same origin, or a client that is no browser (no Origin at all: curl, scripts).
        _ => Ok(()),
    }
}

/// The client of a request (the peer, or who a trusted proxy forwarded for).
pub fn client_of(app: &App, req: &Request) -> Option<std::net::IpAddr> {
    crate::proxy::client_address(
        req.remote_addr().as_socket_addr().map(|addr| addr.ip()),
        req.headers(),
        &app.server.trusted_proxies,
    )
}

/// The dev IdP and its logins serve clients on this machine only (SECURITY I70): 403 for any
/// other, also when a proxy on loopback forwards them.
pub fn check_loopback_client(app: &App, req: &Request) -> Result<(), FlowError> {
    if client_of(app, req).is_some_and(|ip| ip.is_loopback()) {
        return Ok(());
    }
    tracing::warn!("a dev IdP request from a client off this machine was refused");
    Err(FlowError::new(
        Status::Forbidden,
        "dev_idp_loopback_only",
        "the dev IdP answers only clients on this machine",
    ))
}

/// A small form-encoded body (at most 16 KiB); anything else reads as empty.
pub(crate) async fn form_of(body: poem::Body) -> HashMap<String, String> {
    let bytes = body.into_bytes_limit(16 * 1024).await.unwrap_or_default();
    url::form_urlencoded::parse(&bytes).into_owned().collect()
}

/// The session's CSRF token must come with the request, in `X-CSRF-Token` or a `csrf` form
/// field (SECURITY G64, G65); 403 otherwise.
pub fn check_session_csrf(
    req: &Request,
    session: &crate::store::Session,
    form: &HashMap<String, String>,
) -> Result<(), FlowError> {
    let presented = req
        .headers()
        .get("x-csrf-token")
        .and_then(|value| value.to_str().ok())
        .or_else(|| form.get("csrf").map(String::as_str))
        .unwrap_or_default();
    if session.csrf.is_empty() || !constant_time_eq(presented, &session.csrf) {
        return Err(FlowError::new(
            Status::Forbidden,
            "csrf_token_invalid",
            "the request lacks this session's CSRF token",
        ));
    }
    Ok(())
}

/// The session of the request, from the cookie value.
pub fn session_of(
    app: &App,
    cookie_value: &str,
) -> Result<Option<crate::store::Session>, FlowError> {
    session_by_hash(app, &sha256_hex(cookie_value))
}

/// [`session_of`] for a cookie already hashed.
pub fn session_by_hash(app: &App, hash: &str) -> Result<Option<crate::store::Session>, FlowError> {
    let session = app.store.session(hash)?;
    Ok(session.filter(|session| session.expires_at > app.clock.now()))
}

#[OpenApi]
impl Api {
    /// The login page (HTML), or the account summary when logged in.
    #[oai(path = "/", method = "get", hidden)]
    async fn index(&self, req: &Request, app: Data<&Arc<App>>) -> Html<String> {
        Html(crate::ui::index(req, &app))
    }

    /// The configured identity providers, in config order: what a login page shows as buttons.
    #[oai(path = "/authnz", method = "get", tag = "ApiTags::Authnz")]
    async fn list_idps(&self, app: Data<&Arc<App>>) -> IdpListResponse {
        IdpListResponse::Ok(Json(
            app.current()
                .idps
                .iter()
                .map(|idp| IdpSummary {
                    name: idp.config.name.clone(),
                    label: idp.config.label.clone(),
                    icon: idp.config.icon.clone(),
                    kind: idp.config.kind.clone(),
                    login_path: format!("/authnz/{}/login", idp.config.name),
                })
                .collect(),
        ))
    }

    /// Starts a login: answers `{"redirect_uri": ...}`, the IdP's authorization URL to open in
    /// the same browser. A browser asking for HTML gets a 303 to it instead.
    #[oai(path = "/authnz/:idp/login", method = "get", tag = "ApiTags::Authnz")]
    async fn login(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        /// The IdP name from the config.
        idp: Path<String>,
        /// Where to go after logging in: a path on this server (anything else means `/`).
        next: Query<Option<String>>,
    ) -> Result<LoginResponse, LoginError> {
        let app = *app;
        let (url, cookie) = start_login(app, req, &idp.0, next.0.as_deref(), None).await?;
        Ok(if prefers_html(req) {
            LoginResponse::Redirect(url, cookie)
        } else {
            LoginResponse::Ok(Json(LoginRedirect { redirect_uri: url }), cookie)
        })
    }

    /// Where the IdP sends the browser back (`code`, `state`, `iss`). Verifies everything,
    /// creates the user on first login, starts a fresh session and redirects to `next`.
    #[oai(
        path = "/authnz/:idp/callback",
        method = "get",
        tag = "ApiTags::Authnz"
    )]
    async fn callback(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        /// The IdP name from the config.
        idp: Path<String>,
        /// The authorization code.
        code: Query<Option<String>>,
        /// The state of the login (required: a callback without one is refused).
        state: Query<String>,
        /// The issuer (RFC 9207).
        iss: Query<Option<String>>,
    ) -> Result<CallbackResponse, CallbackError> {
        let _ = (code, state, iss); // documented above; read from the raw query below
        let app = *app;
        let started = std::time::Instant::now();
        let result = callback_flow(app, req, &idp.0).await;
        // Metrics by IdP name only for configured names (no label per random URL).
        if app.idp_known(&idp.0) {
            match &result {
                Ok(_) => app.metrics.login_completed(&idp.0, started.elapsed()),
                Err(err) => app
                    .metrics
                    .login_failed(&idp.0, err.code, started.elapsed()),
            }
        }
        result.map_err(Into::into)
    }

    /// Ends the session. Only same-origin requests that carry the session's CSRF token
    /// (`X-CSRF-Token` header or `csrf` form field) are accepted.
    #[oai(path = "/authnz/logout", method = "post", tag = "ApiTags::Authnz")]
    async fn logout(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        body: poem::Body,
    ) -> Result<LogoutResponse, LogoutError> {
        let app = *app;
        check_same_origin(app, req)?;
        let form = form_of(body).await;
        let mut end_session_url = None;
        let mut logged_out = false;
        if let Some(value) = cookie(req, SESSION_COOKIE) {
            let hash = sha256_hex(&value);
            if let Some(session) = app.store.session(&hash)? {
                // Like every state change of a session (SECURITY G64).
                check_session_csrf(req, &session, &form)?;
                if let Some(idp) = app.idp(&session.idp) {
                    // This session's own ID token: another browser's login of the same identity
                    // is not this one's to end (SECURITY I76).
                    let hint = accounts::session_id_token(app, &session);
                    end_session_url = idp
                        .end_session_url(hint.as_deref(), &app.server.url("/"), &random_token(16))
                        .await;
                }
                // SECURITY G64: the stored tokens go with the last session that used them.
                let now = app.clock.now();
                if !app.store.identity_has_other_sessions(
                    &session.idp,
                    &session.subject,
                    &hash,
                    now,
                )? {
                    app.store.delete_tokens(&session.idp, &session.subject)?;
                }
                logged_out = app.store.delete_session(&hash)?;
            }
        }
        let clear = set_cookie(app, SESSION_COOKIE, "", "/", 0);
        Ok(if prefers_html(req) {
            LogoutResponse::Redirect(end_session_url.unwrap_or_else(|| "/".to_string()), clear)
        } else {
            LogoutResponse::Ok(
                Json(LogoutResult {
                    logged_out,
                    end_session_url,
                }),
                clear,
            )
        })
    }

    /// Liveness, and for each IdP whether it is ready, still being discovered, failing (with
    /// the last error) or unavailable (with the reason). Never shows a secret.
    #[oai(path = "/healthz", method = "get", tag = "ApiTags::Authnz")]
    async fn healthz(&self, app: Data<&Arc<App>>) -> HealthResponse {
        HealthResponse::Ok(Json(health(&app, false).await))
    }

    /// Readiness: 200 once every configured IdP is discovered and while the database takes
    /// writes; 503 otherwise (same report).
    #[oai(path = "/readyz", method = "get", tag = "ApiTags::Authnz")]
    async fn readyz(&self, app: Data<&Arc<App>>) -> ReadyResponse {
        let report = health(&app, false).await;
        if report.ready {
            ReadyResponse::Ready(Json(report))
        } else {
            ReadyResponse::NotReady(Json(report))
        }
    }

    /// Prometheus metrics: logins started, completed and failed per IdP and reason, callback
    /// latency, JWKS fetches, reloads.
    #[oai(path = "/metrics", method = "get", tag = "ApiTags::Authnz")]
    async fn metrics(&self, app: Data<&Arc<App>>) -> MetricsResponse {
        let generation = app.current();
        let jwks: Vec<(String, u64)> = generation
            .idps
            .iter()
            .map(|idp| {
                (
                    idp.config.name.clone(),
                    idp.counters
                        .jwks_fetches
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect();
        MetricsResponse::Ok(PlainText(app.metrics.render(&jwks, generation.number)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dot_segments_that_normalise_to_a_host_mean_the_start_page() {
        let base = url::Url::parse("https://login.example.org").unwrap();
        for next in [
            "/.//evil",
            "/..//evil.example",
            "/././/evil/x",
            "/a/..//evil",
        ] {
            assert_eq!(safe_next_on(&base, Some(next)), "/", "{next}");
        }
        assert_eq!(safe_next_on(&base, Some("/a/./b")), "/a/b");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn next_is_always_a_local_path(next in any::<String>()) {
            let base = url::Url::parse("https://login.example.org").unwrap();
            let safe = safe_next_on(&base, Some(&next));
            prop_assert!(safe.starts_with('/') && !safe.starts_with("//"), "{safe:?}");
            prop_assert!(!safe.contains('\\') && !safe.chars().any(char::is_control), "{safe:?}");
            let resolved = base.join(&safe).unwrap();
            prop_assert_eq!(resolved.origin(), base.origin());
        }

        #[test]
        fn dot_segments_never_make_a_host(prefix in "(/\\.{1,2}){1,3}", rest in "/{1,3}[a-z]{1,8}") {
            let base = url::Url::parse("https://login.example.org").unwrap();
            let safe = safe_next_on(&base, Some(&format!("{prefix}{rest}")));
            prop_assert!(!safe.starts_with("//"), "{safe:?}");
        }

        #[test]
        fn plain_paths_are_kept(path in "(/[a-z0-9_-]{1,8}){1,4}") {
            let base = url::Url::parse("https://login.example.org").unwrap();
            prop_assert_eq!(safe_next_on(&base, Some(&path)), path);
        }

        #[test]
        fn callback_queries_never_panic_and_refuse_duplicates(query in any::<String>()) {
            if let Ok(params) = callback_params(&query) {
                let mut keys: Vec<String> = url::form_urlencoded::parse(query.as_bytes()).map(|(k, _)| k.into_owned()).collect();
                let total = keys.len();
                keys.sort();
                keys.dedup();
                prop_assert_eq!(keys.len(), total, "duplicates were accepted");
                prop_assert_eq!(params.len(), total);
            }
        }
    }
}

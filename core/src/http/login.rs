//! The login flow: the IdP list, `/login`, `/callback` and `/logout`.
//!
//! ```text
//! GET /authnz/{idp}/login ──► start_login: rate limit, pending login (state, nonce, PKCE),
//!                             the authnz_login cookie binds it to this browser
//!        │ 303 (or {"redirect_uri"}) to the IdP's authorize endpoint
//!        ▼
//! the IdP authenticates the person and redirects back
//!        │
//! GET /authnz/{idp}/callback ─► parse (duplicate parameters refused)
//!        │                      take the pending login (single use)
//!        │                      protocol::check_callback: TTL, mix-up, browser, error=, iss, connect
//!        │                      protocol: code exchange, ID token, userinfo
//!        │                      accounts::finish_login: map, link, store, session (one transaction)
//!        ▼
//! 303 to `next` with a fresh authnz_session cookie (or to the sign-up confirmation page)
//!
//! POST /authnz/logout ────────► same origin + CSRF token; the IdP's end-session URL
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use poem::web::Data;
use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Html, Json, Response};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::error::{FlowError, Status};
use crate::accounts;
use crate::config::{AppConfig, LOGIN_TTL};
use crate::crypto::{random_token, sha256_hex};
use crate::protocol;
use crate::state::App;

use super::cookies::{cookie, set_cookie, LOGIN_COOKIE, LOGOUT_NEXT_COOKIE, SESSION_COOKIE};
use super::error::{error_responses, ErrorBody};
use super::request::{
    check_loopback_client, check_same_origin, check_session_csrf, client_of, form_of, prefers_html,
};
use super::tags::ApiTags;

error_responses!(LoginError {
    /// A malformed step-up (`max_age`, `acr_values`).
    BadRequest = 400,
    /// No IdP of that name is configured.
    NotFound = 404,
    /// A dev IdP login from a client off this machine.
    Forbidden = 403,
    /// The IdP's discovery document could not be fetched or is unsafe.
    BadGateway = 502,
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

#[derive(ApiResponse)]
pub enum JwksResponse {
    /// `{"keys": [...]}`: the entry's public key (RFC 7517), with its `kid` and `alg`.
    #[oai(status = 200)]
    Keys(Json<serde_json::Value>),
}

error_responses!(JwksError {
    /// No IdP of that name, or one without `private_key_jwt`.
    NotFound = 404,
});

error_responses!(LogoutError {
    /// The request came from another site (CSRF).
    Forbidden = 403,
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
    /// (`/authnz/{idp}/create_user?signup=<opaque id>`), without a session. A browser's first
    /// login whose address belongs to an account goes, without a session, to the page that
    /// offers to connect this IdP to it (`/authnz/{idp}/email_in_use?intent=<opaque id>`);
    /// other clients get 409 `email_in_use`.
    #[oai(status = 303)]
    LoggedIn(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] Option<String>,
    ),
}

/// The answer to a posted callback.
#[derive(ApiResponse)]
pub enum PostedCallbackResponse {
    /// As for a redirect's callback: a fresh `authnz_session` cookie, and on to `next` (or to
    /// the confirmation or email-conflict page).
    #[oai(status = 303)]
    LoggedIn(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] Option<String>,
    ),
    /// The IdP's post came from its own site, without this site's cookies: a page that posts
    /// the same fields again from here.
    #[oai(status = 200)]
    Again(Html<String>),
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

impl poem_openapi::types::Example for LoginRedirect {
    fn example() -> Self {
        Self {
            redirect_uri: "https://organization.okta.com/oauth2/v1/authorize?response_type=code&client_id=0oa1example&redirect_uri=https%3A%2F%2Flogin.example.org%2Fauthnz%2Fokta%2Fcallback&scope=openid+email+profile&state=Qm9vNjR...&nonce=bm9uY2U...&code_challenge=E9Melhoa...&code_challenge_method=S256".into(),
        }
    }
}

/// The longest `next` kept; a longer one means `/`.
pub const MAX_NEXT: usize = 2048;

/// Validates `next`: a same-origin path, or an absolute URL on a configured app's `url`;
/// anything else means `/`. Scheme-relative `//host`, backslashes, control characters (raw or
/// percent-encoded), userinfo and every other origin all fall back to `/`.
pub fn safe_next(app: &App, next: Option<&str>) -> String {
    safe_next_on(&app.server.public_url, &app.current().config.apps, next)
}

/// Where the browser goes after a login that was given `next` (validated again: the app
/// it names may have left the config since).
pub fn next_url(app: &App, next: &str) -> String {
    let next = safe_next(app, Some(next));
    if next.starts_with('/') {
        app.server.url(&next)
    } else {
        next
    }
}

/// [`safe_next`] against a given public URL and apps.
pub fn safe_next_on(base: &url::Url, apps: &[AppConfig], next: Option<&str>) -> String {
    let Some(next) = next.filter(|next| !next.is_empty()) else {
        return "/".to_string();
    };
    let decoded: String =
        url::form_urlencoded::parse(format!("x={}", next.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
    let hostile = |text: &str| text.contains('\\') || text.chars().any(char::is_control);
    if next.len() > MAX_NEXT || hostile(next) || hostile(&decoded) {
        return "/".to_string();
    }
    if next.starts_with("https://") || next.starts_with("http://") {
        return absolute_next(apps, next).unwrap_or_else(|| "/".to_string());
    }
    if !next.starts_with('/') || next.starts_with("//") || decoded.starts_with("//") {
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

/// An absolute `next` on a configured app: no userinfo (`https://app@evil`), no whitespace,
/// and on the app's origin and path, as the URL parser reads it (look-alike hosts such as
/// `app.example.org.evil.com` are another origin).
fn absolute_next(apps: &[AppConfig], next: &str) -> Option<String> {
    if next.contains(char::is_whitespace) {
        return None;
    }
    let url = url::Url::parse(next).ok()?;
    let plain = url.username().is_empty() && url.password().is_none() && url.host().is_some();
    (plain && apps.iter().any(|app| app.serves(&url))).then(|| url.to_string())
}

/// The answer of `/login` (also for the hot path, see `super::hot`).
pub(crate) async fn login(
    app: &App,
    req: &Request,
    idp: &str,
    next: Option<&str>,
) -> Result<LoginResponse, LoginError> {
    let step_up = step_up_of(req)?;
    let (url, cookie) = start_login(app, req, idp, next, None, &step_up).await?;
    Ok(if prefers_html(req) {
        LoginResponse::Redirect(url, cookie)
    } else {
        LoginResponse::Ok(Json(LoginRedirect { redirect_uri: url }), cookie)
    })
}

/// A login's step-up (`max_age`, `acr_values` in its query, as an app's forward-auth answer
/// asks): only ever stricter than a plain login, so anyone may ask for it.
fn step_up_of(req: &Request) -> Result<protocol::StepUp, FlowError> {
    let query = req.uri().query().unwrap_or_default();
    // The common login has neither: nothing to parse.
    if !query.contains("max_age") && !query.contains("acr_values") {
        return Ok(protocol::StepUp::default());
    }
    let value = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    let max_age = match value("max_age") {
        None => None,
        Some(age) => Some(
            age.parse::<i64>()
                .ok()
                .filter(|age| (0..=31_536_000).contains(age))
                .ok_or_else(|| {
                    FlowError::bad_request(
                        "invalid_request",
                        "max_age must be 0 to 31536000 seconds",
                    )
                })?,
        ),
    };
    let acr_values: Vec<String> = value("acr_values")
        .unwrap_or_default()
        .split(' ')
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .collect();
    if acr_values.len() > 10
        || acr_values
            .iter()
            .any(|value| value.len() > 200 || !value.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(FlowError::bad_request(
            "invalid_request",
            "acr_values must be at most 10 printable values",
        ));
    }
    Ok(protocol::StepUp {
        max_age,
        acr_values,
    })
}

/// Starts a login (or, with `link_user`, a connect flow for that logged-in user): stores the
/// pending login and returns the authorize URL and the pre-login cookie to set.
pub async fn start_login(
    app: &App,
    req: &Request,
    idp_name: &str,
    next: Option<&str>,
    link_user: Option<String>,
    step_up: &protocol::StepUp,
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
        ) == crate::state::Admission::TooMany
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
    if idp.config.is_dev() {
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
    let mut request = idp
        .authorize(
            next,
            sha256_hex(&binding),
            now,
            app.vault.login_secrets(),
            step_up,
        )
        .await?;
    request.pending.link_user_id = link_user;
    app.metrics.login_started(idp_name);
    app.store
        .put_pending_login(&request.state, &request.pending)
        .await?;
    let cookie = set_cookie(
        app,
        LOGIN_COOKIE,
        &binding,
        "/authnz",
        LOGIN_TTL.as_secs() as i64,
    );
    Ok((request.url, cookie))
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

/// The fields of an authorization answer a posted callback passes on.
const CALLBACK_FIELDS: &[&str] = &[
    "code",
    "state",
    "iss",
    "error",
    "error_description",
    "error_uri",
];

/// The callback's answer, with its metrics (by IdP name only for configured names: no label per
/// random URL).
fn counted(
    app: &App,
    idp: &str,
    started: std::time::Instant,
    result: Result<Callback, FlowError>,
) -> Result<CallbackResponse, FlowError> {
    if app.idp_known(idp) {
        match &result {
            Ok(Callback::Done(_)) => app.metrics.login_completed(idp, started.elapsed()),
            Ok(Callback::Refused(_, code)) => {
                app.metrics.login_failed(idp, code, started.elapsed())
            }
            Err(err) => app.metrics.login_failed(idp, err.code, started.elapsed()),
        }
    }
    match result {
        Ok(Callback::Done(answer) | Callback::Refused(answer, _)) => Ok(answer),
        Err(err) => Err(err),
    }
}

/// How a callback ended: a login, or a refusal that a page explains (with its error code).
pub(crate) enum Callback {
    Done(CallbackResponse),
    Refused(CallbackResponse, &'static str),
}

/// How the IdP returned the browser: the callback's parameters, from the URL or posted.
pub(crate) enum Returned<'a> {
    Query(&'a str),
    FormPost(&'a str),
}

/// The callback's work, without the metrics around it.
pub(crate) async fn callback_flow(
    app: &App,
    req: &Request,
    idp_name: &str,
    returned: Returned<'_>,
) -> Result<Callback, FlowError> {
    if !app.idp_known(idp_name) {
        return Err(FlowError::new(
            Status::NotFound,
            "unknown_idp",
            "no such identity provider",
        ));
    }
    let (raw, posted) = match returned {
        Returned::Query(query) => (query, false),
        Returned::FormPost(body) => (body, true),
    };
    let params = callback_params(raw)?;
    let state = params
        .get("state")
        .filter(|state| !state.is_empty())
        .ok_or_else(|| FlowError::bad_request("missing_state", "the callback has no state"))?;
    // Single use: removed now, whatever happens next (SECURITY A4).
    let pending = app
        .store
        .take_pending_login(state)
        .await
        .map_err(FlowError::from)?
        .ok_or_else(|| {
            FlowError::bad_request(
                "invalid_state",
                "this sign-in is unknown or was already used",
            )
        })?;
    // The IdP the login started with, even if a reload replaced it since.
    let idp = app
        .idp_for_login(idp_name, &pending.idp_fingerprint)
        .ok_or_else(|| {
            FlowError::new(Status::NotFound, "unknown_idp", "no such identity provider")
        })?;
    if idp.config.is_dev() {
        check_loopback_client(app, req)?;
    }
    // Each entry comes back one way only: a post where a redirect is expected is no answer of
    // its IdP's (and the other way round).
    if posted != idp.config.form_post {
        return Err(FlowError::bad_request(
            "wrong_response_mode",
            if posted {
                "this identity provider returns by redirect, not by a posted form"
            } else {
                "this identity provider returns by a posted form (response_mode = \"form_post\")"
            },
        ));
    }
    let now = app.clock.now();
    // Discovery said whether the IdP sends RFC 9207 `iss`; asked only when it is absent.
    let promises_iss = !params.contains_key("iss") && idp.promises_iss().await?;
    let binding = cookie(req, LOGIN_COOKIE).map(|binding| sha256_hex(&binding));
    // The session the browser holds now: ended by the login, and for a connect flow the one
    // that must have started it.
    let current = cookie(req, SESSION_COOKIE).map(|value| sha256_hex(&value));
    let session = match (&pending.link_user_id, &current) {
        (Some(_), Some(hash)) => app.store.session(hash).await.map_err(FlowError::from)?,
        _ => None,
    };
    let browser = protocol::Browser {
        binding_hash: binding.as_deref(),
        session: session
            .as_ref()
            .map(|session| (session.user_id.as_str(), session.expires_at)),
    };
    let code = protocol::check_callback(&pending, &params, &idp, promises_iss, browser, now)
        .map_err(|refusal| {
            if let (protocol::CallbackRefusal::IdpError(_), Some(error)) = (&refusal, params.get("error")) {
                tracing::info!(idp = %idp.config.name, error = %crate::text::loggable(error), "IdP reported an error");
            }
            callback_refused(refusal)
        })?;
    let verified = idp.complete(&pending, code, now).await?;
    let finished = app
        .accounts()
        .finish_login(
            &idp,
            verified,
            accounts::LoginContext {
                old_session: current.as_deref(),
                link_to: pending.link_user_id.clone(),
                next: pending.next.clone(),
                browser_hash: pending.browser_hash.clone(),
                now,
                device: req
                    .headers()
                    .get(poem::http::header::USER_AGENT)
                    .and_then(|value| value.to_str().ok())
                    .and_then(accounts::device::label),
                network: client_of(app, req).map(accounts::device::network),
                offer_connect: prefers_html(req),
            },
        )
        .await?;
    match finished {
        accounts::Finished::LoggedIn(outcome, session_cookie) => {
            tracing::info!(idp = %idp.config.name, user = %outcome.user.id, created = outcome.created, linked = outcome.linked, "login completed");
            Ok(Callback::Done(CallbackResponse::LoggedIn(
                next_url(app, &pending.next),
                Some(set_cookie(
                    app,
                    SESSION_COOKIE,
                    &session_cookie,
                    "/",
                    app.server.session_ttl.as_secs() as i64,
                )),
            )))
        }
        accounts::Finished::NeedsConfirmation(signup) => {
            let mut url = url::Url::parse(
                &app.server
                    .url(&format!("/authnz/{}/create_user", idp.config.name)),
            )
            .map_err(|_| FlowError::internal("bad public URL"))?;
            url.query_pairs_mut().append_pair("signup", &signup);
            Ok(Callback::Done(CallbackResponse::LoggedIn(
                url.to_string(),
                None,
            )))
        }
        accounts::Finished::EmailInUse(refusal, intent) => {
            tracing::info!(idp = %idp.config.name, "a first login's address belongs to an account; offered to connect it");
            let mut url = url::Url::parse(
                &app.server
                    .url(&format!("/authnz/{}/email_in_use", idp.config.name)),
            )
            .map_err(|_| FlowError::internal("bad public URL"))?;
            url.query_pairs_mut().append_pair("intent", &intent);
            Ok(Callback::Refused(
                CallbackResponse::LoggedIn(url.to_string(), None),
                refusal.code(),
            ))
        }
    }
}

/// The authnz API.
pub struct LoginApi;

/// The answer to a refused callback: 400, or 403 for a connect flow finished elsewhere.
fn callback_refused(refusal: protocol::CallbackRefusal) -> FlowError {
    let status = match refusal {
        protocol::CallbackRefusal::ConnectSessionMismatch => Status::Forbidden,
        _ => Status::BadRequest,
    };
    FlowError::new(status, refusal.code(), refusal.to_string())
}

#[OpenApi]
impl LoginApi {
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
        /// Where to go after logging in: a path on this server or a URL on a configured app's
        /// `url` (anything else means `/`).
        next: Query<Option<String>>,
        /// Step-up: the IdP must have authenticated the person at most this many seconds ago
        /// (the ID token's `auth_time` is checked), as an app's forward-auth answer asks.
        max_age: Query<Option<i64>>,
        /// Step-up: authentication context classes, space-separated; the ID token's `acr`
        /// must be one of them.
        acr_values: Query<Option<String>>,
    ) -> Result<LoginResponse, LoginError> {
        let _ = (max_age, acr_values); // documented above; read from the raw query
        login(*app, req, &idp.0, next.0.as_deref()).await
    }

    /// The public key this IdP entry signs its client assertions with (`client_auth =
    /// "private_key_jwt"`), as a JWKS: what an IdP that fetches a client's keys registers as
    /// its `jwks_uri`. 404 for an entry without a key.
    #[oai(
        path = "/authnz/:idp/jwks.json",
        method = "get",
        tag = "ApiTags::Authnz"
    )]
    async fn client_jwks(
        &self,
        app: Data<&Arc<App>>,
        /// The IdP name from the config.
        idp: Path<String>,
    ) -> Result<JwksResponse, JwksError> {
        let key = app
            .idp(&idp.0)
            .and_then(|idp| idp.config.client_key.clone())
            .ok_or_else(|| {
                FlowError::new(
                    Status::NotFound,
                    "not_found",
                    "this identity provider entry signs no client assertions",
                )
            })?;
        Ok(JwksResponse::Keys(Json(
            serde_json::json!({ "keys": [key.jwk()] }),
        )))
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
        let query = req.uri().query().unwrap_or_default();
        let result = callback_flow(app, req, &idp.0, Returned::Query(query)).await;
        counted(app, &idp.0, started, result).map_err(Into::into)
    }

    /// Where an IdP with `response_mode = "form_post"` posts the browser back (`code`, `state`,
    /// `iss` as form fields). A post from the IdP's site carries none of this site's
    /// SameSite=Lax cookies, so the pre-login cookie that binds the sign-in to the browser is
    /// missing: such a post (told by `Sec-Fetch-Site` or `Origin`) is answered with a page
    /// that posts the same fields again from this origin, at once (a script of this origin;
    /// a button without script), and that post, with the browser's cookies, is checked like a
    /// redirect's callback. Nothing is consumed by the first post.
    #[oai(
        path = "/authnz/:idp/callback",
        method = "post",
        tag = "ApiTags::Authnz"
    )]
    async fn callback_post(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        /// The IdP name from the config.
        idp: Path<String>,
        body: poem::Body,
    ) -> Result<PostedCallbackResponse, CallbackError> {
        let app = *app;
        let started = std::time::Instant::now();
        let body = body.into_bytes_limit(16 * 1024).await.map_err(|_| {
            FlowError::bad_request("invalid_request", "the posted answer is too large")
        })?;
        let body = String::from_utf8_lossy(&body);
        if check_same_origin(app, req).is_err() {
            // Only the fields of an answer, each escaped; the state is not even looked at.
            let fields: String = url::form_urlencoded::parse(body.as_bytes())
                .filter(|(name, _)| CALLBACK_FIELDS.contains(&name.as_ref()))
                .map(|(name, value)| {
                    format!(
                        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                        crate::html::escape(&name),
                        crate::html::escape(&value)
                    )
                })
                .collect();
            let action = format!("/authnz/{}/callback", crate::html::escape(&idp.0));
            let page = crate::html::page(
                &crate::i18n::t("continue-sign-in-title"),
                &format!(
                    "<form method=\"post\" action=\"{action}\" data-auto-submit>{fields}<p>{}</p><button type=\"submit\">{}</button></form><script src=\"/authnz/assets/continue.js\"></script>",
                    crate::html::escape(&crate::i18n::t("continue-sign-in")),
                    crate::html::escape(&crate::i18n::t("continue")),
                ),
            );
            return Ok(PostedCallbackResponse::Again(Html(page)));
        }
        let result = callback_flow(app, req, &idp.0, Returned::FormPost(&body)).await;
        match counted(app, &idp.0, started, result)? {
            CallbackResponse::LoggedIn(location, cookie) => {
                Ok(PostedCallbackResponse::LoggedIn(location, cookie))
            }
        }
    }

    /// Ends the session. Only same-origin requests that carry the session's CSRF token
    /// (`X-CSRF-Token` header or `csrf` form field) are accepted. A browser's form post goes
    /// on to the IdP's end-session URL when it has one, else to the form's `next` (a path here
    /// or a URL on a configured app), else to `/`.
    #[oai(path = "/authnz/logout", method = "post", tag = "ApiTags::Authnz")]
    async fn logout(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        body: poem::Body,
    ) -> Result<Response<LogoutResponse>, LogoutError> {
        let app = *app;
        check_same_origin(app, req)?;
        let form = form_of(body).await;
        let mut end_session_url = None;
        let mut logged_out = false;
        if let Some(value) = cookie(req, SESSION_COOKIE) {
            let hash = sha256_hex(&value);
            if let Some(session) = app.store.session(&hash).await? {
                // Like every state change of a session (SECURITY G64).
                check_session_csrf(req, &session, &form)?;
                if let Some(idp) = app.idp(&session.idp) {
                    // This session's own ID token: another browser's login of the same identity
                    // is not this one's to end (SECURITY I76).
                    let hint = app.accounts().session_id_token(&session);
                    end_session_url = idp
                        .end_session_url(hint.as_deref(), &app.server.url("/"), &random_token(16))
                        .await;
                }
                // SECURITY G64: the stored tokens go with the last session that used them.
                logged_out = app
                    .accounts()
                    .end_session(&hash, &session, app.clock.now())
                    .await?;
            }
        }
        let clear = set_cookie(app, SESSION_COOKIE, "", "/", 0);
        Ok(if prefers_html(req) {
            // Where an app's logout link asked to go (`next`); the IdP's own logout comes
            // first when it has one: it returns to the start page (its registered redirect),
            // which goes on to `next`.
            let next = safe_next(app, form.get("next").map(String::as_str));
            match end_session_url {
                Some(end_session) if next != "/" => {
                    let encoded: String =
                        url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
                    let remember = set_cookie(app, LOGOUT_NEXT_COOKIE, &encoded, "/", 600);
                    // Both cookies: the wrapper's replace the variant's.
                    Response::new(LogoutResponse::Redirect(end_session, clear.clone()))
                        .header(poem::http::header::SET_COOKIE, clear)
                        .header(poem::http::header::SET_COOKIE, remember)
                }
                Some(end_session) => Response::new(LogoutResponse::Redirect(end_session, clear)),
                None => Response::new(LogoutResponse::Redirect(next_url(app, &next), clear)),
            }
        } else {
            Response::new(LogoutResponse::Ok(
                Json(LogoutResult {
                    logged_out,
                    end_session_url,
                }),
                clear,
            ))
        })
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
            assert_eq!(safe_next_on(&base, &[], Some(next)), "/", "{next}");
        }
        assert_eq!(safe_next_on(&base, &[], Some("/a/./b")), "/a/b");
    }

    fn galaxy() -> AppConfig {
        AppConfig::at("galaxy", "https://galaxy.example.org/galaxy/")
    }

    #[test]
    fn an_absolute_next_must_be_on_a_configured_app() {
        let base = url::Url::parse("https://login.example.org").unwrap();
        let apps = [galaxy()];
        for kept in [
            "https://galaxy.example.org/galaxy/",
            "https://galaxy.example.org/galaxy/histories/list?page=2",
            "https://galaxy.example.org/galaxy",
            "https://GALAXY.example.org/galaxy/x",
        ] {
            let safe = safe_next_on(&base, &apps, Some(kept));
            assert!(
                safe.starts_with("https://galaxy.example.org/galaxy"),
                "{kept} → {safe}"
            );
        }
        for refused in [
            "https://galaxy.example.org/other",
            "https://galaxy.example.org/galaxyx",
            "https://galaxy.example.org.evil.com/galaxy/",
            "https://galaxy.example.org@evil.com/galaxy/",
            "https://user:pw@galaxy.example.org/galaxy/",
            "https://evil.com#@galaxy.example.org/galaxy/",
            "https://evil.com\\@galaxy.example.org/galaxy/",
            "https://galaxy.example.org\\evil.com/galaxy/",
            "http://galaxy.example.org/galaxy/",
            "https://galaxy.example.org:8443/galaxy/",
            "https://galaxy.example.org/galaxy/%0d%0aSet-Cookie:x=1",
            "https://galaxy.example.org/galaxy/\r\nx",
            "https://galaxy.example.org/galaxy/ x",
            "https:galaxy.example.org/galaxy/",
            "javascript://galaxy.example.org/galaxy/%0aalert(1)",
            "//galaxy.example.org/galaxy/",
        ] {
            assert_eq!(safe_next_on(&base, &apps, Some(refused)), "/", "{refused}");
        }
        let long = format!("https://galaxy.example.org/galaxy/{}", "a".repeat(MAX_NEXT));
        assert_eq!(safe_next_on(&base, &apps, Some(&long)), "/");
        assert_eq!(
            safe_next_on(&base, &[], Some("https://galaxy.example.org/galaxy/")),
            "/",
            "no app, no absolute next"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn next_is_always_a_local_path(next in any::<String>()) {
            let base = url::Url::parse("https://login.example.org").unwrap();
            let safe = safe_next_on(&base, &[], Some(&next));
            prop_assert!(safe.starts_with('/') && !safe.starts_with("//"), "{safe:?}");
            let on_app = safe_next_on(&base, &[galaxy()], Some(&next));
            if !on_app.starts_with('/') {
                let url = url::Url::parse(&on_app).unwrap();
                prop_assert!(galaxy().serves(&url) && url.username().is_empty(), "{on_app:?}");
            }
            prop_assert!(!safe.contains('\\') && !safe.chars().any(char::is_control), "{safe:?}");
            let resolved = base.join(&safe).unwrap();
            prop_assert_eq!(resolved.origin(), base.origin());
        }

        #[test]
        fn an_absolute_next_lands_on_the_app_or_home(
            prefix in prop_oneof![
                Just("https://galaxy.example.org/galaxy"),
                Just("https://galaxy.example.org"),
                Just("https://"),
            ],
            rest in any::<String>(),
        ) {
            let base = url::Url::parse("https://login.example.org").unwrap();
            let safe = safe_next_on(&base, &[galaxy()], Some(&format!("{prefix}{rest}")));
            if safe != "/" {
                let url = url::Url::parse(&safe).unwrap();
                prop_assert!(galaxy().serves(&url), "{safe:?}");
                prop_assert!(url.username().is_empty() && url.password().is_none(), "{safe:?}");
                prop_assert!(!safe.chars().any(|c| c.is_control() || c.is_whitespace()), "{safe:?}");
            }
        }

        #[test]
        fn dot_segments_never_make_a_host(prefix in "(/\\.{1,2}){1,3}", rest in "/{1,3}[a-z]{1,8}") {
            let base = url::Url::parse("https://login.example.org").unwrap();
            let safe = safe_next_on(&base, &[], Some(&format!("{prefix}{rest}")));
            prop_assert!(!safe.starts_with("//"), "{safe:?}");
        }

        #[test]
        fn plain_paths_are_kept(path in "(/[a-z0-9_-]{1,8}){1,4}") {
            let base = url::Url::parse("https://login.example.org").unwrap();
            prop_assert_eq!(safe_next_on(&base, &[], Some(&path)), path);
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

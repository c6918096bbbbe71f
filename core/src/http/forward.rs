//! Forward authentication: for every request to an app behind it, a reverse proxy (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth) asks `GET /authnz/auth?app=NAME`
//! who is signed in, and copies the identity headers of a 200 onto the request it forwards.
//! Also the keys that sign the apps' assertions (`/.well-known/jwks.json`).
//!
//! What the proxy says about the original request (`X-Original-URL`, `X-Forwarded-*`) is
//! believed only from `trusted_proxies`, and only when it is on the app's `url`: anyone else
//! could pick where the login sends the person back to.

use std::sync::Arc;

use poem::http::{HeaderValue, Method};
use poem::web::Data;
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::{Json, Response};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, SecurityScheme};
use url::Url;

use crate::apps::{admit, assertion, identity_headers, person};
use crate::config::{Anonymous, AppConfig};
use crate::state::App;

use super::caller::{caller, ApiKeyBearer, Auth, SessionAuth};
use super::error::{ErrorBody, FlowError, Status};
use super::request::prefers_html;
use super::tags::ApiTags;

/// What the proxy forwards of the person's request: their session cookie, or an API key or
/// IdP access token as `Authorization: Bearer`; or nothing yet.
#[derive(SecurityScheme)]
pub enum ForwardCredential {
    Session(SessionAuth),
    ApiKey(ApiKeyBearer),
    #[oai(fallback)]
    None,
}

impl ForwardCredential {
    fn into_auth(self) -> Option<Auth> {
        match self {
            ForwardCredential::Session(session) => Some(Auth::Session(session)),
            ForwardCredential::ApiKey(key) => Some(Auth::ApiKey(key)),
            ForwardCredential::None => None,
        }
    }
}

/// How a request that is not signed in is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum CheckMode {
    /// Always 401 (nginx `auth_request`, which turns any other status into a 500: send the
    /// browser to `X-Authnz-Login-URL` from `error_page 401`).
    Status,
    /// A browser navigation gets a 302 to the login page; anything else still 401 (Caddy and
    /// Traefik hand non-2xx answers to the client as they are).
    Redirect,
}

/// Not signed in.
#[derive(Debug, Object)]
pub struct LoginRequired {
    /// `unauthorized`.
    pub error: String,
    pub message: String,
    /// Where to send the person to sign in: the sign-in page, with the original URL as `next`
    /// when the proxy is trusted and the URL is on the app.
    pub login_url: String,
}

#[derive(ApiResponse)]
pub enum CheckResponse {
    /// Signed in and admitted by the app's policy; or, with an `anonymous_if` credential and
    /// no session, let through without an identity. Empty body. The identity headers of the
    /// app's preset are all present, empty when there is no value (so a proxy that copies
    /// them overwrites what the client sent): `X-Authnz-User` (username), `X-Authnz-User-Id`,
    /// `X-Authnz-Name`, `X-Authnz-Email` (only an address an IdP verified and this account
    /// owns), `X-Authnz-Idp`, `X-Authnz-Groups` (`<idp>:<group>`, comma-separated, `,` and `%`
    /// percent-encoded) and `X-Authnz-Assertion` (a signed JWT, with `assertion = true`).
    /// Preset `oauth2-proxy`: `X-Auth-Request-User` (user id), `-Email`,
    /// `-Preferred-Username`, `-Groups`; preset `authelia`: `Remote-User`, `Remote-Email`,
    /// `Remote-Name`, `Remote-Groups`.
    #[oai(status = 200)]
    Ok,
    /// `mode=redirect` and a browser navigation that is not signed in: to the login page.
    #[oai(status = 302)]
    Redirect(#[oai(header = "Location")] String),
    /// Not signed in (no credential, or an unknown, expired or revoked one): `unauthorized`;
    /// or signed in less recently or strongly than the app's step-up wants:
    /// `step_up_required`, with a login URL at the session's IdP asking for it.
    #[oai(status = 401)]
    Unauthorized(
        Json<LoginRequired>,
        #[oai(header = "WWW-Authenticate")] String,
        /// The login URL, for a proxy to redirect a browser to.
        #[oai(header = "X-Authnz-Login-URL")]
        String,
    ),
    /// Signed in, but the app's policy refuses the person: `email_not_verified`,
    /// `idp_not_allowed`, `not_in_group` or `groups_unknown`; or the app's step-up cannot be
    /// met by this credential (`step_up_unsupported`: an API key, or an IdP without ID
    /// tokens). Never a redirect, so no loop.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// `app` is missing, or `mode` is neither `status` nor `redirect` (`bad_request`).
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// No `[apps.<name>]` of that name (`unknown_app`).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Our own failure (storage, signing).
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The store is unavailable (`store_unavailable`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl From<FlowError> for CheckResponse {
    fn from(err: FlowError) -> Self {
        // A browser that Caddy or Traefik hands this answer to sees it as a page.
        super::error::remember(&err);
        match err.status {
            Status::Forbidden => CheckResponse::Forbidden(Json(err.into())),
            Status::BadRequest => CheckResponse::BadRequest(Json(err.into())),
            Status::NotFound => CheckResponse::NotFound(Json(err.into())),
            Status::Unavailable => CheckResponse::Unavailable(Json(err.into())),
            _ => CheckResponse::Internal(Json(err.into())),
        }
    }
}

#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The public keys of `signing_key_file` and `previous_signing_key_files` (ES256, by
    /// `kid`): what an app verifies `X-Authnz-Assertion` with. Empty without a key.
    #[oai(status = 200)]
    Ok(
        Json<serde_json::Value>,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// The forward-auth API.
pub struct ForwardApi;

#[OpenApi]
impl ForwardApi {
    /// Who is signed in, for a reverse proxy in front of an app.
    ///
    /// 200 with identity headers, 401 (or with `mode=redirect` a 302 for a browser) to sign in, 403 when the app's
    /// policy refuses the person. HEAD is answered like GET. Every answer is
    /// `Cache-Control: no-store`. The proxy passes the person's `Cookie` and
    /// `Authorization`, and the original request as `X-Original-URL` and
    /// `X-Original-Method` (or `X-Forwarded-Proto`, `-Host`, `-Uri`, `-Method`): believed
    /// only from `trusted_proxies`, and only on the app's `url`.
    #[oai(path = "/authnz/auth", method = "get", tag = "ApiTags::Apps")]
    async fn check(
        &self,
        req: &Request,
        app: Data<&Arc<App>>,
        credential: ForwardCredential,
        /// The app: the `<name>` of an `[apps.<name>]` entry.
        #[oai(name = "app")]
        name: Query<String>,
        /// How to answer a request that is not signed in (default `status`).
        mode: Query<Option<CheckMode>>,
    ) -> Response<CheckResponse> {
        answer(*app, req, credential.into_auth(), &name.0, mode.0).await
    }

    /// The public keys that sign `X-Authnz-Assertion` (a JSON Web Key Set).
    #[oai(path = "/.well-known/jwks.json", method = "get", tag = "ApiTags::Apps")]
    async fn jwks(&self, app: Data<&Arc<App>>) -> JwksResponse {
        JwksResponse::Ok(Json(app.signer.jwks()), "public, max-age=300".into())
    }
}

/// The check's answer (also for the hot path, see `super::hot`).
pub(crate) async fn answer(
    app: &App,
    req: &Request,
    credential: Option<Auth>,
    name: &str,
    mode: Option<CheckMode>,
) -> Response<CheckResponse> {
    let (answer, headers) = match check(app, req, credential, name).await {
        Ok(Answer::Admitted(headers)) => (CheckResponse::Ok, headers),
        Ok(Answer::LoginRequired(login_url, step_up)) => {
            let method = original_method(app, req);
            let answer = if mode == Some(CheckMode::Redirect) && is_navigation(req, &method) {
                CheckResponse::Redirect(login_url)
            } else {
                let (error, message) = if step_up {
                    (
                        "step_up_required",
                        "this application needs a more recent or stronger sign-in",
                    )
                } else {
                    ("unauthorized", "sign in first")
                };
                CheckResponse::Unauthorized(
                    Json(LoginRequired {
                        error: error.into(),
                        message: message.into(),
                        login_url: login_url.clone(),
                    }),
                    "Bearer realm=\"authnz\"".into(),
                    login_url,
                )
            };
            (answer, Vec::new())
        }
        Err(err) => (err.into(), Vec::new()),
    };
    let mut response = Response::new(answer).header("Cache-Control", "no-store");
    for (name, value) in headers {
        // A value a header cannot carry (a control character) goes empty, never away.
        let value = HeaderValue::from_bytes(value.as_bytes())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        response = response.header(name, value);
    }
    response
}

/// What the check found.
enum Answer {
    /// The identity headers to send with the 200 (empty values for an anonymous pass).
    Admitted(Vec<(&'static str, String)>),
    /// Not signed in, or (`true`) not recently or strongly enough for the app's step-up: the
    /// login URL.
    LoginRequired(String, bool),
}

async fn check(
    app: &App,
    req: &Request,
    credential: Option<Auth>,
    name: &str,
) -> Result<Answer, FlowError> {
    let generation = app.current();
    let target = generation
        .config
        .app(name)
        .ok_or_else(|| FlowError::new(Status::NotFound, "unknown_app", "no such app"))?;
    let caller = match credential {
        Some(auth) => match caller(app, &auth).await {
            Ok(caller) => Some(caller),
            Err(err) if err.status == Status::Unauthorized => None,
            Err(err) => return Err(err),
        },
        None => None,
    };
    let Some(caller) = caller else {
        // Only a request that is not signed in needs the original URL (for `next`, `query:`).
        let original = original_url(app, req, target);
        if anonymous_credential(req, target, original.as_ref()) {
            app.metrics.forward_answered(&target.name, "anonymous");
            return Ok(Answer::Admitted(identity_headers(
                target.headers,
                None,
                None,
            )));
        }
        app.metrics
            .forward_answered(&target.name, "unauthenticated");
        return Ok(Answer::LoginRequired(
            login_url(app, original.as_ref()),
            false,
        ));
    };
    let (via, auth_time) = match (&caller.session, &caller.idp_token) {
        (Some((_, session)), _) => (
            Some((session.idp.as_str(), session.subject.as_str())),
            Some(session.created_at),
        ),
        (None, Some((idp, subject))) => (Some((idp.as_str(), subject.as_str())), None),
        (None, None) => (None, None),
    };
    let person = person(&*app.store, caller.user.clone(), via, auth_time).await?;
    if let Err(denial) = admit(target, &person) {
        tracing::info!(app = %target.name, user = %person.user.id, reason = denial.code(), "forward auth denied by the app's policy");
        app.metrics.forward_answered(&target.name, denial.code());
        return Err(FlowError::new(
            Status::Forbidden,
            denial.code(),
            denial.message(),
        ));
    }
    if let Some(url) = step_up(app, req, target, &caller)? {
        app.metrics
            .forward_answered(&target.name, "step_up_required");
        return Ok(Answer::LoginRequired(url, true));
    }
    let signed = if target.assertion {
        let key = app.signer.current().ok_or_else(|| {
            tracing::error!(app = %target.name, "an app wants assertions but no signing key was loaded at start");
            FlowError::internal("no signing key for the app's assertion")
        })?;
        let issuer = app.server.public_url.as_str().trim_end_matches('/');
        Some(
            assertion(key, issuer, target, &person, app.clock.now()).map_err(|err| {
                tracing::error!(app = %target.name, error = %err, "signing an assertion failed");
                FlowError::internal("signing the assertion failed")
            })?,
        )
    } else {
        None
    };
    app.metrics.forward_answered(&target.name, "admitted");
    Ok(Answer::Admitted(identity_headers(
        target.headers,
        Some(&person),
        signed.as_deref(),
    )))
}

/// The app's step-up (`max_auth_age_seconds`, `acr_values`) against the session's sign-in at
/// its IdP, as its ID token says (`auth_time`, `acr`): `None` when it passes, else where to sign
/// in again (the session's IdP, asking for both). Only a browser session has such a sign-in:
/// an API key or an IdP access token gets 403 `step_up_unsupported`.
fn step_up(
    app: &App,
    req: &Request,
    target: &AppConfig,
    caller: &super::caller::Caller,
) -> Result<Option<String>, FlowError> {
    if target.max_auth_age.is_none() && target.acr_values.is_empty() {
        return Ok(None);
    }
    let unsupported =
        |why: &str| FlowError::new(Status::Forbidden, "step_up_unsupported", why.to_string());
    let Some((_, session)) = &caller.session else {
        return Err(unsupported(
            "this application needs a recent sign-in, which an API key or access token cannot give",
        ));
    };
    let claims = app.accounts().session_id_token(session).and_then(|token| {
        use base64::Engine;
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    });
    let Some(claims) = claims else {
        return Err(unsupported(
            "this application needs a recent sign-in, which this identity provider cannot attest (no ID token)",
        ));
    };
    let now = app.clock.now();
    let recent = target.max_auth_age.is_none_or(|max| {
        claims["auth_time"]
            .as_i64()
            .is_some_and(|at| now - at <= max as i64 + crate::protocol::CLOCK_SKEW.as_secs() as i64)
    });
    let strong = target.acr_values.is_empty()
        || claims["acr"]
            .as_str()
            .is_some_and(|acr| target.acr_values.iter().any(|wanted| wanted == acr));
    if recent && strong {
        return Ok(None);
    }
    let mut url = url::Url::parse(&app.server.url(&format!("/authnz/{}/login", session.idp)))
        .map_err(|_| FlowError::internal("bad public URL"))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(original) = original_url(app, req, target)
            .filter(|url| url.as_str().len() <= super::login::MAX_NEXT)
        {
            query.append_pair("next", original.as_str());
        }
        if let Some(max) = target.max_auth_age {
            query.append_pair("max_age", &max.to_string());
        }
        if !target.acr_values.is_empty() {
            query.append_pair("acr_values", &target.acr_values.join(" "));
        }
    }
    Ok(Some(url.into()))
}

/// Whether the peer is a proxy named in `trusted_proxies`.
fn from_trusted_proxy(app: &App, req: &Request) -> bool {
    req.remote_addr()
        .as_socket_addr()
        .map(|addr| addr.ip())
        .is_some_and(|ip| {
            app.server
                .trusted_proxies
                .iter()
                .any(|net| net.contains(ip))
        })
}

/// One header's value, when it is there once and printable (and, for the headers a proxy
/// may turn into a list, `X-Forwarded-Proto`, `-Host` and the methods, not a list).
fn single_header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    let mut values = req.headers().get_all(name).iter();
    let value = values.next()?.to_str().ok()?.trim();
    let a_url = name == "x-original-url" || name == "x-forwarded-uri";
    (values.next().is_none() && !value.is_empty() && (a_url || !value.contains(',')))
        .then_some(value)
}

/// The original request's URL, as a trusted proxy tells it, when it is on the app (http or
/// https, no userinfo). `None` otherwise: the login then starts from the sign-in page alone.
fn original_url(app: &App, req: &Request, target: &AppConfig) -> Option<Url> {
    if !from_trusted_proxy(app, req) {
        return None;
    }
    let url = match single_header(req, "x-original-url") {
        Some(url) => Url::parse(url).ok()?,
        None => {
            let proto = single_header(req, "x-forwarded-proto")?;
            let host = single_header(req, "x-forwarded-host")?;
            let uri = single_header(req, "x-forwarded-uri").unwrap_or("/");
            if !uri.starts_with('/') || uri.starts_with("//") {
                return None;
            }
            Url::parse(&format!("{proto}://{host}{uri}")).ok()?
        }
    };
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none();
    if plain && target.serves(&url) {
        Some(url)
    } else {
        tracing::info!(app = %target.name, "the proxy's original URL is not on the app: ignored");
        None
    }
}

/// The original request's method, as a trusted proxy tells it; else the request's own.
fn original_method(app: &App, req: &Request) -> Method {
    let told = from_trusted_proxy(app, req)
        .then(|| {
            single_header(req, "x-original-method")
                .or_else(|| single_header(req, "x-forwarded-method"))
        })
        .flatten()
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok());
    told.unwrap_or_else(|| req.method().clone())
}

/// A browser opening a page (not a script, not a fetch): the only request a redirect helps.
fn is_navigation(req: &Request, method: &Method) -> bool {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    (method == Method::GET || method == Method::HEAD)
        && prefers_html(req)
        && !header("x-requested-with")
            .is_some_and(|value| value.eq_ignore_ascii_case("xmlhttprequest"))
        && header("sec-fetch-mode").is_none_or(|mode| mode == "navigate")
}

/// Whether the request carries a credential the app checks itself (`anonymous_if`): a header
/// of the request, or a query parameter of the (believed) original URL, not empty.
fn anonymous_credential(req: &Request, target: &AppConfig, original: Option<&Url>) -> bool {
    target.anonymous_if.iter().any(|rule| match rule {
        Anonymous::Header(name) => req
            .headers()
            .get_all(name.as_str())
            .iter()
            .any(|value| !value.is_empty()),
        Anonymous::Query(name) => original.is_some_and(|url| {
            url.query_pairs()
                .any(|(key, value)| key == name.as_str() && !value.is_empty())
        }),
    })
}

/// The sign-in page, with `next` = the original URL when it is known.
fn login_url(app: &App, original: Option<&Url>) -> String {
    let home = app.server.url("/");
    match original.filter(|url| url.as_str().len() <= super::login::MAX_NEXT) {
        Some(original) => {
            let next: String =
                url::form_urlencoded::byte_serialize(original.as_str().as_bytes()).collect();
            format!("{home}?next={next}")
        }
        None => home,
    }
}

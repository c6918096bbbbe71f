//! The running server: its state ([`App`]), how it is built from a [`Config`], and how it
//! serves (routes, security headers, HTML error pages for browsers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use poem::http::header;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::middleware::AddData;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server};
use poem_openapi::OpenApiService;

use crate::config::{Config, DEV_IDP_PATH};
use crate::crypto::TokenVault;
use crate::devidp::DevIdp;
use crate::protocol::{HttpLimits, Idp, IdpHttp};
use crate::store::{SledStore, Store};

/// The clock of the server: Unix seconds, with an offset tests can move.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.offset.load(Ordering::Relaxed)
    }

    /// Moves the clock forward (tests of expiry).
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
    }
}

/// Everything a request needs.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub vault: TokenVault,
    /// In config order.
    pub idps: Vec<Arc<Idp>>,
    by_name: HashMap<String, Arc<Idp>>,
    pub dev_idp: Option<Arc<DevIdp>>,
    pub clock: Clock,
}

/// Why the server could not start. Names the file and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Vault(#[from] crate::crypto::VaultError),
    #[error("{0}")]
    DevIdp(#[from] crate::devidp::DevIdpError),
    #[error("HTTP client: {0}")]
    Http(#[from] crate::protocol::HttpError),
    #[error("IdP {name}: {reason}")]
    Idp { name: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

impl App {
    /// Opens the database and key files and builds every IdP. Performs no network I/O:
    /// discovery happens on first use (and in the background after start).
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        Self::with_limits(config, HttpLimits::default())
    }

    pub fn with_limits(config: Config, limits: HttpLimits) -> Result<Arc<Self>, StartError> {
        if let Some(parent) = config.server.database.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                crate::store::StoreError::Backend(format!(
                    "cannot create {}: {err}",
                    parent.display()
                ))
            })?;
        }
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.server.database, 64 << 20)?);
        let vault = TokenVault::load(
            &config.server.secret_key_file,
            &config.server.previous_secret_key_files,
        )?;
        let http = IdpHttp::new(limits)?;
        let public_url = config.server.public_url.as_str().to_string();
        let mut idps = Vec::new();
        let mut dev_redirects = Vec::new();
        for idp_config in &config.idps {
            let idp =
                Idp::new(idp_config.clone(), &public_url, http.clone()).map_err(|reason| {
                    StartError::Idp {
                        name: idp_config.name.clone(),
                        reason,
                    }
                })?;
            if idp_config.kind == "dev" {
                dev_redirects.push(idp.redirect_uri.clone());
            }
            idps.push(Arc::new(idp));
        }
        let dev_idp = if dev_redirects.is_empty() {
            None
        } else {
            let mut key_file = config.server.database.clone().into_os_string();
            key_file.push(".dev-idp.pem");
            Some(Arc::new(DevIdp::new(
                config.server.url(DEV_IDP_PATH),
                dev_redirects,
                std::path::Path::new(&key_file),
            )?))
        };
        let by_name = idps
            .iter()
            .map(|idp| (idp.config.name.clone(), Arc::clone(idp)))
            .collect();
        Ok(Arc::new(Self {
            config,
            store,
            vault,
            idps,
            by_name,
            dev_idp,
            clock: Clock::default(),
        }))
    }

    /// The IdP of a URL segment: exact, case-sensitive match only.
    pub fn idp(&self, name: &str) -> Option<&Arc<Idp>> {
        self.by_name.get(name)
    }
}

/// The OpenAPI service of authnz (also what `authnz openapi` prints).
pub fn openapi_service(
    public_url: &str,
) -> OpenApiService<(crate::api::Api, crate::account_api::AccountApi), ()> {
    OpenApiService::new(
        (crate::api::Api, crate::account_api::AccountApi),
        "authnz",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Sign in with your organization's identity provider. A script starts a login with \
             `GET /authnz/{idp}/login` (it answers `{\"redirect_uri\": ...}`), sends the person's \
             browser to that URL, and the IdP returns to `/authnz/{idp}/callback`, which starts a \
             session (cookie `authnz_session`).",
    )
    .server(public_url.trim_end_matches('/'))
}

/// The whole HTTP surface.
pub fn routes(app: Arc<App>) -> impl Endpoint {
    let api = openapi_service(app.config.server.public_url.as_str());
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let mut route = Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs);
    if let Some(dev) = &app.dev_idp {
        route = route.nest(DEV_IDP_PATH, Arc::clone(dev).routes());
    }
    route.with(AddData::new(app)).around(security_headers)
}

/// Security headers on every response; an HTML page instead of JSON for browsers that failed;
/// one log line per request, with the path but never the query (it carries codes and state).
async fn security_headers<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let wants_html = prefers_html(&req);
    let mut response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let api_path = path.starts_with("/authnz") || path.starts_with("/api");
    if api_path && !is_json && status.as_u16() >= 400 {
        // Errors raised by the framework itself (a missing session cookie, a malformed
        // parameter) get the same JSON shape as ours.
        let (code, message) = match status.as_u16() {
            401 => ("unauthorized", "log in first"),
            403 => ("forbidden", "not allowed"),
            404 => ("not_found", "no such resource"),
            405 => ("method_not_allowed", "method not allowed"),
            400..=499 => ("bad_request", "the request is malformed"),
            _ => ("internal_error", "internal error"),
        };
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.set_body(serde_json::json!({"error": code, "message": message}).to_string());
    }
    if wants_html && status.as_u16() >= 400 && api_path {
        let body = response.take_body().into_bytes().await.unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = parsed
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("error");
        let message = parsed
            .get("message")
            .and_then(|v| v.as_str())
            .unwrap_or("The request failed.");
        let html = crate::pages::error_page(status.as_u16(), code, message);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.set_body(html);
    }
    let headers = response.headers_mut();
    let set = |headers: &mut poem::http::HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, header::HeaderValue::from_static(value));
    };
    set(headers, "x-content-type-options", "nosniff");
    // `no-referrer` wherever a URL may carry a code or state (the flow under /authnz and the
    // dev IdP); `same-origin` on the pages, so that their own form posts keep their Origin.
    if path.starts_with("/authnz") || path.starts_with(DEV_IDP_PATH) {
        set(headers, "referrer-policy", "no-referrer");
    } else {
        set(headers, "referrer-policy", "same-origin");
    }
    if !path.starts_with("/docs") {
        // Swagger UI needs its inline scripts; every other page is script-free.
        set(
            headers,
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'",
        );
        set(headers, "x-frame-options", "DENY");
    }
    if path.starts_with("/authnz") || path.starts_with("/api") || path.starts_with(DEV_IDP_PATH) {
        set(headers, "cache-control", "no-store");
    }
    tracing::info!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

/// Whether the client asked for a page rather than JSON (a browser navigating).
pub fn prefers_html(req: &Request) -> bool {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    accept.contains("text/html") && !accept.starts_with("application/json")
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    listener
        .set_nonblocking(true)
        .map_err(|err| StartError::Listen {
            addr: format!("{:?}", listener.local_addr().ok()),
            reason: err.to_string(),
        })?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|err| StartError::Listen {
            addr: String::new(),
            reason: err.to_string(),
        })?;
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(|err| StartError::Listen {
        addr: String::new(),
        reason: err.to_string(),
    })?;
    let local = acceptor
        .local_addr()
        .first()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %local, public_url = %app.config.server.public_url, "authnz is serving");
    // Discover every IdP in the background, so that the first login does not wait.
    for idp in &app.idps {
        let idp = Arc::clone(idp);
        tokio::spawn(async move {
            let _ = idp.discovered().await;
        });
    }
    let sweeper = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let cutoff = app.clock.now() - crate::config::LOGIN_TTL.as_secs() as i64;
                if let Err(err) = app.store.sweep_pending_logins(cutoff) {
                    tracing::warn!(error = %err, "sweeping expired logins failed");
                }
            }
        })
    };
    let result = Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            routes(app),
            shutdown,
            Some(std::time::Duration::from_secs(5)),
        )
        .await
        .map_err(|err| StartError::Listen {
            addr: local,
            reason: err.to_string(),
        });
    sweeper.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_spec_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json")
    }

    #[test]
    fn committed_openapi_spec_matches_the_code() {
        let generated = openapi_service("http://127.0.0.1:8080").spec();
        let committed = std::fs::read_to_string(committed_spec_path()).unwrap_or_default();
        assert!(
            generated.trim() == committed.trim(),
            "openapi/openapi.json is out of date: run `cargo run -p authnz -- openapi > openapi/openapi.json`"
        );
    }

    #[test]
    fn every_route_is_documented_with_descriptions() {
        let spec: serde_json::Value =
            serde_json::from_str(&openapi_service("http://127.0.0.1:8080").spec())
                .unwrap_or_default();
        let routes = [
            ("/authnz", "get"),
            ("/authnz/{idp}/login", "get"),
            ("/authnz/{idp}/callback", "get"),
            ("/authnz/logout", "post"),
            ("/api/users/me", "get"),
            ("/api/users/me", "delete"),
            ("/healthz", "get"),
            ("/authnz/{idp}/connect", "post"),
            ("/authnz/{idp}/create_user", "get"),
            ("/authnz/{idp}/create_user", "post"),
            ("/authnz/{idp}/disconnect", "get"),
            ("/authnz/{idp}/disconnect", "post"),
            ("/authnz/{idp}/backchannel-logout", "post"),
            ("/api/keys", "get"),
            ("/api/keys", "post"),
            ("/api/keys/{id}", "delete"),
            ("/api/users/me/tokens/{idp}", "get"),
        ];
        let documented: usize = spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .values()
                    .map(|m| m.as_object().map_or(0, |m| m.len()))
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(
            documented,
            routes.len(),
            "a route is missing from this list or the spec"
        );
        for (path, method) in routes {
            let operation = &spec["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is not in the spec");
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no description"
            );
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{method} {path} {status} has no description"
                );
            }
        }
        let security = &spec["paths"]["/api/users/me"]["get"]["security"];
        assert!(
            security.to_string().contains("SessionAuth")
                && security.to_string().contains("ApiKeyBearer"),
            "{security}"
        );
    }
}

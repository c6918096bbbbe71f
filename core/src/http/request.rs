//! What a request says about itself: who the client is (behind trusted proxies), whether it
//! came from this site, its CSRF token, its small form body, and whether it wants a page.

use std::collections::HashMap;

use poem::http::header;
use poem::Request;

use super::error::{FlowError, Status};
use crate::crypto::constant_time_eq;
use crate::state::App;

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

/// Whether the client asked for a page rather than JSON (a browser navigating).
pub fn prefers_html(req: &Request) -> bool {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    accept.contains("text/html") && !accept.starts_with("application/json")
}

//! Around every request: security headers, the request id and the log line, the JSON shape of
//! the framework's own errors and the HTML error page for browsers, and the loopback fence
//! around the dev IdP.

use std::sync::Arc;

use poem::http::header;
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::config::DEV_IDP_PATH;
use crate::state::App;

use super::request::prefers_html;
use super::spec::openapi_service;

/// The dev IdP lets anyone sign in as anyone: besides the config check, each of its requests
/// must come from a loopback client (SECURITY I70), the real one behind a trusted proxy.
pub(crate) async fn loopback_only<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let allowed = req
        .data::<Arc<App>>()
        .is_some_and(|app| super::request::check_loopback_client(app, &req).is_ok());
    if !allowed {
        return Ok(Response::builder()
            .status(poem::http::StatusCode::FORBIDDEN)
            .content_type("application/json; charset=utf-8")
            .body(
                serde_json::json!({
                    "error": "dev_idp_loopback_only",
                    "message": "the dev IdP answers only clients on this machine",
                })
                .to_string(),
            ));
    }
    Ok(next.call(req).await?.into_response())
}

/// Security headers on every response; an HTML page instead of JSON for browsers that failed;
/// one log line per request, with the path but never the query (it carries codes and state).
pub(crate) async fn security_headers<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    use tracing::Instrument;
    // A request id on every log line of the request, and in the answer: a caller's own id if
    // it is a plain token, else a new one.
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| crate::crypto::random_token(9));
    let span = tracing::info_span!("request", id = %request_id);
    let mut response = frame(next, req).instrument(span).await?;
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// The methods the API documents for a path (for the `Allow` header of a 405).
pub(crate) fn allowed_methods(path: &str) -> Option<String> {
    static ROUTES: std::sync::OnceLock<Vec<(Vec<String>, Vec<String>)>> =
        std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let spec: serde_json::Value =
            serde_json::from_str(&openapi_service("http://127.0.0.1").spec()).unwrap_or_default();
        spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, methods)| {
                        let segments = template.split('/').map(str::to_string).collect();
                        let methods = methods
                            .as_object()
                            .map(|m| m.keys().map(|k| k.to_uppercase()).collect())
                            .unwrap_or_default();
                        (segments, methods)
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let segments: Vec<&str> = path.split('/').collect();
    routes
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        })
        .map(|(_, methods)| methods.join(", "))
}

pub(crate) async fn frame<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let wants_html = prefers_html(&req);
    // A parameter the framework refused is named in the answer (its value never is).
    let mut refused_param = None;
    let (outcome, failure) = super::error::recording_failure(next.call(req)).await;
    let mut response = match outcome {
        Ok(response) => response.into_response(),
        Err(err) => {
            refused_param = err
                .downcast_ref::<poem_openapi::error::ParseParamError>()
                .map(|err| err.name);
            err.into_response()
        }
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let api_path = path.starts_with("/authnz") || path.starts_with("/api");
    // What a browser's error page says: the typed error the handler answered with (its JSON
    // body is made from the same error, also when the endpoint answers it with another status).
    let mut shown = failure
        .filter(|_| status.as_u16() >= 400)
        .map(|failure| (failure.code.to_string(), failure.message));
    if api_path && !is_json && status.as_u16() >= 400 {
        // Errors raised by the framework itself (a missing session cookie, a malformed
        // parameter) get the same JSON shape as ours.
        let (code, message) = match (status.as_u16(), refused_param) {
            (401, _) => ("unauthorized", "log in first".to_string()),
            (403, _) => ("forbidden", "not allowed".to_string()),
            (404, _) => ("not_found", "no such resource".to_string()),
            (405, _) => ("method_not_allowed", "method not allowed".to_string()),
            (400..=499, Some(name)) => (
                "bad_request",
                format!("the parameter `{name}` is missing or malformed"),
            ),
            (400..=499, None) => ("bad_request", "the request is malformed".to_string()),
            _ => ("internal_error", "internal error".to_string()),
        };
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        let message = crate::i18n::error_message(code).unwrap_or(message);
        response.set_body(serde_json::json!({"error": code, "message": message}).to_string());
        shown = Some((code.to_string(), message));
    }
    if wants_html && status.as_u16() >= 400 && api_path {
        let (code, message) =
            shown.unwrap_or_else(|| ("error".to_string(), "The request failed.".to_string()));
        let message = crate::i18n::error_message(&code).unwrap_or(message);
        let html = crate::html::error_page(status.as_u16(), &code, &message);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.set_body(html);
    }
    if status == poem::http::StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::ALLOW)
    {
        if let Some(value) =
            allowed_methods(&path).and_then(|m| header::HeaderValue::from_str(&m).ok())
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    let headers = response.headers_mut();
    // Names and values built at compile time: no parsing per response.
    let set = |headers: &mut poem::http::HeaderMap, (name, value): (HeaderName, HeaderValue)| {
        headers.insert(name, value);
    };
    set(headers, NOSNIFF);
    // `no-referrer` wherever a URL may carry a code or state (the flow under /authnz and the
    // dev IdP); `same-origin` on the pages, so that their own form posts keep their Origin.
    if path.starts_with("/authnz") || path.starts_with(DEV_IDP_PATH) {
        set(headers, NO_REFERRER);
    } else {
        set(headers, SAME_ORIGIN_REFERRER);
    }
    if !path.starts_with("/docs") {
        // Swagger UI needs its inline scripts; every other page is script-free.
        set(headers, CSP);
        set(headers, FRAME_DENY);
    }
    if path.starts_with("/authnz") || path.starts_with("/api") || path.starts_with(DEV_IDP_PATH) {
        set(headers, NO_STORE);
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

pub(crate) const NOSNIFF: (HeaderName, HeaderValue) =
    static_header("x-content-type-options", "nosniff");

pub(crate) const NO_REFERRER: (HeaderName, HeaderValue) =
    static_header("referrer-policy", "no-referrer");

pub(crate) const SAME_ORIGIN_REFERRER: (HeaderName, HeaderValue) =
    static_header("referrer-policy", "same-origin");
pub(crate) const CSP: (HeaderName, HeaderValue) = static_header(
    "content-security-policy",
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data: https:; form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'",
);

pub(crate) const FRAME_DENY: (HeaderName, HeaderValue) = static_header("x-frame-options", "DENY");

pub(crate) const NO_STORE: (HeaderName, HeaderValue) = static_header("cache-control", "no-store");

type HeaderName = poem::http::HeaderName;

type HeaderValue = header::HeaderValue;

/// A header from two literals, for the `const`s above: checked and built at compile time.
pub(crate) const fn static_header(
    name: &'static str,
    value: &'static str,
) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

//! The HTTP surface, and the only layer that knows status codes and cookies.
//!
//! One file per group of routes: [`login`] (the login flow), [`account`] (the logged-in user),
//! [`keys`] (credentials for applications), [`admin`] (health, metrics, admin API),
//! [`backchannel`] (IdP-initiated logout), [`forward`] (who is signed in, for the reverse
//! proxy in front of an app) and [`pages`] (what a person sees). The shared pieces:
//! [`error`] (the error body and per-endpoint responses), [`cookies`], [`request`] (client,
//! same-origin, CSRF), [`caller`] (who is calling), [`middleware`] and [`hot`] (the check and
//! `/api/users/me` past the routing layers). Handlers are thin: they
//! parse and check the request, call `protocol` and `accounts`, and turn the outcome into the
//! response variant of its status. Doc comments here become the OpenAPI spec
//! (`openapi/openapi.json`), so they never contain a secret.

mod account;
mod admin;
mod admin_page;
mod backchannel;
mod caller;
mod conflict_pages;
mod cookies;
mod dev_idp;
mod error;
mod forward;
mod hot;
mod key_pages;
mod keys;
mod login;
mod middleware;
mod pages;
mod request;
mod sessions;
mod spec;
mod tags;

use std::sync::Arc;

use poem::middleware::AddData;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Route};

use crate::config::DEV_IDP_PATH;
use crate::state::App;

use middleware::{loopback_only, security_headers};

pub use admin::health;
pub use request::prefers_html;
pub use spec::openapi_service;

/// The whole HTTP surface.
pub fn routes(app: Arc<App>) -> impl Endpoint {
    let api = openapi_service(app.server.public_url.as_str());
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let mut route = Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs);
    if let Some(dev) = &app.dev_idp {
        route = route.nest(
            DEV_IDP_PATH,
            dev_idp::routes(Arc::clone(dev))
                .into_endpoint()
                .around(loopback_only),
        );
    }
    route
        .around(hot::hot_paths)
        .around(cookies::host_cookies)
        .with(AddData::new(Arc::clone(&app)))
        .around(security_headers)
        .around(move |next, req| {
            let branding = app.server.branding.clone();
            let overrides = branding.as_ref().and_then(|b| b.messages.clone());
            let secure = app.server.secure_cookies();
            let default = app.server.default_language;
            async move {
                let (lang, chosen) = language_of(&req, default);
                // The request's future is large: on the heap, not on the stack of the task
                // that polls it.
                let response = crate::html::branded(
                    branding,
                    crate::i18n::in_language(lang, overrides, Box::pin(next.call(req))),
                )
                .await?;
                let mut response = response.into_response();
                // A language chosen with `?lang=` sticks for the visit (not a credential: a
                // plain cookie, readable by nothing but the choice of words).
                if let Some(lang) = chosen {
                    let secure = if secure { "; Secure" } else { "" };
                    if let Ok(value) = poem::http::HeaderValue::from_str(&format!(
                        "{}={lang}; Path=/; HttpOnly; SameSite=Lax{secure}",
                        crate::i18n::LANG_COOKIE
                    )) {
                        response
                            .headers_mut()
                            .append(poem::http::header::SET_COOKIE, value);
                    }
                }
                Ok::<_, poem::Error>(response)
            }
        })
}

/// The language of a request's pages, and the one it chose with `?lang=` (to remember).
fn language_of(req: &poem::Request, default: &'static str) -> (&'static str, Option<&'static str>) {
    let chosen = url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "lang")
        .and_then(|(_, value)| crate::i18n::supported(&value));
    let remembered = cookies::cookie(req, crate::i18n::LANG_COOKIE);
    let accept = req
        .headers()
        .get(poem::http::header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok());
    let lang = crate::i18n::negotiate(
        chosen.or_else(|| remembered.as_deref().and_then(crate::i18n::supported)),
        accept,
        default,
    );
    (lang, chosen)
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
            ("/api/users/me/sessions", "get"),
            ("/api/users/me/sessions", "delete"),
            ("/api/users/me/sessions/{id}", "delete"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/api/admin/status", "get"),
            ("/api/admin/reload", "post"),
            ("/authnz/auth", "get"),
            ("/.well-known/jwks.json", "get"),
            ("/authnz/{idp}/jwks.json", "get"),
            ("/authnz/{idp}/callback", "post"),
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

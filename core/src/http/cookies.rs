//! The cookies authnz sets: the session and the pre-login binding, `__Host-` under https; with
//! `[server] cookie_domain`, the session as `__Secure-authnz_session` for that domain, so that
//! the apps on its subdomains receive it.

use std::sync::Arc;

use poem::Request;

use crate::state::App;

/// The session cookie.
pub const SESSION_COOKIE: &str = "authnz_session";

/// The pre-login cookie that binds a pending login to the browser that started it.
pub const LOGIN_COOKIE: &str = "authnz_login";

/// Where a logout goes after the IdP's end-session page, which returns to `/` (an app URL,
/// validated again when it is used; ten minutes).
pub const LOGOUT_NEXT_COOKIE: &str = "authnz_logout_next";

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
    if let (SESSION_COOKIE, Some(domain)) = (name, &app.server.cookie_domain) {
        return format!("{SECURE_PREFIX}{name}={value}; Domain={domain}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax; Secure");
    }
    if app.server.secure_cookies() {
        format!("{HOST_PREFIX}{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax; Secure")
    } else {
        format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax")
    }
}

/// The prefix of the cookie names under https.
pub const HOST_PREFIX: &str = "__Host-";

/// The prefix of the session cookie with `cookie_domain` (Secure, but with a `Domain`).
pub const SECURE_PREFIX: &str = "__Secure-";

/// Under https, the request's cookies as the handlers read them: `__Host-authnz_*` under their
/// plain names, and a plain `authnz_*` cookie dropped, since anyone on a sibling subdomain can set
/// that one (SECURITY I78). With `cookie_domain` the session is `__Secure-authnz_session` alone
/// (a `__Host-` one from before the setting is dropped, so that a logout ends what it shows).
/// Over http (loopback) the cookies pass as they are.
pub async fn host_cookies<E: poem::Endpoint>(
    next: E,
    mut req: Request,
) -> poem::Result<poem::Response> {
    use poem::IntoResponse;
    let (secure, shared) = req.data::<Arc<App>>().map_or((false, false), |app| {
        (
            app.server.secure_cookies(),
            app.server.cookie_domain.is_some(),
        )
    });
    if secure {
        let session_prefix = if shared { SECURE_PREFIX } else { HOST_PREFIX };
        let ours = |name: &str| {
            name == SESSION_COOKIE || name == LOGIN_COOKIE || name == LOGOUT_NEXT_COOKIE
        };
        // Ours under the other prefix: never read as ours, never passed on as it is.
        let ours_prefixed = |name: &str| {
            [HOST_PREFIX, SECURE_PREFIX]
                .iter()
                .any(|prefix| name.strip_prefix(prefix).is_some_and(ours))
        };
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
                let prefix = if name.ends_with(SESSION_COOKIE) {
                    session_prefix
                } else {
                    HOST_PREFIX
                };
                match name.strip_prefix(prefix) {
                    Some(plain) if ours(plain) => Some(pair[prefix.len()..].to_string()),
                    _ if ours(name) || ours_prefixed(name) => None,
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

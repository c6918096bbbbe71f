//! `[apps.<name>]`: the applications behind a reverse proxy that ask authnz, on every request,
//! who is signed in (`GET /authnz/auth?app=<name>`), and what each may be told.

use std::collections::BTreeSet;
use std::ops::Range;

use url::Url;

use super::fields::{Context, Fields};
use super::server::ServerConfig;
use super::{is_loopback_host, valid_idp_name};

/// The longest an app's signed assertion may live, in seconds.
pub const MAX_ASSERTION_TTL: u64 = 300;

/// `assertion_ttl_seconds` when it is not given.
pub const DEFAULT_ASSERTION_TTL: u64 = 60;

/// One protected application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppConfig {
    /// The `<name>` of `?app=<name>`.
    pub name: String,
    /// Where it is served: original URLs and absolute `next` URLs must be under it (its
    /// origin, and its path when it has one).
    pub url: Url,
    /// The `aud` of its assertions: `audience`, or `url` as written (without a trailing `/`).
    pub audience: String,
    /// Which header names carry the identity.
    pub headers: HeaderPreset,
    /// Refuse (403) an account without a verified address it owns.
    pub require_verified_email: bool,
    /// Only sessions started with these IdPs (empty: any).
    pub allowed_idps: Vec<String>,
    /// Only people in one of these groups, written `<idp>:<group>` (empty: anyone).
    pub allowed_groups: Vec<String>,
    /// Credentials the app checks itself: with one and no session, the answer is 200 without
    /// an identity.
    pub anonymous_if: Vec<Anonymous>,
    /// Also send a signed JWT (`X-Authnz-Assertion`).
    pub assertion: bool,
    /// Its lifetime in seconds (1 to [`MAX_ASSERTION_TTL`]).
    pub assertion_ttl: u64,
    /// Step-up: the session's sign-in at its IdP (the ID token's `auth_time`) must be at most
    /// this old; otherwise the person signs in again with `max_age`.
    pub max_auth_age: Option<u64>,
    /// Step-up: the session's ID token `acr` must be one of these; otherwise the person signs
    /// in again asking for them (`acr_values`).
    pub acr_values: Vec<String>,
}

impl AppConfig {
    /// An app at `url` with every other key at its default (for tests).
    #[cfg(test)]
    pub(crate) fn at(name: &str, url: &str) -> Self {
        let url = Url::parse(url).expect("a test URL");
        Self {
            name: name.into(),
            audience: url.as_str().trim_end_matches('/').into(),
            url,
            headers: HeaderPreset::Authnz,
            require_verified_email: false,
            allowed_idps: Vec::new(),
            allowed_groups: Vec::new(),
            anonymous_if: Vec::new(),
            assertion: false,
            assertion_ttl: DEFAULT_ASSERTION_TTL,
            max_auth_age: None,
            acr_values: Vec::new(),
        }
    }

    /// Whether `url` is on this app: the same origin, and under its path.
    pub fn serves(&self, url: &Url) -> bool {
        if url.origin() != self.url.origin() {
            return false;
        }
        let base = self.url.path().trim_end_matches('/');
        let path = url.path();
        base.is_empty()
            || path == base
            || path
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// `headers`: the names of the identity headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPreset {
    /// `X-Authnz-User`, `-User-Id`, `-Name`, `-Email`, `-Idp`, `-Groups`.
    Authnz,
    /// oauth2-proxy's `X-Auth-Request-User`, `-Email`, `-Preferred-Username`, `-Groups`.
    Oauth2Proxy,
    /// Authelia's `Remote-User`, `-Email`, `-Name`, `-Groups`.
    Authelia,
}

/// One entry of `anonymous_if`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anonymous {
    /// `header:<name>`: the original request has this header (lowercase).
    Header(String),
    /// `query:<name>`: the original URL has this query parameter.
    Query(String),
}

/// `[apps]`, each entry checked; `idp_names` are every `[idps.*]` entry of the file.
pub(super) fn apps_config(
    cx: &mut Context,
    table: Option<Fields>,
    server: &ServerConfig,
    idp_names: &BTreeSet<String>,
) -> Vec<AppConfig> {
    let Some(table) = table else {
        return Vec::new();
    };
    let mut apps = Vec::new();
    for (name, value) in table.entries {
        let key = format!("apps.{}", name.get_ref());
        let name_span = name.span();
        let name = name.into_inner().into_owned();
        if !valid_idp_name(&name) {
            cx.issue(
                name_span,
                &key,
                "app names appear in URLs: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            );
        }
        let span = value.span();
        match value.into_inner() {
            toml::de::DeValue::Table(entry) => {
                let fields = Fields::new(key, entry, span);
                if let Some(app) = app_config(cx, fields, name, server, idp_names) {
                    apps.push(app);
                }
            }
            _ => cx.issue(span, &key, "expected a table [apps.<name>]"),
        }
    }
    apps
}

fn app_config(
    cx: &mut Context,
    mut fields: Fields,
    name: String,
    server: &ServerConfig,
    idp_names: &BTreeSet<String>,
) -> Option<AppConfig> {
    let at = fields.prefix.clone();
    let key = |name: &str| format!("{at}.{name}");
    let table_span = fields.span.clone();
    let url = fields.take_str(cx, "url");
    let audience = fields.take_str(cx, "audience");
    let headers = match fields.take_str(cx, "headers") {
        None => Some(HeaderPreset::Authnz),
        Some((value, span)) => match value.as_str() {
            "authnz" => Some(HeaderPreset::Authnz),
            "oauth2-proxy" => Some(HeaderPreset::Oauth2Proxy),
            "authelia" => Some(HeaderPreset::Authelia),
            other => {
                cx.issue(
                    span,
                    &key("headers"),
                    format!("{other:?}: expected \"authnz\", \"oauth2-proxy\" or \"authelia\""),
                );
                None
            }
        },
    };
    let require_verified_email = fields
        .take_bool(cx, "require_verified_email")
        .unwrap_or(false);
    let allowed_idps: Vec<String> = fields
        .take_str_items(cx, "allowed_idps")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(idp, span)| {
            if idp_names.contains(&idp) {
                Some(idp)
            } else {
                cx.issue(
                    span,
                    &key("allowed_idps"),
                    format!("{idp:?} is not an [idps.*] entry of this file"),
                );
                None
            }
        })
        .collect();
    let allowed_groups: Vec<String> = fields
        .take_str_items(cx, "allowed_groups")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(group, span)| match group.split_once(':') {
            Some((idp, name)) if idp_names.contains(idp) && !name.is_empty() => Some(group),
            _ => {
                cx.issue(
                    span,
                    &key("allowed_groups"),
                    format!("{group:?}: expected \"<idp>:<group>\" with an IdP name from this file, e.g. \"okta:galaxy-users\" (one IdP cannot grant another's groups)"),
                );
                None
            }
        })
        .collect();
    let anonymous_if: Vec<Anonymous> = fields
        .take_str_items(cx, "anonymous_if")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(item, span)| match anonymous(&item) {
            Ok(entry) => Some(entry),
            Err(reason) => {
                cx.issue(span, &key("anonymous_if"), reason);
                None
            }
        })
        .collect();
    let assertion_span = fields.take("assertion").map(|value| {
        let span = value.span();
        (value.get_ref().as_bool(), span)
    });
    fields.known.push("assertion".into());
    let assertion = match assertion_span {
        None => false,
        Some((Some(flag), span)) => {
            if flag && server.signing_key_file.is_none() {
                cx.issue(
                    span,
                    &key("assertion"),
                    "needs [server] signing_key_file: a P-256 key (PKCS#8 PEM), e.g. made with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out signing.pem`",
                );
            }
            flag
        }
        Some((None, span)) => {
            cx.issue(span, &key("assertion"), "expected true or false");
            false
        }
    };
    let assertion_ttl = match fields.take_u64(cx, "assertion_ttl_seconds") {
        Some((ttl, span)) if ttl == 0 || ttl > MAX_ASSERTION_TTL => {
            cx.issue(
                span,
                &key("assertion_ttl_seconds"),
                format!("must be 1 to {MAX_ASSERTION_TTL}: an assertion is for one request, not a session"),
            );
            DEFAULT_ASSERTION_TTL
        }
        Some((ttl, _)) => ttl,
        None => DEFAULT_ASSERTION_TTL,
    };
    let max_auth_age = match fields.take_u64(cx, "max_auth_age_seconds") {
        Some((age, span)) if age == 0 || age > 31_536_000 => {
            cx.issue(
                span,
                &key("max_auth_age_seconds"),
                "must be 1 to 31536000 (a year)",
            );
            None
        }
        Some((age, _)) => Some(age),
        None => None,
    };
    let acr_values = fields.take_str_items(cx, "acr_values").unwrap_or_default();
    let acr_values: Vec<String> = acr_values
        .into_iter()
        .filter_map(|(value, span)| {
            let fine = !value.is_empty()
                && value.len() <= 200
                && value.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
            if !fine {
                cx.issue(
                    span,
                    &key("acr_values"),
                    "each value must be printable ASCII without spaces, e.g. \"urn:mace:incommon:iap:silver\"",
                );
            }
            fine.then_some(value)
        })
        .collect();
    fields.finish(cx);
    let Some((raw, url_span)) = url else {
        cx.issue(
            table_span,
            &key("url"),
            "required: where the app is served, e.g. \"https://galaxy.example.org\"",
        );
        return None;
    };
    let url = app_url(cx, &raw, url_span.clone(), &key("url"))?;
    check_cookie_reaches(cx, server, &url, url_span, &key("url"));
    let audience = match audience {
        Some((audience, span)) if audience.is_empty() => {
            cx.issue(span, &key("audience"), "must not be empty");
            return None;
        }
        Some((audience, _)) => audience,
        None => raw.trim_end_matches('/').to_string(),
    };
    Some(AppConfig {
        name,
        url,
        audience,
        headers: headers?,
        require_verified_email,
        allowed_idps,
        allowed_groups,
        anonymous_if,
        assertion,
        assertion_ttl,
        max_auth_age,
        acr_values,
    })
}

/// `url`: http(s), `http://` for loopback hosts only, no query, fragment or userinfo.
fn app_url(cx: &mut Context, raw: &str, span: Range<usize>, key: &str) -> Option<Url> {
    match Url::parse(raw) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none() =>
        {
            if url.scheme() == "http" && !is_loopback_host(&url) {
                cx.issue(
                    span,
                    key,
                    "http:// is only allowed for loopback hosts; use https://",
                );
                return None;
            }
            Some(url)
        }
        _ => {
            cx.issue(
                span,
                key,
                "expected an http(s) URL without query, fragment or user, e.g. \"https://galaxy.example.org\"",
            );
            None
        }
    }
}

/// The session cookie must reach the app's host, or every request there would ask for a
/// login again: the same host as `public_url` (cookies ignore ports), or one under
/// `cookie_domain`.
fn check_cookie_reaches(
    cx: &mut Context,
    server: &ServerConfig,
    url: &Url,
    span: Range<usize>,
    key: &str,
) {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let same_host = server
        .public_url
        .host_str()
        .is_some_and(|login| login.eq_ignore_ascii_case(&host));
    // A `Secure` cookie is never sent to an http:// app.
    let reaches = !(server.secure_cookies() && url.scheme() == "http")
        && match &server.cookie_domain {
            Some(domain) => super::server::under_domain(&host, domain),
            None => same_host,
        };
    if !reaches {
        let login_host = server.public_url.host_str().unwrap_or_default();
        cx.issue(
            span,
            key,
            match &server.cookie_domain {
                Some(domain) => format!("{host} is not under [server] cookie_domain = {domain:?}: the session cookie would never reach it"),
                None => format!("the session cookie of {login_host} is not sent to {host}: set [server] cookie_domain to a domain both are under, or serve the app on {login_host}"),
            },
        );
    }
}

/// `header:<name>` or `query:<name>`.
fn anonymous(item: &str) -> Result<Anonymous, String> {
    let token = |name: &str| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match item.split_once(':') {
        Some(("header", name)) if token(name) => {
            if matches!(
                name.to_ascii_lowercase().as_str(),
                "cookie" | "authorization"
            ) {
                return Err(format!("{item:?}: every browser sends a cookie and every API client authorization; name the app's own credential header, e.g. \"header:x-api-key\""));
            }
            Ok(Anonymous::Header(name.to_ascii_lowercase()))
        }
        Some(("query", name)) if token(name) => Ok(Anonymous::Query(name.to_string())),
        _ => Err(format!(
            "{item:?}: expected \"header:<name>\" or \"query:<name>\", e.g. \"header:x-api-key\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(url: &str) -> AppConfig {
        AppConfig::at("a", url)
    }

    #[test]
    fn an_app_serves_its_origin_and_path_only() {
        let root = app("https://galaxy.example.org");
        let under = app("https://example.org/galaxy/");
        for (app, url, serves) in [
            (&root, "https://galaxy.example.org/", true),
            (&root, "https://galaxy.example.org/x?y=1", true),
            (&root, "http://galaxy.example.org/", false),
            (&root, "https://galaxy.example.org:8443/", false),
            (&root, "https://galaxy.example.org.evil/", false),
            (&root, "https://evil.galaxy.example.org/", false),
            (&under, "https://example.org/galaxy", true),
            (&under, "https://example.org/galaxy/api", true),
            (&under, "https://example.org/galaxyx", false),
            (&under, "https://example.org/", false),
        ] {
            assert_eq!(app.serves(&Url::parse(url).unwrap()), serves, "{url}");
        }
    }

    #[test]
    fn anonymous_if_takes_headers_and_query_parameters() {
        assert_eq!(
            anonymous("header:X-API-Key"),
            Ok(Anonymous::Header("x-api-key".into()))
        );
        assert_eq!(anonymous("query:key"), Ok(Anonymous::Query("key".into())));
        for bad in [
            "header:",
            "x-api-key",
            "cookie:x",
            "header:cookie",
            "header:Authorization",
            "query:a b",
        ] {
            assert!(anonymous(bad).is_err(), "{bad}");
        }
    }
}

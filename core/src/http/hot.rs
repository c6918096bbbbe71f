//! The requests made most often, answered past the framework's routing layers: the two made
//! on every signed-in request of every app, the forward-auth check (`GET /authnz/auth`) and
//! `GET /api/users/me`, when the request carries a plain session cookie and well-formed
//! parameters; and the start of a login (`GET /authnz/<idp>/login`, with at most `next`).
//! They run the same code as the documented operations ([`super::forward`],
//! [`super::account`], [`super::login`]), inside the same middleware (headers, request id, log
//! line); anything else (a bearer credential, a repeated or unknown parameter, HEAD, a cookie
//! or name that is not plain) goes to those operations, so the spec describes every answer. A
//! test asks both ways and compares.

use std::sync::Arc;

use poem::http::{header, Method};
use poem::{Endpoint, IntoResponse, Request, Response};

use crate::state::App;

use super::caller::Auth;
use super::cookies::SESSION_COOKIE;
use super::forward::CheckMode;

pub(crate) async fn hot_paths<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    if req.method() == Method::GET {
        if let Some(app) = req.data::<Arc<App>>().cloned() {
            match req.uri().path() {
                "/authnz/auth" => {
                    if let (Some((name, mode)), Some(session)) =
                        (check_query(&req), plain_session(&req))
                    {
                        let credential = Some(Auth::session_cookie(session));
                        return Ok(Box::pin(super::forward::answer(
                            &app, &req, credential, &name, mode,
                        ))
                        .await
                        .into_response());
                    }
                }
                "/api/users/me" if req.uri().query().is_none() => {
                    if let Some(session) = plain_session(&req) {
                        return Box::pin(super::account::me(&app, &Auth::session_cookie(session)))
                            .await
                            .map(IntoResponse::into_response)
                            .map_err(poem::Error::from);
                    }
                }
                path => {
                    if let (Some(idp), Some(next)) = (login_idp(path), login_query(&req)) {
                        return Box::pin(super::login::login(&app, &req, idp, next.as_deref()))
                            .await
                            .map(IntoResponse::into_response)
                            .map_err(poem::Error::from);
                    }
                }
            }
        }
    }
    // Each answer's future is boxed, the hot ones too: they are large (the whole route's, or an
    // operation's with its store calls), and unboxed every layer above would carry their size
    // and move it on every poll of every request.
    Ok(Box::pin(next.call(req)).await?.into_response())
}

/// `app=NAME` and an optional `mode=status|redirect`, each once, and nothing else.
fn check_query(req: &Request) -> Option<(String, Option<CheckMode>)> {
    let (mut name, mut mode) = (None, None);
    for (key, value) in url::form_urlencoded::parse(req.uri().query()?.as_bytes()) {
        match &*key {
            "app" if name.is_none() => name = Some(value.into_owned()),
            "mode" if mode.is_none() => {
                mode = Some(match &*value {
                    "status" => CheckMode::Status,
                    "redirect" => CheckMode::Redirect,
                    _ => return None,
                })
            }
            _ => return None,
        }
    }
    Some((name?, mode))
}

/// The IdP of `/authnz/<idp>/login`, when its name is plain (letters, digits, `-`, `_`: read
/// alike with or without percent-decoding).
fn login_idp(path: &str) -> Option<&str> {
    let idp = path.strip_prefix("/authnz/")?.strip_suffix("/login")?;
    let plain = !idp.is_empty()
        && idp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then_some(idp)
}

/// No query, or `next` once and nothing else: `Some(next)`.
fn login_query(req: &Request) -> Option<Option<String>> {
    let Some(query) = req.uri().query() else {
        return Some(None);
    };
    let mut next = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "next" if next.is_none() => next = Some(value.into_owned()),
            _ => return None,
        }
    }
    Some(next)
}

/// The session cookie, when it is the request's only credential: named once, in base64url
/// (what authnz issues, read alike by every cookie parser), and no `Authorization` header.
fn plain_session(req: &Request) -> Option<String> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return None;
    }
    let mut found = None;
    for value in req.headers().get_all(header::COOKIE) {
        for pair in value.to_str().ok()?.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name == SESSION_COOKIE {
                let plain = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if found.is_some() || !plain {
                    return None;
                }
                found = Some(value);
            }
        }
    }
    found.map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri(uri.parse().unwrap_or_default());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.finish()
    }

    #[test]
    fn only_well_formed_check_parameters_take_the_hot_path() {
        let query = |uri: &str| check_query(&request(uri, &[]));
        assert_eq!(query("/authnz/auth?app=wiki"), Some(("wiki".into(), None)));
        assert_eq!(
            query("/authnz/auth?mode=redirect&app=w%20i"),
            Some(("w i".into(), Some(CheckMode::Redirect)))
        );
        for declined in [
            "/authnz/auth",
            "/authnz/auth?mode=status",
            "/authnz/auth?app=a&app=b",
            "/authnz/auth?app=a&mode=status&mode=status",
            "/authnz/auth?app=a&mode=",
            "/authnz/auth?app=a&mode=Redirect",
            "/authnz/auth?app=a&next=/",
        ] {
            assert_eq!(query(declined), None, "{declined}");
        }
    }

    #[test]
    fn only_a_plain_login_takes_the_hot_path() {
        assert_eq!(login_idp("/authnz/okta/login"), Some("okta"));
        assert_eq!(login_idp("/authnz/my-idp_2/login"), Some("my-idp_2"));
        for declined in [
            "/authnz//login",
            "/authnz/a%20b/login",
            "/authnz/a/b/login",
            "/authnz/okta/callback",
        ] {
            assert_eq!(login_idp(declined), None, "{declined}");
        }
        let query = |uri: &str| login_query(&request(uri, &[]));
        assert_eq!(query("/authnz/okta/login"), Some(None));
        assert_eq!(
            query("/authnz/okta/login?next=%2Fa"),
            Some(Some("/a".into()))
        );
        for declined in [
            "/authnz/okta/login?next=/a&next=/b",
            "/authnz/okta/login?x=1",
        ] {
            assert_eq!(query(declined), None, "{declined}");
        }
    }

    #[test]
    fn only_a_plain_session_cookie_alone_takes_the_hot_path() {
        let session = |headers: &[(&str, &str)]| plain_session(&request("/", headers));
        assert_eq!(
            session(&[("cookie", "a=1; authnz_session=abc-_9; b=2")]),
            Some("abc-_9".into())
        );
        for declined in [
            &[][..],
            &[("cookie", "authnz_session=")][..],
            &[("cookie", "authnz_session=a%20b")][..],
            &[("cookie", "authnz_session=\"abc\"")][..],
            &[("cookie", "authnz_session=a; authnz_session=b")][..],
            &[
                ("cookie", "authnz_session=a"),
                ("cookie", "authnz_session=a"),
            ][..],
            &[
                ("cookie", "authnz_session=a"),
                ("authorization", "Bearer authnz_x"),
            ][..],
        ] {
            assert_eq!(session(declined), None, "{declined:?}");
        }
    }
}

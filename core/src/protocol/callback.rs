//! What the IdP's redirect back must satisfy before its code is redeemed: one pure function,
//! [`check_callback`], over the pending login, the callback's parameters, the IdP, what the
//! browser brought and the time. The handler reads as parse → check → complete → finish.

use std::collections::HashMap;

use super::*;
use crate::crypto::constant_time_eq;

/// What the browser brought to the callback besides its parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Browser<'a> {
    /// SHA-256 of its pre-login cookie, if it sent one.
    pub binding_hash: Option<&'a str>,
    /// The session it holds now, if any: its user id and when it expires (Unix seconds).
    pub session: Option<(&'a str, i64)>,
}

/// Why a callback is refused before its code is redeemed. The pending login is spent either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackRefusal {
    /// The login is older than its lifetime, or from the future (SECURITY A5).
    #[error("this sign-in took too long and expired")]
    Expired,
    /// The state was issued for another IdP, issuer, client or redirect URI (SECURITY A6).
    #[error("this sign-in was started for another identity provider")]
    StateMismatch,
    /// The browser lacks the pre-login cookie the login was bound to (SECURITY A3).
    #[error("this sign-in was started in another browser (or cookies are blocked)")]
    BrowserMismatch,
    /// The IdP answered `error=` (SECURITY A10): what it said, for people.
    #[error("{0}")]
    IdpError(String),
    /// RFC 9207 `iss` names another issuer (mix-up, SECURITY A7).
    #[error("the response came from another issuer")]
    IssuerMismatch,
    /// The IdP promised `iss` and the response lacks it (SECURITY A8).
    #[error("the response lacks the issuer it promised")]
    IssuerMissing,
    /// No authorization code (tokens in the query are never taken instead, SECURITY A11).
    #[error("the callback has no authorization code")]
    MissingCode,
    /// A connect flow finished outside the session that started it (SECURITY F59).
    #[error("connecting an identity must finish in the session that started it")]
    ConnectSessionMismatch,
}

impl CallbackRefusal {
    /// The stable error code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired => "expired_state",
            Self::StateMismatch => "state_mismatch",
            Self::BrowserMismatch => "browser_mismatch",
            Self::IdpError(_) => "idp_error",
            Self::IssuerMismatch => "issuer_mismatch",
            Self::IssuerMissing => "issuer_missing",
            Self::MissingCode => "missing_code",
            Self::ConnectSessionMismatch => "connect_session_mismatch",
        }
    }
}

/// Every check of a callback before the code exchange, in order: the login's lifetime, the
/// mix-up binding to this IdP, the browser binding, an IdP's `error=`, RFC 9207 `iss`
/// (`promises_iss`: the discovery says the IdP sends it), the code, and for a connect flow the
/// session that started it. Returns the code to redeem.
pub fn check_callback<'p>(
    pending: &PendingLogin,
    params: &'p HashMap<String, String>,
    idp: &Idp,
    promises_iss: bool,
    browser: Browser<'_>,
    now: i64,
) -> Result<&'p str, CallbackRefusal> {
    let ttl = crate::config::LOGIN_TTL.as_secs() as i64;
    if now - pending.created_at > ttl || now < pending.created_at - 60 {
        return Err(CallbackRefusal::Expired);
    }
    if pending.idp != idp.config.name
        || pending.issuer != idp.config.issuer
        || pending.client_id != idp.config.client_id
        || pending.redirect_uri != idp.redirect_uri
    {
        return Err(CallbackRefusal::StateMismatch);
    }
    let bound = browser
        .binding_hash
        .is_some_and(|hash| constant_time_eq(hash, &pending.browser_hash));
    if !bound {
        return Err(CallbackRefusal::BrowserMismatch);
    }
    if let Some(error) = params.get("error") {
        let description = params
            .get("error_description")
            .map(String::as_str)
            .unwrap_or("");
        // A pushed request (RFC 9126) that the IdP no longer holds: the person took too long.
        if error == "invalid_request_uri" {
            return Err(CallbackRefusal::IdpError(
                "the sign-in request expired at the identity provider (invalid_request_uri): start the sign-in again".into(),
            ));
        }
        return Err(CallbackRefusal::IdpError(
            format!("the identity provider reported: {error} {description}")
                .trim()
                .to_string(),
        ));
    }
    match params.get("iss") {
        Some(iss) if !idp.issuer_matches(iss) => return Err(CallbackRefusal::IssuerMismatch),
        None if promises_iss => return Err(CallbackRefusal::IssuerMissing),
        _ => {}
    }
    let code = params
        .get("code")
        .filter(|code| !code.is_empty())
        .ok_or(CallbackRefusal::MissingCode)?;
    if let Some(link_user) = &pending.link_user_id {
        let same_session = browser
            .session
            .is_some_and(|(user_id, expires_at)| user_id == link_user && expires_at > now);
        if !same_session {
            return Err(CallbackRefusal::ConnectSessionMismatch);
        }
    }
    Ok(code)
}

impl Idp {
    /// Whether `iss` (an authorization response's RFC 9207 parameter) names this IdP: the
    /// configured issuer exactly, or, for a multi-tenant IdP, its template with one tenant.
    pub fn issuer_matches(&self, iss: &str) -> bool {
        if iss == self.config.issuer {
            return true;
        }
        let Some((prefix, suffix)) = self
            .info
            .issuer_template
            .as_deref()
            .and_then(|t| t.split_once("{tenantid}"))
        else {
            return false;
        };
        iss.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(is_guid)
    }

    /// Whether the IdP promised RFC 9207 `iss` in authorization responses.
    pub async fn promises_iss(&self) -> Result<bool, Error> {
        Ok(self
            .discovered()
            .await?
            .metadata
            .additional_metadata()
            .authorization_response_iss_parameter_supported
            == Some(true))
    }
}

/// `8-4-4-4-12` hexadecimal digits.
pub(super) fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn idp() -> Idp {
        let text =
            "[idps.corp]\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"c\"\n";
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            text,
            &Registry::builtin(),
            &|_| None,
        )
        .unwrap_or_else(|errors| panic!("{errors}"));
        let http = IdpHttp::new(HttpLimits::default()).unwrap_or_else(|err| panic!("{err}"));
        Idp::new(config.idps[0].clone(), "https://login.example", http)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    const NOW: i64 = 1_000_000;
    const BINDING: &str = "binding-hash";

    fn pending(idp: &Idp) -> PendingLogin {
        PendingLogin {
            idp: idp.config.name.clone(),
            issuer: idp.config.issuer.clone(),
            client_id: idp.config.client_id.clone(),
            redirect_uri: idp.redirect_uri.clone(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            next: "/".into(),
            browser_hash: BINDING.into(),
            created_at: NOW - 5,
            link_user_id: None,
            idp_fingerprint: idp.fingerprint.clone(),
            secret_key_id: String::new(),
            max_age: None,
            acr_values: Vec::new(),
        }
    }

    #[test]
    fn the_callback_checks_row_by_row() {
        let idp = idp();
        type Edit = fn(&mut PendingLogin, &mut HashMap<String, String>, &mut bool);
        let fine: Edit = |_, _, _| {};
        let ok = || Ok("the-code");
        use CallbackRefusal::*;
        let cases: Vec<(&str, Edit, Browser, Result<&str, CallbackRefusal>)> = vec![
            (
                "a well-formed callback passes",
                fine,
                Browser::default(),
                ok(),
            ),
            (
                "A5: older than a login's lifetime",
                |p, _, _| p.created_at = NOW - 601,
                Browser::default(),
                Err(Expired),
            ),
            (
                "A5: from the future",
                |p, _, _| p.created_at = NOW + 61,
                Browser::default(),
                Err(Expired),
            ),
            (
                "A6: started for another entry",
                |p, _, _| p.idp = "other".into(),
                Browser::default(),
                Err(StateMismatch),
            ),
            (
                "A6: started with another issuer",
                |p, _, _| p.issuer = "https://evil.example".into(),
                Browser::default(),
                Err(StateMismatch),
            ),
            (
                "A6: started with another client",
                |p, _, _| p.client_id = "other".into(),
                Browser::default(),
                Err(StateMismatch),
            ),
            (
                "A6: started with another redirect URI",
                |p, _, _| p.redirect_uri = "https://evil.example/cb".into(),
                Browser::default(),
                Err(StateMismatch),
            ),
            (
                "A3: another browser's binding",
                |p, _, _| p.browser_hash = "another".into(),
                Browser::default(),
                Err(BrowserMismatch),
            ),
            (
                "A3: an error from a foreign browser is still a browser mismatch",
                |p, q, _| {
                    p.browser_hash = "another".into();
                    q.insert("error".into(), "access_denied".into());
                },
                Browser::default(),
                Err(BrowserMismatch),
            ),
            (
                "A10: the IdP's error is reported",
                |_, q, _| {
                    q.insert("error".into(), "access_denied".into());
                    q.insert("error_description".into(), "<b>no</b>".into());
                },
                Browser::default(),
                Err(IdpError(
                    "the identity provider reported: access_denied <b>no</b>".into(),
                )),
            ),
            (
                "A7: a foreign iss",
                |_, q, _| {
                    q.insert("iss".into(), "https://evil.example".into());
                },
                Browser::default(),
                Err(IssuerMismatch),
            ),
            (
                "A7: the right iss passes",
                |_, q, _| {
                    q.insert("iss".into(), "https://idp.example".into());
                },
                Browser::default(),
                ok(),
            ),
            (
                "A8: a promised iss that is missing",
                |_, _, promised| *promised = true,
                Browser::default(),
                Err(IssuerMissing),
            ),
            (
                "A8: a promised iss that is there passes",
                |_, q, promised| {
                    *promised = true;
                    q.insert("iss".into(), "https://idp.example".into());
                },
                Browser::default(),
                ok(),
            ),
            (
                "A11: no code",
                |_, q, _| {
                    q.remove("code");
                },
                Browser::default(),
                Err(MissingCode),
            ),
            (
                "A11: tokens instead of a code",
                |_, q, _| {
                    q.remove("code");
                    q.insert("access_token".into(), "t".into());
                    q.insert("id_token".into(), "t".into());
                },
                Browser::default(),
                Err(MissingCode),
            ),
            (
                "A11: an empty code",
                |_, q, _| {
                    q.insert("code".into(), String::new());
                },
                Browser::default(),
                Err(MissingCode),
            ),
            (
                "F59: a connect flow without a session",
                |p, _, _| p.link_user_id = Some("u1".into()),
                Browser::default(),
                Err(ConnectSessionMismatch),
            ),
            (
                "F59: a connect flow in another user's session",
                |p, _, _| p.link_user_id = Some("u1".into()),
                Browser {
                    session: Some(("u2", NOW + 100)),
                    ..Browser::default()
                },
                Err(ConnectSessionMismatch),
            ),
            (
                "F59: a connect flow whose session expired",
                |p, _, _| p.link_user_id = Some("u1".into()),
                Browser {
                    session: Some(("u1", NOW)),
                    ..Browser::default()
                },
                Err(ConnectSessionMismatch),
            ),
            (
                "F59: a connect flow in its own session passes",
                |p, _, _| p.link_user_id = Some("u1".into()),
                Browser {
                    session: Some(("u1", NOW + 100)),
                    ..Browser::default()
                },
                ok(),
            ),
        ];
        for (row, edit, browser, expected) in cases {
            let mut pending = pending(&idp);
            let mut params: HashMap<String, String> = [
                ("code".to_string(), "the-code".to_string()),
                ("state".to_string(), "s".to_string()),
            ]
            .into();
            let mut promises_iss = false;
            edit(&mut pending, &mut params, &mut promises_iss);
            let browser = Browser {
                binding_hash: Some(BINDING),
                ..browser
            };
            let got = check_callback(&pending, &params, &idp, promises_iss, browser, NOW);
            assert_eq!(got, expected, "{row}");
        }
        // Without the pre-login cookie at all.
        let pending = pending(&idp);
        let params: HashMap<String, String> = [("code".to_string(), "c".to_string())].into();
        assert_eq!(
            check_callback(&pending, &params, &idp, false, Browser::default(), NOW),
            Err(BrowserMismatch),
            "A3: no pre-login cookie"
        );
    }

    #[test]
    fn a_login_names_its_idp_by_what_it_depends_on() {
        // Two loads of one entry (two replicas, or a reload) agree; a changed client does not.
        assert_eq!(idp().fingerprint, idp().fingerprint);
        let text =
            "[idps.corp]\nkind = \"oidc\"\nissuer = \"https://idp.example\"\nclient_id = \"d\"\n";
        let config = crate::config::parse(
            std::path::Path::new("t.toml"),
            text,
            &Registry::builtin(),
            &|_| None,
        )
        .unwrap_or_else(|errors| panic!("{errors}"));
        let http = IdpHttp::new(HttpLimits::default()).unwrap_or_else(|err| panic!("{err}"));
        let other = Idp::new(config.idps[0].clone(), "https://login.example", http)
            .unwrap_or_else(|err| panic!("{err}"));
        assert_ne!(other.fingerprint, idp().fingerprint);
        assert_eq!(idp().fingerprint.len(), 32);
    }

    #[test]
    fn refusals_keep_their_public_codes() {
        let codes: Vec<&str> = [
            CallbackRefusal::Expired,
            CallbackRefusal::StateMismatch,
            CallbackRefusal::BrowserMismatch,
            CallbackRefusal::IdpError(String::new()),
            CallbackRefusal::IssuerMismatch,
            CallbackRefusal::IssuerMissing,
            CallbackRefusal::MissingCode,
            CallbackRefusal::ConnectSessionMismatch,
        ]
        .iter()
        .map(CallbackRefusal::code)
        .collect();
        assert_eq!(
            codes,
            [
                "expired_state",
                "state_mismatch",
                "browser_mismatch",
                "idp_error",
                "issuer_mismatch",
                "issuer_missing",
                "missing_code",
                "connect_session_mismatch"
            ]
        );
    }
}

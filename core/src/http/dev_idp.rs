//! The dev IdP's endpoints: discovery, JWKS, the sign-in form, token and userinfo.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::{AccessToken, AuthorizationCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::crypto::random_token;
use crate::devidp::*;

use poem::http::StatusCode;

use poem::web::{Data, Form, Json, Query};

use poem::{get, handler, EndpointExt, IntoEndpoint, Request, Response, Route};

use crate::html::escape;
use crate::i18n::{t, t_args};

/// The dev IdP's routes, to be nested at [`crate::config::DEV_IDP_PATH`].
pub(crate) fn routes(dev: Arc<DevIdp>) -> impl IntoEndpoint {
    Route::new()
        .at("/.well-known/openid-configuration", get(discovery_endpoint))
        .at("/jwks", get(jwks_endpoint))
        .at("/authorize", get(authorize_form).post(authorize_submit))
        .at("/token", poem::post(token_endpoint))
        .at("/userinfo", get(userinfo_endpoint))
        .data(dev)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .header("Cache-Control", "no-store")
        .body(serde_json::json!({"error": error, "error_description": description}).to_string())
}

#[handler]
fn discovery_endpoint(Data(idp): Data<&Arc<DevIdp>>) -> Json<serde_json::Value> {
    let url = |path: &str| format!("{}{path}", idp.issuer);
    Json(serde_json::json!({
        "issuer": idp.issuer,
        "authorization_endpoint": url("/authorize"),
        "token_endpoint": url("/token"),
        "jwks_uri": url("/jwks"),
        "userinfo_endpoint": url("/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "claims_supported": ["sub", "email", "email_verified", "preferred_username", "name"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

#[handler]
fn jwks_endpoint(Data(idp): Data<&Arc<DevIdp>>) -> Json<CoreJsonWebKeySet> {
    Json(idp.jwks.clone())
}

#[derive(Deserialize)]
struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
}

impl AuthorizeParams {
    /// Checks the request; `Err` is a page to show (never a redirect to an unchecked URI).
    fn check<'a>(&'a self, idp: &DevIdp) -> Result<(&'a str, &'a str), Box<Response>> {
        let bad = |message: &str| {
            Box::new(
                Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .content_type("text/html; charset=utf-8")
                    .body(crate::html::page_en(
                        "Dev IdP: bad request",
                        &format!("<p>{}</p>", escape(message)),
                    )),
            )
        };
        if self.client_id.as_deref() != Some(DEV_CLIENT_ID) {
            return Err(bad("unknown client_id"));
        }
        let redirect_uri = self.redirect_uri.as_deref().unwrap_or_default();
        if !idp.redirect_uris.iter().any(|uri| uri == redirect_uri) {
            return Err(bad("redirect_uri is not registered"));
        }
        if self.response_type.as_deref() != Some("code") {
            return Err(bad("only response_type=code is supported"));
        }
        if self.code_challenge_method.as_deref() != Some("S256") {
            return Err(bad("PKCE with S256 is required"));
        }
        let challenge = self.code_challenge.as_deref().unwrap_or_default();
        if challenge.len() < 43 {
            return Err(bad("code_challenge missing"));
        }
        if !self
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .any(|s| s == "openid")
        {
            return Err(bad("the openid scope is required"));
        }
        Ok((redirect_uri, challenge))
    }
}

#[handler]
fn authorize_form(
    Query(params): Query<AuthorizeParams>,
    Data(idp): Data<&Arc<DevIdp>>,
) -> Response {
    if let Err(page) = params.check(idp) {
        return *page;
    }
    let hidden = |name: &str, value: &Option<String>| {
        format!(
            r#"<input type="hidden" name="{name}" value="{}">"#,
            escape(value.as_deref().unwrap_or_default())
        )
    };
    let body = format!(
        r#"<p class="warning">{}</p>
<form method="post" action="authorize">
{}{}{}{}{}{}{}{}
<label for="username">{}</label>
<input id="username" name="username" autocomplete="username" required pattern="[A-Za-z0-9._-]{{1,64}}" autofocus>
<label for="email">{}</label>
<input id="email" name="email" type="email" autocomplete="email">
<button type="submit">{}</button>
</form>"#,
        t_args(
            "dev-warning",
            &[(
                "development",
                &format!("<strong>{}</strong>", escape(&t("dev-development")))
            )]
        ),
        hidden("client_id", &params.client_id),
        hidden("redirect_uri", &params.redirect_uri),
        hidden("response_type", &params.response_type),
        hidden("state", &params.state),
        hidden("nonce", &params.nonce),
        hidden("code_challenge", &params.code_challenge),
        hidden("code_challenge_method", &params.code_challenge_method),
        hidden("scope", &params.scope),
        escape(&t("dev-username")),
        escape(&t("dev-email")),
        escape(&t("dev-sign-in")),
    );
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
        .body(crate::html::page(&t("dev-title"), &body))
}

#[derive(Deserialize)]
struct AuthorizeSubmit {
    #[serde(flatten)]
    params: AuthorizeParams,
    username: String,
    email: Option<String>,
}

#[handler]
fn authorize_submit(Form(form): Form<AuthorizeSubmit>, Data(idp): Data<&Arc<DevIdp>>) -> Response {
    let (redirect_uri, challenge) = match form.params.check(idp) {
        Ok(checked) => checked,
        Err(page) => return *page,
    };
    if !valid_dev_username(&form.username) {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .content_type("text/html; charset=utf-8")
            .body(crate::html::page(
                &t("dev-title"),
                &format!("<p>{}</p>", escape(&t("dev-bad-username"))),
            ));
    }
    let email = form
        .email
        .filter(|email| !email.trim().is_empty() && email.contains('@') && email.len() <= 254)
        .unwrap_or_else(|| format!("{}@dev.invalid", form.username));
    let code = random_token(32);
    {
        let mut codes = match idp.codes.lock() {
            Ok(codes) => codes,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = now();
        if idp
            .swept_codes
            .swap(now, std::sync::atomic::Ordering::Relaxed)
            != now
        {
            codes.retain(|_, grant| grant.expires_at > now); // once a second, not per code
        }
        if codes.len() >= MAX_GRANTS {
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many pending codes",
            );
        }
        codes.insert(
            code.clone(),
            CodeGrant {
                redirect_uri: redirect_uri.to_string(),
                code_challenge: challenge.to_string(),
                nonce: form.params.nonce.clone(),
                username: form.username.clone(),
                email,
                expires_at: now + CODE_TTL_SECS,
            },
        );
    }
    let Ok(mut location) = url::Url::parse(redirect_uri) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "bad redirect_uri",
        );
    };
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", form.params.state.as_deref().unwrap_or_default())
        .append_pair("iss", &idp.issuer);
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header("Location", location.as_str())
        .header("Cache-Control", "no-store")
        .finish()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
}

#[handler]
fn token_endpoint(Form(form): Form<TokenForm>, Data(idp): Data<&Arc<DevIdp>>) -> Response {
    if form.grant_type != "authorization_code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    if form.client_id.as_deref() != Some(DEV_CLIENT_ID) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    }
    let grant = {
        let mut codes = match idp.codes.lock() {
            Ok(codes) => codes,
            Err(poisoned) => poisoned.into_inner(),
        };
        codes.remove(form.code.as_deref().unwrap_or_default())
    };
    let Some(grant) = grant.filter(|grant| grant.expires_at > now()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or expired code",
        );
    };
    if form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri mismatch",
        );
    }
    let verifier = form.code_verifier.unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if verifier.len() < 43 || !crate::crypto::constant_time_eq(&challenge, &grant.code_challenge) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    let Some(access_token) = idp
        .tokens
        .sign(&TokenGrant {
            username: grant.username.clone(),
            email: grant.email.clone(),
            expires_at: now() + TOKEN_TTL_SECS,
        })
        .map(AccessToken::new)
    else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "token encoding failed",
        );
    };
    let code = AuthorizationCode::new(form.code.unwrap_or_default());
    let id_token = match idp.id_token(&grant, &access_token, &code) {
        Ok(token) => token,
        Err(err) => {
            tracing::error!(error = %err, "dev IdP could not sign an ID token");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "signing failed",
            );
        }
    };
    Response::builder()
        .content_type("application/json")
        .header("Cache-Control", "no-store")
        .body(
            serde_json::json!({
                "access_token": access_token.secret(),
                "token_type": "Bearer",
                "expires_in": TOKEN_TTL_SECS,
                "id_token": id_token,
                "scope": "openid email profile",
            })
            .to_string(),
        )
}

#[handler]
fn userinfo_endpoint(req: &Request, Data(idp): Data<&Arc<DevIdp>>) -> Response {
    let token = req
        .headers()
        .get("Authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    match idp.tokens.open(token, now()) {
        Some(grant) => Response::builder().content_type("application/json").body(
            serde_json::json!({
                "sub": grant.username,
                "email": grant.email,
                "email_verified": true,
                "preferred_username": grant.username,
                "name": grant.username,
            })
            .to_string(),
        ),
        None => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Bearer error=\"invalid_token\"")
            .finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires_at: i64) -> TokenGrant {
        TokenGrant {
            username: "ann".into(),
            email: "ann@dev.invalid".into(),
            expires_at,
        }
    }

    #[test]
    fn access_tokens_carry_their_grant_and_cannot_be_forged() {
        let signer = TokenSigner::new();
        let token = signer.sign(&grant(2_000)).unwrap();
        let opened = signer.open(&token, 1_000).unwrap();
        assert_eq!(
            (opened.username.as_str(), opened.expires_at),
            ("ann", 2_000)
        );
        assert!(signer.open(&token, 2_000).is_none(), "expired");
        assert!(
            TokenSigner::new().open(&token, 1_000).is_none(),
            "another key"
        );
        // Another grant under the same signature: refused.
        let (_, tag) = token.split_once('.').unwrap();
        let mut forged = grant(2_000);
        forged.username = "root".into();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(
            signer.open(&format!("{payload}.{tag}"), 1_000).is_none(),
            "forged"
        );
        for junk in ["", ".", "abc", "abc.def", &token.replace('.', "")] {
            assert!(signer.open(junk, 1_000).is_none(), "{junk:?}");
        }
    }
}

//! The development IdP (`kind = "dev"`): a small OpenID Provider served by authnz itself under
//! `/dev-idp`, so that authnz can be tried on a fresh machine with no network.
//!
//! Anyone can sign in as anyone, which is why the config refuses it unless `public_url` is a
//! loopback address and the server warns at startup. authnz talks to it through exactly the
//! same client code as to any other IdP: discovery over HTTP, the code flow with PKCE, an
//! RS256-signed ID token checked against the published JWKS, and userinfo.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{TimeZone, Utc};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    AccessToken, Audience, AuthorizationCode, EmptyAdditionalClaims, EndUserEmail, EndUserName,
    EndUserUsername, IssuerUrl, JsonWebKeyId, Nonce, PrivateSigningKey, StandardClaims,
    SubjectIdentifier,
};
use poem::http::StatusCode;
use poem::web::{Data, Form, Json, Query};
use poem::{get, handler, EndpointExt, IntoEndpoint, Request, Response, Route};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::crypto::random_token;
use crate::html::escape;

pub use crate::providers::dev::DEV_CLIENT_ID;

const CODE_TTL_SECS: i64 = 60;
const TOKEN_TTL_SECS: i64 = 300;
/// Bound on outstanding codes, so a flood cannot grow memory without limit.
const MAX_GRANTS: usize = 200_000;

struct CodeGrant {
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    username: String,
    email: String,
    expires_at: i64,
}

/// What an access token carries (signed with the dev IdP's token key).
#[derive(serde::Serialize, Deserialize)]
struct TokenGrant {
    #[serde(rename = "u")]
    username: String,
    #[serde(rename = "e")]
    email: String,
    #[serde(rename = "x")]
    expires_at: i64,
}

/// Signs access tokens that carry their grant: userinfo needs no table of issued tokens, so
/// memory does not grow with the tokens of the last five minutes.
struct TokenSigner {
    key: [u8; 64],
}

impl TokenSigner {
    fn new() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 64];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    fn mac(&self, payload: &str) -> hmac::Hmac<Sha256> {
        use hmac::{digest::KeyInit, Mac};
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new(&self.key.into());
        mac.update(payload.as_bytes());
        mac
    }

    /// `<base64url JSON grant>.<base64url HMAC-SHA-256>`.
    fn sign(&self, grant: &TokenGrant) -> Option<String> {
        use hmac::Mac;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).ok()?);
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        Some(format!("{payload}.{tag}"))
    }

    /// The grant of a token signed here that has not expired at `now`.
    fn open(&self, token: &str, now: i64) -> Option<TokenGrant> {
        use hmac::Mac;
        let (payload, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(payload).verify_slice(&tag).ok()?;
        let grant: TokenGrant =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (grant.expires_at > now).then_some(grant)
    }
}

/// The OpenID Provider state.
pub struct DevIdp {
    issuer: String,
    redirect_uris: Vec<String>,
    key: CoreRsaPrivateSigningKey,
    jwks: CoreJsonWebKeySet,
    codes: Mutex<HashMap<String, CodeGrant>>,
    /// The second of the last sweep of expired codes.
    swept_codes: std::sync::atomic::AtomicI64,
    tokens: TokenSigner,
}

/// A dev IdP failure at startup.
#[derive(Debug, thiserror::Error)]
#[error("dev IdP key {path}: {reason}")]
pub struct DevIdpError {
    path: String,
    reason: String,
}

fn now() -> i64 {
    Utc::now().timestamp()
}

impl DevIdp {
    /// Loads the signing key from `key_file` or creates it (RSA 2048, mode 0600).
    pub fn new(
        issuer: String,
        redirect_uris: Vec<String>,
        key_file: &Path,
    ) -> Result<Self, DevIdpError> {
        let fail = |reason: String| DevIdpError {
            path: key_file.display().to_string(),
            reason,
        };
        let pem = match std::fs::read_to_string(key_file) {
            Ok(pem) => pem,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .map_err(|err| fail(err.to_string()))?;
                let pem = key
                    .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                    .map_err(|err| fail(err.to_string()))?
                    .to_string();
                if let Some(parent) = key_file.parent() {
                    std::fs::create_dir_all(parent).map_err(|err| fail(err.to_string()))?;
                }
                write_private(key_file, pem.as_bytes()).map_err(|err| fail(err.to_string()))?;
                pem
            }
            Err(err) => return Err(fail(err.to_string())),
        };
        let kid = {
            let digest = Sha256::digest(pem.as_bytes());
            URL_SAFE_NO_PAD.encode(&digest[..12])
        };
        let key =
            CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new(kid))).map_err(fail)?;
        let jwks = CoreJsonWebKeySet::new(vec![key.as_verification_key()]);
        Ok(Self {
            issuer,
            redirect_uris,
            key,
            jwks,
            codes: Mutex::new(HashMap::new()),
            swept_codes: std::sync::atomic::AtomicI64::new(0),
            tokens: TokenSigner::new(),
        })
    }

    /// The routes, to be nested at [`crate::config::DEV_IDP_PATH`].
    pub fn routes(self: Arc<Self>) -> impl IntoEndpoint {
        Route::new()
            .at("/.well-known/openid-configuration", get(discovery_endpoint))
            .at("/jwks", get(jwks_endpoint))
            .at("/authorize", get(authorize_form).post(authorize_submit))
            .at("/token", poem::post(token_endpoint))
            .at("/userinfo", get(userinfo_endpoint))
            .data(self)
    }

    fn id_token(
        &self,
        grant: &CodeGrant,
        access_token: &AccessToken,
        code: &AuthorizationCode,
    ) -> Result<String, String> {
        let issued = Utc::now();
        let expires = Utc
            .timestamp_opt(issued.timestamp() + TOKEN_TTL_SECS, 0)
            .single()
            .ok_or("time out of range")?;
        let standard = StandardClaims::new(SubjectIdentifier::new(grant.username.clone()))
            .set_email(Some(EndUserEmail::new(grant.email.clone())))
            .set_email_verified(Some(true))
            .set_preferred_username(Some(EndUserUsername::new(grant.username.clone())))
            .set_name(Some(EndUserName::new(grant.username.clone()).into()));
        let claims = CoreIdTokenClaims::new(
            IssuerUrl::new(self.issuer.clone()).map_err(|err| err.to_string())?,
            vec![Audience::new(DEV_CLIENT_ID.to_string())],
            expires,
            issued,
            standard,
            EmptyAdditionalClaims {},
        )
        .set_nonce(grant.nonce.clone().map(Nonce::new));
        let token = CoreIdToken::new(
            claims,
            &self.key,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            Some(access_token),
            Some(code),
        )
        .map_err(|err| err.to_string())?;
        Ok(token.to_string())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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
                    .body(crate::html::page(
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
        r#"<p class="warning">This is authnz's <strong>development</strong> identity provider: you can sign in as anyone, without a password. Never enable it on a public server.</p>
<form method="post" action="authorize">
{}{}{}{}{}{}{}{}
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required pattern="[A-Za-z0-9._-]{{1,64}}" autofocus>
<label for="email">Email (optional)</label>
<input id="email" name="email" type="email" autocomplete="email">
<button type="submit">Sign in</button>
</form>"#,
        hidden("client_id", &params.client_id),
        hidden("redirect_uri", &params.redirect_uri),
        hidden("response_type", &params.response_type),
        hidden("state", &params.state),
        hidden("nonce", &params.nonce),
        hidden("code_challenge", &params.code_challenge),
        hidden("code_challenge_method", &params.code_challenge_method),
        hidden("scope", &params.scope),
    );
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
        .body(crate::html::page("Sign in — dev IdP", &body))
}

#[derive(Deserialize)]
struct AuthorizeSubmit {
    #[serde(flatten)]
    params: AuthorizeParams,
    username: String,
    email: Option<String>,
}

fn valid_dev_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
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
                "Dev IdP",
                "<p>User names are 1-64 letters, digits, '.', '_' or '-'.</p>",
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

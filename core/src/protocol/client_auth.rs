//! How authnz authenticates itself to the IdP on every back-channel call (the token endpoint
//! for codes and refreshes, revocation, pushed authorization requests): `client_auth`.
//!
//! The secret goes in an HTTP Basic header or in the body; with `client_secret_jwt` or
//! `private_key_jwt` (RFC 7523) each call carries a fresh assertion instead: `iss` and `sub`
//! the client id, `aud` the token endpoint (which every endpoint of the server accepts; or the
//! issuer, with `client_assertion_audience = "issuer"`, for an IdP that wants that), a random
//! `jti`, valid for a minute. The secret or key never leaves authnz otherwise.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

/// RFC 7523 §2.2.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid.
const ASSERTION_TTL: i64 = 60;

impl Idp {
    /// The token endpoint that assertions name as their audience.
    pub(super) fn token_endpoint(&self, discovered: Option<&Discovered>) -> String {
        match (&self.info.oauth2, discovered) {
            (Some(oauth2), _) => oauth2.token_endpoint.clone(),
            (None, Some(discovered)) => discovered
                .metadata
                .token_endpoint()
                .map(|url| url.as_str().to_string())
                .unwrap_or_default(),
            (None, None) => String::new(),
        }
    }

    /// The secret the openidconnect client sends itself (Basic or body); `None` for the
    /// assertion methods and public clients.
    pub(super) fn client_secret_for_client(&self) -> Option<ClientSecret> {
        match self.config.client_auth {
            ClientAuth::Auto | ClientAuth::SecretBasic | ClientAuth::SecretPost => self
                .config
                .client_secret
                .as_ref()
                .map(|secret| ClientSecret::new(secret.expose().to_string())),
            ClientAuth::SecretJwt | ClientAuth::PrivateKeyJwt | ClientAuth::None => None,
        }
    }

    /// `client_assertion_type` and `client_assertion` for a call whose token endpoint is
    /// `audience`, with the assertion methods; nothing otherwise.
    pub(super) fn assertion_params(&self, audience: &str) -> Result<Vec<(String, String)>, Error> {
        let now = chrono::Utc::now().timestamp();
        let audience = if self.config.assertion_audience_issuer {
            self.config.issuer.as_str()
        } else {
            audience
        };
        let claims = serde_json::json!({
            "iss": self.config.client_id,
            "sub": self.config.client_id,
            "aud": audience,
            "jti": random_token(24),
            "iat": now,
            "exp": now + ASSERTION_TTL,
        });
        let assertion = match self.config.client_auth {
            ClientAuth::PrivateKeyJwt => {
                let key = self.config.client_key.as_ref().ok_or_else(|| {
                    Error::Internal("private_key_jwt without a client key".into())
                })?;
                key.sign_jwt(&claims)
                    .map_err(|_| Error::Internal("signing the client assertion failed".into()))?
            }
            ClientAuth::SecretJwt => {
                let secret =
                    self.config.client_secret.as_ref().ok_or_else(|| {
                        Error::Internal("client_secret_jwt without a secret".into())
                    })?;
                hs256(secret.expose(), &claims)?
            }
            _ => return Ok(Vec::new()),
        };
        Ok(vec![
            ("client_assertion_type".into(), ASSERTION_TYPE.into()),
            ("client_assertion".into(), assertion),
        ])
    }

    /// What `check --online` says of `client_auth` against discovery: a method the IdP's
    /// `token_endpoint_auth_methods_supported` does not list (when it lists any).
    pub fn client_auth_problems(&self, discovered: &Discovered) -> Vec<String> {
        let Some(method) = self.config.client_auth.method() else {
            return Vec::new();
        };
        let Some(listed) = discovered.metadata.token_endpoint_auth_methods_supported() else {
            return Vec::new();
        };
        let names: Vec<String> = listed
            .iter()
            .filter_map(|method| serde_json::to_value(method).ok())
            .filter_map(|value| value.as_str().map(str::to_string))
            .collect();
        if names.iter().any(|name| name == method) {
            Vec::new()
        } else {
            vec![format!(
                "client_auth = \"{method}\", but the IdP's token_endpoint_auth_methods_supported lists only {}",
                names.join(", ")
            )]
        }
    }

    /// The authentication of a form POST to one of the IdP's endpoints (RFC 6749 §2.3.1):
    /// an `Authorization` header, and the fields to add to the form.
    pub(super) fn form_auth(&self, audience: &str) -> Result<FormAuth, Error> {
        let client_id = || ("client_id".to_string(), self.config.client_id.clone());
        Ok(match self.config.client_auth {
            ClientAuth::Auto | ClientAuth::SecretBasic => match self.basic_auth() {
                Some(header) => (Some(header), Vec::new()),
                None => (None, vec![client_id()]),
            },
            ClientAuth::SecretPost => {
                let mut fields = vec![client_id()];
                if let Some(secret) = &self.config.client_secret {
                    fields.push(("client_secret".into(), secret.expose().to_string()));
                }
                (None, fields)
            }
            ClientAuth::SecretJwt | ClientAuth::PrivateKeyJwt => {
                let mut fields = vec![client_id()];
                fields.extend(self.assertion_params(audience)?);
                (None, fields)
            }
            ClientAuth::None => (None, vec![client_id()]),
        })
    }
}

/// A form POST's `Authorization` header, and the fields it adds to the form.
pub(super) type FormAuth = (Option<String>, Vec<(String, String)>);

/// `claims` as a compact HS256 JWS keyed with `secret`.
fn hs256(secret: &str, claims: &JsonValue) -> Result<String, Error> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| Error::Internal("an unusable client secret".into()))?;
    mac.update(input.as_bytes());
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    ))
}

//! The development IdP (`kind = "dev"`): a small OpenID Provider served by authnz itself under
//! `/dev-idp`, so that authnz can be tried on a fresh machine with no network.
//!
//! Anyone can sign in as anyone, which is why the config refuses it unless `public_url` is a
//! loopback address and the server warns at startup. authnz talks to it through exactly the
//! same client code as to any other IdP: discovery over HTTP, the code flow with PKCE, an
//! RS256-signed ID token checked against the published JWKS, and userinfo.
//!
//! This module is the provider itself (its keys, codes and tokens); its HTTP endpoints are in
//! the HTTP layer.

use std::collections::HashMap;

use std::path::Path;

use std::sync::Mutex;

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

use serde::Deserialize;

use sha2::{Digest, Sha256};

pub use crate::providers::dev::DEV_CLIENT_ID;

pub(crate) const CODE_TTL_SECS: i64 = 60;

pub(crate) const TOKEN_TTL_SECS: i64 = 300;

/// Bound on outstanding codes, so a flood cannot grow memory without limit.
pub(crate) const MAX_GRANTS: usize = 200_000;

pub(crate) struct CodeGrant {
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: String,
    pub(crate) nonce: Option<String>,
    pub(crate) username: String,
    pub(crate) email: String,
    pub(crate) expires_at: i64,
}

/// What an access token carries (signed with the dev IdP's token key).
#[derive(serde::Serialize, Deserialize)]
pub(crate) struct TokenGrant {
    #[serde(rename = "u")]
    pub(crate) username: String,
    #[serde(rename = "e")]
    pub(crate) email: String,
    #[serde(rename = "x")]
    pub(crate) expires_at: i64,
}

/// Signs access tokens that carry their grant: userinfo needs no table of issued tokens, so
/// memory does not grow with the tokens of the last five minutes.
pub(crate) struct TokenSigner {
    pub(crate) key: [u8; 64],
}

impl TokenSigner {
    pub(crate) fn new() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 64];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    pub(crate) fn mac(&self, payload: &str) -> hmac::Hmac<Sha256> {
        use hmac::{digest::KeyInit, Mac};
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new(&self.key.into());
        mac.update(payload.as_bytes());
        mac
    }

    /// `<base64url JSON grant>.<base64url HMAC-SHA-256>`.
    pub(crate) fn sign(&self, grant: &TokenGrant) -> Option<String> {
        use hmac::Mac;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).ok()?);
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        Some(format!("{payload}.{tag}"))
    }

    /// The grant of a token signed here that has not expired at `now`.
    pub(crate) fn open(&self, token: &str, now: i64) -> Option<TokenGrant> {
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
    pub(crate) issuer: String,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) key: CoreRsaPrivateSigningKey,
    pub(crate) jwks: CoreJsonWebKeySet,
    pub(crate) codes: Mutex<HashMap<String, CodeGrant>>,
    /// The second of the last sweep of expired codes.
    pub(crate) swept_codes: std::sync::atomic::AtomicI64,
    pub(crate) tokens: TokenSigner,
}

/// A dev IdP failure at startup.
#[derive(Debug, thiserror::Error)]
#[error("dev IdP key {path}: {reason}")]
pub struct DevIdpError {
    pub(crate) path: String,
    pub(crate) reason: String,
}

pub(crate) fn now() -> i64 {
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

    pub(crate) fn id_token(
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

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

pub(crate) fn valid_dev_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

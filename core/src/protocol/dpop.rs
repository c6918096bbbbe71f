//! Sender-constrained tokens (RFC 9449 DPoP), with `dpop = true`: each identity's tokens are
//! bound to a P-256 key of its own, made at its sign-in and sealed with its tokens in the
//! vault. Every call that uses them (the code exchange, userinfo, refreshes, revocation)
//! carries a fresh proof signed with that key: the method, the URL, a random `jti`, and for a
//! call that presents the access token its hash (`ath`, with `Authorization: DPoP`). An IdP
//! that answers `use_dpop_nonce` with a `DPoP-Nonce` gets the request once more with the nonce
//! in the proof; the nonce is kept for the next call. A token answer must say `token_type`
//! DPoP when one was asked for, and must not when none was.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::*;
use crate::client_key::ClientKey;

/// A DPoP key and the IdP's latest nonce.
pub struct Dpop {
    key: ClientKey,
    /// PKCS#8, base64: what is sealed with the tokens.
    sealed_form: String,
    nonce: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop")
            .field("jkt", &self.key.thumbprint())
            .finish_non_exhaustive()
    }
}

impl Dpop {
    /// A new key for a sign-in.
    pub fn generate() -> Result<Self, Error> {
        let der = crate::signing::SigningKey::generate_pkcs8()
            .map_err(|_| Error::Internal("making a DPoP key failed".into()))?;
        Self::from_pkcs8(&STANDARD.encode(der))
    }

    /// The key kept with an identity's tokens.
    pub fn from_pkcs8(sealed_form: &str) -> Result<Self, Error> {
        let der = STANDARD
            .decode(sealed_form)
            .map_err(|_| Error::Internal("an unreadable DPoP key".into()))?;
        let key = ClientKey::from_pkcs8(&der, Some("ES256"))
            .map_err(|_| Error::Internal("an unreadable DPoP key".into()))?;
        Ok(Self {
            key,
            sealed_form: sealed_form.to_string(),
            nonce: std::sync::Mutex::new(None),
        })
    }

    /// What goes into [`IdpTokens::dpop_key`].
    pub fn sealed_form(&self) -> String {
        self.sealed_form.clone()
    }

    /// A proof for `method` on `url` (its query and fragment left out), presenting
    /// `access_token` when given.
    fn proof(&self, method: &str, url: &str, access_token: Option<&str>) -> Result<String, Error> {
        let mut htu = Url::parse(url).map_err(|_| Error::Internal("a bad endpoint URL".into()))?;
        htu.set_query(None);
        htu.set_fragment(None);
        let mut claims = serde_json::json!({
            "jti": random_token(24),
            "htm": method,
            "htu": htu.as_str(),
            "iat": chrono::Utc::now().timestamp(),
        });
        if let Some(nonce) = self
            .nonce
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        {
            claims["nonce"] = JsonValue::String(nonce);
        }
        if let Some(token) = access_token {
            claims["ath"] = JsonValue::String(URL_SAFE_NO_PAD.encode(Sha256::digest(token)));
        }
        self.key
            .sign_proof(&claims)
            .map_err(|_| Error::Internal("signing a DPoP proof failed".into()))
    }

    /// Keeps the nonce an answer names.
    fn remember_nonce(&self, response: &HttpResponse) {
        if let Some(nonce) = response
            .headers()
            .get("dpop-nonce")
            .and_then(|value| value.to_str().ok())
            .filter(|nonce| !nonce.is_empty() && nonce.len() <= 512)
        {
            *self
                .nonce
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(nonce.to_string());
        }
    }
}

/// Whether an answer asks for the request again with a nonce (RFC 9449 §8, §9).
fn wants_nonce(response: &HttpResponse) -> bool {
    let status = response.status().as_u16();
    if !(status == 400 || status == 401) || !response.headers().contains_key("dpop-nonce") {
        return false;
    }
    let in_header = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("use_dpop_nonce"));
    let in_body = serde_json::from_slice::<JsonValue>(response.body())
        .ok()
        .and_then(|body| {
            body.get("error")
                .and_then(JsonValue::as_str)
                .map(str::to_string)
        })
        .is_some_and(|error| error == "use_dpop_nonce");
    in_header || in_body
}

impl IdpHttp {
    /// Sends `request` with a DPoP proof; a `Bearer` access token goes as `DPoP` with its
    /// hash in the proof. One retry with the IdP's nonce when it asks.
    pub(super) async fn execute_dpop(
        &self,
        request: HttpRequest,
        dpop: &Dpop,
    ) -> Result<HttpResponse, HttpError> {
        let (mut parts, body) = request.into_parts();
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_string);
        if let Some(token) = &token {
            let value = http::HeaderValue::from_str(&format!("DPoP {token}"))
                .map_err(|_| HttpError::Transport("an unusable access token".into()))?;
            parts.headers.insert(http::header::AUTHORIZATION, value);
        }
        let method = parts.method.as_str().to_string();
        let url = parts.uri.to_string();
        let mut answer = None;
        for _ in 0..2 {
            let proof = dpop
                .proof(&method, &url, token.as_deref())
                .map_err(|err| HttpError::Transport(err.to_string()))?;
            let mut attempt = http::Request::from_parts(parts.clone(), body.clone());
            attempt.headers_mut().insert(
                "dpop",
                http::HeaderValue::from_str(&proof)
                    .map_err(|_| HttpError::Transport("an unusable DPoP proof".into()))?,
            );
            let response = self.execute(attempt).await?;
            dpop.remember_nonce(&response);
            let again = wants_nonce(&response);
            answer = Some(response);
            if !again {
                break;
            }
        }
        answer.ok_or_else(|| HttpError::Transport("no answer".into()))
    }

    /// [`IdpHttp::as_oidc`] with DPoP proofs, keeping the last answer's status in `status`.
    pub(super) fn as_oidc_dpop(
        &self,
        dpop: &Arc<Dpop>,
        status: Arc<std::sync::atomic::AtomicU16>,
    ) -> impl Fn(
        HttpRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<HttpResponse, HttpError>>
           + '_ {
        let dpop = Arc::clone(dpop);
        move |request| {
            let http = self.clone();
            let dpop = Arc::clone(&dpop);
            let status = Arc::clone(&status);
            Box::pin(async move {
                let response = http.execute_dpop(request, &dpop).await;
                if let Ok(response) = &response {
                    status.store(
                        response.status().as_u16(),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                response
            })
        }
    }
}

impl Idp {
    /// What `check --online` says of `dpop` against discovery: an IdP that names its DPoP
    /// algorithms without ES256 (authnz's proofs), or names none (it may not do DPoP at all).
    pub fn dpop_problems(&self, discovered: &Discovered) -> Vec<String> {
        if !self.config.dpop {
            return Vec::new();
        }
        match &discovered
            .metadata
            .additional_metadata()
            .dpop_signing_alg_values_supported
        {
            None => vec!["dpop = true, but the IdP's discovery has no dpop_signing_alg_values_supported: it may not bind tokens".into()],
            Some(algs) if !algs.iter().any(|alg| alg == "ES256") => vec![format!(
                "dpop = true, but the IdP takes DPoP proofs only in {} (authnz signs ES256)",
                algs.join(", ")
            )],
            Some(_) => Vec::new(),
        }
    }

    /// The DPoP key for a call with `tokens` (`None` without `dpop`); an identity's tokens
    /// from before `dpop` was set have none, and get none.
    pub(super) fn dpop_of(&self, tokens: &IdpTokens) -> Result<Option<Arc<Dpop>>, Error> {
        tokens
            .dpop_key
            .as_deref()
            .map(|key| Dpop::from_pkcs8(key).map(Arc::new))
            .transpose()
    }

    /// The token answer's `token_type` against what was asked: DPoP exactly when a proof was
    /// sent (a bound token used as a bearer one fails; an unbound one would be stealable).
    pub(super) fn check_token_type(&self, token_type: &str, dpop: bool) -> Result<(), Error> {
        let bound = token_type.eq_ignore_ascii_case("dpop");
        match (dpop, bound) {
            (true, false) => Err(Error::IdpProtocol(
                "the identity provider did not bind the tokens to the DPoP key (token_type is not DPoP)".into(),
            )),
            (false, true) => Err(Error::IdpProtocol(
                "the identity provider answered with DPoP-bound tokens, which were not asked for".into(),
            )),
            _ => Ok(()),
        }
    }
}

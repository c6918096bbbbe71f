//! The OpenID Connect relying party: discovery, the authorize request, the code exchange and
//! every check on what comes back. This module owns the protocol's security decisions; the
//! provider plugins only describe their IdP and map verified claims.
//!
//! What `openidconnect` checks by itself (signature, `iss`, `aud`, `exp`, `nonce`) is used as
//! documented; what it leaves to the application is done here: pinned algorithms, `azp`,
//! `iat` bounds, `at_hash`, the shape of `sub`, userinfo `sub`, JWKS refetch on key rotation
//! (coalesced and throttled), and the outbound HTTP client's limits.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use authnz_plugin::{JsonMap, JsonValue, LoginContext, VerifiedClaims};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGenderClaim,
    CoreGrantType, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthorizationCode,
    ClaimsVerificationError, ClientId, ClientSecret, HttpRequest, HttpResponse, IdToken,
    IdTokenClaims, IssuerUrl, JsonWebKeySet, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, RequestTokenError, SignatureVerificationError,
    SubjectIdentifier, TokenResponse, UserInfoClaims, UserInfoError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use url::Url;

use crate::config::{is_loopback_host, IdpConfig, RESERVED_AUTHORIZE_PARAMS};
use crate::crypto::random_token;
use crate::error::FlowError;
use crate::store::PendingLogin;

/// Limits of the outbound HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The HTTP client for IdP calls: never follows redirects (SSRF), has timeouts, caps bodies.
#[derive(Clone)]
pub struct IdpHttp {
    client: reqwest::Client,
    max_body_bytes: usize,
}

/// An outbound call failed. The message never carries a body or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connection, TLS or timeout.
    #[error("request to the IdP failed: {0}")]
    Transport(String),
    /// The body exceeded the limit.
    #[error("IdP response larger than {0} bytes")]
    TooLarge(usize),
}

impl IdpHttp {
    pub fn new(limits: HttpLimits) -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.total_timeout)
            .user_agent(concat!("authnz/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
        Ok(Self {
            client,
            max_body_bytes: limits.max_body_bytes,
        })
    }

    /// Sends one request; a 3xx comes back as a response, not followed.
    pub async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body_bytes as u64)
        {
            return Err(HttpError::TooLarge(self.max_body_bytes));
        }
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| HttpError::Transport(err.without_url().to_string()))?;
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(HttpError::TooLarge(self.max_body_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|err| HttpError::Transport(err.to_string()))
    }

    /// [`IdpHttp::as_oidc`], keeping the last answer's status in `status`.
    fn recording(
        &self,
        status: Arc<std::sync::atomic::AtomicU16>,
    ) -> impl Fn(
        HttpRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<HttpResponse, HttpError>>
           + '_ {
        move |request| {
            let http = self.clone();
            let status = Arc::clone(&status);
            Box::pin(async move {
                let response = http.execute(request).await;
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

    /// The client as `openidconnect` wants it.
    fn as_oidc(
        &self,
    ) -> impl Fn(
        HttpRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<HttpResponse, HttpError>>
           + '_ {
        move |request| {
            let http = self.clone();
            Box::pin(async move { http.execute(request).await })
        }
    }
}

/// Discovery fields beyond the ones `openidconnect` models.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraProviderMetadata {
    /// RFC 9207: the IdP sends `iss` in authorization responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    /// RFC 7009 token revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// RP-initiated logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
}

impl AdditionalProviderMetadata for ExtraProviderMetadata {}

/// The IdP's discovery document.
pub type Metadata = ProviderMetadata<
    ExtraProviderMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Every claim that is not a standard one (`hd`, `tid`, `oid`, `groups`, ...).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    pub claims: JsonMap<String, JsonValue>,
}

impl AdditionalClaims for OtherClaims {}

type AllIdTokenClaims = IdTokenClaims<OtherClaims, CoreGenderClaim>;
type AllIdToken = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// The token response with our claims type.
type TokenResponseWithClaims = openidconnect::StandardTokenResponse<
    openidconnect::IdTokenFields<
        OtherClaims,
        openidconnect::EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    openidconnect::core::CoreTokenType,
>;

type OidcClient = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    TokenResponseWithClaims,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// Tolerance for clock differences with the IdP.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The longest pause between two discovery attempts of a failing IdP.
pub const DISCOVERY_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// At most one unknown-`kid` JWKS refetch per IdP in this interval.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// The discovered state of an IdP.
pub struct Discovered {
    pub metadata: Metadata,
    /// The authorization endpoint with the parameters every login shares (response type,
    /// client, redirect URI, scope) already encoded: each login appends only its own.
    authorize_base: String,
    /// Unix seconds of the discovery.
    pub discovered_at: i64,
    /// The ID-token (and logout/access-token) signature algorithms accepted: `id_token_algs`
    /// as configured, or else the asymmetric ones discovery advertises that authnz supports
    /// (never `none`, never HS*: those only when configured), or RS256 when it lists none.
    pub algs: Vec<String>,
    jwks: RwLock<(u64, Arc<CoreJsonWebKeySet>)>,
    refetch: Mutex<RefetchState>,
}

struct RefetchState {
    last: Option<Instant>,
}

impl Discovered {
    /// The JWKS generation and how many keys it holds.
    pub fn jwks_snapshot(&self) -> (u64, usize) {
        let (generation, jwks) = self.jwks();
        (generation, jwks.keys().len())
    }

    fn jwks(&self) -> (u64, Arc<CoreJsonWebKeySet>) {
        match self.jwks.read() {
            Ok(guard) => (guard.0, Arc::clone(&guard.1)),
            Err(poisoned) => {
                let guard = poisoned.into_inner();
                (guard.0, Arc::clone(&guard.1))
            }
        }
    }

    fn set_jwks(&self, jwks: CoreJsonWebKeySet) -> (u64, Arc<CoreJsonWebKeySet>) {
        let mut guard = match self.jwks.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.0 += 1;
        guard.1 = Arc::new(jwks);
        (guard.0, Arc::clone(&guard.1))
    }
}

/// Counters an operator (and the tests) can read.
#[derive(Debug, Default)]
pub struct IdpCounters {
    pub discoveries: std::sync::atomic::AtomicU64,
    pub jwks_fetches: std::sync::atomic::AtomicU64,
}

/// One configured IdP at run time.
pub struct Idp {
    pub config: IdpConfig,
    /// What the provider described, once.
    pub info: authnz_plugin::ProviderInfo,
    issuer_url: IssuerUrl,
    /// `<public_url>/authnz/<name>/callback`, exactly.
    pub redirect_uri: String,
    http: IdpHttp,
    discovered: tokio::sync::RwLock<Option<Arc<Discovered>>>,
    discover_lock: Mutex<()>,
    /// After a failed discovery: no other attempt before this instant; failures in a row.
    backoff: std::sync::Mutex<Option<(Instant, u32)>>,
    /// Why the last discovery failed, until one succeeds (for `/healthz`).
    last_error: std::sync::Mutex<Option<String>>,
    pub counters: IdpCounters,
}

/// What `/login` produces.
pub struct AuthorizeRequest {
    pub url: String,
    pub state: String,
    pub pending: PendingLogin,
}

/// The tokens an IdP gave us, as stored (sealed) for the identity.
#[derive(Clone, Serialize, Deserialize)]
pub struct IdpTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: String,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for IdpTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpTokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A login that passed every check.
#[derive(Debug)]
pub struct VerifiedLogin {
    pub claims: VerifiedClaims,
    pub tokens: IdpTokens,
}

fn to_datetime(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).single().unwrap_or_default()
}

/// `sub` must be 1-255 bytes without control characters (OIDC Core §2).
pub fn valid_subject(subject: &str) -> bool {
    !subject.is_empty() && subject.len() <= 255 && !subject.chars().any(char::is_control)
}

impl Idp {
    pub fn new(config: IdpConfig, public_url: &str, http: IdpHttp) -> Result<Self, String> {
        let issuer_url = IssuerUrl::new(config.issuer.clone())
            .map_err(|err| format!("invalid issuer: {err}"))?;
        let redirect_uri = format!(
            "{}/authnz/{}/callback",
            public_url.trim_end_matches('/'),
            config.name
        );
        let info = config.provider.describe();
        Ok(Self {
            config,
            info,
            issuer_url,
            redirect_uri,
            http,
            discovered: tokio::sync::RwLock::new(None),
            discover_lock: Mutex::new(()),
            backoff: std::sync::Mutex::new(None),
            last_error: std::sync::Mutex::new(None),
            counters: IdpCounters::default(),
        })
    }

    /// On a reload: takes over what `old` (the same IdP in the previous configuration)
    /// discovered, when nothing that discovery depends on changed (kind and provider, issuer,
    /// client, redirect URI, scopes). Then a reload neither refetches metadata and keys nor
    /// leaves the IdP unusable while it is briefly unreachable; keys still refresh on an
    /// unknown `kid`. Returns whether it did.
    pub fn keep_discovery_of(&self, old: &Idp) -> bool {
        let same = self.config.kind == old.config.kind
            && self.config.origin == old.config.origin
            && self.config.issuer == old.config.issuer
            && self.info == old.info
            && self.config.client_id == old.config.client_id
            && self.redirect_uri == old.redirect_uri
            && self.config.scopes == old.config.scopes
            && self.config.id_token_algs == old.config.id_token_algs;
        let found = old
            .discovered
            .try_read()
            .ok()
            .and_then(|found| found.as_ref().map(Arc::clone));
        match (same, found, self.discovered.try_write()) {
            (true, Some(found), Ok(mut mine)) => {
                *mine = Some(found);
                true
            }
            _ => false,
        }
    }

    /// The discovered metadata, discovering on first use (and again after a failure).
    /// The discovered state, discovering first if needed. One discovery at a time (callers
    /// that waited share its outcome), and after a failure none again for a while: 1 s, then
    /// doubling up to a minute, so that requests (unauthenticated back-channel posts among
    /// them) cannot make authnz hammer an IdP that is down, nor queue behind its timeouts.
    pub async fn discovered(&self) -> Result<Arc<Discovered>, FlowError> {
        if let Some(found) = self.discovered.read().await.as_ref() {
            return Ok(Arc::clone(found));
        }
        let unavailable = || {
            FlowError::bad_gateway(
                "idp_unavailable",
                format!(
                    "the identity provider {} is not reachable or misconfigured",
                    self.config.label
                ),
            )
        };
        if self.backing_off() {
            return Err(unavailable());
        }
        let _one_at_a_time = self.discover_lock.lock().await;
        if let Some(found) = self.discovered.read().await.as_ref() {
            return Ok(Arc::clone(found));
        }
        // Whoever held the lock just failed: share that outcome.
        if self.backing_off() {
            return Err(unavailable());
        }
        let found = match self.discover().await {
            Ok(found) => Arc::new(found),
            Err(err) => {
                let failures = {
                    let mut backoff = self
                        .backoff
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let failures = backoff.map_or(1, |(_, failures)| failures.saturating_add(1));
                    let pause = DISCOVERY_BACKOFF_MAX
                        .min(Duration::from_secs(1) * 2u32.saturating_pow(failures - 1));
                    *backoff = Some((Instant::now() + pause, failures));
                    failures
                };
                tracing::warn!(idp = %self.config.name, error = %err, failures, "discovery failed");
                self.set_last_error(Some(err));
                return Err(unavailable());
            }
        };
        *self.discovered.write().await = Some(Arc::clone(&found));
        *self
            .backoff
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        self.set_last_error(None);
        Ok(found)
    }

    /// Whether the last discovery failed too recently to try again.
    fn backing_off(&self) -> bool {
        self.backoff
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|(until, _)| Instant::now() < until)
    }

    fn set_last_error(&self, error: Option<String>) {
        match self.last_error.lock() {
            Ok(mut guard) => *guard = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }

    /// The last discovery error, if discovery has not succeeded since.
    pub fn last_error(&self) -> Option<String> {
        match self.last_error.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether discovery has succeeded.
    pub async fn is_ready(&self) -> bool {
        self.discovered.read().await.is_some()
    }

    /// When discovery last succeeded (Unix seconds).
    pub async fn discovered_at(&self) -> Option<i64> {
        self.discovered
            .read()
            .await
            .as_ref()
            .map(|d| d.discovered_at)
    }

    async fn discover(&self) -> Result<Discovered, String> {
        use std::sync::atomic::Ordering;
        self.counters.discoveries.fetch_add(1, Ordering::Relaxed);
        let metadata = match &self.info.oauth2 {
            Some(endpoints) => self.oauth2_metadata(endpoints)?,
            None => self.fetch_metadata().await?,
        };
        self.check_endpoints(&metadata)?;
        let jwks = if self.info.oauth2.is_some() {
            CoreJsonWebKeySet::new(Vec::new())
        } else {
            self.counters.jwks_fetches.fetch_add(1, Ordering::Relaxed);
            JsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http.as_oidc())
                .await
                .map_err(|err| format!("JWKS: {}", discovery_error(&err)))?
        };
        let algs = self.accepted_algs(&metadata);
        let mut base = metadata.authorization_endpoint().url().clone();
        base.set_fragment(None);
        base.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "));
        Ok(Discovered {
            authorize_base: base.into(),
            metadata,
            discovered_at: chrono::Utc::now().timestamp(),
            algs,
            jwks: RwLock::new((0, Arc::new(jwks))),
            refetch: Mutex::new(RefetchState { last: None }),
        })
    }

    /// The signature algorithms this IdP's tokens may use (see [`Discovered::algs`]).
    fn accepted_algs(&self, metadata: &Metadata) -> Vec<String> {
        if let Some(configured) = &self.config.id_token_algs {
            return configured.clone();
        }
        let advertised: Vec<String> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter_map(|alg| serde_json::to_value(alg).ok())
            .filter_map(|alg| alg.as_str().map(str::to_string))
            .filter(|alg| DISCOVERABLE_ALGS.contains(&alg.as_str()))
            .collect();
        if advertised.is_empty() {
            // OpenID Connect Discovery §3: RS256 is the default and must be supported.
            vec!["RS256".to_string()]
        } else {
            advertised
        }
    }

    /// What `check --online` reports when discovery, the keys and the allowed algorithms do
    /// not meet: no algorithm both advertised and allowed, or no key for any allowed one.
    pub fn algorithm_problems(&self, discovered: &Discovered) -> Vec<String> {
        let mut problems = Vec::new();
        if self.info.oauth2.is_some() {
            return problems;
        }
        let advertised: Vec<String> = discovered
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter_map(|alg| serde_json::to_value(alg).ok())
            .filter_map(|alg| alg.as_str().map(str::to_string))
            .collect();
        if !advertised.is_empty() && !advertised.iter().any(|alg| discovered.algs.contains(alg)) {
            problems.push(format!(
                "the IdP signs ID tokens with {} but id_token_algs allows only {}: set id_token_algs = [{}] in [idps.{}] (or remove it)",
                advertised.join(", "),
                discovered.algs.join(", "),
                advertised
                    .iter()
                    .filter(|alg| *alg != "none")
                    .map(|alg| format!("\"{alg}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.config.name
            ));
        }
        let (_, jwks) = discovered.jwks();
        let asymmetric: Vec<&String> = discovered
            .algs
            .iter()
            .filter(|alg| !alg.starts_with("HS"))
            .collect();
        let usable = asymmetric.iter().any(|alg| {
            serde_json::from_value::<CoreJwsSigningAlgorithm>(JsonValue::String((*alg).clone()))
                .is_ok_and(|alg| jwks.keys().iter().any(|key| key_fits(key, &alg)))
        });
        if !asymmetric.is_empty() && !usable {
            problems.push(format!(
                "the JWKS has no key for {}: ID tokens cannot verify",
                asymmetric
                    .iter()
                    .map(|alg| alg.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        problems
    }

    /// Fetches `<issuer>/.well-known/openid-configuration` and checks that its `issuer` is the
    /// configured one, character for character (SECURITY H67), or the provider's multi-tenant
    /// template.
    async fn fetch_metadata(&self) -> Result<Metadata, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri(&url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|err| err.to_string())?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|err| err.to_string())?;
        if !response.status().is_success() {
            return Err(format!(
                "discovery answered HTTP {}",
                response.status().as_u16()
            ));
        }
        let metadata: Metadata = serde_json::from_slice(response.body())
            .map_err(|err| format!("unreadable discovery document: {err}"))?;
        let expected = self
            .info
            .issuer_template
            .as_deref()
            .unwrap_or(&self.config.issuer);
        if metadata.issuer().as_str() != expected {
            return Err(format!(
                "discovery issuer {:?} is not the configured {expected:?}",
                metadata.issuer().as_str()
            ));
        }
        Ok(metadata)
    }

    /// Metadata for an OAuth 2.0 provider, from the endpoints it describes.
    fn oauth2_metadata(
        &self,
        endpoints: &authnz_plugin::OAuth2Endpoints,
    ) -> Result<Metadata, String> {
        let auth = openidconnect::AuthUrl::new(endpoints.authorization_endpoint.clone())
            .map_err(|err| format!("authorization_endpoint: {err}"))?;
        let token = openidconnect::TokenUrl::new(endpoints.token_endpoint.clone())
            .map_err(|err| format!("token_endpoint: {err}"))?;
        // OAuth 2.0 providers have no JWKS; the field is required, so it repeats the token URL
        // (never fetched).
        let jwks = openidconnect::JsonWebKeySetUrl::new(endpoints.token_endpoint.clone())
            .map_err(|err| format!("token_endpoint: {err}"))?;
        for call in &endpoints.api_calls {
            let url =
                Url::parse(&call.url).map_err(|err| format!("API call {}: {err}", call.claim))?;
            let safe =
                url.scheme() == "https" || (url.scheme() == "http" && is_loopback_host(&url));
            if !safe {
                return Err(format!("API call {} must use https", call.claim));
            }
        }
        Ok(Metadata::new(
            self.issuer_url.clone(),
            auth,
            jwks,
            vec![openidconnect::ResponseTypes::new(vec![
                CoreResponseType::Code,
            ])],
            vec![CoreSubjectIdentifierType::Public],
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256],
            ExtraProviderMetadata::default(),
        )
        .set_token_endpoint(Some(token)))
    }

    /// Refuses endpoints that would send the secret or tokens somewhere unsafe (SECURITY H68).
    fn check_endpoints(&self, metadata: &Metadata) -> Result<(), String> {
        let issuer = Url::parse(&self.config.issuer).map_err(|err| err.to_string())?;
        let issuer_loopback = is_loopback_host(&issuer);
        let mut endpoints: Vec<(&str, &Url)> = vec![
            (
                "authorization_endpoint",
                metadata.authorization_endpoint().url(),
            ),
            ("jwks_uri", metadata.jwks_uri().url()),
        ];
        if let Some(token) = metadata.token_endpoint() {
            endpoints.push(("token_endpoint", token.url()));
        }
        if let Some(userinfo) = metadata.userinfo_endpoint() {
            endpoints.push(("userinfo_endpoint", userinfo.url()));
        }
        let extra = metadata.additional_metadata();
        let extra_urls: Vec<(&str, Url)> = [
            ("revocation_endpoint", &extra.revocation_endpoint),
            ("end_session_endpoint", &extra.end_session_endpoint),
        ]
        .into_iter()
        .filter_map(|(name, url)| url.as_deref().map(|url| (name, url)))
        .map(|(name, url)| {
            Url::parse(url)
                .map(|url| (name, url))
                .map_err(|_| format!("{name} is not a URL"))
        })
        .collect::<Result<_, _>>()?;
        for (name, url) in endpoints
            .into_iter()
            .chain(extra_urls.iter().map(|(n, u)| (*n, u)))
        {
            // An IPv4-mapped IPv6 host (`[::ffff:10.0.0.1]`) is its IPv4 address.
            let ip = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(
                    ip.to_ipv4_mapped()
                        .map_or(std::net::IpAddr::V6(ip), std::net::IpAddr::V4),
                ),
                _ => None,
            };
            let loopback = is_loopback_host(url) || ip.is_some_and(|ip| ip.is_loopback());
            let ok = match url.scheme() {
                "https" => !loopback || issuer_loopback,
                "http" => loopback && issuer_loopback,
                _ => false,
            };
            let private_ip = ip.is_some_and(not_public);
            if !ok || (private_ip && !issuer_loopback) {
                return Err(format!(
                    "discovery lists an unsafe {name} ({}://{})",
                    url.scheme(),
                    url.host_str().unwrap_or("")
                ));
            }
        }
        if metadata.token_endpoint().is_none() {
            return Err("discovery lists no token_endpoint".into());
        }
        Ok(())
    }

    /// Builds the authorize URL and the pending login that `/callback` will need.
    pub async fn authorize(
        &self,
        next: String,
        browser_hash: String,
        now: i64,
    ) -> Result<AuthorizeRequest, FlowError> {
        let discovered = self.discovered().await?;
        let state = random_token(32);
        // Derived from the state with a process key: as unpredictable as random values, and the
        // pending-login table keeps neither (see `login_secret`).
        let nonce = crate::crypto::login_secret("nonce", &state);
        let verifier = PkceCodeVerifier::new(crate::crypto::login_secret("pkce", &state));
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        // state, nonce and the challenge are base64url: nothing in them needs encoding.
        let mut url = String::with_capacity(discovered.authorize_base.len() + 256);
        url.push_str(&discovered.authorize_base);
        url.push_str("&state=");
        url.push_str(&state);
        if self.info.oauth2.is_none() {
            url.push_str("&nonce=");
            url.push_str(&nonce);
        }
        if self.config.pkce {
            url.push_str("&code_challenge=");
            url.push_str(challenge.as_str());
            url.push_str("&code_challenge_method=S256");
        }
        let mut extra = url::form_urlencoded::Serializer::new(String::new());
        if let Some(prompt) = &self.config.prompt {
            extra.append_pair("prompt", prompt);
        }
        let ctx = LoginContext {
            idp: self.config.name.clone(),
        };
        // A provider that cannot say its parameters stops the login (fail closed).
        let provided = self
            .config
            .provider
            .try_authorize_params(&ctx)
            .map_err(|_| {
                FlowError::bad_gateway(
                    "provider_failed",
                    "the identity provider's plugin failed; the sign-in cannot start",
                )
            })?;
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in self.config.authorize_params.iter().cloned().chain(provided) {
            if RESERVED_AUTHORIZE_PARAMS.contains(&name.as_str())
                || (name == "prompt" && self.config.prompt.is_some())
                || seen.contains(&name)
            {
                continue;
            }
            extra.append_pair(&name, &value);
            seen.push(name);
        }
        let extra = extra.finish();
        if !extra.is_empty() {
            url.push('&');
            url.push_str(&extra);
        }
        Ok(AuthorizeRequest {
            url,
            state,
            pending: PendingLogin {
                idp: self.config.name.clone(),
                issuer: self.config.issuer.clone(),
                client_id: self.config.client_id.clone(),
                redirect_uri: self.redirect_uri.clone(),
                nonce,
                pkce_verifier: if self.config.pkce {
                    verifier.into_secret()
                } else {
                    String::new()
                },
                next,
                browser_hash,
                created_at: now,
                link_user_id: None,
                generation: 0,
            },
        })
    }

    /// Whether an identity stored under this entry's name belongs to this entry's issuer (or
    /// one it had before a real move): the bearer and logout paths ask what logins ask.
    pub fn owns(&self, identity: &crate::store::Identity) -> bool {
        crate::store::identity_belongs_to(
            identity,
            &self.config.issuer,
            &self.config.previous_issuers,
        )
    }

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
    pub async fn promises_iss(&self) -> Result<bool, FlowError> {
        Ok(self
            .discovered()
            .await?
            .metadata
            .additional_metadata()
            .authorization_response_iss_parameter_supported
            == Some(true))
    }

    fn client(
        &self,
        discovered: &Discovered,
        jwks: CoreJsonWebKeySet,
    ) -> Result<OidcClient, FlowError> {
        let metadata = &discovered.metadata;
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|_| FlowError::internal("invalid redirect URI"))?;
        let secret = self
            .config
            .client_secret
            .as_ref()
            .map(|secret| ClientSecret::new(secret.expose().to_string()));
        let mut client: OidcClient = openidconnect::Client::from_provider_metadata(
            metadata.clone().set_jwks(jwks),
            ClientId::new(self.config.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect);
        // Plain OAuth 2.0 providers (GitHub) document the secret in the body.
        if self.info.oauth2.is_some() {
            client = client.set_auth_type(AuthType::RequestBody);
        }
        // Basic auth unless the IdP says it only takes the secret in the body.
        if let Some(methods) = metadata.token_endpoint_auth_methods_supported() {
            if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
            {
                client = client.set_auth_type(AuthType::RequestBody);
            }
        }
        Ok(client)
    }

    fn verifier<'a>(
        &self,
        algs: &[String],
        jwks: CoreJsonWebKeySet,
        not_before: i64,
        now: i64,
    ) -> CoreIdTokenVerifier<'a> {
        let client_id = ClientId::new(self.config.client_id.clone());
        let issuer = self.issuer_url.clone();
        let mut verifier = match &self.config.client_secret {
            Some(secret) => CoreIdTokenVerifier::new_confidential_client(
                client_id,
                ClientSecret::new(secret.expose().to_string()),
                issuer,
                jwks,
            ),
            None => CoreIdTokenVerifier::new_public_client(client_id, issuer, jwks),
        };
        if self.info.issuer_template.is_some() {
            // Checked against the template and the token's own `tid` after verification.
            verifier = verifier.require_issuer_match(false);
        }
        let algs: Vec<CoreJwsSigningAlgorithm> = algs
            .iter()
            .filter_map(|alg| serde_json::from_value(JsonValue::String(alg.clone())).ok())
            .collect();
        let skew = CLOCK_SKEW.as_secs() as i64;
        verifier = verifier
            .set_allowed_algs(algs)
            // `exp` is checked against this clock: the skew is the leeway.
            .set_time_fn(move || to_datetime(now - skew))
            .set_issue_time_verifier_fn(move |iat| {
                let iat = iat.timestamp();
                if iat > now + skew {
                    Err(format!("issued {}s in the future", iat - now))
                } else if iat < not_before - skew {
                    Err("issued before this login started".to_string())
                } else {
                    Ok(())
                }
            });
        verifier
    }

    /// Exchanges the code and verifies everything that comes back.
    pub async fn complete(
        &self,
        pending: &PendingLogin,
        code: &str,
        now: i64,
    ) -> Result<VerifiedLogin, FlowError> {
        let discovered = self.discovered().await?;
        if let Some(answer) = self
            .info
            .oauth2
            .as_ref()
            .and_then(|o| o.token_answer.clone())
        {
            let mut form = vec![
                ("grant_type", "authorization_code".to_string()),
                ("code", code.to_string()),
                ("redirect_uri", self.redirect_uri.clone()),
            ];
            if !pending.pkce_verifier.is_empty() {
                form.push(("code_verifier", pending.pkce_verifier.clone()));
            }
            let tokens = self.nested_token_request(&answer, &form, now).await?;
            return self.complete_oauth2(tokens).await;
        }
        let (_, jwks) = discovered.jwks();
        let client = self.client(&discovered, (*jwks).clone())?;
        let oidc_http = self.http.as_oidc();
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| {
                FlowError::bad_gateway(
                    "idp_misconfigured",
                    "the identity provider has no token endpoint",
                )
            })?;
        if !pending.pkce_verifier.is_empty() {
            exchange =
                exchange.set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        }
        let response = exchange
            .request_async(&oidc_http)
            .await
            .map_err(|err| self.token_error(&err))?;
        if self.info.oauth2.is_some() {
            return self
                .complete_oauth2(tokens_of(&response, String::new(), now))
                .await;
        }

        let id_token = response.id_token().ok_or_else(|| {
            FlowError::unauthorized(
                "id_token_missing",
                "the identity provider returned no ID token",
            )
        })?;
        let claims = self
            .verify_id_token(&discovered, id_token, pending, now)
            .await?;

        // at_hash, when present, binds the access token to this ID token (OIDC Core §3.1.3.8).
        if let Some(expected) = claims.access_token_hash() {
            let actual = id_token
                .signing_alg()
                .ok()
                .and_then(|alg| access_token_hash(response.access_token().secret(), alg));
            if actual.as_deref() != Some(expected.as_str()) {
                return Err(FlowError::unauthorized(
                    "id_token_invalid",
                    "the ID token does not match the access token (at_hash)",
                ));
            }
        }

        let subject = claims.subject().as_str().to_string();
        let mut all = match serde_json::to_value(claims) {
            Ok(JsonValue::Object(map)) => map,
            _ => JsonMap::new(),
        };

        if self.config.userinfo && discovered.metadata.userinfo_endpoint().is_some() {
            let request = client
                .user_info(
                    response.access_token().clone(),
                    Some(SubjectIdentifier::new(subject.clone())),
                )
                .map_err(|_| {
                    FlowError::bad_gateway("idp_misconfigured", "userinfo endpoint missing")
                })?;
            let userinfo: UserInfoClaims<OtherClaims, CoreGenderClaim> = request
                .request_async(&oidc_http)
                .await
                .map_err(|err| self.userinfo_error(&err))?;
            if let Ok(JsonValue::Object(extra)) = serde_json::to_value(&userinfo) {
                for (name, value) in extra {
                    all.entry(name).or_insert(value);
                }
            }
        }

        let tokens = tokens_of(&response, id_token.to_string(), now);
        Ok(VerifiedLogin {
            claims: VerifiedClaims {
                issuer: self.config.issuer.clone(),
                subject,
                claims: all,
            },
            tokens,
        })
    }

    /// The rest of a plain OAuth 2.0 login: the provider's API calls, with the access token in
    /// the Authorization header, their JSON answers becoming the claims.
    async fn complete_oauth2(&self, tokens: IdpTokens) -> Result<VerifiedLogin, FlowError> {
        let mut claims = JsonMap::new();
        let calls = self
            .info
            .oauth2
            .as_ref()
            .map(|o| o.api_calls.clone())
            .unwrap_or_default();
        for call in calls {
            let (name, value) = match &call.token_header {
                Some(name) => (name.as_str(), tokens.access_token.clone()),
                None => ("authorization", format!("Bearer {}", tokens.access_token)),
            };
            let request = http::Request::builder()
                .method(http::Method::GET)
                .uri(&call.url)
                .header(http::header::ACCEPT, "application/json")
                .header(name, value)
                .body(Vec::new())
                .map_err(|_| FlowError::bad_gateway("idp_misconfigured", "invalid API URL"))?;
            let answer = self.http.execute(request).await.map_err(|err| {
                tracing::warn!(idp = %self.config.name, call = %call.claim, error = %err, "API call failed");
                FlowError::bad_gateway("idp_unavailable", "the identity provider's API failed")
            })?;
            if !answer.status().is_success() {
                tracing::warn!(idp = %self.config.name, call = %call.claim, status = answer.status().as_u16(), "API call refused");
                return Err(FlowError::bad_gateway(
                    "idp_error",
                    "the identity provider's API refused the request",
                ));
            }
            let value: JsonValue = serde_json::from_slice(answer.body()).map_err(|_| {
                FlowError::bad_gateway(
                    "idp_protocol_error",
                    "the identity provider's API answered something unreadable",
                )
            })?;
            claims.insert(call.claim.clone(), value);
        }
        Ok(VerifiedLogin {
            claims: VerifiedClaims {
                issuer: self.config.issuer.clone(),
                subject: String::new(),
                claims,
            },
            tokens,
        })
    }

    /// A token request to a provider whose answer nests the tokens ([`TokenAnswer`]): the
    /// grant in `form`, the client authenticated with HTTP Basic (or its id in the form when it
    /// has no secret). A 4xx is a refusal (401), anything else unusable the IdP's failure (502).
    ///
    /// [`TokenAnswer`]: authnz_plugin::TokenAnswer
    async fn nested_token_request(
        &self,
        answer: &authnz_plugin::TokenAnswer,
        form: &[(&str, String)],
        now: i64,
    ) -> Result<IdpTokens, FlowError> {
        let endpoint = self
            .info
            .oauth2
            .as_ref()
            .map(|o| o.token_endpoint.clone())
            .unwrap_or_default();
        let form: Vec<(&str, &str)> = form
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let request = self.client_post(&endpoint, &form)?;
        let response = self.http.execute(request).await.map_err(|err| {
            tracing::warn!(idp = %self.config.name, error = %err, "token request failed");
            FlowError::bad_gateway(
                "idp_unavailable",
                "the identity provider's token endpoint failed",
            )
        })?;
        let status = response.status().as_u16();
        if (400..500).contains(&status) {
            tracing::info!(idp = %self.config.name, status, "token endpoint refused the grant");
            return Err(FlowError::unauthorized(
                "code_rejected",
                "the identity provider refused the authorization code",
            ));
        }
        let unusable = || {
            FlowError::bad_gateway(
                "idp_protocol_error",
                "the identity provider's token response was unusable",
            )
        };
        if status != 200 {
            tracing::warn!(idp = %self.config.name, status, "token endpoint failed");
            return Err(unusable());
        }
        // Never logged: the body holds the tokens (SECURITY B17).
        let value: JsonValue = serde_json::from_slice(response.body()).map_err(|_| unusable())?;
        let text = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(JsonValue::as_str)
                .filter(|token| !token.is_empty())
                .map(str::to_string)
        };
        let access_token = text(&answer.access_token).ok_or_else(unusable)?;
        let expires_in = answer
            .expires_in
            .as_deref()
            .and_then(|pointer| value.pointer(pointer))
            .and_then(JsonValue::as_i64)
            .filter(|seconds| *seconds > 0);
        Ok(IdpTokens {
            access_token,
            refresh_token: answer.refresh_token.as_deref().and_then(text),
            id_token: String::new(),
            expires_at: expires_in.map(|seconds| now.saturating_add(seconds)),
            scope: None,
        })
    }

    /// A form POST to one of the IdP's endpoints, the client authenticated as RFC 6749 §2.3.1
    /// says: HTTP Basic with its secret, or, without one, its `client_id` in the form.
    fn client_post(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
    ) -> Result<http::Request<Vec<u8>>, FlowError> {
        let credentials = self.basic_auth();
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.extend_pairs(form);
        if credentials.is_none() {
            body.append_pair("client_id", &self.config.client_id);
        }
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        if let Some(credentials) = credentials {
            request = request.header(http::header::AUTHORIZATION, credentials);
        }
        request
            .body(body.finish().into_bytes())
            .map_err(|_| FlowError::bad_gateway("idp_misconfigured", "an invalid endpoint URL"))
    }

    /// `Basic base64(urlencode(client_id):urlencode(secret))` (RFC 6749 §2.3.1), when the
    /// client has a secret.
    fn basic_auth(&self) -> Option<String> {
        use base64::Engine;
        let secret = self.config.client_secret.as_ref()?;
        let encode = |value: &str| {
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        };
        let credentials = format!(
            "{}:{}",
            encode(&self.config.client_id),
            encode(secret.expose())
        );
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
    }

    /// Verifies the ID token, refetching the JWKS once if its key is unknown (key rotation).
    async fn verify_id_token<'t>(
        &self,
        discovered: &Discovered,
        id_token: &'t AllIdToken,
        pending: &PendingLogin,
        now: i64,
    ) -> Result<&'t AllIdTokenClaims, FlowError> {
        // The signature is checked by `verified_payload` (ring where it can: several times
        // faster than the pure-Rust curves, and the largest cost of a callback), with the same
        // rules openidconnect applies; openidconnect then checks every claim.
        let raw = id_token.to_string();
        if let Err(reason) = self.verified_payload(discovered, &raw).await {
            tracing::info!(idp = %self.config.name, reason, "ID token rejected");
            return Err(FlowError::unauthorized(
                "id_token_invalid",
                "the ID token failed verification",
            ));
        }
        let nonce = Nonce::new(pending.nonce.clone());
        let verifier = self
            .verifier(
                &discovered.algs,
                CoreJsonWebKeySet::new(Vec::new()),
                pending.created_at,
                now,
            )
            .insecure_disable_signature_check();
        let claims = id_token.claims(&verifier, &nonce).map_err(|err| {
            tracing::info!(idp = %self.config.name, reason = %claims_error_reason(&err), "ID token rejected");
            FlowError::unauthorized("id_token_invalid", "the ID token failed verification")
        })?;
        if let Some(template) = &self.info.issuer_template {
            let tid = claims
                .additional_claims()
                .claims
                .get("tid")
                .and_then(JsonValue::as_str)
                .unwrap_or_default();
            // Tenant ids are GUIDs; "common" or "organizations" are not tenants.
            if !is_guid(tid) || claims.issuer().as_str() != template.replace("{tenantid}", tid) {
                tracing::info!(idp = %self.config.name, "ID token issuer does not match its tenant");
                return Err(FlowError::unauthorized(
                    "id_token_invalid",
                    "the ID token failed verification",
                ));
            }
        }
        if let Some(azp) = claims.authorized_party() {
            if azp.as_str() != self.config.client_id {
                return Err(FlowError::unauthorized(
                    "id_token_invalid",
                    "the ID token was issued to another client (azp)",
                ));
            }
        }
        if !valid_subject(claims.subject().as_str()) {
            return Err(FlowError::unauthorized(
                "id_token_invalid",
                "the ID token's subject is not a valid identifier",
            ));
        }
        Ok(claims)
    }

    /// Refetches the JWKS after an unknown `kid`: concurrent callers share one fetch, and at
    /// most one fetch per [`JWKS_REFETCH_INTERVAL`] happens. Returns the keys to retry with.
    async fn refetch_jwks(
        &self,
        discovered: &Discovered,
        seen_generation: u64,
    ) -> Option<Arc<CoreJsonWebKeySet>> {
        let mut state = discovered.refetch.lock().await;
        let (generation, jwks) = discovered.jwks();
        if generation != seen_generation {
            return Some(jwks);
        }
        if state
            .last
            .is_some_and(|last| last.elapsed() < JWKS_REFETCH_INTERVAL)
        {
            return None;
        }
        state.last = Some(Instant::now());
        self.counters
            .jwks_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match JsonWebKeySet::fetch_async(discovered.metadata.jwks_uri(), &self.http.as_oidc()).await
        {
            Ok(jwks) => Some(discovered.set_jwks(jwks).1),
            Err(err) => {
                tracing::warn!(idp = %self.config.name, error = %discovery_error(&err), "JWKS refetch failed");
                None
            }
        }
    }

    fn token_error<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
        &self,
        err: &RequestTokenError<RE, T>,
    ) -> FlowError {
        // Never `{:?}` this error: `Parse` carries the raw body, tokens included (SECURITY B17).
        match err {
            RequestTokenError::ServerResponse(response) => {
                let code = serde_json::to_value(response)
                    .ok()
                    .and_then(|value| {
                        value
                            .get("error")
                            .and_then(JsonValue::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                if code == "invalid_grant" {
                    tracing::info!(idp = %self.config.name, error = %code, "token endpoint refused the code");
                    FlowError::unauthorized(
                        "code_rejected",
                        "the identity provider refused the authorization code",
                    )
                } else {
                    tracing::warn!(idp = %self.config.name, error = %code, "token endpoint failed");
                    FlowError::bad_gateway(
                        "idp_error",
                        "the identity provider's token endpoint failed",
                    )
                }
            }
            RequestTokenError::Request(inner) => {
                tracing::warn!(idp = %self.config.name, error = %inner, "token request failed");
                FlowError::bad_gateway(
                    "idp_unavailable",
                    "the identity provider's token endpoint failed",
                )
            }
            RequestTokenError::Parse(inner, body) => {
                // A well-formed token response whose ID token does not parse (no `iat`, no
                // `sub`, not a JWT) is an ID-token failure, not a transport one.
                #[derive(Deserialize)]
                struct Shape {
                    #[allow(dead_code)]
                    access_token: String,
                    #[allow(dead_code)]
                    token_type: String,
                    #[allow(dead_code)]
                    id_token: String,
                }
                if serde_json::from_slice::<Shape>(body).is_ok() {
                    tracing::info!(idp = %self.config.name, at = %inner.path(), "ID token unreadable");
                    return FlowError::unauthorized(
                        "id_token_invalid",
                        "the ID token failed verification",
                    );
                }
                // Only the JSON path: serde's message can quote the body's values.
                tracing::warn!(idp = %self.config.name, at = %inner.path(), "token response unreadable");
                FlowError::bad_gateway(
                    "idp_protocol_error",
                    "the identity provider's token response was unreadable",
                )
            }
            RequestTokenError::Other(_) => {
                tracing::warn!(idp = %self.config.name, "token response rejected");
                FlowError::bad_gateway(
                    "idp_protocol_error",
                    "the identity provider's token response was unusable",
                )
            }
        }
    }

    fn userinfo_error<RE: std::error::Error + 'static>(
        &self,
        err: &UserInfoError<RE>,
    ) -> FlowError {
        match err {
            UserInfoError::ClaimsVerification(inner) => {
                tracing::info!(idp = %self.config.name, reason = %claims_error_reason(inner), "userinfo rejected");
                FlowError::unauthorized(
                    "userinfo_invalid",
                    "the identity provider's userinfo failed verification",
                )
            }
            UserInfoError::Request(inner) => {
                tracing::warn!(idp = %self.config.name, error = %inner, "userinfo request failed");
                FlowError::bad_gateway(
                    "idp_unavailable",
                    "the identity provider's userinfo endpoint failed",
                )
            }
            _ => {
                tracing::warn!(idp = %self.config.name, "userinfo response unusable");
                FlowError::bad_gateway(
                    "idp_protocol_error",
                    "the identity provider's userinfo response was unusable",
                )
            }
        }
    }
}

/// `8-4-4-4-12` hexadecimal digits.
fn is_guid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The tokens of a token response, as stored.
fn tokens_of(response: &TokenResponseWithClaims, id_token: String, now: i64) -> IdpTokens {
    IdpTokens {
        access_token: response.access_token().secret().clone(),
        refresh_token: response.refresh_token().map(|token| token.secret().clone()),
        id_token,
        expires_at: response
            .expires_in()
            .map(|expires_in| now.saturating_add(expires_in.as_secs().min(i64::MAX as u64) as i64)),
        scope: response.scopes().map(|scopes| {
            scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }),
    }
}

/// The `at_hash` of an access token: the left half of its hash with the signature
/// algorithm's hash function, base64url. Computed here rather than from a JWK because HMAC
/// algorithms have no JWK.
fn access_token_hash(access_token: &str, alg: &CoreJwsSigningAlgorithm) -> Option<String> {
    use base64::Engine;
    use sha2::Digest;
    use CoreJwsSigningAlgorithm as Alg;
    let digest: Vec<u8> = match alg {
        Alg::RsaSsaPkcs1V15Sha256
        | Alg::RsaSsaPssSha256
        | Alg::EcdsaP256Sha256
        | Alg::HmacSha256 => sha2::Sha256::digest(access_token.as_bytes()).to_vec(),
        Alg::RsaSsaPkcs1V15Sha384
        | Alg::RsaSsaPssSha384
        | Alg::EcdsaP384Sha384
        | Alg::HmacSha384 => sha2::Sha384::digest(access_token.as_bytes()).to_vec(),
        Alg::RsaSsaPkcs1V15Sha512 | Alg::RsaSsaPssSha512 | Alg::HmacSha512 | Alg::EdDsa => {
            sha2::Sha512::digest(access_token.as_bytes()).to_vec()
        }
        _ => return None,
    };
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]))
}

/// A short reason for logs. Claims errors carry no token material.
fn claims_error_reason(err: &ClaimsVerificationError) -> String {
    err.to_string()
}

fn discovery_error<E: std::error::Error + 'static>(
    err: &openidconnect::DiscoveryError<E>,
) -> String {
    match err {
        openidconnect::DiscoveryError::Request(inner) => format!("request failed: {inner}"),
        openidconnect::DiscoveryError::Response(status, _, _) => format!("HTTP status {status}"),
        openidconnect::DiscoveryError::Parse(inner) => {
            format!("unreadable document: {}", inner.inner())
        }
        openidconnect::DiscoveryError::Validation(reason) => format!("invalid document: {reason}"),
        openidconnect::DiscoveryError::UrlParse(inner) => format!("bad URL: {inner}"),
        other => format!("{other}"),
    }
}

/// Whether a JWK can verify `alg`: openidconnect's rule (key type, and the key's own `alg` if
/// it names one).
fn key_fits(key: &CoreJsonWebKey, alg: &CoreJwsSigningAlgorithm) -> bool {
    use openidconnect::{JsonWebKey, JsonWebKeyAlgorithm, JwsSigningAlgorithm};
    if alg.key_type().as_ref() != Some(key.key_type()) {
        return false;
    }
    match key.signing_alg() {
        JsonWebKeyAlgorithm::Unspecified => true,
        JsonWebKeyAlgorithm::Algorithm(key_alg) => key_alg == alg,
        JsonWebKeyAlgorithm::Unsupported => false,
    }
}

/// Verifies with ring where it can; `None` leaves the key to openidconnect (P-521, RSA keys
/// under 2048 bits). ring's P-256 verification is several times faster than the pure-Rust one.
fn ring_verify(key: &CoreJsonWebKey, alg: &str, message: &[u8], signature: &[u8]) -> Option<bool> {
    use base64::Engine;
    use ring::signature as sig;
    let jwk = serde_json::to_value(key).ok()?;
    let bytes = |name: &str| {
        jwk.get(name).and_then(JsonValue::as_str).and_then(|v| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .ok()
        })
    };
    let rsa = |params: &'static sig::RsaParameters| -> Option<bool> {
        let (n, e) = (bytes("n")?, bytes("e")?);
        let n = n.strip_prefix(&[0]).unwrap_or(&n).to_vec();
        if n.len() < 256 {
            return None;
        }
        Some(
            sig::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, message, signature)
                .is_ok(),
        )
    };
    let ec = |algorithm: &'static dyn sig::VerificationAlgorithm, size: usize| -> Option<bool> {
        let (x, y) = (bytes("x")?, bytes("y")?);
        if x.len() != size || y.len() != size {
            return Some(false);
        }
        let mut point = Vec::with_capacity(1 + 2 * size);
        point.push(4);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        Some(
            sig::UnparsedPublicKey::new(algorithm, point)
                .verify(message, signature)
                .is_ok(),
        )
    };
    match alg {
        "RS256" => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&sig::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&sig::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&sig::RSA_PSS_2048_8192_SHA512),
        "ES256" => ec(&sig::ECDSA_P256_SHA256_FIXED, 32),
        "ES384" => ec(&sig::ECDSA_P384_SHA384_FIXED, 48),
        "EdDSA" => {
            let x = bytes("x")?;
            Some(
                sig::UnparsedPublicKey::new(&sig::ED25519, x)
                    .verify(message, signature)
                    .is_ok(),
            )
        }
        _ => None,
    }
}

/// The token lifecycle after login: refresh, revocation, logout.
impl Idp {
    /// Exchanges a refresh token. An ID token in the answer must name the same issuer,
    /// subject and audience as before (SECURITY E49); a new refresh token replaces the old one,
    /// an absent one keeps it. Any 4xx from the token endpoint (`invalid_grant`, or the empty
    /// 400 of a grant the person revoked at the IdP) is a refusal: 401 `reauthenticate`
    /// (SECURITY I77); only a transport failure or a 5xx is the IdP's failure (502).
    pub async fn refresh(
        &self,
        tokens: &IdpTokens,
        subject: &str,
        now: i64,
    ) -> Result<IdpTokens, FlowError> {
        let refresh_token = tokens.refresh_token.clone().ok_or_else(reauthenticate)?;
        let discovered = self.discovered().await?;
        if let Some(answer) = self
            .info
            .oauth2
            .as_ref()
            .and_then(|o| o.token_answer.clone())
        {
            let form = [
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", refresh_token.clone()),
            ];
            let mut fresh = self
                .nested_token_request(&answer, &form, now)
                .await
                .map_err(|err| match err.status {
                    crate::error::Status::Unauthorized => reauthenticate(),
                    _ => err,
                })?;
            if fresh.refresh_token.is_none() {
                fresh.refresh_token = Some(refresh_token);
            }
            return Ok(fresh);
        }
        let (_, jwks) = discovered.jwks();
        let client = self.client(&discovered, (*jwks).clone())?;
        // The status of the answer: openidconnect's error does not keep it.
        let status = Arc::new(std::sync::atomic::AtomicU16::new(0));
        let recording = self.http.recording(Arc::clone(&status));
        let token = openidconnect::RefreshToken::new(refresh_token.clone());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|_| {
                FlowError::bad_gateway(
                    "idp_misconfigured",
                    "the identity provider has no token endpoint",
                )
            })?
            .request_async(&recording)
            .await
            .map_err(|err| {
                let failure = self.token_error(&err);
                let status = status.load(std::sync::atomic::Ordering::Relaxed);
                if (400..500).contains(&status) || failure.code == "code_rejected" {
                    tracing::info!(idp = %self.config.name, status, "the identity provider refused the refresh token");
                    reauthenticate()
                } else {
                    failure
                }
            })?;
        let id_token = match response.id_token() {
            Some(id_token) => {
                let verifier = self
                    .verifier(&discovered.algs, (*jwks).clone(), now - 3600, now)
                    .require_issuer_match(self.info.issuer_template.is_none());
                let claims = id_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .map_err(|err| {
                        tracing::info!(idp = %self.config.name, reason = %claims_error_reason(&err), "refreshed ID token rejected");
                        FlowError::unauthorized("refresh_invalid", "the refreshed ID token failed verification; log in again")
                    })?;
                // Raw `sub` against the raw `sub` of the login: the identity's subject may be
                // the provider's mapping of it (Entra: `tid:oid`).
                let previous = IdTokenClaimsView::of(&tokens.id_token);
                let raw_subject = previous.as_ref().map_or(subject, |p| p.sub.as_str());
                if claims.subject().as_str() != raw_subject
                    || previous
                        .as_ref()
                        .is_some_and(|p| p.iss != claims.issuer().as_str())
                {
                    tracing::warn!(idp = %self.config.name, "refreshed ID token names another issuer or subject");
                    return Err(FlowError::unauthorized(
                        "refresh_invalid",
                        "the refreshed ID token names another identity; log in again",
                    ));
                }
                id_token.to_string()
            }
            None => tokens.id_token.clone(),
        };
        let mut fresh = tokens_of(&response, id_token, now);
        if fresh.refresh_token.is_none() {
            fresh.refresh_token = Some(refresh_token);
        }
        Ok(fresh)
    }

    /// Revokes the refresh and access tokens at the IdP (RFC 7009). `Ok(false)`: the IdP
    /// has no revocation endpoint. Any refusal is an error, so nothing is forgotten locally
    /// while the IdP still honours the tokens.
    pub async fn revoke(&self, tokens: &IdpTokens) -> Result<bool, FlowError> {
        let discovered = self.discovered().await?;
        let Some(endpoint) = discovered
            .metadata
            .additional_metadata()
            .revocation_endpoint
            .clone()
        else {
            return Ok(false);
        };
        let candidates = [
            (tokens.refresh_token.as_deref(), "refresh_token"),
            (Some(tokens.access_token.as_str()), "access_token"),
        ];
        for (token, hint) in candidates {
            let Some(token) = token.filter(|token| !token.is_empty()) else {
                continue;
            };
            let request =
                self.client_post(&endpoint, &[("token", token), ("token_type_hint", hint)])?;
            let response = self.http.execute(request).await.map_err(|err| {
                tracing::warn!(idp = %self.config.name, error = %err, "revocation failed");
                FlowError::bad_gateway(
                    "revocation_failed",
                    "the identity provider could not be reached to revoke the tokens; try again",
                )
            })?;
            if !response.status().is_success() {
                tracing::warn!(idp = %self.config.name, status = response.status().as_u16(), "revocation refused");
                return Err(FlowError::bad_gateway(
                    "revocation_failed",
                    "the identity provider refused to revoke the tokens; try again",
                ));
            }
        }
        Ok(true)
    }

    /// The IdP's RP-initiated logout URL, when it has an end-session endpoint.
    pub async fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect_uri: &str,
        state: &str,
    ) -> Option<String> {
        let discovered = self.discovered().await.ok()?;
        let endpoint = discovered
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let mut url = Url::parse(&endpoint).ok()?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(hint) = id_token_hint.filter(|hint| !hint.is_empty()) {
                query.append_pair("id_token_hint", hint);
            }
            query
                .append_pair("post_logout_redirect_uri", post_logout_redirect_uri)
                .append_pair("client_id", &self.config.client_id)
                .append_pair("state", state);
        }
        Some(url.to_string())
    }

    /// Verifies a compact JWS from this IdP: an allowed algorithm (never `none`), no `crit`,
    /// and a signature by one of its keys (the JWKS refetched once for an unknown `kid`).
    /// Returns the claims; the caller checks them. The error is a reason for logs only.
    pub async fn verify_jws(&self, jwt: &str, typs: &[&str]) -> Result<JsonValue, &'static str> {
        if !typ_allowed(jwt, typs) {
            return Err("typ");
        }
        let discovered = self.discovered().await.map_err(|_| "IdP unavailable")?;
        let payload = self.verified_payload(&discovered, jwt).await?;
        serde_json::from_slice(&payload).map_err(|_| "claims")
    }

    /// Checks a compact JWS's signature with the IdP's keys and returns its decoded payload:
    /// the `alg` must be one of `id_token_algs` (never `none`), no `crit` header, and exactly one
    /// key may match the `kid` and algorithm (HS* use the client secret). An unknown key
    /// refetches the JWKS once (coalesced and throttled). ID tokens, logout tokens and JWT
    /// access tokens all go through here.
    async fn verified_payload(
        &self,
        discovered: &Discovered,
        jwt: &str,
    ) -> Result<Vec<u8>, &'static str> {
        let parts: Vec<&str> = jwt.split('.').collect();
        if parts.len() != 3 {
            return Err("not a signed JWT");
        }
        use base64::Engine;
        let decode = |part: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        };
        let header: JsonValue = decode(parts[0])
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("header")?;
        let payload = decode(parts[1]).ok_or("claims")?;
        let signature = decode(parts[2]).ok_or("signature encoding")?;
        let alg_name = header
            .get("alg")
            .and_then(JsonValue::as_str)
            .unwrap_or("none");
        if alg_name == "none" || !discovered.algs.iter().any(|alg| alg == alg_name) {
            if crate::config::SUPPORTED_ALGS.contains(&alg_name) {
                // Most often a real IdP that signs with what nobody allowed: say what to set.
                tracing::warn!(
                    idp = %self.config.name,
                    alg = %crate::error::loggable(alg_name),
                    allowed = %discovered.algs.join(", "),
                    "a token signed with an algorithm this IdP may not use was refused; if the IdP signs with it, add it to id_token_algs in its [idps.*] entry"
                );
            }
            return Err("algorithm not allowed");
        }
        if header.get("crit").is_some() || header.get("enc").is_some() {
            return Err("crit or enc header");
        }
        let alg: CoreJwsSigningAlgorithm =
            serde_json::from_value(JsonValue::String(alg_name.to_string()))
                .map_err(|_| "algorithm")?;
        let message = &jwt[..parts[0].len() + 1 + parts[1].len()];
        let kid = header.get("kid").and_then(JsonValue::as_str);
        let verify_with = |jwks: &CoreJsonWebKeySet| -> Result<(), SignatureVerificationError> {
            use openidconnect::JsonWebKey;
            if alg_name.starts_with("HS") {
                // A public client has no secret: anyone could forge such a signature.
                let secret = self.config.client_secret.as_ref().ok_or_else(|| {
                    SignatureVerificationError::DisallowedAlg("no client secret".into())
                })?;
                return CoreJsonWebKey::new_symmetric(secret.expose().as_bytes().to_vec())
                    .verify_signature(&alg, message.as_bytes(), &signature);
            }
            let keys: Vec<&CoreJsonWebKey> = jwks
                .keys()
                .iter()
                .filter(|key| kid.is_none_or(|kid| key.key_id().map(|id| id.as_str()) == Some(kid)))
                .filter(|key| {
                    key.key_use()
                        .is_none_or(|u| u == &openidconnect::core::CoreJsonWebKeyUse::Signature)
                })
                .filter(|key| key_fits(key, &alg))
                .collect();
            match keys.as_slice() {
                [] => Err(SignatureVerificationError::NoMatchingKey),
                [key] => match ring_verify(key, alg_name, message.as_bytes(), &signature) {
                    Some(true) => Ok(()),
                    Some(false) => Err(SignatureVerificationError::CryptoError(
                        "bad signature".into(),
                    )),
                    None => key.verify_signature(&alg, message.as_bytes(), &signature),
                },
                _ => Err(SignatureVerificationError::AmbiguousKeyId(
                    "several keys".into(),
                )),
            }
        };
        let (generation, jwks) = discovered.jwks();
        let mut checked = verify_with(&jwks);
        if matches!(checked, Err(SignatureVerificationError::NoMatchingKey)) {
            if let Some(jwks) = self.refetch_jwks(discovered, generation).await {
                checked = verify_with(&jwks);
            }
        }
        match checked {
            Ok(()) => Ok(payload),
            Err(SignatureVerificationError::NoMatchingKey) => Err("no matching key"),
            Err(SignatureVerificationError::AmbiguousKeyId(_)) => Err("ambiguous key"),
            Err(_) => Err("signature"),
        }
    }

    /// Verifies an IdP-issued JWT access token presented as a bearer token: signature,
    /// `typ` (`at+jwt` or `JWT`, if any), `iss`, an `aud` among `accepted_audiences` and never
    /// our own client id, no `nonce` (an ID token is no access token: SECURITY I72), `exp`
    /// (required), `nbf`, and a valid `sub`. Returns the verified claims, for the provider's
    /// own policy and subject mapping. Only IdPs with `accepted_audiences` accept any.
    pub async fn verify_access_token(
        &self,
        jwt: &str,
        now: i64,
    ) -> Result<authnz_plugin::VerifiedClaims, &'static str> {
        if self.config.accepted_audiences.is_empty() {
            return Err("this IdP's access tokens are not accepted");
        }
        let claims = self.verify_jws(jwt, &["at+jwt", "JWT"]).await?;
        let string = |name: &str| claims.get(name).and_then(JsonValue::as_str);
        if !string("iss").is_some_and(|iss| self.issuer_matches(iss)) {
            return Err("iss");
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(JsonValue::String(aud)) => vec![aud.as_str()],
            Some(JsonValue::Array(auds)) => auds.iter().filter_map(JsonValue::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|aud| self.config.accepted_audiences.iter().any(|ok| ok == aud))
        {
            return Err("aud");
        }
        // An ID token is addressed to us and carries the login's nonce; an access token is
        // for an API, never for our client.
        if audiences.contains(&self.config.client_id.as_str()) {
            return Err("aud is our own client: an ID token");
        }
        // Claims only ID tokens carry (OpenID Connect Core §2, §3.1.3.6).
        if ["nonce", "at_hash", "c_hash"]
            .iter()
            .any(|claim| claims.get(claim).is_some())
        {
            return Err("an ID token's claim (nonce, at_hash or c_hash)");
        }
        let skew = CLOCK_SKEW.as_secs() as i64;
        match claims.get("exp").and_then(JsonValue::as_i64) {
            Some(exp) if exp > now - skew => {}
            _ => return Err("exp"),
        }
        if claims
            .get("nbf")
            .and_then(JsonValue::as_i64)
            .is_some_and(|nbf| nbf > now + skew)
        {
            return Err("nbf");
        }
        let subject = match string("sub") {
            Some(sub) if valid_subject(sub) => sub.to_string(),
            _ => return Err("sub"),
        };
        let issuer = string("iss").unwrap_or_default().to_string();
        let JsonValue::Object(claims) = claims else {
            return Err("claims");
        };
        Ok(authnz_plugin::VerifiedClaims {
            issuer,
            subject,
            claims,
        })
    }

    /// Verifies a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.6) and returns
    /// what it names. Every failure is a 400. The caller refuses a `jti` seen before.
    pub async fn verify_logout_token(
        &self,
        jwt: &str,
        now: i64,
    ) -> Result<LogoutClaims, FlowError> {
        let bad = |why: &str| {
            tracing::info!(idp = %self.config.name, reason = why, "logout token rejected");
            FlowError::bad_request("invalid_logout_token", "the logout token is invalid")
        };
        // Unreachable keys are the IdP's failure, not a bad token.
        self.discovered().await?;
        let claims = self
            .verify_jws(jwt, &["logout+jwt", "JWT"])
            .await
            .map_err(bad)?;
        let string = |name: &str| {
            claims
                .get(name)
                .and_then(JsonValue::as_str)
                .map(str::to_string)
        };
        let issuer_ok = match &self.info.issuer_template {
            None => string("iss").as_deref() == Some(self.config.issuer.as_str()),
            Some(_) => string("iss").is_some_and(|iss| self.issuer_matches(&iss)),
        };
        if !issuer_ok {
            return Err(bad("iss"));
        }
        let audience_ok = match claims.get("aud") {
            Some(JsonValue::String(aud)) => aud == &self.config.client_id,
            Some(JsonValue::Array(auds)) => {
                auds.len() == 1 && auds[0].as_str() == Some(self.config.client_id.as_str())
            }
            _ => false,
        };
        if !audience_ok {
            return Err(bad("aud"));
        }
        let iat = claims
            .get("iat")
            .and_then(JsonValue::as_i64)
            .ok_or_else(|| bad("iat"))?;
        let skew = CLOCK_SKEW.as_secs() as i64;
        if iat > now + skew || iat < now - 600 {
            return Err(bad("iat out of bounds"));
        }
        if claims
            .get("exp")
            .and_then(JsonValue::as_i64)
            .is_some_and(|exp| exp < now - skew)
        {
            return Err(bad("expired"));
        }
        let jti = string("jti")
            .filter(|jti| !jti.is_empty() && jti.len() <= 256)
            .ok_or_else(|| bad("jti"))?;
        let event_ok = claims
            .get("events")
            .and_then(JsonValue::as_object)
            .and_then(|events| events.get("http://schemas.openid.net/event/backchannel-logout"))
            .is_some_and(JsonValue::is_object);
        if !event_ok {
            return Err(bad("events"));
        }
        if claims.get("nonce").is_some() {
            return Err(bad("nonce"));
        }
        let (sub, sid) = (string("sub"), string("sid"));
        if sub.is_none() && sid.is_none() {
            return Err(bad("neither sub nor sid"));
        }
        if sub.as_deref().is_some_and(|sub| !valid_subject(sub)) {
            return Err(bad("sub"));
        }
        Ok(LogoutClaims {
            sub,
            sid,
            jti,
            // Past this, the `iat` window refuses the token anyway.
            replayable_until: iat + 600 + skew,
            claims: match claims {
                JsonValue::Object(claims) => claims,
                _ => JsonMap::new(),
            },
        })
    }
}

/// What a verified logout token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sub: Option<String>,
    pub sid: Option<String>,
    /// Its unique id: a second use is a replay (SECURITY I75).
    pub jti: String,
    /// Unix seconds until which the token would still verify.
    pub replayable_until: i64,
    /// Every claim, for the provider's subject mapping.
    pub claims: JsonMap<String, JsonValue>,
}

/// The algorithms taken from discovery when `id_token_algs` is not set: the asymmetric ones
/// authnz verifies. HS* (shared secret) only when configured; `none` never.
const DISCOVERABLE_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Whether an address is anything but a public unicast one: private, shared (CGNAT
/// 100.64.0.0/10), benchmarking (198.18.0.0/15), link-local (169.254.0.0/16, fe80::/10),
/// unique-local (fc00::/7), unspecified, broadcast, multicast, documentation or `0.0.0.0/8`.
/// Loopback is judged apart (allowed only for a loopback issuer).
fn not_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
        }
        std::net::IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && ip.segments()[1] == 0x0db8
        }
    }
}

/// Whether a JWS's `typ` header is absent or one of `typs` (compared as RFC 7515 §4.1.9 says:
/// case-insensitively, an `application/` prefix optional).
fn typ_allowed(jwt: &str, typs: &[&str]) -> bool {
    use base64::Engine;
    let header = jwt
        .split('.')
        .next()
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<JsonValue>(&bytes).ok());
    match header.as_ref().and_then(|header| header.get("typ")) {
        None => true,
        Some(JsonValue::String(typ)) => {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            typs.iter().any(|allowed| allowed.eq_ignore_ascii_case(typ))
        }
        Some(_) => false,
    }
}

/// The 401 of a refresh the IdP refused: the person must sign in again.
pub fn reauthenticate() -> FlowError {
    FlowError::unauthorized(
        "reauthenticate",
        "the identity provider no longer accepts this sign-in; log in again",
    )
}

/// The `iss` and `sub` of a stored ID token (already verified when it was stored).
struct IdTokenClaimsView {
    iss: String,
    sub: String,
}

impl IdTokenClaimsView {
    fn of(id_token: &str) -> Option<Self> {
        use base64::Engine;
        let payload = id_token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        let claims: JsonValue = serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            iss: claims.get("iss")?.as_str()?.to_string(),
            sub: claims.get("sub")?.as_str()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subject_shape() {
        for good in ["a", "248289761001", &"x".repeat(255), "ü-ñ"] {
            assert!(valid_subject(good), "{good}");
        }
        for bad in ["", &"x".repeat(256), "a\nb", "a\u{0}b", "\u{7f}"] {
            assert!(!valid_subject(bad), "{bad:?}");
        }
    }

    fn jwk(value: JsonValue) -> CoreJsonWebKey {
        serde_json::from_value(value).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn ring_verifies_es256_and_eddsa_and_leaves_the_rest() {
        use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let key = jwk(
            json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        );
        let signature = pair.sign(&rng, b"header.claims").unwrap();
        assert!(key_fits(&key, &CoreJwsSigningAlgorithm::EcdsaP256Sha256));
        assert!(!key_fits(
            &key,
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        ));
        assert_eq!(
            ring_verify(&key, "ES256", b"header.claims", signature.as_ref()),
            Some(true)
        );
        assert_eq!(
            ring_verify(&key, "ES256", b"header.claimz", signature.as_ref()),
            Some(false)
        );
        let mut short = signature.as_ref().to_vec();
        short.pop();
        assert_eq!(
            ring_verify(&key, "ES256", b"header.claims", &short),
            Some(false)
        );

        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key =
            jwk(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}));
        let signature = pair.sign(b"m");
        assert_eq!(
            ring_verify(&key, "EdDSA", b"m", signature.as_ref()),
            Some(true)
        );
        assert_eq!(
            ring_verify(&key, "EdDSA", b"n", signature.as_ref()),
            Some(false)
        );

        // Left to openidconnect: RSA under 2048 bits, P-521, HMAC.
        let small = jwk(json!({"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"}));
        assert_eq!(ring_verify(&small, "RS256", b"m", &[0; 128]), None);
        assert_eq!(ring_verify(&small, "HS256", b"m", &[0; 32]), None);
        let big = jwk(json!({"kty": "RSA", "n": b64(&[0xc5; 256]), "e": "AQAB"}));
        assert_eq!(ring_verify(&big, "RS256", b"m", &[1; 256]), Some(false));
        let keyed = jwk(json!({"kty": "RSA", "alg": "PS256", "n": b64(&[0xc5; 256]), "e": "AQAB"}));
        assert!(!key_fits(
            &keyed,
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
        ));
        assert!(key_fits(&keyed, &CoreJwsSigningAlgorithm::RsaSsaPssSha256));
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;
    use crate::config;
    use crate::registry::Registry;

    fn idp(issuer: &str) -> Idp {
        let text = format!("[idps.x]\nkind = \"oidc\"\nissuer = \"{issuer}\"\nclient_id = \"c\"\n");
        let config = config::parse(
            std::path::Path::new("t.toml"),
            &text,
            &Registry::builtin(),
            &|_| None,
        )
        .unwrap_or_else(|errors| panic!("{errors}"));
        let http = IdpHttp::new(HttpLimits::default()).unwrap_or_else(|err| panic!("{err}"));
        Idp::new(config.idps[0].clone(), "http://127.0.0.1:8080", http)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    fn metadata(issuer: &str, token: &str) -> Metadata {
        serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": token,
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }))
        .unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    #[allow(clippy::panic)]
    fn unsafe_endpoints_are_refused() {
        let public = idp("https://idp.example");
        let cases = [
            ("https://idp.example/token", true),
            ("https://oauth2.other.example/token", true),
            ("http://idp.example/token", false),
            ("https://169.254.169.254/token", false),
            ("https://10.1.2.3/token", false),
            ("https://192.168.0.1/token", false),
            ("https://127.0.0.1/token", false),
            ("https://[fd00::1]/token", false),
            ("ftp://idp.example/token", false),
            // IPv4-mapped IPv6, link-local IPv6, CGNAT, benchmarking (SECURITY H68).
            ("https://[::ffff:10.0.0.1]/token", false),
            ("https://[::ffff:127.0.0.1]/token", false),
            ("https://[::ffff:a9fe:a9fe]/token", false),
            ("https://[fe80::1]/token", false),
            ("https://[febf::1]/token", false),
            ("https://100.64.0.1/token", false),
            ("https://100.127.255.254/token", false),
            ("https://198.18.0.1/token", false),
            ("https://198.19.255.1/token", false),
            ("https://0.1.2.3/token", false),
            ("https://224.0.0.1/token", false),
            ("https://100.128.0.1/token", true),
            ("https://198.20.0.1/token", true),
            ("https://[2606:4700::1111]/token", true),
            ("https://[::ffff:8.8.8.8]/token", true),
        ];
        for (token, ok) in cases {
            let result = public.check_endpoints(&metadata("https://idp.example", token));
            assert_eq!(result.is_ok(), ok, "{token}: {result:?}");
        }
        let local = idp("http://127.0.0.1:9000");
        assert!(local
            .check_endpoints(&metadata(
                "http://127.0.0.1:9000",
                "http://127.0.0.1:9000/token"
            ))
            .is_ok());
        assert!(local
            .check_endpoints(&metadata(
                "http://127.0.0.1:9000",
                "http://idp.example/token"
            ))
            .is_err());
    }
}

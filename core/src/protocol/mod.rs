//! The OpenID Connect relying party: discovery, the authorize request, the code exchange and
//! every check on what comes back. This module owns the protocol's security decisions; the
//! provider plugins only describe their IdP and map verified claims.
//!
//! What `openidconnect` checks by itself (signature, `iss`, `aud`, `exp`, `nonce`) is used as
//! documented; what it leaves to the application is done here: pinned algorithms, `azp`,
//! `iat` bounds, `at_hash`, the shape of `sub`, userinfo `sub`, JWKS refetch on key rotation
//! (coalesced and throttled), and the outbound HTTP client's limits.

mod authorize;
mod callback;
mod client_auth;
mod discovery;
mod dpop;
mod exchange;
mod jws;
mod outbound;
mod par;
mod tokens;

pub use authorize::StepUp;
pub use callback::{check_callback, Browser, CallbackRefusal};
pub use error::Error;
pub use jws::LogoutClaims;
pub use outbound::{HttpError, HttpLimits, IdpHttp};
pub use tokens::reauthenticate;

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

use crate::config::{is_loopback_host, ClientAuth, IdpConfig, RESERVED_AUTHORIZE_PARAMS};

use crate::crypto::random_token;

mod error;

use crate::store::PendingLogin;

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
    /// RFC 9126 pushed authorization requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_authorization_request_endpoint: Option<String>,
    /// RFC 9126 §5: the IdP takes authorization requests only pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_pushed_authorization_requests: Option<bool>,
    /// RFC 9449 §5.1: the algorithms the IdP takes DPoP proofs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
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
    /// What a login depends on (kind and provider, issuer, client, redirect URI, scopes,
    /// algorithms), hashed: a pending login names its IdP by it, so that any replica, and the
    /// same one after a reload, finds the configuration it started under.
    pub fingerprint: String,
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
    /// `DPoP` when the tokens are bound to [`IdpTokens::dpop_key`]; `None`: bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// The identity's DPoP private key (PKCS#8, base64), sealed with the tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<String>,
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

/// The hash of what a login through this entry depends on (see [`Idp::fingerprint`]).
fn fingerprint(
    config: &IdpConfig,
    info: &authnz_plugin::ProviderInfo,
    redirect_uri: &str,
) -> String {
    let described = serde_json::to_string(info).unwrap_or_default();
    let parts: Vec<&str> = [
        config.name.as_str(),
        config.kind.as_str(),
        config.origin.as_str(),
        config.issuer.as_str(),
        config.client_id.as_str(),
        redirect_uri,
        described.as_str(),
    ]
    .into_iter()
    .chain(config.scopes.iter().map(String::as_str))
    .chain(std::iter::once("\u{1}"))
    .chain(config.id_token_algs.iter().flatten().map(String::as_str))
    .collect();
    crate::crypto::sha256_hex(&parts.join("\0"))[..32].to_string()
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
        let fingerprint = fingerprint(&config, &info, &redirect_uri);
        Ok(Self {
            config,
            info,
            issuer_url,
            redirect_uri,
            fingerprint,
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

    /// Whether an identity stored under this entry's name belongs to this entry's issuer (or
    /// one it had before a real move): the bearer and logout paths ask what logins ask.
    pub fn owns(&self, identity: &crate::store::Identity) -> bool {
        crate::store::identity_belongs_to(
            identity,
            &self.config.issuer,
            &self.config.previous_issuers,
        )
    }
}

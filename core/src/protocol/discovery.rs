//! Discovery and keys: the IdP's metadata (checked before use), the accepted algorithms, the
//! JWKS and its refetch on key rotation, and the backoff after a failure.

use super::jws::key_fits;
use super::outbound::not_public;
use super::*;

impl Idp {
    /// The discovered metadata, discovering on first use (and again after a failure).
    /// The discovered state, discovering first if needed. One discovery at a time (callers
    /// that waited share its outcome), and after a failure none again for a while: 1 s, then
    /// doubling up to a minute, so that requests (unauthenticated back-channel posts among
    /// them) cannot make authnz hammer an IdP that is down, nor queue behind its timeouts.
    pub async fn discovered(&self) -> Result<Arc<Discovered>, Error> {
        if let Some(found) = self.discovered.read().await.as_ref() {
            return Ok(Arc::clone(found));
        }
        let unavailable = || {
            Error::IdpUnavailable(format!(
                "the identity provider {} is not reachable or misconfigured",
                self.config.label
            ))
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
    pub(super) fn backing_off(&self) -> bool {
        self.backoff
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|(until, _)| Instant::now() < until)
    }

    pub(super) fn set_last_error(&self, error: Option<String>) {
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

    pub(super) async fn discover(&self) -> Result<Discovered, String> {
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
    pub(super) fn accepted_algs(&self, metadata: &Metadata) -> Vec<String> {
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
    pub(super) async fn fetch_metadata(&self) -> Result<Metadata, String> {
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
    pub(super) fn oauth2_metadata(
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
    pub(super) fn check_endpoints(&self, metadata: &Metadata) -> Result<(), String> {
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
            (
                "pushed_authorization_request_endpoint",
                &extra.pushed_authorization_request_endpoint,
            ),
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

    /// Refetches the JWKS after an unknown `kid`: concurrent callers share one fetch, and at
    /// most one fetch per [`JWKS_REFETCH_INTERVAL`] happens. Returns the keys to retry with.
    pub(super) async fn refetch_jwks(
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
}

pub(super) fn discovery_error<E: std::error::Error + 'static>(
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

/// The algorithms taken from discovery when `id_token_algs` is not set: the asymmetric ones
/// authnz verifies. HS* (shared secret) only when configured; `none` never.
pub(super) const DISCOVERABLE_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

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

//! The running server: its state ([`App`]), how it is built from a [`Config`], and how it
//! serves (routes, security headers, HTML error pages for browsers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use poem::http::header;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::middleware::AddData;
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route, Server};
use poem_openapi::OpenApiService;

use crate::config::{Config, DEV_IDP_PATH};
use crate::crypto::TokenVault;
use crate::devidp::DevIdp;
use crate::protocol::{HttpLimits, Idp, IdpHttp};
use crate::store::{SledStore, Store};

/// The clock of the server: Unix seconds, with an offset tests can move.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.offset.load(Ordering::Relaxed)
    }

    /// Moves the clock forward (tests of expiry).
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
    }
}

/// One loaded `idps.toml`: the IdPs in force together. Reloading swaps in a new generation;
/// a retired one stays reachable for the logins that started under it.
pub struct Generation {
    /// 1 at start, +1 per successful reload.
    pub number: u64,
    pub config: Config,
    /// In config order.
    pub idps: Vec<Arc<Idp>>,
    by_name: HashMap<String, Arc<Idp>>,
    /// Unix seconds.
    pub loaded_at: i64,
    /// The config file's modification time when it was read (the file watch compares it).
    source_modified: Option<std::time::SystemTime>,
}

impl Generation {
    /// The IdPs of `config`; those unchanged since `previous` keep what it discovered.
    fn build(
        number: u64,
        config: Config,
        http: &IdpHttp,
        now: i64,
        previous: Option<&Generation>,
    ) -> Result<Self, StartError> {
        let public_url = config.server.public_url.as_str().to_string();
        let mut idps = Vec::new();
        for idp_config in &config.idps {
            let idp =
                Idp::new(idp_config.clone(), &public_url, http.clone()).map_err(|reason| {
                    StartError::Idp {
                        name: idp_config.name.clone(),
                        reason,
                    }
                })?;
            if let Some(old) = previous.and_then(|previous| previous.idp(&idp_config.name)) {
                if idp.keep_discovery_of(&old) {
                    tracing::debug!(idp = %idp_config.name, "unchanged: discovery kept");
                }
            }
            idps.push(Arc::new(idp));
        }
        let by_name = idps
            .iter()
            .map(|idp| (idp.config.name.clone(), Arc::clone(idp)))
            .collect();
        let source_modified = std::fs::metadata(&config.source)
            .and_then(|m| m.modified())
            .ok();
        Ok(Self {
            number,
            config,
            idps,
            by_name,
            loaded_at: now,
            source_modified,
        })
    }

    /// The redirect URIs of its `dev` IdPs (the dev IdP registers them at start).
    fn dev_redirects(&self) -> Vec<String> {
        self.idps
            .iter()
            .filter(|idp| idp.config.kind == "dev")
            .map(|idp| idp.redirect_uri.clone())
            .collect()
    }

    /// The IdP of a URL segment: exact, case-sensitive match only.
    pub fn idp(&self, name: &str) -> Option<Arc<Idp>> {
        self.by_name.get(name).cloned()
    }
}

/// Counts logins started per client and per network, in windows of a login's lifetime
/// (SECURITY: one client's flood of `/login` is answered 429). A client is an IPv4 address or
/// an IPv6 /64; its networks are the IPv4 /24 and /16, or the IPv6 /48 and /32. A network may
/// start at most an eighth (/24, /48) or a quarter (/16, /32) of `max_pending_logins` per
/// window, so that a flood from many addresses of one network cannot fill the pending-login
/// table and push out everyone else's sign-ins. The counts are bounded too: when they hold
/// [`LoginLimiter::MAX_KEYS`] addresses and networks, a login from one not yet counted is
/// refused until the window ends.
#[derive(Default)]
pub struct LoginLimiter {
    window: std::sync::Mutex<LimiterWindow>,
}

#[derive(Default)]
struct LimiterWindow {
    started_at: i64,
    counts: HashMap<(std::net::IpAddr, u8), u64>,
}

/// What the limiter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// The client's or its network's cap for this window is reached.
    TooMany,
}

impl LoginLimiter {
    /// At most this many clients and networks are counted at once.
    pub const MAX_KEYS: usize = 300_000;

    /// Counts one login from `client`. The total is bounded elsewhere: the pending-login table
    /// drops its oldest entry when full, and the network caps keep one network from filling it.
    pub fn admit(
        &self,
        client: Option<std::net::IpAddr>,
        now: i64,
        per_client: u64,
        max_pending: u64,
    ) -> Admission {
        let Some(client) = client else {
            return Admission::Allowed;
        };
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now - window.started_at >= crate::config::LOGIN_TTL.as_secs() as i64 {
            *window = LimiterWindow {
                started_at: now,
                ..LimiterWindow::default()
            };
        }
        let units = client_units(client);
        let caps = [
            per_client,
            per_client.max(max_pending / 8),
            per_client.max(max_pending / 4),
        ];
        let new_keys = units
            .iter()
            .filter(|unit| !window.counts.contains_key(unit))
            .count();
        if new_keys > 0 && window.counts.len() + new_keys > Self::MAX_KEYS {
            return Admission::TooMany;
        }
        if units
            .iter()
            .zip(caps)
            .any(|(unit, cap)| window.counts.get(unit).is_some_and(|count| *count >= cap))
        {
            return Admission::TooMany;
        }
        for unit in units {
            *window.counts.entry(unit).or_insert(0) += 1;
        }
        Admission::Allowed
    }

    /// How many clients and networks are counted now.
    pub fn counted(&self) -> usize {
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .counts
            .len()
    }
}

/// What the caps count for a client: itself (an IPv4 address, an IPv6 /64) and its two
/// networks (IPv4 /24 and /16, IPv6 /48 and /32), each with its prefix length. One IPv6 client
/// usually holds a whole /64 (SLAAC, privacy addresses), so counting single addresses would
/// let it start logins from 2^64 of them.
fn client_units(client: std::net::IpAddr) -> [(std::net::IpAddr, u8); 3] {
    let v4 = |ip: std::net::Ipv4Addr, prefix: u8| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        (std::net::IpAddr::V4((u32::from(ip) & mask).into()), prefix)
    };
    let v6 = |ip: std::net::Ipv6Addr, prefix: u8| {
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        (std::net::IpAddr::V6((u128::from(ip) & mask).into()), prefix)
    };
    match client {
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(ip) => [v4(ip, 32), v4(ip, 24), v4(ip, 16)],
            None => [v6(ip, 64), v6(ip, 48), v6(ip, 32)],
        },
        std::net::IpAddr::V4(ip) => [v4(ip, 32), v4(ip, 24), v4(ip, 16)],
    }
}

/// The `jti`s of the back-channel logout tokens used, until their `iat` window closes: a
/// logout token works once (SECURITY I75). Bounded: when full of live entries, a new token is
/// refused rather than an old one forgotten.
#[derive(Default)]
pub struct UsedTokenIds {
    seen: std::sync::Mutex<HashMap<(String, String), i64>>,
}

impl UsedTokenIds {
    /// At most this many remembered at once.
    pub const CAPACITY: usize = 100_000;

    /// Records `(idp, jti)` as used until `until`; `false` when it was used already (or the
    /// table is full of live ones).
    pub fn first_use(&self, idp: &str, jti: &str, until: i64, now: i64) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (idp.to_string(), jti.to_string());
        if seen.get(&key).is_some_and(|expires| *expires >= now) {
            return false;
        }
        if seen.len() >= Self::CAPACITY {
            seen.retain(|_, expires| *expires >= now);
            if seen.len() >= Self::CAPACITY {
                tracing::warn!("too many back-channel logout tokens in ten minutes; refusing more");
                return false;
            }
        }
        seen.insert(key, until);
        true
    }
}

/// One lock per key, made on demand and forgotten when nobody holds or waits for it: one
/// refresh per identity at a time, so that IdPs that rotate refresh tokens and detect reuse
/// (Okta, Auth0, Keycloak, oidc-provider) never see one redeemed twice (SECURITY I77).
#[derive(Default)]
pub struct KeyedLocks {
    locks: std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a [`KeyedLocks`] key until dropped.
pub struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: Vec<u8>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits until no one else holds `key`.
    pub async fn lock(&self, key: Vec<u8>) -> KeyedGuard<'_> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let guard = lock.lock_owned().await;
        KeyedGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }

    /// How many keys are held or waited for (for tests).
    pub fn len(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .locks
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds it: nobody waits.
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

/// What the last reloads did, for `/healthz`, `/readyz` and the admin API.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub reloads: u64,
    pub failures: u64,
    /// The last failed reload's problems; cleared by a successful one.
    pub last_error: Option<String>,
    /// Unix seconds of the last attempt.
    pub last_attempt_at: Option<i64>,
}

/// Everything a request needs.
pub struct App {
    /// `[server]`: fixed for the life of the process (a reload cannot move the database).
    pub server: crate::config::ServerConfig,
    pub store: Arc<dyn Store>,
    pub vault: TokenVault,
    pub dev_idp: Option<Arc<DevIdp>>,
    pub clock: Clock,
    pub metrics: crate::metrics::Metrics,
    /// Caps on logins started, per client address and in all.
    pub limiter: LoginLimiter,
    /// Back-channel logout tokens already used.
    pub used_logout_tokens: UsedTokenIds,
    /// The identities whose tokens are being refreshed.
    pub refreshing: KeyedLocks,
    /// Why the store's last write probe failed, while it fails (`/readyz` answers 503).
    store_failure: std::sync::Mutex<Option<String>>,
    registry: crate::registry::Registry,
    http: IdpHttp,
    current: std::sync::RwLock<Arc<Generation>>,
    /// Generations replaced less than a login's lifetime ago.
    retired: std::sync::Mutex<Vec<(Arc<Generation>, i64)>>,
    reload: std::sync::Mutex<ReloadStatus>,
    /// Serialises reloads.
    reloading: std::sync::Mutex<()>,
}

/// Why the server could not start. Names the file and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Vault(#[from] crate::crypto::VaultError),
    #[error("{0}")]
    DevIdp(#[from] crate::devidp::DevIdpError),
    #[error("HTTP client: {0}")]
    Http(#[from] crate::protocol::HttpError),
    #[error("IdP {name}: {reason}")]
    Idp { name: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("the database stopped taking writes ({reason}) and cannot resume in place now that the disk has room again; exiting so that the supervisor restarts authnz (every write answered before the failure is on disk)")]
    StoreStuck { reason: String },
}

impl App {
    /// Opens the database and key files and builds every IdP. Performs no network I/O:
    /// discovery happens on first use (and in the background after start).
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        Self::with_limits(config, HttpLimits::default())
    }

    pub fn with_limits(config: Config, limits: HttpLimits) -> Result<Arc<Self>, StartError> {
        Self::build(config, limits, crate::registry::Registry::builtin())
    }

    /// With the provider kinds of `registry` (also used by reloads).
    pub fn build(
        config: Config,
        limits: HttpLimits,
        registry: crate::registry::Registry,
    ) -> Result<Arc<Self>, StartError> {
        let server = config.server.clone();
        if let Some(parent) = server.database.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                crate::store::StoreError::Backend(format!(
                    "cannot create {}: {err}",
                    parent.display()
                ))
            })?;
        }
        let sled = SledStore::open(&server.database, server.cache_mb << 20)?;
        sled.set_pending_capacity(usize::try_from(server.max_pending_logins).unwrap_or(usize::MAX));
        let store: Arc<dyn Store> = Arc::new(sled);
        let migrated = store.migrate_issuers(&config.issuers())?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "identities from before issuers were recorded took their entry's issuer"
            );
        }
        let vault = TokenVault::load(&server.secret_key_file, &server.previous_secret_key_files)?;
        let http = IdpHttp::new(limits)?;
        let clock = Clock::default();
        let generation = Generation::build(1, config, &http, clock.now(), None)?;
        let dev_redirects = generation.dev_redirects();
        let dev_idp = if dev_redirects.is_empty() {
            None
        } else {
            let mut key_file = server.database.clone().into_os_string();
            key_file.push(".dev-idp.pem");
            Some(Arc::new(DevIdp::new(
                server.url(DEV_IDP_PATH),
                dev_redirects,
                std::path::Path::new(&key_file),
            )?))
        };
        Ok(Arc::new(Self {
            server,
            store,
            vault,
            dev_idp,
            clock,
            metrics: crate::metrics::Metrics::default(),
            limiter: LoginLimiter::default(),
            used_logout_tokens: UsedTokenIds::default(),
            refreshing: KeyedLocks::default(),
            store_failure: std::sync::Mutex::new(None),
            registry,
            http,
            current: std::sync::RwLock::new(Arc::new(generation)),
            retired: std::sync::Mutex::new(Vec::new()),
            reload: std::sync::Mutex::new(ReloadStatus::default()),
            reloading: std::sync::Mutex::new(()),
        }))
    }

    /// Why the store fails to take writes, if it does.
    pub fn store_failure(&self) -> Option<String> {
        self.store_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the last probe's outcome; returns whether that changed the state.
    fn set_store_failure(&self, failure: Option<String>) -> bool {
        let mut current = self
            .store_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = current.is_some() != failure.is_some();
        *current = failure;
        changed
    }

    /// Removes what has expired: pending logins, sessions, and pending sign-ups (with the
    /// sealed IdP tokens they hold). The server does it once a minute.
    pub fn sweep(&self) {
        let now = self.clock.now();
        let cutoff = now - crate::config::LOGIN_TTL.as_secs() as i64;
        if let Err(err) = self.store.sweep_pending_logins(cutoff) {
            tracing::warn!(error = %err, "sweeping expired logins failed");
        }
        if let Err(err) = self.store.sweep_expired(now) {
            tracing::warn!(error = %err, "sweeping expired sessions failed");
        }
        if let Err(err) = self.store.sweep_signups(now) {
            tracing::warn!(error = %err, "sweeping expired sign-ups failed");
        }
    }

    /// The generation in force.
    pub fn current(&self) -> Arc<Generation> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The IdP of a URL segment in the current generation: exact, case-sensitive match only.
    pub fn idp(&self, name: &str) -> Option<Arc<Idp>> {
        self.current().idp(name)
    }

    /// The IdP a login started with: from its generation while that is retained (so a reload
    /// does not break logins in flight), else from the current one.
    pub fn idp_of_generation(&self, name: &str, generation: u64) -> Option<Arc<Idp>> {
        let current = self.current();
        if current.number == generation {
            return current.idp(name);
        }
        let retired = match self.retired.lock() {
            Ok(guard) => guard
                .iter()
                .find(|(g, _)| g.number == generation)
                .map(|(g, _)| Arc::clone(g)),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .find(|(g, _)| g.number == generation)
                .map(|(g, _)| Arc::clone(g)),
        };
        match retired {
            Some(old) => old.idp(name),
            None => current.idp(name),
        }
    }

    /// Whether an IdP of that name is in force, or was within a login's lifetime.
    pub fn idp_known(&self, name: &str) -> bool {
        if self.current().idp(name).is_some() {
            return true;
        }
        let retired = self
            .retired
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        retired
            .iter()
            .any(|(generation, _)| generation.idp(name).is_some())
    }

    /// What the reloads did.
    pub fn reload_status(&self) -> ReloadStatus {
        match self.reload.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the config file and swaps in the new generation, or changes nothing and says
    /// why. `[server]` is fixed at start; a change there is reported and ignored.
    pub fn reload(&self) -> Result<u64, String> {
        let registry = &self.registry;
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = self.clock.now();
        let current = self.current();
        let result = crate::config::load(&current.config.source, registry)
            .map_err(|errors| errors.to_string())
            .and_then(|config| {
                let next =
                    Generation::build(current.number + 1, config, &self.http, now, Some(&current))
                        .map_err(|err| err.to_string())?;
                let mut before = current.dev_redirects();
                let mut after = next.dev_redirects();
                before.sort();
                after.sort();
                if before != after {
                    return Err("adding or removing a dev IdP needs a restart".to_string());
                }
                Ok(next)
            });
        let mut status = self
            .reload
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        status.last_attempt_at = Some(now);
        match result {
            Ok(next) => {
                if next.config.server.public_url != self.server.public_url
                    || next.config.server.listen != self.server.listen
                    || next.config.server.database != self.server.database
                {
                    tracing::warn!("[server] changes take effect only after a restart");
                }
                let number = next.number;
                let next = Arc::new(next);
                for idp in &next.idps {
                    let idp = Arc::clone(idp);
                    tokio::spawn(async move {
                        let _ = idp.discovered().await;
                    });
                }
                {
                    let mut guard = self
                        .current
                        .write()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    *guard = next;
                }
                let mut retired = self
                    .retired
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                retired.push((current, now));
                let keep_after = now - crate::config::LOGIN_TTL.as_secs() as i64;
                retired.retain(|(_, at)| *at >= keep_after);
                status.reloads += 1;
                status.last_error = None;
                self.metrics
                    .reloads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(generation = number, "configuration reloaded");
                // An entry that came back gives its waiting legacy identities their issuer.
                if let Err(err) = self.store.migrate_issuers(&self.current().config.issuers()) {
                    tracing::warn!(error = %err, "recording the issuers of older identities failed");
                }
                Ok(number)
            }
            Err(error) => {
                status.failures += 1;
                status.last_error = Some(error.clone());
                self.metrics
                    .reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%error, "configuration reload failed; the previous one stays in force");
                Err(error)
            }
        }
    }
}

/// The OpenAPI service of authnz (also what `authnz openapi` prints).
pub fn openapi_service(
    public_url: &str,
) -> OpenApiService<(crate::api::Api, crate::account_api::AccountApi), ()> {
    OpenApiService::new(
        (crate::api::Api, crate::account_api::AccountApi),
        "authnz",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Sign in with your organization's identity provider. A script starts a login with \
             `GET /authnz/{idp}/login` (it answers `{\"redirect_uri\": ...}`), sends the person's \
             browser to that URL, and the IdP returns to `/authnz/{idp}/callback`, which starts a \
             session (cookie `authnz_session`).",
    )
    .server(public_url.trim_end_matches('/'))
}

/// The whole HTTP surface.
pub fn routes(app: Arc<App>) -> impl Endpoint {
    let api = openapi_service(app.server.public_url.as_str());
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let mut route = Route::new()
        .nest("/", api)
        .at("/openapi.json", spec)
        .nest("/docs", docs);
    if let Some(dev) = &app.dev_idp {
        route = route.nest(
            DEV_IDP_PATH,
            Arc::clone(dev)
                .routes()
                .into_endpoint()
                .around(loopback_only),
        );
    }
    route
        .around(crate::api::host_cookies)
        .with(AddData::new(app))
        .around(security_headers)
}

/// The dev IdP lets anyone sign in as anyone: besides the config check, each of its requests
/// must come from a loopback client (SECURITY I70), the real one behind a trusted proxy.
async fn loopback_only<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let allowed = req
        .data::<Arc<App>>()
        .is_some_and(|app| crate::api::check_loopback_client(app, &req).is_ok());
    if !allowed {
        return Ok(Response::builder()
            .status(poem::http::StatusCode::FORBIDDEN)
            .content_type("application/json; charset=utf-8")
            .body(
                serde_json::json!({
                    "error": "dev_idp_loopback_only",
                    "message": "the dev IdP answers only clients on this machine",
                })
                .to_string(),
            ));
    }
    Ok(next.call(req).await?.into_response())
}

/// Security headers on every response; an HTML page instead of JSON for browsers that failed;
/// one log line per request, with the path but never the query (it carries codes and state).
async fn security_headers<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    use tracing::Instrument;
    // A request id on every log line of the request, and in the answer: a caller's own id if
    // it is a plain token, else a new one.
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| crate::crypto::random_token(9));
    let span = tracing::info_span!("request", id = %request_id);
    let mut response = frame(next, req).instrument(span).await?;
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// The methods the API documents for a path (for the `Allow` header of a 405).
fn allowed_methods(path: &str) -> Option<String> {
    static ROUTES: std::sync::OnceLock<Vec<(Vec<String>, Vec<String>)>> =
        std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let spec: serde_json::Value =
            serde_json::from_str(&openapi_service("http://127.0.0.1").spec()).unwrap_or_default();
        spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, methods)| {
                        let segments = template.split('/').map(str::to_string).collect();
                        let methods = methods
                            .as_object()
                            .map(|m| m.keys().map(|k| k.to_uppercase()).collect())
                            .unwrap_or_default();
                        (segments, methods)
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let segments: Vec<&str> = path.split('/').collect();
    routes
        .iter()
        .find(|(template, _)| {
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
        })
        .map(|(_, methods)| methods.join(", "))
}

async fn frame<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let wants_html = prefers_html(&req);
    // A parameter the framework refused is named in the answer (its value never is).
    let mut refused_param = None;
    let mut response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(err) => {
            refused_param = err
                .downcast_ref::<poem_openapi::error::ParseParamError>()
                .map(|err| err.name);
            err.into_response()
        }
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let api_path = path.starts_with("/authnz") || path.starts_with("/api");
    if api_path && !is_json && status.as_u16() >= 400 {
        // Errors raised by the framework itself (a missing session cookie, a malformed
        // parameter) get the same JSON shape as ours.
        let (code, message) = match (status.as_u16(), refused_param) {
            (401, _) => ("unauthorized", "log in first".to_string()),
            (403, _) => ("forbidden", "not allowed".to_string()),
            (404, _) => ("not_found", "no such resource".to_string()),
            (405, _) => ("method_not_allowed", "method not allowed".to_string()),
            (400..=499, Some(name)) => (
                "bad_request",
                format!("the parameter `{name}` is missing or malformed"),
            ),
            (400..=499, None) => ("bad_request", "the request is malformed".to_string()),
            _ => ("internal_error", "internal error".to_string()),
        };
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.set_body(serde_json::json!({"error": code, "message": message}).to_string());
    }
    if wants_html && status.as_u16() >= 400 && api_path {
        let body = response.take_body().into_bytes().await.unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = parsed
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("error");
        let message = parsed
            .get("message")
            .and_then(|v| v.as_str())
            .unwrap_or("The request failed.");
        let html = crate::pages::error_page(status.as_u16(), code, message);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
        response.set_body(html);
    }
    if status == poem::http::StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::ALLOW)
    {
        if let Some(value) =
            allowed_methods(&path).and_then(|m| header::HeaderValue::from_str(&m).ok())
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
    }
    let headers = response.headers_mut();
    // Names and values built at compile time: no parsing per response.
    let set = |headers: &mut poem::http::HeaderMap, (name, value): (HeaderName, HeaderValue)| {
        headers.insert(name, value);
    };
    set(headers, NOSNIFF);
    // `no-referrer` wherever a URL may carry a code or state (the flow under /authnz and the
    // dev IdP); `same-origin` on the pages, so that their own form posts keep their Origin.
    if path.starts_with("/authnz") || path.starts_with(DEV_IDP_PATH) {
        set(headers, NO_REFERRER);
    } else {
        set(headers, SAME_ORIGIN_REFERRER);
    }
    if !path.starts_with("/docs") {
        // Swagger UI needs its inline scripts; every other page is script-free.
        set(headers, CSP);
        set(headers, FRAME_DENY);
    }
    if path.starts_with("/authnz") || path.starts_with("/api") || path.starts_with(DEV_IDP_PATH) {
        set(headers, NO_STORE);
    }
    tracing::info!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(response)
}

const NOSNIFF: (HeaderName, HeaderValue) = static_header("x-content-type-options", "nosniff");
const NO_REFERRER: (HeaderName, HeaderValue) = static_header("referrer-policy", "no-referrer");
const SAME_ORIGIN_REFERRER: (HeaderName, HeaderValue) =
    static_header("referrer-policy", "same-origin");
const CSP: (HeaderName, HeaderValue) = static_header(
    "content-security-policy",
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'",
);
const FRAME_DENY: (HeaderName, HeaderValue) = static_header("x-frame-options", "DENY");
const NO_STORE: (HeaderName, HeaderValue) = static_header("cache-control", "no-store");

type HeaderName = poem::http::HeaderName;
type HeaderValue = header::HeaderValue;

/// A header from two literals, for the `const`s above: checked and built at compile time.
const fn static_header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

/// Whether the client asked for a page rather than JSON (a browser navigating).
pub fn prefers_html(req: &Request) -> bool {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    accept.contains("text/html") && !accept.starts_with("application/json")
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    listener
        .set_nonblocking(true)
        .map_err(|err| StartError::Listen {
            addr: format!("{:?}", listener.local_addr().ok()),
            reason: err.to_string(),
        })?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|err| StartError::Listen {
            addr: String::new(),
            reason: err.to_string(),
        })?;
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(|err| StartError::Listen {
        addr: String::new(),
        reason: err.to_string(),
    })?;
    let local = acceptor
        .local_addr()
        .first()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %local, public_url = %app.server.public_url, "authnz is serving");
    // Discover every IdP in the background, so that the first login does not wait.
    for idp in &app.current().idps {
        let idp = Arc::clone(idp);
        tokio::spawn(async move {
            let _ = idp.discovered().await;
        });
    }
    let reloader = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { watch_config(app).await })
    };
    let sweeper = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            // The first sweep a minute after startup, not during it.
            let period = std::time::Duration::from_secs(60);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                // A sweep reads every session: on the blocking pool, so that requests keep
                // their runtime threads.
                let app = Arc::clone(&app);
                let _ = tokio::task::spawn_blocking(move || app.sweep()).await;
            }
        })
    };
    // A store that cannot resume after a failed write stops the server (see `watch_store`).
    let (stuck_tx, stuck_rx) = tokio::sync::oneshot::channel::<StartError>();
    let store_watch = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let _ = stuck_tx.send(watch_store(app).await);
        })
    };
    let stuck = Arc::new(std::sync::Mutex::new(None));
    let shutdown = {
        let stuck = Arc::clone(&stuck);
        async move {
            tokio::select! {
                _ = shutdown => {}
                Ok(err) = stuck_rx => {
                    tracing::error!(error = %err, "stopping");
                    *stuck.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(err);
                }
            }
        }
    };
    let result = Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            routes(app),
            shutdown,
            Some(std::time::Duration::from_secs(5)),
        )
        .await
        .map_err(|err| StartError::Listen {
            addr: local,
            reason: err.to_string(),
        });
    sweeper.abort();
    reloader.abort();
    store_watch.abort();
    let stuck = stuck
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    match stuck {
        Some(err) => Err(err),
        None => result,
    }
}

/// Probes the store every second. While writes fail (a full disk), `/readyz` says so; once
/// they succeed again, it is ready again. sled keeps the error of a failed write for good, so
/// when the disk has room again but the store still fails, this returns: the server stops and
/// its supervisor starts it anew (the database reopens; nothing answered is lost).
async fn watch_store(app: Arc<App>) -> StartError {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let probing = Arc::clone(&app);
        let Ok(probe) = tokio::task::spawn_blocking(move || {
            let probe = probing.store.probe();
            let room = probe.is_err() && has_room(&probing.server.database);
            (probe, room)
        })
        .await
        else {
            continue;
        };
        match probe {
            (Ok(()), _) => {
                if app.set_store_failure(None) {
                    tracing::info!("the store takes writes again");
                }
            }
            (Err(err), room) => {
                if app.set_store_failure(Some(err.to_string())) {
                    tracing::error!(error = %err, "the store cannot take writes (is the disk full?); logins fail until it can");
                }
                if room {
                    return StartError::StoreStuck {
                        reason: err.to_string(),
                    };
                }
            }
        }
    }
}

/// Whether the database's filesystem can take a megabyte now.
fn has_room(database: &std::path::Path) -> bool {
    use std::io::Write;
    let probe = database.join(".authnz-room-probe");
    let wrote = std::fs::File::create(&probe)
        .and_then(|mut file| {
            file.write_all(&vec![0u8; 1 << 20])?;
            file.sync_all()
        })
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    wrote
}

/// Reloads the config on `SIGHUP` and when the file changes (polled every two seconds).
async fn watch_config(app: Arc<App>) {
    let path = app.current().config.source.clone();
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    // Compared with what the generation in force was read from, so that a change made before
    // this task started is not missed.
    let mut last = app.current().source_modified;
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<bool>();
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            got = signalled => got,
        };
        let now_modified = modified(&path);
        if by_signal || now_modified != last {
            last = now_modified;
            let _ = app.reload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<std::net::IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn the_cap_counts_an_ipv6_client_by_its_64() {
        let limiter = LoginLimiter::default();
        let allow = |text: &str| limiter.admit(ip(text), 0, 2, 100_000) == Admission::Allowed;
        // Rotating through one /64 is one client.
        assert!(allow("2001:db8:1:2::1"));
        assert!(allow("2001:db8:1:2:ffff::9"));
        assert!(!allow("2001:db8:1:2:abcd::1"), "same /64");
        assert!(allow("2001:db8:1:3::1"), "another /64");
        // IPv4 counts per address, also when it arrives IPv4-mapped.
        assert!(allow("192.0.2.1"));
        assert!(allow("::ffff:192.0.2.1"));
        assert!(!allow("192.0.2.1"), "one IPv4 client");
        assert!(allow("192.0.2.2"), "its neighbour is another");
    }

    #[test]
    fn a_network_cannot_take_more_than_its_share_of_the_pending_table() {
        // 64 pending logins in all: a /48 gets 8, a /32 16, whatever its /64s.
        let limiter = LoginLimiter::default();
        let allow = |text: &str| limiter.admit(ip(text), 0, 2, 64) == Admission::Allowed;
        let admitted = (0..100)
            .filter(|n| allow(&format!("2001:db8:1:{n:x}::1")))
            .count();
        assert_eq!(admitted, 8, "one /48");
        let admitted = (0..100)
            .filter(|n| allow(&format!("2001:db8:{:x}:{n:x}::1", n % 3 + 2)))
            .count();
        assert_eq!(admitted, 8, "the rest of the /32's quarter");
        assert!(allow("2001:db9::1"), "another /32");
        let admitted = (0..=255)
            .filter(|n| allow(&format!("198.51.100.{n}")))
            .count();
        assert_eq!(admitted, 8, "one /24");
        assert!(allow("203.0.113.1"), "another network");
    }

    #[test]
    fn the_counts_are_bounded() {
        let limiter = LoginLimiter::default();
        let mut refused = 0;
        for n in 0..(LoginLimiter::MAX_KEYS as u32 / 3 + 1000) {
            // Every client its own /32: three new keys each.
            let client = std::net::IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n) << 96 | 1));
            if limiter.admit(Some(client), 0, 300, 100_000) == Admission::TooMany {
                refused += 1;
            }
        }
        assert!(limiter.counted() <= LoginLimiter::MAX_KEYS);
        assert!(refused >= 1000, "{refused}");
        // A client already counted goes on.
        let known = std::net::IpAddr::V6(std::net::Ipv6Addr::from(1u128));
        assert_eq!(
            limiter.admit(Some(known), 0, 300, 100_000),
            Admission::Allowed
        );
        // A new window starts afresh.
        let new = std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::MAX));
        assert_eq!(
            limiter.admit(Some(new), 601, 300, 100_000),
            Admission::Allowed
        );
    }

    fn committed_spec_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json")
    }

    #[test]
    fn committed_openapi_spec_matches_the_code() {
        let generated = openapi_service("http://127.0.0.1:8080").spec();
        let committed = std::fs::read_to_string(committed_spec_path()).unwrap_or_default();
        assert!(
            generated.trim() == committed.trim(),
            "openapi/openapi.json is out of date: run `cargo run -p authnz -- openapi > openapi/openapi.json`"
        );
    }

    #[test]
    fn every_route_is_documented_with_descriptions() {
        let spec: serde_json::Value =
            serde_json::from_str(&openapi_service("http://127.0.0.1:8080").spec())
                .unwrap_or_default();
        let routes = [
            ("/authnz", "get"),
            ("/authnz/{idp}/login", "get"),
            ("/authnz/{idp}/callback", "get"),
            ("/authnz/logout", "post"),
            ("/api/users/me", "get"),
            ("/api/users/me", "delete"),
            ("/healthz", "get"),
            ("/authnz/{idp}/connect", "post"),
            ("/authnz/{idp}/create_user", "get"),
            ("/authnz/{idp}/create_user", "post"),
            ("/authnz/{idp}/disconnect", "get"),
            ("/authnz/{idp}/disconnect", "post"),
            ("/authnz/{idp}/backchannel-logout", "post"),
            ("/api/keys", "get"),
            ("/api/keys", "post"),
            ("/api/keys/{id}", "delete"),
            ("/api/users/me/tokens/{idp}", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/api/admin/status", "get"),
            ("/api/admin/reload", "post"),
        ];
        let documented: usize = spec["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .values()
                    .map(|m| m.as_object().map_or(0, |m| m.len()))
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(
            documented,
            routes.len(),
            "a route is missing from this list or the spec"
        );
        for (path, method) in routes {
            let operation = &spec["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is not in the spec");
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no description"
            );
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{method} {path} {status} has no description"
                );
            }
        }
        let security = &spec["paths"]["/api/users/me"]["get"]["security"];
        assert!(
            security.to_string().contains("SessionAuth")
                && security.to_string().contains("ApiKeyBearer"),
            "{security}"
        );
    }
}

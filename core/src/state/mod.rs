//! The running server, without HTTP: its state ([`App`]), the configuration generations in
//! force, and reloading them.

mod limits;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::config::{Config, DEV_IDP_PATH};
use crate::crypto::TokenVault;
use crate::devidp::DevIdp;
use crate::protocol::{HttpLimits, Idp, IdpHttp};
use crate::store::{PgStore, SledStore, Store};

pub use limits::{Admission, KeyedGuard, KeyedLocks, LoginLimiter, UsedTokenIds};

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
    pub(crate) source_modified: Option<std::time::SystemTime>,
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
            .filter(|idp| idp.config.is_dev())
            .map(|idp| idp.redirect_uri.clone())
            .collect()
    }

    /// The IdP of a URL segment: exact, case-sensitive match only.
    pub fn idp(&self, name: &str) -> Option<Arc<Idp>> {
        self.by_name.get(name).cloned()
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
    /// The keys that sign app assertions (`signing_key_file`), published at the JWKS.
    pub signer: crate::signing::Signer,
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
    #[error("signing key: {0}")]
    SigningKey(#[from] crate::signing::SigningKeyError),
    #[error("HTTP client: {0}")]
    Http(#[from] crate::protocol::HttpError),
    #[error("IdP {name}: {reason}")]
    Idp { name: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("the database was made with another secret key than {path}: every token it keeps would fail to open. Give this server the key file the database was made with (replicas share one file); after a key rotation, list the old key in previous_secret_key_files")]
    KeyMismatch { path: String },
    #[error("the database stopped taking writes ({reason}) and cannot resume in place now that the disk has room again; exiting so that the supervisor restarts authnz (every write answered before the failure is on disk)")]
    StoreStuck { reason: String },
}

/// The database remembers its key: a canary sealed with it at the first start. A server given
/// another key (a regenerated or wrong `secret_key_file`, a replica given a file of its own)
/// refuses to start and names the file, rather than failing every stored token later. After a
/// rotation the canary opens with the previous key and is sealed again with the new one.
pub(crate) async fn check_key_canary(
    store: &dyn Store,
    vault: &TokenVault,
    key_file: &std::path::Path,
) -> Result<(), StartError> {
    const CONTEXT: &[u8] = b"authnz key canary";
    if let Some(sealed) = store.key_canary().await? {
        match vault.open(CONTEXT, &sealed) {
            Ok(_) if vault.sealed_with_current(&sealed) => return Ok(()),
            // Sealed with a previous key: seal it again with the current one.
            Ok(_) => {}
            Err(_) => {
                return Err(StartError::KeyMismatch {
                    path: key_file.display().to_string(),
                })
            }
        }
    }
    let sealed = vault.seal(CONTEXT, b"authnz")?;
    Ok(store.put_key_canary(&sealed).await?)
}

/// Starts the discovery of each of `idps` in the background, so that the first login does not
/// wait for it (one discovery per IdP however many ask at once).
pub(crate) fn discover_in_background<'a>(idps: impl IntoIterator<Item = &'a Arc<Idp>>) {
    for idp in idps {
        let idp = Arc::clone(idp);
        tokio::spawn(async move {
            let _ = idp.discovered().await;
        });
    }
}

/// The store `[server]` names, and the vault of its key: sled (the key file made at the first
/// start when missing), or PostgreSQL (the key file must exist: replicas share one).
async fn open_store(
    server: &crate::config::ServerConfig,
) -> Result<(Arc<dyn Store>, TokenVault), StartError> {
    if let Some(postgres) = &server.postgres {
        let vault =
            TokenVault::load_shared(&server.secret_key_file, &server.previous_secret_key_files)?;
        let store = PgStore::connect(postgres).await?;
        store.set_login_secrets(vault.login_secrets().clone());
        return Ok((Arc::new(store), vault));
    }
    if let Some(parent) = server.database.parent() {
        std::fs::create_dir_all(parent).map_err(|err| {
            crate::store::StoreError::Backend(format!("cannot create {}: {err}", parent.display()))
        })?;
    }
    let (dir, cache_bytes) = (server.database.clone(), server.cache_mb << 20);
    let sled = tokio::task::spawn_blocking(move || SledStore::open(&dir, cache_bytes))
        .await
        .map_err(|err| {
            crate::store::StoreError::Backend(format!("opening the database: {err}"))
        })??;
    sled.set_pending_capacity(usize::try_from(server.max_pending_logins).unwrap_or(usize::MAX));
    let vault = TokenVault::load(&server.secret_key_file, &server.previous_secret_key_files)?;
    sled.set_login_secrets(vault.login_secrets().clone());
    // sled is this process's alone: its hot reads can be answered from memory.
    Ok((Arc::new(crate::store::Cached::new(sled)), vault))
}

impl App {
    /// Opens the database and key files and builds every IdP, whose discovery starts in the
    /// background meanwhile (the server's start: ready once both are done).
    pub async fn new(config: Config) -> Result<Arc<Self>, StartError> {
        Self::assemble(
            config,
            HttpLimits::default(),
            crate::registry::Registry::builtin(),
            true,
        )
        .await
    }

    pub async fn with_limits(config: Config, limits: HttpLimits) -> Result<Arc<Self>, StartError> {
        Self::build(config, limits, crate::registry::Registry::builtin()).await
    }

    /// With the provider kinds of `registry` (also used by reloads). Performs no network I/O:
    /// discovery happens on first use (and in the background once serving).
    pub async fn build(
        config: Config,
        limits: HttpLimits,
        registry: crate::registry::Registry,
    ) -> Result<Arc<Self>, StartError> {
        Self::assemble(config, limits, registry, false).await
    }

    /// [`App::build`]; with `discover_now`, the IdPs' discovery starts before the database
    /// opens, so that a start waits for the longer of the two rather than for both.
    async fn assemble(
        config: Config,
        limits: HttpLimits,
        registry: crate::registry::Registry,
        discover_now: bool,
    ) -> Result<Arc<Self>, StartError> {
        let server = config.server.clone();
        let signer = crate::signing::Signer::load(
            server.signing_key_file.as_deref(),
            &server.previous_signing_key_files,
        )?;
        let issuers = config.issuers();
        let http = IdpHttp::new(limits)?;
        let clock = Clock::default();
        let generation = Generation::build(1, config, &http, clock.now(), None)?;
        if discover_now {
            // The dev IdP is this server: not listening yet.
            discover_in_background(generation.idps.iter().filter(|idp| !idp.config.is_dev()));
        }
        // A big sled database takes a while to open (on the blocking pool: the discovery above
        // goes on meanwhile).
        let (store, vault) = open_store(&server).await?;
        check_key_canary(&*store, &vault, &server.secret_key_file).await?;
        let migrated = store.migrate_issuers(&issuers).await?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "identities from before issuers were recorded took their entry's issuer"
            );
        }
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
            signer,
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

    /// The account operations, on this server's store and vault.
    pub fn accounts(&self) -> crate::accounts::Accounts<'_> {
        crate::accounts::Accounts {
            store: &self.store,
            vault: &self.vault,
            session_ttl: self.server.session_ttl,
        }
    }

    /// Why the store fails to take writes, if it does.
    pub fn store_failure(&self) -> Option<String> {
        self.store_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the last probe's outcome; returns whether that changed the state.
    pub(crate) fn set_store_failure(&self, failure: Option<String>) -> bool {
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
    pub async fn sweep(&self) {
        let now = self.clock.now();
        let cutoff = now - crate::config::LOGIN_TTL.as_secs() as i64;
        if let Err(err) = self.store.sweep_pending_logins(cutoff).await {
            tracing::warn!(error = %err, "sweeping expired logins failed");
        }
        if let Err(err) = self.store.sweep_expired(now).await {
            tracing::warn!(error = %err, "sweeping expired sessions failed");
        }
        if let Err(err) = self.store.sweep_signups(now).await {
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

    /// The IdP a login started with, by the fingerprint it recorded: the current entry when
    /// it is unchanged, else a retired one that matches (so a reload does not break logins in
    /// flight), else the current entry of that name.
    pub fn idp_for_login(&self, name: &str, fingerprint: &str) -> Option<Arc<Idp>> {
        let current = self.current().idp(name);
        if current
            .as_ref()
            .is_some_and(|idp| idp.fingerprint == fingerprint)
        {
            return current;
        }
        let retired = self
            .retired
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        retired
            .iter()
            .rev()
            .filter_map(|(generation, _)| generation.idp(name))
            .find(|idp| idp.fingerprint == fingerprint)
            .or(current)
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
    pub async fn reload(&self) -> Result<u64, String> {
        let number = self.swap_generation()?;
        // An entry that came back gives its waiting legacy identities their issuer.
        let issuers = self.current().config.issuers();
        if let Err(err) = self.store.migrate_issuers(&issuers).await {
            tracing::warn!(error = %err, "recording the issuers of older identities failed");
        }
        Ok(number)
    }

    /// The synchronous part of [`App::reload`]: build the next generation, swap it in.
    fn swap_generation(&self) -> Result<u64, String> {
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
                // The apps were checked against the new [server]; the running one must match.
                if next.config.server.cookie_domain != self.server.cookie_domain {
                    return Err("changing [server] cookie_domain needs a restart".to_string());
                }
                if self.signer.current().is_none()
                    && next.config.apps.iter().any(|app| app.assertion)
                {
                    return Err("an app with assertion = true needs [server] signing_key_file loaded at start: restart".to_string());
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

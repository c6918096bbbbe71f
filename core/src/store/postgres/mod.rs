//! The PostgreSQL backend of [`crate::store::Store`]: one database shared by every replica.
//!
//! Plain SQL per operation over a pool of connections (tokio-postgres, deadpool), TLS by
//! rustls. Each operation is one transaction; a first login serialises on advisory locks of
//! its identity and its email address, so concurrent logins through any number of replicas
//! make one user, and the linking rule ([`crate::store::linking`]) decides as in every backend.
//! Pending logins live in an UNLOGGED table taken with `DELETE … RETURNING`: single use
//! across replicas, no WAL fsync on the hot path.

mod copy;
mod migrate;
mod roles;
mod tls;

use std::sync::RwLock;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;

use crate::config::{DbTls, Migrate, PostgresConfig};
use crate::crypto::LoginSecrets;
use crate::store::{decode, encode, PendingLogin, StoreError, StoreResult};

pub use copy::CopyReport;

type PgClient = deadpool_postgres::Object;

/// How long a request waits for a free connection before it is answered 503.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// Marks a nonce or PKCE verifier that is derived from the state, not stored (no real value
/// holds a NUL).
const DERIVED: &str = "\0derived";

/// A PostgreSQL database of authnz.
pub struct PgStore {
    pool: Pool,
    /// What nonces and PKCE verifiers are derived with: the shared key's, once set.
    secrets: RwLock<LoginSecrets>,
}

impl PgStore {
    /// Connects, checks the schema and applies missing migrations when `migrate = "auto"`.
    /// Fails, naming the problem, when the database cannot be reached or does not fit.
    pub async fn connect(config: &PostgresConfig) -> StoreResult<Self> {
        let store = Self::open_pool(config)?;
        let mut client = store.client().await?;
        let applied = migrate::migrate(&mut client, config.migrate == Migrate::Auto).await?;
        if applied > 0 {
            tracing::info!(applied, "database schema brought up to date");
        }
        Ok(store)
    }

    /// Applies the missing migrations (`authnz migrate`); returns how many.
    pub async fn migrate(config: &PostgresConfig) -> StoreResult<usize> {
        let store = Self::open_pool(config)?;
        let mut client = store.client().await?;
        migrate::migrate(&mut client, true).await
    }

    fn open_pool(config: &PostgresConfig) -> StoreResult<Self> {
        let mut connection = config.connection.clone();
        connection
            .application_name("authnz")
            .connect_timeout(Duration::from_secs(5));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.tls {
            DbTls::Disable => {
                connection.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(connection, tokio_postgres::NoTls, manager_config)
            }
            mode => {
                connection.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = tls::connector(mode, config.ca_file.as_deref())?;
                Manager::from_config(connection, tls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|err| StoreError::Backend(format!("cannot build the pool: {err}")))?;
        Ok(Self {
            pool,
            secrets: RwLock::new(LoginSecrets::random()),
        })
    }

    /// Derives nonces and PKCE verifiers with `secrets` (the shared key's) from now on.
    pub fn set_login_secrets(&self, secrets: LoginSecrets) {
        *self
            .secrets
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = secrets;
    }

    fn secrets(&self) -> LoginSecrets {
        self.secrets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A connection from the pool; none free within [`POOL_WAIT`], or the database gone away,
    /// is [`StoreError::Unavailable`].
    async fn client(&self) -> StoreResult<PgClient> {
        self.pool.get().await.map_err(|err| match err {
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "no database connection free within {} s",
                POOL_WAIT.as_secs()
            )),
            PoolError::Backend(err) => db_error(err),
            other => StoreError::Unavailable(other.to_string()),
        })
    }

    /// A pending login as stored: its nonce and verifier left out where they are derived
    /// from the state.
    fn pending_record(&self, state: &str, login: &PendingLogin) -> StoreResult<Vec<u8>> {
        let secrets = self.secrets();
        let derived = |label: &str| secrets.derive_with(&login.secret_key_id, label, state);
        let mut stored = login.clone();
        if derived("nonce").is_some_and(|nonce| nonce == login.nonce) {
            stored.nonce = DERIVED.into();
        }
        if !login.pkce_verifier.is_empty()
            && derived("pkce").is_some_and(|pkce| pkce == login.pkce_verifier)
        {
            stored.pkce_verifier = DERIVED.into();
        }
        encode(&stored)
    }

    fn pending_login(&self, state: &str, record: &[u8]) -> StoreResult<PendingLogin> {
        let mut login: PendingLogin = decode(record)?;
        let secrets = self.secrets();
        let derive = |label: &str, key_id: &str| {
            secrets
                .derive_with(key_id, label, state)
                .unwrap_or_default()
        };
        if login.nonce == DERIVED {
            login.nonce = derive("nonce", &login.secret_key_id);
        }
        if login.pkce_verifier == DERIVED {
            login.pkce_verifier = derive("pkce", &login.secret_key_id);
        }
        Ok(login)
    }
}

/// The key of a pending login: SHA-256 of its state (a reader of the table cannot finish a
/// sign-in with what it finds there).
fn state_key(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

/// An advisory-lock key for one (kind, value), e.g. an identity or an email address.
fn lock_key(kind: &str, value: &[u8]) -> i64 {
    let digest = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(value)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A database error, as the store reports it: a connection that failed or closed is
/// [`StoreError::Unavailable`] (retrying may succeed), anything else a backend failure. The
/// message never carries record contents (PostgreSQL's `DETAIL` may, so only the message).
fn db_error(err: tokio_postgres::Error) -> StoreError {
    match err.as_db_error() {
        Some(db) => StoreError::Backend(format!("{} ({})", db.message(), db.code().code())),
        None if err.is_closed() || err.code().is_none() => StoreError::Unavailable(err.to_string()),
        None => StoreError::Backend(err.to_string()),
    }
}

/// Whether a transaction failed only because another one won a race (serialisation failure,
/// deadlock, a unique row another transaction just took): running it again decides anew.
fn is_race(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE)
            | Some(&SqlState::T_R_DEADLOCK_DETECTED)
            | Some(&SqlState::UNIQUE_VIOLATION)
    )
}

fn is_missing_user(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

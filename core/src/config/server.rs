//! The `[server]` table.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::fields::{Context, Fields};
use super::{is_loopback_host, valid_idp_name};

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: Url,
    /// The sled directory (unused with [`ServerConfig::postgres`]).
    pub database: PathBuf,
    /// `[server.postgres]`: a shared PostgreSQL database instead of sled.
    pub postgres: Option<PostgresConfig>,
    pub secret_key_file: PathBuf,
    /// Earlier keys, kept after a rotation so that tokens they sealed still open.
    pub previous_secret_key_files: Vec<PathBuf>,
    /// Who may use `/api/admin/*`: user ids or IdP identities (their API keys work too).
    pub admins: Vec<AdminRef>,
    /// At most this many logins started by one client address per login lifetime (10 min).
    pub max_logins_per_client: u64,
    /// Reverse proxies whose `X-Forwarded-For` names the client (see [`crate::proxy`]).
    pub trusted_proxies: Vec<crate::proxy::IpNet>,
    /// At most this many logins started in all per login lifetime.
    pub max_pending_logins: u64,
    /// sled's page cache, in MiB.
    pub cache_mb: u64,
    pub session_ttl: Duration,
    /// `cookie_domain`: the session cookie's `Domain`, so that apps on subdomains receive it
    /// (then named `__Secure-authnz_session`); `None`: this host only (`__Host-` under https).
    pub cookie_domain: Option<String>,
    /// The P-256 key that signs app assertions (PKCS#8 PEM).
    pub signing_key_file: Option<PathBuf>,
    /// Earlier signing keys, still published so that assertions they signed verify.
    pub previous_signing_key_files: Vec<PathBuf>,
    /// The pages' language when the browser asks for none there is a catalogue for.
    pub default_language: &'static str,
    /// `[server.branding]`: the organisation's look on the pages; `None`: authnz's own.
    pub branding: Option<std::sync::Arc<super::Branding>>,
}

impl ServerConfig {
    /// Whether cookies must carry `Secure`.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// `<public_url><path>`, `path` starting with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.public_url.as_str().trim_end_matches('/'), path)
    }
}

/// An admin of `[server] admins`: pinned to something no IdP claim can choose (SECURITY I74).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRef {
    /// A local user id (the `id` of `GET /api/users/me`).
    User(String),
    /// `<idp>:<subject>`: whichever account holds that identity.
    Identity { idp: String, subject: String },
}

impl AdminRef {
    /// `<idp>:<subject>` or a user id; a bare username is refused, with what to write instead.
    fn parse(text: &str) -> Result<Self, String> {
        if let Some((idp, subject)) = text.split_once(':') {
            if valid_idp_name(idp) && !subject.is_empty() {
                return Ok(Self::Identity {
                    idp: idp.to_string(),
                    subject: subject.to_string(),
                });
            }
            return Err(format!(
                "{text:?}: expected \"<idp>:<subject>\" with an IdP name from this file, e.g. \"okta:00u1abcd\""
            ));
        }
        if crate::crypto::looks_like_user_id(text) {
            return Ok(Self::User(text.to_string()));
        }
        Err(format!(
            "{text:?} looks like a username; usernames come from IdP claims (first come, first served), so admins are named by user id (the `id` of GET /api/users/me) or as \"<idp>:<subject>\" (the `idp` and `subject` of one of its identities)"
        ))
    }
}

/// `[server]`, each key checked and defaulted; an absent table is all defaults.
pub(super) fn server_config(cx: &mut Context, fields: Option<Fields>) -> ServerConfig {
    let mut fields = fields.unwrap_or_else(|| Fields {
        prefix: "server".into(),
        span: 0..0,
        entries: Vec::new(),
        known: Vec::new(),
    });
    let listen = listen(cx, &mut fields);
    let public_url = public_url(cx, &mut fields, listen);
    let database_set = fields.take_str(cx, "database");
    let postgres = fields
        .take_table(cx, "postgres")
        .and_then(|table| postgres_config(cx, table));
    if let (Some((_, span)), Some(_)) = (&database_set, &postgres) {
        cx.issue(
            span.clone(),
            "server.database",
            "set either `database` (sled) or [server.postgres], not both",
        );
    }
    let database = database_set
        .map(|(raw, _)| cx.resolve(&raw))
        .unwrap_or_else(|| cx.resolve("data/authnz.sled"));
    let key_file = fields.take_str(cx, "secret_key_file");
    if key_file.is_none() && postgres.is_some() {
        cx.issue(
            fields.span.clone(),
            "server.secret_key_file",
            "required with [server.postgres]: every replica is given the same key file, made once with `authnz keygen PATH`",
        );
    }
    let secret_key_file = key_file
        .map(|(raw, _)| cx.resolve(&raw))
        .unwrap_or_else(|| {
            let mut name = database.clone().into_os_string();
            name.push(".key");
            PathBuf::from(name)
        });
    let previous_secret_key_files = fields
        .take_str_list(cx, "previous_secret_key_files")
        .unwrap_or_default()
        .iter()
        .map(|path| cx.resolve(path))
        .collect();
    let admins = admins(cx, &mut fields);
    let positive = |cx: &mut Context, fields: &mut Fields, name: &str, default: u64| match fields
        .take_u64(cx, name)
    {
        Some((0, span)) => {
            cx.issue(span, &format!("server.{name}"), "must be at least 1");
            default
        }
        Some((value, _)) => value,
        None => default,
    };
    let max_logins_per_client = positive(cx, &mut fields, "max_logins_per_client", 300);
    let trusted_proxies = trusted_proxies(cx, &mut fields);
    let max_pending_logins = positive(cx, &mut fields, "max_pending_logins", 100_000);
    let cache_mb = positive(cx, &mut fields, "cache_mb", 16);
    let session_ttl = match fields.take_u64(cx, "session_ttl_minutes") {
        Some((0, span)) => {
            cx.issue(span, "server.session_ttl_minutes", "must be at least 1");
            Duration::from_secs(8 * 3600)
        }
        Some((minutes, _)) => Duration::from_secs(minutes.saturating_mul(60)),
        None => Duration::from_secs(8 * 3600),
    };
    let cookie_domain = fields
        .take_str(cx, "cookie_domain")
        .and_then(|(domain, span)| cookie_domain(cx, &public_url, domain, span));
    let signing_key_file = fields
        .take_str(cx, "signing_key_file")
        .and_then(|(raw, span)| signing_key(cx, &raw, span, "server.signing_key_file"));
    let previous_signing_key_files = fields
        .take_str_items(cx, "previous_signing_key_files")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(raw, span)| signing_key(cx, &raw, span, "server.previous_signing_key_files"))
        .collect();
    let default_language = match fields.take_str(cx, "default_language") {
        None => "en",
        Some((value, span)) => match crate::i18n::supported(&value).filter(|lang| *lang == value) {
            Some(lang) => lang,
            None => {
                cx.issue(
                    span,
                    "server.default_language",
                    format!(
                        "{value:?}: expected one of {}",
                        crate::i18n::LANGUAGES.join(", ")
                    ),
                );
                "en"
            }
        },
    };
    let branding = fields
        .take_table(cx, "branding")
        .map(|table| std::sync::Arc::new(super::branding::branding(cx, table)));
    let _ = fields.span;
    fields.finish(cx);
    ServerConfig {
        listen,
        public_url,
        database,
        postgres,
        secret_key_file,
        previous_secret_key_files,
        admins,
        max_logins_per_client,
        trusted_proxies,
        max_pending_logins,
        cache_mb,
        session_ttl,
        cookie_domain,
        signing_key_file,
        previous_signing_key_files,
        default_language,
        branding,
    }
}

/// `cookie_domain`: a domain (not an address) with at least two labels, that the host of an
/// https `public_url` is under.
fn cookie_domain(
    cx: &mut Context,
    public_url: &Url,
    domain: String,
    span: std::ops::Range<usize>,
) -> Option<String> {
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    let valid = domain.contains('.')
        && domain.parse::<IpAddr>().is_err()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let host = public_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let problem = if !valid {
        Some("expected a domain such as \"example.org\" (an address or a top-level domain cannot share cookies)".to_string())
    } else if public_url.scheme() != "https" {
        Some(
            "a cookie shared with other hosts must be Secure: needs an https:// public_url"
                .to_string(),
        )
    } else if !under_domain(&host, &domain) {
        Some(format!("public_url's host {host} is not under {domain:?}"))
    } else {
        None
    };
    match problem {
        Some(message) => {
            cx.issue(span, "server.cookie_domain", message);
            None
        }
        None => Some(domain),
    }
}

/// Whether `host` is `domain` or one of its subdomains (both lowercase).
pub(super) fn under_domain(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// A signing key file, which must hold a P-256 key now (a reload would not notice it later).
fn signing_key(
    cx: &mut Context,
    raw: &str,
    span: std::ops::Range<usize>,
    key: &str,
) -> Option<PathBuf> {
    let path = cx.resolve(raw);
    match crate::signing::SigningKey::load(&path) {
        Ok(_) => Some(path),
        Err(err) => {
            cx.issue(span, key, err.to_string());
            None
        }
    }
}

/// `[server.postgres]`: how to reach the shared database.
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection settings from `url` (libpq URL or key=value form), with the password of
    /// `password_file` if one was given.
    pub connection: tokio_postgres::Config,
    pub tls: DbTls,
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    pub migrate: Migrate,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection settings may hold a password: only where they point.
        f.debug_struct("PostgresConfig")
            .field("hosts", &self.connection.get_hosts())
            .field("dbname", &self.connection.get_dbname())
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("migrate", &self.migrate)
            .finish_non_exhaustive()
    }
}

/// `tls` of `[server.postgres]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbTls {
    /// TLS, the server's certificate verified, and its name checked against the host.
    VerifyFull,
    /// TLS, the certificate verified against the roots, the name not checked.
    Require,
    /// No TLS: only to a unix socket or a loopback address.
    Disable,
}

/// `migrate` of `[server.postgres]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrate {
    /// Apply missing migrations at start (serialised across replicas).
    Auto,
    /// Refuse to start with missing migrations (`authnz migrate` applies them).
    Check,
}

fn postgres_config(cx: &mut Context, mut fields: Fields) -> Option<PostgresConfig> {
    let table_span = fields.span.clone();
    let url = fields.take_str(cx, "url");
    let password_file = fields
        .take_str(cx, "password_file")
        .map(|(raw, span)| (cx.resolve(&raw), span));
    let tls = match fields.take_str(cx, "tls") {
        None => Some(DbTls::VerifyFull),
        Some((value, span)) => match value.as_str() {
            "verify-full" => Some(DbTls::VerifyFull),
            "require" => Some(DbTls::Require),
            "disable" => Some(DbTls::Disable),
            other => {
                cx.issue(
                    span,
                    "server.postgres.tls",
                    format!("{other:?}: expected \"verify-full\", \"require\" or \"disable\""),
                );
                None
            }
        },
    };
    let ca_file = fields
        .take_str(cx, "ca_file")
        .map(|(raw, _)| cx.resolve(&raw));
    let pool_size = match fields.take_u64(cx, "pool_size") {
        Some((0, span)) => {
            cx.issue(span, "server.postgres.pool_size", "must be at least 1");
            16
        }
        Some((size, _)) => usize::try_from(size).unwrap_or(usize::MAX),
        None => 16,
    };
    let migrate = match fields.take_str(cx, "migrate") {
        None => Some(Migrate::Auto),
        Some((value, span)) => match value.as_str() {
            "auto" => Some(Migrate::Auto),
            "check" => Some(Migrate::Check),
            other => {
                cx.issue(
                    span,
                    "server.postgres.migrate",
                    format!("{other:?}: expected \"auto\" or \"check\""),
                );
                None
            }
        },
    };
    fields.finish(cx);
    let Some((url, url_span)) = url else {
        cx.issue(
            table_span,
            "server.postgres.url",
            "required: the database to connect to, e.g. \"postgresql://authnz@db.internal/authnz\" or \"host=/run/postgresql dbname=authnz\"",
        );
        return None;
    };
    // Never echo the URL: it may hold a password.
    if url.contains("sslmode") {
        cx.issue(
            url_span.clone(),
            "server.postgres.url",
            "sslmode in the URL is not taken (sslmode=prefer would fall back to plaintext silently): say `tls = \"verify-full\"`, `\"require\"` or `\"disable\"` instead",
        );
        return None;
    }
    let mut connection = match url.parse::<tokio_postgres::Config>() {
        Ok(connection) => connection,
        Err(err) => {
            cx.issue(
                url_span,
                "server.postgres.url",
                format!("not a PostgreSQL connection string: {err}"),
            );
            return None;
        }
    };
    if let Some((path, span)) = password_file {
        match std::fs::read_to_string(&path) {
            Ok(password) => {
                connection.password(password.trim_end_matches(['\r', '\n']));
            }
            Err(err) => {
                cx.issue(
                    span,
                    "server.postgres.password_file",
                    format!("cannot read {}: {err}", path.display()),
                );
                return None;
            }
        }
    }
    if connection.get_hosts().is_empty() {
        cx.issue(
            url_span.clone(),
            "server.postgres.url",
            "names no host: give one (a unix-socket directory such as /run/postgresql, or a host name)",
        );
        return None;
    }
    let tls = tls?;
    if tls == DbTls::Disable {
        let off_machine = connection.get_hosts().iter().find_map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) if !is_loopback_name(name) => {
                Some(name.clone())
            }
            _ => None,
        });
        if let Some(host) = off_machine {
            cx.issue(
                url_span,
                "server.postgres.tls",
                format!("\"disable\" is for a unix socket or a loopback address only, and {host} is neither: use \"verify-full\""),
            );
            return None;
        }
    }
    Some(PostgresConfig {
        connection,
        tls,
        ca_file,
        pool_size,
        migrate: migrate?,
    })
}

/// `listen`, `127.0.0.1:8080` by default.
fn listen(cx: &mut Context, fields: &mut Fields) -> SocketAddr {
    match fields.take_str(cx, "listen") {
        Some((raw, span)) => raw.parse::<SocketAddr>().unwrap_or_else(|_| {
            cx.issue(
                span,
                "server.listen",
                "expected an address like 127.0.0.1:8080",
            );
            default_listen()
        }),
        None => default_listen(),
    }
}

/// `public_url`: http(s) without query or fragment, `http://` for loopback hosts only;
/// `http://<listen>` by default.
fn public_url(cx: &mut Context, fields: &mut Fields, listen: SocketAddr) -> Url {
    match fields.take_str(cx, "public_url") {
        Some((raw, span)) => match Url::parse(raw.trim_end_matches('/')) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.host().is_some() =>
            {
                if url.scheme() == "http" && !is_loopback_host(&url) {
                    cx.issue(
                        span,
                        "server.public_url",
                        "http:// is only allowed for loopback hosts; use https://",
                    );
                }
                url
            }
            _ => {
                cx.issue(
                    span,
                    "server.public_url",
                    "expected an http(s) URL without query or fragment",
                );
                default_public_url(listen)
            }
        },
        None => default_public_url(listen),
    }
}

/// `admins`: user ids or `<idp>:<subject>`, each refusal reported where it stands.
fn admins(cx: &mut Context, fields: &mut Fields) -> Vec<AdminRef> {
    fields
        .take_str_items(cx, "admins")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(item, span)| match AdminRef::parse(&item) {
            Ok(admin) => Some(admin),
            Err(reason) => {
                cx.issue(span, "server.admins", reason);
                None
            }
        })
        .collect()
}

/// `trusted_proxies`: addresses or networks, each refusal reported where it stands.
fn trusted_proxies(cx: &mut Context, fields: &mut Fields) -> Vec<crate::proxy::IpNet> {
    fields
        .take_str_items(cx, "trusted_proxies")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(item, span)| match item.trim().parse() {
            Ok(net) => Some(net),
            Err(reason) => {
                cx.issue(span, "server.trusted_proxies", reason);
                None
            }
        })
        .collect()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_public_url(listen: SocketAddr) -> Url {
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match listen.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        }
    };
    Url::parse(&format!("http://{host}:{}", listen.port())).unwrap_or_else(|_| {
        Url::parse("http://127.0.0.1:8080").unwrap_or_else(|_| unreachable_url())
    })
}

#[allow(clippy::panic)]
fn unreachable_url() -> Url {
    // Both literals above are valid URLs; this cannot happen.
    panic!("literal URL failed to parse")
}

/// `localhost` or a loopback address.
fn is_loopback_name(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

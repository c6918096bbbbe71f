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
    pub database: PathBuf,
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
    let database = fields
        .take_str(cx, "database")
        .map(|(raw, _)| cx.resolve(&raw))
        .unwrap_or_else(|| cx.resolve("data/authnz.sled"));
    let secret_key_file = fields
        .take_str(cx, "secret_key_file")
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
    let _ = fields.span;
    fields.finish(cx);
    ServerConfig {
        listen,
        public_url,
        database,
        secret_key_file,
        previous_secret_key_files,
        admins,
        max_logins_per_client,
        trusted_proxies,
        max_pending_logins,
        cache_mb,
        session_ttl,
    }
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

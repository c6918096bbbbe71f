//! `idps.toml`: parsing, secret resolution and validation into the internal [`Config`].
//!
//! The file is parsed into a spanned TOML tree so that every problem can name the file, line,
//! column and key. Validation collects *every* problem and reports them together. The rest of
//! the program never sees the raw file: it gets a [`Config`] whose values are already checked.
//! Secrets (`client_secret`, `${VAR}` values) are wrapped in [`Secret`] so that `Debug` and error
//! messages never print them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use authnz_plugin::{IdentityProvider, ProviderSettings, TomlTable, TomlValue};
use toml::de::{DeTable, DeValue};
use toml::Spanned;
use url::Url;

pub use crate::registry::DYLIB_KIND;
use crate::registry::{Registry, DEV_KIND};

/// Issuer of the built-in development IdP, below `public_url`.
pub const DEV_IDP_PATH: &str = "/dev-idp";

/// The pending-login lifetime: an authorization that takes longer than this is refused.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub server: ServerConfig,
    /// The IdPs in file order (the order of the login buttons).
    pub idps: Vec<IdpConfig>,
    /// Entries that are valid but lack their credentials (an unset `${VAR}`, a secret file
    /// not provisioned yet): reported, not served, and not fatal.
    pub unavailable: Vec<UnavailableIdp>,
}

/// An IdP entry that cannot be used yet, and why (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableIdp {
    pub name: String,
    pub kind: String,
    pub label: String,
    pub reason: String,
}

enum IdpEntry {
    Ready(Box<IdpConfig>),
    Unavailable(UnavailableIdp),
}

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

impl Config {
    /// Each entry's issuer, by entry name.
    pub fn issuers(&self) -> BTreeMap<String, String> {
        self.idps
            .iter()
            .map(|idp| (idp.name.clone(), idp.issuer.clone()))
            .collect()
    }
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

/// One `[idps.<name>]` entry, validated and with its provider built.
#[derive(Clone)]
pub struct IdpConfig {
    pub name: String,
    pub kind: String,
    pub label: String,
    pub icon: Option<String>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// The issuer to discover, after the config override, exactly as written: ID tokens must
    /// carry this very string in `iss`.
    pub issuer: String,
    /// Every scope to request, `openid` first.
    pub scopes: Vec<String>,
    pub prompt: Option<String>,
    /// Accepted ID-token signature algorithms (never `none`) as configured; `None`: the
    /// asymmetric ones the IdP's discovery advertises (see `protocol::Discovered::algs`).
    pub id_token_algs: Option<Vec<String>>,
    /// Whether to call the userinfo endpoint when the IdP has one.
    pub userinfo: bool,
    /// Extra authorize parameters from the config.
    pub authorize_params: Vec<(String, String)>,
    /// Whether to use PKCE (S256). On unless the IdP cannot take it.
    pub pkce: bool,
    /// The claim to take the local username from, instead of the provider's choice.
    pub username_claim: Option<String>,
    /// What a first login whose verified email belongs to an existing account does.
    pub link_existing: LinkPolicy,
    /// Email domains this IdP is authoritative for (the only ones `verified_email` links).
    pub trusted_email_domains: Vec<String>,
    /// Whether a first login asks the person to confirm before an account is created.
    pub require_create_confirmation: bool,
    /// Audiences of this IdP's JWT access tokens that `/api/*` accepts as bearer tokens.
    pub accepted_audiences: Vec<String>,
    /// Issuers this entry had before the provider really moved: identities linked under them
    /// keep signing in (and take the current issuer).
    pub previous_issuers: Vec<String>,
    pub provider: Arc<dyn IdentityProvider>,
    /// Where the provider's code comes from: `built-in`, or the library path and its SDK.
    pub origin: String,
}

impl IdpConfig {
    /// Whether this is the built-in development IdP (anyone signs in as anyone).
    pub fn is_dev(&self) -> bool {
        self.kind == DEV_KIND
    }
}

impl fmt::Debug for IdpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("issuer", &self.issuer)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// `link_existing`: what a first login whose verified email belongs to an existing account does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPolicy {
    /// Refuse (409): sign in with the provider used before.
    Never,
    /// Refuse (409): sign in to the existing account, then connect this IdP from it (default).
    Confirm,
    /// Link automatically when this IdP verified the email and is authoritative for its domain
    /// (`trusted_email_domains`), and so was the IdP that verified the existing account's email.
    VerifiedEmail,
}

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `idps.corp.issuer`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path, registry: &Registry) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors(vec![ConfigIssue {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: "(file)".into(),
            message: format!("cannot read: {err}"),
        }])
    })?;
    parse(path, &text, registry, &|name| std::env::var(name).ok())
}

/// Validates config text; `env` resolves `${VAR}` (a parameter so tests control it).
pub fn parse(
    path: &Path,
    text: &str,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Context {
        file: path.to_path_buf(),
        text,
        issues: Vec::new(),
        env,
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        missing_variable: None,
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    for error in syntax {
        let span = error.span().unwrap_or(0..0);
        cx.issue(span, "(syntax)", error.message().trim().to_string());
    }
    if !cx.issues.is_empty() {
        return Err(ConfigErrors(cx.issues));
    }
    let root_span = root.span();
    let mut root = Fields::new(String::new(), root.into_inner(), root_span);
    let server_table = root.take_table(&mut cx, "server");
    let idps_table = root.take_table(&mut cx, "idps");
    root.finish(&mut cx);

    let server = server_config(&mut cx, server_table);
    let mut idps = Vec::new();
    let mut unavailable = Vec::new();
    if let Some(idps_table) = idps_table {
        for (name, value) in idps_table.entries {
            let key = format!("idps.{}", name.get_ref());
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            if !valid_idp_name(&name) {
                cx.issue(
                    name_span.clone(),
                    &key,
                    "IdP names appear in URLs: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
                );
            }
            let span = value.span();
            match value.into_inner() {
                DeValue::Table(table) => {
                    let fields = Fields::new(key, table, span);
                    match idp_config(&mut cx, registry, &server, name, fields) {
                        Some(IdpEntry::Ready(idp)) => idps.push(*idp),
                        Some(IdpEntry::Unavailable(idp)) => unavailable.push(idp),
                        None => {}
                    }
                }
                _ => cx.issue(span, &key, "expected a table [idps.<name>]"),
            }
        }
    }
    if cx.issues.is_empty() {
        Ok(Config {
            source: path.to_path_buf(),
            server,
            idps,
            unavailable,
        })
    } else {
        Err(ConfigErrors(cx.issues))
    }
}

fn valid_idp_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

/// Whether `host` is a loopback host, the only place plain `http://` is allowed.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Why `${...}` could not be expanded.
#[derive(Debug)]
enum ExpandError {
    Missing(String),
    Syntax(String),
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Missing(name) => write!(f, "environment variable {name} is not set"),
            ExpandError::Syntax(message) => f.write_str(message),
        }
    }
}

struct Context<'a> {
    file: PathBuf,
    text: &'a str,
    issues: Vec<ConfigIssue>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: PathBuf,
    /// While reading an `[idps.*]` entry: the first unset variable, which makes the entry
    /// unavailable instead of failing the whole config.
    missing_variable: Option<Option<String>>,
}

impl Context<'_> {
    fn issue(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Expands `${VAR}` and `${VAR:-default}`; a missing variable is an issue.
    fn expand(&mut self, span: Range<usize>, key: &str, raw: &str) -> Option<String> {
        match self.try_expand(raw) {
            Ok(value) => Some(value),
            Err(ExpandError::Missing(name)) if self.missing_variable.is_some() => {
                self.mark_unavailable(format!("{key}: environment variable {name} is not set"));
                None
            }
            Err(err) => {
                self.issue(span, key, err.to_string());
                None
            }
        }
    }

    /// Expands `${VAR}` and `${VAR:-default}`, or says what is wrong.
    fn try_expand(&self, raw: &str) -> Result<String, ExpandError> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(ExpandError::Syntax("unterminated ${...}".to_string()));
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ExpandError::Syntax(format!(
                    "invalid variable name in ${{{inner}}}"
                )));
            }
            match ((self.env)(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(ExpandError::Missing(name.to_string())),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Records why the entry being read is unavailable (every reason, in file order).
    fn mark_unavailable(&mut self, reason: String) {
        match &mut self.missing_variable {
            Some(Some(reasons)) => {
                reasons.push_str("; ");
                reasons.push_str(&reason);
            }
            Some(none @ None) => *none = Some(reason),
            None => {}
        }
    }

    fn is_unavailable(&self) -> bool {
        matches!(self.missing_variable, Some(Some(_)))
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The keys of one table, taken one by one; what is left at the end is unknown.
struct Fields<'i> {
    prefix: String,
    span: Range<usize>,
    entries: Vec<(Spanned<std::borrow::Cow<'i, str>>, Spanned<DeValue<'i>>)>,
    /// Every key asked for, present or not: what an unknown key may be a misspelling of.
    known: Vec<String>,
}

impl<'i> Fields<'i> {
    fn new(prefix: String, table: DeTable<'i>, span: Range<usize>) -> Self {
        Self {
            prefix,
            span,
            entries: table.into_iter().collect(),
            known: Vec::new(),
        }
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    fn take(&mut self, name: &str) -> Option<Spanned<DeValue<'i>>> {
        self.known.push(name.to_string());
        let index = self
            .entries
            .iter()
            .position(|(key, _)| key.get_ref() == name)?;
        Some(self.entries.remove(index).1)
    }

    fn take_table(&mut self, cx: &mut Context, name: &str) -> Option<Fields<'i>> {
        let value = self.take(name)?;
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => Some(Fields::new(self.key(name), table, span)),
            _ => {
                cx.issue(span, &self.key(name), "expected a table");
                None
            }
        }
    }

    /// A string, with `${VAR}` expanded.
    fn take_str(&mut self, cx: &mut Context, name: &str) -> Option<(String, Range<usize>)> {
        let value = self.take(name)?;
        let span = value.span();
        match value.get_ref().as_str() {
            Some(raw) => {
                let key = self.key(name);
                cx.expand(span.clone(), &key, raw)
                    .map(|value| (value, span))
            }
            None => {
                cx.issue(span, &self.key(name), "expected a string");
                None
            }
        }
    }

    fn take_bool(&mut self, cx: &mut Context, name: &str) -> Option<bool> {
        let value = self.take(name)?;
        match value.get_ref().as_bool() {
            Some(flag) => Some(flag),
            None => {
                cx.issue(value.span(), &self.key(name), "expected true or false");
                None
            }
        }
    }

    fn take_u64(&mut self, cx: &mut Context, name: &str) -> Option<(u64, Range<usize>)> {
        let value = self.take(name)?;
        let span = value.span();
        let parsed = value
            .get_ref()
            .as_integer()
            .and_then(|int| int.as_str().replace('_', "").parse::<u64>().ok());
        if parsed.is_none() {
            cx.issue(
                span.clone(),
                &self.key(name),
                "expected a positive whole number",
            );
        }
        parsed.map(|parsed| (parsed, span))
    }

    fn take_str_list(&mut self, cx: &mut Context, name: &str) -> Option<Vec<String>> {
        self.take_str_items(cx, name)
            .map(|items| items.into_iter().map(|(item, _)| item).collect())
    }

    /// A list of strings, each with where it stands (to report a bad item at its place).
    fn take_str_items(
        &mut self,
        cx: &mut Context,
        name: &str,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let value = self.take(name)?;
        let span = value.span();
        let key = self.key(name);
        let DeValue::Array(items) = value.into_inner() else {
            cx.issue(span, &key, "expected a list of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(raw) => out.push((cx.expand(item.span(), &key, raw)?, item.span())),
                None => {
                    cx.issue(item.span(), &key, "expected a string");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Reports every key left as unknown.
    fn finish(mut self, cx: &mut Context) {
        for (key, _) in std::mem::take(&mut self.entries) {
            let path = self.key(key.get_ref());
            let message = match authnz_plugin::did_you_mean(
                key.get_ref(),
                self.known.iter().map(String::as_str),
            ) {
                Some(close) => format!("unknown key (did you mean `{close}`?)"),
                None => "unknown key".to_string(),
            };
            cx.issue(key.span(), &path, message);
        }
    }
}

fn server_config(cx: &mut Context, fields: Option<Fields>) -> ServerConfig {
    let mut fields = fields.unwrap_or_else(|| Fields {
        prefix: "server".into(),
        span: 0..0,
        entries: Vec::new(),
        known: Vec::new(),
    });
    let listen = match fields.take_str(cx, "listen") {
        Some((raw, span)) => raw.parse::<SocketAddr>().unwrap_or_else(|_| {
            cx.issue(
                span,
                "server.listen",
                "expected an address like 127.0.0.1:8080",
            );
            default_listen()
        }),
        None => default_listen(),
    };
    let public_url = match fields.take_str(cx, "public_url") {
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
    };
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
    let admins = fields
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
        .collect();
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
    let trusted_proxies = fields
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
        .collect();
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

pub const SUPPORTED_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

/// Authorize parameters the core owns; config and providers may not set them.
pub const RESERVED_AUTHORIZE_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "request",
    "request_uri",
];

fn idp_config(
    cx: &mut Context,
    registry: &Registry,
    server: &ServerConfig,
    name: String,
    mut fields: Fields,
) -> Option<IdpEntry> {
    let prefix = fields.prefix.clone();
    let table_span = fields.span.clone();
    let key = |k: &str| format!("{prefix}.{k}");
    // From here, an unset variable makes this entry unavailable rather than the config invalid.
    cx.missing_variable = Some(None);
    let entry = idp_entry(
        cx,
        registry,
        server,
        name,
        &mut fields,
        &prefix,
        table_span,
        &key,
    );
    cx.missing_variable = None;
    entry
}

#[allow(clippy::too_many_arguments)]
fn idp_entry(
    cx: &mut Context,
    registry: &Registry,
    server: &ServerConfig,
    name: String,
    fields: &mut Fields,
    prefix: &str,
    table_span: Range<usize>,
    key: &dyn Fn(&str) -> String,
) -> Option<IdpEntry> {
    let kind = match fields.take_str(cx, "kind") {
        Some((kind, span)) => {
            if kind != DYLIB_KIND && registry.factory(&kind).is_none() {
                cx.issue(
                    span,
                    &key("kind"),
                    match authnz_plugin::did_you_mean(&kind, registry.kinds()) {
                        Some(close) => format!("unknown kind {kind:?} (did you mean {close:?}?)"),
                        None => format!(
                            "unknown kind {kind:?}; known kinds: {}",
                            registry.kinds().join(", ")
                        ),
                    },
                );
                None
            } else {
                Some(kind)
            }
        }
        None => {
            cx.issue(
                table_span.clone(),
                &key("kind"),
                "missing (e.g. kind = \"oidc\")",
            );
            None
        }
    };
    let is_dev = kind.as_deref() == Some(DEV_KIND);
    let label = fields.take_str(cx, "label").map(|(v, _)| v);
    let icon = fields.take_str(cx, "icon").map(|(v, _)| v);
    let client_id = fields.take_str(cx, "client_id");
    let client_secret = fields.take_str(cx, "client_secret");
    let client_secret_file = fields.take_str(cx, "client_secret_file");
    let issuer = fields.take_str(cx, "issuer");
    let scopes = fields.take_str_list(cx, "scopes");
    let extra_scopes = fields.take_str_list(cx, "extra_scopes").unwrap_or_default();
    let prompt = fields.take_str(cx, "prompt").map(|(v, _)| v);
    let id_token_algs = match fields.take("id_token_algs") {
        Some(value) => {
            let span = value.span();
            let mut list = Fields {
                prefix: prefix.to_string(),
                span: span.clone(),
                entries: Vec::new(),
                known: Vec::new(),
            };
            list.entries
                .push((Spanned::new(span.clone(), "id_token_algs".into()), value));
            let algs = list.take_str_list(cx, "id_token_algs").unwrap_or_default();
            for alg in &algs {
                if !SUPPORTED_ALGS.contains(&alg.as_str()) {
                    cx.issue(
                        span.clone(),
                        &key("id_token_algs"),
                        format!(
                            "unsupported algorithm {alg:?} (\"none\" is never accepted); supported: {}",
                            SUPPORTED_ALGS.join(", ")
                        ),
                    );
                }
            }
            if algs.is_empty() {
                cx.issue(
                    span,
                    &key("id_token_algs"),
                    "must list at least one algorithm",
                );
            }
            Some(algs)
        }
        None => None,
    };
    let userinfo = fields.take_bool(cx, "userinfo").unwrap_or(true);
    let pkce = fields.take_bool(cx, "pkce").unwrap_or(true);
    let username_claim = fields.take_str(cx, "username_claim").map(|(v, _)| v);
    let link_existing = match fields.take_str(cx, "link_existing") {
        None => LinkPolicy::Confirm,
        Some((value, span)) => match value.as_str() {
            "never" => LinkPolicy::Never,
            "confirm" => LinkPolicy::Confirm,
            "verified_email" => LinkPolicy::VerifiedEmail,
            _ => {
                cx.issue(
                    span,
                    &key("link_existing"),
                    "expected \"never\", \"confirm\" or \"verified_email\"",
                );
                LinkPolicy::Confirm
            }
        },
    };
    let trusted_email_domains = fields
        .take_str_list(cx, "trusted_email_domains")
        .unwrap_or_default();
    if link_existing == LinkPolicy::VerifiedEmail && trusted_email_domains.is_empty() {
        cx.issue(
            table_span.clone(),
            &key("trusted_email_domains"),
            "link_existing = \"verified_email\" needs the domains this IdP is authoritative for, e.g. [\"example.org\"]",
        );
    }
    let require_create_confirmation = fields
        .take_bool(cx, "require_create_confirmation")
        .unwrap_or(false);
    let accepted_audiences = fields
        .take_str_items(cx, "accepted_audiences")
        .unwrap_or_default();
    let previous_issuers = fields
        .take_str_list(cx, "previous_issuers")
        .unwrap_or_default();
    let authorize_params = match fields.take_table(cx, "authorize_params") {
        Some(mut table) => {
            let mut params = Vec::new();
            let names: Vec<String> = table
                .entries
                .iter()
                .map(|(k, _)| k.get_ref().to_string())
                .collect();
            for param in names {
                let span = table
                    .entries
                    .iter()
                    .find(|(k, _)| k.get_ref() == param.as_str())
                    .map(|(k, _)| k.span())
                    .unwrap_or(0..0);
                if let Some((value, _)) = table.take_str(cx, &param) {
                    if RESERVED_AUTHORIZE_PARAMS.contains(&param.as_str()) {
                        cx.issue(
                            span,
                            &format!("{}.{param}", table.prefix),
                            "this parameter is set by authnz itself and cannot be overridden",
                        );
                    } else {
                        params.push((param, value));
                    }
                }
            }
            table.finish(cx);
            params
        }
        None => Vec::new(),
    };

    // The rest belongs to the provider kind.
    let mut settings = TomlTable::new();
    let mut setting_spans = BTreeMap::new();
    for (setting, value) in std::mem::take(&mut fields.entries) {
        let setting_name = setting.get_ref().to_string();
        setting_spans.insert(setting_name.clone(), setting.span());
        let span = value.span();
        match to_toml(cx, &key(&setting_name), span, value.into_inner()) {
            Some(value) => {
                settings.insert(setting_name, value);
            }
            None => continue,
        }
    }

    let secret = match (client_secret, client_secret_file) {
        (Some(_), Some((_, span))) => {
            cx.issue(
                span,
                &key("client_secret_file"),
                "give either client_secret or client_secret_file, not both",
            );
            None
        }
        (Some((secret, _)), None) => Some(Secret::new(secret)),
        (None, Some((path, span))) => {
            let path = cx.resolve(&path);
            match std::fs::read_to_string(&path) {
                Ok(secret) => Some(Secret::new(secret.trim_end_matches(['\r', '\n']))),
                Err(err) => {
                    // A secret not yet provisioned makes the IdP unavailable, not the server.
                    let _ = span;
                    cx.mark_unavailable(format!(
                        "client_secret_file: cannot read {}: {err}",
                        path.display()
                    ));
                    None
                }
            }
        }
        (None, None) => None,
    };

    let kind = kind?;
    // Without its variables the entry cannot be built or fully checked; say why, and move on.
    if let Some(reason) = cx.missing_variable.clone().flatten() {
        return Some(IdpEntry::Unavailable(UnavailableIdp {
            label: label.unwrap_or_else(|| name.clone()),
            name,
            kind,
            reason,
        }));
    }
    let built = if kind == DYLIB_KIND {
        load_dylib(cx, name.clone(), settings)
    } else {
        let factory = registry.factory(&kind)?;
        factory(&ProviderSettings {
            name: name.clone(),
            settings,
        })
        .map(|provider| {
            (
                Arc::<dyn IdentityProvider>::from(provider),
                "built-in".to_string(),
            )
        })
    };
    let (provider, origin) = match built {
        Ok((provider, origin)) => (Some(provider), origin),
        Err(errors) => {
            for mut error in errors {
                // A misspelled core key reaches the provider as an unknown setting.
                if error.message.starts_with("unknown key") {
                    if let Some(close) = authnz_plugin::did_you_mean(
                        &error.key,
                        fields.known.iter().map(String::as_str),
                    ) {
                        error.message = format!("unknown key (did you mean `{close}`?)");
                    }
                }
                let span = setting_spans
                    .get(&error.key)
                    .cloned()
                    .unwrap_or_else(|| table_span.clone());
                cx.issue(span, &key(&error.key), error.message);
            }
            (None, String::new())
        }
    };
    // Keep validating without a provider, so that every problem is reported at once.
    let info = provider.as_ref().map(|p| p.describe()).unwrap_or_default();

    let issuer_url = if is_dev {
        if !is_loopback_host(&server.public_url) {
            cx.issue(
                table_span.clone(),
                &key("kind"),
                "the dev IdP lets anyone sign in as anyone: it is refused unless server.public_url is a loopback address",
            );
        }
        if !server.listen.ip().is_loopback() {
            cx.issue(
                table_span.clone(),
                &key("kind"),
                format!(
                    "the dev IdP lets anyone sign in as anyone: it is refused unless server.listen is a loopback address (it is {}, which anyone on the network can reach); remove [{prefix}] or listen on 127.0.0.1",
                    server.listen
                ),
            );
        }
        if let Some((_, span)) = &issuer {
            cx.issue(
                span.clone(),
                &key("issuer"),
                "the dev IdP's issuer is fixed below public_url",
            );
        }
        Some(server.url(DEV_IDP_PATH))
    } else {
        let (raw, span) = match (issuer, info.issuer.clone()) {
            (Some((raw, span)), _) => (raw, span),
            (None, Some(raw)) => (raw, table_span.clone()),
            (None, None) => {
                cx.issue(
                    table_span.clone(),
                    &key("issuer"),
                    format!("missing: kind {kind:?} needs issuer = \"https://...\""),
                );
                return None;
            }
        };
        match Url::parse(&raw) {
            Ok(url)
                if url.host().is_some()
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && (url.scheme() == "https"
                        || (url.scheme() == "http" && is_loopback_host(&url))) =>
            {
                Some(raw)
            }
            Ok(url) if url.scheme() == "http" => {
                cx.issue(
                    span,
                    &key("issuer"),
                    "http:// issuers are only allowed for loopback hosts; use https://",
                );
                None
            }
            _ => {
                cx.issue(
                    span,
                    &key("issuer"),
                    "expected an https:// URL without query or fragment",
                );
                None
            }
        }
    };

    let client_id = match (client_id, is_dev) {
        (Some((id, _)), _) if !id.is_empty() => Some(id),
        (Some((_, span)), _) => {
            cx.issue(span, &key("client_id"), "must not be empty");
            None
        }
        (None, true) => Some(crate::providers::dev::DEV_CLIENT_ID.to_string()),
        (None, false) if cx.is_unavailable() => None,
        (None, false) => {
            cx.issue(table_span.clone(), &key("client_id"), "missing");
            None
        }
    };
    let client_secret = if is_dev { None } else { secret };
    // Tokens addressed to our own client are ID tokens, never access tokens (SECURITY I72).
    for (audience, span) in &accepted_audiences {
        if client_id.as_deref() == Some(audience.as_str()) {
            cx.issue(
                span.clone(),
                &key("accepted_audiences"),
                "lists this entry's own client_id: tokens addressed to authnz are ID tokens, which are never accepted as access tokens; list the audience of your API instead",
            );
        }
    }
    let accepted_audiences: Vec<String> = accepted_audiences
        .into_iter()
        .map(|(audience, _)| audience)
        .collect();

    // OpenID providers always get `openid`; plain OAuth 2.0 providers (GitHub) do not know it.
    let mut all_scopes = if info.oauth2.is_some() {
        Vec::new()
    } else {
        vec!["openid".to_string()]
    };
    for scope in scopes
        .unwrap_or(info.scopes.clone())
        .into_iter()
        .chain(extra_scopes)
    {
        if !all_scopes.contains(&scope) {
            all_scopes.push(scope);
        }
    }

    Some(IdpEntry::Ready(Box::new(IdpConfig {
        label: label.unwrap_or_else(|| {
            if info.label.is_empty() {
                name.clone()
            } else {
                info.label.clone()
            }
        }),
        icon: icon.or(info.icon.clone()),
        name,
        kind,
        client_id: client_id?,
        client_secret,
        issuer: issuer_url?,
        scopes: all_scopes,
        prompt,
        id_token_algs,
        userinfo,
        authorize_params,
        pkce,
        username_claim,
        link_existing,
        trusted_email_domains,
        require_create_confirmation,
        accepted_audiences,
        previous_issuers,
        provider: provider?,
        origin,
    })))
}

/// Loads a `kind = "dylib"` provider: `path` (relative to the config file) names the library,
/// the other settings go to it.
fn load_dylib(
    cx: &Context,
    name: String,
    mut settings: TomlTable,
) -> Result<(Arc<dyn IdentityProvider>, String), Vec<authnz_plugin::ConfigError>> {
    let path = match settings.remove("path") {
        Some(TomlValue::String(path)) => cx.resolve(&path),
        Some(_) => {
            return Err(vec![authnz_plugin::ConfigError::new(
                "path",
                "expected a string",
            )])
        }
        None => {
            return Err(vec![authnz_plugin::ConfigError::new(
                "path",
                "missing: kind \"dylib\" needs path = \"/path/to/libprovider.so\"",
            )])
        }
    };
    let provider = crate::dylib::load(&path, &ProviderSettings { name, settings })?;
    let origin = format!(
        "{} (kind {}, authnz-plugin {})",
        path.display(),
        provider.describe().kind,
        provider.sdk_version()
    );
    Ok((Arc::new(provider), origin))
}

/// Converts a spanned TOML value into a plain one, expanding `${VAR}` in strings.
fn to_toml(cx: &mut Context, key: &str, span: Range<usize>, value: DeValue) -> Option<TomlValue> {
    Some(match value {
        DeValue::String(raw) => TomlValue::String(cx.expand(span, key, &raw)?),
        DeValue::Integer(int) => {
            let digits = int.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            match i64::from_str_radix(digits, int.radix()) {
                Ok(number) => TomlValue::Integer(number),
                Err(_) => {
                    cx.issue(span, key, "integer out of range");
                    return None;
                }
            }
        }
        DeValue::Float(float) => match float.as_str().replace('_', "").parse::<f64>() {
            Ok(number) => TomlValue::Float(number),
            Err(_) => {
                cx.issue(span, key, "invalid float");
                return None;
            }
        },
        DeValue::Boolean(flag) => TomlValue::Boolean(flag),
        DeValue::Datetime(datetime) => TomlValue::Datetime(datetime),
        DeValue::Array(items) => {
            let mut out = Vec::new();
            for item in items.iter() {
                out.push(to_toml(cx, key, item.span(), item.get_ref().clone())?);
            }
            TomlValue::Array(out)
        }
        DeValue::Table(table) => {
            let mut out = TomlTable::new();
            for (name, value) in table {
                let nested = format!("{key}.{}", name.get_ref());
                let span = value.span();
                out.insert(
                    name.into_inner().into_owned(),
                    to_toml(cx, &nested, span, value.into_inner())?,
                );
            }
            TomlValue::Table(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
        let env = |name: &str| match name {
            "CLIENT_SECRET" => Some("s3cret-value".to_string()),
            _ => None,
        };
        parse(Path::new("idps.toml"), text, &Registry::builtin(), &env)
    }

    fn issues(text: &str) -> Vec<String> {
        match parse_str(text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
public_url = "http://127.0.0.1:9000/"

[idps.corp]
kind = "oidc"
label = "Corp SSO"
issuer = "https://sso.example.org"
client_id = "authnz"
client_secret = "${CLIENT_SECRET}"

[idps.local]
kind = "oidc"
issuer = "http://127.0.0.1:4000"
client_id = "x"
"#;

    #[test]
    fn good_config_parses_in_order() -> Result<(), ConfigErrors> {
        let config = parse_str(GOOD)?;
        assert_eq!(config.server.public_url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(config.server.url("/a"), "http://127.0.0.1:9000/a");
        let names: Vec<_> = config.idps.iter().map(|idp| idp.name.as_str()).collect();
        assert_eq!(names, ["corp", "local"]);
        let corp = &config.idps[0];
        assert_eq!(
            corp.client_secret.as_ref().map(Secret::expose),
            Some("s3cret-value")
        );
        assert_eq!(corp.scopes, ["openid", "email", "profile"]);
        assert_eq!(corp.id_token_algs, None, "from discovery");
        assert!(
            !format!("{config:?}").contains("s3cret-value"),
            "secret in Debug"
        );
        Ok(())
    }

    #[test]
    fn every_error_is_reported_with_position_and_key() {
        let text = r#"
[server]
listen = "nonsense"
colour = "blue"
database = "${MISSING_DIR}/db"

[idps.corp]
kind = "oidcc"
issuer = "http://sso.example.org"
client_id = "authnz"
client_secret = "${MISSING_VAR}"

[idps.Bad]
kind = "oidc"
issuer = "https://x.example"
client_id = "a"
domain = "x"
"#;
        let found = issues(text);
        let expected = [
            "idps.toml:3:10: server.listen: expected an address like 127.0.0.1:8080",
            "idps.toml:4:1: server.colour: unknown key",
            "idps.toml:8:8: idps.corp.kind: unknown kind \"oidcc\" (did you mean \"oidc\"?)",
            "idps.toml:5:12: server.database: environment variable MISSING_DIR is not set",
            "idps.toml:13:7: idps.Bad: IdP names appear in URLs",
            "idps.toml:17:1: idps.Bad.domain: unknown key (this kind takes no settings of its own)",
        ];
        for want in expected {
            assert!(
                found.iter().any(|line| line.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn trusted_proxies_parse_and_a_bad_one_is_named_where_it_stands() {
        let config = parse_str(
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n\n[idps.dev]\nkind = \"dev\"\n",
        );
        let proxies = config
            .map(|config| config.server.trusted_proxies)
            .unwrap_or_default();
        assert_eq!(proxies.len(), 3);
        assert!(proxies[1].contains("10.9.8.7".parse().unwrap()));
        let found = issues("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/33\"]\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("idps.toml:2:33: server.trusted_proxies: \"10.0.0.0/33\": the prefix length must be 0 to 32"),
            "{found:?}"
        );
        let found = issues("[server]\ntrusted_proxies = \"127.0.0.1\"\n");
        assert!(
            found[0]
                .starts_with("idps.toml:2:19: server.trusted_proxies: expected a list of strings"),
            "{found:?}"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let found = issues("[server]\nlisten = \n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("idps.toml:2:"), "{found:?}");
    }

    #[test]
    fn http_issuer_only_on_loopback() {
        let text = |issuer: &str| {
            format!("[idps.a]\nkind = \"oidc\"\nissuer = \"{issuer}\"\nclient_id = \"c\"\n")
        };
        for ok in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://[::1]:3000",
            "https://idp.example",
        ] {
            assert!(
                issues(&text(ok)).is_empty(),
                "{ok}: {:?}",
                issues(&text(ok))
            );
        }
        for bad in [
            "http://idp.example",
            "http://10.0.0.1",
            "ftp://x",
            "https://idp.example/?a=b",
        ] {
            let found = issues(&text(bad));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert!(found[0].contains("idps.a.issuer"), "{found:?}");
        }
    }

    #[test]
    fn dev_idp_refused_off_loopback() {
        let found = issues(
            "[server]\npublic_url = \"https://login.example.org\"\n[idps.dev]\nkind = \"dev\"\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("loopback"), "{found:?}");
        assert!(issues("[idps.dev]\nkind = \"dev\"\n").is_empty());
        // SECURITY I70: a wildcard listener with the loopback public_url it defaults to.
        for listen in ["0.0.0.0:8080", "[::]:8080"] {
            let found = issues(&format!(
                "[server]\nlisten = \"{listen}\"\n\n[idps.dev]\nkind = \"dev\"\n"
            ));
            assert_eq!(found.len(), 1, "{listen}: {found:?}");
            assert!(
                found[0].starts_with("idps.toml:4:1: idps.dev.kind:")
                    && found[0].contains("server.listen"),
                "{found:?}"
            );
        }
        assert!(
            issues("[server]\nlisten = \"[::1]:8080\"\n[idps.dev]\nkind = \"dev\"\n").is_empty()
        );
    }

    #[test]
    fn secrets_are_never_in_errors() {
        let found = issues(
            "[idps.a]\nkind = \"oidc\"\nissuer = \"https://i.example\"\nclient_id = \"c\"\nclient_secret = \"${CLIENT_SECRET}\"\nclient_secret_file = \"/nonexistent\"\n",
        );
        assert!(!found.is_empty());
        assert!(
            found.iter().all(|line| !line.contains("s3cret-value")),
            "{found:?}"
        );
    }

    #[test]
    fn reserved_authorize_params_are_refused() {
        let found = issues(
            "[idps.a]\nkind = \"oidc\"\nissuer = \"https://i.example\"\nclient_id = \"c\"\n[idps.a.authorize_params]\nredirect_uri = \"https://evil\"\naccess_type = \"offline\"\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("idps.a.authorize_params.redirect_uri"),
            "{found:?}"
        );
    }

    #[test]
    fn variable_defaults_and_secret_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-file\n")?;
        let text = format!(
            "[idps.a]\nkind = \"oidc\"\nissuer = \"${{ISSUER:-https://d.example}}\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
            secret.display()
        );
        let config = parse_str(&text)?;
        assert_eq!(config.idps[0].issuer, "https://d.example");
        assert_eq!(
            config.idps[0].client_secret.as_ref().map(Secret::expose),
            Some("from-file")
        );
        Ok(())
    }

    #[test]
    fn missing_credentials_make_an_idp_unavailable_not_the_config() -> Result<(), ConfigErrors> {
        let config = parse_str(
            "[idps.okta]\nkind = \"oidc\"\nlabel = \"Okta\"\nissuer = \"https://o.example\"\nclient_id = \"${OKTA_CLIENT_ID}\"\nclient_secret = \"${CLIENT_SECRET}\"\n\n[idps.files]\nkind = \"oidc\"\nissuer = \"https://f.example\"\nclient_id = \"c\"\nclient_secret_file = \"/nonexistent/secret\"\n\n[idps.dev]\nkind = \"dev\"\n",
        )?;
        assert_eq!(config.idps.len(), 1);
        assert_eq!(config.idps[0].name, "dev");
        let reasons: Vec<_> = config
            .unavailable
            .iter()
            .map(|idp| (idp.name.as_str(), idp.label.as_str(), idp.reason.as_str()))
            .collect();
        assert_eq!(
            reasons[0],
            (
                "okta",
                "Okta",
                "idps.okta.client_id: environment variable OKTA_CLIENT_ID is not set"
            )
        );
        assert_eq!(reasons[1].0, "files");
        assert!(
            reasons[1]
                .2
                .starts_with("client_secret_file: cannot read /nonexistent/secret"),
            "{reasons:?}"
        );
        assert!(!format!("{config:?}").contains("s3cret-value"));
        Ok(())
    }

    #[test]
    fn exact_messages_with_suggestions() {
        let text = "[server]\nlisten = 8080\npublic_ur = \"http://127.0.0.1:8080\"\n\n[idps.okta]\nkind = \"okta\"\ndomian = \"o.okta.com\"\nclient_id = \"c\"\nclient_secert = \"s\"\n\n[idps.g]\nkind = \"gogle\"\nclient_id = \"c\"\n";
        let found = issues(text);
        let expected = [
            "idps.toml:2:10: server.listen: expected a string",
            "idps.toml:3:1: server.public_ur: unknown key (did you mean `public_url`?)",
            "idps.toml:7:1: idps.okta.domian: unknown key (did you mean `domain`?)",
            "idps.toml:9:1: idps.okta.client_secert: unknown key (did you mean `client_secret`?)",
            "idps.toml:12:8: idps.g.kind: unknown kind \"gogle\" (did you mean \"google\"?)",
        ];
        for want in expected {
            assert!(
                found.iter().any(|line| line == want),
                "missing {want:?} in {found:#?}"
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_text_gives_a_config_or_located_errors(text in any::<String>()) {
                if let Err(errors) = parse_str(&text) {
                    prop_assert!(!errors.0.is_empty());
                    for issue in errors.0 {
                        prop_assert!(issue.line >= 1 && issue.column >= 1, "{issue}");
                    }
                }
            }

            #[test]
            fn toml_shaped_input_never_panics(
                entries in proptest::collection::vec(("[a-z_]{1,12}", "[a-z_]{1,16}", prop_oneof![
                    Just("\"oidc\"".to_string()), Just("\"dev\"".to_string()), Just("42".to_string()),
                    Just("true".to_string()), Just("[\"a\", 1]".to_string()), Just("\"${X}\"".to_string()),
                    Just("\"https://i.example\"".to_string()), Just("{ a = 1 }".to_string()),
                ]), 0..12)
            ) {
                let mut text = String::new();
                for (table, key, value) in entries {
                    text.push_str(&format!("[idps.{table}]\n{key} = {value}\n"));
                }
                let _ = parse_str(&text);
            }
        }
    }
}

//! `idps.toml`: parsing, secret resolution and validation into the internal [`Config`].
//!
//! The file is parsed into a spanned TOML tree so that every problem can name the file, line,
//! column and key. Validation collects *every* problem and reports them together. The rest of
//! the program never sees the raw file: it gets a [`Config`] whose values are already checked.
//! Secrets (`client_secret`, `${VAR}` values) are wrapped in [`Secret`] so that `Debug` and error
//! messages never print them.
//!
//! The parts: `fields` reads the spanned tree (positions, `${VAR}`, unknown keys), `server` the
//! `[server]` table, `idp` one `[idps.<name>]` entry, with `common` (the keys every kind takes)
//! and `provider` (the kind's factory or library); this module ties them together.

mod apps;
mod branding;
mod common;
mod fields;
mod idp;
mod provider;
mod server;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use url::Url;

use crate::registry::Registry;
pub use crate::registry::DYLIB_KIND;
pub use apps::{Anonymous, AppConfig, HeaderPreset, MAX_ASSERTION_TTL};
pub use branding::{hex_color, text_on, Branding, Logo};
use fields::{Context, Fields};
use idp::{idp_config, IdpEntry};
pub use idp::{ClientAuth, IdpConfig, LinkPolicy, Par, RESERVED_AUTHORIZE_PARAMS, SUPPORTED_ALGS};
use server::server_config;
pub use server::{AdminRef, DbTls, Migrate, PostgresConfig, ServerConfig};

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
    /// The first 16 hex digits of the SHA-256 of its text (before `${VAR}` expansion): equal
    /// on replicas that loaded the same file.
    pub digest: String,
    pub server: ServerConfig,
    /// The IdPs in file order (the order of the login buttons).
    pub idps: Vec<IdpConfig>,
    /// `[apps.<name>]`: the applications that ask `/authnz/auth` who is signed in.
    pub apps: Vec<AppConfig>,
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

impl Config {
    /// The app of `?app=<name>`.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|app| app.name == name)
    }

    /// Each entry's issuer, by entry name.
    pub fn issuers(&self) -> BTreeMap<String, String> {
        self.idps
            .iter()
            .map(|idp| (idp.name.clone(), idp.issuer.clone()))
            .collect()
    }
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
    let apps_table = root.take_table(&mut cx, "apps");
    root.finish(&mut cx);

    let server = server_config(&mut cx, server_table);
    let mut idps = Vec::new();
    let mut unavailable = Vec::new();
    let mut idp_names = std::collections::BTreeSet::new();
    if let Some(idps_table) = idps_table {
        for (name, value) in idps_table.entries {
            let key = format!("idps.{}", name.get_ref());
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            idp_names.insert(name.clone());
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
    let apps = apps::apps_config(&mut cx, apps_table, &server, &idp_names);
    if cx.issues.is_empty() {
        Ok(Config {
            source: path.to_path_buf(),
            digest: {
                use sha2::Digest;
                crate::crypto::hex(&sha2::Sha256::digest(text.as_bytes())[..8])
            },
            server,
            idps,
            apps,
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

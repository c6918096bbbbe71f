//! One `[idps.<name>]` entry: the keys every kind takes, then the kind's own settings, which
//! its factory (or a library, for `dylib`) validates, then what the two decide together.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use authnz_plugin::{IdentityProvider, ProviderSettings, TomlTable, TomlValue};
use toml::Spanned;
use url::Url;

use super::fields::{to_toml, Context, Fields};
use super::{is_loopback_host, Secret, ServerConfig, UnavailableIdp, DEV_IDP_PATH};
use crate::registry::{Registry, DEV_KIND, DYLIB_KIND};

/// What one entry gives: a provider to serve, or one that waits for its credentials.
pub(super) enum IdpEntry {
    Ready(Box<IdpConfig>),
    Unavailable(UnavailableIdp),
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

pub(super) fn idp_config(
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

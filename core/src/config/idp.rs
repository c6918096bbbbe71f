//! One `[idps.<name>]` entry: the keys every kind takes, then the kind's own settings, which
//! its factory (or a library, for `dylib`) validates, then what the two decide together.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use authnz_plugin::{IdentityProvider, ProviderInfo, TomlTable};
use url::Url;

use super::common::common_keys;
use super::fields::{to_toml, Context, Fields, Place};
use super::provider::{build, report_refusals};
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
    /// How authnz authenticates itself at the token endpoint (and for PAR and revocation).
    pub client_auth: ClientAuth,
    /// The key of `private_key_jwt`.
    pub client_key: Option<Arc<crate::client_key::ClientKey>>,
    /// Whether authorization requests are pushed (RFC 9126).
    pub par: Par,
    /// `response_mode = "form_post"`: the IdP posts the browser back to the callback.
    pub form_post: bool,
    /// `dpop = true`: the identity's tokens are bound to a key of its own (RFC 9449).
    pub dpop: bool,
    /// Client assertions name the issuer as their audience, not the token endpoint.
    pub assertion_audience_issuer: bool,
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
    /// The claim to record the person's groups from at every login; `None`: the provider's
    /// own mapping, else the `groups` claim.
    pub groups_claim: Option<String>,
    /// What a first login whose verified email belongs to an existing account does.
    pub link_existing: LinkPolicy,
    /// Email domains this IdP is authoritative for (the only ones `verified_email` links).
    pub trusted_email_domains: Vec<String>,
    /// Whether a first login asks the person to confirm before an account is created.
    pub require_create_confirmation: bool,
    /// Whether one account may connect several accounts of this IdP (a personal and a work
    /// one); otherwise an account has at most one identity here.
    pub several_accounts: bool,
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

/// `par`: whether authorization requests are pushed to the IdP (RFC 9126).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Par {
    /// When discovery has a `pushed_authorization_request_endpoint` (default).
    Auto,
    /// Always; an IdP without the endpoint cannot start a sign-in.
    Always,
    /// Never, unless the IdP requires it (then a sign-in cannot start).
    Never,
}

/// `client_auth`: how authnz authenticates itself to the IdP (RFC 6749 §2.3, OIDC Core §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Not configured: HTTP Basic with the secret, unless the IdP's discovery lists only
    /// `client_secret_post` (or the kind is plain OAuth 2.0), then the secret in the body;
    /// without a secret, the client id alone.
    Auto,
    SecretBasic,
    SecretPost,
    /// An HS256 assertion made with the secret (RFC 7523).
    SecretJwt,
    /// An assertion signed with `client_key_file` (RFC 7523).
    PrivateKeyJwt,
    /// A public client: the client id alone.
    None,
}

impl ClientAuth {
    /// The name discovery's `token_endpoint_auth_methods_supported` uses; `None` for `Auto`.
    pub fn method(self) -> Option<&'static str> {
        match self {
            Self::Auto => None,
            Self::SecretBasic => Some("client_secret_basic"),
            Self::SecretPost => Some("client_secret_post"),
            Self::SecretJwt => Some("client_secret_jwt"),
            Self::PrivateKeyJwt => Some("private_key_jwt"),
            Self::None => Some("none"),
        }
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
    let at = Place {
        prefix: fields.prefix.clone(),
        span: fields.span.clone(),
    };
    // From here, an unset variable makes this entry unavailable rather than the config invalid.
    cx.missing_variable = Some(None);
    let entry = idp_entry(cx, registry, server, name, &mut fields, &at);
    cx.missing_variable = None;
    entry
}

/// One entry, step by step; each step reports its own problems, in this order.
fn idp_entry(
    cx: &mut Context,
    registry: &Registry,
    server: &ServerConfig,
    name: String,
    fields: &mut Fields,
    at: &Place,
) -> Option<IdpEntry> {
    let kind = kind(cx, registry, fields, at);
    let is_dev = kind.as_deref() == Some(DEV_KIND);
    let mut common = common_keys(cx, fields, at);
    let settings = kind_settings(cx, fields, at);
    let secret = client_secret(
        cx,
        common.client_secret.take(),
        common.client_secret_file.take(),
        at,
    );

    let (client_auth, client_key) = client_auth(cx, &mut common, secret.is_some(), at);

    let kind = kind?;
    // Without its variables the entry cannot be built or fully checked; say why, and move on.
    if let Some(reason) = cx.missing_variable.clone().flatten() {
        return Some(IdpEntry::Unavailable(UnavailableIdp {
            label: common.label.unwrap_or_else(|| name.clone()),
            name,
            kind,
            reason,
        }));
    }
    let (provider, origin) = match build(cx, registry, &kind, &name, settings.table)? {
        Ok((provider, origin)) => (Some(provider), origin),
        Err(errors) => {
            report_refusals(cx, errors, &settings.spans, &fields.known, at);
            (None, String::new())
        }
    };
    // Keep validating without a provider, so that every problem is reported at once.
    let info = provider.as_ref().map(|p| p.describe()).unwrap_or_default();

    let issuer = if is_dev {
        dev_issuer(cx, server, common.issuer.as_ref(), at)
    } else {
        let (raw, span) = issuer_source(cx, &kind, common.issuer.take(), info.issuer.clone(), at)?;
        checked_issuer(cx, raw, span, at)
    };
    let client_id = client_id(cx, common.client_id.take(), is_dev, at);
    let client_secret = if is_dev { None } else { secret };
    let accepted_audiences = accepted_audiences(
        cx,
        std::mem::take(&mut common.accepted_audiences),
        client_id.as_deref(),
        at,
    );
    let scopes = all_scopes(&info, common.scopes.take(), &common.extra_scopes);
    if common.dpop && info.oauth2.is_some() {
        cx.issue(
            at.span.clone(),
            &at.key("dpop"),
            format!("dpop needs an OpenID provider; kind \"{kind}\" is plain OAuth 2.0"),
        );
    }

    Some(IdpEntry::Ready(Box::new(IdpConfig {
        label: common.label.unwrap_or_else(|| {
            if info.label.is_empty() {
                name.clone()
            } else {
                info.label.clone()
            }
        }),
        icon: common.icon.or(info.icon.clone()),
        name,
        kind,
        client_id: client_id?,
        client_secret,
        client_auth,
        client_key,
        par: common.par,
        form_post: common.form_post,
        dpop: common.dpop,
        assertion_audience_issuer: common.assertion_audience_issuer,
        issuer: issuer?,
        scopes,
        prompt: common.prompt,
        id_token_algs: common.id_token_algs,
        userinfo: common.userinfo,
        authorize_params: common.authorize_params,
        pkce: common.pkce,
        username_claim: common.username_claim,
        groups_claim: common.groups_claim,
        link_existing: common.link_existing,
        trusted_email_domains: common.trusted_email_domains,
        require_create_confirmation: common.require_create_confirmation,
        several_accounts: common.several_accounts,
        accepted_audiences,
        previous_issuers: common.previous_issuers,
        provider: provider?,
        origin,
    })))
}

/// `kind`: a registered kind or `dylib`; `None` (reported) when missing or unknown.
fn kind(cx: &mut Context, registry: &Registry, fields: &mut Fields, at: &Place) -> Option<String> {
    match fields.take_str(cx, "kind") {
        Some((kind, span)) => {
            if kind != DYLIB_KIND && registry.factory(&kind).is_none() {
                cx.issue(
                    span,
                    &at.key("kind"),
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
                at.span.clone(),
                &at.key("kind"),
                "missing (e.g. kind = \"oidc\")",
            );
            None
        }
    }
}

/// The keys left for the kind, as plain TOML, and where each key stands.
struct KindSettings {
    table: TomlTable,
    spans: BTreeMap<String, Range<usize>>,
}

/// What is left of the entry belongs to the provider kind.
fn kind_settings(cx: &mut Context, fields: &mut Fields, at: &Place) -> KindSettings {
    let mut table = TomlTable::new();
    let mut spans = BTreeMap::new();
    for (setting, value) in std::mem::take(&mut fields.entries) {
        let setting_name = setting.get_ref().to_string();
        spans.insert(setting_name.clone(), setting.span());
        let span = value.span();
        if let Some(value) = to_toml(cx, &at.key(&setting_name), span, value.into_inner()) {
            table.insert(setting_name, value);
        }
    }
    KindSettings { table, spans }
}

/// `client_auth` with what it needs: a secret for the secret methods, none for `none`, the key
/// of `client_key_file` (and `client_certificate_file`) for `private_key_jwt` and for it alone.
/// A key file that cannot be read makes the entry unavailable, like a secret file.
fn client_auth(
    cx: &mut Context,
    common: &mut super::common::CommonKeys,
    has_secret: bool,
    at: &Place,
) -> (ClientAuth, Option<Arc<crate::client_key::ClientKey>>) {
    let (auth, span) = common
        .client_auth
        .take()
        .unwrap_or((ClientAuth::Auto, at.span.clone()));
    let key_file = common.client_key_file.take();
    let alg = common.client_key_alg.take();
    let certificate = common.client_certificate_file.take();
    if auth != ClientAuth::PrivateKeyJwt {
        for (name, value) in [
            ("client_key_file", &key_file),
            ("client_key_alg", &alg),
            ("client_certificate_file", &certificate),
        ] {
            if let Some((_, span)) = value {
                cx.issue(
                    span.clone(),
                    &at.key(name),
                    format!("{name} is for client_auth = \"private_key_jwt\""),
                );
            }
        }
    }
    match auth {
        ClientAuth::SecretBasic | ClientAuth::SecretPost | ClientAuth::SecretJwt
            if !has_secret && cx.missing_variable.clone().flatten().is_none() =>
        {
            cx.issue(
                span.clone(),
                &at.key("client_auth"),
                format!(
                    "{} needs client_secret or client_secret_file",
                    auth.method().unwrap_or_default()
                ),
            );
        }
        ClientAuth::None | ClientAuth::PrivateKeyJwt if has_secret => {
            cx.issue(
                span.clone(),
                &at.key("client_auth"),
                format!(
                    "{} sends no secret: remove client_secret",
                    auth.method().unwrap_or_default()
                ),
            );
        }
        _ => {}
    }
    if auth != ClientAuth::PrivateKeyJwt {
        return (auth, None);
    }
    let Some((path, path_span)) = key_file else {
        cx.issue(
            span,
            &at.key("client_key_file"),
            "private_key_jwt needs client_key_file, a PKCS#8 PEM file of a P-256 or RSA key",
        );
        return (auth, None);
    };
    let path = cx.resolve(&path);
    let loaded = crate::client_key::ClientKey::load(&path, alg.as_ref().map(|(a, _)| a.as_str()))
        .and_then(|key| match &certificate {
            Some((file, _)) => key.with_certificate(&cx.resolve(file)),
            None => Ok(key),
        });
    match loaded {
        Ok(key) => (auth, Some(Arc::new(key))),
        Err(crate::signing::SigningKeyError::Unreadable { path, reason }) => {
            cx.mark_unavailable(format!("cannot read {}: {reason}", path.display()));
            (auth, None)
        }
        Err(err) => {
            let (span, key) = match (&err, &certificate) {
                (
                    crate::signing::SigningKeyError::Invalid { path: bad, .. },
                    Some((file, span)),
                ) if *bad == cx.resolve(file) => (span.clone(), "client_certificate_file"),
                _ => (path_span, "client_key_file"),
            };
            cx.issue(span, &at.key(key), err.to_string());
            (auth, None)
        }
    }
}

/// `client_secret` or the contents of `client_secret_file`, never both. A file that cannot be
/// read makes the entry unavailable: a secret not yet provisioned must not stop the server.
fn client_secret(
    cx: &mut Context,
    client_secret: Option<(String, Range<usize>)>,
    client_secret_file: Option<(String, Range<usize>)>,
    at: &Place,
) -> Option<Secret> {
    match (client_secret, client_secret_file) {
        (Some(_), Some((_, span))) => {
            cx.issue(
                span,
                &at.key("client_secret_file"),
                "give either client_secret or client_secret_file, not both",
            );
            None
        }
        (Some((secret, _)), None) => Some(Secret::new(secret)),
        (None, Some((path, _))) => {
            let path = cx.resolve(&path);
            match std::fs::read_to_string(&path) {
                Ok(secret) => Some(Secret::new(secret.trim_end_matches(['\r', '\n']))),
                Err(err) => {
                    cx.mark_unavailable(format!(
                        "client_secret_file: cannot read {}: {err}",
                        path.display()
                    ));
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// The dev IdP's issuer, fixed below `public_url`; the dev IdP lets anyone sign in as anyone,
/// so it is refused unless the server is reachable from this machine alone.
fn dev_issuer(
    cx: &mut Context,
    server: &ServerConfig,
    configured: Option<&(String, Range<usize>)>,
    at: &Place,
) -> Option<String> {
    if !is_loopback_host(&server.public_url) {
        cx.issue(
            at.span.clone(),
            &at.key("kind"),
            "the dev IdP lets anyone sign in as anyone: it is refused unless server.public_url is a loopback address",
        );
    }
    if !server.listen.ip().is_loopback() {
        cx.issue(
            at.span.clone(),
            &at.key("kind"),
            format!(
                "the dev IdP lets anyone sign in as anyone: it is refused unless server.listen is a loopback address (it is {}, which anyone on the network can reach); remove [{}] or listen on 127.0.0.1",
                server.listen, at.prefix
            ),
        );
    }
    if let Some((_, span)) = configured {
        cx.issue(
            span.clone(),
            &at.key("issuer"),
            "the dev IdP's issuer is fixed below public_url",
        );
    }
    Some(server.url(DEV_IDP_PATH))
}

/// The issuer as configured, else as the kind describes it, with where to report its
/// problems; `None` (reported) when there is neither.
fn issuer_source(
    cx: &mut Context,
    kind: &str,
    configured: Option<(String, Range<usize>)>,
    described: Option<String>,
    at: &Place,
) -> Option<(String, Range<usize>)> {
    match (configured, described) {
        (Some((raw, span)), _) => Some((raw, span)),
        (None, Some(raw)) => Some((raw, at.span.clone())),
        (None, None) => {
            cx.issue(
                at.span.clone(),
                &at.key("issuer"),
                format!("missing: kind {kind:?} needs issuer = \"https://...\""),
            );
            None
        }
    }
}

/// `raw` if it is an https issuer (http on loopback) without query or fragment. Kept exactly
/// as written: ID tokens must carry this very string.
fn checked_issuer(cx: &mut Context, raw: String, span: Range<usize>, at: &Place) -> Option<String> {
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
                &at.key("issuer"),
                "http:// issuers are only allowed for loopback hosts; use https://",
            );
            None
        }
        _ => {
            cx.issue(
                span,
                &at.key("issuer"),
                "expected an https:// URL without query or fragment",
            );
            None
        }
    }
}

/// `client_id`: required and not empty, but for the dev IdP (its own) and for an entry that
/// is unavailable anyway.
fn client_id(
    cx: &mut Context,
    client_id: Option<(String, Range<usize>)>,
    is_dev: bool,
    at: &Place,
) -> Option<String> {
    match (client_id, is_dev) {
        (Some((id, _)), _) if !id.is_empty() => Some(id),
        (Some((_, span)), _) => {
            cx.issue(span, &at.key("client_id"), "must not be empty");
            None
        }
        (None, true) => Some(crate::providers::dev::DEV_CLIENT_ID.to_string()),
        (None, false) if cx.is_unavailable() => None,
        (None, false) => {
            cx.issue(at.span.clone(), &at.key("client_id"), "missing");
            None
        }
    }
}

/// `accepted_audiences`, without our own client id: tokens addressed to our own client are ID
/// tokens, never access tokens (SECURITY I72).
fn accepted_audiences(
    cx: &mut Context,
    audiences: Vec<(String, Range<usize>)>,
    client_id: Option<&str>,
    at: &Place,
) -> Vec<String> {
    for (audience, span) in &audiences {
        if client_id == Some(audience.as_str()) {
            cx.issue(
                span.clone(),
                &at.key("accepted_audiences"),
                "lists this entry's own client_id: tokens addressed to authnz are ID tokens, which are never accepted as access tokens; list the audience of your API instead",
            );
        }
    }
    audiences
        .into_iter()
        .map(|(audience, _)| audience)
        .collect()
}

/// Every scope to request: `openid` first for OpenID providers (plain OAuth 2.0 providers
/// such as GitHub do not know it), then `scopes` (else the kind's), then `extra_scopes`, each
/// once.
fn all_scopes(info: &ProviderInfo, scopes: Option<Vec<String>>, extra: &[String]) -> Vec<String> {
    let mut all = if info.oauth2.is_some() {
        Vec::new()
    } else {
        vec!["openid".to_string()]
    };
    for scope in scopes
        .unwrap_or(info.scopes.clone())
        .into_iter()
        .chain(extra.iter().cloned())
    {
        if !all.contains(&scope) {
            all.push(scope);
        }
    }
    all
}

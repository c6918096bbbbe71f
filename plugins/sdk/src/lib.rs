//! The provider SDK of authnz.
//!
//! A provider *describes* its identity provider (where it lives, which scopes and authorize
//! parameters it wants) and *maps* claims that authnz has already verified to a local identity.
//! It never sees a raw token and never does protocol work: discovery, PKCE, state, nonce and
//! every signature and claim check stay in the authnz core, so a provider is a page of mapping
//! code. The same trait serves built-in providers and providers loaded from shared libraries.
//!
//! This crate depends on no web framework, database or async runtime on purpose: a plugin
//! author depends on it alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod abi;
mod icon;
mod kind;
mod validate;

pub use icon::{mark, svg_icon};
pub use kind::{no_settings, settings_schema, Kind, SettingsSchema};
pub use validate::{base_url, is_guid, is_host_name};

pub use serde_json::{Map as JsonMap, Value as JsonValue};
pub use toml::{Table as TomlTable, Value as TomlValue};
/// Re-exported so that a kind's settings type needs no dependency but this SDK: derive with
/// `#[serde(crate = "authnz_plugin::serde")]` and `#[schemars(crate = "authnz_plugin::schemars")]`.
pub use {schemars, serde};

/// An identity provider as authnz sees it: description plus claim mapping. Synchronous, no I/O.
pub trait IdentityProvider: Send + Sync {
    /// Where the IdP lives and how to talk to it.
    fn describe(&self) -> ProviderInfo;

    /// Extra authorize-request parameters (`hd`, `kc_idp_hint`, `access_type`, ...).
    ///
    /// The core owns `response_type`, `client_id`, `redirect_uri`, `scope`, `state`, `nonce`
    /// and the PKCE parameters: a provider that returns one of those is ignored for that name.
    fn authorize_params(&self, _ctx: &LoginContext) -> Vec<(String, String)> {
        Vec::new()
    }

    /// [`IdentityProvider::authorize_params`], or why they could not be made. The core calls
    /// this one and refuses to start the login on an error (fail closed: a parameter such as
    /// `hd` may be what keeps the wrong people out). Providers that cannot fail keep the default.
    fn try_authorize_params(&self, ctx: &LoginContext) -> Result<Vec<(String, String)>, String> {
        Ok(self.authorize_params(ctx))
    }

    /// Maps verified claims to a local identity, or denies the login (403) with a reason
    /// that is safe to show to the person logging in.
    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError>;
}

/// Builds a provider from the kind-specific settings of one `[idps.<name>]` entry: every key
/// the core does not own. A factory must reject keys it does not know.
pub type Factory =
    fn(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>>;

/// What a factory receives.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The `<name>` of `[idps.<name>]`.
    pub name: String,
    /// The kind-specific keys, secrets already resolved out of them by the core.
    pub settings: TomlTable,
}

impl ProviderSettings {
    /// Errors for every key of `settings` that is not in `known`.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<ConfigError> {
        self.settings
            .keys()
            .filter(|key| !known.contains(&key.as_str()))
            .map(|key| {
                let hint = match did_you_mean(key, known.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None if known.is_empty() => {
                        "this kind takes no settings of its own".to_string()
                    }
                    None => format!("this kind knows: {}", known.join(", ")),
                };
                ConfigError::new(key, format!("unknown key ({hint})"))
            })
            .collect()
    }

    /// A required string setting.
    pub fn required_str(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
        match self.settings.get(key) {
            Some(TomlValue::String(value)) if !value.trim().is_empty() => Some(value.clone()),
            Some(TomlValue::String(_)) => {
                errors.push(ConfigError::new(key, "must not be empty"));
                None
            }
            Some(_) => {
                errors.push(ConfigError::new(key, "expected a string"));
                None
            }
            None => {
                errors.push(ConfigError::new(key, "missing (required for this kind)"));
                None
            }
        }
    }

    /// An optional string setting.
    pub fn optional_str(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
        match self.settings.get(key) {
            Some(TomlValue::String(value)) => Some(value.clone()),
            Some(_) => {
                errors.push(ConfigError::new(key, "expected a string"));
                None
            }
            None => None,
        }
    }

    /// A required [`base_url`] setting, without its trailing slash.
    pub fn required_base_url(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
        let raw = self.required_str(key, errors)?;
        checked_base_url(key, &raw, errors)
    }

    /// An optional [`base_url`] setting, without its trailing slash.
    pub fn optional_base_url(&self, key: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
        let raw = self.optional_str(key, errors)?;
        checked_base_url(key, &raw, errors)
    }
}

/// `raw` as a [`base_url`], or its error under `key`.
fn checked_base_url(key: &str, raw: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    base_url(raw)
        .map_err(|message| errors.push(ConfigError::new(key, message)))
        .ok()
}

/// The candidate closest to `word` (case-insensitive edit distance at most 2, and less than
/// half its length), for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&word, &candidate.to_lowercase()), candidate))
        .filter(|(distance, _)| *distance <= 2 && *distance * 2 < word.chars().count().max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, with adjacent transpositions counting one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// A configuration problem in one kind-specific key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key inside `[idps.<name>]` the problem is about.
    pub key: String,
    /// What is wrong, and where possible how to fix it. Never contains a secret.
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// How a provider describes its IdP.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// The provider kind, e.g. `oidc`, `okta`.
    pub kind: String,
    /// The issuer to discover (`<issuer>/.well-known/openid-configuration`), when the kind
    /// derives one from its settings. `issuer = "..."` in the config overrides it.
    pub issuer: Option<String>,
    /// Scopes the provider needs besides `openid`.
    pub scopes: Vec<String>,
    /// Default button label when the config gives none.
    pub label: String,
    /// Default button icon when the config gives none: an `https://`, `/` or `data:image/` URL,
    /// typically the brand's mark from [`svg_icon`] or [`mark`]. `None`: a badge with the
    /// label's initial in the kind's colour.
    pub icon: Option<String>,
    /// Multi-tenant IdPs (Microsoft Entra `common` / `organizations`): discovery's `issuer`
    /// equals this template literally, and each ID token's `iss` must equal it with
    /// `{tenantid}` replaced by the token's own `tid` claim, which must be a GUID. `None`: `iss` must equal the issuer.
    pub issuer_template: Option<String>,
    /// OAuth 2.0 providers without OpenID Connect (GitHub): explicit endpoints and the API
    /// calls whose JSON answers name the user. `None` for OpenID providers (discovery).
    pub oauth2: Option<OAuth2Endpoints>,
}

/// Where a plain OAuth 2.0 provider lives. The core runs the code flow (state, PKCE), then
/// calls each [`ApiCall`] with the access token and hands the answers to `map_identity` as
/// claims named by [`ApiCall::claim`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OAuth2Endpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    /// Called in order; an answer that is not 2xx JSON fails the login (502).
    pub api_calls: Vec<ApiCall>,
    /// Where the token endpoint's answer keeps the tokens, for a provider that does not answer
    /// as RFC 6749 §5.1 says (Tapis nests them). `None`: the standard answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_answer: Option<TokenAnswer>,
}

/// JSON pointers (RFC 6901) into a non-standard token answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenAnswer {
    /// The access token, e.g. `/result/access_token/access_token`.
    pub access_token: String,
    /// Its lifetime in seconds, if the answer says.
    pub expires_in: Option<String>,
    /// The refresh token, if the answer has one.
    pub refresh_token: Option<String>,
}

/// One authenticated API call of an OAuth 2.0 provider.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApiCall {
    /// The claim name its JSON answer is stored under, e.g. `user`, `emails`.
    pub claim: String,
    /// An https URL (or http on loopback, for tests).
    pub url: String,
    /// The header that carries the access token as it is (Tapis: `X-Tapis-Token`). `None`:
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_header: Option<String>,
}

/// What the core knows about a login when it asks for authorize parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginContext {
    /// The `<name>` of the IdP entry.
    pub idp: String,
}

/// Claims that the core has verified: the ID token's claims, merged with userinfo claims
/// whose `sub` matched the ID token's. For OAuth 2.0 providers (no ID token), `subject` is
/// empty and `claims` holds the answers of the provider's API calls, fetched over TLS with the
/// access token the provider's token endpoint issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedClaims {
    /// The verified `iss`.
    pub issuer: String,
    /// The verified `sub`.
    pub subject: String,
    /// Every claim, ID token first, userinfo filling in what the ID token lacks.
    pub claims: JsonMap<String, JsonValue>,
}

impl VerifiedClaims {
    /// A string claim, if present and a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(JsonValue::as_str)
    }

    /// A boolean claim. Some IdPs send `"true"` as a string; that is accepted here, in one place.
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.claims.get(name)? {
            JsonValue::Bool(value) => Some(*value),
            JsonValue::String(value) if value == "true" => Some(true),
            JsonValue::String(value) if value == "false" => Some(false),
            _ => None,
        }
    }
}

/// A local identity mapped from verified claims.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MappedIdentity {
    /// The stable key of this person at this IdP (normally `sub`; Entra uses `tid`+`oid`).
    pub subject: String,
    /// The preferred local username; the core makes it safe and unique.
    pub username: Option<String>,
    pub email: Option<String>,
    /// Whether the IdP says it verified `email`. Unverified emails never link accounts.
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    /// Extra attributes to keep with the identity.
    pub attributes: BTreeMap<String, String>,
}

/// Why a provider refused to map claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MapError {
    /// The person may not log in through this IdP (e.g. wrong hosted domain): 403.
    #[error("login denied: {0}")]
    Denied(String),
    /// The claims lack something the provider needs: 401.
    #[error("unusable claims: {0}")]
    Invalid(String),
    /// The provider itself failed (a dynamic provider panicked or answered garbage): 502.
    #[error("provider failed: {0}")]
    Failed(String),
}

/// The default mapping most OpenID providers need: `sub`, `preferred_username` (or the local
/// part of the email), `email`, `email_verified`, `name`.
pub fn standard_identity(claims: &VerifiedClaims) -> MappedIdentity {
    let email = claims.str("email").map(str::to_string);
    let username = claims
        .str("preferred_username")
        .map(str::to_string)
        .or_else(|| {
            email
                .as_deref()
                .and_then(|email| email.split('@').next())
                .map(str::to_string)
        });
    MappedIdentity {
        subject: claims.subject.clone(),
        username,
        email_verified: email.is_some() && claims.bool("email_verified") == Some(true),
        email,
        display_name: claims.str("name").map(str::to_string),
        groups: Vec::new(),
        attributes: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: serde_json::Value) -> VerifiedClaims {
        let claims = json.as_object().cloned().unwrap_or_default();
        VerifiedClaims {
            issuer: "https://idp.example".into(),
            subject: "abc".into(),
            claims,
        }
    }

    #[test]
    fn standard_identity_table() {
        let cases = [
            (
                serde_json::json!({"preferred_username": "ann", "email": "a@x.org", "email_verified": true}),
                Some("ann"),
                Some("a@x.org"),
                true,
            ),
            (
                serde_json::json!({"email": "bob@x.org"}),
                Some("bob"),
                Some("bob@x.org"),
                false,
            ),
            (
                serde_json::json!({"email": "c@x.org", "email_verified": "true"}),
                Some("c"),
                Some("c@x.org"),
                true,
            ),
            (
                serde_json::json!({"email_verified": true}),
                None,
                None,
                false,
            ),
            (
                serde_json::json!({"email": "d@x.org", "email_verified": 1}),
                Some("d"),
                Some("d@x.org"),
                false,
            ),
        ];
        for (json, username, email, verified) in cases {
            let mapped = standard_identity(&claims(json.clone()));
            assert_eq!(mapped.subject, "abc");
            assert_eq!(mapped.username.as_deref(), username, "{json}");
            assert_eq!(mapped.email.as_deref(), email, "{json}");
            assert_eq!(mapped.email_verified, verified, "{json}");
        }
    }

    #[test]
    fn base_url_settings_are_checked_under_their_key() {
        let settings = ProviderSettings {
            name: "kc".into(),
            settings:
                "url = \"https://kc.example.org/\"\napi = \"http://kc.example.org\"\nport = 1"
                    .parse()
                    .unwrap_or_default(),
        };
        let mut errors = Vec::new();
        assert_eq!(
            settings.required_base_url("url", &mut errors).as_deref(),
            Some("https://kc.example.org")
        );
        assert_eq!(
            settings.optional_base_url("url", &mut errors).as_deref(),
            Some("https://kc.example.org")
        );
        assert_eq!(settings.optional_base_url("absent", &mut errors), None);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(settings.required_base_url("api", &mut errors), None);
        assert_eq!(settings.optional_base_url("port", &mut errors), None);
        assert_eq!(settings.required_base_url("absent", &mut errors), None);
        assert_eq!(
            errors,
            [
                ConfigError::new(
                    "api",
                    "http:// is only allowed for loopback hosts; use https://"
                ),
                ConfigError::new("port", "expected a string"),
                ConfigError::new("absent", "missing (required for this kind)"),
            ]
        );
    }

    #[test]
    fn suggestions_table() {
        let keys = ["domain", "client_secret", "hosted_domain", "realm"];
        for (word, want) in [
            ("domian", Some("domain")),
            ("client_secert", Some("client_secret")),
            ("hosted-domain", Some("hosted_domain")),
            ("REALM", Some("realm")),
            ("colour", None),
            ("x", None),
        ] {
            assert_eq!(did_you_mean(word, keys), want, "{word}");
        }
    }

    #[test]
    fn unknown_keys_are_reported_each() {
        let mut settings = TomlTable::new();
        settings.insert("domian".into(), TomlValue::String("x".into()));
        settings.insert("domain".into(), TomlValue::String("x".into()));
        let settings = ProviderSettings {
            name: "okta".into(),
            settings,
        };
        let errors = settings.unknown_keys(&["domain"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "domian");
        assert_eq!(errors[0].message, "unknown key (did you mean `domain`?)");
    }
}

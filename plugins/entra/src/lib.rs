//! Microsoft Entra ID (Azure AD), single- or multi-tenant, through the v2.0 endpoints.
//!
//! A person is keyed by tenant and object id (`<tid>:<oid>`), never by email: Entra's `email`
//! claim is whatever the account's tenant admin typed, so an attacker's own tenant can claim
//! `victim@corp.example` ("nOAuth"). The email is kept for display with
//! `email_verified = false`, so it can never link accounts.
//!
//! `tenant` is a tenant id (GUID), `consumers` (personal Microsoft accounts), or `common` /
//! `organizations` (multi-tenant). A tenant's domain name is refused: Microsoft's discovery
//! document for `contoso.onmicrosoft.com` names the GUID issuer, which the core would (rightly)
//! refuse as an issuer mismatch. Multi-tenant discovery publishes the issuer template
//! `https://login.microsoftonline.com/{tenantid}/v2.0`; the core checks each ID token's `iss`
//! against it with the token's own `tid`, and `allowed_tenants` narrows who may sign in.

use authnz_plugin::schemars::{self, JsonSchema};
use authnz_plugin::serde::Deserialize;
use authnz_plugin::{
    is_guid, ConfigError, IdentityProvider, Kind, MapError, MappedIdentity, ProviderInfo,
    ProviderSettings, TomlValue, VerifiedClaims,
};

/// `kind = "entra"`.
pub const KIND: Kind = Kind::new("entra", factory)
    .described(
        "Microsoft Entra ID (Azure AD); identities keyed by `tid`+`oid`, email never trusted.",
    )
    .with_settings::<EntraSettings>()
    .badge("#0078d4");

/// The settings of `entra`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct EntraSettings {
    /// A tenant GUID, or `common`, `organizations`, `consumers`.
    pub tenant: String,
    /// With a multi-tenant `tenant`: the tenant GUIDs allowed in.
    pub allowed_tenants: Option<Vec<String>>,
}

/// The tenant of personal Microsoft accounts: what `consumers` stands for in `tid` and `iss`.
pub const CONSUMERS_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// The issuer template of Microsoft's multi-tenant v2.0 discovery documents.
pub const MULTI_TENANT_ISSUER: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

/// Which accounts the app accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tenant {
    /// One tenant, by its lower-cased id; `iss` is fixed.
    Single(String),
    /// `common` or `organizations`; `iss` follows the token's `tid`.
    Multi(&'static str),
}

/// The `entra` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraProvider {
    tenant: Tenant,
    /// Lower-cased tenant ids; empty: every tenant the multi-tenant endpoint admits.
    allowed_tenants: Vec<String>,
}

/// Factory for `kind = "entra"`: `tenant` (required) and `allowed_tenants` (optional list of
/// tenant ids, only with `common` or `organizations`).
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let mut errors = settings.unknown_keys(&["tenant", "allowed_tenants"]);
    let tenant = settings
        .required_str("tenant", &mut errors)
        .and_then(|tenant| match tenant.as_str() {
            "common" => Some(Tenant::Multi("common")),
            "organizations" => Some(Tenant::Multi("organizations")),
            "consumers" => Some(Tenant::Single(CONSUMERS_TENANT_ID.into())),
            id if is_guid(id) => Some(Tenant::Single(id.to_ascii_lowercase())),
            _ => {
                errors.push(ConfigError::new(
                    "tenant",
                    "expected the Directory (tenant) ID, a GUID shown in the Entra admin center, \
                     or \"common\", \"organizations\" or \"consumers\" (a domain name does not \
                     work: Microsoft's discovery names the tenant by its GUID)",
                ));
                None
            }
        });
    let allowed_tenants = allowed_tenants(settings, &mut errors);
    if matches!(tenant, Some(Tenant::Single(_))) && !allowed_tenants.is_empty() {
        errors.push(ConfigError::new(
            "allowed_tenants",
            "only meaningful with tenant = \"common\" or \"organizations\"; a single tenant \
             already admits only its own accounts",
        ));
    }
    match tenant {
        Some(tenant) if errors.is_empty() => Ok(Box::new(EntraProvider {
            tenant,
            allowed_tenants,
        })),
        _ => Err(errors),
    }
}

/// The `allowed_tenants` list: tenant ids, lower-cased.
fn allowed_tenants(settings: &ProviderSettings, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let key = "allowed_tenants";
    match settings.settings.get(key) {
        None => Vec::new(),
        Some(TomlValue::Array(items)) => {
            let ids: Vec<String> = items
                .iter()
                .filter_map(TomlValue::as_str)
                .filter(|id| is_guid(id))
                .map(str::to_ascii_lowercase)
                .collect();
            if ids.len() != items.len() {
                errors.push(ConfigError::new(
                    key,
                    "expected a list of tenant ids (GUIDs), e.g. [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]",
                ));
            } else if ids.is_empty() {
                errors.push(ConfigError::new(
                    key,
                    "must not be empty (leave it out to admit every tenant)",
                ));
            }
            ids
        }
        Some(_) => {
            errors.push(ConfigError::new(
                key,
                "expected a list of tenant ids (GUIDs)",
            ));
            Vec::new()
        }
    }
}

/// Microsoft's mark: four squares, as Microsoft's sign-in button guidelines show it.
pub fn microsoft_mark() -> String {
    authnz_plugin::svg_icon(
        "<svg xmlns='http://www.w3.org/2000/svg' width='24' height='24' viewBox='0 0 23 23'>\
<path fill='#F25022' d='M1 1h10v10H1z'/><path fill='#7FBA00' d='M12 1h10v10H12z'/>\
<path fill='#00A4EF' d='M1 12h10v10H1z'/><path fill='#FFB900' d='M12 12h10v10H12z'/></svg>",
    )
}

impl IdentityProvider for EntraProvider {
    fn describe(&self) -> ProviderInfo {
        let (path, issuer_template) = match &self.tenant {
            Tenant::Single(id) => (id.as_str(), None),
            Tenant::Multi(name) => (*name, Some(MULTI_TENANT_ISSUER.to_string())),
        };
        ProviderInfo {
            kind: "entra".into(),
            // The discovery base; `path` is a GUID or a fixed word.
            issuer: Some(format!("https://login.microsoftonline.com/{path}/v2.0")),
            scopes: vec!["email".into(), "profile".into()],
            label: "Microsoft".into(),
            icon: Some(microsoft_mark()),
            issuer_template,
            ..Default::default()
        }
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        let id = |name: &str| {
            claims
                .str(name)
                .filter(|value| is_guid(value))
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| {
                    MapError::Invalid(format!(
                        "the Microsoft ID token has no {name} claim (a tenant or object id)"
                    ))
                })
        };
        let (tid, oid) = (id("tid")?, id("oid")?);
        let admitted = match &self.tenant {
            // The core's exact `iss` check already pins the tenant; this is a second lock.
            Tenant::Single(tenant) => tid == *tenant,
            Tenant::Multi(_) => {
                self.allowed_tenants.is_empty() || self.allowed_tenants.contains(&tid)
            }
        };
        if !admitted {
            return Err(MapError::Denied(
                "accounts of your Microsoft organization may not sign in here".into(),
            ));
        }
        Ok(MappedIdentity {
            subject: format!("{tid}:{oid}"),
            username: claims.str("preferred_username").map(str::to_string),
            email: claims.str("email").map(str::to_string),
            // Tenant-controlled: never trusted for linking, whatever the token says (F55).
            email_verified: false,
            display_name: claims.str("name").map(str::to_string),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORP: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const OTHER: &str = "0b5c1a36-2f4e-4c7a-9d55-3c8e1b2a9f10";
    const OID: &str = "00000000-0000-0000-66f3-3332eca7ea81";

    fn build(text: &str) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
        factory(&ProviderSettings {
            name: "entra".into(),
            settings: text.parse().unwrap(),
        })
    }

    #[test]
    fn settings_table() {
        // (settings, Ok((issuer, issuer_template)) or Err(keys with errors))
        type Want = Result<(&'static str, Option<&'static str>), &'static [&'static str]>;
        let cases: [(String, Want); 12] = [
            (
                format!("tenant = \"{CORP}\""),
                Ok((
                    "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
                    None,
                )),
            ),
            (
                "tenant = \"72F988BF-86F1-41AF-91AB-2D7CD011DB47\"".into(),
                Ok((
                    "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
                    None,
                )),
            ),
            (
                "tenant = \"consumers\"".into(),
                Ok((
                    "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
                    None,
                )),
            ),
            (
                "tenant = \"common\"".into(),
                Ok((
                    "https://login.microsoftonline.com/common/v2.0",
                    Some(MULTI_TENANT_ISSUER),
                )),
            ),
            (
                format!("tenant = \"organizations\"\nallowed_tenants = [\"{CORP}\"]"),
                Ok((
                    "https://login.microsoftonline.com/organizations/v2.0",
                    Some(MULTI_TENANT_ISSUER),
                )),
            ),
            ("".into(), Err(&["tenant"])),
            (
                "tenant = \"contoso.onmicrosoft.com\"".into(),
                Err(&["tenant"]),
            ),
            ("tenant = \"common/../x\"".into(), Err(&["tenant"])),
            (
                format!("tenant = \"{CORP}\"\nallowed_tenants = [\"{OTHER}\"]"),
                Err(&["allowed_tenants"]),
            ),
            (
                "tenant = \"common\"\nallowed_tenants = [\"contoso.com\"]".into(),
                Err(&["allowed_tenants"]),
            ),
            (
                "tenant = \"common\"\nallowed_tenants = []".into(),
                Err(&["allowed_tenants"]),
            ),
            (
                format!("tenant = \"common\"\nallowed_tenants = \"{CORP}\"\napi_url = \"x\""),
                Err(&["allowed_tenants", "api_url"]),
            ),
        ];
        for (text, want) in cases {
            match (build(&text), want) {
                (Ok(provider), Ok((issuer, template))) => {
                    // The settings type states what the factory accepts.
                    let read = authnz_plugin::TomlValue::Table(text.parse().unwrap())
                        .try_into::<EntraSettings>();
                    assert!(read.is_ok(), "{text}: {read:?}");
                    let info = provider.describe();
                    assert_eq!(info.issuer.as_deref(), Some(issuer), "{text}");
                    assert_eq!(info.issuer_template.as_deref(), template, "{text}");
                }
                (Err(errors), Err(keys)) => {
                    let mut found: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
                    found.sort();
                    assert_eq!(found, keys, "{text}: {errors:?}");
                }
                (Ok(provider), Err(_)) => panic!("{text}: accepted as {:?}", provider.describe()),
                (Err(errors), Ok(_)) => panic!("{text}: rejected with {errors:?}"),
            }
        }
    }

    #[test]
    fn describes_microsoft() {
        let info = build("tenant = \"common\"").unwrap().describe();
        assert_eq!(info.kind, "entra");
        assert_eq!(info.label, "Microsoft");
        let icon = info.icon.unwrap_or_default();
        assert!(icon.starts_with("data:image/svg+xml,"), "{icon}");
        for colour in ["F25022", "7FBA00", "00A4EF", "FFB900"] {
            assert!(
                icon.contains(&format!("fill=%27%23{colour}%27")),
                "{colour}"
            );
        }
        assert_eq!(info.scopes, ["email", "profile"]);
        assert_eq!(info.oauth2, None);
    }

    #[test]
    fn identity_is_tenant_and_object_id_and_email_is_never_verified() {
        // (settings, claims, Ok(subject) or Err(denied?))
        let cases: [(String, serde_json::Value, Result<String, bool>); 9] = [
            (
                format!("tenant = \"{CORP}\""),
                serde_json::json!({"tid": CORP, "oid": OID}),
                Ok(format!("{CORP}:{OID}")),
            ),
            (
                format!("tenant = \"{CORP}\""),
                serde_json::json!({"tid": CORP.to_uppercase(), "oid": OID.to_uppercase()}),
                Ok(format!("{CORP}:{OID}")),
            ),
            (
                format!("tenant = \"{CORP}\""),
                serde_json::json!({"tid": OTHER, "oid": OID}),
                Err(true),
            ),
            (
                "tenant = \"common\"".into(),
                serde_json::json!({"tid": OTHER, "oid": OID}),
                Ok(format!("{OTHER}:{OID}")),
            ),
            (
                format!("tenant = \"common\"\nallowed_tenants = [\"{CORP}\"]"),
                serde_json::json!({"tid": CORP, "oid": OID}),
                Ok(format!("{CORP}:{OID}")),
            ),
            (
                format!("tenant = \"common\"\nallowed_tenants = [\"{CORP}\"]"),
                serde_json::json!({"tid": OTHER, "oid": OID}),
                Err(true),
            ),
            (
                "tenant = \"common\"".into(),
                serde_json::json!({"oid": OID}),
                Err(false),
            ),
            (
                "tenant = \"common\"".into(),
                serde_json::json!({"tid": CORP}),
                Err(false),
            ),
            (
                "tenant = \"common\"".into(),
                serde_json::json!({"tid": format!("{CORP}:x"), "oid": OID}),
                Err(false),
            ),
        ];
        for (text, json, want) in cases {
            let provider = build(&text).unwrap();
            let mut claims = json.as_object().cloned().unwrap();
            claims.insert("email".into(), "victim@corp.example".into());
            claims.insert("email_verified".into(), true.into());
            claims.insert("preferred_username".into(), "ann@corp.example".into());
            claims.insert("name".into(), "Ann".into());
            let result = provider.map_identity(&VerifiedClaims {
                issuer: "https://login.microsoftonline.com/x/v2.0".into(),
                subject: "pairwise-sub".into(),
                claims,
            });
            match (result, want) {
                (Ok(mapped), Ok(subject)) => {
                    assert_eq!(mapped.subject, subject, "{text} {json}");
                    assert_eq!(mapped.email.as_deref(), Some("victim@corp.example"));
                    assert!(!mapped.email_verified, "{text} {json}");
                    assert_eq!(mapped.username.as_deref(), Some("ann@corp.example"));
                    assert_eq!(mapped.display_name.as_deref(), Some("Ann"));
                }
                (Err(MapError::Denied(_)), Err(true)) | (Err(MapError::Invalid(_)), Err(false)) => {
                }
                (result, want) => panic!("{text} {json}: {result:?}, wanted {want:?}"),
            }
        }
    }
}

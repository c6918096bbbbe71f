//! Keycloak: one realm of a Keycloak server, by discovery.
//!
//! The issuer is `<url>/realms/<realm>` (Keycloak 17 and later; older servers serve under
//! `/auth`, so their `url` ends in `/auth`). `idp_hint` becomes Keycloak's `kc_idp_hint`, which
//! sends the person straight to one of the realm's brokered IdPs. Group membership comes from
//! a `groups` claim, which Keycloak emits when the client has a "Group Membership" mapper.

use authnz_plugin::schemars::{self, JsonSchema};
use authnz_plugin::serde::Deserialize;
use authnz_plugin::{
    standard_identity, ConfigError, IdentityProvider, JsonValue, Kind, LoginContext, MapError,
    MappedIdentity, ProviderInfo, ProviderSettings, VerifiedClaims,
};

/// `kind = "keycloak"`.
pub const KIND: Kind = Kind::new("keycloak", factory)
    .described("Keycloak: `<url>/realms/<realm>`.")
    .with_settings::<KeycloakSettings>()
    .badge("#4d4d4d");

/// The settings of `keycloak`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct KeycloakSettings {
    /// The Keycloak base URL, e.g. `https://keycloak.example.org`.
    pub url: String,
    /// The realm.
    pub realm: String,
    /// Sent as `kc_idp_hint` (skip Keycloak's own chooser).
    pub idp_hint: Option<String>,
}

/// The `keycloak` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeycloakProvider {
    issuer: String,
    idp_hint: Option<String>,
}

/// Factory for `kind = "keycloak"`: `url` (required, the server's base URL), `realm`
/// (required) and `idp_hint` (optional, sent as `kc_idp_hint`).
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let mut errors = settings.unknown_keys(&["url", "realm", "idp_hint"]);
    let url = settings
        .required_base_url("url", &mut errors)
        .and_then(|url| {
            if url.contains("/realms/") {
                errors.push(ConfigError::new(
                    "url",
                    "give the server's base URL without /realms/...; the realm goes in realm = \"...\"",
                ));
                None
            } else {
                Some(url)
            }
        });
    let realm = settings
        .required_str("realm", &mut errors)
        .and_then(|realm| {
            if is_path_segment(&realm) {
                Some(realm)
            } else {
                errors.push(ConfigError::new(
                    "realm",
                    "expected a realm name of letters, digits, '-', '_', '.' or '~'",
                ));
                None
            }
        });
    let idp_hint = match settings.optional_str("idp_hint", &mut errors) {
        Some(hint) if hint.trim().is_empty() => {
            errors.push(ConfigError::new("idp_hint", "must not be empty"));
            None
        }
        hint => hint,
    };
    match (url, realm) {
        // `url` is checked by `base_url` and `realm` is one unreserved path segment, so the
        // joined issuer has the host and path the admin wrote.
        (Some(url), Some(realm)) if errors.is_empty() => Ok(Box::new(KeycloakProvider {
            issuer: format!("{url}/realms/{realm}"),
            idp_hint,
        })),
        _ => Err(errors),
    }
}

/// A path segment that needs no percent-encoding (RFC 3986 unreserved characters).
fn is_path_segment(value: &str) -> bool {
    !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

impl IdentityProvider for KeycloakProvider {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            kind: "keycloak".into(),
            issuer: Some(self.issuer.clone()),
            scopes: vec!["email".into(), "profile".into()],
            label: "Keycloak".into(),
            icon: Some(authnz_plugin::mark(
                "0 0 24 24",
                "#4D4D4D",
                icondata_si::SiKeycloak.data,
            )),
            ..Default::default()
        }
    }

    fn authorize_params(&self, _ctx: &LoginContext) -> Vec<(String, String)> {
        self.idp_hint
            .iter()
            .map(|hint| ("kc_idp_hint".to_string(), hint.clone()))
            .collect()
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        let mut identity = standard_identity(claims);
        // Group paths as Keycloak writes them ("/staff/admins" with "full group path" on);
        // anything that is not a string is ignored rather than guessed at.
        if let Some(JsonValue::Array(groups)) = claims.claims.get("groups") {
            identity.groups = groups
                .iter()
                .filter_map(JsonValue::as_str)
                .map(str::to_string)
                .collect();
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
        factory(&ProviderSettings {
            name: "kc".into(),
            settings: text.parse().unwrap(),
        })
    }

    #[test]
    fn settings_table() {
        // (settings, Ok((issuer, kc_idp_hint)) or Err(keys with errors))
        type Want = Result<(&'static str, Option<&'static str>), &'static [&'static str]>;
        let cases: [(&str, Want); 15] = [
            (
                "url = \"https://kc.example.org\"\nrealm = \"master\"",
                Ok(("https://kc.example.org/realms/master", None)),
            ),
            (
                "url = \"https://kc.example.org/\"\nrealm = \"master\"",
                Ok(("https://kc.example.org/realms/master", None)),
            ),
            (
                "url = \"https://kc.example.org:8443/auth\"\nrealm = \"my-realm\"\nidp_hint = \"cilogon\"",
                Ok(("https://kc.example.org:8443/auth/realms/my-realm", Some("cilogon"))),
            ),
            (
                "url = \"http://127.0.0.1:8081\"\nrealm = \"test\"",
                Ok(("http://127.0.0.1:8081/realms/test", None)),
            ),
            (
                "url = \"http://[::1]:8081\"\nrealm = \"test\"",
                Ok(("http://[::1]:8081/realms/test", None)),
            ),
            ("", Err(&["realm", "url"])),
            (
                "url = \"http://kc.example.org\"\nrealm = \"master\"",
                Err(&["url"]),
            ),
            (
                "url = \"kc.example.org\"\nrealm = \"master\"",
                Err(&["url"]),
            ),
            (
                "url = \"https://kc.example.org/realms/master/\"\nrealm = \"master\"",
                Err(&["url"]),
            ),
            (
                "url = \"https://user@kc.example.org\"\nrealm = \"master\"",
                Err(&["url"]),
            ),
            (
                "url = \"https://kc.example.org?x=1\"\nrealm = \"master\"",
                Err(&["url"]),
            ),
            (
                "url = \"https://:443\"\nrealm = \"master\"",
                Err(&["url"]),
            ),
            (
                "url = \"https://kc.example.org\"\nrealm = \"a/b\"",
                Err(&["realm"]),
            ),
            (
                "url = \"https://kc.example.org\"\nrealm = \"..\"",
                Err(&["realm"]),
            ),
            (
                "url = \"https://kc.example.org\"\nrealm = \"x\"\nidp_hint = \"\"\nidphint = \"x\"",
                Err(&["idp_hint", "idphint"]),
            ),
        ];
        for (text, want) in cases {
            match (build(text), want) {
                (Ok(provider), Ok((issuer, hint))) => {
                    // The settings type states what the factory accepts.
                    let read = authnz_plugin::TomlValue::Table(text.parse().unwrap())
                        .try_into::<KeycloakSettings>();
                    assert!(read.is_ok(), "{text}: {read:?}");
                    assert_eq!(
                        provider.describe().issuer.as_deref(),
                        Some(issuer),
                        "{text}"
                    );
                    let params = provider.authorize_params(&LoginContext { idp: "kc".into() });
                    let expected: Vec<(String, String)> = hint
                        .iter()
                        .map(|h| ("kc_idp_hint".to_string(), h.to_string()))
                        .collect();
                    assert_eq!(params, expected, "{text}");
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
    fn describes_keycloak() {
        let info = build("url = \"https://kc.example.org\"\nrealm = \"master\"")
            .unwrap()
            .describe();
        assert_eq!(info.kind, "keycloak");
        assert_eq!(info.label, "Keycloak");
        assert_eq!(info.scopes, ["email", "profile"]);
    }

    #[test]
    fn maps_groups_and_standard_claims() {
        let provider = build("url = \"https://kc.example.org\"\nrealm = \"master\"").unwrap();
        let cases: [(serde_json::Value, &[&str]); 5] = [
            (
                serde_json::json!({"groups": ["/staff", "/staff/admins"]}),
                &["/staff", "/staff/admins"],
            ),
            (serde_json::json!({"groups": []}), &[]),
            (serde_json::json!({}), &[]),
            (serde_json::json!({"groups": "/staff"}), &[]),
            (serde_json::json!({"groups": ["ok", 3, null]}), &["ok"]),
        ];
        for (json, groups) in cases {
            let mut claims = json.as_object().cloned().unwrap();
            claims.insert("preferred_username".into(), "ann".into());
            let mapped = provider
                .map_identity(&VerifiedClaims {
                    issuer: "https://kc.example.org/realms/master".into(),
                    subject: "f:1".into(),
                    claims,
                })
                .unwrap();
            assert_eq!(mapped.subject, "f:1");
            assert_eq!(mapped.username.as_deref(), Some("ann"));
            assert_eq!(mapped.groups, groups, "{json}");
        }
    }
}

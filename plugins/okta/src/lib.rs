//! Okta: an organization's Okta tenant, by discovery.
//!
//! Okta has two kinds of authorization server, each its own issuer: the org server
//! (`https://<domain>`) and custom servers, `default` included (`https://<domain>/oauth2/<id>`).
//! Tokens of one are not valid at the other, so the issuer must name the server the app is
//! registered with; `authorization_server` chooses it. The claims are the standard ones.

use authnz_plugin::schemars::{self, JsonSchema};
use authnz_plugin::serde::Deserialize;
use authnz_plugin::{
    is_host_name, standard_identity, ConfigError, IdentityProvider, Kind, MapError, MappedIdentity,
    ProviderInfo, ProviderSettings, VerifiedClaims,
};

/// `kind = "okta"`.
pub const KIND: Kind = Kind::new("okta", factory)
    .described("Okta: the org authorization server, or a custom one.")
    .with_settings::<OktaSettings>()
    .badge("#007dc1");

/// The settings of `okta`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct OktaSettings {
    /// The Okta domain, e.g. `organization.okta.com` (no scheme).
    pub domain: String,
    /// A custom authorization server id (`default` or another); absent: the org server.
    pub authorization_server: Option<String>,
}

/// The `okta` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaProvider {
    issuer: String,
}

/// Factory for `kind = "okta"`: `domain` (required, e.g. `organization.okta.com`) and
/// `authorization_server` (optional: `default` or a custom server id; absent: the org server).
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let mut errors = settings.unknown_keys(&["domain", "authorization_server"]);
    let domain = settings
        .required_str("domain", &mut errors)
        .and_then(|domain| host_name("domain", &domain, &mut errors));
    let server = settings
        .optional_str("authorization_server", &mut errors)
        .and_then(|id| server_id(&id, &mut errors));
    match domain {
        Some(domain) if errors.is_empty() => {
            // Both pieces are validated above (a host name, an id of letters and digits), so
            // joining them cannot change the URL's host or add a query.
            let issuer = match server {
                Some(id) => format!("https://{domain}/oauth2/{id}"),
                None => format!("https://{domain}"),
            };
            Ok(Box::new(OktaProvider { issuer }))
        }
        _ => Err(errors),
    }
}

/// `value` if it is a bare DNS host name (no scheme, port or path), lower-cased.
fn host_name(key: &str, value: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    if is_host_name(value) {
        Some(value.to_ascii_lowercase())
    } else {
        errors.push(ConfigError::new(
            key,
            "expected a host name such as organization.okta.com, without https:// or a path",
        ));
        None
    }
}

/// An authorization server id: `default` or Okta's generated id (letters and digits).
fn server_id(value: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Some(value.to_string())
    } else {
        errors.push(ConfigError::new(
            "authorization_server",
            "expected \"default\" or an authorization server id such as aus9o8wzkhckw9TLa0h7",
        ));
        None
    }
}

impl IdentityProvider for OktaProvider {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            kind: "okta".into(),
            issuer: Some(self.issuer.clone()),
            scopes: vec!["email".into(), "profile".into()],
            label: "Okta".into(),
            icon: Some(authnz_plugin::mark(
                "0 0 24 24",
                "#007DC1",
                icondata_si::SiOkta.data,
            )),
            ..Default::default()
        }
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        Ok(standard_identity(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
        factory(&ProviderSettings {
            name: "okta".into(),
            settings: text.parse().unwrap(),
        })
    }

    #[test]
    fn settings_table() {
        let cases: [(&str, Result<&str, &[&str]>); 9] = [
            (
                r#"domain = "organization.okta.com""#,
                Ok("https://organization.okta.com"),
            ),
            (
                r#"domain = "Organization.Okta.com""#,
                Ok("https://organization.okta.com"),
            ),
            (
                "domain = \"organization.okta.com\"\nauthorization_server = \"default\"",
                Ok("https://organization.okta.com/oauth2/default"),
            ),
            (
                "domain = \"dev-1.okta.com\"\nauthorization_server = \"aus9o8wzkhckw9TLa0h7\"",
                Ok("https://dev-1.okta.com/oauth2/aus9o8wzkhckw9TLa0h7"),
            ),
            ("", Err(&["domain"])),
            (
                r#"domain = "https://organization.okta.com""#,
                Err(&["domain"]),
            ),
            (
                r#"domain = "organization.okta.com/oauth2""#,
                Err(&["domain"]),
            ),
            (
                "domain = \"organization.okta.com\"\nauthorization_server = \"a/../b?x=1\"",
                Err(&["authorization_server"]),
            ),
            (
                "domain = 7\napi_url = \"https://organization.okta.com/oauth2/default\"",
                Err(&["api_url", "domain"]),
            ),
        ];
        for (text, want) in cases {
            match (build(text), want) {
                (Ok(provider), Ok(issuer)) => {
                    // The settings type states what the factory accepts.
                    let read = authnz_plugin::TomlValue::Table(text.parse().unwrap())
                        .try_into::<OktaSettings>();
                    assert!(read.is_ok(), "{text}: {read:?}");
                    assert_eq!(
                        provider.describe().issuer.as_deref(),
                        Some(issuer),
                        "{text}"
                    )
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
    fn describes_okta() {
        let info = build(r#"domain = "organization.okta.com""#)
            .unwrap()
            .describe();
        assert_eq!(info.kind, "okta");
        assert_eq!(info.label, "Okta");
        assert_eq!(info.scopes, ["email", "profile"]);
        assert_eq!(info.issuer_template, None);
        assert_eq!(info.oauth2, None);
    }

    #[test]
    fn maps_standard_claims() {
        let provider = build(r#"domain = "organization.okta.com""#).unwrap();
        let cases = [
            (
                serde_json::json!({"preferred_username": "ann@corp.example", "email": "ann@corp.example", "email_verified": true}),
                Some("ann@corp.example"),
                true,
            ),
            (
                serde_json::json!({"email": "bob@corp.example"}),
                Some("bob"),
                false,
            ),
        ];
        for (json, username, verified) in cases {
            let claims = VerifiedClaims {
                issuer: "https://organization.okta.com".into(),
                subject: "00u1abcd".into(),
                claims: json.as_object().cloned().unwrap(),
            };
            let mapped = provider.map_identity(&claims).unwrap();
            assert_eq!(mapped.subject, "00u1abcd");
            assert_eq!(mapped.username.as_deref(), username, "{json}");
            assert_eq!(mapped.email_verified, verified, "{json}");
        }
    }
}

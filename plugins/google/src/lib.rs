//! Google accounts, optionally restricted to one Google Workspace domain.
//!
//! `hosted_domain` is sent as `hd`, but `hd` in the authorize request only filters Google's
//! account chooser: anyone can edit the URL and sign in with another account. The restriction
//! is therefore *enforced* on the verified ID token's `hd` claim, which Google sets only for
//! Workspace accounts (never for gmail.com), so a consumer account is denied too.

use authnz_plugin::schemars::{self, JsonSchema};
use authnz_plugin::serde::Deserialize;
use authnz_plugin::{
    is_host_name, standard_identity, ConfigError, IdentityProvider, Kind, LoginContext, MapError,
    MappedIdentity, ProviderInfo, ProviderSettings, VerifiedClaims,
};

/// `kind = "google"`.
pub const KIND: Kind = Kind::new("google", factory)
    .described("Google accounts, optionally of one Google Workspace domain.")
    .with_settings::<GoogleSettings>()
    .badge("#4285f4");

/// The settings of `google`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(crate = "authnz_plugin::serde", deny_unknown_fields)]
pub struct GoogleSettings {
    /// A Google Workspace domain: sent as `hd` and enforced on the verified `hd` claim.
    pub hosted_domain: Option<String>,
    /// `offline` (a refresh token) or `online`.
    #[schemars(extend("default" = "offline"))]
    pub access_type: Option<String>,
}

/// Google's issuer, as its discovery document and ID tokens name it.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// The `google` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleProvider {
    /// Lower-cased Workspace domain whose accounts alone may sign in.
    hosted_domain: Option<String>,
    /// `offline` (a refresh token, Galaxy's default) or `online`.
    access_type: String,
}

/// Factory for `kind = "google"`: `hosted_domain` (optional, enforced) and `access_type`
/// (optional, `offline` by default, or `online`).
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let mut errors = settings.unknown_keys(&["hosted_domain", "access_type"]);
    let hosted_domain = settings
        .optional_str("hosted_domain", &mut errors)
        .and_then(|domain| host_name(&domain, &mut errors));
    let access_type = match settings.optional_str("access_type", &mut errors) {
        None => "offline".to_string(),
        Some(value) if value == "offline" || value == "online" => value,
        Some(_) => {
            errors.push(ConfigError::new(
                "access_type",
                "expected \"offline\" (a refresh token) or \"online\"",
            ));
            String::new()
        }
    };
    if errors.is_empty() {
        Ok(Box::new(GoogleProvider {
            hosted_domain,
            access_type,
        }))
    } else {
        Err(errors)
    }
}

/// `value` if it is a bare DNS domain (`example.org`), lower-cased.
fn host_name(value: &str, errors: &mut Vec<ConfigError>) -> Option<String> {
    if is_host_name(value) {
        Some(value.to_ascii_lowercase())
    } else {
        errors.push(ConfigError::new(
            "hosted_domain",
            "expected a Google Workspace domain such as example.org",
        ));
        None
    }
}

/// Google's "G" in its four colours: the one-colour mark of the Simple Icons set clipped to four
/// sectors around its centre (red on top, yellow on the left, green below, blue on the right
/// and the bar), as Google's sign-in button guidelines show it.
pub fn google_mark() -> String {
    let g = icondata_si::SiGoogle.data;
    authnz_plugin::svg_icon(&format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='24' height='24' viewBox='0 0 24 24'>\
<clipPath id='g'>{g}</clipPath><g clip-path='url(#g)'>\
<path fill='#EA4335' d='M12.48 12 33.69-9.21-15.71 1.74z'/>\
<path fill='#FBBC05' d='M12.48 12-15.71 1.74-12.09 29.21z'/>\
<path fill='#34A853' d='M12.48 12-12.09 29.21 35.46 31.28z'/>\
<path fill='#4285F4' d='M12.48 12 35.46 31.28 33.69-9.21z'/>\
<rect fill='#4285F4' x='12' y='10.5' width='13' height='4.2'/></g></svg>"
    ))
}

impl IdentityProvider for GoogleProvider {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            kind: "google".into(),
            issuer: Some(GOOGLE_ISSUER.into()),
            scopes: vec!["email".into(), "profile".into()],
            label: "Google".into(),
            icon: Some(google_mark()),
            ..Default::default()
        }
    }

    /// `access_type` always; `hd` with a hosted domain. Google gives a refresh token for
    /// `offline` only at first consent: `prompt = "consent"` (a core key) forces it each time.
    fn authorize_params(&self, _ctx: &LoginContext) -> Vec<(String, String)> {
        let mut params = vec![("access_type".to_string(), self.access_type.clone())];
        if let Some(domain) = &self.hosted_domain {
            params.push(("hd".to_string(), domain.clone()));
        }
        params
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        if let Some(domain) = &self.hosted_domain {
            let hd = claims.str("hd").unwrap_or_default();
            if !hd.eq_ignore_ascii_case(domain) {
                return Err(MapError::Denied(format!(
                    "only {domain} Google accounts may sign in here"
                )));
            }
        }
        Ok(standard_identity(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
        factory(&ProviderSettings {
            name: "google".into(),
            settings: text.parse().unwrap(),
        })
    }

    fn claims(json: serde_json::Value) -> VerifiedClaims {
        VerifiedClaims {
            issuer: GOOGLE_ISSUER.into(),
            subject: "1098765".into(),
            claims: json.as_object().cloned().unwrap(),
        }
    }

    fn ctx() -> LoginContext {
        LoginContext {
            idp: "google".into(),
        }
    }

    #[test]
    fn settings_and_authorize_params_table() {
        // (settings, Ok(authorize params) or Err(keys with errors))
        type Want = Result<&'static [(&'static str, &'static str)], &'static [&'static str]>;
        let cases: [(&str, Want); 8] = [
            ("", Ok(&[("access_type", "offline")])),
            (
                r#"access_type = "online""#,
                Ok(&[("access_type", "online")]),
            ),
            (
                r#"hosted_domain = "Example.org""#,
                Ok(&[("access_type", "offline"), ("hd", "example.org")]),
            ),
            (r#"access_type = "always""#, Err(&["access_type"])),
            (r#"hosted_domain = "@example.org""#, Err(&["hosted_domain"])),
            (r#"hosted_domain = "*""#, Err(&["hosted_domain"])),
            (
                r#"hosted_domain = ["example.org"]"#,
                Err(&["hosted_domain"]),
            ),
            (
                "prompt_consent = true\naccess_type = 1",
                Err(&["access_type", "prompt_consent"]),
            ),
        ];
        for (text, want) in cases {
            match (build(text), want) {
                (Ok(provider), Ok(params)) => {
                    // The settings type states what the factory accepts.
                    let read = authnz_plugin::TomlValue::Table(text.parse().unwrap())
                        .try_into::<GoogleSettings>();
                    assert!(read.is_ok(), "{text}: {read:?}");
                    let found = provider.authorize_params(&ctx());
                    let found: Vec<(&str, &str)> = found
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    assert_eq!(found, params, "{text}");
                }
                (Err(errors), Err(keys)) => {
                    let mut found: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
                    found.sort();
                    assert_eq!(found, keys, "{text}: {errors:?}");
                }
                (Ok(_), Err(_)) => panic!("{text}: accepted"),
                (Err(errors), Ok(_)) => panic!("{text}: rejected with {errors:?}"),
            }
        }
    }

    #[test]
    fn describes_google() {
        let info = build("").unwrap().describe();
        assert_eq!(info.kind, "google");
        assert_eq!(info.issuer.as_deref(), Some("https://accounts.google.com"));
        assert_eq!(info.scopes, ["email", "profile"]);
        assert_eq!(info.label, "Google");
        let icon = info.icon.unwrap_or_default();
        assert!(icon.starts_with("data:image/svg+xml,"), "{icon}");
        for colour in ["EA4335", "FBBC05", "34A853", "4285F4"] {
            assert!(
                icon.contains(&format!("fill=%27%23{colour}%27")),
                "{colour}"
            );
        }
    }

    #[test]
    fn hosted_domain_is_enforced_on_the_verified_claims() {
        let restricted = build(r#"hosted_domain = "example.org""#).unwrap();
        let open = build("").unwrap();
        let cases = [
            (serde_json::json!({"hd": "example.org"}), true),
            (serde_json::json!({"hd": "EXAMPLE.org"}), true),
            (serde_json::json!({"hd": "evil.example"}), false),
            (serde_json::json!({"hd": "sub.example.org"}), false),
            (serde_json::json!({}), false),
            (serde_json::json!({"hd": ["example.org"]}), false),
        ];
        for (json, allowed) in cases {
            let result = restricted.map_identity(&claims(json.clone()));
            match result {
                Ok(_) => assert!(allowed, "{json}: allowed"),
                Err(MapError::Denied(message)) => {
                    assert!(!allowed, "{json}: denied");
                    assert_eq!(message, "only example.org Google accounts may sign in here");
                }
                Err(other) => panic!("{json}: {other}"),
            }
            assert!(open.map_identity(&claims(json.clone())).is_ok(), "{json}");
        }
    }

    #[test]
    fn maps_claims() {
        let provider = build("").unwrap();
        let cases = [
            (
                serde_json::json!({"email": "ann@gmail.com", "email_verified": true, "name": "Ann"}),
                Some("ann"),
                Some("ann@gmail.com"),
                true,
                Some("Ann"),
            ),
            (
                serde_json::json!({"preferred_username": "annie", "email": "ann@gmail.com"}),
                Some("annie"),
                Some("ann@gmail.com"),
                false,
                None,
            ),
            (serde_json::json!({}), None, None, false, None),
        ];
        for (json, username, email, verified, name) in cases {
            let mapped = provider.map_identity(&claims(json.clone())).unwrap();
            assert_eq!(mapped.subject, "1098765");
            assert_eq!(mapped.username.as_deref(), username, "{json}");
            assert_eq!(mapped.email.as_deref(), email, "{json}");
            assert_eq!(mapped.email_verified, verified, "{json}");
            assert_eq!(mapped.display_name.as_deref(), name, "{json}");
        }
    }
}

//! An example provider built as a shared library and loaded by authnz at run time: ORCID
//! (<https://orcid.org>), the researcher identifier, which has no built-in crate.
//!
//! ```toml
//! [idps.orcid]
//! kind = "dylib"
//! path = "/usr/lib/authnz/libauthnz_example_dylib.so"
//! client_id = "APP-..."
//! client_secret = "${ORCID_CLIENT_SECRET}"
//! sandbox = false          # true: https://sandbox.orcid.org
//! ```
//!
//! ORCID's ID tokens carry the ORCID iD as `sub` and the name, but no email (ORCID shares
//! emails only through its member API), so this provider asks for `openid` alone.

use authnz_plugin::{
    ConfigError, IdentityProvider, MapError, MappedIdentity, ProviderInfo, ProviderSettings,
    TomlValue, VerifiedClaims,
};

authnz_plugin::export_provider!("orcid", factory);

/// The ORCID provider.
#[derive(Debug)]
pub struct Orcid {
    issuer: &'static str,
}

/// Builds the provider from its settings: `sandbox` (optional boolean).
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let mut errors = settings.unknown_keys(&["sandbox"]);
    let sandbox = match settings.settings.get("sandbox") {
        None => false,
        Some(TomlValue::Boolean(flag)) => *flag,
        Some(_) => {
            errors.push(ConfigError::new("sandbox", "expected true or false"));
            false
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Box::new(Orcid {
        issuer: if sandbox {
            "https://sandbox.orcid.org"
        } else {
            "https://orcid.org"
        },
    }))
}

/// An ORCID iD: four groups of four digits, the last character may be `X`.
fn is_orcid_id(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 4
        && groups.iter().enumerate().all(|(i, group)| {
            group.len() == 4
                && group
                    .chars()
                    .enumerate()
                    .all(|(j, c)| c.is_ascii_digit() || (i == 3 && j == 3 && c == 'X'))
        })
}

/// The button icon: a green disc with "iD".
const MARK: &str = "<svg xmlns='http://www.w3.org/2000/svg' width='24' height='24' viewBox='0 0 24 24'>\
<circle cx='12' cy='12' r='12' fill='#A6CE39'/><text x='12' y='16.5' font-size='11' font-weight='700' \
font-family='sans-serif' text-anchor='middle' fill='#fff'>iD</text></svg>";

impl IdentityProvider for Orcid {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            kind: "orcid".into(),
            issuer: Some(self.issuer.to_string()),
            scopes: Vec::new(),
            label: "ORCID".into(),
            // A dylib ships its own mark; an `icon` in the config still wins.
            icon: Some(authnz_plugin::svg_icon(MARK)),
            ..Default::default()
        }
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        let name = [claims.str("given_name"), claims.str("family_name")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        // An ORCID iD makes a fine username; other IdPs standing in for ORCID (tests) keep theirs.
        let username = if is_orcid_id(&claims.subject) {
            Some(format!("orcid-{}", claims.subject))
        } else {
            claims
                .str("preferred_username")
                .map(str::to_string)
                .or(Some(claims.subject.clone()))
        };
        Ok(MappedIdentity {
            subject: claims.subject.clone(),
            username,
            email: None,
            email_verified: false,
            display_name: if name.is_empty() {
                claims.str("name").map(str::to_string)
            } else {
                Some(name)
            },
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(table: &str) -> ProviderSettings {
        ProviderSettings {
            name: "orcid".into(),
            settings: table.parse().unwrap_or_default(),
        }
    }

    #[test]
    fn settings_table() {
        let cases = [
            ("", Some("https://orcid.org")),
            ("sandbox = true", Some("https://sandbox.orcid.org")),
            ("sandbox = \"yes\"", None),
            ("colour = 1", None),
        ];
        for (table, issuer) in cases {
            let result = factory(&settings(table)).map(|p| p.describe().issuer);
            assert_eq!(result.ok().flatten().as_deref(), issuer, "{table}");
        }
    }

    #[test]
    fn maps_orcid_ids_and_names() {
        let provider = factory(&settings("")).unwrap();
        let mut claims = authnz_plugin::JsonMap::new();
        claims.insert("given_name".into(), "Sofia".into());
        claims.insert("family_name".into(), "Garcia".into());
        let mapped = provider
            .map_identity(&VerifiedClaims {
                issuer: "https://orcid.org".into(),
                subject: "0000-0002-1825-009X".into(),
                claims,
            })
            .unwrap();
        assert_eq!(
            mapped.username.as_deref(),
            Some("orcid-0000-0002-1825-009X")
        );
        assert_eq!(mapped.display_name.as_deref(), Some("Sofia Garcia"));
        assert!(!mapped.email_verified);
        for (id, ok) in [
            ("0000-0002-1825-0097", true),
            ("0000-0002-1825-009X", true),
            ("0000-002-1825-0097", false),
            ("X000-0002-1825-0097", false),
        ] {
            assert_eq!(is_orcid_id(id), ok, "{id}");
        }
    }
}

//! The generic OpenID Connect provider: any IdP that publishes discovery metadata.
//!
//! It needs nothing but the `issuer` (a core key) and maps the standard claims.

use authnz_plugin::{
    standard_identity, ConfigError, IdentityProvider, Kind, MapError, MappedIdentity, ProviderInfo,
    ProviderSettings, VerifiedClaims,
};

/// `kind = "oidc"`: no settings of its own.
pub const KIND: Kind = Kind::new("oidc", factory)
    .described("Any OpenID provider, by discovery (`issuer` is required).");

/// The `oidc` kind.
#[derive(Debug, Default)]
pub struct OidcProvider;

/// Factory for `kind = "oidc"`.
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let errors = settings.unknown_keys(&[]);
    if errors.is_empty() {
        Ok(Box::new(OidcProvider))
    } else {
        Err(errors)
    }
}

impl IdentityProvider for OidcProvider {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            kind: "oidc".into(),
            issuer: None,
            scopes: vec!["email".into(), "profile".into()],
            label: "OpenID Connect".into(),
            icon: None,
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
    use authnz_plugin::{TomlTable, TomlValue};

    #[test]
    fn rejects_unknown_settings() {
        let mut table = TomlTable::new();
        table.insert("domain".into(), TomlValue::String("x".into()));
        let result = factory(&ProviderSettings {
            name: "corp".into(),
            settings: table,
        });
        let errors = result.err().unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "domain");
    }

    #[test]
    fn maps_standard_claims() {
        let provider = OidcProvider;
        let mut claims = authnz_plugin::JsonMap::new();
        claims.insert("preferred_username".into(), "zoe".into());
        let mapped = provider
            .map_identity(&VerifiedClaims {
                issuer: "i".into(),
                subject: "s1".into(),
                claims,
            })
            .ok();
        assert_eq!(
            mapped.map(|m| (m.subject, m.username)),
            Some(("s1".into(), Some("zoe".into())))
        );
    }
}

//! The `dev` kind: the provider side of the development IdP that authnz serves itself
//! (the `devidp` module). It lives in the core because the IdP does, but it is a kind like any
//! other: a descriptor for the registry, a factory and standard claims. It depends on the SDK
//! alone, so the registry can list it without reaching into the config or the HTTP code.

use authnz_plugin::{
    standard_identity, ConfigError, IdentityProvider, Kind, MapError, MappedIdentity, ProviderInfo,
    ProviderSettings, VerifiedClaims,
};

/// `kind = "dev"`: no settings of its own.
pub const KIND: Kind = Kind::new("dev", factory)
    .described("The development IdP inside authnz: anyone signs in as anyone; loopback only.")
    .badge("#8a5a00");

/// The client id authnz uses with its own dev IdP (a public client: PKCE protects the code).
pub const DEV_CLIENT_ID: &str = "authnz-dev";

/// Factory for `kind = "dev"`.
pub fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let errors = settings.unknown_keys(&[]);
    if errors.is_empty() {
        Ok(Box::new(DevProvider))
    } else {
        Err(errors)
    }
}

/// The provider side of the dev IdP: standard claims.
#[derive(Debug)]
pub struct DevProvider;

impl IdentityProvider for DevProvider {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            kind: KIND.name.into(),
            issuer: None,
            scopes: vec!["email".into(), "profile".into()],
            label: "Dev login (anyone, no password)".into(),
            icon: None,
            ..Default::default()
        }
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        Ok(standard_identity(claims))
    }
}

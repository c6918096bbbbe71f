//! A provider library that fails on purpose, so the loader's tests can show that a broken
//! plugin costs one login (502) and never the server: setting `panic_in` names the operation
//! that panics (`new`, `authorize_params`, `map_identity`); `reject = true` refuses the settings.
#![allow(clippy::panic)]

use authnz_plugin::{
    standard_identity, ConfigError, IdentityProvider, LoginContext, MapError, MappedIdentity,
    ProviderInfo, ProviderSettings, TomlValue, VerifiedClaims,
};

authnz_plugin::export_provider!("faulty", factory);

struct Faulty {
    panic_in: String,
}

fn factory(settings: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
    let panic_in = match settings.settings.get("panic_in") {
        Some(TomlValue::String(op)) => op.clone(),
        _ => String::new(),
    };
    if settings.settings.get("reject") == Some(&TomlValue::Boolean(true)) {
        return Err(vec![ConfigError::new(
            "reject",
            "this provider refuses to start (as asked)",
        )]);
    }
    if panic_in == "new" {
        panic!("faulty provider: panic in new");
    }
    Ok(Box::new(Faulty { panic_in }))
}

impl IdentityProvider for Faulty {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo {
            kind: "faulty".into(),
            scopes: vec!["email".into(), "profile".into()],
            label: "Faulty".into(),
            ..Default::default()
        }
    }

    fn authorize_params(&self, _ctx: &LoginContext) -> Vec<(String, String)> {
        if self.panic_in == "authorize_params" {
            panic!("faulty provider: panic in authorize_params");
        }
        vec![("faulty_hint".into(), "1".into())]
    }

    fn map_identity(&self, claims: &VerifiedClaims) -> Result<MappedIdentity, MapError> {
        if self.panic_in == "map_identity" {
            panic!("faulty provider: panic in map_identity");
        }
        Ok(standard_identity(claims))
    }
}

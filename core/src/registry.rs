//! The provider registry: a plain map from `kind` to the factory that builds it.
//!
//! Built-in kinds are registered here; each lives in its own crate under `plugins/` (the `dev`
//! kind lives in the core because it is served by the server itself).

use std::collections::BTreeMap;

use authnz_plugin::Factory;

/// Known provider kinds.
#[derive(Clone)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        let mut registry = Self {
            factories: BTreeMap::new(),
        };
        registry.register("oidc", authnz_plugin_oidc::factory);
        registry.register("okta", authnz_plugin_okta::factory);
        registry.register("google", authnz_plugin_google::factory);
        registry.register("keycloak", authnz_plugin_keycloak::factory);
        registry.register("entra", authnz_plugin_entra::factory);
        registry.register("github", authnz_plugin_github::factory);
        for (kind, factory) in authnz_plugin_presets::kinds() {
            registry.register(kind, factory);
        }
        registry.register("dev", crate::devidp::factory);
        registry
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, kind: &str, factory: Factory) {
        self.factories.insert(kind.to_string(), factory);
    }

    pub fn factory(&self, kind: &str) -> Option<Factory> {
        self.factories.get(kind).copied()
    }

    /// Every known kind, sorted, `dylib` (a provider from a shared library) included.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        kinds.push(crate::config::DYLIB_KIND);
        kinds.sort_unstable();
        kinds
    }
}

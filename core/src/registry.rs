//! The provider registry: the known kinds, by the name written as `kind = "..."`.
//!
//! This is the one place that lists the built-in kinds: one line per provider crate under
//! `plugins/` (the presets by their list), and the `dev` kind, which lives in the core because
//! the server itself serves it. Each crate describes its own kind: its factory, the schema of its
//! settings and its badge colour.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use authnz_plugin::{Factory, Kind};

/// The kind of the built-in development IdP.
pub const DEV_KIND: &str = crate::providers::dev::KIND.name;

/// The kind of providers loaded from a shared library. Not a registered kind: the config loads
/// the library the entry names, and the library brings its own factory.
pub const DYLIB_KIND: &str = "dylib";

/// The badge colour of a provider from a shared library.
const DYLIB_BADGE_COLOUR: &str = "#6b8e23";

/// Known provider kinds.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Kind>,
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        let mut registry = Self::default();
        registry.add(authnz_plugin_oidc::KIND);
        registry.add(authnz_plugin_okta::KIND);
        registry.add(authnz_plugin_google::KIND);
        registry.add(authnz_plugin_keycloak::KIND);
        registry.add(authnz_plugin_entra::KIND);
        registry.add(authnz_plugin_github::KIND);
        for kind in authnz_plugin_presets::KINDS {
            registry.add(*kind);
        }
        registry.add(crate::providers::dev::KIND);
        registry
    }

    /// Adds (or replaces) a kind.
    pub fn add(&mut self, kind: Kind) {
        self.kinds.insert(kind.name, kind);
    }

    /// Adds (or replaces) a kind known by its factory alone: no settings schema, the default
    /// badge.
    pub fn register(&mut self, kind: &'static str, factory: Factory) {
        self.add(Kind::new(kind, factory));
    }

    pub fn factory(&self, kind: &str) -> Option<Factory> {
        self.kinds.get(kind).map(|kind| kind.factory)
    }

    /// The registered kinds, sorted by name (`dylib` is not one).
    pub fn descriptors(&self) -> impl Iterator<Item = &Kind> {
        self.kinds.values()
    }

    /// Every known kind, sorted, `dylib` (a provider from a shared library) included.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.kinds.keys().copied().collect();
        kinds.push(DYLIB_KIND);
        kinds.sort_unstable();
        kinds
    }

    /// The colour of `kind`'s badge on a login button without an icon.
    pub fn badge_colour(&self, kind: &str) -> &'static str {
        match self.kinds.get(kind) {
            Some(kind) => kind.badge_colour,
            None if kind == DYLIB_KIND => DYLIB_BADGE_COLOUR,
            None => Kind::DEFAULT_BADGE_COLOUR,
        }
    }
}

/// [`Registry::badge_colour`] of the built-in kinds, for pages that know a kind by its name.
pub fn badge_colour(kind: &str) -> &'static str {
    static BUILTIN: OnceLock<Registry> = OnceLock::new();
    BUILTIN.get_or_init(Registry::builtin).badge_colour(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_come_from_the_kinds() {
        for (kind, colour) in [
            ("google", "#4285f4"),
            ("okta", "#007dc1"),
            ("keycloak", "#4d4d4d"),
            ("entra", "#0078d4"),
            ("github", "#24292f"),
            ("dev", "#8a5a00"),
            ("dylib", "#6b8e23"),
            ("oidc", "#5f6368"),
            ("globus", "#5f6368"),
            ("nonexistent", "#5f6368"),
        ] {
            assert_eq!(badge_colour(kind), colour, "{kind}");
        }
    }

    #[test]
    fn kinds_are_sorted_and_name_themselves() {
        let registry = Registry::builtin();
        let kinds = registry.kinds();
        let mut sorted = kinds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(kinds, sorted);
        assert!(kinds.contains(&DEV_KIND) && kinds.contains(&DYLIB_KIND));
        for kind in registry.descriptors() {
            assert!(
                !kind.description.is_empty(),
                "{} has no description",
                kind.name
            );
            assert!(registry.factory(kind.name).is_some(), "{}", kind.name);
        }
    }

    #[test]
    fn a_kind_registered_by_its_factory_alone_gets_the_default_badge() {
        let mut registry = Registry::builtin();
        registry.register("mapped", crate::providers::dev::factory);
        assert!(registry.kinds().contains(&"mapped"));
        assert_eq!(registry.badge_colour("mapped"), Kind::DEFAULT_BADGE_COLOUR);
        assert!(registry.factory("mapped").is_some());
    }
}

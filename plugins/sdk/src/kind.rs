//! A provider kind as a crate exports it: the name written as `kind = "..."`, the factory, and
//! what the core needs to know about the kind without building it (the JSON Schema of its own
//! settings, for editors; the colour of its login button's badge).

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use crate::Factory;

/// Writes the JSON Schema of a kind's own settings (an object schema: `properties`, `required`).
/// Types it refers to by `$ref` are added to the generator's definitions.
pub type SettingsSchema = fn(&mut SchemaGenerator) -> Schema;

/// One provider kind. A crate exports its kinds as constants, and the core registers them:
///
/// ```ignore
/// pub const KIND: Kind = Kind::new("acme", factory)
///     .described("Acme's login, one tenant.")
///     .with_settings::<AcmeSettings>()
///     .badge("#cc0000");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The `kind = "..."` of `[idps.<name>]`.
    pub name: &'static str,
    /// One sentence for the schema: what the kind is.
    pub description: &'static str,
    pub factory: Factory,
    /// The kind's own settings: every key of the entry that the core does not own. The factory
    /// still validates them itself (with its own messages); this states the same keys for
    /// tools.
    pub settings_schema: SettingsSchema,
    /// The CSS colour of the badge shown on the login button when no icon is configured.
    pub badge_colour: &'static str,
}

impl Kind {
    /// The badge colour of a kind that names none.
    pub const DEFAULT_BADGE_COLOUR: &'static str = "#5f6368";

    /// A kind without settings of its own, with the default badge.
    pub const fn new(name: &'static str, factory: Factory) -> Self {
        Self {
            name,
            description: "",
            factory,
            settings_schema: no_settings,
            badge_colour: Self::DEFAULT_BADGE_COLOUR,
        }
    }

    /// With its description.
    pub const fn described(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }

    /// With its settings stated by `T` (serde and schemars attributes shape the schema: doc
    /// comments become descriptions, `Option` fields are optional).
    pub const fn with_settings<T: JsonSchema>(mut self) -> Self {
        self.settings_schema = settings_schema::<T>;
        self
    }

    /// With its badge colour.
    pub const fn badge(mut self, colour: &'static str) -> Self {
        self.badge_colour = colour;
        self
    }
}

/// The settings schema of `T`, inline (not a `$ref`), so its properties can join the core's.
pub fn settings_schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

/// The settings schema of a kind that takes none.
pub fn no_settings(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "properties": {} })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigError, IdentityProvider, ProviderSettings};

    fn refuse(_: &ProviderSettings) -> Result<Box<dyn IdentityProvider>, Vec<ConfigError>> {
        Err(Vec::new())
    }

    /// Settings of a test kind.
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Sample {
        /// Required.
        domain: String,
        /// Optional.
        hint: Option<String>,
    }

    const PLAIN: Kind = Kind::new("plain", refuse);
    const FULL: Kind = Kind::new("full", refuse)
        .described("A kind with everything.")
        .with_settings::<Sample>()
        .badge("#123456");

    #[test]
    fn a_plain_kind_takes_no_settings_and_the_default_badge() {
        let mut generator = SchemaGenerator::default();
        let schema = (PLAIN.settings_schema)(&mut generator);
        assert_eq!(
            schema.to_value(),
            serde_json::json!({"type": "object", "properties": {}})
        );
        assert_eq!(PLAIN.badge_colour, Kind::DEFAULT_BADGE_COLOUR);
        assert_eq!(PLAIN.description, "");
    }

    #[test]
    fn a_kind_states_its_settings_and_badge() {
        let mut generator = SchemaGenerator::default();
        let schema = (FULL.settings_schema)(&mut generator).to_value();
        assert_eq!(schema["properties"]["domain"]["description"], "Required.");
        assert_eq!(schema["required"], serde_json::json!(["domain"]));
        assert!(schema["properties"]["hint"].is_object());
        assert_eq!(FULL.badge_colour, "#123456");
        assert_eq!(FULL.description, "A kind with everything.");
        assert_eq!(FULL.name, "full");
    }
}

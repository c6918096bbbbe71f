//! Building an entry's provider: the kind's factory, or the shared library of a `dylib` entry,
//! and reporting what either refuses at the key it names.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use authnz_plugin::{IdentityProvider, ProviderSettings, TomlTable, TomlValue};

use super::fields::{Context, Place};
use crate::registry::{Registry, DYLIB_KIND};

/// The entry's provider and where its code comes from: the kind's factory, or the library of a
/// `dylib` entry; `Err`: the settings it refused. `None` for a kind without a factory.
pub(super) fn build(
    cx: &Context,
    registry: &Registry,
    kind: &str,
    name: &str,
    settings: TomlTable,
) -> Option<Built> {
    if kind == DYLIB_KIND {
        return Some(load_dylib(cx, name.to_string(), settings));
    }
    let factory = registry.factory(kind)?;
    let built = factory(&ProviderSettings {
        name: name.to_string(),
        settings,
    });
    Some(built.map(|provider| {
        (
            Arc::<dyn IdentityProvider>::from(provider),
            "built-in".to_string(),
        )
    }))
}

/// A built provider and its origin, or the settings errors of its factory.
type Built = Result<(Arc<dyn IdentityProvider>, String), Vec<authnz_plugin::ConfigError>>;

/// Reports each settings error of a factory at the key it names (else at the entry).
pub(super) fn report_refusals(
    cx: &mut Context,
    errors: Vec<authnz_plugin::ConfigError>,
    setting_spans: &BTreeMap<String, Range<usize>>,
    core_keys: &[String],
    at: &Place,
) {
    for mut error in errors {
        // A misspelled core key reaches the provider as an unknown setting.
        if error.message.starts_with("unknown key") {
            if let Some(close) =
                authnz_plugin::did_you_mean(&error.key, core_keys.iter().map(String::as_str))
            {
                error.message = format!("unknown key (did you mean `{close}`?)");
            }
        }
        let span = setting_spans
            .get(&error.key)
            .cloned()
            .unwrap_or_else(|| at.span.clone());
        cx.issue(span, &at.key(&error.key), error.message);
    }
}

/// Loads a `kind = "dylib"` provider: `path` (relative to the config file) names the library,
/// the other settings go to it.
fn load_dylib(
    cx: &Context,
    name: String,
    mut settings: TomlTable,
) -> Result<(Arc<dyn IdentityProvider>, String), Vec<authnz_plugin::ConfigError>> {
    let path = match settings.remove("path") {
        Some(TomlValue::String(path)) => cx.resolve(&path),
        Some(_) => {
            return Err(vec![authnz_plugin::ConfigError::new(
                "path",
                "expected a string",
            )])
        }
        None => {
            return Err(vec![authnz_plugin::ConfigError::new(
                "path",
                "missing: kind \"dylib\" needs path = \"/path/to/libprovider.so\"",
            )])
        }
    };
    let provider = crate::dylib::load(&path, &ProviderSettings { name, settings })?;
    let origin = format!(
        "{} (kind {}, authnz-plugin {})",
        path.display(),
        provider.describe().kind,
        provider.sdk_version()
    );
    Ok((Arc::new(provider), origin))
}

//! The languages of the pages: message catalogues in Fluent (`core/locales/<lang>.ftl`, built
//! into the binary), the language of a request (a `lang` the person chose, which sticks for the
//! visit, else the browser's `Accept-Language`, else English), and [`t`] to say a message in it.

use std::sync::LazyLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};

/// The languages there are catalogues for, English first (the fallback).
pub const LANGUAGES: &[&str] = &["en", "de", "fr", "es"];

/// The catalogues, in the order of [`LANGUAGES`].
pub const CATALOGUES: &[(&str, &str)] = &[
    ("en", include_str!("../locales/en.ftl")),
    ("de", include_str!("../locales/de.ftl")),
    ("fr", include_str!("../locales/fr.ftl")),
    ("es", include_str!("../locales/es.ftl")),
];

/// The cookie that keeps a chosen language for the visit.
pub const LANG_COOKIE: &str = "authnz_lang";

/// What a message no catalogue defines renders as: visible, and found by the tests.
pub const MISSING: &str = "⟦missing message⟧";

static BUNDLES: LazyLock<Vec<(&'static str, FluentBundle<FluentResource>)>> = LazyLock::new(|| {
    CATALOGUES
        .iter()
        .map(|(lang, text)| {
            let id: unic_langid::LanguageIdentifier = lang.parse().unwrap_or_default();
            let mut bundle = FluentBundle::new_concurrent(vec![id]);
            // The pages are left-to-right; isolation marks would only garble copied text.
            bundle.set_use_isolating(false);
            // A catalogue that does not parse is a build error (see the tests); at run time
            // whatever parsed is used.
            let resource =
                FluentResource::try_new(text.to_string()).unwrap_or_else(|(resource, _)| resource);
            let _ = bundle.add_resource(resource);
            (*lang, bundle)
        })
        .collect()
});

tokio::task_local! {
    /// The language of the request in progress.
    static LANG: &'static str;
    /// The admin's own words for some messages (`[server.branding.messages.<lang>]`).
    static OVERRIDES: Option<std::sync::Arc<Overrides>>;
}

/// Messages an admin replaced, per language: consulted before the built-in catalogues.
pub struct Overrides {
    bundles: Vec<(&'static str, FluentBundle<FluentResource>)>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.bundles.iter().map(|(lang, _)| lang))
            .finish()
    }
}

impl Overrides {
    /// From (language, key, Fluent text) triples already checked with [`check_override`].
    pub fn new(messages: &[(&'static str, String, String)]) -> Self {
        let bundles = LANGUAGES
            .iter()
            .filter(|lang| messages.iter().any(|(l, _, _)| l == *lang))
            .map(|lang| {
                let text: String = messages
                    .iter()
                    .filter(|(l, _, _)| l == lang)
                    .map(|(_, key, value)| format!("{key} = {value}\n"))
                    .collect();
                let id: unic_langid::LanguageIdentifier = lang.parse().unwrap_or_default();
                let mut bundle = FluentBundle::new_concurrent(vec![id]);
                bundle.set_use_isolating(false);
                let resource =
                    FluentResource::try_new(text).unwrap_or_else(|(resource, _)| resource);
                let _ = bundle.add_resource(resource);
                (*lang, bundle)
            })
            .collect();
        Self { bundles }
    }
}

/// Why an admin's message `key` = `value` cannot replace a built-in one, if it cannot.
pub fn check_override(key: &str, value: &str) -> Option<String> {
    let known = keys_of(CATALOGUES[0].1);
    if !known.iter().any(|k| k == key) {
        return Some(
            match authnz_plugin::did_you_mean(key, known.iter().map(String::as_str)) {
                Some(close) => format!("no such message (did you mean `{close}`?)"),
                None => "no such message (the keys are those of core/locales/en.ftl)".to_string(),
            },
        );
    }
    if value.trim().is_empty() || value.contains(['\n', '\r']) {
        return Some("must be one line of text".to_string());
    }
    match FluentResource::try_new(format!("{key} = {value}\n")) {
        Ok(_) => None,
        Err(_) => Some(
            "is not a Fluent message (a `{` must open a placeable such as `{ $name }`)".to_string(),
        ),
    }
}

/// Runs `request` with its pages in `lang`, and `overrides` before the built-in messages.
pub async fn in_language<F: std::future::Future>(
    lang: &'static str,
    overrides: Option<std::sync::Arc<Overrides>>,
    request: F,
) -> F::Output {
    OVERRIDES.scope(overrides, LANG.scope(lang, request)).await
}

/// Runs `render` in English: for the pages that have no catalogue entries yet, so that they do
/// not declare a language they are not written in.
pub fn in_english<R>(render: impl FnOnce() -> R) -> R {
    LANG.sync_scope("en", render)
}

/// The language of the request in progress (English outside of one).
pub fn lang() -> &'static str {
    LANG.try_with(|lang| *lang).unwrap_or("en")
}

/// A language of [`LANGUAGES`] named by `tag` (`de`, `de-AT`, `FR`), if there is one.
pub fn supported(tag: &str) -> Option<&'static str> {
    let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
    LANGUAGES.iter().copied().find(|lang| *lang == primary)
}

/// The language for a request: the one chosen (`lang`), else the best of `Accept-Language`
/// (by quality, then order), else `default`.
pub fn negotiate(
    chosen: Option<&str>,
    accept_language: Option<&str>,
    default: &'static str,
) -> &'static str {
    if let Some(lang) = chosen.and_then(supported) {
        return lang;
    }
    let mut best: Option<(f32, &'static str)> = None;
    for item in accept_language.unwrap_or_default().split(',').take(32) {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or_default();
        let quality = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if let Some(lang) = supported(tag).filter(|_| quality > 0.0) {
            if best.is_none_or(|(q, _)| quality > q) {
                best = Some((quality, lang));
            }
        }
    }
    best.map(|(_, lang)| lang).unwrap_or(default)
}

/// Message `key` in the request's language (English where that catalogue lacks it), with
/// `args`. Arguments are put in as given: escape what goes into HTML first.
pub fn t_args(key: &str, args: &[(&str, &str)]) -> String {
    let wanted = lang();
    let overrides = OVERRIDES.try_with(Clone::clone).ok().flatten();
    let replaced = overrides
        .iter()
        .flat_map(|overrides| overrides.bundles.iter())
        .filter(|(lang, _)| *lang == wanted);
    for (_, bundle) in replaced
        .chain(BUNDLES.iter().filter(|(lang, _)| *lang == wanted))
        .chain(BUNDLES.iter().filter(|(lang, _)| *lang == "en"))
    {
        let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) else {
            continue;
        };
        let mut fluent_args = FluentArgs::new();
        for (name, value) in args {
            fluent_args.set(*name, *value);
        }
        let mut errors = Vec::new();
        return bundle
            .format_pattern(pattern, Some(&fluent_args), &mut errors)
            .into_owned();
    }
    MISSING.to_string()
}

/// Message `key` in the catalogue of `lang` (for a language's own name).
pub fn in_catalogue(lang: &str, key: &str) -> String {
    BUNDLES
        .iter()
        .find(|(l, _)| *l == lang)
        .and_then(|(_, bundle)| {
            let pattern = bundle.get_message(key)?.value()?;
            let mut errors = Vec::new();
            Some(
                bundle
                    .format_pattern(pattern, None, &mut errors)
                    .into_owned(),
            )
        })
        .unwrap_or_else(|| MISSING.to_string())
}

/// The `message` of a JSON error with `code`, in the request's language when that is not
/// English and its catalogue has one (`error-<code>`); `None`: keep the English message, which
/// may say more than the code.
pub fn error_message(code: &str) -> Option<String> {
    let lang = lang();
    if lang == "en" {
        return None;
    }
    let key = format!("error-{}", code.replace('_', "-"));
    let message = in_catalogue(lang, &key);
    (message != MISSING).then_some(message)
}

/// Message `key` in the request's language.
pub fn t(key: &str) -> String {
    t_args(key, &[])
}

/// The messages a catalogue defines: the identifiers that start a line (`key = ...`).
pub fn keys_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_once(" ="))
        .map(|(key, _)| key)
        .filter(|key| {
            key.starts_with(|c: char| c.is_ascii_lowercase())
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_parses_and_has_every_key_the_others_have() {
        let english = keys_of(CATALOGUES[0].1);
        assert!(english.len() > 50, "{english:?}");
        for (lang, text) in CATALOGUES {
            if let Err((_, errors)) = FluentResource::try_new(text.to_string()) {
                panic!("{lang}.ftl does not parse: {errors:?}");
            }
            let keys = keys_of(text);
            let missing: Vec<_> = english.iter().filter(|k| !keys.contains(k)).collect();
            let extra: Vec<_> = keys.iter().filter(|k| !english.contains(k)).collect();
            assert!(missing.is_empty(), "{lang}.ftl lacks {missing:?}");
            assert!(
                extra.is_empty(),
                "{lang}.ftl has keys English lacks: {extra:?}"
            );
        }
    }

    /// Every message the code asks for by name is in the catalogues (they have the same keys,
    /// see above): a page never shows [`MISSING`] for a typo.
    #[test]
    fn every_message_the_code_names_is_defined() {
        fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    sources(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push((
                        path.display().to_string(),
                        std::fs::read_to_string(&path).unwrap(),
                    ));
                }
            }
        }
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let defined = keys_of(CATALOGUES[0].1);
        let mut named = 0;
        // This file's own tests ask for a missing key on purpose.
        for (path, text) in files.iter().filter(|(path, _)| !path.ends_with("i18n.rs")) {
            for call in ["t(", "t_args("] {
                for (at, _) in text.match_indices(call) {
                    // `t(` itself, not the end of another name (`get(`).
                    let before = text[..at].chars().next_back().unwrap_or(' ');
                    if before.is_alphanumeric() || before == '_' || before == '.' {
                        continue;
                    }
                    let Some(rest) = text[at + call.len()..].trim_start().strip_prefix('"') else {
                        continue; // a key computed at run time
                    };
                    let key: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                        .collect();
                    named += 1;
                    assert!(defined.contains(&key), "{path}: {key:?} is in no catalogue");
                }
            }
        }
        assert!(named > 60, "found only {named} messages named in the code");
    }

    #[test]
    fn the_language_is_chosen_then_accepted_then_the_default() {
        assert_eq!(negotiate(None, Some("de-DE,de;q=0.9,en;q=0.8"), "en"), "de");
        assert_eq!(
            negotiate(None, Some("ja, fr-CA;q=0.7, es;q=0.5"), "en"),
            "fr"
        );
        assert_eq!(negotiate(None, Some("en;q=0.4, es;q=0.9"), "en"), "es");
        assert_eq!(negotiate(None, Some("ja, zh"), "en"), "en");
        assert_eq!(negotiate(None, Some("de;q=0"), "en"), "en");
        assert_eq!(
            negotiate(Some("fr"), Some("de"), "en"),
            "fr",
            "a choice wins"
        );
        assert_eq!(
            negotiate(Some("xx"), Some("de"), "en"),
            "de",
            "an unknown choice is ignored"
        );
        assert_eq!(negotiate(None, None, "es"), "es");
    }

    #[tokio::test]
    async fn messages_are_said_in_the_language_of_the_request() {
        assert_eq!(t("sign-in-title"), "Sign in", "English outside a request");
        let german = in_language("de", None, async { t("sign-in-title") }).await;
        assert_eq!(german, "Anmelden");
        let french = in_language("fr", None, async {
            t_args("connect-provider", &[("label", "Corp")])
        })
        .await;
        assert_eq!(french, "Lier Corp");
        assert_eq!(t("no-such-key"), MISSING);
    }

    #[tokio::test]
    async fn an_admins_words_replace_the_built_in_ones_in_their_language_only() {
        let overrides = std::sync::Arc::new(Overrides::new(&[
            ("en", "sign-in-title".into(), "Sign in to Example".into()),
            (
                "de",
                "connect-provider".into(),
                "Mit { $label } verknüpfen".into(),
            ),
        ]));
        let said = |lang: &'static str, key: &'static str| {
            let overrides = Some(std::sync::Arc::clone(&overrides));
            in_language(
                lang,
                overrides,
                async move { t_args(key, &[("label", "Corp")]) },
            )
        };
        assert_eq!(said("en", "sign-in-title").await, "Sign in to Example");
        assert_eq!(
            said("de", "sign-in-title").await,
            "Anmelden",
            "not replaced in German"
        );
        assert_eq!(said("de", "connect-provider").await, "Mit Corp verknüpfen");
        assert_eq!(
            check_override("sign-in-titel", "x").as_deref(),
            Some("no such message (did you mean `sign-in-title`?)")
        );
        assert!(check_override("sign-in-title", "a { b").is_some());
        assert!(check_override("sign-in-title", "two\nlines").is_some());
        assert_eq!(check_override("sign-in-title", "Welcome to { $org }"), None);
    }
}

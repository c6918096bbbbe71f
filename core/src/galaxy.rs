//! `authnz import-galaxy`: Galaxy's `oidc_backends_config.xml` turned into an equivalent
//! `idps.toml`, with a comment for everything that does not carry over.
//!
//! Client secrets are not copied out of the XML: each becomes a `${NAME_CLIENT_SECRET}`
//! reference (the IdP is reported unavailable until it is set), so the new file holds no secret.

use std::fmt::Write;

/// An import failure: the XML could not be read as Galaxy's format.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(String);

fn quoted(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

/// A Galaxy provider's options, by element name.
struct Provider {
    name: String,
    options: Vec<(String, String)>,
}

impl Provider {
    fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|value| !value.is_empty() && *value != "..." && *value != "…")
    }
}

/// Converts Galaxy's XML into `idps.toml` text.
pub fn import(xml: &str) -> Result<String, ImportError> {
    let document =
        roxmltree::Document::parse(xml).map_err(|err| ImportError(format!("not XML: {err}")))?;
    let root = document.root_element();
    if root.tag_name().name() != "OIDC" {
        return Err(ImportError(format!(
            "expected <OIDC>, found <{}>",
            root.tag_name().name()
        )));
    }
    let providers: Vec<Provider> = root
        .children()
        .filter(|node| node.is_element() && node.tag_name().name() == "provider")
        .map(|node| Provider {
            name: node.attribute("name").unwrap_or_default().to_string(),
            options: node
                .children()
                .filter(|child| child.is_element())
                .map(|child| {
                    (
                        child.tag_name().name().to_string(),
                        child.text().unwrap_or_default().trim().to_string(),
                    )
                })
                .collect(),
        })
        .collect();
    let mut out = String::from(
        "#:schema ./openapi/idps.schema.json\n# Imported from Galaxy's oidc_backends_config.xml by `authnz import-galaxy`.\n# Check it with `authnz check --config idps.toml`.\n\n",
    );
    // The public URL, from the redirect URIs (`<public_url>/authnz/<name>/callback`).
    let public_urls: Vec<String> = providers
        .iter()
        .filter_map(|p| p.get("redirect_uri"))
        .filter_map(|uri| uri.find("/authnz/").map(|i| uri[..i].to_string()))
        .collect();
    out.push_str("[server]\n");
    match public_urls.first() {
        Some(url) => {
            let _ = writeln!(out, "public_url = {}", quoted(url));
            if public_urls.iter().any(|other| other != url) {
                out.push_str("# NOTE: the providers' redirect_uri values name different hosts; authnz derives every\n# redirect URI from this one public_url.\n");
            }
        }
        None => out.push_str("# public_url = \"https://galaxy.example.org\"  # redirect URIs are <public_url>/authnz/<name>/callback\n"),
    }
    for provider in &providers {
        out.push('\n');
        write_provider(&mut out, provider);
    }
    Ok(out)
}

fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn write_provider(out: &mut String, provider: &Provider) {
    let galaxy_name = provider.name.trim();
    let name: String = galaxy_name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut entry = Entry {
        lines: Vec::new(),
        notes: Vec::new(),
        handled: vec!["client_id", "client_secret", "redirect_uri"],
    };
    let kind = match name.as_str() {
        "google" | "globus" | "elixir" | "lifescience" | "cilogon" | "keycloak" | "okta"
        | "egi_checkin" | "nfdi" | "einfracz" | "tapis" => name.clone(),
        "azure" => "entra".to_string(),
        _ => "oidc".to_string(),
    };
    entry.lines.push(format!("kind = {}", quoted(&kind)));
    kind_settings(&mut entry, &kind, &name, provider);
    common_settings(&mut entry, &kind, galaxy_name, provider);
    credentials(&mut entry, &name, provider);
    leftovers(&mut entry, provider);
    let _ = writeln!(out, "[idps.{name}]");
    for note in entry.notes {
        let _ = writeln!(out, "# NOTE: {note}");
    }
    for line in entry.lines {
        let _ = writeln!(out, "{line}");
    }
}

/// What one Galaxy provider becomes: the entry's lines, notes for the admin, and the Galaxy
/// options already carried over.
struct Entry {
    lines: Vec<String>,
    notes: Vec<String>,
    handled: Vec<&'static str>,
}

/// The settings of the kind itself, from the Galaxy options that locate the IdP.
fn kind_settings(entry: &mut Entry, kind: &str, name: &str, provider: &Provider) {
    match kind {
        "keycloak" => {
            entry.handled.push("url");
            // Galaxy: <url>https://host/realms/<realm>/</url>.
            match provider
                .get("url")
                .and_then(|url| url.trim_end_matches('/').split_once("/realms/"))
            {
                Some((base, realm)) => {
                    entry.lines.push(format!("url = {}", quoted(base)));
                    entry.lines.push(format!("realm = {}", quoted(realm)));
                }
                None => {
                    entry.lines.push("url = \"https://keycloak.example.org\"  # TODO: Galaxy's <url> had no /realms/<realm>".into());
                    entry.lines.push("realm = \"master\"".into());
                }
            }
        }
        "okta" => {
            entry.handled.push("api_url");
            // Galaxy: <api_url>https://<company>.okta.com/oauth2/<server>/</api_url>.
            match provider
                .get("api_url")
                .and_then(|url| url.split_once("://"))
                .map(|(_, rest)| rest.trim_end_matches('/'))
            {
                Some(rest) => {
                    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
                    entry.lines.push(format!("domain = {}", quoted(domain)));
                    if let Some(server) = path.strip_prefix("oauth2/").filter(|s| !s.is_empty()) {
                        entry
                            .lines
                            .push(format!("authorization_server = {}", quoted(server)));
                    }
                }
                None => entry.lines.push(format!(
                    "domain = \"${{{}_DOMAIN}}\"  # TODO: your Okta domain",
                    env_name(name)
                )),
            }
        }
        "entra" => {
            entry.handled.push("api_url");
            entry.handled.push("tenant_id");
            // Galaxy: <api_url>https://login.microsoftonline.com/<tenant>/oauth2/v2.0/authorize</api_url>.
            let tenant = provider.get("tenant_id").map(str::to_string).or_else(|| {
                provider
                    .get("api_url")
                    .and_then(|url| url.split("login.microsoftonline.com/").nth(1))
                    .and_then(|rest| rest.split('/').next())
                    .map(str::to_string)
            });
            match tenant {
                Some(tenant) => entry.lines.push(format!("tenant = {}", quoted(&tenant))),
                None => entry
                    .lines
                    .push("tenant = \"organizations\"  # TODO: your tenant id".into()),
            }
        }
        "oidc" => {
            entry.handled.push("url");
            entry.handled.push("well_known_oidc_config_uri");
            let issuer = provider
                .get("well_known_oidc_config_uri")
                .map(|uri| {
                    uri.trim_end_matches("/.well-known/openid-configuration")
                        .to_string()
                })
                .or_else(|| {
                    provider
                        .get("url")
                        .map(|url| url.trim_end_matches('/').to_string())
                });
            match issuer {
                Some(issuer) => entry.lines.push(format!(
                    "issuer = {}  # check: must be the IdP's exact issuer",
                    quoted(&issuer)
                )),
                None => entry
                    .lines
                    .push("issuer = \"https://idp.example.org\"  # TODO: the IdP's issuer".into()),
            }
            if name == "custos" {
                entry
                    .notes
                    .push("Custos is retired; this entry treats it as any OpenID provider.".into());
            }
        }
        "cilogon" => {
            entry.handled.push("url");
            if let Some(idps) = provider.get("allowed_idp") {
                entry.handled.push("allowed_idp");
                let list: Vec<String> = idps.split(',').map(|idp| quoted(idp.trim())).collect();
                entry
                    .lines
                    .push(format!("allowed_idps = [{}]", list.join(", ")));
            }
        }
        _ => {}
    }
}

/// The keys every kind takes: label, icon, prompt, username claim, scopes, hints, flags.
fn common_settings(entry: &mut Entry, kind: &str, galaxy_name: &str, provider: &Provider) {
    for (galaxy, ours) in [
        ("label", "label"),
        ("custom_button_text", "label"),
        ("icon", "icon"),
        ("prompt", "prompt"),
        ("username_key", "username_claim"),
    ] {
        if let Some(value) = provider.get(galaxy) {
            if !entry
                .lines
                .iter()
                .any(|line| line.starts_with(&format!("{ours} =")))
            {
                entry.lines.push(format!("{ours} = {}", quoted(value)));
            }
            entry.handled.push(galaxy);
        }
    }
    if !entry.lines.iter().any(|line| line.starts_with("label =")) && !galaxy_name.is_empty() {
        entry.lines.push(format!("label = {}", quoted(galaxy_name)));
    }
    if let Some(scopes) = provider.get("extra_scopes") {
        let list: Vec<String> = scopes
            .split(',')
            .map(|scope| quoted(scope.trim()))
            .filter(|s| s != "\"\"")
            .collect();
        entry
            .lines
            .push(format!("extra_scopes = [{}]", list.join(", ")));
        entry.handled.push("extra_scopes");
    }
    if let Some(hint) = provider.get("idphint") {
        if matches!(kind, "keycloak" | "cilogon") {
            entry.lines.push(format!("idp_hint = {}", quoted(hint)));
        } else {
            entry.lines.push(format!(
                "# idphint = {} was not carried over: this kind has no hint",
                quoted(hint)
            ));
        }
        entry.handled.push("idphint");
    }
    for (galaxy, ours) in [
        ("pkce_support", "pkce"),
        ("require_create_confirmation", "require_create_confirmation"),
    ] {
        if let Some(value) = provider.get(galaxy) {
            match value.to_lowercase().as_str() {
                "true" | "false" => entry
                    .lines
                    .push(format!("{ours} = {}", value.to_lowercase())),
                _ => entry.notes.push(format!(
                    "<{galaxy}>{value}</{galaxy}> is not true or false; not carried over."
                )),
            }
            entry.handled.push(galaxy);
        }
    }
}

/// The client id, and the secret as a variable (the XML's secret is never copied).
fn credentials(entry: &mut Entry, name: &str, provider: &Provider) {
    let env = env_name(name);
    match provider.get("client_id") {
        Some(id) => entry.lines.push(format!("client_id = {}", quoted(id))),
        None => entry
            .lines
            .push(format!("client_id = \"${{{env}_CLIENT_ID}}\"")),
    }
    entry.lines.push(format!(
        "client_secret = \"${{{env}_CLIENT_SECRET}}\"  # set {env}_CLIENT_SECRET (the XML's secret is not copied here)"
    ));
}

/// A note for every Galaxy option not carried over, with the reason.
fn leftovers(entry: &mut Entry, provider: &Provider) {
    for (key, value) in &provider.options {
        if entry.handled.contains(&key.as_str()) {
            continue;
        }
        let why = match key.as_str() {
            "enable_idp_logout" => "authnz always offers the IdP's end-session URL at logout",
            "ca_bundle" => "authnz uses the system's trust store",
            "accepted_audiences" => "bearer IdP tokens are not accepted yet",
            "url" | "api_url" => "this kind derives its endpoints itself",
            _ => "authnz has no equivalent",
        };
        entry
            .notes
            .push(format!("<{key}>{value}</{key}> not carried over: {why}."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn sample() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/oidc_backends_config.xml.sample");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn galaxys_sample_becomes_a_valid_config() {
        let text = import(&sample()).unwrap_or_default();
        let config = crate::config::parse(
            std::path::Path::new("imported.toml"),
            &text,
            &Registry::builtin(),
            &|_| None,
        )
        .unwrap_or_else(|errors| panic!("{errors}\n---\n{text}"));
        // Every provider came over; without their secrets set they wait, unavailable.
        let names: Vec<&str> = config
            .unavailable
            .iter()
            .map(|idp| idp.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["google", "globus", "custos", "cilogon", "keycloak", "elixir", "okta", "azure"],
            "{text}"
        );
        assert!(config.idps.is_empty());
        let problems = crate::schema::conformance::check(&text);
        assert!(
            problems.is_empty(),
            "the import satisfies the schema: {problems:?}"
        );
        assert_eq!(config.server.public_url.as_str(), "http://localhost:8080/");
        for expected in [
            "[idps.keycloak]\nkind = \"keycloak\"\nurl = \"https://keycloak.example.org\"\nrealm = \"master\"",
            "[idps.azure]\nkind = \"entra\"",
            "[idps.custos]\n# NOTE: Custos is retired",
            "issuer = \"https://dev.custos.usecustos.org/apiserver/identity-management/v1.0.0\"",
            "icon = \"https://developers.google.com/identity/images/btn_google_signin_light_normal_web.png\"",
            "prompt = \"consent\"",
            "client_secret = \"${GOOGLE_CLIENT_SECRET}\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn options_map_and_unknown_ones_are_noted() {
        let xml = r#"<OIDC>
<provider name="Okta"><client_id>abc</client_id><client_secret>top-secret-value</client_secret>
<redirect_uri>https://galaxy.example.org/authnz/okta/callback</redirect_uri>
<api_url>https://acme.okta.com/oauth2/default/</api_url><extra_scopes>groups,offline_access</extra_scopes>
<pkce_support>false</pkce_support><enable_idp_logout>true</enable_idp_logout><frobnicate>1</frobnicate></provider>
<provider name="azure"><client_id>x</client_id><api_url>https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/authorize</api_url></provider>
</OIDC>"#;
        let text = import(xml).unwrap_or_default();
        for expected in [
            "public_url = \"https://galaxy.example.org\"",
            "domain = \"acme.okta.com\"\nauthorization_server = \"default\"",
            "extra_scopes = [\"groups\", \"offline_access\"]",
            "pkce = false",
            "client_id = \"abc\"",
            "# NOTE: <enable_idp_logout>true</enable_idp_logout> not carried over",
            "# NOTE: <frobnicate>1</frobnicate> not carried over: authnz has no equivalent.",
            "tenant = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("top-secret-value"), "a secret was copied");
        assert!(import("<nope/>").is_err());
        assert!(import("not xml").is_err());
    }
}

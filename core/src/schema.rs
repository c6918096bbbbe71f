//! The file format of `idps.toml` as a JSON Schema, for editors (`authnz schema`,
//! `openapi/idps.schema.json`), with a description and a default for every field it can have.
//!
//! `[server]` and the keys every kind takes are stated here as schemars types. Each kind's own
//! settings come from its descriptor in the [`Registry`], so `[idps.<name>]` is one variant per
//! registered kind (plus `dylib`) and a new kind needs nothing here.
//!
//! The server's parser (`config`) reads the file with spans to report every problem with its
//! position; the schema states the same format for tools. Tests keep the two in step: every
//! example config in the repository must satisfy both.

use std::collections::BTreeMap;

use authnz_plugin::Kind;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::registry::{Registry, DYLIB_KIND};

/// An `idps.toml` file.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "authnz idps.toml")]
pub struct IdpsFile {
    /// The server itself. Read at start; a reload does not change it.
    #[serde(default)]
    #[schemars(extend("default" = null))]
    pub server: Option<ServerSection>,
    /// One table per identity provider; the name appears in URLs (`/authnz/<name>/login`):
    /// 1-63 lowercase letters, digits, `-` or `_`.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub idps: BTreeMap<String, IdpEntry>,
    /// One table per application behind a reverse proxy that asks
    /// `GET /authnz/auth?app=<name>` who is signed in; the name appears in that URL.
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub apps: BTreeMap<String, AppSection>,
}

/// `[server]`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    #[schemars(extend("default" = "127.0.0.1:8080"))]
    pub listen: Option<String>,
    /// The URL people reach authnz at; redirect URIs are `<public_url>/authnz/<name>/callback`.
    /// `http://` only for loopback hosts. Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// The sled database directory, relative to this file. Not with `[server.postgres]`.
    #[schemars(extend("default" = "data/authnz.sled"))]
    pub database: Option<String>,
    /// A PostgreSQL database shared by every replica, instead of sled's `database`.
    pub postgres: Option<PostgresSection>,
    /// The pages' language when the browser asks for none of en, de, fr, es.
    #[schemars(extend("default" = "en", "enum" = ["en", "de", "fr", "es"]))]
    pub default_language: Option<String>,
    /// The organisation's look on every page.
    pub branding: Option<BrandingSection>,
    /// The key that encrypts IdP tokens at rest. With sled, generated on first start (default:
    /// `<database>.key`); with `[server.postgres]` required and never generated: every replica
    /// is given the same file, made once with `authnz keygen PATH`.
    pub secret_key_file: Option<String>,
    /// Earlier keys, after a rotation, so that the tokens they sealed still open.
    #[schemars(extend("default" = []))]
    pub previous_secret_key_files: Option<Vec<String>>,
    /// Who may use `/api/admin/*`: user ids (the `id` of `GET /api/users/me`) or identities
    /// written `"<idp>:<subject>"`. Usernames are refused: IdP claims choose them.
    #[schemars(extend("default" = []))]
    pub admins: Option<Vec<String>>,
    /// How long a login session lasts, in minutes.
    #[schemars(range(min = 1), extend("default" = 480))]
    pub session_ttl_minutes: Option<u64>,
    /// At most this many logins started by one client address (an IPv6 client: its /64) per
    /// ten minutes (then 429).
    #[schemars(range(min = 1), extend("default" = 300))]
    pub max_logins_per_client: Option<u64>,
    /// Reverse proxies (addresses or networks: "127.0.0.1", "10.0.0.0/8", "::1") whose
    /// `X-Forwarded-For` is believed about who the client is, for the per-client login cap.
    /// Empty (the default): the header is ignored and the peer address counts, so behind a
    /// proxy every person shares the proxy's cap.
    #[schemars(extend("default" = []))]
    pub trusted_proxies: Option<Vec<String>>,
    /// At most this many sign-ins in progress are kept (in memory, per process; sled only);
    /// when full, the oldest is dropped and that person starts again.
    #[schemars(range(min = 1), extend("default" = 100000))]
    pub max_pending_logins: Option<u64>,
    /// sled's page cache, in MiB.
    #[schemars(range(min = 1), extend("default" = 16))]
    pub cache_mb: Option<u64>,
    /// The session cookie's `Domain` (e.g. `example.org`), so that apps on its subdomains
    /// receive it; the cookie is then `__Secure-authnz_session`, and every host under the
    /// domain can read and set it. Needs an https `public_url` under the domain. Default:
    /// this host only (`__Host-authnz_session`).
    pub cookie_domain: Option<String>,
    /// A P-256 private key (PKCS#8 PEM, as `openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256` writes it) that signs app assertions; shared by replicas.
    /// Its public key is at `/.well-known/jwks.json`.
    pub signing_key_file: Option<String>,
    /// Earlier signing keys, still published at the JWKS after a rotation.
    #[schemars(extend("default" = []))]
    pub previous_signing_key_files: Option<Vec<String>>,
}

/// `[apps.<name>]`: an application behind a reverse proxy.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// Where the app is served (`https://galaxy.example.org`, or with a path): the original
    /// URLs the proxy reports and absolute `next` URLs must be under it.
    pub url: String,
    /// The `aud` of its assertions. Default: `url`.
    pub audience: Option<String>,
    /// The identity header names: `authnz` (`X-Authnz-User`, `-User-Id`, `-Name`, `-Email`,
    /// `-Idp`, `-Groups`), `oauth2-proxy` (`X-Auth-Request-User`, `-Email`,
    /// `-Preferred-Username`, `-Groups`) or `authelia` (`Remote-User`, `-Email`, `-Name`,
    /// `-Groups`).
    #[schemars(extend("default" = "authnz", "enum" = ["authnz", "oauth2-proxy", "authelia"]))]
    pub headers: Option<String>,
    /// 403 for an account without a verified email address it owns.
    #[schemars(extend("default" = false))]
    pub require_verified_email: Option<bool>,
    /// Only sessions started with these IdPs (else 403). Default: any.
    #[schemars(extend("default" = []))]
    pub allowed_idps: Option<Vec<String>>,
    /// Only people in one of these groups, `<idp>:<group>` (else 403). Default: anyone.
    #[schemars(extend("default" = []))]
    pub allowed_groups: Option<Vec<String>>,
    /// Credentials the app checks itself, `header:<name>` or `query:<name>`: a request with
    /// one and no session passes without an identity.
    #[schemars(extend("default" = []))]
    pub anonymous_if: Option<Vec<String>>,
    /// Also send `X-Authnz-Assertion`, an ES256 JWT (needs `signing_key_file`).
    #[schemars(extend("default" = false))]
    pub assertion: Option<bool>,
    /// The assertion's lifetime in seconds.
    #[schemars(range(min = 1, max = 300), extend("default" = 60))]
    pub assertion_ttl_seconds: Option<u64>,
    /// Step-up: the session's sign-in at its IdP (the ID token's `auth_time`) must be at most
    /// this many seconds old; otherwise the check answers 401 `step_up_required` with a login
    /// URL that asks the session's IdP for a fresh sign-in (`max_age`).
    #[schemars(range(min = 1, max = 31536000))]
    pub max_auth_age_seconds: Option<u64>,
    /// Step-up: the session's ID token `acr` must be one of these; otherwise the login URL asks
    /// the IdP for them (`acr_values`).
    pub acr_values: Option<Vec<String>>,
}

/// `[server.branding]`: read at start (and checked with the config); files relative to this
/// file.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrandingSection {
    /// The organisation's name, in every title and above every heading (1 to 80 characters).
    pub name: Option<String>,
    /// A logo file (.svg, .png, .jpg, .webp or .gif, at most 512 KiB), served by authnz under a
    /// path that changes with its content.
    pub logo: Option<String>,
    /// Buttons and links, `#rgb` or `#rrggbb` (the light scheme; the text on buttons is white
    /// or black, whichever reads better).
    pub primary_color: Option<String>,
    /// A stylesheet appended after the built-in styles (at most 256 KiB, no `<`).
    pub css: Option<String>,
    /// Footer links (https).
    pub privacy_url: Option<String>,
    pub help_url: Option<String>,
    /// Your words for some messages, per language: `[server.branding.messages.en]`
    /// `sign-in-title = "Sign in to Example University"` (the keys of `core/locales/en.ftl`;
    /// one line each, Fluent placeables such as `{ $label }` allowed).
    pub messages:
        Option<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>>,
}

/// `[server.postgres]`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// The database, in libpq form: a URL (`postgresql://authnz@db.internal/authnz`) or
    /// key=value (`host=/run/postgresql dbname=authnz`), a unix-socket directory as host.
    /// `${VAR}` is expanded. No `sslmode` here: say `tls`.
    pub url: String,
    /// A file holding the password (its trailing newline ignored).
    pub password_file: Option<String>,
    /// `verify-full`: TLS, the certificate and the host name verified. `require`: TLS, the
    /// certificate verified, not its name. `disable`: no TLS, for a unix socket or a loopback
    /// address only.
    #[schemars(extend("default" = "verify-full", "enum" = ["verify-full", "require", "disable"]))]
    pub tls: Option<String>,
    /// PEM certificates to trust for the database. Default: the webpki roots.
    pub ca_file: Option<String>,
    /// Connections per replica; a request finding none free within 5 s gets 503
    /// `store_unavailable`.
    #[schemars(range(min = 1), extend("default" = 16))]
    pub pool_size: Option<u64>,
    /// `auto`: every replica applies missing migrations at start (one at a time). `check`:
    /// refuse to start with missing migrations; `authnz migrate --config FILE` applies them.
    #[schemars(extend("default" = "auto", "enum" = ["auto", "check"]))]
    pub migrate: Option<String>,
}

/// What a first login whose verified email belongs to an existing account does.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkExisting {
    /// Refuse (409): sign in with the provider used before.
    Never,
    /// Refuse (409): sign in to the existing account, then connect this IdP from it.
    Confirm,
    /// Link when this IdP and the one that verified the account's address are both listed as
    /// authoritative for its domain (`trusted_email_domains`).
    VerifiedEmail,
}

/// The keys every kind takes, besides `kind`; the core reads them before the kind's own.
#[derive(JsonSchema)]
pub struct CommonKeys {
    /// The button text. Default: the kind's name for itself.
    pub label: Option<String>,
    /// The button icon: an https URL, a path on this server, or a `data:image/` URL. Default:
    /// the kind's own mark (Google, Microsoft, GitHub, Okta, Keycloak, ORCID), else a badge.
    pub icon: Option<String>,
    /// The OAuth client id. `${VAR}` reads the environment (`${VAR:-default}` too); an
    /// unset variable makes the IdP unavailable instead of failing the config.
    pub client_id: Option<String>,
    /// The client secret (or use `client_secret_file`; never both).
    pub client_secret: Option<String>,
    /// A file holding the client secret, relative to this file.
    pub client_secret_file: Option<String>,
    /// How authnz authenticates itself at the IdP's token endpoint (and for revocation and
    /// pushed authorization requests). Default: HTTP Basic with the secret, or the secret in
    /// the body when the IdP's discovery offers only `client_secret_post`; the client id alone
    /// without a secret. `private_key_jwt` signs a fresh assertion with `client_key_file`
    /// for every call (RFC 7523) and needs no secret.
    #[schemars(extend("enum" = ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none"]))]
    pub client_auth: Option<String>,
    /// `private_key_jwt`: a PKCS#8 PEM file of a P-256 (ES256) or RSA (RS256, PS256) key,
    /// relative to this file. Its public key is served at `/authnz/<name>/jwks.json`.
    pub client_key_file: Option<String>,
    /// `private_key_jwt`: the signature algorithm. Default: ES256 for a P-256 key, RS256 for
    /// an RSA key.
    #[schemars(extend("enum" = ["ES256", "RS256", "PS256"]))]
    pub client_key_alg: Option<String>,
    /// `private_key_jwt`: the certificate the IdP registered for the key (Entra), a PEM file;
    /// each assertion names it in its `x5t#S256` header.
    pub client_certificate_file: Option<String>,
    /// The `aud` of client assertions (`private_key_jwt`, `client_secret_jwt`): the IdP's
    /// token endpoint (default; what Entra and most IdPs want) or its issuer.
    #[schemars(extend("enum" = ["token_endpoint", "issuer"], "default" = "token_endpoint"))]
    pub client_assertion_audience: Option<String>,
    /// Pushed authorization requests (RFC 9126): the authorize parameters go to the IdP over
    /// the back channel and the browser carries only `client_id` and `request_uri`. `auto`:
    /// when discovery has a `pushed_authorization_request_endpoint`; `always`: an IdP without
    /// one cannot start a sign-in; `never`: in the URL (refused where the IdP's discovery says
    /// `require_pushed_authorization_requests`).
    #[schemars(extend("enum" = ["auto", "always", "never"], "default" = "auto"))]
    pub par: Option<String>,
    /// How the IdP returns the browser: `query` (a redirect with `code` and `state` in the
    /// URL), or `form_post` (an HTML form the browser posts to the callback; some IdPs need
    /// it, e.g. Sign in with Apple when asking for the name).
    #[schemars(extend("enum" = ["query", "form_post"], "default" = "query"))]
    pub response_mode: Option<String>,
    /// Sender-constrained tokens (RFC 9449 DPoP): each identity's tokens are bound to a key of
    /// its own, kept sealed with them; every token, userinfo, refresh and revocation call
    /// carries a proof. Such tokens work only from authnz (`/api/users/me/tokens/<name>` says
    /// `token_type = "DPoP"`).
    #[schemars(extend("default" = false))]
    pub dpop: Option<bool>,
    /// The issuer to discover (`<issuer>/.well-known/openid-configuration`); overrides
    /// the kind's own. ID tokens must carry exactly this `iss`. `http://` only on loopback.
    pub issuer: Option<String>,
    /// Scopes besides `openid`. Default: the kind's (usually `email`, `profile`).
    pub scopes: Option<Vec<String>>,
    /// Scopes added to the kind's.
    #[schemars(extend("default" = []))]
    pub extra_scopes: Option<Vec<String>>,
    /// The authorize request's `prompt` (`login`, `consent`, `select_account`, ...).
    pub prompt: Option<String>,
    /// Accepted ID-token signature algorithms; `none` is never accepted. Default: the
    /// asymmetric ones the IdP's discovery advertises (RS*, PS*, ES256, ES384, EdDSA),
    /// RS256 if it lists none; HS* only when listed here.
    pub id_token_algs: Option<Vec<String>>,
    /// Also fetch userinfo (its `sub` must match the ID token's).
    #[schemars(extend("default" = true))]
    pub userinfo: Option<bool>,
    /// PKCE with S256.
    #[schemars(extend("default" = true))]
    pub pkce: Option<bool>,
    /// The claim to take the local username from (`email` takes its local part).
    pub username_claim: Option<String>,
    /// The claim holding the person's groups (a list of strings, or one string), recorded
    /// at every login and forwarded to apps as `<idp>:<group>`. Default: the provider's own
    /// mapping (Keycloak's group paths), else `groups`. An IdP that signals an overage
    /// (Entra's `_claim_names`) leaves them unknown, and group policies deny.
    #[schemars(extend("default" = "groups"))]
    pub groups_claim: Option<String>,
    /// What a first login whose verified email belongs to an existing account does.
    #[schemars(extend("default" = "confirm"))]
    pub link_existing: Option<LinkExisting>,
    /// Email domains this IdP is authoritative for (needed by `verified_email`).
    #[schemars(extend("default" = []))]
    pub trusted_email_domains: Option<Vec<String>>,
    /// Ask the person to confirm before a first login creates an account.
    #[schemars(extend("default" = false))]
    pub require_create_confirmation: Option<bool>,
    /// Let one account connect several accounts of this IdP (a personal and a work one);
    /// otherwise the account page offers to connect it only while the account has none, and
    /// connecting a second one is refused (409 `already_connected`).
    #[schemars(extend("default" = false))]
    pub several_accounts: Option<bool>,
    /// Audiences of this IdP's JWT access tokens that `/api/*` accepts as bearer tokens
    /// (Galaxy's `accepted_audiences`); none: its access tokens are not accepted.
    #[schemars(extend("default" = []))]
    pub accepted_audiences: Option<Vec<String>>,
    /// Issuers this entry had before the provider really moved (same accounts, new
    /// address): identities linked under one keep signing in. Without it, a login from
    /// another issuer never matches an identity linked under the old one.
    #[schemars(extend("default" = []))]
    pub previous_issuers: Option<Vec<String>>,
    /// Extra authorize parameters (not those authnz sets itself).
    #[schemars(extend("default" = {}))]
    pub authorize_params: Option<BTreeMap<String, String>>,
}

/// The settings of `kind = "dylib"`; the library's own settings go to it.
#[derive(JsonSchema)]
pub struct DylibSettings {
    /// The library (`.so`), relative to this file; it must not be writable by every user.
    pub path: String,
}

/// One `[idps.<name>]` entry, by `kind`: a reference to the `IdpEntry` definition, which
/// [`schema`] writes from the registry (its variants are not known to a type).
pub struct IdpEntry;

impl JsonSchema for IdpEntry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IdpEntry".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        Schema::new_ref("#/$defs/IdpEntry".to_string())
    }
}

/// The description of the `dylib` variant.
const DYLIB_DESCRIPTION: &str =
    "A provider loaded from a shared library; its own settings go to it.";

/// The JSON Schema of `idps.toml` with the built-in kinds, pretty-printed.
pub fn json_schema() -> String {
    serde_json::to_string_pretty(&schema(&Registry::builtin())).unwrap_or_default()
}

/// The JSON Schema of `idps.toml` with the kinds of `registry`.
pub fn schema(registry: &Registry) -> Schema {
    let mut generator = SchemaGenerator::default();
    let common = CommonKeys::json_schema(&mut generator);
    let mut variants = Vec::new();
    for name in registry.kinds() {
        let variant = match registry.descriptors().find(|kind| kind.name == name) {
            Some(kind) => variant(kind, &common, &mut generator),
            None if name == DYLIB_KIND => {
                let own = DylibSettings::json_schema(&mut generator);
                entry(DYLIB_KIND, DYLIB_DESCRIPTION, &common, &own, true)
            }
            None => continue,
        };
        variants.push(variant);
    }
    generator.definitions_mut().insert(
        "IdpEntry".into(),
        json!({
            "description": "One `[idps.<name>]` entry, by `kind`.",
            "oneOf": variants,
        }),
    );
    generator.into_root_schema_for::<IdpsFile>()
}

/// The variant of one registered kind.
fn variant(kind: &Kind, common: &Schema, generator: &mut SchemaGenerator) -> Value {
    let own = (kind.settings_schema)(generator);
    entry(kind.name, kind.description, common, &own, false)
}

/// An entry of kind `name`: `kind`, the common keys and the kind's own (`own`'s properties and
/// required keys); `open`: other keys allowed too (they go to a library).
fn entry(name: &str, description: &str, common: &Schema, own: &Schema, open: bool) -> Value {
    let mut properties = Map::new();
    properties.insert("kind".into(), json!({"type": "string", "const": name}));
    for schema in [common, own] {
        if let Some(declared) = schema.get("properties").and_then(Value::as_object) {
            properties.extend(declared.clone());
        }
    }
    let mut required = vec![json!("kind")];
    if let Some(Value::Array(own_required)) = own.get("required") {
        required.extend(own_required.iter().cloned());
    }
    let mut entry = json_schema!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": open,
    });
    if !description.is_empty() {
        entry.insert("description".into(), description.into());
    }
    entry.to_value()
}

/// A config held to the composed schema, in tests.
#[cfg(test)]
pub(crate) mod conformance;

#[cfg(test)]
mod tests {
    use super::conformance::check;
    use super::*;
    use crate::registry::Registry;

    fn schema_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/idps.schema.json")
    }

    /// The variant of `kind` in the composed schema.
    fn variant_of(root: &Value, kind: &str) -> Value {
        let variants = root["$defs"]["IdpEntry"]["oneOf"].as_array().cloned();
        let found = variants
            .into_iter()
            .flatten()
            .find(|variant| variant["properties"]["kind"]["const"] == kind);
        found.unwrap_or_default()
    }

    fn keys(schema: &Value) -> Vec<String> {
        let properties = schema["properties"].as_object().into_iter().flatten();
        properties.map(|(key, _)| key.clone()).collect()
    }

    #[test]
    fn committed_schema_matches_the_code() {
        let committed = std::fs::read_to_string(schema_path()).unwrap_or_default();
        assert!(
            committed.trim() == json_schema().trim(),
            "openapi/idps.schema.json is out of date: run `cargo run -p authnz -- schema > openapi/idps.schema.json`"
        );
    }

    #[test]
    fn every_kind_of_the_registry_is_in_the_schema() {
        let root = schema(&Registry::builtin()).to_value();
        let variants = root["$defs"]["IdpEntry"]["oneOf"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let consts: Vec<&str> = variants
            .iter()
            .filter_map(|variant| variant["properties"]["kind"]["const"].as_str())
            .collect();
        assert_eq!(
            consts,
            Registry::builtin().kinds(),
            "one variant per kind, in order"
        );
        for variant in &variants {
            let kind = &variant["properties"]["kind"]["const"];
            assert!(variant["description"].is_string(), "{kind}: no description");
            assert_eq!(
                variant["additionalProperties"],
                kind == DYLIB_KIND,
                "{kind}"
            );
            for (key, property) in variant["properties"].as_object().into_iter().flatten() {
                assert!(
                    key == "kind" || property["description"].is_string(),
                    "{kind}.{key}: no description"
                );
            }
        }
    }

    #[test]
    fn kinds_take_the_common_keys_and_redeclare_none() {
        let root = schema(&Registry::builtin()).to_value();
        let common = keys(&CommonKeys::json_schema(&mut SchemaGenerator::default()).to_value());
        let registry = Registry::builtin();
        for kind in registry.descriptors() {
            let own = keys(&(kind.settings_schema)(&mut SchemaGenerator::default()).to_value());
            assert!(
                own.iter().all(|key| !common.contains(key) && key != "kind"),
                "{}: {own:?} redeclares a key the core reads",
                kind.name
            );
            let all = keys(&variant_of(&root, kind.name));
            assert_eq!(all.len(), 1 + common.len() + own.len(), "{}", kind.name);
        }
    }

    /// Each factory refuses the keys its schema does not declare and takes those it does: the
    /// "this kind knows" list of an unknown key is the schema's list.
    #[test]
    fn factories_take_exactly_the_keys_their_schema_declares() {
        let registry = Registry::builtin();
        for kind in registry.descriptors() {
            let mut declared =
                keys(&(kind.settings_schema)(&mut SchemaGenerator::default()).to_value());
            declared.sort();
            let mut settings = authnz_plugin::TomlTable::new();
            settings.insert("qqqqqqqqqqqq".into(), "x".into());
            let errors = (kind.factory)(&authnz_plugin::ProviderSettings {
                name: "x".into(),
                settings,
            })
            .err()
            .unwrap_or_default();
            let unknown = errors.iter().find(|error| error.key == "qqqqqqqqqqqq");
            let message = unknown
                .map(|error| error.message.as_str())
                .unwrap_or_default();
            let mut known: Vec<String> =
                match message.strip_prefix("unknown key (this kind knows: ") {
                    Some(list) => list
                        .trim_end_matches(')')
                        .split(", ")
                        .map(str::to_string)
                        .collect(),
                    None if message == "unknown key (this kind takes no settings of its own)" => {
                        Vec::new()
                    }
                    None => panic!("{}: {message:?}", kind.name),
                };
            known.sort();
            assert_eq!(known, declared, "{}", kind.name);
        }
    }

    #[test]
    fn the_default_config_satisfies_the_schema() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../idps.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.contains("[idps."), "read {}", path.display());
        let found = check(&text);
        assert!(found.is_empty(), "{found:#?}");
        assert!(
            text.starts_with("#:schema ./openapi/idps.schema.json"),
            "taplo finds the schema"
        );
    }

    #[test]
    fn the_schema_refuses_what_the_parser_refuses() {
        let parse = |text: &str| {
            crate::config::parse(
                std::path::Path::new("x.toml"),
                text,
                &Registry::builtin(),
                &|_| None,
            )
        };
        let okta = "[idps.okta]\nkind = \"okta\"\ndomain = \"o.okta.com\"\nclient_id = \"c\"\n";
        assert!(check(okta).is_empty() && parse(okta).is_ok());
        for (bad, want) in [
            (
                okta.replace("domain", "domian"),
                ".idps.okta: missing \"domain\"",
            ),
            (
                okta.replace("\"okta\"\n", "\"otka\"\n"),
                ".idps.okta: no variant for kind \"otka\"",
            ),
            (
                format!("{okta}userinfo = \"yes\"\n"),
                ".idps.okta.userinfo: expected boolean or null",
            ),
            (
                format!("{okta}link_existing = \"always\"\n"),
                ".idps.okta.link_existing: expected",
            ),
            (
                format!("[server]\ncache_mb = 0\n{okta}"),
                ".server.cache_mb: below 1",
            ),
            (
                format!("[server]\ncolour = 1\n{okta}"),
                ".server.colour: not allowed",
            ),
            (
                format!("{okta}[idps.okta.authorize_params]\nx = 1\n"),
                ".idps.okta.authorize_params.x: expected string",
            ),
            (
                "[idps.d]\nkind = \"dylib\"\nclient_id = \"c\"\n".to_string(),
                ".idps.d: missing \"path\"",
            ),
        ] {
            let found = check(&bad);
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "{bad}: {found:#?}"
            );
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    /// A config that uses every key: of [server], every common key (in one entry or another),
    /// and the own settings of each kind that has some.
    const EVERY_KEY: &str = r##"
[server]
listen = "127.0.0.1:9000"
public_url = "https://login.example.org"
cookie_domain = "example.org"
signing_key_file = "SIGNING_KEY"
previous_signing_key_files = ["SIGNING_KEY"]
database = "data/x.sled"
secret_key_file = "data/x.key"
previous_secret_key_files = ["data/old.key"]
admins = ["corp:00u1ada", "0192a3b4c5d6Qm9vNjRiYWJ5MTIz"]
session_ttl_minutes = 60
max_logins_per_client = 50
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
max_pending_logins = 1000
cache_mb = 8
default_language = "de"

[server.branding]
name = "Example University"
primary_color = "#7b1fa2"
privacy_url = "https://example.edu/privacy"
help_url = "https://example.edu/help"
[server.branding.messages.en]
sign-in-title = "Sign in to Example University"

[idps.corp]
kind = "oidc"
label = "Corp"
icon = "https://sso.example.org/logo.svg"
issuer = "https://sso.example.org"
client_id = "c"
client_secret = "s"
scopes = ["email"]
extra_scopes = ["groups"]
prompt = "login"
id_token_algs = ["RS256", "ES256"]
userinfo = false
pkce = true
username_claim = "email"
groups_claim = "roles"
link_existing = "verified_email"
trusted_email_domains = ["example.org"]
require_create_confirmation = true
several_accounts = true
accepted_audiences = ["galaxy-api"]
previous_issuers = ["https://old-sso.example.org"]
[idps.corp.authorize_params]
access_type = "offline"

[idps.okta]
kind = "okta"
domain = "o.okta.com"
authorization_server = "default"
client_id = "c"
client_secret_file = "secrets/okta"

[idps.google]
kind = "google"
hosted_domain = "example.org"
access_type = "online"
client_id = "c"
client_auth = "private_key_jwt"
client_key_file = "SIGNING_KEY"
client_key_alg = "ES256"
client_certificate_file = "CLIENT_CERT"
client_assertion_audience = "issuer"
par = "always"
response_mode = "form_post"
dpop = true

[idps.kc]
kind = "keycloak"
url = "https://kc.example.org"
realm = "r"
idp_hint = "github"
client_id = "c"

[idps.ms]
kind = "entra"
tenant = "common"
allowed_tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
client_id = "c"

[idps.gh]
kind = "github"
url = "https://github.example.org"
api_url = "https://github.example.org/api/v3"
client_id = "c"

[idps.ci]
kind = "cilogon"
idp_hint = "https://idp.example.org"
allowed_idps = ["https://idp.example.org"]
client_id = "c"

[idps.egi]
kind = "egi_checkin"
environment = "demo"
client_id = "c"

[idps.tapis]
kind = "tapis"
url = "https://tacc.tapis.io"
client_id = "c"

[idps.globus]
kind = "globus"
client_id = "c"

[apps.galaxy]
url = "https://galaxy.example.org"
audience = "galaxy"
headers = "authelia"
require_verified_email = true
allowed_idps = ["corp", "okta"]
allowed_groups = ["corp:galaxy-users"]
anonymous_if = ["header:x-api-key", "query:key"]
assertion = true
assertion_ttl_seconds = 30
max_auth_age_seconds = 900
acr_values = ["urn:mace:incommon:iap:silver"]
"##;

    #[test]
    fn parser_and_schema_agree_on_a_config_using_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("signing.pem");
        let der = crate::signing::SigningKey::generate_pkcs8().unwrap();
        std::fs::write(&key, crate::signing::pkcs8_pem(&der)).unwrap();
        let cert = dir.path().join("client.crt");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = &EVERY_KEY
            .replace("SIGNING_KEY", &key.display().to_string())
            .replace("CLIENT_CERT", &cert.display().to_string());
        let found = check(text);
        assert!(found.is_empty(), "schema: {found:#?}");
        let config = crate::config::parse(
            std::path::Path::new("all.toml"),
            text,
            &Registry::builtin(),
            &|_| None,
        );
        assert!(
            config.is_ok(),
            "parser: {}",
            config.err().map(|e| e.to_string()).unwrap_or_default()
        );
        // It does use every key: of [server], every common key (in one entry or another), and
        // each kind's own settings (every kind that has some has an entry here).
        let file: toml::Table = text.parse().unwrap_or_default();
        let root = schema(&Registry::builtin()).to_value();
        let server = file.get("server").and_then(toml::Value::as_table);
        for key in keys(&root["$defs"]["ServerSection"]) {
            // `database` (sled) and `[server.postgres]` exclude each other: the PostgreSQL
            // keys have a config of their own below.
            if key == "postgres" {
                continue;
            }
            assert!(
                server.is_some_and(|s| s.contains_key(&key)),
                "[server] {key} unused"
            );
        }
        let postgres = "[server]\nsecret_key_file = \"shared.key\"\n[server.postgres]\nurl = \"host=/run/postgresql dbname=authnz\"\npassword_file = \"/dev/null\"\ntls = \"disable\"\nca_file = \"ca.pem\"\npool_size = 4\nmigrate = \"check\"\n";
        assert!(check(postgres).is_empty(), "schema: {:#?}", check(postgres));
        assert!(
            crate::config::parse(
                std::path::Path::new("pg.toml"),
                postgres,
                &Registry::builtin(),
                &|_| None
            )
            .is_ok(),
            "parser: {postgres}"
        );
        let pg_file: toml::Table = postgres.parse().unwrap_or_default();
        let used = pg_file["server"]["postgres"]
            .as_table()
            .cloned()
            .unwrap_or_default();
        for key in keys(&root["$defs"]["PostgresSection"]) {
            assert!(used.contains_key(&key), "[server.postgres] {key} unused");
        }
        let app = file
            .get("apps")
            .and_then(|apps| apps.get("galaxy"))
            .and_then(toml::Value::as_table);
        for key in keys(&root["$defs"]["AppSection"]) {
            assert!(
                app.is_some_and(|a| a.contains_key(&key)),
                "[apps.galaxy] {key} unused"
            );
        }
        let idps = file
            .get("idps")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        let entries: Vec<&toml::Table> = idps.values().filter_map(toml::Value::as_table).collect();
        for key in keys(&CommonKeys::json_schema(&mut SchemaGenerator::default()).to_value()) {
            assert!(
                entries.iter().any(|e| e.contains_key(&key)),
                "common key {key} unused"
            );
        }
        for kind in Registry::builtin().descriptors() {
            let own = keys(&(kind.settings_schema)(&mut SchemaGenerator::default()).to_value());
            if own.is_empty() {
                continue;
            }
            let entry = idps
                .values()
                .filter_map(toml::Value::as_table)
                .find(|entry| entry.get("kind").and_then(toml::Value::as_str) == Some(kind.name));
            for key in own {
                assert!(
                    entry.is_some_and(|e| e.contains_key(&key)),
                    "kind {} {key} unused",
                    kind.name
                );
            }
        }
        // And both refuse the same misspelling.
        let typo = text.replace("hosted_domain", "hosted_domian");
        assert!(!check(&typo).is_empty());
        assert!(crate::config::parse(
            std::path::Path::new("all.toml"),
            &typo,
            &Registry::builtin(),
            &|_| None
        )
        .is_err());
    }
}

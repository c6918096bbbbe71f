//! The file format of `idps.toml` as serde + schemars types: the JSON Schema that editors use
//! (`authnz schema`, `openapi/idps.schema.json`), with a description and default for every
//! field and one variant per `kind`, each with its own required settings.
//!
//! The server's parser (`config`) reads the file with spans to report every problem with its
//! position; these types state the same format for tools. Tests keep the two in step: every
//! example config in the repository must satisfy both.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An `idps.toml` file.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "authnz idps.toml")]
pub struct IdpsFile {
    /// The server itself. Read at start; a reload does not change it.
    #[serde(default)]
    pub server: Option<ServerSection>,
    /// One table per identity provider; the name appears in URLs (`/authnz/<name>/login`):
    /// 1-63 lowercase letters, digits, `-` or `_`.
    #[serde(default)]
    pub idps: BTreeMap<String, IdpEntry>,
}

/// `[server]`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    #[schemars(extend("default" = "127.0.0.1:8080"))]
    pub listen: Option<String>,
    /// The URL people reach authnz at; redirect URIs are `<public_url>/authnz/<name>/callback`.
    /// `http://` only for loopback hosts. Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// The sled database directory, relative to this file.
    #[schemars(extend("default" = "data/authnz.sled"))]
    pub database: Option<String>,
    /// The key that encrypts IdP tokens at rest (generated on first start). Default: `<database>.key`.
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
    /// At most this many sign-ins in progress are kept (in memory); when full, the oldest is
    /// dropped and that person starts again.
    #[schemars(range(min = 1), extend("default" = 100000))]
    pub max_pending_logins: Option<u64>,
    /// sled's page cache, in MiB.
    #[schemars(range(min = 1), extend("default" = 16))]
    pub cache_mb: Option<u64>,
}

/// What a first login whose verified email belongs to an existing account does.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
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

/// The EGI Check-in instance.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EgiEnvironment {
    Production,
    Demo,
    Development,
}

/// Declares one kind's entry: the keys every kind takes, plus its own.
macro_rules! idp_kind {
    ($(#[$attr:meta])* $name:ident { $($(#[$meta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Serialize, Deserialize, JsonSchema)]
        $(#[$attr])*
        pub struct $name {
            /// The button text. Default: the kind's name for itself.
            pub label: Option<String>,
            /// The button icon: an https URL, a path on this server, or a `data:image/` URL.
            /// Default: a badge for the kind.
            pub icon: Option<String>,
            /// The OAuth client id. `${VAR}` reads the environment (`${VAR:-default}` too); an
            /// unset variable makes the IdP unavailable instead of failing the config.
            pub client_id: Option<String>,
            /// The client secret (or use `client_secret_file`; never both).
            pub client_secret: Option<String>,
            /// A file holding the client secret, relative to this file.
            pub client_secret_file: Option<String>,
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
            /// What a first login whose verified email belongs to an existing account does.
            #[schemars(extend("default" = "confirm"))]
            pub link_existing: Option<LinkExisting>,
            /// Email domains this IdP is authoritative for (needed by `verified_email`).
            #[schemars(extend("default" = []))]
            pub trusted_email_domains: Option<Vec<String>>,
            /// Ask the person to confirm before a first login creates an account.
            #[schemars(extend("default" = false))]
            pub require_create_confirmation: Option<bool>,
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
            $($(#[$meta])* pub $field: $ty,)*
        }
    };
}

idp_kind!(
    #[serde(deny_unknown_fields)]
    /// Any OpenID provider, by discovery (`issuer` is required).
    Oidc {}
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// Okta: the org authorization server, or a custom one.
    Okta {
        /// The Okta domain, e.g. `organization.okta.com` (no scheme).
        domain: String,
        /// A custom authorization server id (`default` or another); absent: the org server.
        authorization_server: Option<String>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// Google.
    Google {
        /// A Google Workspace domain: sent as `hd` and enforced on the verified `hd` claim.
        hosted_domain: Option<String>,
        /// `offline` (a refresh token) or `online`.
        #[schemars(extend("default" = "offline"))]
        access_type: Option<String>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// Keycloak: `<url>/realms/<realm>`.
    Keycloak {
        /// The Keycloak base URL, e.g. `https://keycloak.example.org`.
        url: String,
        /// The realm.
        realm: String,
        /// Sent as `kc_idp_hint` (skip Keycloak's own chooser).
        idp_hint: Option<String>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// Microsoft Entra ID (Azure AD); identities keyed by `tid`+`oid`, email never trusted.
    Entra {
        /// A tenant GUID, or `common`, `organizations`, `consumers`.
        tenant: String,
        /// With a multi-tenant `tenant`: the tenant GUIDs allowed in.
        allowed_tenants: Option<Vec<String>>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// GitHub (OAuth 2.0; GitHub Enterprise with `url`).
    Github {
        /// The web base URL. Default: `https://github.com`.
        url: Option<String>,
        /// The API base URL. Default: `https://api.github.com`, or `<url>/api/v3` with `url`.
        api_url: Option<String>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// CILogon.
    Cilogon {
        /// Sent as `idphint`.
        idp_hint: Option<String>,
        /// Sent as `selected_idp` and enforced on the verified `idp` claim.
        allowed_idps: Option<Vec<String>>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// EGI Check-in.
    EgiCheckin {
        #[schemars(extend("default" = "production"))]
        environment: Option<EgiEnvironment>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// Tapis (OAuth 2.0).
    Tapis {
        /// The tenant's base URL, e.g. `https://tacc.tapis.io`.
        url: String,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// A preset with a known issuer and no settings of its own.
    Preset {}
);
idp_kind!(
    /// A provider loaded from a shared library; its own settings go to it.
    Dylib {
        /// The library (`.so`), relative to this file; it must not be writable by every user.
        path: String,
        /// The library's own settings.
        #[serde(flatten)]
        #[schemars(extend("additionalProperties" = true))]
        settings: BTreeMap<String, serde_json::Value>,
    }
);
idp_kind!(
    #[serde(deny_unknown_fields)]
    /// The development IdP inside authnz: anyone signs in as anyone; loopback only.
    Dev {}
);

/// One `[idps.<name>]` entry, by `kind`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IdpEntry {
    Oidc(Oidc),
    Okta(Okta),
    Google(Google),
    Keycloak(Keycloak),
    Entra(Entra),
    Github(Github),
    Globus(Preset),
    Elixir(Preset),
    Lifescience(Preset),
    Cilogon(Cilogon),
    EgiCheckin(EgiCheckin),
    Nfdi(Preset),
    Einfracz(Preset),
    Tapis(Tapis),
    Dylib(Dylib),
    Dev(Dev),
}

/// The JSON Schema of `idps.toml`, pretty-printed.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(IdpsFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn schema_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/idps.schema.json")
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
        let schema = json_schema();
        for kind in Registry::builtin().kinds() {
            assert!(
                schema.contains(&format!("\"const\": \"{kind}\"")),
                "kind {kind} missing from the schema"
            );
        }
    }

    #[test]
    fn the_default_config_satisfies_the_schema_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../idps.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let parsed: Result<IdpsFile, _> = toml::from_str(&text);
        assert!(parsed.is_ok(), "{parsed:?}");
        assert!(
            text.starts_with("#:schema ./openapi/idps.schema.json"),
            "taplo finds the schema"
        );
    }

    #[test]
    fn parser_and_schema_agree_on_a_config_using_every_key() {
        let text = r#"
[server]
listen = "127.0.0.1:9000"
public_url = "http://127.0.0.1:9000"
database = "data/x.sled"
secret_key_file = "data/x.key"
previous_secret_key_files = ["data/old.key"]
admins = ["corp:00u1ada", "0192a3b4c5d6Qm9vNjRiYWJ5MTIz"]
session_ttl_minutes = 60
max_logins_per_client = 50
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
max_pending_logins = 1000
cache_mb = 8

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
link_existing = "verified_email"
trusted_email_domains = ["example.org"]
require_create_confirmation = true
accepted_audiences = ["galaxy-api"]
previous_issuers = ["https://old-sso.example.org"]
[idps.corp.authorize_params]
access_type = "offline"

[idps.okta]
kind = "okta"
domain = "o.okta.com"
authorization_server = "default"
client_id = "c"

[idps.google]
kind = "google"
hosted_domain = "example.org"
access_type = "online"
client_id = "c"

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
"#;
        let parsed: Result<IdpsFile, _> = toml::from_str(text);
        assert!(parsed.is_ok(), "schema types: {parsed:?}");
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
        // And both refuse the same misspelling.
        let typo = text.replace("hosted_domain", "hosted_domian");
        assert!(toml::from_str::<IdpsFile>(&typo).is_err());
        assert!(crate::config::parse(
            std::path::Path::new("all.toml"),
            &typo,
            &Registry::builtin(),
            &|_| None
        )
        .is_err());
    }
}

//! authnz: a login server that lets people sign in with their organization's identity.
//!
//! The layers import downwards only:
//! `cli → server → http → (state, accounts, protocol) → (store, config, registry, crypto, …)`.

pub mod accounts; // finishing a login, the IdP tokens kept for an identity, sign-ups
pub mod apps; // what an application behind a proxy is told: the person, the policy, the assertion
pub mod cli; // the command line: serve, check, schema, openapi, import from Galaxy
pub mod client_key; // the key authnz proves itself to an IdP with (private_key_jwt)
pub mod config; // `idps.toml` read into a validated Config, every problem with file:line:col
pub mod crypto; // random tokens, hashes, the vault that seals IdP tokens at rest
pub mod devidp; // a small OpenID Provider inside authnz for trying it offline (loopback only)
pub mod dylib; // loading a provider from a shared library, after checking who may write it
pub mod galaxy; // reading a Galaxy `oidc_backends_config.xml` into IdP entries
pub mod html; // the page frame, escaping, the HTML error page
pub mod http; // the HTTP surface: routes, cookies, callers, CSRF, middleware
pub mod i18n; // the pages in the person's language: Fluent catalogues, negotiation
pub mod metrics; // Prometheus counters
pub mod protocol; // the OpenID Connect relying party, by phase
pub mod providers; // the provider kinds built into the core (the dev IdP's)
pub mod proxy; // who the client is behind trusted reverse proxies
pub mod registry; // provider kinds: kind name → factory
pub mod schema; // the JSON Schema of `idps.toml`
pub mod server; // serving: listener, background tasks, shutdown
pub mod signing; // the keys that sign assertions to apps, and their JWKS
pub mod state; // the running server without HTTP: App, configuration generations, reload
pub mod store; // users, identities, sessions, keys; the sled backend
pub mod text; // text from outside made safe for a log line

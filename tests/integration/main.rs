//! The one integration-test binary: authnz on loopback against the real `oidc-provider`, its
//! own dev IdP, and a hostile in-process IdP; real nginx and Caddy in front of an app, and a real
//! Galaxy (`galaxy`, run by `scripts/galaxy-e2e`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod admin;
mod browser;
mod callback_attacks;
mod cli;
mod client_auth;
mod conflicts;
mod crash;
mod credentials;
mod defaults;
mod discovery;
mod dpop;
mod dylib;
mod faults;
mod form_post;
mod forward;
mod galaxy;
mod hardening;
mod id_token_attacks;
mod issuers;
mod languages;
mod login_flow;
mod par;
mod postgres;
mod providers;
mod proxies;
mod resources;
mod revocation;
mod sessions;
mod step_up;
mod tokens;

//! authnz: a login server that lets people sign in with their organization's identity.
//!
//! `config` turns `idps.toml` into a validated [`config::Config`]; `registry` builds one
//! provider per IdP; `protocol` is the OpenID Connect relying party; `store` keeps users,
//! identities, tokens and sessions; `api` is the HTTP surface; `devidp` is a small OpenID
//! Provider for trying authnz offline.

pub mod account_api;
pub mod accounts;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod devidp;
pub mod dylib;
pub mod error;
pub mod galaxy;
pub mod metrics;
pub mod pages;
pub mod protocol;
pub mod providers;
pub mod proxy;
pub mod registry;
pub mod schema;
pub mod store;
pub mod ui;

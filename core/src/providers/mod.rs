//! Provider kinds that live in the core rather than in a crate under `plugins/`.

pub mod dev;

//! llm-edge-gateway: an OpenAI-compatible LLM gateway for Cloudflare Workers.
//!
//! Layers point one way, bottom to top: a module uses only the layers listed before it
//! (`tests/layers.rs` checks). Everything but `edge` is the pure core, tested natively;
//! `edge` binds it to the Workers runtime and only builds for wasm32.

pub mod util;

pub mod model;

pub mod config;

pub mod wire;

pub mod ingress;
pub mod providers;

pub mod policy;

pub mod ledger;

pub mod admin;

#[cfg(target_arch = "wasm32")]
mod edge;

//! llm-edge-gateway: an OpenAI-compatible LLM gateway for Cloudflare Workers.
//!
//! The modules at the top level are the pure core: plain data in, decisions out, no
//! `worker` types, tested natively with `cargo test`. `edge` is the thin shell that binds
//! them to the Workers runtime (HTTP, secrets, outbound fetch) and only builds for wasm32.

pub mod admin;
pub mod attempts;
pub mod aws;
pub mod base64;
pub mod breakdown;
pub mod budget;
pub mod chat;
pub mod civil;
pub mod config;
pub mod error;
pub mod gcp;
pub mod geo;
pub mod health;
pub mod ingress;
pub mod keys;
pub mod ledger;
pub mod litellm;
pub mod pricing;
pub mod providers;
pub mod residency;
pub mod routing;
pub mod sse;
pub mod tags;
pub mod uri;
pub mod valueread;

#[cfg(target_arch = "wasm32")]
mod edge;

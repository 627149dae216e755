//! End-to-end harness: one mock provider and one `wrangler dev` (workerd) per test binary,
//! shared by all its tests, which isolate themselves by unique nonces, keys and aliases
//! instead of restarts.
// Each test binary uses a different part of the support code.
#![allow(dead_code)]

pub mod gateway;
pub mod http;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A string no other test (or earlier run) puts in a prompt: mock scripts and log queries
/// match on it.
pub fn nonce(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{label}-{}-{t:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

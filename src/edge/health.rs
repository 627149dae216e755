//! Deployment health per colo, in the colo's Cache API (shared by the colo's isolates,
//! gone after `window`), with a one-second memo in the isolate. Reports are written after
//! the response through `wait_until`, so they add no latency.

use super::state::now_ms;
use crate::config::HealthLimits;
use crate::health::Health;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use worker::{Cache, Context, Headers, Response};

const MEMO_MS: u64 = 1_000;

thread_local! {
    static MEMO: RefCell<HashMap<String, (Health, u64)>> = RefCell::new(HashMap::new());
}

fn cache_key(deployment: &str) -> String {
    format!("https://health.llm-edge-gateway.internal/{deployment}")
}

async fn read(deployment: &str) -> Health {
    let now = now_ms();
    if let Some(h) =
        MEMO.with(|m| m.borrow().get(deployment).filter(|(_, at)| now - at < MEMO_MS).map(|(h, _)| h.clone()))
    {
        return h;
    }
    let cached = match Cache::default().get(cache_key(deployment), false).await {
        Ok(Some(mut r)) => r.bytes().await.ok().and_then(|b| serde_json::from_slice::<Health>(&b).ok()),
        _ => None,
    };
    let health = cached.unwrap_or_default();
    MEMO.with(|m| m.borrow_mut().insert(deployment.to_string(), (health.clone(), now)));
    health
}

/// The health of each deployment, by id.
pub async fn read_all<'a>(ids: impl Iterator<Item = &'a str>) -> HashMap<String, Health> {
    let mut out = HashMap::new();
    for id in ids {
        out.insert(id.to_string(), read(id).await);
    }
    out
}

/// Applies `change` to the deployment's health, in this isolate at once and in the colo's
/// cache after the response.
pub fn update(ctx: &Rc<Context>, deployment: &str, limits: &HealthLimits, change: impl FnOnce(&mut Health)) {
    let now = now_ms();
    let health = MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let entry = m.entry(deployment.to_string()).or_insert_with(|| (Health::default(), now));
        change(&mut entry.0);
        entry.1 = now;
        entry.0.clone()
    });
    let key = cache_key(deployment);
    let ttl_s = (limits.window_ms.max(limits.cooldown_ms) / 1000).max(1) * 2;
    ctx.wait_until(async move {
        let Ok(body) = serde_json::to_vec(&health) else { return };
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        let _ = headers.set("cache-control", &format!("max-age={ttl_s}"));
        if let Ok(response) = Response::from_bytes(body) {
            if let Err(e) = Cache::default().put(key, response.with_headers(headers)).await {
                worker::console_error!("health not cached: {e}");
            }
        }
    });
}

//! Deployment health per colo, in the colo's Cache API (shared by the colo's isolates,
//! gone after `window`), with a one-second memo in the isolate that is refreshed after
//! the response, not before it. A report is written after
//! the response through `wait_until`, so it adds no latency, and only when it changes
//! what the colo knows (`Health::worth_sharing`).

use super::state::{claim, known_then_reread, now_ms};
use crate::config::{Deployment, HealthLimits};
use crate::policy::health::{Admission, Health};
use crate::util::valueread::FromValue;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use worker::{Cache, Context, Headers, Response};

const MEMO_MS: u64 = 1_000;

/// This isolate's view of a deployment, when it was read, and what the colo was last told.
struct Known {
    health: Health,
    at: u64,
    shared: Health,
}

thread_local! {
    static MEMO: RefCell<HashMap<String, Known>> = RefCell::new(HashMap::new());
}

fn cache_key(deployment: &str) -> String {
    format!("https://health.llm-edge-gateway.internal/{deployment}")
}

/// The colo's record of a deployment, into the memo unless this isolate's view is later.
async fn reread(deployment: &str) -> Health {
    let cached = match Cache::default().get(cache_key(deployment), false).await {
        Ok(Some(mut r)) => {
            r.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()).and_then(|v| Health::read(&v).ok())
        }
        _ => None,
    };
    let colo = cached.unwrap_or_default();
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let at = now_ms();
        let known = match m.remove(deployment) {
            Some(mine) if mine.health.is_later_than(&colo) => Known { at, ..mine },
            _ => Known { health: colo.clone(), at, shared: colo },
        };
        let health = known.health.clone();
        m.insert(deployment.to_string(), known);
        health
    })
}

/// This isolate's view at once; when it is older than the memo's second, the colo's record
/// is re-read after the response. Only an isolate's first request waits for the cache.
async fn read(deployment: &str) -> Health {
    let known = MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let known = m.get_mut(deployment)?;
        Some((known.health.clone(), claim(&mut known.at, MEMO_MS)))
    });
    let deployment = deployment.to_string();
    known_then_reread(known, move || async move { reread(&deployment).await }).await
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
    let news = MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let known = m.entry(deployment.to_string()).or_insert_with(|| Known {
            health: Health::default(),
            at: now,
            shared: Health::default(),
        });
        change(&mut known.health);
        known.at = now;
        known.health.worth_sharing(&known.shared).then(|| {
            known.shared = known.health.clone();
            known.health.clone()
        })
    });
    let Some(health) = news else { return };
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

/// Whether `d`'s circuit admits a request now, by `known` (from [`read_all`]); a probe it
/// answers with is claimed in this isolate's view, so concurrent requests skip it.
pub fn admit(ctx: &Rc<Context>, known: &HashMap<String, Health>, d: &Deployment, defaults: &HealthLimits) -> Admission {
    let mut h = known.get(&d.id).cloned().unwrap_or_default();
    let admission = h.admit(now_ms(), u64::from(d.first_byte_timeout_ms));
    if admission == Admission::Probe {
        update(ctx, &d.id, d.health_limits(defaults), |stored| *stored = h);
    }
    admission
}

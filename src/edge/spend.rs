//! Month-to-date spend for budget checks, read from a KV snapshot that the cron refreshes
//! from D1 — never written per request (KV takes about one write per second per key) —
//! and re-read after a response, not before it. On top of the snapshot, each isolate adds what it has billed
//! since, so a runaway loop on one isolate is stopped without waiting for the cron.
//!
//! Staleness: this isolate's own spend counts at once; other isolates' within the cron
//! interval (5 minutes) plus the queue's batch delay and KV's propagation (about a minute).

use super::state::{claim, known_then_reread, now_ms};
use super::store;
use crate::policy::budget::Spend;
use crate::util::time;
use crate::util::valueread::{At, Fields, FromValue};
use serde_json::Value;
use std::cell::RefCell;
use worker::wasm_bindgen::JsValue;
use worker::Env;

const RECHECK_MS: u64 = 10_000;

fn snapshot_key(month: &str) -> String {
    format!("spend:{month}")
}

struct Local {
    snapshot: Spend,
    checked_ms: u64,
    /// What this isolate billed, by the minute: the part not yet in a snapshot is added.
    billed: Vec<(u64, String, String, u64)>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Records a cost this isolate billed.
pub fn note(team: &str, key: &str, micros: u64) {
    if micros == 0 {
        return;
    }
    let now = now_ms();
    // One entry per minute, team and key: the list stays small however many requests an
    // isolate serves between two snapshots.
    let minute = now - now % 60_000;
    with_local(|local| {
        match local.billed.iter_mut().rev().take(16).find(|(ts, t, k, _)| *ts == minute && t == team && k == key) {
            Some(entry) => entry.3 += micros,
            None => local.billed.push((minute, team.to_string(), key.to_string(), micros)),
        }
    });
}

/// What `key` and `team` have spent this month: the snapshot's figures and what this
/// isolate billed since. Only those two: the snapshot holds every key and team, and a
/// copy of it per request would cost in proportion to how many there are.
fn effective(local: &Local, month: &str, key: &str, team: &str) -> Spend {
    let mut spend = Spend { month: month.to_string(), ..Spend::default() };
    if local.snapshot.month == month {
        spend.at_ms = local.snapshot.at_ms;
        if let Some(micros) = local.snapshot.keys.get(key) {
            spend.keys.insert(key.to_string(), *micros);
        }
        if let Some(micros) = local.snapshot.teams.get(team) {
            spend.teams.insert(team.to_string(), *micros);
        }
    }
    let since = spend.at_ms;
    // A minute that overlaps the snapshot counts whole: budgets err on the side of stopping.
    for (_, t, k, micros) in local
        .billed
        .iter()
        .filter(|(ts, t, k, _)| ts + 60_000 > since && (t == team || k == key) && time::month(*ts) == month)
    {
        spend.add(t, k, *micros);
    }
    spend
}

/// `key`'s and `team`'s spend as of now, the snapshot re-read first when due (`/v1/spend`).
pub async fn current(env: &Env, key: &str, team: &str) -> Spend {
    let now = now_ms();
    let month = time::month(now);
    let fresh = LOCAL.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|l| now.saturating_sub(l.checked_ms) < RECHECK_MS)
            .map(|l| effective(l, &month, key, team))
    });
    match fresh {
        Some(spend) => spend,
        None => {
            reread(env).await;
            with_local(|l| effective(l, &month, key, team))
        }
    }
}

/// `key`'s and `team`'s spend for a budget check: this isolate's view at once; when the
/// snapshot is due for a re-read, that runs after the response. Only an isolate's first
/// request waits.
pub async fn for_request(env: &Env, key: &str, team: &str) -> Spend {
    let month = time::month(now_ms());
    let known = LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        let local = l.as_mut()?;
        let due = claim(&mut local.checked_ms, RECHECK_MS);
        Some(((), due))
    });
    let env = env.clone();
    known_then_reread(known, move || async move { reread(&env).await }).await;
    with_local(|l| effective(l, &month, key, team))
}

fn with_local<T>(f: impl FnOnce(&mut Local) -> T) -> T {
    LOCAL.with(|l| {
        let mut l = l.borrow_mut();
        f(l.get_or_insert_with(|| Local { snapshot: Spend::default(), checked_ms: 0, billed: Vec::new() }))
    })
}

/// The month's snapshot from KV, into this isolate's view.
async fn reread(env: &Env) {
    let now = now_ms();
    let month = time::month(now);
    let snapshot = match store::kv(env) {
        Ok(kv) => store::get_json::<Spend>(&kv, &snapshot_key(&month)).await.ok().flatten(),
        Err(_) => None,
    };
    with_local(|local| {
        if let Some(s) = snapshot {
            local.billed.retain(|(ts, ..)| ts + 60_000 > s.at_ms);
            local.snapshot = s;
        }
        local.checked_ms = now;
    });
}

struct Row {
    name: String,
    micros: u64,
}

impl FromValue for Row {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(Row { name: f.req("name")?, micros: f.req("micros")? })
    }
}

/// The cron's part: this month's spend per team (from the rollup) and per key (from the
/// events), written to KV as one snapshot.
pub async fn refresh(env: &Env) -> Result<Spend, String> {
    let now = now_ms();
    let month = time::month(now);
    let from = format!("{month}-01");
    let db = store::d1(env).map_err(|e| e.message)?;
    let query = |sql: &'static str| {
        let db = &db;
        let from = from.clone();
        async move {
            let stmt = db.prepare(sql).bind(&[JsValue::from_str(&from)]).map_err(|e| e.to_string())?;
            let rows = store::rows_json(&stmt).await?;
            let rows: Value = serde_json::from_slice(rows.as_bytes()).map_err(|e| e.to_string())?;
            Vec::<Row>::read(&rows)
        }
    };
    let teams =
        query("SELECT team AS name, SUM(cost_micros) AS micros FROM cost_daily WHERE day >= ?1 GROUP BY team").await?;
    let keys = query(
        "SELECT key_id AS name, SUM(COALESCE(cost_micros, 0)) AS micros FROM cost_events WHERE day >= ?1 GROUP BY key_id",
    )
    .await?;
    let mut spend = Spend { month: month.clone(), at_ms: now, ..Spend::default() };
    // Inserted, not collected: a collect sorts first, with a sort compiled per call site.
    spend.teams.extend(teams.into_iter().map(|r| (r.name, r.micros)));
    spend.keys.extend(keys.into_iter().map(|r| (r.name, r.micros)));
    let kv = store::kv(env).map_err(|e| e.message)?;
    store::put_json(&kv, &snapshot_key(&month), &spend).await?;
    let regions = db
        .prepare(
            "SELECT caller_continent AS continent, caller_country AS country, jurisdiction, SUM(requests) AS requests, \
             SUM(cost_micros) AS cost_micros FROM cost_daily WHERE day >= ?1 \
             GROUP BY caller_continent, caller_country, jurisdiction ORDER BY cost_micros DESC",
        )
        .bind(&[JsValue::from_str(&from)])
        .map_err(|e| e.to_string())?;
    let regions = store::rows_json(&regions).await?;
    let regions: Value = serde_json::from_slice(regions.as_bytes()).map_err(|e| e.to_string())?;
    let snapshot = serde_json::json!({"month": month, "at_ms": now, "rows": regions});
    store::put_json(&kv, &regions_key(&month), &snapshot).await?;
    Ok(spend)
}

fn regions_key(month: &str) -> String {
    format!("spend:{month}:regions")
}

/// The cron's regional breakdown of this month (caller continent and country, and the
/// jurisdiction that served them), read from KV without touching D1.
pub async fn regions(env: &Env) -> Result<Value, String> {
    let month = time::month(now_ms());
    let kv = store::kv(env).map_err(|e| e.message)?;
    let snapshot = store::get_json::<Value>(&kv, &regions_key(&month)).await?;
    Ok(snapshot.unwrap_or_else(|| serde_json::json!({"month": month, "at_ms": null, "rows": []})))
}

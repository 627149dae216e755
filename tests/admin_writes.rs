//! End to end through workerd: what the admin API stores when it changes the config —
//! every field of the document counts as a change, a write that fails halfway leaves the
//! API usable and the audit log truthful, and a deployment can only name the secrets the
//! deploy allows. Checked in KV and D1, not only in the answers.

mod support;

use serde_json::{json, Value};
use std::sync::Mutex;
use support::gateway::gateway;
use support::nonce;

/// Each test changes the config and expects exact versions: one at a time.
static ADMIN: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ADMIN.lock().unwrap_or_else(|e| e.into_inner())
}

fn current_config() -> (u64, Value) {
    let r = gateway().admin("GET", "/admin/config", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (v["version"].as_u64().unwrap(), v["config"].clone())
}

fn put_config(config: &Value, headers: &[(&str, &str)]) -> support::http::Response {
    let g = gateway();
    let auth = format!("Bearer {}", support::gateway::ADMIN_COMPLIANCE);
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    support::http::send("PUT", &g.url("/admin/config"), &all, Some(config.to_string().as_bytes())).unwrap()
}

/// KV's active version and the document stored for it.
fn kv_active() -> (u64, Option<Value>) {
    let g = gateway();
    let active: u64 = g.kv_get("config:active").map_or(0, |t| t.trim().parse().unwrap());
    let doc = g.kv_get(&format!("config:v:{active:012}")).map(|t| serde_json::from_str(&t).unwrap());
    (active, doc)
}

#[test]
fn a_change_to_team_budgets_alone_is_stored_and_audited() {
    let _guard = one_at_a_time();
    let team = nonce("budget-team");
    let (before, mut config) = current_config();
    config["budgets"]["teams"][&team] = json!({"monthly_usd": "12.50", "mode": "soft"});

    let r = put_config(&config, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["unchanged"].is_null(), "a budget change is a change: {v}");
    let version = v["version"].as_u64().unwrap();
    assert!(version > before, "{v}");
    assert_eq!(v["changes"], json!([format!("team budgets added: {team}")]));

    let (active, doc) = kv_active();
    assert_eq!(active, version);
    assert_eq!(doc.unwrap()["budgets"]["teams"][&team], json!({"monthly_usd": "12.50", "mode": "soft"}));
    let rows = gateway().d1(&format!("SELECT action, summary FROM audit_log WHERE new_version = {version}"));
    assert_eq!(rows, vec![json!({"action": "config.replace", "summary": format!("team budgets added: {team}")})]);

    // The same document again is unchanged, and stores nothing.
    let r = put_config(&current_config().1, &[]);
    assert_eq!((r.json()["unchanged"].as_bool(), r.json()["version"].as_u64()), (Some(true), Some(version)));
    assert_eq!(kv_active().0, version);
}

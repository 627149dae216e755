//! Creating and revoking gateway keys through the admin API, race-free. KV serves keys on
//! the request path; D1's `gateway_keys` table decides (migrations/0003): each step that
//! must not race is one SQL statement, and SQLite runs one at a time.
//!
//! - Two creates of one id: the primary key lets one insert in, the other gets 409.
//! - A create and a config change adding the same id: the create inserts only if no config
//!   version was claimed since the config it checked; the config claim only if the table
//!   has none of the ids it adds (`store::claim_version`). Whichever is first wins.
//! - A revoke during a create: the create checks, after writing KV, that its row was not
//!   revoked meanwhile, and removes its KV record if it was.
//! - A revoke and a request using the key: see `keystore::forget`.

use super::keystore::{self, KeyRecord};
use super::state::{now_ms, State};
use super::store::{self, conflict, f64s, rows, unavailable, AuditEntry, Outcome};
use crate::config::KeyConfig;
use crate::model::error::GatewayError;
use crate::util::hash::sha256_hex;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, Env};

const INSERT: &str = "INSERT INTO gateway_keys (id, sha256, team, created_ms, created_by) \
     SELECT ?4, ?5, ?6, ?7, ?8 WHERE ";

fn text(v: Option<&str>) -> JsValue {
    v.map_or(JsValue::NULL, JsValue::from_str)
}

/// Claims `key.id` in D1 for a key built on the config at `config_version`.
async fn claim_id(db: &D1Database, key: &KeyConfig, actor: &str, now: u64, version: u64) -> Result<(), GatewayError> {
    let sql = format!("{INSERT}{} RETURNING id", store::NO_CONFIG_CHANGE_SINCE);
    let [pending, propagation] = store::claim_cutoffs(now);
    let mut params = f64s(&[version, pending, propagation]);
    params.extend([
        JsValue::from_str(&key.id),
        text(key.sha256.as_deref()),
        text(key.team.as_deref()),
        JsValue::from_f64(now as f64),
        JsValue::from_str(actor),
    ]);
    let stmt = db.prepare(sql).bind(&params).map_err(|e| unavailable("preparing the key claim", e))?;
    match store::rows_json(&stmt).await {
        Ok(inserted) if inserted != "[]" => Ok(()),
        Ok(_) => Err(conflict(
            "config_changed",
            "The config changed (or a change is under way) since this request read it; try again.".into(),
        )),
        Err(e) if e.contains("UNIQUE") => Err(keystore::exists(&key.id, "exists")),
        Err(e) => Err(unavailable("writing the key table", e)),
    }
}

/// Frees an id whose key was not made (a revoked one stays, so the revoke is kept).
async fn release(db: &D1Database, id: &str) -> Result<(), GatewayError> {
    let sql = "DELETE FROM gateway_keys WHERE id = ?1 AND revoked_ms IS NULL";
    run(db, sql, &[JsValue::from_str(id)], "releasing a key id").await.map(drop)
}

async fn run(
    db: &D1Database,
    sql: &str,
    params: &[JsValue],
    what: &str,
) -> Result<Vec<serde_json::Value>, GatewayError> {
    let stmt = db.prepare(sql).bind(params).map_err(|e| unavailable(what, e))?;
    rows(&stmt, what).await
}

/// Creates a key (no secret given; `state` is the config as KV has it now) and returns
/// its secret, which nothing keeps. Audited as `pending` before KV is written, then
/// `applied` or `failed`.
pub async fn create(env: &Env, state: &State, mut key: KeyConfig, actor: &str) -> Result<String, GatewayError> {
    if state.gateway.config.keys.iter().any(|k| k.id == key.id) {
        return Err(keystore::exists(&key.id, "exists in the config"));
    }
    let kv = store::kv(env)?;
    // Keys made before D1 kept them are only in KV.
    if keystore::in_kv(&kv, &key.id).await? {
        return Err(keystore::exists(&key.id, "exists"));
    }
    let secret = keystore::new_secret();
    let hash = sha256_hex(secret.as_bytes());
    key.sha256 = Some(hash.clone());
    key.secret = None;
    let (db, now) = (store::d1(env)?, now_ms());
    claim_id(&db, &key, actor, now, state.version).await?;
    let (id, record_id) = (JsValue::from_str(&key.id), key.id.clone());
    let summary = format!("key `{}` created for team {}", key.id, key.team.as_deref().unwrap_or("(none)"));
    let entry =
        AuditEntry { ts_ms: now, actor, action: "key.create", old_version: None, new_version: None, summary: &summary };
    let row = match store::audit(&db, &entry, "pending").await {
        Ok(row) => row,
        Err(e) => {
            let _ = release(&db, &record_id).await;
            return Err(e);
        }
    };
    let record = KeyRecord { key, created_ms: now, created_by: actor.to_string() };
    if let Err(e) = keystore::store_key(&kv, &record).await {
        let _ = release(&db, &record_id).await;
        let _ = store::settle(&db, row, Outcome::Failed(&e.message)).await;
        return Err(e);
    }
    // A revoke may have come in between the claim and the KV write, and found nothing in
    // KV to delete: then this create takes its key back out.
    let revoked =
        run(&db, "SELECT id FROM gateway_keys WHERE id = ?1 AND revoked_ms IS NULL", &[id], "reading the key table")
            .await;
    match revoked {
        Ok(live) if !live.is_empty() => {}
        Ok(_) => {
            keystore::revoke(env, &record_id, &hash, now).await?;
            let why = "revoked while it was being created";
            let _ = store::settle(&db, row, Outcome::Failed(why)).await;
            return Err(conflict("key_revoked", format!("Key `{record_id}` was {why}; it does not authenticate.")));
        }
        // Unconfirmed: taken back out rather than left to a revoke it may have missed.
        Err(e) => {
            keystore::forget(&kv, &hash).await?;
            let _ = release(&db, &record_id).await;
            let _ = store::settle(&db, row, Outcome::Failed(&e.message)).await;
            return Err(e);
        }
    }
    if let Err(e) = store::settle(&db, row, Outcome::Applied).await {
        worker::console_error!("key `{}` created, audit not settled: {}", record.key.id, e.message);
    }
    Ok(secret)
}

/// Revokes a key created through the admin API: marked in D1 once (the first revoke
/// wins; a repeat finishes what an interrupted one left in KV), then removed from KV.
/// `None` when no such key exists.
pub async fn revoke(env: &Env, id: &str, actor: &str) -> Result<Option<keystore::KeyMeta>, GatewayError> {
    let (db, now) = (store::d1(env)?, now_ms());
    let params = [JsValue::from_f64(now as f64), JsValue::from_str(actor), JsValue::from_str(id)];
    let marked = run(
        &db,
        "UPDATE gateway_keys SET revoked_ms = ?1, revoked_by = ?2 WHERE id = ?3 AND revoked_ms IS NULL \
         RETURNING sha256, revoked_ms",
        &params,
        "revoking a key",
    )
    .await?;
    let first = !marked.is_empty();
    let row = match marked.into_iter().next() {
        Some(row) => Some(row),
        None => {
            run(&db, "SELECT sha256, revoked_ms FROM gateway_keys WHERE id = ?1", &params[2..], "reading the key table")
                .await?
                .into_iter()
                .next()
        }
    };
    let (hash, revoked_ms, first) = match row {
        Some(r) => {
            (r["sha256"].as_str().unwrap_or_default().to_string(), r["revoked_ms"].as_u64().unwrap_or(now), first)
        }
        // Made before D1 kept keys: KV's index is all there is.
        None => match keystore::indexed(env, id).await? {
            Some((hash, meta)) => (hash, meta.revoked_ms.unwrap_or(now), meta.revoked_ms.is_none()),
            None => return Ok(None),
        },
    };
    let meta = keystore::revoke(env, id, &hash, revoked_ms).await?;
    // Audited once, by the revoke that made it; a repeat only finishes KV's part.
    if first {
        let summary = format!("key `{id}` revoked");
        let entry = AuditEntry {
            ts_ms: now,
            actor,
            action: "key.revoke",
            old_version: None,
            new_version: None,
            summary: &summary,
        };
        store::audit(&db, &entry, "applied").await?;
    }
    Ok(Some(meta))
}

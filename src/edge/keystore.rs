//! Gateway keys created through the admin API, kept in KV by the SHA-256 of the secret
//! (`key:<hash>`), never in clear, with an index by id (`keyid:<id>`) for listing and
//! revocation (D1's `gateway_keys` decides who may have an id: `keyadmin`). The edge reads
//! them on the request path through a per-isolate memo (`policy::keys::KeyMemo`: bounded,
//! and with a budget of KV reads for keys it does not know), so a revocation is effective
//! at once in the isolate that wrote it, within `FOUND_MS` (2 s) in the rest of its colo,
//! and within KV's propagation (about a minute) everywhere.

use super::state::{now_ms, State};
use super::store;
use crate::config::KeyConfig;
use crate::model::error::GatewayError;
use crate::policy::keys::{self, KeyMemo, Lookup};
use crate::util::hash::sha256_hex;
use crate::util::valueread::{At, Fields, FromValue};
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use worker::{Env, Headers, KvStore};

/// `x-gateway-test-fault: slow-key-lookup` holds a lookup this long after its KV read
/// (tests only), so that a revocation can land in between.
const SLOW_LOOKUP_MS: u64 = 1_500;
const KEY_PREFIX: &str = "key:";
const ID_PREFIX: &str = "keyid:";

#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub key: KeyConfig,
    pub created_ms: u64,
    pub created_by: String,
}

impl FromValue for KeyRecord {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(KeyRecord { key: f.req("key")?, created_ms: f.req("created_ms")?, created_by: f.req("created_by")? })
    }
}

/// What the id index shows without reading each record.
#[derive(Debug, Clone, Serialize)]
pub struct KeyMeta {
    pub id: String,
    pub team: Option<String>,
    pub created_ms: u64,
    pub created_by: String,
    pub revoked_ms: Option<u64>,
}

impl FromValue for KeyMeta {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(KeyMeta {
            id: f.req("id")?,
            team: f.opt("team")?,
            created_ms: f.req("created_ms")?,
            created_by: f.req("created_by")?,
            revoked_ms: f.opt("revoked_ms")?,
        })
    }
}

thread_local! {
    /// KV lookups of keys, bounded in memory and in the reads made-up keys may cost
    /// (`policy::keys::KeyMemo`).
    static MEMO: RefCell<KeyMemo> = RefCell::new(KeyMemo::default());
}

/// This isolate's memo, for tests (`GET /admin/test/keystore`).
pub fn stats() -> Value {
    MEMO.with(|m| {
        let m = m.borrow();
        let (entries, capacity) = m.size();
        serde_json::json!({
            "kv_reads": m.kv_reads, "throttled": m.throttled, "entries": entries, "capacity": capacity,
            "read_burst": keys::READ_BURST, "reads_per_s": keys::READS_PER_S,
        })
    })
}

pub fn kv_error(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(503, "service_unavailable", "store_unavailable", format!("{what} failed: {e}"))
}

/// 409 `key_exists`.
pub fn exists(id: &str, why: &str) -> GatewayError {
    GatewayError::new(409, "invalid_request_error", "key_exists", format!("Key id `{id}` {why}."))
}

async fn lookup(kv: &KvStore, hash: &str, slow: bool) -> Result<Option<KeyConfig>, GatewayError> {
    let ticket = match MEMO.with(|m| m.borrow_mut().lookup(hash, now_ms())) {
        Lookup::Known(key) => return Ok(key),
        Lookup::Read(ticket) => ticket,
        Lookup::Throttled => {
            return Err(GatewayError::new(
                503,
                "service_unavailable",
                "key_check_throttled",
                "Too many unknown gateway keys reached this server just now, so this one could not be checked; retry in a second.",
            )
            .with_retry_after(1))
        }
    };
    let record = store::get_json::<KeyRecord>(kv, &format!("{KEY_PREFIX}{hash}"))
        .await
        .map_err(|e| kv_error("reading a gateway key", e))?
        .map(|r| r.key);
    if slow {
        worker::Delay::from(std::time::Duration::from_millis(SLOW_LOOKUP_MS)).await;
    }
    Ok(MEMO.with(|m| m.borrow_mut().settle(hash, ticket, record, now_ms())))
}

/// The key a request presents: from the config (by hash or Worker secret), else from KV.
pub async fn authenticate(env: &Env, state: &State, h: &Headers) -> Result<KeyConfig, GatewayError> {
    let authorization = h.get("authorization").ok().flatten();
    let x_api_key = h.get("x-api-key").ok().flatten();
    let presented = keys::presented(authorization.as_deref(), x_api_key.as_deref());
    match state.authenticate_config(presented) {
        Ok(k) => Ok(k.clone()),
        Err(e) => {
            // Only keys the admin API could have made are looked up in KV.
            let Some(secret) = presented.filter(|p| keys::may_be_api_key(p)) else { return Err(e) };
            let kv = store::kv(env)?;
            let slow = super::state::test_fault(state.allow_test_faults, h).as_deref() == Some("slow-key-lookup");
            lookup(&kv, &sha256_hex(secret.as_bytes()), slow).await?.ok_or(e)
        }
    }
}

/// `gw-` and 64 hex digits from the runtime's CSPRNG (two v4 UUIDs: 244 random bits).
pub fn new_secret() -> String {
    format!("gw-{}{}", super::respond::request_id(), super::respond::request_id())
}

/// Whether KV's index has a key with this id (revoked or not).
pub async fn in_kv(kv: &KvStore, id: &str) -> Result<bool, GatewayError> {
    let existing =
        kv.get(&format!("{ID_PREFIX}{id}")).text().await.map_err(|e| kv_error("reading the key index", e))?;
    Ok(existing.is_some())
}

/// Stores a new key (`key.sha256` set) and its index entry. On failure nothing of it is
/// left that authenticates.
pub async fn store_key(kv: &KvStore, record: &KeyRecord) -> Result<(), GatewayError> {
    let hash = record.key.sha256.clone().unwrap_or_default();
    let meta = KeyMeta {
        id: record.key.id.clone(),
        team: record.key.team.clone(),
        created_ms: record.created_ms,
        created_by: record.created_by.clone(),
        revoked_ms: None,
    };
    store::put_json(kv, &format!("{KEY_PREFIX}{hash}"), record)
        .await
        .map_err(|e| kv_error("writing a gateway key", e))?;
    if let Err(e) = put_index(kv, &hash, &meta).await {
        let _ = forget(kv, &hash).await;
        return Err(e);
    }
    Ok(())
}

/// Makes the key with this hash stop authenticating: in this isolate at once (whatever
/// lookups are under way), elsewhere once KV's delete reaches them.
pub async fn forget(kv: &KvStore, hash: &str) -> Result<(), GatewayError> {
    MEMO.with(|m| m.borrow_mut().revoke(hash, now_ms()));
    kv.delete(&format!("{KEY_PREFIX}{hash}")).await.map_err(|e| kv_error("revoking a key", e))
}

async fn put_index(kv: &KvStore, hash: &str, meta: &KeyMeta) -> Result<(), GatewayError> {
    kv.put_bytes(&format!("{ID_PREFIX}{}", meta.id), hash.as_bytes())
        .and_then(|b| b.metadata(meta))
        .map_err(|e| kv_error("writing the key index", e))?
        .execute()
        .await
        .map_err(|e| kv_error("writing the key index", e))
}

pub async fn list(env: &Env) -> Result<Vec<KeyMeta>, GatewayError> {
    let metadata = store::list_metadata(env, ID_PREFIX).await.map_err(|e| kv_error("listing keys", e))?;
    Ok(metadata.iter().filter_map(|m| KeyMeta::read(m).ok()).collect())
}

/// The index entry of a key: its hash and what the listing shows.
pub async fn indexed(env: &Env, id: &str) -> Result<Option<(String, KeyMeta)>, GatewayError> {
    let index = format!("{ID_PREFIX}{id}");
    let (hash, meta) = store::get_with_metadata(env, &index).await.map_err(|e| kv_error("reading the key index", e))?;
    let (Some(hash), Some(meta)) = (hash, meta) else { return Ok(None) };
    let meta: Value = serde_json::from_slice(meta.as_bytes()).map_err(|e| kv_error("reading the key index", e))?;
    Ok(Some((hash, KeyMeta::read(&meta).map_err(|e| kv_error("reading the key index", e))?)))
}

/// Revokes the key with this hash in KV: its record deleted (so it no longer
/// authenticates), the index keeping when, for the listing. Idempotent.
pub async fn revoke(env: &Env, id: &str, hash: &str, revoked_ms: u64) -> Result<KeyMeta, GatewayError> {
    let kv = store::kv(env)?;
    forget(&kv, hash).await?;
    match indexed(env, id).await? {
        Some((_, meta)) if meta.revoked_ms.is_some() => Ok(meta),
        Some((_, mut meta)) => {
            meta.revoked_ms = Some(revoked_ms);
            put_index(&kv, hash, &meta).await?;
            Ok(meta)
        }
        // Its creation failed before the index was written: nothing to list.
        None => Ok(KeyMeta {
            id: id.to_string(),
            team: None,
            created_ms: revoked_ms,
            created_by: String::new(),
            revoked_ms: Some(revoked_ms),
        }),
    }
}

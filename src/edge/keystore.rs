//! Gateway keys created through the admin API, kept in KV by the SHA-256 of the secret
//! (`key:<hash>`), never in clear, with an index by id (`keyid:<id>`) for listing and
//! revocation. The edge reads them on the request path through a short per-isolate memo,
//! so a revocation is effective at once in the isolate that wrote it, within
//! [`MEMO_MS`] in the rest of its colo, and within KV's propagation (about a minute)
//! everywhere.

use super::state::{now_ms, State};
use super::store;
use crate::config::KeyConfig;
use crate::model::error::GatewayError;
use crate::policy::keys;
use crate::util::hash::sha256_hex;
use crate::util::valueread::{At, Fields, FromValue};
use serde::Serialize;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{Env, Headers, KvStore};

pub const MEMO_MS: u64 = 2_000;
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
    static MEMO: RefCell<HashMap<String, (Option<KeyConfig>, u64)>> = RefCell::new(HashMap::new());
}

fn kv_error(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(503, "service_unavailable", "store_unavailable", format!("{what} failed: {e}"))
}

async fn lookup(kv: &KvStore, hash: &str) -> Result<Option<KeyConfig>, GatewayError> {
    let now = now_ms();
    if let Some(hit) = MEMO.with(|m| m.borrow().get(hash).filter(|(_, at)| now.saturating_sub(*at) < MEMO_MS).cloned())
    {
        return Ok(hit.0);
    }
    let record = store::get_json::<KeyRecord>(kv, &format!("{KEY_PREFIX}{hash}"))
        .await
        .map_err(|e| kv_error("reading a gateway key", e))?
        .map(|r| r.key);
    MEMO.with(|m| m.borrow_mut().insert(hash.to_string(), (record.clone(), now)));
    Ok(record)
}

/// The key a request presents: from the config (by hash or Worker secret), else from KV.
pub async fn authenticate(env: &Env, state: &State, h: &Headers) -> Result<KeyConfig, GatewayError> {
    let authorization = h.get("authorization").ok().flatten();
    let x_api_key = h.get("x-api-key").ok().flatten();
    let presented = keys::presented(authorization.as_deref(), x_api_key.as_deref());
    match state.authenticate_config(presented) {
        Ok(k) => Ok(k.clone()),
        Err(e) => {
            let Some(secret) = presented else { return Err(e) };
            let kv = store::kv(env)?;
            lookup(&kv, &sha256_hex(secret.as_bytes())).await?.ok_or(e)
        }
    }
}

/// `gw-` and 64 hex digits from the runtime's CSPRNG (two v4 UUIDs: 244 random bits).
fn new_secret() -> String {
    format!("gw-{}{}", super::respond::request_id(), super::respond::request_id())
}

pub async fn id_taken(kv: &KvStore, state: &State, id: &str) -> Result<bool, GatewayError> {
    if state.gateway.config.keys.iter().any(|k| k.id == id) {
        return Ok(true);
    }
    let existing =
        kv.get(&format!("{ID_PREFIX}{id}")).text().await.map_err(|e| kv_error("reading the key index", e))?;
    Ok(existing.is_some())
}

/// Stores a new key; returns its secret, which nothing keeps.
pub async fn create(kv: &KvStore, mut key: KeyConfig, actor: &str) -> Result<String, GatewayError> {
    let secret = new_secret();
    let hash = sha256_hex(secret.as_bytes());
    key.sha256 = Some(hash.clone());
    key.secret = None;
    let created_ms = now_ms();
    let meta = KeyMeta {
        id: key.id.clone(),
        team: key.team.clone(),
        created_ms,
        created_by: actor.to_string(),
        revoked_ms: None,
    };
    let record = KeyRecord { key, created_ms, created_by: actor.to_string() };
    store::put_json(kv, &format!("{KEY_PREFIX}{hash}"), &record)
        .await
        .map_err(|e| kv_error("writing a gateway key", e))?;
    put_index(kv, &hash, &meta).await?;
    Ok(secret)
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

/// Revokes a key created through the API: its record is deleted (so it no longer
/// authenticates) and the index keeps when and by whom, for the listing.
pub async fn revoke(env: &Env, id: &str) -> Result<Option<KeyMeta>, GatewayError> {
    let index = format!("{ID_PREFIX}{id}");
    let (hash, meta) = store::get_with_metadata(env, &index).await.map_err(|e| kv_error("reading the key index", e))?;
    let meta = match meta {
        Some(m) => {
            let m: Value = serde_json::from_slice(m.as_bytes()).map_err(|e| kv_error("reading the key index", e))?;
            Some(KeyMeta::read(&m).map_err(|e| kv_error("reading the key index", e))?)
        }
        None => None,
    };
    let (Some(hash), Some(mut meta)) = (hash, meta) else { return Ok(None) };
    let kv = store::kv(env)?;
    let kv = &kv;
    if meta.revoked_ms.is_some() {
        return Ok(Some(meta));
    }
    kv.delete(&format!("{KEY_PREFIX}{hash}")).await.map_err(|e| kv_error("revoking a key", e))?;
    MEMO.with(|m| m.borrow_mut().insert(hash.clone(), (None, now_ms())));
    meta.revoked_ms = Some(now_ms());
    put_index(kv, &hash, &meta).await?;
    Ok(Some(meta))
}

//! Where runtime config lives. KV holds every config version (`config:v:<n>`) and the
//! pointer to the active one (`config:active`): the edge reads KV on the request path, and
//! KV replicates to every colo by itself. D1 holds the audit log, whose unique
//! `new_version` is what makes two concurrent admin writes conflict instead of one
//! silently overwriting the other; each claim records whether its write was applied.

use crate::model::error::GatewayError;
use crate::util::valueread::{At, Fields, FromValue};
use serde::Serialize;
use serde_json::Value;
use worker::js_sys::{Function, Object, Promise, Reflect, JSON};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{D1Database, D1PreparedStatement, Env, KvStore};

pub const KV_BINDING: &str = "GATEWAY_KV";
pub const D1_BINDING: &str = "LEDGER";
const ACTIVE: &str = "config:active";
const VERSION_PREFIX: &str = "config:v:";

fn version_key(v: u64) -> String {
    // Zero-padded so KV's lexicographic listing is in version order.
    format!("{VERSION_PREFIX}{v:012}")
}

pub fn unavailable(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(503, "service_unavailable", "store_unavailable", format!("{what} failed: {e}"))
}

pub fn kv(env: &Env) -> Result<KvStore, GatewayError> {
    env.kv(KV_BINDING).map_err(|e| unavailable("binding KV", e))
}

pub fn d1(env: &Env) -> Result<D1Database, GatewayError> {
    env.d1(D1_BINDING).map_err(|e| unavailable("binding D1", e))
}

/// The active version; 0 means the deployed base config (bundled or `GATEWAY_CONFIG`).
pub async fn active_version(kv: &KvStore) -> Result<u64, GatewayError> {
    let text = kv.get(ACTIVE).text().await.map_err(|e| unavailable("reading the active config version", e))?;
    Ok(text.and_then(|t| t.trim().parse().ok()).unwrap_or(0))
}

pub async fn load_version(kv: &KvStore, v: u64) -> Result<Option<String>, GatewayError> {
    kv.get(&version_key(v)).text().await.map_err(|e| unavailable("reading a config version", e))
}

/// What the version list shows without reading each document.
#[derive(Debug, Clone, Serialize)]
pub struct VersionMeta {
    pub version: u64,
    pub ts_ms: u64,
    pub actor: String,
    pub action: String,
    pub changes: Vec<String>,
}

impl FromValue for VersionMeta {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(VersionMeta {
            version: f.req("version")?,
            ts_ms: f.req("ts_ms")?,
            actor: f.req("actor")?,
            action: f.req("action")?,
            changes: f.req("changes")?,
        })
    }
}

pub async fn put_version(kv: &KvStore, doc: &str, meta: &VersionMeta) -> Result<(), GatewayError> {
    kv.put_bytes(&version_key(meta.version), doc.as_bytes())
        .and_then(|b| b.metadata(meta))
        .map_err(|e| unavailable("writing a config version", e))?
        .execute()
        .await
        .map_err(|e| unavailable("writing a config version", e))
}

/// Removes a version whose activation failed, so that nothing can roll back to a
/// version that never took effect.
pub async fn delete_version(kv: &KvStore, v: u64) -> Result<(), GatewayError> {
    kv.delete(&version_key(v)).await.map_err(|e| unavailable("removing a config version", e))
}

pub async fn set_active(kv: &KvStore, v: u64) -> Result<(), GatewayError> {
    kv.put_bytes(ACTIVE, v.to_string().as_bytes())
        .map_err(|e| unavailable("activating a config version", e))?
        .execute()
        .await
        .map_err(|e| unavailable("activating a config version", e))
}

pub async fn list_versions(env: &Env) -> Result<Vec<VersionMeta>, GatewayError> {
    let metadata = list_metadata(env, VERSION_PREFIX).await.map_err(|e| unavailable("listing config versions", e))?;
    Ok(metadata.iter().filter_map(|m| VersionMeta::read(m).ok()).collect())
}

// KV and D1 answers are read as JSON text (the runtime's `JSON.stringify`, then
// serde_json) rather than through worker's typed helpers, which convert JS values with
// serde_wasm_bindgen: a second deserializer for every type read that way.

fn js_error(e: JsValue) -> String {
    format!("js error: {e:?}")
}

fn stringify(value: &JsValue) -> Result<String, String> {
    JSON::stringify(value).map_err(js_error)?.as_string().ok_or_else(|| "not JSON".to_string())
}

/// Calls a method of the KV binding (`env.GATEWAY_KV.<method>(arg)`) and awaits it.
async fn kv_call(env: &Env, method: &str, arg: &JsValue) -> Result<JsValue, String> {
    let kv = Reflect::get(env, &JsValue::from_str(KV_BINDING)).map_err(js_error)?;
    let f: Function = Reflect::get(&kv, &JsValue::from_str(method)).map_err(js_error)?.dyn_into().map_err(js_error)?;
    let promise = f.call1(&kv, arg).map_err(js_error)?;
    JsFuture::from(Promise::from(promise)).await.map_err(js_error)
}

/// One page of `list()`.
pub struct ListPage {
    pub keys: Vec<ListedKey>,
    pub list_complete: bool,
    pub cursor: Option<String>,
}

impl FromValue for ListPage {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(ListPage { keys: f.req("keys")?, list_complete: f.req("list_complete")?, cursor: f.opt("cursor")? })
    }
}

pub struct ListedKey {
    pub name: String,
    pub metadata: Option<Value>,
}

impl FromValue for ListedKey {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(ListedKey { name: f.req("name")?, metadata: f.opt("metadata")? })
    }
}

/// A page of the keys under `prefix` (at most `limit`, else KV's default of 1000), from
/// `cursor` on.
pub async fn list_page(env: &Env, prefix: &str, limit: Option<u32>, cursor: Option<&str>) -> Result<ListPage, String> {
    let options = Object::new();
    let set = |k: &str, v: JsValue| Reflect::set(&options, &JsValue::from_str(k), &v).map(drop).map_err(js_error);
    set("prefix", JsValue::from_str(prefix))?;
    if let Some(l) = limit {
        set("limit", JsValue::from_f64(f64::from(l)))?;
    }
    if let Some(c) = cursor {
        set("cursor", JsValue::from_str(c))?;
    }
    let page = stringify(&kv_call(env, "list", &options).await?)?;
    let page: Value = serde_json::from_slice(page.as_bytes()).map_err(|e| e.to_string())?;
    ListPage::read(&page)
}

/// The metadata of every key under `prefix` that has some, in key order.
pub async fn list_metadata(env: &Env, prefix: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = list_page(env, prefix, None, cursor.as_deref()).await?;
        out.extend(page.keys.into_iter().filter_map(|k| k.metadata));
        if page.list_complete || page.cursor.is_none() {
            return Ok(out);
        }
        cursor = page.cursor;
    }
}

/// A key's value (text) and its metadata (JSON text).
pub async fn get_with_metadata(env: &Env, key: &str) -> Result<(Option<String>, Option<String>), String> {
    let pair = kv_call(env, "getWithMetadata", &JsValue::from_str(key)).await?;
    let value = Reflect::get(&pair, &JsValue::from_str("value")).map_err(js_error)?.as_string();
    let metadata = Reflect::get(&pair, &JsValue::from_str("metadata")).map_err(js_error)?;
    let metadata = if metadata.is_null() || metadata.is_undefined() { None } else { Some(stringify(&metadata)?) };
    Ok((value, metadata))
}

/// Runs a statement and returns its rows as a JSON array of objects, one per row, keyed
/// by column name in the query's column order.
pub async fn rows_json(stmt: &D1PreparedStatement) -> Result<String, String> {
    let promise = stmt.inner().all().map_err(js_error)?;
    let result = JsFuture::from(promise).await.map_err(|e| worker::Error::from(e).to_string())?;
    let rows = Reflect::get(&result, &JsValue::from_str("results")).map_err(js_error)?;
    if rows.is_null() || rows.is_undefined() {
        return Ok("[]".to_string());
    }
    stringify(&rows)
}

/// Writes `value` as JSON text. (`KvStore::put` of a struct goes through JS values, where
/// maps become `Map` objects that serialise as `{}`.)
pub async fn put_json(kv: &KvStore, key: &str, value: &impl Serialize) -> Result<(), String> {
    put_bytes(kv, key, &serde_json::to_vec(value).map_err(|e| e.to_string())?).await
}

pub async fn put_bytes(kv: &KvStore, key: &str, bytes: &[u8]) -> Result<(), String> {
    kv.put_bytes(key, bytes).map_err(|e| e.to_string())?.execute().await.map_err(|e| e.to_string())
}

pub async fn get_json<T: FromValue>(kv: &KvStore, key: &str) -> Result<Option<T>, String> {
    let Some(text) = kv.get(key).text().await.map_err(|e| e.to_string())? else { return Ok(None) };
    serde_json::from_slice(text.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|v: Value| T::read(&v))
        .map(Some)
        .map_err(|e| format!("`{key}` is not valid: {e}"))
}

pub struct AuditEntry<'a> {
    pub ts_ms: u64,
    pub actor: &'a str,
    pub action: &'a str,
    /// Config versions, for config changes; none for other actions (keys).
    pub old_version: Option<u64>,
    pub new_version: Option<u64>,
    pub summary: &'a str,
}

/// Records an action, `applied` when it is complete or `pending` when it is about to be
/// made (then [`settle`]d); returns the row's id.
pub async fn audit(db: &D1Database, e: &AuditEntry<'_>, status: &str) -> Result<u64, GatewayError> {
    let stmt = db
        .prepare(
            "INSERT INTO audit_log (ts_ms, actor, action, old_version, new_version, summary, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .bind(&[
            JsValue::from_f64(e.ts_ms as f64),
            JsValue::from_str(e.actor),
            JsValue::from_str(e.action),
            e.old_version.map_or(JsValue::NULL, |v| JsValue::from_f64(v as f64)),
            e.new_version.map_or(JsValue::NULL, |v| JsValue::from_f64(v as f64)),
            JsValue::from_str(e.summary),
            JsValue::from_str(status),
        ])
        .map_err(|err| unavailable("preparing the audit row", err))?;
    let row = rows(&stmt, "writing the audit log").await?;
    row.first().and_then(|r| r["id"].as_u64()).ok_or_else(|| unavailable("writing the audit log", "no row id"))
}

/// How long a claimed version may stay `pending` and still hold up other changes: a write
/// takes well under a second, so one still pending after this died halfway.
const PENDING_MS: u64 = 60_000;
/// How long a version recorded as applied may be newer than the active version KV shows
/// here and still be taken for KV's propagation (about a minute) rather than a write whose
/// activation never happened (as the audit-first writes before the status column left).
const PROPAGATION_MS: u64 = 300_000;

/// Rows that claimed a version above `based_on` and can no longer become it: marked
/// failed, so they neither hold up this change nor claim, in the log, to be in effect.
const ABANDON: &str = "UPDATE audit_log SET status = 'failed', \
     detail = 'never became the active version (it was ' || ?1 || ' when a later change was made)' \
     WHERE new_version > ?1 AND ((status = 'pending' AND ts_ms <= ?2) OR (status = 'applied' AND ts_ms <= ?3))";

/// The claim: the next number above both the version the change is built on and every
/// number ever claimed (so a failed write's number is never reused), unless another
/// change is in flight or newer than what this change was built on.
/// A config change that adds key ids claims them too: none may belong to a key created
/// through the admin API (`gateway_keys`), whose creation checks for claims in turn, so
/// an id never ends up both in the config and in KV.
const CLAIM: &str = "INSERT INTO audit_log (ts_ms, actor, action, old_version, new_version, summary, status) \
     SELECT ?1, ?2, ?3, ?4, CAST(MAX(?4, COALESCE((SELECT MAX(new_version) FROM audit_log), 0)) + 1 AS INTEGER), ?5, 'pending' \
     WHERE NOT EXISTS (SELECT 1 FROM audit_log WHERE new_version > ?4 AND status IN ('pending', 'applied')) \
     AND NOT EXISTS (SELECT 1 FROM gateway_keys WHERE id IN (SELECT value FROM json_each(?6))) \
     RETURNING id, new_version";

const KEY_TAKEN: &str = "SELECT id FROM gateway_keys WHERE id IN (SELECT value FROM json_each(?1)) LIMIT 1";

/// Whether a key created through the admin API may be created now, on a config read at
/// version `?1`: no config change claimed since (in flight, or applied and maybe not yet
/// visible here). The same ages as [`ABANDON`]: older claims no longer count.
pub const NO_CONFIG_CHANGE_SINCE: &str = "NOT EXISTS (SELECT 1 FROM audit_log WHERE new_version > ?1 \
     AND ((status = 'pending' AND ts_ms > ?2) OR (status = 'applied' AND ts_ms > ?3)))";

/// The two cut-offs [`NO_CONFIG_CHANGE_SINCE`] takes (as `?2` and `?3`) at `now`.
pub fn claim_cutoffs(now: u64) -> [u64; 2] {
    [now.saturating_sub(PENDING_MS), now.saturating_sub(PROPAGATION_MS)]
}

const BLOCKING: &str = "SELECT new_version, status, actor, ts_ms FROM audit_log \
     WHERE new_version > ?1 AND status IN ('pending', 'applied') ORDER BY new_version DESC LIMIT 1";

pub fn f64s(values: &[u64]) -> Vec<JsValue> {
    values.iter().map(|v| JsValue::from_f64(*v as f64)).collect()
}

pub async fn rows(stmt: &D1PreparedStatement, what: &str) -> Result<Vec<Value>, GatewayError> {
    let text = rows_json(stmt).await.map_err(|e| unavailable(what, e))?;
    serde_json::from_str(&text).map_err(|e| unavailable(what, e))
}

pub fn conflict(code: &'static str, message: String) -> GatewayError {
    GatewayError::new(409, "invalid_request_error", code, message)
}

/// A claimed config version and its audit row.
pub struct Claim {
    pub row: u64,
    pub version: u64,
}

/// Claims the next config version for a change built on version `based_on` (`e`'s
/// `old_version`) that adds the key ids `added_keys`, with a `pending` audit row: the row
/// is written before KV, so no change takes effect unaudited, and two changes built on
/// the same version cannot both win. Every write then settles its row ([`settle`]).
pub async fn claim_version(
    db: &D1Database,
    e: &AuditEntry<'_>,
    based_on: u64,
    added_keys: &[&str],
) -> Result<Claim, GatewayError> {
    let [pending, propagation] = claim_cutoffs(e.ts_ms);
    let abandon = db
        .prepare(ABANDON)
        .bind(&f64s(&[based_on, pending, propagation]))
        .map_err(|err| unavailable("preparing the audit claim", err))?;
    abandon.run().await.map_err(|err| unavailable("writing the audit log", err))?;
    let claim = db
        .prepare(CLAIM)
        .bind(&[
            JsValue::from_f64(e.ts_ms as f64),
            JsValue::from_str(e.actor),
            JsValue::from_str(e.action),
            JsValue::from_f64(based_on as f64),
            JsValue::from_str(e.summary),
            JsValue::from_str(&serde_json::to_string(added_keys).expect("strings serialise")),
        ])
        .map_err(|err| unavailable("preparing the audit claim", err))?;
    let claimed = match rows_json(&claim).await {
        Ok(text) => serde_json::from_str::<Vec<Value>>(&text).map_err(|err| unavailable("claiming a version", err))?,
        // Two changes computed the same number at once; the other one has it.
        Err(err) if err.contains("UNIQUE") => {
            return Err(conflict(
                "version_conflict",
                "Another change claimed the next version first; read the current config and try again.".into(),
            ))
        }
        Err(err) => return Err(unavailable("writing the audit log", err)),
    };
    if let Some(r) = claimed.first() {
        if let (Some(row), Some(version)) = (r["id"].as_u64(), r["new_version"].as_u64()) {
            return Ok(Claim { row, version });
        }
    }
    let ids = JsValue::from_str(&serde_json::to_string(added_keys).expect("strings serialise"));
    let taken = db.prepare(KEY_TAKEN).bind(&[ids]).map_err(|err| unavailable("reading the key table", err))?;
    if let Some(id) = rows(&taken, "reading the key table").await?.first().and_then(|r| r["id"].as_str()) {
        return Err(conflict(
            "key_exists",
            format!("Key id `{id}` belongs to a key created through the admin API (revoked or not); the config may not use it."),
        ));
    }
    let why = db.prepare(BLOCKING).bind(&f64s(&[based_on])).map_err(|err| unavailable("reading the audit log", err))?;
    let row = rows(&why, "reading the audit log").await?.into_iter().next().unwrap_or_default();
    let (version, actor) = (row["new_version"].as_u64().unwrap_or_default(), row["actor"].as_str().unwrap_or("?"));
    let ago = e.ts_ms.saturating_sub(row["ts_ms"].as_u64().unwrap_or(e.ts_ms)) / 1000;
    Err(match row["status"].as_str() {
        Some("pending") => conflict(
            "change_in_progress",
            format!("Version {version} is being written by another change (`{actor}`, {ago} s ago); try again in a moment."),
        ),
        _ => conflict(
            "version_conflict",
            format!(
                "Version {version} was applied {ago} s ago and this change was built on version {based_on}: KV here has not caught up yet (about a minute). Read the current config and try again."
            ),
        ),
    })
}

/// What became of a claimed version.
pub enum Outcome<'a> {
    Applied,
    Failed(&'a str),
}

/// Records the outcome of the write whose `pending` audit row is `row`.
pub async fn settle(db: &D1Database, row: u64, outcome: Outcome<'_>) -> Result<(), GatewayError> {
    let (status, detail) = match outcome {
        Outcome::Applied => ("applied", JsValue::NULL),
        Outcome::Failed(why) => ("failed", JsValue::from_str(why)),
    };
    let stmt = db
        .prepare("UPDATE audit_log SET status = ?1, detail = ?2 WHERE id = ?3 AND status = 'pending'")
        .bind(&[JsValue::from_str(status), detail, JsValue::from_f64(row as f64)])
        .map_err(|err| unavailable("preparing the audit outcome", err))?;
    stmt.run().await.map(drop).map_err(|err| unavailable("recording the audit outcome", err))
}

/// The newest `limit` audit rows, as a JSON array of objects (`id`, `ts_ms`, `actor`,
/// `action`, `old_version`, `new_version`, `summary`, `status`, `detail`).
pub async fn audit_rows(db: &D1Database, limit: u32) -> Result<String, GatewayError> {
    let stmt = db
        .prepare(
            "SELECT id, ts_ms, actor, action, old_version, new_version, summary, status, detail FROM audit_log ORDER BY id DESC LIMIT ?1",
        )
        .bind(&[JsValue::from_f64(f64::from(limit))])
        .map_err(|e| unavailable("reading the audit log", e))?;
    rows_json(&stmt).await.map_err(|e| unavailable("reading the audit log", e))
}

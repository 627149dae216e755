//! The admin API (`/admin/...`, Bearer token from the `ADMIN_TOKEN` secret): read and
//! replace the config and its residency rules without a redeploy, dry runs, versions,
//! rollback, explain, and the audit log. Every change is validated as a whole config,
//! audited in D1 with the token's label, then activated through KV.

use super::state::{self, now_ms, State};
use super::{keyadmin, keystore, respond, store, upstream};
use crate::admin::{self, AdminTokens, ExplainQuery};
use crate::config::secrets::ADMIN_TOKEN;
use crate::config::{self, Residency};
use crate::ledger::breakdown::{self, Format};
use crate::model::error::GatewayError;
use crate::util::uri;
use crate::util::valueread::{self, At, Fields, FromValue};
use serde_json::{json, Value};
use std::rc::Rc;
use worker::web_sys::Response;
use worker::{Env, Method, Request};

const MAX_ADMIN_BODY: usize = 1024 * 1024;

fn authenticate(req: &Request, env: &Env) -> Result<String, GatewayError> {
    let tokens = AdminTokens::parse(&state::secret(env, ADMIN_TOKEN).unwrap_or_default()).map_err(|why| {
        // Logged, not answered: the caller is not authenticated yet.
        worker::console_error!("the admin API is disabled: ADMIN_TOKEN is malformed: {why}");
        GatewayError::new(
            500,
            "api_error",
            "admin_token_invalid",
            "The admin API is disabled: the ADMIN_TOKEN secret is not in the `label:token,...` format; the worker's log says why.",
        )
    })?;
    if tokens.is_empty() {
        return Err(GatewayError::unauthorized("The admin API is disabled: set the ADMIN_TOKEN secret."));
    }
    let auth = req.headers().get("authorization").ok().flatten();
    let presented = crate::policy::keys::presented(auth.as_deref(), None)
        .ok_or_else(|| GatewayError::unauthorized("Missing admin token: send `Authorization: Bearer <token>`."))?;
    tokens.authenticate(presented).map(str::to_string).ok_or_else(|| GatewayError::unauthorized("Invalid admin token."))
}

fn query_flag(req: &Request, name: &str) -> bool {
    uri::query_pairs(&req.inner().url()).iter().any(|(k, v)| k == name && (v == "true" || v == "1" || v.is_empty()))
}

fn query_u32(req: &Request, name: &str) -> Option<u32> {
    uri::query_pairs(&req.inner().url()).into_iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok())
}

fn invalid_body(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::bad_request("invalid_json", format!("The request body is not valid: {e}."))
}

/// A request as one of the admin API's types; an object that names a key twice is refused.
async fn body_json<T: FromValue>(req: &Request) -> Result<T, GatewayError> {
    let body = upstream::read_client_body(req.inner(), req.headers(), MAX_ADMIN_BODY).await?;
    valueread::parse(&body).map_err(|e| e.to_string()).and_then(|v| T::read(&v)).map_err(invalid_body)
}

/// A document taken whole (a config, a LiteLLM config): of a key named twice, the last.
async fn body_document(req: &Request) -> Result<Value, GatewayError> {
    serde_json::from_slice(&upstream::read_client_body(req.inner(), req.headers(), MAX_ADMIN_BODY).await?)
        .map_err(invalid_body)
}

/// The state as KV has it now, not as this isolate last saw it: a change must build on
/// the latest version.
async fn fresh_state(env: &Env) -> Result<Rc<State>, GatewayError> {
    let kv = store::kv(env)?;
    let active = store::active_version(&kv).await?;
    let current = state::load(env).await?;
    if current.version == active {
        return Ok(current);
    }
    let source = if active == 0 {
        state::base_source(env)
    } else {
        store::load_version(&kv, active)
            .await?
            .ok_or_else(|| GatewayError::internal(format!("Config version {active} is active but missing from KV.")))?
    };
    Ok(state::install(state::build(env, active, source)?))
}

fn replace_residency(source: &str, residency: &Value) -> Result<String, GatewayError> {
    let mut doc: Value =
        serde_json::from_slice(source.as_bytes()).map_err(|e| GatewayError::internal(e.to_string()))?;
    doc["residency"] = residency.clone();
    Ok(serde_json::to_string(&doc).expect("a JSON value serialises"))
}

struct Change<'a> {
    actor: &'a str,
    action: &'a str,
    doc: String,
    dry_run: bool,
    /// A KV write to fail (tests only: `admin-kv-version`, `admin-kv-active`).
    fault: Option<&'a str>,
}

async fn apply(env: &Env, current: &State, change: Change<'_>) -> Result<Response, GatewayError> {
    let invalid = |e: String| GatewayError::bad_request("invalid_config", e);
    let parsed = config::parse(&change.doc).map_err(invalid)?;
    current.check_secrets(&parsed.config).map_err(invalid)?;
    let document = |text: &str| -> Result<Value, GatewayError> {
        serde_json::from_str(text).map_err(|e| GatewayError::internal(e.to_string()))
    };
    let changes = admin::config_diff(&document(&current.source)?, &document(&change.doc)?);
    if change.dry_run {
        return respond::json(
            200,
            &json!({"valid": true, "dry_run": true, "version": current.version, "changes": changes}),
        );
    }
    if changes.is_empty() {
        return respond::json(200, &json!({"version": current.version, "changes": changes, "unchanged": true}));
    }
    let summary = changes.join("; ");
    let ts_ms = now_ms();
    let db = store::d1(env)?;
    let entry = store::AuditEntry {
        ts_ms,
        actor: change.actor,
        action: change.action,
        old_version: Some(current.version),
        new_version: None,
        summary: &summary,
    };
    // Key ids the change adds may not be the admin API's: checked here for keys made
    // before D1 kept them (only KV has those), and by the claim itself for the rest.
    let kv = store::kv(env)?;
    let added: Vec<&str> = parsed
        .config
        .keys
        .iter()
        .map(|k| k.id.as_str())
        .filter(|id| !current.gateway.config.keys.iter().any(|k| k.id == *id))
        .collect();
    for id in &added {
        if keystore::in_kv(&kv, id).await? {
            return Err(keystore::exists(id, "was created through the admin API; the config may not use its id"));
        }
    }
    let store::Claim { row, version } = store::claim_version(&db, &entry, current.version, &added).await?;
    let meta = store::VersionMeta {
        version,
        ts_ms,
        actor: change.actor.to_string(),
        action: change.action.to_string(),
        changes: changes.clone(),
    };
    if let Err(e) = write_version(&kv, &change, &meta).await {
        // An error can come back for a write that landed: the active version says.
        if store::active_version(&kv).await.ok() != Some(version) {
            if let Err(d) = store::delete_version(&kv, version).await {
                worker::console_error!("config version {version}: {}", d.message);
            }
            if let Err(a) = store::settle(&db, row, store::Outcome::Failed(&e.message)).await {
                worker::console_error!("config version {version} failed, not recorded: {}", a.message);
            }
            let message = format!(
                "{} The change was not applied: version {version} is recorded as failed in the audit log and version {} is still active; try again.",
                e.message, current.version
            );
            return Err(GatewayError::new(e.status, e.kind, e.code, message));
        }
    }
    if let Err(a) = store::settle(&db, row, store::Outcome::Applied).await {
        // The change is in effect; its row stays `pending` (outcome not recorded).
        worker::console_error!("config version {version} applied, not recorded: {}", a.message);
    }
    state::install(state::build(env, version, change.doc)?);
    respond::json(
        200,
        &json!({
            "version": version,
            "previous_version": current.version,
            "changes": changes,
            "effective": "now in this colo; everywhere within about a minute (KV propagation)",
        }),
    )
}

/// The version's document, then the pointer to it. A test may fail either write
/// (`x-gateway-test-fault: admin-kv-version` / `admin-kv-active`).
async fn write_version(
    kv: &worker::KvStore,
    change: &Change<'_>,
    meta: &store::VersionMeta,
) -> Result<(), GatewayError> {
    let injected = |name: &str| match change.fault == Some(name) {
        true => Err(GatewayError::new(
            503,
            "service_unavailable",
            "store_unavailable",
            format!("Writing to KV failed ({name}, an injected test fault)."),
        )),
        false => Ok(()),
    };
    injected("admin-kv-version")?;
    store::put_version(kv, &change.doc, meta).await?;
    injected("admin-kv-active")?;
    store::set_active(kv, meta.version).await
}

struct Rollback {
    version: u64,
}

impl FromValue for Rollback {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(Rollback { version: f.req("version")? })
    }
}

async fn version_source(env: &Env, version: u64) -> Result<String, GatewayError> {
    if version == 0 {
        return Ok(state::base_source(env));
    }
    store::load_version(&store::kv(env)?, version).await?.ok_or_else(|| {
        GatewayError::new(
            404,
            "invalid_request_error",
            "version_not_found",
            format!("There is no config version {version}."),
        )
    })
}

pub async fn handle(req: Request, env: &Env, path: &str) -> Result<Response, GatewayError> {
    let actor = authenticate(&req, env)?;
    let method = req.method();
    let dry_run = query_flag(&req, "dry_run");
    let fault = state::test_fault(state::var(env, "ALLOW_TEST_FAULTS").as_deref() == Some("true"), req.headers());
    match (method, path) {
        (Method::Get, "/admin/config") => {
            let s = state::load(env).await?;
            let doc: Value =
                serde_json::from_slice(s.source.as_bytes()).map_err(|e| GatewayError::internal(e.to_string()))?;
            respond::json(200, &json!({"version": s.version, "config": doc}))
        }
        (Method::Put, "/admin/config") => {
            let doc = body_document(&req).await?;
            let current = fresh_state(env).await?;
            let doc = serde_json::to_string(&doc).expect("a JSON value serialises");
            apply(
                env,
                &current,
                Change { actor: &actor, action: "config.replace", doc, dry_run, fault: fault.as_deref() },
            )
            .await
        }
        (Method::Get, "/admin/config/versions") => {
            let versions = store::list_versions(env).await?;
            let active = store::active_version(&store::kv(env)?).await?;
            respond::json(200, &json!({"active": active, "versions": versions}))
        }
        (Method::Post, "/admin/config/rollback") => {
            let Rollback { version } = body_json(&req).await?;
            let current = fresh_state(env).await?;
            let doc = version_source(env, version).await?;
            let action = format!("config.rollback_to_{version}");
            apply(env, &current, Change { actor: &actor, action: &action, doc, dry_run, fault: fault.as_deref() }).await
        }
        (Method::Get, "/admin/residency") => {
            let s = state::load(env).await?;
            let doc: Value =
                serde_json::from_slice(s.source.as_bytes()).map_err(|e| GatewayError::internal(e.to_string()))?;
            respond::json(200, &json!({"version": s.version, "residency": doc["residency"]}))
        }
        (Method::Put, "/admin/residency") | (Method::Post, "/admin/residency/validate") => {
            let body = upstream::read_client_body(req.inner(), req.headers(), MAX_ADMIN_BODY).await?;
            let invalid =
                |e: String| GatewayError::bad_request("invalid_config", format!("residency is not valid: {e}"));
            // Read alone, the part's errors are located in what the client sent. Text that
            // is not JSON is an invalid body; a key named twice (the parser's one data
            // error) makes invalid rules.
            let residency =
                valueread::parse(&body)
                    .map_err(|e| if e.is_data() { invalid(e.to_string()) } else { invalid_body(e) })?;
            Residency::read(&residency).map_err(invalid)?;
            let current = fresh_state(env).await?;
            let doc = replace_residency(&current.source, &residency)?;
            let dry_run = dry_run || path.ends_with("/validate");
            apply(
                env,
                &current,
                Change { actor: &actor, action: "residency.replace", doc, dry_run, fault: fault.as_deref() },
            )
            .await
        }
        (Method::Post, "/admin/residency/rollback") => {
            let Rollback { version } = body_json(&req).await?;
            let current = fresh_state(env).await?;
            let old: Value = serde_json::from_slice(version_source(env, version).await?.as_bytes())
                .map_err(|e| GatewayError::internal(e.to_string()))?;
            let doc = replace_residency(&current.source, &old["residency"])?;
            let action = format!("residency.rollback_to_{version}");
            apply(env, &current, Change { actor: &actor, action: &action, doc, dry_run, fault: fault.as_deref() }).await
        }
        (Method::Post, "/admin/residency/explain") => {
            let q: ExplainQuery = body_json(&req).await?;
            let s = state::load(env).await?;
            let mut explained =
                serde_json::to_value(admin::explain(&s.gateway, &q, &|name| s.provider_secret(env, name).is_some())?)
                    .expect("plain data serialises");
            explained["version"] = json!(s.version);
            respond::json(200, &explained)
        }
        (Method::Get, "/admin/costs") => costs(&req, env).await,
        (Method::Get, "/admin/costs/regions") => {
            let snapshot = super::spend::regions(env)
                .await
                .map_err(|e| GatewayError::new(503, "service_unavailable", "store_unavailable", e))?;
            respond::json(200, &snapshot)
        }
        (Method::Post, "/admin/keys") => create_key(&req, env, &actor).await,
        (Method::Post, "/admin/config/import/litellm") => import_litellm(&req, env).await,
        (Method::Get, "/admin/keys") => list_keys(env).await,
        (Method::Delete, p) if p.starts_with("/admin/keys/") => {
            revoke_key(env, &actor, &p["/admin/keys/".len()..]).await
        }
        // This isolate's key memo, for the tests only (ALLOW_TEST_FAULTS).
        (Method::Get, "/admin/test/keystore") if state::var(env, "ALLOW_TEST_FAULTS").as_deref() == Some("true") => {
            respond::json(200, &keystore::stats())
        }
        (Method::Get, "/admin/audit") => {
            let rows = store::audit_rows(&store::d1(env)?, query_u32(&req, "limit").unwrap_or(50).min(1000)).await?;
            respond::bytes(200, "application/json", format!("{{\"entries\":{rows}}}").into_bytes())
        }
        (m, p) => {
            let known = [
                "/admin/config",
                "/admin/config/versions",
                "/admin/config/rollback",
                "/admin/residency",
                "/admin/residency/validate",
                "/admin/residency/rollback",
                "/admin/residency/explain",
                "/admin/audit",
                "/admin/costs",
                "/admin/costs/regions",
                "/admin/keys",
                "/admin/config/import/litellm",
            ];
            if known.contains(&p) {
                Err(GatewayError::method_not_allowed(m.as_ref(), p, "the method the README documents"))
            } else {
                Err(GatewayError::not_found(p))
            }
        }
    }
}

/// `GET /admin/costs`: the breakdown, as JSON or CSV. The default range is the current
/// month to date (UTC).
async fn costs(req: &Request, env: &Env) -> Result<Response, GatewayError> {
    let today = crate::util::time::day(now_ms());
    let month_start = format!("{}-01", &today[..7]);
    let pairs = uri::query_pairs(&req.inner().url());
    let q = breakdown::parse_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), &month_start, &today)?;
    let (sql, params) = q.sql();
    let params: Vec<worker::wasm_bindgen::JsValue> = params.iter().map(|p| p.as_str().into()).collect();
    let stmt = store::d1(env)?.prepare(sql).bind(&params).map_err(respond::internal)?;
    let rows = store::rows_json(&stmt).await.map_err(|e| GatewayError::internal(format!("Runtime error: {e}")))?;
    let rows: Vec<serde_json::Map<String, Value>> =
        serde_json::from_slice(rows.as_bytes()).map_err(|e| GatewayError::internal(e.to_string()))?;
    let (rows, totals) = breakdown::present(&q, rows);
    match q.format {
        Format::Csv => respond::bytes(200, "text/csv; charset=utf-8", breakdown::csv(&q, &rows).into_bytes()),
        Format::Json => respond::json(
            200,
            &json!({"from": q.from, "to": q.to, "group_by": q.group_by, "total": totals, "rows": rows}),
        ),
    }
}

/// `POST /admin/keys`: the body is a key without its secret (`id`, `team`, `feature`, `env`,
/// `aliases`, `residency`, `budget`, `rate_limit`); the answer carries the secret, once.
async fn create_key(req: &Request, env: &Env, actor: &str) -> Result<Response, GatewayError> {
    let key: crate::config::KeyConfig = body_json(req).await?;
    if key.sha256.is_some() || key.secret.is_some() {
        return Err(GatewayError::bad_request(
            "invalid_key",
            "The gateway makes the secret; send no `sha256` or `secret`.",
        ));
    }
    // The config as KV has it now: the key is created only if it is still that version.
    let state = fresh_state(env).await?;
    // Validated with a placeholder hash: the real one does not exist yet.
    let probe = crate::config::KeyConfig { sha256: Some("0".repeat(64)), ..key.clone() };
    config::validate_key(&state.gateway.config, &probe).map_err(|e| GatewayError::bad_request("invalid_key", e))?;
    let id = key.id.clone();
    let secret = keyadmin::create(env, &state, key, actor).await?;
    respond::json(
        201,
        &json!({"id": id, "key": secret, "note": "This is the only time the key is shown; the gateway keeps only its SHA-256."}),
    )
}

async fn list_keys(env: &Env) -> Result<Response, GatewayError> {
    let state = state::load(env).await?;
    let from_config: Vec<Value> =
        state.gateway.config.keys.iter().map(|k| json!({"id": k.id, "team": k.team, "source": "config"})).collect();
    let from_kv: Vec<Value> = keystore::list(env)
        .await?
        .into_iter()
        .map(|m| {
            json!({"id": m.id, "team": m.team, "source": "admin_api", "created_ms": m.created_ms,
                   "created_by": m.created_by, "revoked_ms": m.revoked_ms})
        })
        .collect();
    respond::json(200, &json!({"keys": from_config.into_iter().chain(from_kv).collect::<Vec<_>>()}))
}

async fn revoke_key(env: &Env, actor: &str, id: &str) -> Result<Response, GatewayError> {
    let state = state::load(env).await?;
    if state.gateway.config.keys.iter().any(|k| k.id == id) {
        return Err(GatewayError::new(
            409,
            "invalid_request_error",
            "key_in_config",
            format!("Key `{id}` is defined in the config; remove it there (PUT /admin/config)."),
        ));
    }
    let meta = keyadmin::revoke(env, id, actor).await?.ok_or_else(|| {
        GatewayError::new(404, "invalid_request_error", "key_not_found", format!("No key with id `{id}`."))
    })?;
    respond::json(200, &json!({"id": id, "revoked_ms": meta.revoked_ms}))
}

/// `POST /admin/config/import/litellm`: a LiteLLM proxy config (as JSON) becomes a draft of
/// this gateway's config — the current one with LiteLLM's deployments, aliases and limits —
/// with notes on what did not map and whether the draft is valid yet. Nothing is applied.
async fn import_litellm(req: &Request, env: &Env) -> Result<Response, GatewayError> {
    let litellm = body_document(req).await?;
    let imported =
        crate::config::litellm::import(&litellm).map_err(|e| GatewayError::bad_request("invalid_litellm_config", e))?;
    let current = state::load(env).await?;
    let mut config: Value =
        serde_json::from_slice(current.source.as_bytes()).map_err(|e| GatewayError::internal(e.to_string()))?;
    for part in ["deployments", "aliases", "limits"] {
        config[part] = imported.draft[part].clone();
    }
    let validation = config::parse(&config.to_string()).and_then(|g| current.check_secrets(&g.config)).err();
    respond::json(
        200,
        &json!({"config": config, "notes": imported.notes, "valid": validation.is_none(), "validation_error": validation}),
    )
}

//! The edge shell: the Workers entry points and everything that touches the runtime.
//! Decisions are delegated to the pure core.

mod admin;
mod call;
mod chat;
mod count_tokens;
mod credentials;
mod glue;
mod health;
mod keyadmin;
mod keystore;
mod ledger;
mod models;
mod respond;
mod spend;
mod state;
mod store;
mod streaming;
mod upstream;

use crate::ingress::Ingress;
use crate::ledger::CostEvent;
use crate::model::error::GatewayError;
use std::rc::Rc;
use worker::web_sys;
use worker::web_sys::Response;
use worker::{event, Context, Env, Headers, MessageBatch, Request, ScheduleContext, ScheduledEvent};

const DASHBOARD: &str = include_str!("dashboard.html");
const SNAPSHOT_ATTEMPTS: u32 = 3;

/// Futures wake through promise reactions rather than the global `queueMicrotask`.
/// wasm-bindgen's executor prefers `queueMicrotask` when the global has one, and workerd's
/// wraps every task it is given in a new function behind a new global handle: about 1.5 µs
/// a wake-up, several per request. A resolved promise's `then` stays inside V8. The gateway
/// is the only code in its isolate, and nothing of it calls `queueMicrotask` by name.
#[event(start)]
fn start() {
    use worker::js_sys::{global, Reflect};
    let _ = Reflect::set(&global(), &"queueMicrotask".into(), &worker::wasm_bindgen::JsValue::UNDEFINED);
}

/// Takes the runtime's request as it is: the `worker` crate's wrapper would read its URL,
/// method, headers and `cf` up front, and the hot path needs each once at most.
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let request_id = respond::request_id();
    let url = req.url();
    let path = crate::util::uri::path(&url);
    let ingress = Ingress::for_path(path);
    let ctx = Rc::new(ctx);
    let result = route(req, path, &env, ctx.clone(), ingress, &request_id).await;
    let response = result.unwrap_or_else(|e| respond::error(ingress, &e));
    state::after_response(&ctx);
    response.headers().set("x-gateway-request-id", &request_id)?;
    Ok(response)
}

async fn route(
    req: web_sys::Request,
    path: &str,
    env: &Env,
    ctx: Rc<Context>,
    ingress: Ingress,
    request_id: &str,
) -> Result<Response, GatewayError> {
    if path.starts_with("/admin/") {
        return admin::handle(Request::from(req), env, path).await;
    }
    let method = req.method();
    let allowed = match path {
        "/healthz" | "/dashboard" => "GET",
        "/v1/models" | "/v1/spend" => "GET",
        "/v1/chat/completions" | "/v1/messages" | "/v1/messages/count_tokens" => "POST",
        _ => return Err(GatewayError::not_found(path)),
    };
    let method_ok = match allowed {
        "GET" => method == "GET" || method == "HEAD",
        _ => method == "POST",
    };
    if !method_ok {
        let e = GatewayError::method_not_allowed(&method, path, allowed);
        let response = respond::error(ingress, &e);
        let _ = response.headers().set("allow", if allowed == "GET" { "GET, HEAD" } else { allowed });
        return Ok(response);
    }
    if path == "/healthz" {
        return respond::json(200, &serde_json::json!({"status": "ok"}));
    }
    if path == "/dashboard" {
        // The page itself holds no data: it asks for the admin token and calls the
        // breakdown API with it.
        let page = respond::bytes(200, "text/html; charset=utf-8", DASHBOARD.as_bytes().to_vec())?;
        let _ = page.headers().set(
            "content-security-policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        );
        return Ok(page);
    }
    let state = state::current(env).await?;
    let headers = Headers(req.headers());
    let key = keystore::authenticate(env, &state, &headers).await?;
    let started_ms = state::now_ms();
    match path {
        "/v1/models" => return models::models(&state, &key),
        "/v1/spend" => return models::own_spend(env, &state, &key).await,
        _ => {}
    }
    let call = call::Call { req: &req, headers, env, ctx, state: &state, key: &key, ingress, request_id, started_ms };
    match path {
        "/v1/messages/count_tokens" => count_tokens::handle(&call).await,
        _ => chat::handle(&call).await,
    }
}

/// Housekeeping: parked cost events to D1, and a check of the active config so that a
/// broken one shows up in the logs even while no traffic arrives.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match ledger::move_parked(&env).await {
        Ok(0) => {}
        Ok(n) => worker::console_log!("moved {n} parked cost events to D1"),
        Err(e) => worker::console_error!("parked cost events not moved: {e}"),
    }
    // D1 fails transiently (and, locally, while another process holds the database); a
    // snapshot missed now would otherwise wait five minutes for the next cron.
    for attempt in 1..=SNAPSHOT_ATTEMPTS {
        match spend::refresh(&env).await {
            Ok(_) => break,
            Err(e) if attempt < SNAPSHOT_ATTEMPTS => {
                worker::console_warn!("spend snapshot not refreshed (attempt {attempt}), retrying: {e}");
                worker::Delay::from(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => worker::console_error!("spend snapshot not refreshed: {e}"),
        }
    }
    match state::load(&env).await {
        Err(e) => worker::console_error!("config invalid: {}", e.message),
        // Such deployments are skipped; the admin API would refuse this config.
        Ok(s) => {
            if let Err(e) = s.check_secrets(&s.gateway.config) {
                worker::console_error!("config (version {}) names a secret it may not: {e}", s.version);
            }
        }
    }
}

#[event(queue)]
async fn queue(batch: MessageBatch<CostEvent>, env: Env, _ctx: Context) -> worker::Result<()> {
    ledger::consume(batch, &env).await
}

//! `POST /v1/chat/completions` and `GET /v1/models`: authenticate, decide where the
//! request may go, try the candidates in order, stream or return the answer.

use super::credentials;
use super::ledger::{self, Bill, Ending};
use super::respond;
use super::spend;
use super::state::State;
use super::streaming::{self, Committed};
use super::upstream::{self, now_ms};
use crate::attempts::{self, AttemptLog};
use crate::budget::{self, Budget};
use crate::chat;
use crate::config::{Deployment, KeyConfig};
use crate::error::GatewayError;
use crate::geo::{Caller, CfFields};
use crate::keys;
use crate::ledger::Outcome;
use crate::pricing::format_usd;
use crate::providers::{self, Auth};
use crate::residency::{self, Subject};
use crate::tags;
use std::rc::Rc;
use worker::{Context, Env, Headers, Request, Response};

pub fn models(state: &State, key: &KeyConfig) -> Result<Response, GatewayError> {
    let data: Vec<serde_json::Value> = state
        .gateway
        .config
        .aliases
        .iter()
        .filter(|a| keys::may_use(key, &a.name))
        .map(|a| {
            serde_json::json!({
                "id": a.name,
                "object": "model",
                "created": 0,
                "owned_by": "llm-edge-gateway",
                "description": a.description,
                "deployments": a.deployments,
            })
        })
        .collect();
    respond::json(200, &serde_json::json!({"object": "list", "data": data}))
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The caller's location: `request.cf`, or the `x-gateway-geo-*` headers where the
/// deployment trusts them (local dev and tests, whose `request.cf` is a placeholder).
fn caller(req: &Request, state: &State) -> Caller {
    let country = header(req, "x-gateway-geo-country");
    if state.trust_geo_headers && country.is_some() {
        return Caller::new(country.as_deref(), header(req, "x-gateway-geo-continent").as_deref(), None);
    }
    use worker::js_sys::{Reflect, JSON};
    // Read as JSON rather than through `Cf`'s getters, which panic on a missing field.
    Reflect::get(req.inner(), &"cf".into())
        .ok()
        .filter(|cf| cf.is_object())
        .and_then(|cf| JSON::stringify(&cf).ok())
        .and_then(|json| json.as_string())
        .and_then(|json| serde_json::from_str::<CfFields>(&json).ok())
        .map(Caller::from)
        .unwrap_or_default()
}

/// Where a request is going and what has been decided about it, for the response headers.
struct Receipt {
    rule: String,
    log: AttemptLog,
    /// Soft budgets reached.
    warnings: Vec<String>,
}

impl Receipt {
    fn headers(&self, served_by: Option<&Deployment>) -> Headers {
        let h = Headers::new();
        let _ = h.set("x-gateway-rule", &self.rule);
        let _ = h.set("x-gateway-attempts", &self.log.count().to_string());
        if !self.warnings.is_empty() {
            let _ = h.set("x-gateway-budget-warning", &self.warnings.join("; "));
        }
        if self.log.count() > 0 {
            let _ = h.set("x-gateway-tried", &self.log.summary());
        }
        if let Some(d) = served_by {
            let _ = h.set("x-gateway-provider", d.provider.as_str());
            let _ = h.set("x-gateway-deployment", &d.id);
            let _ = h.set("x-gateway-region", &d.region);
            let _ = h.set("x-gateway-jurisdiction", &d.jurisdiction);
        }
        h
    }

    fn error(&self, e: &GatewayError) -> Response {
        let mut response = respond::error(e);
        let h = response.headers_mut();
        for (name, value) in self.headers(None).entries() {
            let _ = h.set(&name, &value);
        }
        response
    }
}

/// Requests per minute for keys with a `rate_limit`: the named binding counts per key.
async fn rate_limit(env: &Env, key: &KeyConfig) -> Result<(), GatewayError> {
    let Some(binding) = &key.rate_limit else { return Ok(()) };
    let limiter = env.rate_limiter(binding).map_err(|_| {
        GatewayError::internal(format!(
            "Key `{}` names the rate-limit binding `{binding}`, which is not bound.",
            key.id
        ))
    })?;
    let outcome = limiter.limit(key.id.clone()).await.map_err(respond::internal)?;
    if outcome.success {
        Ok(())
    } else {
        Err(GatewayError::new(
            429,
            "rate_limit_error",
            "rate_limited",
            format!("Key `{}` is over its request rate limit ({binding}); retry after the window.", key.id),
        )
        .with_retry_after(60))
    }
}

/// `GET /v1/spend`: the key's own month-to-date spend, and its team's, with their budgets.
pub async fn own_spend(env: &Env, state: &State, key: &KeyConfig) -> Result<Response, GatewayError> {
    let spend = spend::current(env).await;
    let team = key.team.as_deref().map(str::to_ascii_lowercase);
    let budget_json = |b: Option<&Budget>| {
        b.map(|b| serde_json::json!({"monthly_usd": format_usd(b.monthly_usd.0), "mode": format!("{:?}", b.mode).to_lowercase()}))
    };
    let team_budget = team.as_deref().and_then(|t| state.gateway.config.budgets.teams.get(t));
    respond::json(
        200,
        &serde_json::json!({
            "month": spend.month,
            "key": {
                "id": key.id,
                "spend_usd": format_usd(spend.keys.get(&key.id).copied().unwrap_or(0)),
                "budget": budget_json(key.budget.as_ref()),
            },
            "team": team.as_ref().map(|t| serde_json::json!({
                "name": t,
                "spend_usd": format_usd(spend.teams.get(t).copied().unwrap_or(0)),
                "budget": budget_json(team_budget),
            })),
            "as_of_ms": spend.at_ms,
        }),
    )
}

pub async fn handle(
    mut req: Request,
    env: &Env,
    ctx: Rc<Context>,
    state: &State,
    key: &KeyConfig,
    request_id: &str,
) -> Result<Response, GatewayError> {
    let started_ms = now_ms();
    let g = &state.gateway;
    let body = upstream::read_client_body(&mut req, g.config.limits.max_body_bytes).await?;
    let mut chat = chat::parse(&body)?;
    chat.received_at = started_ms / 1000;
    drop(body);
    let alias = g
        .alias(&chat.model)
        .filter(|_| keys::may_use(key, &chat.model))
        .ok_or_else(|| GatewayError::model_not_found(&chat.model))?;
    let tags = tags::resolve(
        key,
        header(&req, "x-gateway-team").as_deref(),
        header(&req, "x-gateway-feature").as_deref(),
        header(&req, "x-gateway-env").as_deref(),
    )?;

    let warnings = budget::check(
        &spend::current(env).await,
        &key.id,
        key.budget.as_ref(),
        &tags.team,
        g.config.budgets.teams.get(&tags.team),
    )?;
    rate_limit(env, key).await?;

    let caller = caller(&req, state);
    let compliance = header(&req, "x-gateway-compliance").map(|t| t.to_ascii_lowercase());
    let subject = Subject {
        caller: &caller,
        compliance: compliance.as_deref(),
        team: Some(&tags.team),
        key_id: Some(&key.id),
        key_policy: key.residency.as_deref(),
    };
    let decision = residency::decide(&g.config.residency, &subject)?;
    let candidates = residency::candidates(g, alias, &decision, &caller);
    let mut receipt = Receipt { rule: decision.rule.clone(), log: AttemptLog::default(), warnings };
    let bill = Bill {
        ctx,
        env: env.clone(),
        request_id: request_id.to_string(),
        started_ms,
        key_id: key.id.clone(),
        tags,
        caller: caller.clone(),
        rule: decision.rule.clone(),
        alias: alias.name.clone(),
        fail_queue: ledger::queue_fault(env, header(&req, "x-gateway-test-fault").as_deref()),
    };
    let failed = |receipt: &Receipt, e: GatewayError, last: Option<&Deployment>| {
        bill.close(Ending {
            served_by: last,
            usage: None,
            status: e.status,
            outcome: Outcome::Error,
            ttfb_ms: None,
            attempts: &receipt.log,
        });
        Ok(receipt.error(&e))
    };
    // The error names the rule only when the rule is what stood between the request and a
    // deployment that might have served it.
    let residency_bound = (!candidates.dropped.is_empty()).then_some(decision.rule.as_str());

    let now_unix = started_ms / 1000;
    let runnable: Vec<(&Deployment, Auth)> =
        candidates.kept.into_iter().filter_map(|d| Some((d, credentials::resolve(env, d, now_unix)?))).collect();
    if runnable.is_empty() {
        let detail = if candidates.dropped.is_empty() {
            format!("no deployment of alias `{}` has its provider key set", alias.name)
        } else {
            format!(
                "none of alias `{}`'s deployments is in an allowed jurisdiction ({})",
                alias.name,
                decision.allowed.label()
            )
        };
        return failed(&receipt, GatewayError::residency_unsatisfiable(&decision.rule, detail), None);
    }

    let mut retry_after = None;
    for (d, auth) in runnable.into_iter().take(g.config.limits.max_attempts) {
        let provider = providers::for_kind(d.provider);
        let up = provider.build(d, &chat, &auth)?;
        let deadline = now_ms() + u64::from(d.first_byte_timeout_ms);
        let mut response = match upstream::send(&up, u64::from(d.first_byte_timeout_ms)).await {
            Ok(r) => r,
            Err(class) => {
                receipt.log.failed(&d.id, None, class);
                continue;
            }
        };
        let status = response.status_code();
        if !(200..300).contains(&status) {
            let body = upstream::read_all(&mut response, deadline).await.unwrap_or_default();
            let class = provider.classify(status, &body);
            receipt.log.failed(&d.id, Some(status), class);
            if class.falls_back() {
                retry_after = response.headers().get("retry-after").ok().flatten().and_then(|v| v.parse().ok());
                continue;
            }
            return failed(&receipt, attempts::terminal(&d.id, status, class, &body, &auth), Some(d));
        }
        if chat.stream {
            match streaming::open(&mut response, provider.stream(&chat), deadline).await {
                Ok(opened) => {
                    receipt.log.succeeded(&d.id, status);
                    let headers = receipt.headers(Some(d));
                    let ttfb_ms = now_ms() - started_ms;
                    let committed = Committed { opened, bill, deployment: d.clone(), attempts: receipt.log, ttfb_ms };
                    return streaming::respond(committed, headers);
                }
                Err(class) => receipt.log.failed(&d.id, Some(status), class),
            }
        } else {
            let ttfb_ms = now_ms() - started_ms;
            match upstream::read_all(&mut response, deadline).await.and_then(|b| provider.response(&chat, b)) {
                Ok((body, usage)) => {
                    receipt.log.succeeded(&d.id, status);
                    let cost = bill.close(Ending {
                        served_by: Some(d),
                        usage,
                        status,
                        outcome: Outcome::Ok,
                        ttfb_ms: Some(ttfb_ms),
                        attempts: &receipt.log,
                    });
                    let headers = receipt.headers(Some(d));
                    let _ = headers.set("content-type", "application/json");
                    if let Some(micros) = cost {
                        let _ = headers.set("x-gateway-cost-usd", &format_usd(micros));
                    }
                    return Ok(Response::from_bytes(body)
                        .map_err(respond::internal)?
                        .with_status(status)
                        .with_headers(headers));
                }
                Err(class) => receipt.log.failed(&d.id, Some(status), class),
            }
        }
    }
    let e = receipt.log.exhausted(residency_bound, retry_after);
    failed(&receipt, e, None)
}

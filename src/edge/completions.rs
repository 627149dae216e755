//! `POST /v1/chat/completions` (and `/v1/messages`, the same in Anthropic's format) and
//! `GET /v1/models`: authenticate, decide where the request may go, try the candidates in
//! order, stream or return the answer.

use super::credentials;
use super::glue::Head;
use super::health;
use super::ledger::{self, Bill, Ending};
use super::respond;
use super::spend;
use super::state::now_ms;
use super::state::State;
use super::streaming::{self, Committed, Outlet};
use super::upstream::{self, Deadline};
use crate::config::budget::Budget;
use crate::config::price::format_usd;
use crate::config::{Alias, Deployment, KeyConfig};
use crate::ingress::Ingress;
use crate::ledger::Outcome;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::geo::{Caller, CfFields};
use crate::model::usage::Usage;
use crate::policy::attempts::{self, AttemptLog};
use crate::policy::budget;
use crate::policy::health::Admission;
use crate::policy::keys;
use crate::policy::residency::{self, Candidates, Decision, Subject};
use crate::policy::routing;
use crate::policy::tags;
use crate::providers::{self, Auth};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;
use worker::web_sys::{self, Response};
use worker::{Context, Delay, Env, Headers};

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
                "capabilities": routing::alias_capabilities(&state.gateway, a),
            })
        })
        .collect();
    respond::json(200, &serde_json::json!({"object": "list", "data": data}))
}

fn header(headers: &Headers, name: &str) -> Option<String> {
    headers.get(name).ok().flatten().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The caller's location: `request.cf`, or the `x-gateway-geo-*` headers where the
/// deployment trusts them (local dev and tests, whose `request.cf` is a placeholder).
fn caller(req: &web_sys::Request, headers: &Headers, state: &State) -> Caller {
    if state.trust_geo_headers {
        if let Some(country) = header(headers, "x-gateway-geo-country") {
            return Caller::new(Some(&country), header(headers, "x-gateway-geo-continent").as_deref(), None);
        }
    }
    super::glue::cf_lines(req).and_then(|lines| CfFields::from_lines(&lines)).map(Caller::from).unwrap_or_default()
}

/// Where a request is going and what has been decided about it, for the response headers.
struct Receipt {
    rule: String,
    log: AttemptLog,
    /// Soft budgets reached.
    warnings: Vec<String>,
    /// Deployments left out because their circuit is open.
    skipped: Vec<String>,
}

impl Receipt {
    fn headers(&self, served_by: Option<&Deployment>) -> Head {
        self.headers_with(&self.log, served_by)
    }

    /// The headers of an answer from `d` that has not come yet (a stream's first content).
    fn headers_if_served(&self, d: &Deployment, status: u16) -> Head {
        let mut log = self.log.clone();
        log.succeeded(&d.id, status);
        self.headers_with(&log, Some(d))
    }

    fn headers_with(&self, log: &AttemptLog, served_by: Option<&Deployment>) -> Head {
        let mut h = Head::new();
        let _ = h.set("x-gateway-rule", &self.rule);
        let _ = h.set("x-gateway-attempts", &log.count().to_string());
        if !self.skipped.is_empty() {
            let _ = h.set("x-gateway-skipped", &format!("{} (failing, cooling down)", self.skipped.join(", ")));
        }
        if !self.warnings.is_empty() {
            let _ = h.set("x-gateway-budget-warning", &self.warnings.join("; "));
        }
        if log.count() > 0 {
            let _ = h.set("x-gateway-tried", &log.summary());
        }
        if let Some(d) = served_by {
            let _ = h.set("x-gateway-provider", d.provider.name());
            let _ = h.set("x-gateway-deployment", &d.id);
            let _ = h.set("x-gateway-region", &d.region);
            let _ = h.set("x-gateway-jurisdiction", &d.jurisdiction);
        }
        h
    }

    fn error(&self, ingress: Ingress, e: &GatewayError) -> Response {
        respond::error_with(ingress, e, self.headers(None))
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
    let team = key.team.as_deref().map(str::to_ascii_lowercase);
    let spend = spend::current(env, &key.id, team.as_deref().unwrap_or_default()).await;
    let budget_json = |b: Option<&Budget>| {
        b.map(|b| serde_json::json!({"monthly_usd": format_usd(b.monthly_usd.0), "mode": format!("{:?}", b.mode).to_ascii_lowercase()}))
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

/// The alias a request names, if the key may use it.
fn alias_for<'g>(state: &'g State, key: &KeyConfig, model: &str) -> Result<&'g Alias, GatewayError> {
    state.gateway.alias(model).filter(|_| keys::may_use(key, model)).ok_or_else(|| GatewayError::model_not_found(model))
}

/// Where the caller is, the residency rule that applies, and the alias's deployments it
/// allows, nearest first.
fn allowed<'g>(
    req: &web_sys::Request,
    headers: &Headers,
    state: &'g State,
    key: &KeyConfig,
    team: &str,
    alias: &Alias,
) -> Result<(Caller, Decision, Candidates<'g>), GatewayError> {
    let caller = caller(req, headers, state);
    let compliance = header(headers, "x-gateway-compliance").map(|t| t.to_ascii_lowercase());
    let subject = Subject {
        caller: &caller,
        compliance: compliance.as_deref(),
        team: Some(team),
        key_id: Some(&key.id),
        key_policy: key.residency.as_deref(),
    };
    let decision = residency::decide(&state.gateway.config.residency, &subject)?;
    let candidates = residency::candidates(&state.gateway, alias, &decision, &caller);
    Ok((caller, decision, candidates))
}

/// The deployment's credentials made ready to send (a Google access token fetched or
/// reused); a failure is logged as the deployment's attempt.
async fn authorized(env: &Env, d: &Deployment, auth: Auth, log: &mut AttemptLog) -> Option<Auth> {
    credentials::authorize(env, d, auth).await.map_err(|class| log.failed(&d.id, None, class)).ok()
}

/// `POST /v1/messages/count_tokens`: the prompt's size as the first allowed deployment
/// that can count it says (Anthropic's endpoint, Vertex AI's or Bedrock's for Claude),
/// falling back like a request. Free
/// at the provider, so neither billed nor held to budgets or rate limits; but the prompt
/// travels, so residency applies.
pub async fn count_tokens(
    req: &web_sys::Request,
    headers: &Headers,
    env: &Env,
    state: &State,
    key: &KeyConfig,
) -> Result<Response, GatewayError> {
    let g = &state.gateway;
    let body = upstream::read_client_body(req, headers, g.config.limits.max_body_bytes).await?;
    let count = crate::ingress::anthropic::parse_count_tokens(&body)?;
    let alias = alias_for(state, key, &count.model)?;
    let tags = tags::resolve(key, header(headers, "x-gateway-team").as_deref(), None, None)?;
    let (_, decision, candidates) = allowed(req, headers, state, key, &tags.team, alias)?;
    let beta = header(headers, "anthropic-beta");
    let mut receipt =
        Receipt { rule: decision.rule.clone(), log: AttemptLog::default(), warnings: Vec::new(), skipped: Vec::new() };
    let mut counting = candidates.kept.iter().filter_map(|d| Some((*d, providers::counts_tokens(d)?))).peekable();
    if counting.peek().is_none() {
        let message = format!(
            "No deployment of alias `{}` that residency rule `{}` allows can count tokens: only Claude's can (`anthropic`, and Claude on Vertex AI or Bedrock).",
            alias.name, decision.rule
        );
        return Err(GatewayError::bad_request("tokens_not_countable", message));
    }
    let now_unix = now_ms() / 1000;
    for (d, counter) in counting.take(g.config.limits.max_attempts) {
        let Some(auth) = credentials::resolve(env, d, now_unix) else { continue };
        let Some(auth) = authorized(env, d, auth, &mut receipt.log).await else { continue };
        let up = counter.count_request(d, &count.body, beta.as_deref(), &auth)?;
        let mut deadline = Deadline::for_answer(u64::from(d.first_byte_timeout_ms));
        let answer = match upstream::send(&up, &mut deadline).await {
            Ok(answer) => answer,
            Err(class) => {
                receipt.log.failed(&d.id, None, class);
                continue;
            }
        };
        let status = answer.status();
        let body = upstream::read_all(&answer, &mut deadline).await.unwrap_or_default();
        if (200..300).contains(&status) {
            let Ok(counted) = counter.count_answer(body) else {
                receipt.log.failed(&d.id, Some(status), ErrorClass::Server);
                continue;
            };
            receipt.log.succeeded(&d.id, status);
            let mut headers = receipt.headers(Some(d));
            let _ = headers.set("content-type", "application/json");
            return respond::with_bytes(200, &headers, counted);
        }
        let class = providers::for_deployment(d).classify(status, &body);
        receipt.log.failed(&d.id, Some(status), class);
        if !class.falls_back() {
            return Ok(receipt.error(Ingress::Anthropic, &attempts::terminal(&d.id, status, class, &body, &auth)));
        }
    }
    let e = if receipt.log.count() == 0 {
        let detail = format!("no deployment of alias `{}` that can count tokens has its provider key set", alias.name);
        GatewayError::residency_unsatisfiable(&decision.rule, detail)
    } else {
        receipt.log.exhausted(None, None)
    };
    Ok(receipt.error(Ingress::Anthropic, &e))
}

#[allow(clippy::too_many_arguments)]
pub async fn handle(
    req: &web_sys::Request,
    headers: &Headers,
    env: &Env,
    ctx: Rc<Context>,
    state: &State,
    key: &KeyConfig,
    ingress: Ingress,
    request_id: &str,
) -> Result<Response, GatewayError> {
    let started_ms = now_ms();
    let g = &state.gateway;
    let body = upstream::read_client_body(req, headers, g.config.limits.max_body_bytes).await?;
    let mut chat = ingress.parse(body)?;
    chat.received_at = started_ms / 1000;
    if let Some(native) = &mut chat.native {
        native.beta = header(headers, "anthropic-beta");
    }
    let alias = alias_for(state, key, &chat.model)?;
    if let Some(e) = chat.native.as_ref().and_then(|n| n.untranslatable.as_ref()) {
        let mut deployments = alias.deployments.iter().filter_map(|id| g.deployment(id));
        if !deployments.any(|d| providers::speaks_messages(d).is_some()) {
            let message = format!(
                "{}: only a deployment in Anthropic's format can take it, and alias `{}` has none. Remove it, or use an alias with an Anthropic deployment.",
                e.message, alias.name
            );
            return Err(GatewayError::bad_request(e.code, message));
        }
    }
    let tags = tags::resolve(
        key,
        header(headers, "x-gateway-team").as_deref(),
        header(headers, "x-gateway-feature").as_deref(),
        header(headers, "x-gateway-env").as_deref(),
    )?;

    let warnings = budget::check(
        &spend::for_request(env, &key.id, &tags.team).await,
        &key.id,
        key.budget.as_ref(),
        &tags.team,
        g.config.budgets.teams.get(&tags.team),
    )?;
    rate_limit(env, key).await?;

    let (caller, decision, mut candidates) = allowed(req, headers, state, key, &tags.team, alias)?;
    // The error names the rule only when the rule is what stood between the request and a
    // deployment that might have served it.
    let residency_bound = (!candidates.dropped.is_empty()).then(|| decision.rule.clone());
    routing::fit(&mut candidates, &routing::needs(&chat));
    let limits = &g.config.limits;
    let health = health::read_all(candidates.kept.iter().map(|d| d.id.as_str())).await;
    let ttfb: HashMap<String, u64> = health.iter().filter_map(|(id, h)| Some((id.clone(), h.ttfb_ms?))).collect();
    let random = u64::from_str_radix(request_id.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    let draw = routing::draw(alias, &key.id, caller.country.as_deref(), chat.facts.user.as_deref(), random);
    routing::order(alias, &mut candidates, &routing::Signals { ttfb_ms: &ttfb, draw });

    let mut receipt =
        Receipt { rule: decision.rule.clone(), log: AttemptLog::default(), warnings, skipped: Vec::new() };
    let bill = Bill {
        ctx: ctx.clone(),
        env: env.clone(),
        request_id: request_id.to_string(),
        started_ms,
        key_id: key.id.clone(),
        tags,
        caller: caller.clone(),
        rule: decision.rule.clone(),
        alias: alias.name.clone(),
        fail_queue: ledger::queue_fault(state.allow_test_faults, headers),
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
        Ok(receipt.error(ingress, &e))
    };

    let now_unix = started_ms / 1000;
    let mut queue: VecDeque<(&Deployment, Auth)> = VecDeque::new();
    for d in candidates.kept {
        let Some(auth) = credentials::resolve(env, d, now_unix) else { continue };
        let mut h = health.get(&d.id).cloned().unwrap_or_default();
        match h.admit(now_ms(), u64::from(d.first_byte_timeout_ms)) {
            Admission::Skip => receipt.skipped.push(d.id.clone()),
            Admission::Probe => {
                health::update(&ctx, &d.id, d.health_limits(&limits.health), |stored| *stored = h);
                queue.push_back((d, auth));
            }
            Admission::Try => queue.push_back((d, auth)),
        }
    }
    if queue.is_empty() {
        let detail = if !receipt.skipped.is_empty() {
            format!("every allowed deployment of alias `{}` is failing and cooling down", alias.name)
        } else if candidates.dropped.is_empty() {
            format!("no deployment of alias `{}` has its provider key set", alias.name)
        } else {
            format!("none of alias `{}`'s deployments can serve it here ({})", alias.name, decision.allowed.label())
        };
        return failed(&receipt, GatewayError::residency_unsatisfiable(&decision.rule, detail), None);
    }

    let total_deadline = started_ms + limits.total_deadline_ms;
    let mut retry_after = None;
    let mut retried_same = false;
    while let Some((d, auth)) = queue.pop_front() {
        let now = now_ms();
        let Some(timeout) = routing::attempt_timeout(u64::from(d.first_byte_timeout_ms), now, total_deadline) else {
            break;
        };
        if receipt.log.count() >= limits.max_attempts {
            break;
        }
        let provider = providers::for_deployment(d);
        let Some(auth) = authorized(env, d, auth, &mut receipt.log).await else { continue };
        // A Messages request goes to a deployment in the same format as the client sent it.
        let native = chat.native.as_ref().zip(providers::speaks_messages(d));
        let up = match native {
            Some((messages, speaks)) => speaks.build_native(d, &chat, messages, &auth)?,
            None => provider.build(d, &chat, &auth)?,
        };
        let deadline = if chat.stream { Deadline::for_stream(timeout) } else { Ok(Deadline::for_answer(timeout)) };
        let Ok(mut deadline) = deadline else {
            receipt.log.failed(&d.id, None, ErrorClass::Unreachable);
            continue;
        };
        let fell_back = |receipt: &mut Receipt, status: Option<u16>, class: ErrorClass, consumed: Option<Usage>| {
            receipt.log.failed_after(&d.id, status, class, consumed);
            let breaker = d.health_limits(&limits.health);
            health::update(&ctx, &d.id, breaker, |h| h.failed(now_ms(), breaker));
        };
        let response = match upstream::send(&up, &mut deadline).await {
            Ok(r) => r,
            Err(class) => {
                fell_back(&mut receipt, None, class, None);
                continue;
            }
        };
        let status = response.status();
        if !(200..300).contains(&status) {
            let body = upstream::read_all(&response, &mut deadline).await.unwrap_or_default();
            let class = provider.classify(status, &body);
            if class.falls_back() {
                fell_back(&mut receipt, Some(status), class, None);
                retry_after = response.header("retry-after").and_then(|v| v.parse::<u32>().ok());
                // Nothing else to try: wait out a short Retry-After and try this one again.
                if let (true, false, Some(wait)) = (queue.is_empty(), retried_same, retry_after) {
                    let wait_ms = u64::from(wait) * 1000;
                    if wait_ms <= limits.max_retry_after_ms && now_ms() + wait_ms < total_deadline {
                        Delay::from(Duration::from_millis(wait_ms)).await;
                        retried_same = true;
                        queue.push_back((d, auth));
                    }
                }
                continue;
            }
            receipt.log.failed(&d.id, Some(status), class);
            if class == ErrorClass::ContextLength {
                // Only a larger context window can succeed where this one refused.
                let window = d.capabilities.context_window.unwrap_or(0);
                queue.retain(|(other, _)| other.capabilities.context_window.is_some_and(|w| w > window));
                if !queue.is_empty() {
                    continue;
                }
            }
            return failed(&receipt, attempts::terminal(&d.id, status, class, &body, &auth), Some(d));
        }
        if chat.stream {
            let outlet = Outlet::new(receipt.headers_if_served(d, status))?;
            let translator = match native {
                Some((_, speaks)) => speaks.native_stream(),
                None => provider.stream(&chat),
            };
            match streaming::open(&response, translator, &mut deadline).await {
                Ok(opened) => {
                    receipt.log.succeeded(&d.id, status);
                    let ttfb_ms = now_ms() - started_ms;
                    health::update(&ctx, &d.id, d.health_limits(&limits.health), |h| {
                        h.succeeded(now_ms(), now_ms() - now)
                    });
                    let encoder = if native.is_some() { None } else { ingress.stream(&chat) };
                    let committed =
                        Committed { opened, bill, deployment: d.clone(), attempts: receipt.log, ttfb_ms, encoder };
                    return Ok(streaming::respond(committed, outlet));
                }
                Err((class, consumed)) => fell_back(&mut receipt, Some(status), class, consumed),
            }
        } else {
            let ttfb_ms = now_ms() - started_ms;
            let upstream_ttfb = now_ms() - now;
            let answer = upstream::read_all(&response, &mut deadline).await.and_then(|b| match native {
                Some(_) => providers::anthropic::native_response(b),
                None => provider.response(&chat, b).and_then(|(b, usage)| Ok((ingress.response(&chat, b)?, usage))),
            });
            match answer {
                Ok((body, usage)) => {
                    receipt.log.succeeded(&d.id, status);
                    health::update(&ctx, &d.id, d.health_limits(&limits.health), |h| {
                        h.succeeded(now_ms(), upstream_ttfb)
                    });
                    let cost = bill.close(Ending {
                        served_by: Some(d),
                        usage,
                        status,
                        outcome: Outcome::Ok,
                        ttfb_ms: Some(ttfb_ms),
                        attempts: &receipt.log,
                    });
                    let mut headers = receipt.headers(Some(d));
                    let _ = headers.set("content-type", "application/json");
                    if let Some(micros) = cost {
                        let _ = headers.set("x-gateway-cost-usd", &format_usd(micros));
                    }
                    return respond::with_bytes(status, &headers, body);
                }
                Err(class) => fell_back(&mut receipt, Some(status), class, None),
            }
        }
    }
    let e = receipt.log.exhausted(residency_bound.as_deref(), retry_after);
    failed(&receipt, e, None)
}

//! `POST /v1/chat/completions` and `/v1/messages`: decide where the request may go, then
//! drive the attempt policy (`policy::attempts`) over the candidates: send, wait, report
//! what happened, and stream or return the first answer.

use super::call::{Allowed, Call, Receipt};
use super::credentials;
use super::glue::Head;
use super::health;
use super::ledger::{Bill, Ending};
use super::respond;
use super::state::now_ms;
use super::streaming::{self, Committed, Opened, Outlet};
use super::upstream::{self, Deadline};
use crate::config::price::format_usd;
use crate::config::provider::anthropic::inference_geo;
use crate::config::{Alias, Deployment};
use crate::ledger::Outcome;
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::{Consumed, Usage};
use crate::policy::attempts::{self, AttemptLog, Attempts, Failure, Next};
use crate::policy::health::Health;
use crate::policy::residency;
use crate::policy::routing;
use crate::providers::{self, SpeaksMessages, UpstreamRequest};
use std::collections::HashMap;
use std::time::Duration;
use worker::web_sys::Response;
use worker::Delay;

pub async fn handle(call: &Call<'_>) -> Result<Response, GatewayError> {
    let g = &call.state.gateway;
    let mut chat = call.ingress.parse(call.body().await?)?;
    chat.received_at = call.started_ms / 1000;
    if let Some(native) = &mut chat.native {
        native.beta = call.header("anthropic-beta");
    }
    let alias = call.alias(&chat.model)?;
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
    let tags = call.tags()?;
    let warnings = call.budget(&tags).await?;
    call.rate_limit().await?;

    let mut allowed = call.allowed(alias)?;
    if let Some(native) = &chat.native {
        residency::check_server_tools(&allowed.decision, &native.server_tools())?;
    }
    // The error names the rule only when the rule is what stood between the request and a
    // deployment that might have served it.
    let residency_bound = (!allowed.candidates.dropped.is_empty()).then(|| allowed.decision.rule.clone());
    let health = order(call, &chat, alias, &mut allowed).await;

    let limits = &g.config.limits;
    let now_unix = call.started_ms / 1000;
    let plan = attempts::plan(
        &allowed.candidates.kept,
        |d| credentials::resolve(call.state, call.env, d, now_unix),
        |d| health::admit(&call.ctx, &health, d, &limits.health),
    );
    let receipt = Receipt { rule: allowed.decision.rule.clone(), warnings, skipped: plan.skipped() };
    let bill = call.bill(tags, &allowed, alias);
    if plan.queue.is_empty() {
        let now = now_ms();
        let reopens = |id: &&str| health.get(*id)?.open_until.map(|until| until.saturating_sub(now).div_ceil(1000));
        let cooling_s =
            plan.cooling_down.iter().filter_map(reopens).min().map(|s| u32::try_from(s).unwrap_or(u32::MAX));
        let e = attempts::unservable(&alias.name, &allowed.decision, &allowed.candidates, &plan, cooling_s);
        return Ok(fail(call, &bill, &receipt, &AttemptLog::default(), e, None));
    }

    let mut attempts = Attempts::new(plan.queue, limits, call.started_ms, residency_bound);
    while let Some((d, auth, timeout)) = attempts.next(now_ms()) {
        let auth = match credentials::authorize(call.state, call.env, d, auth).await {
            Ok(auth) => auth,
            Err(class) => {
                attempts.unauthorized(d, class);
                continue;
            }
        };
        // A Messages request goes to a deployment in the same format as the client sent it.
        let native = chat.native.as_ref().zip(providers::speaks_messages(d));
        let up = match native {
            Some((messages, speaks)) => speaks.build_native(d, &chat, messages, &auth),
            None => providers::for_deployment(d).build(d, &chat, &auth),
        };
        let up = match up {
            Ok(up) => up,
            Err(e) => {
                attempts.unsupported(d, e);
                continue;
            }
        };
        let target = Target { d, native: native.map(|(_, speaks)| speaks), up, timeout };
        let tried_at = now_ms();
        let head = |status| receipt.headers_if_served(&attempts.log, d, status);
        let failure = match try_once(call, &chat, &target, head).await {
            Ok(Answer::Whole { status, body, consumed, upstream_ttfb }) => {
                attempts.answered(d, status);
                health::update(&call.ctx, &d.id, d.health_limits(&limits.health), |h| {
                    h.succeeded(now_ms(), upstream_ttfb)
                });
                let cost = bill.close(Ending {
                    served_by: Some(d),
                    answer: Some(consumed),
                    status,
                    outcome: Outcome::Ok,
                    ttfb_ms: Some(tried_at + upstream_ttfb - call.started_ms),
                    attempts: &attempts.log,
                });
                let mut headers = receipt.headers(&attempts.log, Some(d));
                let _ = headers.set("content-type", "application/json");
                let _ = headers.set("x-gateway-cost-usd", &format_usd(cost));
                return respond::with_bytes(status, &headers, body);
            }
            Ok(Answer::Stream { status, opened, outlet }) => {
                attempts.answered(d, status);
                let ttfb_ms = now_ms() - call.started_ms;
                health::update(&call.ctx, &d.id, d.health_limits(&limits.health), |h| {
                    h.succeeded(now_ms(), now_ms() - tried_at)
                });
                let encoder = if native.is_some() { None } else { call.ingress.stream(&chat) };
                let committed =
                    Committed { opened, bill, deployment: d.clone(), attempts: attempts.log, ttfb_ms, encoder };
                return Ok(streaming::respond(committed, outlet));
            }
            Err(failure) => failure,
        };
        if failure.blames_deployment(attempts::long_answer(chat.stream, chat.facts.answer_tokens)) {
            let breaker = d.health_limits(&limits.health);
            health::update(&call.ctx, &d.id, breaker, |h| h.failed(now_ms(), breaker));
        }
        match attempts.failed(d, auth, &failure, now_ms()) {
            Next::FallBack | Next::OnlyLargerContext => {}
            Next::RetrySame(wait_ms) => Delay::from(Duration::from_millis(wait_ms)).await,
            Next::Fail(e) => return Ok(fail(call, &bill, &receipt, &attempts.log, e, Some(d))),
        }
    }
    let e = attempts.exhausted();
    Ok(fail(call, &bill, &receipt, &attempts.log, e, None))
}

/// Drops the candidates that cannot serve the request and orders the rest by the alias's
/// strategy, with this colo's recent health (returned, for the circuit breakers).
async fn order(
    call: &Call<'_>,
    chat: &ChatRequest,
    alias: &Alias,
    allowed: &mut Allowed<'_>,
) -> HashMap<String, Health> {
    let candidates = &mut allowed.candidates;
    routing::fit(candidates, &routing::needs(chat));
    let health = health::read_all(candidates.kept.iter().map(|d| d.id.as_str())).await;
    let ttfb: HashMap<String, u64> = health.iter().filter_map(|(id, h)| Some((id.clone(), h.ttfb_ms?))).collect();
    let random = u64::from_str_radix(call.request_id.get(..16).unwrap_or("0"), 16).unwrap_or(0);
    let country = allowed.caller.country.as_deref();
    let draw = routing::draw(alias, &call.key.id, country, chat.facts.user.as_deref(), random);
    routing::order(alias, candidates, &routing::Signals { ttfb_ms: &ttfb, draw });
    health
}

/// The client's error, with the request's cost event.
fn fail(
    call: &Call<'_>,
    bill: &Bill,
    receipt: &Receipt,
    log: &AttemptLog,
    e: GatewayError,
    last: Option<&Deployment>,
) -> Response {
    bill.close(Ending {
        served_by: last,
        answer: None,
        status: e.status,
        outcome: Outcome::Error,
        ttfb_ms: None,
        attempts: log,
    });
    receipt.error(call.ingress, log, &e)
}

/// One attempt: where it goes, in which format, and how long its answer may take to start.
struct Target<'d> {
    d: &'d Deployment,
    /// The deployment takes the client's Messages request as it is.
    native: Option<&'static dyn SpeaksMessages>,
    up: UpstreamRequest,
    timeout: u64,
}

/// An attempt that answered.
enum Answer {
    Whole { status: u16, body: Vec<u8>, consumed: Consumed, upstream_ttfb: u64 },
    Stream { status: u16, opened: Opened, outlet: Outlet },
}

/// Whether the provider's own report of where it processed the request matches the
/// deployment's jurisdiction, for deployments whose provider is held to one
/// (Anthropic's `inference_geo`). A report that differs, or none, is a residency breach:
/// logged with the deployment, and the attempt fails.
fn geo_checked(request_id: &str, d: &Deployment, reported: Option<&str>) -> Result<(), ErrorClass> {
    let Some(expected) = inference_geo(d) else { return Ok(()) };
    if reported == Some(expected) {
        return Ok(());
    }
    worker::console_error!(
        "residency breach: request {request_id}: deployment `{}` ({expected}) reported processing in {}",
        d.id,
        reported.unwrap_or("an unreported place")
    );
    Err(ErrorClass::ResidencyBreach)
}

/// Sends one attempt and waits for its answer: the whole body, or a stream's first
/// content. `head` makes the headers of a stream that the attempt starts.
async fn try_once(
    call: &Call<'_>,
    chat: &ChatRequest,
    t: &Target<'_>,
    head: impl FnOnce(u16) -> Head,
) -> Result<Answer, Failure> {
    let provider = providers::for_deployment(t.d);
    let deadline = if chat.stream { Deadline::for_stream(t.timeout) } else { Ok(Deadline::for_answer(t.timeout)) };
    let mut deadline = deadline.map_err(Failure::not_sent)?;
    let sent_at = now_ms();
    let prompt = chat.facts.input_tokens;
    let response = upstream::send(&t.up, &mut deadline).await.map_err(|class| Failure::no_answer(class, prompt))?;
    let status = response.status();
    if !(200..300).contains(&status) {
        let body = upstream::read_all(&response, &mut deadline).await.unwrap_or_default();
        let class = provider.classify(status, &body);
        let retry_after = response.header("retry-after").and_then(|v| v.parse::<u32>().ok());
        return Err(Failure::refused(status, class, retry_after, body));
    }
    // From here the provider has taken the request: a failure is billed at least for the
    // prompt, and for what the provider reported or sent.
    let taken = |output_chars| Consumed::at_least(None, Usage::estimate(prompt, output_chars));
    if chat.stream {
        let outlet = Outlet::new(head(status)).map_err(|_| Failure::unusable(status, ErrorClass::Server, taken(0)))?;
        let translator = match t.native {
            Some(speaks) => speaks.native_stream(chat),
            None => provider.stream(chat),
        };
        return match streaming::open(&response, translator, &mut deadline).await {
            Ok(opened) => match geo_checked(call.request_id, t.d, opened.reported_geo()) {
                Ok(()) => Ok(Answer::Stream { status, opened, outlet }),
                Err(class) => Err(Failure::unusable(status, class, opened.abandon())),
            },
            Err((class, consumed)) => Err(Failure::unusable(status, class, consumed)),
        };
    }
    let upstream_ttfb = now_ms() - sent_at;
    let body =
        upstream::read_all(&response, &mut deadline).await.map_err(|c| Failure::unusable(status, c, taken(0)))?;
    // A body that cannot be read as an answer is billed for its bytes as output: it holds
    // whatever the provider generated.
    let received = body.len();
    let geo = inference_geo(t.d).map(|_| geo_checked(call.request_id, t.d, provider.reported_geo(&body)));
    let answer = match t.native {
        Some(_) => providers::anthropic::native_response(body),
        None => provider.response(chat, body).and_then(|(b, usage)| Ok((call.ingress.response(chat, b)?, usage))),
    };
    match answer {
        Ok((body, usage)) => {
            // Without usage, estimated from the answer: never unpriced.
            let consumed = usage.map_or_else(|| taken(body.len()), Consumed::reported);
            if let Some(Err(class)) = geo {
                return Err(Failure::unusable(status, class, consumed));
            }
            Ok(Answer::Whole { status, body, consumed, upstream_ttfb })
        }
        Err(class) => Err(Failure::unusable(status, class, taken(received))),
    }
}

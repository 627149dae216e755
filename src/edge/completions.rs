//! `POST /v1/chat/completions` and `GET /v1/models`: authenticate, decide where the
//! request may go, try the candidates in order, stream or return the answer.

use super::credentials;
use super::respond;
use super::state::State;
use super::upstream::{self, now_ms};
use crate::attempts::{self, AttemptLog};
use crate::chat;
use crate::config::{Deployment, KeyConfig};
use crate::error::GatewayError;
use crate::geo::{Caller, CfFields};
use crate::keys;
use crate::providers::{self, openai, Auth, ErrorClass, StreamEnd, StreamTranslator};
use crate::residency::{self, Subject};
use futures_util::stream;
use worker::{ByteStream, Env, Headers, Request, Response};

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
}

impl Receipt {
    fn headers(&self, served_by: Option<&Deployment>) -> Headers {
        let h = Headers::new();
        let _ = h.set("x-gateway-rule", &self.rule);
        let _ = h.set("x-gateway-attempts", &self.log.count().to_string());
        if self.log.count() > 0 {
            let _ = h.set("x-gateway-tried", &self.log.summary());
        }
        if let Some(d) = served_by {
            let _ = h.set("x-gateway-provider", provider_name(d));
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

fn provider_name(d: &Deployment) -> &'static str {
    match d.provider {
        crate::config::ProviderKind::Openai => "openai",
        crate::config::ProviderKind::Anthropic => "anthropic",
    }
}

pub async fn handle(
    mut req: Request,
    env: &Env,
    state: &State,
    key: &KeyConfig,
    _request_id: &str,
) -> Result<Response, GatewayError> {
    let g = &state.gateway;
    let body = upstream::read_client_body(&mut req, g.config.limits.max_body_bytes).await?;
    let mut chat = chat::parse(&body)?;
    chat.received_at = now_ms() / 1000;
    drop(body);
    let alias = g
        .alias(&chat.model)
        .filter(|_| keys::may_use(key, &chat.model))
        .ok_or_else(|| GatewayError::model_not_found(&chat.model))?;

    let caller = caller(&req, state);
    let compliance = header(&req, "x-gateway-compliance").map(|t| t.to_ascii_lowercase());
    let team = header(&req, "x-gateway-team").or_else(|| key.team.clone());
    let subject = Subject {
        caller: &caller,
        compliance: compliance.as_deref(),
        team: team.as_deref(),
        key_id: Some(&key.id),
        key_policy: key.residency.as_deref(),
    };
    let decision = residency::decide(&g.config.residency, &subject)?;
    let candidates = residency::candidates(g, alias, &decision, &caller);
    let mut receipt = Receipt { rule: decision.rule.clone(), log: AttemptLog::default() };
    // The error names the rule only when the rule is what stood between the request and a
    // deployment that might have served it.
    let residency_bound = (!candidates.dropped.is_empty()).then_some(decision.rule.as_str());

    let now_unix = now_ms() / 1000;
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
        return Ok(receipt.error(&GatewayError::residency_unsatisfiable(&decision.rule, detail)));
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
            let e = attempts::terminal(&d.id, status, class, &body, &auth);
            return Ok(receipt.error(&e));
        }
        if chat.stream {
            match open_stream(&mut response, provider.stream(&chat), deadline).await {
                Ok(opened) => {
                    receipt.log.succeeded(&d.id, status);
                    return stream_response(opened, &receipt, d);
                }
                Err(class) => receipt.log.failed(&d.id, Some(status), class),
            }
        } else {
            match upstream::read_all(&mut response, deadline).await.and_then(|b| provider.response(&chat, b)) {
                Ok((body, _usage)) => {
                    receipt.log.succeeded(&d.id, status);
                    let headers = receipt.headers(Some(d));
                    let _ = headers.set("content-type", "application/json");
                    return Ok(Response::from_bytes(body)
                        .map_err(respond::internal)?
                        .with_status(status)
                        .with_headers(headers));
                }
                Err(class) => receipt.log.failed(&d.id, Some(status), class),
            }
        }
    }
    Ok(receipt.error(&receipt.log.exhausted(residency_bound, retry_after)))
}

/// An upstream stream that has shown its first content: from here on the client is
/// committed to this deployment.
struct Opened {
    body: ByteStream,
    translator: Box<dyn StreamTranslator>,
    first: Vec<u8>,
}

/// Reads the upstream stream until its first content event, so that a deployment that
/// answers 200 and then fails before saying anything can still be fallen back from.
async fn open_stream(
    response: &mut Response,
    mut translator: Box<dyn StreamTranslator>,
    deadline: u64,
) -> Result<Opened, ErrorClass> {
    let mut body = response.stream().map_err(|_| ErrorClass::Unreachable)?;
    let mut first = Vec::new();
    while !translator.started() {
        let left = deadline.saturating_sub(now_ms()).max(1);
        match upstream::next_chunk(&mut body, left).await? {
            Some(chunk) => translator.push(&chunk, &mut first),
            None => return Err(ErrorClass::Server),
        }
    }
    Ok(Opened { body, translator, first })
}

fn stream_response(opened: Opened, receipt: &Receipt, d: &Deployment) -> Result<Response, GatewayError> {
    let deployment = d.id.clone();
    let state = (Some(opened), deployment, false);
    let body = stream::unfold(state, |(opened, deployment, ended)| async move {
        let mut opened = opened?;
        if ended {
            return None;
        }
        if !opened.first.is_empty() {
            let first = std::mem::take(&mut opened.first);
            return Some((Ok::<Vec<u8>, worker::Error>(first), (Some(opened), deployment, false)));
        }
        loop {
            let mut out = Vec::new();
            let next = futures_util::StreamExt::next(&mut opened.body).await;
            match next {
                Some(Ok(chunk)) => {
                    opened.translator.push(&chunk, &mut out);
                    if !out.is_empty() {
                        return Some((Ok(out), (Some(opened), deployment, false)));
                    }
                }
                Some(Err(_)) | None => {
                    if opened.translator.end() == StreamEnd::Cut {
                        let e = GatewayError::new(
                            502,
                            "upstream_error",
                            "stream_cut",
                            format!("The stream from deployment `{deployment}` ended before its final event; the answer is incomplete."),
                        );
                        out.extend_from_slice(&openai::stream_error_event(&e));
                    }
                    return if out.is_empty() { None } else { Some((Ok(out), (Some(opened), deployment, true))) };
                }
            }
        }
    });
    let headers = receipt.headers(Some(d));
    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    Ok(Response::from_stream(body).map_err(respond::internal)?.with_headers(headers))
}

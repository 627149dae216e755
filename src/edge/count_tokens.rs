//! `POST /v1/messages/count_tokens`: the prompt's size as the first allowed deployment
//! that can count it says (Anthropic's endpoint, Vertex AI's or Bedrock's for Claude),
//! tried by the same attempt policy as a request. Free at the provider, so neither billed
//! nor held to budgets; but rate limited like a request, and the prompt travels, so
//! residency applies.

use super::call::{Call, Receipt};
use super::credentials;
use super::respond;
use super::state::now_ms;
use super::upstream::{self, Deadline};
use crate::config::Deployment;
use crate::ingress::anthropic::parse_count_tokens;
use crate::ingress::Ingress;
use crate::model::error::GatewayError;
use crate::policy::attempts::{self, Attempts, Failure, Next};
use crate::policy::health::Admission;
use crate::providers::{self, CountsTokens};
use std::time::Duration;
use worker::web_sys::Response;
use worker::Delay;

pub async fn handle(call: &Call<'_>) -> Result<Response, GatewayError> {
    let g = &call.state.gateway;
    let count = parse_count_tokens(&call.body().await?)?;
    let alias = call.alias(&count.model)?;
    call.rate_limit().await?;
    let allowed = call.allowed(alias)?;
    let rule = &allowed.decision.rule;
    let counting: Vec<&Deployment> =
        allowed.candidates.kept.iter().copied().filter(|d| providers::counts_tokens(d).is_some()).collect();
    if counting.is_empty() {
        let message = format!(
            "No deployment of alias `{}` that residency rule `{rule}` allows can count tokens: only Claude's can (`anthropic`, and Claude on Vertex AI or Bedrock).",
            alias.name
        );
        return Err(GatewayError::bad_request("tokens_not_countable", message));
    }
    let now_unix = now_ms() / 1000;
    let plan =
        attempts::plan(&counting, |d| credentials::resolve(call.state, call.env, d, now_unix), |_| Admission::Try);
    let receipt = Receipt { rule: rule.clone(), warnings: Vec::new(), skipped: plan.skipped() };
    if plan.queue.is_empty() {
        let e = attempts::unservable(&alias.name, &allowed.decision, &allowed.candidates, &plan, None);
        return Ok(receipt.error(Ingress::Anthropic, &Default::default(), &e));
    }
    let beta = call.header("anthropic-beta");
    let mut attempts = Attempts::new(plan.queue, &g.config.limits, call.started_ms, None);
    while let Some((d, auth, timeout)) = attempts.next(now_ms()) {
        let counter = providers::counts_tokens(d).expect("only counting deployments are planned");
        let auth = match credentials::authorize(call.state, call.env, d, auth).await {
            Ok(auth) => auth,
            Err(class) => {
                attempts.unauthorized(d, class);
                continue;
            }
        };
        let up = match counter.count_request(d, &count.body, beta.as_deref(), &auth) {
            Ok(up) => up,
            Err(e) => {
                attempts.unsupported(d, e);
                continue;
            }
        };
        let failure = match count_once(d, counter, &up, timeout).await {
            Ok((status, counted)) => {
                attempts.answered(d, status);
                let mut headers = receipt.headers(&attempts.log, Some(d));
                let _ = headers.set("content-type", "application/json");
                return respond::with_bytes(200, &headers, counted);
            }
            Err(failure) => failure,
        };
        match attempts.failed(d, auth, &failure, now_ms()) {
            Next::FallBack | Next::OnlyLargerContext => {}
            Next::RetrySame(wait_ms) => Delay::from(Duration::from_millis(wait_ms)).await,
            Next::Fail(e) => return Ok(receipt.error(Ingress::Anthropic, &attempts.log, &e)),
        }
    }
    Ok(receipt.error(Ingress::Anthropic, &attempts.log, &attempts.exhausted()))
}

/// One count: the upstream's status and the count in Anthropic's shape.
async fn count_once(
    d: &Deployment,
    counter: &dyn CountsTokens,
    up: &providers::UpstreamRequest,
    timeout: u64,
) -> Result<(u16, Vec<u8>), Failure> {
    let mut deadline = Deadline::for_answer(timeout);
    // Counting is free at the provider: a failed count costs nothing.
    let answer = upstream::send(up, &mut deadline).await.map_err(|class| Failure::no_answer(class, 0).free())?;
    let status = answer.status();
    let body = upstream::read_all(&answer, &mut deadline).await.unwrap_or_default();
    if !(200..300).contains(&status) {
        let class = providers::for_deployment(d).classify(status, &body);
        let retry_after = answer.header("retry-after").and_then(|v| v.parse::<u32>().ok());
        return Err(Failure::refused(status, class, retry_after, body));
    }
    let unreadable = |class| Failure::unusable(status, class, Default::default()).free();
    let counted = counter.count_answer(body).map_err(unreadable)?;
    Ok((status, counted))
}

//! The attempts of one client request: which allowed deployment to try next, what each
//! outcome means (fall back, wait out a short `Retry-After` on the same deployment, keep
//! only larger context windows, or stop), the record of what was tried, and the error the
//! client gets. A pure state machine: the shell sends and waits, this decides.

use crate::config::price::Price;
use crate::config::{Deployment, Limits};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::{Consumed, Usage};
use crate::policy::health::Admission;
use crate::policy::residency::{Candidates, Decision, Dropped};
use crate::providers::{redact, Auth};
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub deployment: String,
    /// Upstream HTTP status, when one arrived.
    pub status: Option<u16>,
    /// `None` for the attempt that answered.
    pub failure: Option<ErrorClass>,
    /// What a failed call may have cost; `None` when it provably cost nothing (it was never
    /// sent, or the provider refused it with an error status). The answering call's is
    /// its answer's, which the ledger adds when the answer has ended.
    pub charge: Option<Charge>,
}

/// What one upstream call consumed, at its deployment's price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    pub consumed: Consumed,
    pub price: Price,
}

#[derive(Debug, Default, Clone)]
pub struct AttemptLog {
    pub attempts: Vec<Attempt>,
}

impl AttemptLog {
    pub fn failed(&mut self, deployment: &str, status: Option<u16>, class: ErrorClass) {
        self.failed_after(deployment, status, class, None);
    }

    pub fn failed_after(&mut self, deployment: &str, status: Option<u16>, class: ErrorClass, charge: Option<Charge>) {
        self.attempts.push(Attempt { deployment: deployment.to_string(), status, failure: Some(class), charge });
    }

    pub fn succeeded(&mut self, deployment: &str, status: u16) {
        self.attempts.push(Attempt {
            deployment: deployment.to_string(),
            status: Some(status),
            failure: None,
            charge: None,
        });
    }

    pub fn count(&self) -> usize {
        self.attempts.len()
    }

    /// `eu-1:529 overloaded, eu-2:200 ok`, for `x-gateway-tried` and the logs.
    pub fn summary(&self) -> String {
        self.attempts
            .iter()
            .map(|a| {
                let status = a.status.map_or_else(|| "-".to_string(), |s| s.to_string());
                let outcome = a.failure.map_or("ok", ErrorClass::as_str);
                format!("{}:{status} {outcome}", a.deployment)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What the client gets when every attempt failed with a class that falls back: the
    /// last failure's code, so that a busy allowed set reads "retry" and never "can never be
    /// served here". `residency_rule` is named when the rules kept some of the alias's
    /// deployments out.
    pub fn exhausted(&self, residency_rule: Option<&str>, retry_after: Option<u32>) -> GatewayError {
        let mut detail = format!("tried {}", self.summary());
        if let Some(rule) = residency_rule {
            detail.push_str(&format!("; residency rule `{rule}` allows no other deployment of the alias"));
        }
        let mut sent = self.attempts.iter().rev().filter_map(|a| a.failure);
        let last = sent.find(|c| *c != ErrorClass::Unsupported).unwrap_or(ErrorClass::Server);
        match last {
            ErrorClass::RateLimited => GatewayError::new(
                429,
                "rate_limit_error",
                "upstream_rate_limited",
                format!("Every deployment is rate limited ({detail})."),
            )
            .with_retry_after(retry_after.unwrap_or(1)),
            ErrorClass::Overloaded => GatewayError::new(
                503,
                "service_unavailable",
                "upstream_overloaded",
                format!("Every deployment is overloaded ({detail})."),
            )
            .with_retry_after(retry_after.unwrap_or(1)),
            ErrorClass::Timeout => GatewayError::new(
                502,
                "upstream_error",
                "upstream_timeout",
                format!("No deployment answered in time ({detail}).",),
            ),
            _ => GatewayError::new(
                502,
                "upstream_error",
                "upstream_failed",
                format!("No deployment could answer ({detail})."),
            ),
        }
    }
}

/// What went wrong with one attempt, as the shell saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The upstream's status, when a response head arrived.
    pub status: Option<u16>,
    pub class: ErrorClass,
    /// The provider's `Retry-After`, in seconds.
    pub retry_after: Option<u32>,
    /// What the call may have cost; `None` when it provably cost nothing.
    pub consumed: Option<Consumed>,
    /// The provider's error body, for the client's error if this failure is final.
    pub body: Vec<u8>,
}

impl Failure {
    /// The request never left the gateway: nothing to bill.
    pub fn not_sent(class: ErrorClass) -> Self {
        Failure { status: None, class, retry_after: None, consumed: None, body: Vec::new() }
    }

    /// No response head: none before the deadline, or the connection failed. The request
    /// may have reached the provider, which may bill its prompt (estimated at
    /// `prompt_tokens`): the runtime reports a refused connection and one lost after the
    /// request was sent alike, so neither is provably free.
    pub fn no_answer(class: ErrorClass, prompt_tokens: u64) -> Self {
        let consumed = Consumed::at_least(None, Usage::estimate(prompt_tokens, 0));
        Failure { status: None, class, retry_after: None, consumed: Some(consumed), body: Vec::new() }
    }

    /// A success head whose body or stream then failed (malformed, cut before content, or
    /// too slow): the provider took the request, and what it consumed is billed.
    pub fn unusable(status: u16, class: ErrorClass, consumed: Consumed) -> Self {
        Failure { status: Some(status), class, retry_after: None, consumed: Some(consumed), body: Vec::new() }
    }

    /// The same failure of a call the provider does not bill (a token count).
    pub fn free(self) -> Self {
        Failure { consumed: None, ..self }
    }

    /// An error status, classified from the provider's body. Providers do not bill those.
    pub fn refused(status: u16, class: ErrorClass, retry_after: Option<u32>, body: Vec<u8>) -> Self {
        Failure { status: Some(status), class, retry_after, consumed: None, body }
    }

    /// Whether another deployment may succeed: anything but an error status the provider
    /// would give anywhere (a bad request, credentials, a content filter, a context window).
    fn falls_back(&self) -> bool {
        self.status.is_none_or(|s| (200..300).contains(&s)) || self.class.falls_back()
    }

    /// Whether it counts against the deployment's health (its circuit breaker). A timeout
    /// while waiting for a `long_answer` the client asked for measures the client's choice,
    /// not the deployment: one tenant's long generations must not open the circuit for all.
    pub fn blames_deployment(&self, long_answer: bool) -> bool {
        self.falls_back() && !(long_answer && self.class == ErrorClass::Timeout)
    }
}

/// Answer budgets up to this many tokens are short enough that a non-streamed answer
/// timing out says more about the deployment than about the request.
const SHORT_ANSWER_TOKENS: u64 = 1024;

/// Whether a request waits for a long answer as a whole: not streamed (a stream's deadline
/// ends at its first content), and with an answer budget over [`SHORT_ANSWER_TOKENS`] or
/// none (0: the provider's own limit).
pub fn long_answer(stream: bool, answer_tokens: u64) -> bool {
    !stream && (answer_tokens == 0 || answer_tokens > SHORT_ANSWER_TOKENS)
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Try the next candidate.
    FallBack,
    /// Wait this many milliseconds, then try the same deployment again: it was the last
    /// candidate and asked for a short wait.
    RetrySame(u64),
    /// The request is too long for that deployment: only candidates with a larger context
    /// window remain.
    OnlyLargerContext,
    /// Stop; the client gets this error.
    Fail(GatewayError),
}

/// One request's attempts: the candidates still to try (each with the credentials to call
/// it), the record of those tried, and the limits.
pub struct Attempts<'g> {
    queue: VecDeque<(&'g Deployment, Auth)>,
    pub log: AttemptLog,
    /// Attempts made: a candidate skipped for a request it cannot take uses none.
    made: usize,
    /// The first such refusal, the client's error when no candidate could take it.
    unsupported: Option<GatewayError>,
    max_attempts: usize,
    max_retry_after_ms: u64,
    deadline_ms: u64,
    retried_same: bool,
    retry_after: Option<u32>,
    /// The rule that kept some of the alias's deployments out, for the exhausted error.
    residency_rule: Option<String>,
}

impl<'g> Attempts<'g> {
    pub fn new(
        queue: impl IntoIterator<Item = (&'g Deployment, Auth)>,
        limits: &Limits,
        started_ms: u64,
        residency_rule: Option<String>,
    ) -> Self {
        Attempts {
            queue: queue.into_iter().collect(),
            log: AttemptLog::default(),
            made: 0,
            unsupported: None,
            max_attempts: limits.max_attempts,
            max_retry_after_ms: limits.max_retry_after_ms,
            deadline_ms: started_ms.saturating_add(limits.total_deadline_ms),
            retried_same: false,
            retry_after: None,
            residency_rule,
        }
    }

    /// The next deployment to try and how long its response head may take; `None` once
    /// the candidates, the attempts or the request's time have run out.
    pub fn next(&mut self, now_ms: u64) -> Option<(&'g Deployment, Auth, u64)> {
        let (d, auth) = self.queue.pop_front()?;
        let timeout = attempt_timeout(u64::from(d.first_byte_timeout_ms), now_ms, self.deadline_ms)?;
        if self.made >= self.max_attempts {
            return None;
        }
        Some((d, auth, timeout))
    }

    pub fn answered(&mut self, d: &Deployment, status: u16) {
        self.made += 1;
        self.log.succeeded(&d.id, status);
    }

    /// The deployment's credentials could not be made ready (a token exchange failed): its
    /// attempt failed, and the next candidate is tried.
    pub fn unauthorized(&mut self, d: &Deployment, class: ErrorClass) {
        self.made += 1;
        self.log.failed(&d.id, None, class);
    }

    /// The request cannot be expressed in the deployment's format (a field its provider
    /// cannot take): it is skipped, and `e` is the client's error if no other can.
    pub fn unsupported(&mut self, d: &Deployment, e: GatewayError) {
        self.log.failed(&d.id, None, ErrorClass::Unsupported);
        self.unsupported.get_or_insert(e);
    }

    /// Records a failed attempt and decides what follows; `auth`, the attempt's credentials,
    /// goes back in the queue for a retry of the same deployment.
    pub fn failed(&mut self, d: &'g Deployment, auth: Auth, f: &Failure, now_ms: u64) -> Next {
        self.made += 1;
        let charge = f.consumed.map(|consumed| Charge { consumed, price: d.price });
        self.log.failed_after(&d.id, f.status, f.class, charge);
        if f.falls_back() {
            if f.status.is_some_and(|s| !(200..300).contains(&s)) {
                self.retry_after = f.retry_after;
                if let (true, false, Some(wait)) = (self.queue.is_empty(), self.retried_same, f.retry_after) {
                    let wait_ms = u64::from(wait) * 1000;
                    if wait_ms <= self.max_retry_after_ms && now_ms.saturating_add(wait_ms) < self.deadline_ms {
                        self.retried_same = true;
                        self.queue.push_back((d, auth));
                        return Next::RetrySame(wait_ms);
                    }
                }
            }
            return Next::FallBack;
        }
        let status = f.status.unwrap_or_default();
        if f.class == ErrorClass::ContextLength {
            let window = d.capabilities.context_window.unwrap_or(0);
            self.queue.retain(|(other, _)| other.capabilities.context_window.is_some_and(|w| w > window));
            if !self.queue.is_empty() {
                return Next::OnlyLargerContext;
            }
        }
        Next::Fail(terminal(&d.id, status, f.class, &f.body, &auth))
    }

    /// The client's error once nothing is left to try.
    pub fn exhausted(&self) -> GatewayError {
        match &self.unsupported {
            Some(e) if self.made == 0 => e.clone(),
            _ => self.log.exhausted(self.residency_rule.as_deref(), self.retry_after),
        }
    }
}

/// How long one attempt may wait for its response head: its deployment's timeout, cut to
/// what is left of the request's total deadline; `None` once that has passed.
pub fn attempt_timeout(first_byte_ms: u64, now: u64, deadline: u64) -> Option<u64> {
    let left = deadline.checked_sub(now).filter(|left| *left > 0)?;
    Some(first_byte_ms.min(left))
}

/// The client's error when nothing can be tried: `residency_unsatisfiable` only when the
/// rules left the alias no deployment that could take the request (it can never be served
/// here); a request no allowed deployment can take is the client's to change; allowed
/// deployments that are all skipped are unavailable, with `Retry-After` (`cooling_s`) when
/// every one of them is only cooling down.
pub fn unservable<T>(
    alias: &str,
    decision: &Decision,
    candidates: &Candidates,
    plan: &Plan<T>,
    cooling_s: Option<u32>,
) -> GatewayError {
    let reasons = |dropped: &[Dropped]| {
        dropped.iter().map(|d| format!("{}: {}", d.deployment, d.reason)).collect::<Vec<_>>().join("; ")
    };
    if candidates.kept.is_empty() {
        if candidates.dropped.iter().any(|d| d.residency) || candidates.dropped.is_empty() {
            let detail = format!(
                "none of alias `{alias}`'s deployments may take it ({}: {})",
                decision.allowed.label(),
                reasons(&candidates.dropped)
            );
            return GatewayError::residency_unsatisfiable(&decision.rule, detail);
        }
        return GatewayError::bad_request(
            "no_capable_deployment",
            format!("No deployment of alias `{alias}` can take this request: {}.", reasons(&candidates.dropped)),
        );
    }
    let skipped = plan.skipped();
    let e = GatewayError::new(
        503,
        "service_unavailable",
        "upstream_unavailable",
        format!("No deployment of alias `{alias}` can be called now: {skipped}."),
    );
    match cooling_s {
        Some(s) if plan.secret_not_set.is_empty() => e.with_retry_after(s.max(1)),
        _ => e,
    }
}

/// The candidates that will be tried, in order, and those left out with why.
pub struct Plan<'g, T> {
    pub queue: Vec<(&'g Deployment, T)>,
    /// Their circuit is open: they failed repeatedly and are cooling down.
    pub cooling_down: Vec<&'g str>,
    /// A Worker secret they name is not set.
    pub secret_not_set: Vec<&'g str>,
}

impl<T> Plan<'_, T> {
    /// The deployments left out and why, as `x-gateway-skipped` and errors say it.
    pub fn skipped(&self) -> String {
        let cooling = self.cooling_down.iter().map(|id| format!("{id} (cooling down)"));
        let unset = self.secret_not_set.iter().map(|id| format!("{id} (its secret is not set)"));
        cooling.chain(unset).collect::<Vec<_>>().join(", ")
    }
}

/// Which of the allowed candidates (in order) to try: those whose credentials the shell
/// could resolve (`credentials`) and whose circuit admits a request (`admit`, which claims
/// a probe when it answers `Probe`).
pub fn plan<'g, T>(
    candidates: &[&'g Deployment],
    mut credentials: impl FnMut(&Deployment) -> Option<T>,
    mut admit: impl FnMut(&Deployment) -> Admission,
) -> Plan<'g, T> {
    let mut plan =
        Plan { queue: Vec::with_capacity(candidates.len()), cooling_down: Vec::new(), secret_not_set: Vec::new() };
    for &d in candidates {
        let Some(extra) = credentials(d) else {
            plan.secret_not_set.push(&d.id);
            continue;
        };
        match admit(d) {
            Admission::Skip => plan.cooling_down.push(&d.id),
            Admission::Try | Admission::Probe => plan.queue.push((d, extra)),
        }
    }
    plan
}

/// The client's error for an upstream failure that must not fall back. The provider's
/// message is passed on for the client's own mistakes (so they can fix the request) with
/// the provider key redacted; credential and routing problems are the gateway operator's,
/// so the client only learns which deployment failed.
pub fn terminal(deployment: &str, status: u16, class: ErrorClass, body: &[u8], auth: &Auth) -> GatewayError {
    let upstream_message = || {
        let text = String::from_utf8_lossy(body);
        let message = serde_json::from_slice::<serde_json::Value>(text.as_bytes())
            .ok()
            .and_then(|v| {
                // AWS services (Bedrock) put the message at the top: `{"message": "..."}`.
                let e = v.get("error").or_else(|| v.get("message"))?;
                e.get("message").or(Some(e)).and_then(|m| m.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| text.chars().take(500).collect());
        redact(&message, auth)
    };
    match class {
        ErrorClass::ContextLength => GatewayError::bad_request(
            "context_length_exceeded",
            format!("Deployment `{deployment}` rejected the request as too long: {}", upstream_message()),
        ),
        ErrorClass::ContentFilter => GatewayError::bad_request(
            "content_filter",
            format!("Deployment `{deployment}` refused the request under its content policy: {}", upstream_message()),
        ),
        ErrorClass::BadRequest => GatewayError::bad_request(
            "upstream_bad_request",
            format!("Deployment `{deployment}` rejected the request (HTTP {status}): {}", upstream_message()),
        ),
        ErrorClass::Auth => GatewayError::new(
            502,
            "upstream_error",
            "upstream_auth_failed",
            format!("Deployment `{deployment}` rejected the gateway's provider credentials (HTTP {status}); the gateway operator must fix its secret."),
        ),
        ErrorClass::NotFound => GatewayError::new(
            502,
            "upstream_error",
            "upstream_not_found",
            format!("Deployment `{deployment}` answered HTTP {status} not found; its base_url or model is misconfigured."),
        ),
        _ => GatewayError::new(
            502,
            "upstream_error",
            "upstream_failed",
            format!("Deployment `{deployment}` failed (HTTP {status}, {}).", class.as_str()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Gateway};
    use crate::policy::residency::{Allowed, Decision, Dropped};

    #[test]
    fn summary_lists_every_attempt() {
        let mut log = AttemptLog::default();
        log.failed("eu-1", Some(529), ErrorClass::Overloaded);
        log.failed("eu-2", None, ErrorClass::Timeout);
        log.succeeded("eu-3", 200);
        assert_eq!(log.summary(), "eu-1:529 overloaded, eu-2:- timeout, eu-3:200 ok");
        assert_eq!(log.count(), 3);
    }

    #[test]
    fn exhausted_maps_the_last_failure() {
        let mut log = AttemptLog::default();
        log.failed("a", Some(500), ErrorClass::Server);
        let e = log.exhausted(None, None);
        assert_eq!((e.status, e.code), (502, "upstream_failed"));
        assert!(e.message.contains("a:500 server"));
        log.failed("b", Some(429), ErrorClass::RateLimited);
        let e = log.exhausted(None, Some(7));
        assert_eq!((e.status, e.retry_after), (429, Some(7)));
        log.failed("c", Some(529), ErrorClass::Overloaded);
        assert_eq!(log.exhausted(None, None).status, 503);
        let e = log.exhausted(Some("eu-callers"), None);
        assert_eq!((e.status, e.code), (503, "upstream_overloaded"));
        assert!(e.message.contains("`eu-callers`") && e.message.contains("c:529 overloaded"));
    }

    #[test]
    fn terminal_errors_never_leak_the_key() {
        let key = "sk-live-SECRETSECRETSECRET";
        let body =
            format!(r#"{{"error":{{"message":"Incorrect API key provided: {key}","type":"invalid_request_error"}}}}"#);
        let auth = Auth { api_key: Some(key.into()), ..Auth::default() };
        let e = terminal("openai-eu", 401, ErrorClass::Auth, body.as_bytes(), &auth);
        assert_eq!(e.status, 502);
        assert!(e.message.contains("openai-eu") && !e.message.contains("SECRET"));
        let e = terminal("openai-eu", 400, ErrorClass::BadRequest, body.as_bytes(), &auth);
        assert_eq!(e.status, 400);
        assert!(e.message.contains("Incorrect API key provided") && !e.message.contains("SECRET"), "{}", e.message);
        let e = terminal("d", 400, ErrorClass::ContextLength, b"not json", &Auth::default());
        assert_eq!((e.code, e.message.contains("not json")), ("context_length_exceeded", true));
        assert_eq!(terminal("d", 404, ErrorClass::NotFound, b"", &Auth::default()).status, 502);
        let aws = br#"{"message":"Input is too long for requested model."}"#;
        let e = terminal("bedrock-eu", 400, ErrorClass::ContextLength, aws, &Auth::default());
        assert!(e.message.ends_with("as too long: Input is too long for requested model."), "{}", e.message);
    }

    #[test]
    fn attempts_fit_in_the_total_deadline() {
        assert_eq!(attempt_timeout(30_000, 1_000, 61_000), Some(30_000));
        assert_eq!(attempt_timeout(30_000, 50_000, 61_000), Some(11_000), "the last attempt gets what is left");
        assert_eq!(attempt_timeout(30_000, 61_000, 61_000), None);
        assert_eq!(attempt_timeout(30_000, 70_000, 61_000), None, "a clock past the deadline stops, never wraps");
    }

    fn gateway(edit: impl FnOnce(&mut serde_json::Value)) -> Gateway {
        let mut v: serde_json::Value = serde_json::from_str(&config::tests::sample()).unwrap();
        v["limits"] = serde_json::json!({"max_attempts": 3, "total_deadline_ms": 60_000, "max_retry_after_ms": 5_000});
        edit(&mut v);
        config::parse(&v.to_string()).unwrap()
    }

    fn attempts<'g>(g: &'g Gateway, ids: &[&str]) -> Attempts<'g> {
        let queue = ids.iter().map(|id| (g.deployment(id).unwrap(), AUTH));
        Attempts::new(queue, &g.config.limits, 0, None)
    }

    fn tried(a: &Attempts) -> String {
        a.log.summary()
    }

    const AUTH: Auth = Auth { api_key: None, aws: None, bearer_token: None, now_unix: 0 };

    #[test]
    fn a_transient_failure_falls_back_to_the_next_candidate() {
        let g = gateway(|_| {});
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        let (d, _, timeout) = a.next(0).unwrap();
        assert_eq!((d.id.as_str(), timeout), ("eu-a", 30_000));
        for (status, class) in [(Some(529), ErrorClass::Overloaded), (None, ErrorClass::Timeout)] {
            let f = Failure { status, class, retry_after: None, consumed: None, body: Vec::new() };
            assert!(f.blames_deployment(false));
            assert_eq!(attempts(&g, &["eu-a", "eu-b"]).failed(d, AUTH, &f, 10), Next::FallBack);
        }
        assert_eq!(a.failed(d, AUTH, &Failure::refused(500, ErrorClass::Server, None, Vec::new()), 10), Next::FallBack);
        let (d, _, _) = a.next(10).unwrap();
        assert_eq!(d.id, "eu-b");
        a.answered(d, 200);
        assert_eq!(tried(&a), "eu-a:500 server, eu-b:200 ok");
    }

    #[test]
    fn a_success_head_whose_body_fails_falls_back_whatever_its_class() {
        let g = gateway(|_| {});
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        let (d, _, _) = a.next(0).unwrap();
        let consumed = Consumed::reported(Usage { input_tokens: 7, ..Usage::default() });
        let f = Failure::unusable(200, ErrorClass::ContentFilter, consumed);
        assert!(f.blames_deployment(false));
        assert_eq!(a.failed(d, AUTH, &f, 0), Next::FallBack);
        assert_eq!(a.log.attempts[0].charge, Some(Charge { consumed, price: d.price }), "at its deployment's price");
    }

    #[test]
    fn a_call_is_charged_unless_it_provably_cost_nothing() {
        let g = gateway(|_| {});
        let d = g.deployment("eu-a").unwrap();
        // Never sent, or refused with an error status: providers bill neither.
        assert_eq!(Failure::not_sent(ErrorClass::Unreachable).consumed, None);
        assert_eq!(Failure::refused(500, ErrorClass::Server, None, Vec::new()).consumed, None);
        // No answer: the provider may have taken the request; its prompt is estimated.
        let timed_out = Failure::no_answer(ErrorClass::Timeout, 120).consumed.unwrap();
        assert_eq!(timed_out.billed, Usage { input_tokens: 120, ..Usage::default() });
        assert!(timed_out.is_estimated());
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        a.next(0).unwrap();
        a.failed(d, AUTH, &Failure::no_answer(ErrorClass::Timeout, 120), 0);
        let (b, _, _) = a.next(0).unwrap();
        a.failed(b, AUTH, &Failure::refused(400, ErrorClass::BadRequest, None, Vec::new()), 0);
        let charges: Vec<_> = a.log.attempts.iter().map(|t| t.charge).collect();
        assert_eq!(charges, [Some(Charge { consumed: timed_out, price: d.price }), None]);
        // Skipped before sending: nothing.
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        a.unauthorized(d, ErrorClass::Auth);
        a.unsupported(d, GatewayError::bad_request("unsupported_parameter", "no"));
        assert!(a.log.attempts.iter().all(|t| t.charge.is_none()));
    }

    #[test]
    fn the_last_candidate_is_retried_once_after_a_short_retry_after() {
        let g = gateway(|_| {});
        let mut a = attempts(&g, &["eu-a"]);
        let (d, _, _) = a.next(0).unwrap();
        let busy = Failure::refused(429, ErrorClass::RateLimited, Some(2), Vec::new());
        assert_eq!(a.failed(d, AUTH, &busy, 1_000), Next::RetrySame(2_000));
        let (again, _, _) = a.next(3_000).unwrap();
        assert_eq!(again.id, "eu-a");
        assert_eq!(a.failed(again, AUTH, &busy, 3_100), Next::FallBack, "only once");
        assert!(a.next(3_200).is_none());
        let e = a.exhausted();
        assert_eq!((e.status, e.retry_after), (429, Some(2)));
    }

    #[test]
    fn a_retry_after_is_not_waited_for_when_too_long_too_late_or_others_remain() {
        let g = gateway(|_| {});
        let long = Failure::refused(503, ErrorClass::Overloaded, Some(6), Vec::new());
        let short = Failure::refused(503, ErrorClass::Overloaded, Some(5), Vec::new());
        let mut a = attempts(&g, &["eu-a"]);
        let (d, _, _) = a.next(0).unwrap();
        assert_eq!(a.failed(d, AUTH, &long, 0), Next::FallBack, "beyond max_retry_after_ms");
        let mut a = attempts(&g, &["eu-a"]);
        let (d, _, _) = a.next(0).unwrap();
        assert_eq!(a.failed(d, AUTH, &short, 55_000), Next::FallBack, "past the total deadline");
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        let (d, _, _) = a.next(0).unwrap();
        assert_eq!(a.failed(d, AUTH, &short, 0), Next::FallBack, "another candidate is left");
        let mut a = attempts(&g, &["eu-a"]);
        let (d, _, _) = a.next(0).unwrap();
        let none = Failure::refused(503, ErrorClass::Overloaded, None, Vec::new());
        assert_eq!(a.failed(d, AUTH, &none, 0), Next::FallBack, "no Retry-After");
    }

    #[test]
    fn a_context_overflow_keeps_only_larger_windows() {
        let g = gateway(|v| {
            for (i, w) in [(0, 8_000), (1, 4_000), (2, 200_000)] {
                v["deployments"][i]["capabilities"] = serde_json::json!({"context_window": w});
            }
        });
        let mut a = attempts(&g, &["eu-a", "eu-b", "us-a"]);
        let (d, _, _) = a.next(0).unwrap();
        let long =
            Failure::refused(400, ErrorClass::ContextLength, None, br#"{"error":{"message":"too long"}}"#.to_vec());
        assert!(!long.blames_deployment(false));
        assert_eq!(a.failed(d, AUTH, &long, 0), Next::OnlyLargerContext);
        let (d, _, _) = a.next(0).unwrap();
        assert_eq!(d.id, "us-a", "the 4,000-token window is passed over");
        match a.failed(d, AUTH, &long, 0) {
            Next::Fail(e) => assert_eq!((e.status, e.code), (400, "context_length_exceeded")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failure_the_client_caused_stops_with_the_providers_message() {
        let g = gateway(|_| {});
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        let (d, _, _) = a.next(0).unwrap();
        let bad =
            Failure::refused(400, ErrorClass::BadRequest, None, br#"{"error":{"message":"no such field"}}"#.to_vec());
        match a.failed(d, AUTH, &bad, 0) {
            Next::Fail(e) => assert!(e.message.contains("no such field"), "{}", e.message),
            other => panic!("{other:?}"),
        }
        for class in [ErrorClass::Auth, ErrorClass::NotFound, ErrorClass::ContentFilter] {
            let mut a = attempts(&g, &["eu-a", "eu-b"]);
            let (d, _, _) = a.next(0).unwrap();
            assert!(matches!(a.failed(d, AUTH, &Failure::refused(403, class, None, Vec::new()), 0), Next::Fail(_)));
        }
    }

    #[test]
    fn attempts_stop_at_the_limit_and_the_deadline() {
        let g = gateway(|v| v["limits"]["max_attempts"] = 2.into());
        let mut a = attempts(&g, &["eu-a", "eu-b", "us-a"]);
        for _ in 0..2 {
            let (d, _, _) = a.next(0).unwrap();
            a.failed(d, AUTH, &Failure::no_answer(ErrorClass::Unreachable, 10), 0);
        }
        assert!(a.next(0).is_none(), "max_attempts");
        assert_eq!(a.exhausted().code, "upstream_failed");
        let mut a = attempts(&g, &["eu-a"]);
        assert!(a.next(60_000).is_none(), "the total deadline");
        let mut a = attempts(&g, &["eu-a"]);
        assert_eq!(a.next(59_000).unwrap().2, 1_000, "the last attempt gets what is left");
    }

    #[test]
    fn a_failed_credential_exchange_is_that_deployments_attempt() {
        let g = gateway(|_| {});
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        let (d, _, _) = a.next(0).unwrap();
        a.unauthorized(d, ErrorClass::Auth);
        assert_eq!(a.next(0).unwrap().0.id, "eu-b");
        assert_eq!(tried(&a), "eu-a:- auth");
    }

    #[test]
    fn an_allowed_set_that_failed_gets_the_failures_code_and_names_the_rule() {
        let g = gateway(|_| {});
        let mut a =
            Attempts::new([(g.deployment("eu-a").unwrap(), AUTH)], &g.config.limits, 0, Some("eu-callers".into()));
        let (d, _, _) = a.next(0).unwrap();
        a.failed(d, AUTH, &Failure::refused(529, ErrorClass::Overloaded, Some(3), Vec::new()), 10_000);
        let e = a.exhausted();
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (503, "upstream_overloaded", Some(3)),
            "busy, retry: not residency"
        );
        assert!(e.message.contains("residency rule `eu-callers`"), "{}", e.message);
    }

    #[test]
    fn nothing_to_try_says_why_residency_only_when_the_rules_left_nothing() {
        let g = gateway(|_| {});
        let d = |id| g.deployment(id).unwrap();
        let decision = Decision { rule: "eu-callers".into(), allowed: Allowed::Only(vec!["eu".into()]) };
        let dropped = |id: &str, residency| Dropped { deployment: id.into(), reason: "why".into(), residency };
        let nothing_allowed = Candidates { kept: vec![], bands: vec![], dropped: vec![dropped("us-a", true)] };
        let empty = Plan::<()> { queue: vec![], cooling_down: vec![], secret_not_set: vec![] };
        let e = unservable("chat", &decision, &nothing_allowed, &empty, None);
        assert_eq!((e.status, e.code), (503, "residency_unsatisfiable"));
        let unfit = Candidates { kept: vec![], bands: vec![], dropped: vec![dropped("eu-a", false)] };
        let e = unservable("chat", &decision, &unfit, &empty, None);
        assert_eq!((e.status, e.code), (400, "no_capable_deployment"));
        assert!(e.message.contains("eu-a: why"), "{}", e.message);
        let kept = Candidates { kept: vec![d("eu-a"), d("eu-b")], bands: vec![0, 0], dropped: vec![] };
        let skipped = Plan::<()> { queue: vec![], cooling_down: vec!["eu-a"], secret_not_set: vec!["eu-b"] };
        let e = unservable("chat", &decision, &kept, &skipped, Some(7));
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (503, "upstream_unavailable", None),
            "a missing secret needs the operator"
        );
        assert!(
            e.message.contains("eu-a (cooling down)") && e.message.contains("eu-b (its secret is not set)"),
            "{}",
            e.message
        );
        let cooling = Plan::<()> { queue: vec![], cooling_down: vec!["eu-a", "eu-b"], secret_not_set: vec![] };
        let e = unservable("chat", &decision, &kept, &cooling, Some(7));
        assert_eq!((e.code, e.retry_after), ("upstream_unavailable", Some(7)));
    }

    #[test]
    fn a_plan_skips_deployments_without_secrets_and_with_open_circuits() {
        let g = gateway(|_| {});
        let all: Vec<&Deployment> =
            ["eu-a", "eu-b", "us-a", "jp-a"].iter().map(|id| g.deployment(id).unwrap()).collect();
        let p = plan(
            &all,
            |d| (d.id != "us-a").then_some(()),
            |d| if d.id == "eu-b" { Admission::Skip } else { Admission::Probe },
        );
        let queue: Vec<&str> = p.queue.iter().map(|(d, _)| d.id.as_str()).collect();
        assert_eq!(queue, vec!["eu-a", "jp-a"]);
        assert_eq!((p.cooling_down, p.secret_not_set), (vec!["eu-b"], vec!["us-a"]));
    }

    #[test]
    fn a_candidate_that_cannot_take_the_request_is_skipped_without_using_an_attempt() {
        let g = gateway(|v| v["limits"]["max_attempts"] = 1.into());
        let mut a = attempts(&g, &["eu-a", "eu-b"]);
        let (d, _, _) = a.next(0).unwrap();
        a.unsupported(d, GatewayError::bad_request("unsupported_parameter", "`logprobs` is not supported"));
        let (d, _, _) = a.next(0).expect("a skipped candidate is not an attempt");
        assert_eq!(d.id, "eu-b");
        a.answered(d, 200);
        assert_eq!(tried(&a), "eu-a:- unsupported, eu-b:200 ok");

        let mut a = attempts(&g, &["eu-a"]);
        let (d, _, _) = a.next(0).unwrap();
        a.unsupported(d, GatewayError::bad_request("unsupported_parameter", "`logprobs` is not supported"));
        assert!(a.next(0).is_none());
        let e = a.exhausted();
        assert_eq!((e.status, e.code), (400, "unsupported_parameter"), "nothing else could take it: the first refusal");
    }

    #[test]
    fn a_timeout_on_a_long_answer_the_client_chose_does_not_blame_the_deployment() {
        let timeout = Failure::no_answer(ErrorClass::Timeout, 10);
        assert!(timeout.blames_deployment(false));
        assert!(!timeout.blames_deployment(true));
        assert!(
            !Failure::unusable(200, ErrorClass::Timeout, Consumed::default()).blames_deployment(true),
            "cut off mid-body"
        );
        assert!(Failure::refused(503, ErrorClass::Overloaded, None, Vec::new()).blames_deployment(true));
        // Streams wait only for their first content; whole answers, for all of it.
        assert!(!long_answer(true, 32_000) && !long_answer(true, 0));
        assert!(long_answer(false, 32_000) && long_answer(false, 0), "no max_tokens: the provider's own limit");
        assert!(!long_answer(false, 256));
    }
}

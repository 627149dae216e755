//! One client request as every handler sees it: the runtime's request and handles, the
//! config it is served under, the key it presents, and the steps each handler shares
//! (body, alias, tags, where the caller is and what the rules allow, the receipt headers).

use super::glue::{self, Head};
use super::ledger::{self, Bill};
use super::respond;
use super::spend;
use super::state::State;
use super::upstream;
use crate::config::{Alias, Deployment, KeyConfig};
use crate::ingress::Ingress;
use crate::model::error::GatewayError;
use crate::model::geo::{Caller, CfFields};
use crate::policy::attempts::AttemptLog;
use crate::policy::budget;
use crate::policy::keys;
use crate::policy::residency::{self, Candidates, Decision, Subject};
use crate::policy::tags::{self, Tags};
use std::rc::Rc;
use worker::web_sys::{self, Response};
use worker::{Context, Env, Headers};

pub struct Call<'a> {
    pub req: &'a web_sys::Request,
    pub headers: Headers,
    pub env: &'a Env,
    pub ctx: Rc<Context>,
    pub state: &'a State,
    pub key: &'a KeyConfig,
    pub ingress: Ingress,
    pub request_id: &'a str,
    pub started_ms: u64,
}

/// Where a request may go, decided once.
pub struct Allowed<'g> {
    pub caller: Caller,
    pub decision: Decision,
    pub candidates: Candidates<'g>,
}

impl<'a> Call<'a> {
    /// A request header, trimmed; `None` when absent or blank.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    pub async fn body(&self) -> Result<Vec<u8>, GatewayError> {
        upstream::read_client_body(self.req, &self.headers, self.state.gateway.config.limits.max_body_bytes).await
    }

    /// The alias a request names, if the key may use it.
    pub fn alias(&self, model: &str) -> Result<&'a Alias, GatewayError> {
        let state: &'a State = self.state;
        state
            .gateway
            .alias(model)
            .filter(|_| keys::may_use(self.key, model))
            .ok_or_else(|| GatewayError::model_not_found(model))
    }

    /// The cost tags: the `x-gateway-*` headers, the key's defaults, else `untagged`.
    pub fn tags(&self) -> Result<Tags, GatewayError> {
        tags::resolve(
            self.key,
            self.header("x-gateway-team").as_deref(),
            self.header("x-gateway-feature").as_deref(),
            self.header("x-gateway-env").as_deref(),
        )
    }

    /// The caller's location: `request.cf`, or the `x-gateway-geo-*` headers where the
    /// deployment trusts them (local dev and tests, whose `request.cf` is a placeholder).
    fn caller(&self) -> Caller {
        if self.state.trust_geo_headers {
            if let Some(country) = self.header("x-gateway-geo-country") {
                return Caller::stand_in(&country, self.header("x-gateway-geo-continent").as_deref());
            }
        }
        glue::cf_lines(self.req).and_then(|lines| CfFields::from_lines(&lines)).map(Caller::from).unwrap_or_default()
    }

    /// Where the caller is, the residency rule that applies, and the alias's deployments it
    /// allows, nearest first.
    pub fn allowed(&self, alias: &Alias) -> Result<Allowed<'a>, GatewayError> {
        let state: &'a State = self.state;
        let caller = self.caller();
        let compliance = residency::compliance_tags(self.header("x-gateway-compliance").as_deref());
        let team = self.key.team.as_deref().map(str::to_ascii_lowercase);
        let subject = Subject {
            caller: &caller,
            compliance: &compliance,
            team: team.as_deref(),
            key_id: Some(&self.key.id),
            key_policy: self.key.residency.as_deref(),
        };
        let decision = residency::decide(&state.gateway.config.residency, &subject)?;
        let candidates = residency::candidates(&state.gateway, alias, &decision, &caller);
        Ok(Allowed { caller, decision, candidates })
    }

    /// The budgets' warnings, or 402 when a hard budget is spent.
    pub async fn budget(&self, tags: &Tags) -> Result<Vec<String>, GatewayError> {
        let config = &self.state.gateway.config;
        budget::check(
            &spend::for_request(self.env, &self.key.id, &tags.team).await,
            &self.key.id,
            self.key.budget.as_ref(),
            &tags.team,
            config.budgets.teams.get(&tags.team),
        )
    }

    /// Requests per minute for keys with a `rate_limit`: the named binding counts per key.
    pub async fn rate_limit(&self) -> Result<(), GatewayError> {
        let key = self.key;
        let Some(binding) = &key.rate_limit else { return Ok(()) };
        let limiter = self.env.rate_limiter(binding).map_err(|_| {
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

    /// Everything the request's cost event needs besides how it ends.
    pub fn bill(&self, tags: Tags, allowed: &Allowed, alias: &Alias) -> Bill {
        Bill {
            ctx: self.ctx.clone(),
            env: self.env.clone(),
            request_id: self.request_id.to_string(),
            started_ms: self.started_ms,
            key_id: self.key.id.clone(),
            tags,
            caller: allowed.caller.clone(),
            rule: allowed.decision.rule.clone(),
            alias: alias.name.clone(),
            fail_queue: ledger::queue_fault(self.state.allow_test_faults, &self.headers),
        }
    }
}

/// What has been decided about a request, for its response headers.
pub struct Receipt {
    pub rule: String,
    /// Soft budgets reached.
    pub warnings: Vec<String>,
    /// Allowed deployments left out, and why (`attempts::Plan::skipped`).
    pub skipped: String,
}

impl Receipt {
    pub fn headers(&self, log: &AttemptLog, served_by: Option<&Deployment>) -> Head {
        let mut h = Head::new();
        let _ = h.set("x-gateway-rule", &self.rule);
        let _ = h.set("x-gateway-attempts", &log.count().to_string());
        if !self.skipped.is_empty() {
            let _ = h.set("x-gateway-skipped", &self.skipped);
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

    /// The headers of an answer from `d` that has not come yet (a stream's first content).
    pub fn headers_if_served(&self, log: &AttemptLog, d: &Deployment, status: u16) -> Head {
        let mut log = log.clone();
        log.succeeded(&d.id, status);
        self.headers(&log, Some(d))
    }

    pub fn error(&self, ingress: Ingress, log: &AttemptLog, e: &GatewayError) -> Response {
        respond::error_with(ingress, e, self.headers(log, None))
    }
}

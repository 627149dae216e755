//! The record of one client request's upstream attempts, and the error the client gets
//! when none of them answered. Kept apart from the shell so the mapping from upstream
//! failure to client status is tested natively.

use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::providers::{redact, Auth};

#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub deployment: String,
    /// Upstream HTTP status, when one arrived.
    pub status: Option<u16>,
    /// `None` for the attempt that answered.
    pub failure: Option<ErrorClass>,
    /// What a failed attempt had consumed when it failed, if the provider said (a stream
    /// that reported its input before dying).
    pub consumed: Option<Usage>,
}

#[derive(Debug, Default, Clone)]
pub struct AttemptLog {
    pub attempts: Vec<Attempt>,
}

impl AttemptLog {
    pub fn failed(&mut self, deployment: &str, status: Option<u16>, class: ErrorClass) {
        self.failed_after(deployment, status, class, None);
    }

    pub fn failed_after(&mut self, deployment: &str, status: Option<u16>, class: ErrorClass, consumed: Option<Usage>) {
        self.attempts.push(Attempt { deployment: deployment.to_string(), status, failure: Some(class), consumed });
    }

    pub fn succeeded(&mut self, deployment: &str, status: u16) {
        self.attempts.push(Attempt {
            deployment: deployment.to_string(),
            status: Some(status),
            failure: None,
            consumed: None,
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

    /// What the client gets when every attempt failed with a class that falls back.
    /// `residency_rule` is set when the rules kept some of the alias's deployments out:
    /// then the honest answer is that nothing the rules allow could serve.
    pub fn exhausted(&self, residency_rule: Option<&str>, retry_after: Option<u32>) -> GatewayError {
        let detail = format!("tried {}", self.summary());
        if let Some(rule) = residency_rule {
            return GatewayError::residency_unsatisfiable(rule, detail);
        }
        let last = self.attempts.last().and_then(|a| a.failure).unwrap_or(ErrorClass::Server);
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
        assert_eq!((e.status, e.code), (503, "residency_unsatisfiable"));
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
}

//! The one error type of the gateway. Every failure a client can see becomes an
//! OpenAI-shaped body `{"error":{"message","type","code"}}` with a matching status, so SDKs
//! surface it as a normal API error instead of a parse failure.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After` on 429 / 503.
    pub retry_after: Option<u32>,
}

impl GatewayError {
    pub fn new(status: u16, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        GatewayError { status, kind, code, message: message.into(), retry_after: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "authentication_error", "invalid_api_key", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(403, "permission_error", code, message)
    }

    pub fn model_not_found(alias: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            "model_not_found",
            format!("The model `{alias}` does not exist or this key may not use it; GET /v1/models lists the aliases it may use."),
        )
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(404, "invalid_request_error", "not_found", format!("No route for {path}."))
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not allowed on {path}; use {allowed}."),
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("The request body exceeds the gateway limit of {limit} bytes."),
        )
    }

    pub fn residency_unsatisfiable(rule: &str, detail: impl fmt::Display) -> Self {
        Self::new(
            503,
            "service_unavailable",
            "residency_unsatisfiable",
            format!("No deployment allowed by residency rule `{rule}` can serve this request: {detail}."),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "api_error", "internal_error", message)
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The OpenAI error body.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<()>,
            code: &'a str,
        }
        serde_json::to_string(&Body {
            error: Inner { message: &self.message, kind: self.kind, param: None, code: self.code },
        })
        .expect("error body serialises")
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_openai_shape() {
        let e = GatewayError::bad_request("invalid_json", "bad \"quote\"");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["message"], "bad \"quote\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_json");
        assert!(v["error"]["param"].is_null());
        assert_eq!(e.status, 400);
    }

    #[test]
    fn statuses_match_their_class() {
        assert_eq!(GatewayError::unauthorized("x").status, 401);
        assert_eq!(GatewayError::model_not_found("a").status, 404);
        assert_eq!(GatewayError::payload_too_large(10).status, 413);
        assert_eq!(GatewayError::method_not_allowed("GET", "/v1/chat/completions", "POST").status, 405);
        let r = GatewayError::residency_unsatisfiable("eu-gdpr", "every candidate failed");
        assert_eq!((r.status, r.code), (503, "residency_unsatisfiable"));
        assert!(r.message.contains("eu-gdpr"));
    }
}

//! Anthropic Messages shapes shared by the ingress and the providers that speak it: the
//! error object and the `error` event that ends a stream.

use crate::model::error::GatewayError;
use crate::util::sse::write_event;
use serde_json::json;

pub fn error_type(e: &GatewayError) -> &'static str {
    match (e.status, e.code) {
        (_, "upstream_overloaded") | (529, _) => "overloaded_error",
        (_, "upstream_timeout") => "timeout_error",
        (401, _) => "authentication_error",
        (402, _) => "billing_error",
        (403, _) => "permission_error",
        (404, _) => "not_found_error",
        (413, _) => "request_too_large",
        (429, _) => "rate_limit_error",
        // Anthropic's type for every other 4xx too.
        (400..=499, _) => "invalid_request_error",
        _ => "api_error",
    }
}

/// Anthropic's error object, of type `kind`.
fn error_json(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

pub fn error_body(e: &GatewayError) -> String {
    error_json(error_type(e), &e.message)
}

/// Appends the `error` event that ends a Messages stream, of type `kind`.
pub fn write_error_event(out: &mut Vec<u8>, kind: &str, message: &str) {
    write_event(out, Some("error"), &error_json(kind, message));
}

/// The gateway's error as the `error` event that ends a Messages stream.
pub fn stream_error_event(e: &GatewayError) -> Vec<u8> {
    let mut out = Vec::new();
    write_error_event(&mut out, error_type(e), &e.message);
    out
}

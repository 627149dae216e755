//! Anthropic Messages API (api.anthropic.com and hosts speaking the same format).
//!
//! Per Anthropic's API reference (platform.claude.com/docs): `POST {base}/messages` with
//! `x-api-key` and `anthropic-version: 2023-06-01`; the error body
//! `{"type":"error","error":{type,message}}` and its statuses ("Errors": 529
//! `overloaded_error`). An OpenAI client's request is translated (`request`, `response`,
//! `stream`); a Messages client's passes as it came (`native`).

mod native;
mod request;
mod response;
mod stream;

pub use native::{native_response, native_stream, token_count};
pub(super) use request::request_body;

use super::canonical::{Chunks, Cx, Identity};
use super::{Auth, CountsTokens, Provider, SpeaksMessages, StreamTranslator, UpstreamRequest};
use crate::config::provider::anthropic::inference_geo;
use crate::config::Deployment;
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use response::{completion, WireMessage};
use serde_json::Value;
use stream::Translator;

pub struct Anthropic;

const API_VERSION: &str = "2023-06-01";

fn headers(auth: &Auth) -> Vec<(&'static str, String)> {
    let mut headers =
        vec![("content-type", "application/json".to_string()), ("anthropic-version", API_VERSION.to_string())];
    if let Some(key) = &auth.api_key {
        headers.push(("x-api-key", key.to_string()));
    }
    headers
}

impl Provider for Anthropic {
    fn messages(&self, _d: &Deployment) -> Option<&'static dyn SpeaksMessages> {
        Some(&Anthropic)
    }

    fn counts(&self, _d: &Deployment) -> Option<&'static dyn CountsTokens> {
        Some(&Anthropic)
    }

    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let mut body = request_body(&Cx { provider: "anthropic", deployment: &d.id }, &d.model, req)?;
        if let Some(geo) = inference_geo(d) {
            body.insert("inference_geo".into(), geo.into());
        }
        let body = serde_json::to_vec(&body).expect("a JSON map serialises");
        Ok(UpstreamRequest { url: format!("{}/messages", d.base_url), headers: headers(auth), body })
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        let message = serde_json::from_slice::<WireMessage>(&body).map_err(|_| ErrorClass::Server)?;
        let usage = message.usage.total();
        let completion = completion(&message, req.received_at, usage);
        Ok((completion.to_string().into_bytes(), Some(usage)))
    }

    fn reported_geo(&self, body: &[u8]) -> Option<&'static str> {
        response::reported_geo(body)
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        // Read as a `Value`: a typed parse of a cold path costs its own deserializer.
        let error = serde_json::from_slice::<Value>(body).unwrap_or_default();
        let message = error["error"]["message"].as_str().unwrap_or_default().to_ascii_lowercase();
        if error["error"]["type"] == "overloaded_error" {
            return ErrorClass::Overloaded;
        }
        ErrorClass::of_status(status, || match status {
            // 402 is Anthropic's billing_error: like bad credentials, the operator's to fix.
            402 => ErrorClass::Auth,
            _ if is_context_length(&message) => ErrorClass::ContextLength,
            _ => ErrorClass::BadRequest,
        })
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        let chunks = Chunks {
            identity: Identity { created: req.received_at, ..Identity::default() },
            wants_usage: req.client_wants_usage,
        };
        Box::new(Translator::new(chunks, false, req.facts.input_tokens))
    }
}

/// Anthropic's wordings for an input that does not fit: "prompt is too long: N tokens >
/// M maximum", and "input length and `max_tokens` exceed context limit".
fn is_context_length(message: &str) -> bool {
    message.contains("prompt is too long") || message.contains("context limit") || message.contains("context window")
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{deployment, parse, user};
    use super::*;
    use serde_json::json;

    fn in_the_us() -> Deployment {
        let mut d = deployment();
        (d.jurisdiction, d.model) = ("us".into(), "claude-sonnet-4-6".into());
        d
    }

    #[test]
    fn a_us_deployment_asks_for_us_inference_and_its_answer_must_say_so() {
        let req = parse(json!({"model": "fast", "messages": [user(json!("hi"))]}));
        let sent = |d: &Deployment| -> Value {
            serde_json::from_slice(&Anthropic.build(d, &req, &Auth::default()).unwrap().body).unwrap()
        };
        assert_eq!(sent(&in_the_us())["inference_geo"], "us");
        assert!(sent(&deployment()).get("inference_geo").is_none(), "a global deployment leaves it to Anthropic");

        let native = crate::ingress::anthropic::parse(
            json!({"model": "fast", "max_tokens": 10, "inference_geo": "global", "messages": [user(json!("hi"))]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let up = Anthropic.build_native(&in_the_us(), &native, native.native.as_ref().unwrap(), &Auth::default());
        let body: Value = serde_json::from_slice(&up.unwrap().body).unwrap();
        assert_eq!(body["inference_geo"], "us", "the deployment's jurisdiction wins over the client's");

        let answer = |geo: &str| {
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 1, "inference_geo": geo}})
            .to_string()
        };
        assert_eq!(Anthropic.reported_geo(answer("us").as_bytes()), Some("us"));
        assert_eq!(Anthropic.reported_geo(answer("global").as_bytes()), Some("global"));
        assert_eq!(Anthropic.reported_geo(answer("not_available").as_bytes()), Some("not_available"));
        assert_eq!(Anthropic.reported_geo(b"{}"), None);
    }

    #[test]
    fn web_searches_a_server_tool_ran_are_read_with_the_usage() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": "found"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1, "server_tool_use": {"web_search_requests": 2}}});
        let (_, usage) = native_response(body.to_string().into_bytes()).unwrap();
        assert_eq!(usage.unwrap().web_searches, 2);
    }

    #[test]
    fn request_targets_messages_with_anthropic_headers() {
        let req = parse(json!({"model": "fast", "messages": [user(json!("hi"))]}));
        let up = Anthropic
            .build(&deployment(), &req, &Auth { api_key: Some("sk-ant-test".into()), ..Auth::default() })
            .unwrap();
        assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
        assert!(up.headers.contains(&("x-api-key", "sk-ant-test".into())));
        assert!(up.headers.contains(&("anthropic-version", "2023-06-01".into())));
        assert!(up.headers.contains(&("content-type", "application/json".into())));
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            body,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 4096,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
        let keyless = Anthropic.build(&deployment(), &req, &Auth::default()).unwrap();
        assert!(!keyless.headers.iter().any(|(k, _)| *k == "x-api-key"));
    }

    #[test]
    fn classification() {
        let error = |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});
        let c = |status, body: Value| Anthropic.classify(status, body.to_string().as_bytes());
        let plain = |status| Anthropic.classify(status, b"");
        assert_eq!(c(429, error("rate_limit_error", "slow down")), ErrorClass::RateLimited);
        assert_eq!(c(529, error("overloaded_error", "Overloaded")), ErrorClass::Overloaded);
        assert_eq!(c(500, error("overloaded_error", "Overloaded")), ErrorClass::Overloaded);
        assert_eq!(plain(529), ErrorClass::Overloaded);
        assert_eq!(plain(503), ErrorClass::Overloaded);
        assert_eq!(c(500, error("api_error", "Internal server error")), ErrorClass::Server);
        assert_eq!(plain(502), ErrorClass::Server);
        assert_eq!(plain(504), ErrorClass::Timeout);
        assert_eq!(c(401, error("authentication_error", "invalid x-api-key")), ErrorClass::Auth);
        assert_eq!(c(403, error("permission_error", "no")), ErrorClass::Auth);
        assert_eq!(c(404, error("not_found_error", "model: x")), ErrorClass::NotFound);
        assert_eq!(c(413, error("request_too_large", "Request exceeds the maximum size")), ErrorClass::BadRequest);
        let too_long = error("invalid_request_error", "prompt is too long: 209353 tokens > 199999 maximum");
        assert_eq!(c(400, too_long), ErrorClass::ContextLength);
        let over_limit = error(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, decrease input length or `max_tokens` and try again",
        );
        assert_eq!(c(400, over_limit), ErrorClass::ContextLength);
        assert_eq!(c(400, error("invalid_request_error", "max_tokens: Field required")), ErrorClass::BadRequest);
        assert_eq!(plain(400), ErrorClass::BadRequest);
    }
}

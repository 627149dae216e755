//! Google's Gemini API (`https://generativelanguage.googleapis.com/v1beta`), and the
//! `GenerateContent` format it shares with Gemini on Vertex AI ([`super::vertex`]).
//!
//! Per the Gemini API reference (ai.google.dev/api): `POST {base}/models/{model}:
//! generateContent`, and `:streamGenerateContent?alt=sse` for a stream; the key in
//! `x-goog-api-key` ("Authentication"). Errors are `{"error": {code, message, status}}`
//! with Google's canonical statuses. The translation is in `request`, `response` and
//! `stream`; `call_id` carries Gemini 3's thought signatures through OpenAI tool call ids.

mod call_id;
mod request;
mod response;
mod stream;

pub(super) use request::request_body;
pub(super) use response::response;
pub(super) use stream::stream;

use super::canonical::Cx;
use super::{Auth, Provider, StreamTranslator, UpstreamRequest};
use crate::config::Deployment;
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use serde_json::Value;

pub struct Gemini;

impl Provider for Gemini {
    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = request_body(&Cx { provider: "gemini", deployment: &d.id }, req)?;
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(key) = &auth.api_key {
            headers.push(("x-goog-api-key", key.clone()));
        }
        Ok(UpstreamRequest { url: format!("{}/models/{}:{}", d.base_url, d.model, method(req)), headers, body })
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        response(req, &body)
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        classify(status, body)
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        stream(req)
    }
}

/// The operation (and for streams, the SSE framing) the path ends with.
pub(super) fn method(req: &ChatRequest) -> &'static str {
    if req.stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    }
}

pub(super) fn classify(status: u16, body: &[u8]) -> ErrorClass {
    // Read as a `Value`: a typed parse of a cold path costs its own deserializer.
    let error = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let message = error["error"]["message"].as_str().unwrap_or_default().to_ascii_lowercase();
    ErrorClass::of_status(status, || match status {
        // A bad key is INVALID_ARGUMENT ("API key not valid. Please pass a valid API key.").
        400 if message.contains("api key") => ErrorClass::Auth,
        // "The input token count (N) exceeds the maximum number of tokens allowed (M)."
        _ if message.contains("token count") || message.contains("maximum number of tokens") => {
            ErrorClass::ContextLength
        }
        _ => ErrorClass::BadRequest,
    })
}

#[cfg(test)]
pub(super) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{auth, deployment, deployment_json, parse, user};
    use super::*;
    use serde_json::json;

    #[test]
    fn request_targets_generate_content_with_the_key_header() {
        let up =
            Gemini.build(&deployment(), &parse(json!({"model": "fast", "messages": [user(json!("hi"))]})), &auth());
        let up = up.unwrap();
        assert_eq!(up.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
        assert!(up.headers.contains(&("x-goog-api-key", "AIzaTESTKEY0123456789".into())));
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
        let streamed = Gemini.build(
            &deployment(),
            &parse(json!({"model": "m", "stream": true, "messages": [user(json!("hi"))]})),
            &auth(),
        );
        assert!(streamed.unwrap().url.ends_with("/models/gemini-2.5-flash:streamGenerateContent?alt=sse"));
    }

    #[test]
    fn classification() {
        let error = |code: u16, status: &str, message: &str| {
            json!({"error": {"code": code, "status": status, "message": message}}).to_string().into_bytes()
        };
        assert_eq!(
            classify(429, &error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted")),
            ErrorClass::RateLimited
        );
        assert_eq!(classify(503, &error(503, "UNAVAILABLE", "The model is overloaded.")), ErrorClass::Overloaded);
        assert_eq!(classify(504, &error(504, "DEADLINE_EXCEEDED", "Deadline exceeded")), ErrorClass::Timeout);
        assert_eq!(classify(500, &error(500, "INTERNAL", "An internal error has occurred.")), ErrorClass::Server);
        assert_eq!(
            classify(400, &error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")),
            ErrorClass::Auth
        );
        assert_eq!(classify(403, &error(403, "PERMISSION_DENIED", "denied")), ErrorClass::Auth);
        assert_eq!(classify(404, &error(404, "NOT_FOUND", "models/x is not found")), ErrorClass::NotFound);
        let too_long = error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        );
        assert_eq!(classify(400, &too_long), ErrorClass::ContextLength);
        assert_eq!(
            classify(400, &error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")),
            ErrorClass::BadRequest
        );
        assert_eq!(classify(400, b"not json"), ErrorClass::BadRequest);
    }

    #[test]
    fn the_gemini_api_is_global_only() {
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
            let mut d = deployment_json();
            edit(&mut d);
            config["deployments"].as_array_mut().unwrap().push(d);
            crate::config::parse(&config.to_string()).map(drop)
        };
        assert_eq!(with(&|_| {}), Ok(()));
        let err = with(&|d| d["jurisdiction"] = json!("eu")).unwrap_err();
        assert!(err.starts_with("deployment `gemini-global`: the Gemini API has no region control"), "{err}");
        assert!(err.contains("must be `global`, not `eu`"), "{err}");
        let err = with(&|d| drop(d.as_object_mut().unwrap().remove("api_key_secret"))).unwrap_err();
        assert!(err.contains("need `api_key_secret`"), "{err}");
        assert!(with(&|d| d["model"] = json!("models/gemini-2.5-flash")).unwrap_err().contains("bare model name"));
    }
}

//! Google Cloud Vertex AI: Gemini models (Google's `GenerateContent` format, shared with
//! [`super::gemini`]) and Claude models (Anthropic's Messages format, shared with
//! [`super::anthropic`]), both authenticated with a service account's OAuth access token.
//!
//! Wire format per Google Cloud's "Generate content with the Gemini API in Vertex AI"
//! (`…/publishers/google/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`)
//! and Anthropic's "Claude on Vertex AI" (`…/publishers/anthropic/models/{model}:rawPredict`,
//! `:streamRawPredict`, `anthropic_version` in the body; "Count tokens for Claude models"
//! at `count-tokens:rawPredict`). Where each endpoint processes is config validation's
//! business (`config::provider::vertex`).

pub mod oauth;

use super::anthropic::{self, Anthropic};
use super::canonical::Cx;
use super::gemini;
use super::{Auth, CountsTokens, Provider, SpeaksMessages, StreamTranslator, UpstreamRequest};
use crate::config::{Deployment, ProviderSettings};
use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use serde_json::{Map, Value};

/// Gemini models on Vertex AI.
pub struct VertexGemini;

/// Claude models on Vertex AI.
pub struct VertexClaude;

const PROVIDER: &str = "vertex";

/// The Messages API version Anthropic's models on Vertex AI take, in the body.
const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

fn url(d: &Deployment, publisher: &str, method: &str) -> String {
    model_url(d, publisher, &d.model, method)
}

fn model_url(d: &Deployment, publisher: &str, model: &str, method: &str) -> String {
    let (project, location) = match &d.provider {
        ProviderSettings::Vertex(v) => (v.project.as_str(), v.location.as_str()),
        _ => ("", ""),
    };
    format!("{}/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}", d.base_url)
}

fn headers(auth: &Auth) -> Vec<(&'static str, String)> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(token) = &auth.bearer_token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    headers
}

impl Provider for VertexGemini {
    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = gemini::request_body(&Cx { provider: PROVIDER, deployment: &d.id }, req)?;
        Ok(UpstreamRequest { url: url(d, "google", gemini::method(req)), headers: headers(auth), body })
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        gemini::response(req, &body)
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        gemini::classify(status, body)
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        gemini::stream(req)
    }
}

/// A Messages body as Claude on Vertex AI takes it: the path names the model, and the
/// version goes in the body rather than a header.
fn claude_request(d: &Deployment, req: &ChatRequest, mut body: Map<String, Value>, auth: &Auth) -> UpstreamRequest {
    body.remove("model");
    body.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
    let method = if req.stream { "streamRawPredict" } else { "rawPredict" };
    let body = serde_json::to_vec(&body).expect("a JSON map serialises");
    UpstreamRequest { url: url(d, "anthropic", method), headers: headers(auth), body }
}

impl Provider for VertexClaude {
    fn messages(&self, _d: &Deployment) -> Option<&'static dyn SpeaksMessages> {
        Some(&VertexClaude)
    }

    fn counts(&self, _d: &Deployment) -> Option<&'static dyn CountsTokens> {
        Some(&VertexClaude)
    }

    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = anthropic::request_body(&Cx { provider: PROVIDER, deployment: &d.id }, &d.model, req)?;
        Ok(claude_request(d, req, body, auth))
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        Anthropic.response(req, body)
    }

    /// Anthropic's errors pass through; Vertex's own (quota, permissions) use the same
    /// statuses.
    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        Anthropic.classify(status, body)
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        Anthropic.stream(req)
    }
}

impl SpeaksMessages for VertexClaude {
    fn build_native(
        &self,
        d: &Deployment,
        req: &ChatRequest,
        native: &NativeMessages,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut up = claude_request(d, req, native.body.clone(), auth);
        up.headers.extend(native.beta.clone().map(|beta| ("anthropic-beta", beta)));
        Ok(up)
    }
}

/// The path names the endpoint, not the model: the body does, as in Anthropic's API.
impl CountsTokens for VertexClaude {
    fn count_request(
        &self,
        d: &Deployment,
        body: &Map<String, Value>,
        beta: Option<&str>,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut body = body.clone();
        body.insert("model".into(), d.model.clone().into());
        body.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
        let mut headers = headers(auth);
        headers.extend(beta.map(|beta| ("anthropic-beta", beta.to_string())));
        let body = serde_json::to_vec(&body).expect("a JSON map serialises");
        Ok(UpstreamRequest { url: model_url(d, "anthropic", "count-tokens", "rawPredict"), headers, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::gemini::test_support::{answer, data, parse, run_with, user, PROMPT_ONLY_THEN_CUT, RECORDED};
    use crate::providers::{for_deployment, StreamEnd};
    use crate::util::valueread::FromValue;
    use serde_json::{json, Value};

    fn deployment_json(publisher: &str) -> Value {
        json!({
            "id": "vertex-eu", "provider": "vertex", "model": "gemini-2.5-flash",
            "base_url": "https://aiplatform.eu.rep.googleapis.com", "gcp_project": "acme-prod", "gcp_location": "eu",
            "vertex_publisher": publisher, "gcp_service_account_secret": "GCP_SA_KEY",
            "jurisdiction": "eu", "region": "eu", "price": {"input": "1", "output": "1"}
        })
    }

    fn deployment(publisher: &str) -> Deployment {
        Deployment::read(&deployment_json(publisher)).unwrap()
    }

    fn auth() -> Auth {
        Auth { bearer_token: Some("ya29.test-access-token".into()), ..Auth::default() }
    }

    #[test]
    fn gemini_requests_target_the_google_publisher_with_the_access_token() {
        let d = deployment("google");
        let provider = for_deployment(&d);
        let up =
            provider.build(&d, &parse(json!({"model": "fast", "messages": [user(json!("hi"))]})), &auth()).unwrap();
        assert_eq!(
            up.url,
            "https://aiplatform.eu.rep.googleapis.com/v1/projects/acme-prod/locations/eu/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert!(up.headers.contains(&("authorization", "Bearer ya29.test-access-token".into())));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
        let stream =
            provider.build(&d, &parse(json!({"model": "m", "stream": true, "messages": [user(json!("hi"))]})), &auth());
        assert!(stream
            .unwrap()
            .url
            .ends_with("/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"));
        let refused = provider.build(
            &d,
            &parse(json!({"model": "m", "logprobs": true, "messages": [user(json!("x"))]})),
            &auth(),
        );
        assert!(refused.err().expect("refused").message.contains("provider vertex (deployment `vertex-eu`)"));
    }

    #[test]
    fn gemini_answers_and_streams_translate_as_on_the_gemini_api() {
        let req = parse(json!({"model": "fast", "messages": [user(json!("x"))]}));
        let (body, usage) =
            VertexGemini.response(&req, answer(json!([{"text": "Hi"}]), "STOP").to_string().into_bytes()).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Hi");
        assert_eq!(usage.map(|u| u.cached_input_tokens), Some(100));
        let run = run_with(|r| VertexGemini.stream(r), RECORDED.as_bytes(), false, 7);
        assert_eq!(run.end, StreamEnd::Complete);
        assert_eq!(data(&run.out).last().unwrap(), "[DONE]");
        let quota = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded"}});
        assert_eq!(VertexGemini.classify(429, quota.to_string().as_bytes()), ErrorClass::RateLimited);
    }

    #[test]
    fn claude_requests_use_raw_predict_with_the_vertex_version_and_no_model() {
        let mut d = deployment("anthropic");
        d.model = "claude-sonnet-4-6".into();
        let provider = for_deployment(&d);
        let req = parse(json!({"model": "fast", "max_tokens": 50, "messages": [
            {"role": "system", "content": "Be brief."}, user(json!("hi"))]}));
        let up = provider.build(&d, &req, &auth()).unwrap();
        assert_eq!(
            up.url,
            "https://aiplatform.eu.rep.googleapis.com/v1/projects/acme-prod/locations/eu/publishers/anthropic/models/claude-sonnet-4-6:rawPredict"
        );
        assert!(up.headers.contains(&("authorization", "Bearer ya29.test-access-token".into())));
        assert!(!up.headers.iter().any(|(k, _)| *k == "anthropic-version" || *k == "x-api-key"));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            body,
            json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 50, "system": "Be brief.",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
        let stream = parse(json!({"model": "fast", "stream": true, "messages": [user(json!("hi"))]}));
        let up = provider.build(&d, &stream, &auth()).unwrap();
        assert!(up.url.ends_with("/models/claude-sonnet-4-6:streamRawPredict"), "{}", up.url);
        assert_eq!(serde_json::from_slice::<Value>(&up.body).unwrap()["stream"], true);
        let refused =
            provider.build(&d, &parse(json!({"model": "m", "n": 3, "messages": [user(json!("x"))]})), &auth());
        assert!(refused
            .err()
            .expect("refused")
            .message
            .contains("`n` is not supported by provider vertex (deployment `vertex-eu`)"));
    }

    #[test]
    fn a_messages_request_reaches_claude_as_sent_save_the_model_and_version() {
        let mut d = deployment("anthropic");
        d.model = "claude-sonnet-4-6".into();
        let body = json!({"model": "alias", "max_tokens": 64, "stream": true, "top_k": 5,
            "system": [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}],
            "messages": [user(json!("x"))]});
        let req = crate::ingress::anthropic::parse(body.to_string().as_bytes()).unwrap();
        let mut native = req.native.clone().unwrap();
        native.beta = Some("context-1m-2025-08-07".into());
        let speaks = crate::providers::speaks_messages(&d).expect("Claude on Vertex speaks Messages");
        let up = speaks.build_native(&d, &req, &native, &auth()).unwrap();
        assert!(up.url.ends_with("/models/claude-sonnet-4-6:streamRawPredict"), "{}", up.url);
        assert!(up.headers.contains(&("anthropic-beta", "context-1m-2025-08-07".into())));
        let mut expected = body;
        expected.as_object_mut().unwrap().remove("model");
        expected["anthropic_version"] = json!("vertex-2023-10-16");
        assert_eq!(serde_json::from_slice::<Value>(&up.body).unwrap(), expected);
        assert!(crate::providers::speaks_messages(&deployment("google")).is_none());
    }

    #[test]
    fn claude_counts_tokens_at_the_count_endpoint_with_model_and_version_in_the_body() {
        let mut d = deployment("anthropic");
        d.model = "claude-sonnet-4-6".into();
        let body = json!({"model": "alias", "system": "Be brief.", "messages": [user(json!("x"))]});
        let counter = crate::providers::counts_tokens(&d).expect("Claude on Vertex counts tokens");
        let up = counter.count_request(&d, body.as_object().unwrap(), Some("context-1m-2025-08-07"), &auth()).unwrap();
        assert_eq!(
            up.url,
            "https://aiplatform.eu.rep.googleapis.com/v1/projects/acme-prod/locations/eu/publishers/anthropic/models/count-tokens:rawPredict"
        );
        assert!(up.headers.contains(&("authorization", "Bearer ya29.test-access-token".into())));
        assert!(up.headers.contains(&("anthropic-beta", "context-1m-2025-08-07".into())));
        let mut expected = body;
        expected["model"] = json!("claude-sonnet-4-6");
        expected["anthropic_version"] = json!("vertex-2023-10-16");
        assert_eq!(serde_json::from_slice::<Value>(&up.body).unwrap(), expected);
        assert!(crate::providers::counts_tokens(&deployment("google")).is_none());
    }

    #[test]
    fn claude_answers_are_anthropic_messages() {
        let req = parse(json!({"model": "fast", "messages": [user(json!("x"))]}));
        let message = json!({"id": "msg_vrtx_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 3}});
        let (body, usage) = VertexClaude.response(&req, message.to_string().into_bytes()).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["id"], "msg_vrtx_01");
        assert_eq!(body["choices"][0]["message"]["content"], "Hello");
        assert_eq!(usage.map(|u| (u.input_tokens, u.output_tokens)), Some((10, 3)));
        let overloaded = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(VertexClaude.classify(529, overloaded.to_string().as_bytes()), ErrorClass::Overloaded);
    }

    fn config_with(edit: impl FnOnce(&mut Value)) -> Result<(), String> {
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        let mut d = deployment_json("google");
        edit(&mut d);
        config["deployments"].as_array_mut().unwrap().push(d);
        crate::config::parse(&config.to_string()).map(drop)
    }

    #[test]
    fn the_endpoint_decides_the_jurisdiction() {
        let with = |host: &str, location: &str, jurisdiction: &str| {
            config_with(|d| {
                d["base_url"] = json!(format!("https://{host}"));
                d["gcp_location"] = json!(location);
                d["jurisdiction"] = json!(jurisdiction);
            })
        };
        for (host, location, jurisdiction) in [
            ("aiplatform.eu.rep.googleapis.com", "eu", "eu"),
            ("aiplatform.us.rep.googleapis.com", "us", "us"),
            ("aiplatform.googleapis.com", "global", "global"),
            ("europe-west4-aiplatform.googleapis.com", "europe-west4", "global"),
            ("us-east5-aiplatform.googleapis.com", "us-east5", "global"),
        ] {
            assert_eq!(with(host, location, jurisdiction), Ok(()), "{host} {location} {jurisdiction}");
        }
        for (host, location, jurisdiction, needle) in [
            (
                "aiplatform.googleapis.com",
                "global",
                "eu",
                "any Google Cloud region, so the jurisdiction must be `global`, not `eu`",
            ),
            (
                "aiplatform.eu.rep.googleapis.com",
                "eu",
                "global",
                "within the EU, so the jurisdiction must be `eu`, not `global`",
            ),
            ("aiplatform.eu.rep.googleapis.com", "eu", "us", "must be `eu`, not `us`"),
            ("aiplatform.us.rep.googleapis.com", "us", "eu", "must be `us`, not `eu`"),
            ("europe-west4-aiplatform.googleapis.com", "europe-west4", "eu", "regional endpoint"),
            ("europe-west4-aiplatform.googleapis.com", "europe-west4", "eu", "must be `global`, not `eu`"),
            (
                "aiplatform.eu.rep.googleapis.com",
                "europe-west4",
                "eu",
                "serves location `eu`, not gcp_location `europe-west4`",
            ),
            ("aiplatform.googleapis.com", "eu", "eu", "serves location `global`"),
            ("europe-west4-aiplatform.googleapis.com", "europe-west1", "global", "serves location `europe-west4`"),
            ("generativelanguage.googleapis.com", "eu", "eu", "not a Vertex AI endpoint"),
        ] {
            let err = with(host, location, jurisdiction).unwrap_err();
            assert!(err.starts_with("deployment `vertex-eu`: "), "{err}");
            assert!(err.contains(needle), "{host} {location} {jurisdiction}: `{err}` should mention `{needle}`");
        }
        // A test server or proxy: judged by the location.
        let local = |location: &str, jurisdiction: &str| {
            config_with(|d| {
                d["base_url"] = json!("http://127.0.0.1:9/vertex");
                d["gcp_location"] = json!(location);
                d["jurisdiction"] = json!(jurisdiction);
            })
        };
        assert_eq!(local("eu", "eu"), Ok(()));
        assert!(local("europe-west4", "eu").unwrap_err().contains("must be `global`"));
    }

    #[test]
    fn project_location_publisher_and_service_account_are_required() {
        let rejects = |edit: &dyn Fn(&mut Value), needle: &str| {
            let err = config_with(edit).unwrap_err();
            assert!(err.contains(needle), "`{err}` should mention `{needle}`");
        };
        rejects(&|d| drop(d.as_object_mut().unwrap().remove("gcp_project")), "need `gcp_project`");
        rejects(&|d| d["gcp_project"] = json!("Acme Prod"), "gcp_project `Acme Prod`");
        rejects(&|d| drop(d.as_object_mut().unwrap().remove("gcp_location")), "need `gcp_location`");
        rejects(&|d| drop(d.as_object_mut().unwrap().remove("vertex_publisher")), "need `vertex_publisher`");
        assert!(config_with(|d| d["vertex_publisher"] = json!("meta")).unwrap_err().contains("unknown variant `meta`"));
        rejects(
            &|d| drop(d.as_object_mut().unwrap().remove("gcp_service_account_secret")),
            "gcp_service_account_secret",
        );
        rejects(&|d| d["api_key_secret"] = json!("KEY"), "not `api_key_secret`");
        rejects(&|d| d["gcp_service_account_secret"] = json!("bad name"), "gcp_service_account_secret `bad name`");
        rejects(&|d| d["model"] = json!("publishers/google/models/x"), "bare model id");
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        config["deployments"][0]["gcp_project"] = json!("acme");
        let err = crate::config::parse(&config.to_string()).map(drop).unwrap_err();
        assert!(err.contains("deployment `eu-a` (openai): unknown field `gcp_project`"), "{err}");
    }

    #[test]
    fn cut_streams_are_billed_for_what_reached_the_client_with_either_publisher() {
        let gemini = run_with(|r| VertexGemini.stream(r), PROMPT_ONLY_THEN_CUT.as_bytes(), false, 0);
        assert_eq!(gemini.end, StreamEnd::Cut);
        assert_eq!((gemini.consumed.billed.input_tokens, gemini.consumed.billed.output_tokens), (30, 10));
        // Claude: message_start says 1 output token; 40 characters reach the client.
        let claude = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_v\",\"model\":\"claude-sonnet-4-6\",\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"0123456789abcdefghij0123456789abcdefghij\"}}\n\n",
        );
        let mut d = deployment("anthropic");
        d.model = "claude-sonnet-4-6".into();
        let req = parse(json!({"model": "fast", "stream": true, "messages": [user(json!("x"))]}));
        let mut translated = for_deployment(&d).stream(&req);
        let mut native = VertexClaude.native_stream(&req);
        for t in [&mut translated, &mut native] {
            t.push(claude.as_bytes(), &mut Vec::new());
            assert_eq!(t.end(), StreamEnd::Cut);
            let c = t.consumed();
            assert_eq!((c.billed.input_tokens, c.billed.output_tokens, c.reported.output_tokens), (30, 10, 1));
        }
    }
}

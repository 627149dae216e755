//! The pass-through for a Messages client: its request (a `/v1/messages` body, or one to
//! count its tokens) is sent as it came but for the deployment's model, and the answer or
//! stream goes back as it came, read only for what the gateway needs of it.

use super::response::WireMessage;
use super::stream::Translator;
use super::{headers, Anthropic};
use crate::config::provider::anthropic::inference_geo;
use crate::config::Deployment;
use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::{Consumed, Usage};
use crate::providers::canonical::Chunks;
use crate::providers::{Auth, CountsTokens, SpeaksMessages, StreamEnd, StreamTranslator, UpstreamRequest};
use serde_json::{Map, Value};

/// A client's Messages body, sent to `{base}{path}` as it came but for the deployment's
/// model, with the client's betas.
fn as_sent(d: &Deployment, path: &str, body: &Map<String, Value>, beta: Option<&str>, auth: &Auth) -> UpstreamRequest {
    let mut body = body.clone();
    body.insert("model".into(), d.model.clone().into());
    // The deployment's jurisdiction decides where a Messages request may run, not the client.
    if let Some(geo) = inference_geo(d).filter(|_| path == "/messages") {
        body.insert("inference_geo".into(), geo.into());
    }
    let mut headers = headers(auth);
    headers.extend(beta.map(|beta| ("anthropic-beta", beta.to_string())));
    let body = serde_json::to_vec(&body).expect("a JSON map serialises");
    UpstreamRequest { url: format!("{}{path}", d.base_url), headers, body }
}

impl SpeaksMessages for Anthropic {
    fn build_native(
        &self,
        d: &Deployment,
        _: &ChatRequest,
        native: &NativeMessages,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        Ok(as_sent(d, "/messages", &native.body, native.beta.as_deref(), auth))
    }
}

impl CountsTokens for Anthropic {
    fn count_request(
        &self,
        d: &Deployment,
        body: &Map<String, Value>,
        beta: Option<&str>,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        Ok(as_sent(d, "/messages/count_tokens", body, beta, auth))
    }
}

/// Anthropic's token count (`{"input_tokens": n}`), as it came, once read as one.
pub fn token_count(body: Vec<u8>) -> Result<Vec<u8>, ErrorClass> {
    let count: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::Server)?;
    count.get("input_tokens").and_then(Value::as_u64).ok_or(ErrorClass::Server)?;
    Ok(body)
}

/// A Messages answer for a Messages client: as it came, once it has been read as one.
pub fn native_response(body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
    let message = serde_json::from_slice::<WireMessage>(&body).map_err(|_| ErrorClass::Server)?;
    Ok((body, Some(message.usage.total())))
}

/// A Messages stream for a Messages client: every byte goes on as it came. The events are
/// read only for what the gateway needs of them: the first content (any block's delta,
/// thinking included), the usage and how the stream ended.
pub fn native_stream(req: &ChatRequest) -> Box<dyn StreamTranslator> {
    let reader = Translator::new(Chunks::default(), true, req.facts.input_tokens);
    Box::new(Native { reader, unused: Vec::new() })
}

struct Native {
    reader: Translator,
    /// What the reader translates, for no one.
    unused: Vec<u8>,
}

impl StreamTranslator for Native {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.reader.push(bytes, &mut self.unused);
        self.unused.clear();
        out.extend_from_slice(bytes);
    }

    fn started(&self) -> bool {
        self.reader.started()
    }

    fn end(&mut self) -> StreamEnd {
        self.reader.end()
    }

    fn consumed(&self) -> Consumed {
        self.reader.consumed()
    }

    fn reported_geo(&self) -> Option<&'static str> {
        self.reader.reported_geo()
    }

    fn cut_event(&self, e: &GatewayError) -> Vec<u8> {
        crate::wire::anthropic::stream_error_event(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::anthropic::test_support::{deployment, parse, user, RECORDED};
    use crate::providers::Provider;
    use serde_json::json;

    /// A stream with extended thinking, as Anthropic sends it when `thinking` is enabled.
    const THINKING: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_03\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":40,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Two and two\\u2026\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Four.\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    /// Pushes `input` to a native stream in two pieces; the output, and whether it had
    /// started after the first.
    fn native_run(input: &str, cut: usize) -> (Box<dyn StreamTranslator>, Vec<u8>, bool) {
        let mut t = native_stream(&parse(json!({"model": "m", "messages": [user(json!("x"))], "stream": true})));
        let mut out = Vec::new();
        t.push(&input.as_bytes()[..cut], &mut out);
        let started = t.started();
        t.push(&input.as_bytes()[cut..], &mut out);
        (t, out, started)
    }

    #[test]
    fn a_native_stream_passes_every_byte_and_reads_what_the_gateway_needs() {
        for input in [RECORDED, THINKING] {
            let (mut whole, out, _) = native_run(input, 0);
            assert_eq!(out, input.as_bytes());
            let (end, consumed) = (whole.end(), whole.consumed());
            assert_eq!(end, StreamEnd::Complete);
            for cut in 1..=input.len() {
                let (mut t, out, _) = native_run(input, cut);
                assert_eq!(out, input.as_bytes(), "cut {cut}");
                assert_eq!((t.end(), t.consumed()), (end, consumed), "cut {cut}");
            }
        }
        let consumed = native_run(THINKING, 0).0.consumed();
        assert_eq!(
            consumed,
            Consumed::reported(Usage {
                input_tokens: 52,
                output_tokens: 30,
                cached_input_tokens: 0,
                cache_write_tokens: 40,
                web_searches: 0,
            })
        );
    }

    #[test]
    fn a_native_stream_starts_at_its_first_delta_thinking_included() {
        let first_delta = THINKING.find("\"thinking_delta\"").unwrap();
        let event_end = first_delta + THINKING[first_delta..].find("\n\n").unwrap() + 2;
        assert!(!native_run(THINKING, event_end - 1).2, "not before the thinking delta is whole");
        assert!(native_run(THINKING, event_end).2, "the thinking is content for a Messages client");
        // A translated stream has nothing to show an OpenAI client until the text.
        let mut t = Anthropic.stream(&parse(json!({"model": "m", "messages": [user(json!("x"))], "stream": true})));
        t.push(&THINKING.as_bytes()[..event_end], &mut Vec::new());
        assert!(!t.started());
    }

    #[test]
    fn a_native_stream_cut_by_the_gateway_ends_with_an_anthropic_error_event() {
        let cut = THINKING.find("event: message_delta").unwrap();
        let (mut t, _, _) = native_run(&THINKING[..cut], 0);
        assert_eq!(t.end(), StreamEnd::Cut);
        let e = GatewayError::new(502, "upstream_error", "stream_cut", "The stream ended early.");
        let event = String::from_utf8(t.cut_event(&e)).unwrap();
        assert!(event.starts_with("event: error\ndata: {"), "{event}");
        let data: Value = serde_json::from_str(event.trim_end().split_once("data: ").unwrap().1).unwrap();
        assert_eq!(
            data,
            json!({"type": "error", "error": {"type": "api_error", "message": "The stream ended early."}})
        );
        // An error event from Anthropic itself passes as it came and ends the stream as failed.
        let failing = format!("{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n", &THINKING[..cut]);
        let (mut t, out, _) = native_run(&failing, 0);
        assert_eq!((out, t.end()), (failing.into_bytes(), StreamEnd::Failed));
    }

    #[test]
    fn a_native_answer_passes_as_it_came_with_its_usage() {
        let answer = json!({"id": "msg_04", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": "text", "text": "Hi"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 7, "output_tokens": 3}});
        let bytes = answer.to_string().into_bytes();
        let (body, usage) = native_response(bytes.clone()).unwrap();
        assert_eq!(body, bytes);
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 3,
                cached_input_tokens: 7,
                cache_write_tokens: 0,
                web_searches: 0
            })
        );
        assert_eq!(native_response(b"{\"type\":\"error\"}".to_vec()), Err(ErrorClass::Server));
    }

    #[test]
    fn a_native_request_is_sent_as_it_came_with_the_deployments_model_and_the_clients_betas() {
        let body = json!({"model": "alias", "max_tokens": 64, "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "system": [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [user(json!("x"))]});
        let req = crate::ingress::anthropic::parse(body.to_string().as_bytes()).unwrap();
        let mut native = req.native.clone().unwrap();
        native.beta = Some("extended-cache-ttl-2025-04-11".into());
        let auth = Auth { api_key: Some("sk-ant-test".into()), ..Auth::default() };
        let up = Anthropic.build_native(&deployment(), &req, &native, &auth).unwrap();
        assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        let mut expected = body;
        expected["model"] = json!("claude-sonnet-4-5");
        assert_eq!(sent, expected);
        assert!(up.headers.contains(&("anthropic-beta", "extended-cache-ttl-2025-04-11".into())));
        assert!(up.headers.contains(&("x-api-key", "sk-ant-test".into())));
        native.beta = None;
        let up = Anthropic.build_native(&deployment(), &req, &native, &auth).unwrap();
        assert!(up.headers.iter().all(|(name, _)| *name != "anthropic-beta"));
    }

    #[test]
    fn a_cut_native_stream_is_billed_for_what_reached_the_client_thinking_included() {
        // Cut after the thinking ("Two and two…") and the text ("Four."): 17 characters
        // reached the client, 5 tokens; message_start said 1. The signature is not output.
        let cut = THINKING.find("event: message_delta").unwrap();
        let (t, _, _) = native_run(&THINKING[..cut], 0);
        let consumed = t.consumed();
        assert_eq!((consumed.billed.input_tokens, consumed.billed.output_tokens), (52, 5));
        assert_eq!((consumed.reported.output_tokens, consumed.billed.cache_write_tokens), (1, 40));
    }
}

//! Claude through InvokeModel: a `/v1/messages` request as the client sent it
//! ([`crate::providers::SpeaksMessages`]), its stream, and token counts. Per the Bedrock user
//! guide ("Anthropic Claude Messages API"): `/invoke` and `/invoke-with-response-stream` take
//! Anthropic's body, the model in the path; the stream's `chunk` events carry Anthropic's
//! events in base64.

use super::eventstream::{Decoder, Message};
use super::{authorized, model_url, payload, sigv4, Bedrock, WireError};
use crate::config::provider::bedrock::PROFILES;
use crate::config::Deployment;
use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Consumed;
use crate::providers::{anthropic, Auth, CountsTokens, SpeaksMessages, StreamEnd, StreamTranslator, UpstreamRequest};
use crate::util::base64;
use crate::wire::anthropic::write_error_event;
use serde_json::{json, Map, Value};

/// The version of Anthropic's Messages API that Claude on Bedrock takes, in the body.
const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Whether the deployment's model is one of Anthropic's (a model id, a profile id or an
/// ARN ending in either), which InvokeModel takes Messages requests for.
pub fn is_claude(d: &Deployment) -> bool {
    foundation_id(d).starts_with("anthropic.")
}

/// The foundation model's id in a deployment's model: an ARN's last part, an inference
/// profile's without its prefix.
fn foundation_id(d: &Deployment) -> &str {
    let id = d.model.rsplit('/').next().unwrap_or_default();
    PROFILES.iter().find_map(|(prefix, _)| id.strip_prefix(prefix)).unwrap_or(id)
}

impl SpeaksMessages for Bedrock {
    fn build_native(
        &self,
        d: &Deployment,
        req: &ChatRequest,
        native: &NativeMessages,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body =
            serde_json::to_vec(&invoke_body(&native.body, native.beta.as_deref())).expect("a JSON map serialises");
        let operation = if req.stream { "invoke-with-response-stream" } else { "invoke" };
        authorized(d, model_url(d, operation), body, auth)
    }

    fn native_stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        Box::new(NativeStream {
            frames: Decoder::new(),
            events: anthropic::native_stream(req),
            sse: Vec::new(),
            corrupt: false,
        })
    }
}

/// A Messages body as InvokeModel takes it for Claude. The path names the model, and the
/// operation says whether to stream. InvokeModel refuses `metadata`, whose end-user id
/// Bedrock has no field for: it is left out, as Converse requests leave out OpenAI's
/// `user`. Betas go in the body.
fn invoke_body(messages: &Map<String, Value>, beta: Option<&str>) -> Map<String, Value> {
    let mut body = messages.clone();
    body.remove("model");
    body.remove("stream");
    body.remove("metadata");
    body.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
    if let Some(beta) = beta {
        let betas: Vec<Value> = beta.split(',').map(str::trim).filter(|b| !b.is_empty()).map(|b| b.into()).collect();
        body.insert("anthropic_beta".into(), betas.into());
    }
    body
}

/// CountTokens (`POST /model/{modelId}/count-tokens`, "CountTokens" in the Bedrock
/// Runtime API reference) counts the InvokeModel body it is given, base64 in
/// `input.invokeModel.body`. It takes a foundation model's own id only, not an inference
/// profile's: a profile's `eu.`-style prefix is dropped, which changes where nothing is
/// processed, since counting runs no model; the request still goes to the deployment's
/// regional endpoint. The body must be a valid InvokeModel body, so it gets a
/// `max_tokens` (which no count depends on) above any thinking budget.
impl CountsTokens for Bedrock {
    fn count_request(
        &self,
        d: &Deployment,
        body: &Map<String, Value>,
        beta: Option<&str>,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut invoke = invoke_body(body, beta);
        if !invoke.contains_key("max_tokens") {
            let budget = invoke.get("thinking").and_then(|t| t.get("budget_tokens")).and_then(Value::as_u64);
            invoke.insert("max_tokens".into(), (budget.unwrap_or(0) + 1).into());
        }
        let invoke = serde_json::to_vec(&invoke).expect("a JSON map serialises");
        let body = json!({"input": {"invokeModel": {"body": base64::standard(&invoke)}}});
        let url = format!("{}/model/{}/count-tokens", d.base_url, sigv4::encode_path_segment(foundation_id(d)));
        authorized(d, url, body.to_string().into_bytes(), auth)
    }

    /// `{"inputTokens": n}` becomes Anthropic's `{"input_tokens": n}`.
    fn count_answer(&self, body: Vec<u8>) -> Result<Vec<u8>, ErrorClass> {
        let count: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::Server)?;
        let n = count.get("inputTokens").and_then(Value::as_u64).ok_or(ErrorClass::Server)?;
        Ok(json!({"input_tokens": n}).to_string().into_bytes())
    }
}

/// InvokeModel's stream for a Messages client: each `chunk` event's Anthropic event goes
/// on as Anthropic's SSE would carry it; an exception becomes Anthropic's `error` event.
struct NativeStream {
    frames: Decoder,
    /// Reads and passes on the events, as for Anthropic's own stream.
    events: Box<dyn StreamTranslator>,
    /// The SSE made from the frames of one push (one buffer, reused).
    sse: Vec<u8>,
    corrupt: bool,
}

impl StreamTranslator for NativeStream {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut sse = std::mem::take(&mut self.sse);
        sse.clear();
        let decoded = self.frames.push(bytes, |message| native_event(&message, &mut sse));
        if let (Err(e), false) = (decoded, self.corrupt) {
            self.corrupt = true;
            write_error_event(&mut sse, "api_error", &format!("The provider's event stream is corrupt: {e}."));
        }
        self.events.push(&sse, out);
        self.sse = sse;
    }

    fn started(&self) -> bool {
        self.events.started()
    }

    fn end(&mut self) -> StreamEnd {
        match self.events.end() {
            StreamEnd::Complete if self.frames.has_partial() => StreamEnd::Cut,
            end => end,
        }
    }

    /// Anthropic's events decide: a frame left unfinished after `message_stop` does not
    /// change what the complete answer consumed.
    fn consumed(&self) -> Consumed {
        self.events.consumed()
    }

    fn cut_event(&self, e: &GatewayError) -> Vec<u8> {
        self.events.cut_event(e)
    }
}

/// One InvokeModel stream message as Anthropic's SSE.
fn native_event(message: &Message<'_>, sse: &mut Vec<u8>) {
    match (message.message_type(), message.event_type()) {
        (Some("exception"), _) => {
            let text = payload::<WireError>(message).map(|e| e.message).unwrap_or_default();
            let kind = match message.exception_type().unwrap_or_default() {
                "throttlingException" => "rate_limit_error",
                "serviceUnavailableException" => "overloaded_error",
                "validationException" => "invalid_request_error",
                _ => "api_error",
            };
            write_error_event(sse, kind, &text);
        }
        (Some("error"), _) => write_error_event(sse, "api_error", message.error_message().unwrap_or_default()),
        (_, Some("chunk")) => {
            // `{"bytes": base64}`, and in it an event, whose `type` names it.
            let chunk = payload::<Value>(message);
            let event = chunk.as_ref().and_then(|c| base64::decode(c.get("bytes")?.as_str()?));
            let parsed = event.as_deref().and_then(|e| serde_json::from_slice::<Value>(e).ok());
            match (&event, parsed.as_ref().and_then(|p| p.get("type")?.as_str())) {
                (Some(event), Some(kind)) => {
                    crate::util::sse::write_event(sse, Some(kind), &String::from_utf8_lossy(event))
                }
                _ => write_error_event(sse, "api_error", "The provider sent a stream chunk that is not an event."),
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::bedrock::tests::{deployment, frame, sigv4_auth, MODEL};

    #[test]
    fn only_anthropic_models_take_messages_requests() {
        let with_model = |model: &str| {
            let mut d = deployment();
            d.model = model.into();
            is_claude(&d)
        };
        assert!(with_model(MODEL));
        assert!(with_model("anthropic.claude-sonnet-4-5-20250929-v1:0"));
        assert!(with_model(
            "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
        ));
        assert!(!with_model("eu.meta.llama3-2-3b-instruct-v1:0"));
        assert!(!with_model("mistral.mistral-large-2407-v1:0"));
    }

    #[test]
    fn a_messages_request_is_invoked_as_sent_with_bedrocks_version_and_betas_in_the_body() {
        let body = json!({"model": "alias", "max_tokens": 64, "stream": true, "top_k": 5, "metadata": {"user_id": "u-1"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "system": [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "x"}]});
        let req = crate::ingress::anthropic::parse(body.to_string().as_bytes()).unwrap();
        let mut native = req.native.clone().unwrap();
        native.beta = Some("context-1m-2025-08-07, interleaved-thinking-2025-05-14".into());
        let up = Bedrock.build_native(&deployment(), &req, &native, &sigv4_auth()).unwrap();
        assert_eq!(
            up.url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/eu.anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream"
        );
        assert!(sigv4_signed(&up));
        let mut expected = body;
        let fields = expected.as_object_mut().unwrap();
        fields.remove("model");
        fields.remove("stream");
        fields.remove("metadata");
        fields.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
        fields.insert("anthropic_beta".into(), json!(["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]));
        assert_eq!(serde_json::from_slice::<Value>(&up.body).unwrap(), expected);
    }

    fn sigv4_signed(up: &UpstreamRequest) -> bool {
        up.headers.iter().any(|(name, value)| *name == "authorization" && value.starts_with("AWS4-HMAC-SHA256 "))
    }

    /// The InvokeModel body a CountTokens request carries, decoded.
    fn counted(up: &UpstreamRequest) -> Value {
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        let invoke = crate::util::base64::decode(sent["input"]["invokeModel"]["body"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&invoke).unwrap()
    }

    #[test]
    fn tokens_are_counted_by_the_foundation_model_on_the_invoke_body() {
        let body = json!({"model": "alias", "thinking": {"type": "enabled", "budget_tokens": 2048},
            "system": "Be brief.", "messages": [{"role": "user", "content": "x"}]});
        let counter = crate::providers::counts_tokens(&deployment()).expect("Claude on Bedrock counts tokens");
        let up =
            counter.count_request(&deployment(), body.as_object().unwrap(), Some("b-1,b-2"), &sigv4_auth()).unwrap();
        // The `eu.` profile's foundation model: CountTokens takes no profile.
        assert_eq!(
            up.url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/count-tokens"
        );
        assert!(sigv4_signed(&up));
        let mut expected = body;
        let fields = expected.as_object_mut().unwrap();
        fields.remove("model");
        fields.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
        fields.insert("anthropic_beta".into(), json!(["b-1", "b-2"]));
        fields.insert("max_tokens".into(), json!(2049));
        assert_eq!(counted(&up), expected);
        // A client's own max_tokens stays.
        let own = json!({"model": "alias", "max_tokens": 10, "messages": []});
        let up = counter.count_request(&deployment(), own.as_object().unwrap(), None, &sigv4_auth()).unwrap();
        assert_eq!(counted(&up)["max_tokens"], 10);

        assert_eq!(counter.count_answer(br#"{"inputTokens":42}"#.to_vec()).unwrap(), br#"{"input_tokens":42}"#);
        for wrong in [&br#"{"input_tokens":42}"#[..], b"{}", b"nope"] {
            assert_eq!(counter.count_answer(wrong.to_vec()), Err(ErrorClass::Server));
        }
    }

    /// Anthropic's events as InvokeModel streams them: base64 in `chunk` frames.
    fn invoke_stream(events: &[Value]) -> Vec<u8> {
        let chunk = |event: &Value| {
            let padded = crate::util::base64::standard(event.to_string().as_bytes());
            let headers = [(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")];
            frame(&headers, json!({"bytes": padded}).to_string().as_bytes())
        };
        events.iter().flat_map(chunk).collect()
    }

    fn request() -> ChatRequest {
        let body = json!({"model": "claude", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "x"}]});
        crate::ingress::anthropic::parse(body.to_string().as_bytes()).unwrap()
    }

    fn claude_events() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_bdrk_01", "type": "message", "role": "assistant",
                "model": "claude-3-haiku-20240307", "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello \u{e9}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 9, "outputTokenCount": 4}}),
        ]
    }

    fn as_sse(events: &[Value]) -> String {
        events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect()
    }

    #[test]
    fn an_invoke_stream_reaches_a_messages_client_as_anthropics_events_at_every_split() {
        let events = claude_events();
        let input = invoke_stream(&events);
        for cut in 0..=input.len() {
            let mut t = Bedrock.native_stream(&request());
            let mut out = Vec::new();
            t.push(&input[..cut], &mut out);
            t.push(&input[cut..], &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), as_sse(&events), "cut {cut}");
            assert_eq!(t.end(), StreamEnd::Complete, "cut {cut}");
            let billed = t.consumed().billed;
            assert_eq!(
                (billed.input_tokens, billed.output_tokens, t.consumed().is_estimated()),
                (9, 4, false),
                "cut {cut}"
            );
        }
        // Cut inside a frame: what arrived is passed on, and the stream is cut.
        let mut t = Bedrock.native_stream(&request());
        let mut out = Vec::new();
        t.push(&input[..input.len() - 3], &mut out);
        assert_eq!(t.end(), StreamEnd::Cut);
        assert!(String::from_utf8(t.cut_event(&GatewayError::internal("cut"))).unwrap().starts_with("event: error\n"));
    }

    #[test]
    fn an_exception_mid_stream_is_anthropics_error_event() {
        let events = claude_events();
        let mut input = invoke_stream(&events[..3]);
        let headers = [
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ];
        input.extend(frame(&headers, br#"{"message":"Too many tokens"}"#));
        let mut t = Bedrock.native_stream(&request());
        let mut out = Vec::new();
        t.push(&input, &mut out);
        let out = String::from_utf8(out).unwrap();
        let expected_error =
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many tokens"}});
        assert_eq!(out, format!("{}event: error\ndata: {expected_error}\n\n", as_sse(&events[..3])));
        assert_eq!(t.end(), StreamEnd::Failed);
        // A frame that breaks the framing ends it the same way, once.
        let mut t = Bedrock.native_stream(&request());
        let mut out = Vec::new();
        t.push(&[0, 0, 0, 5, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8], &mut out);
        t.push(b"more", &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("event: error").count(), 1, "{out}");
        assert_eq!(t.end(), StreamEnd::Failed);
    }

    #[test]
    fn a_cut_invoke_stream_is_billed_for_what_reached_the_client() {
        // message_start said 1 output token; "Hello é" (7 characters, 2 tokens) reached the client.
        let events = claude_events();
        let input = invoke_stream(&events[..3]);
        let mut t = Bedrock.native_stream(&request());
        t.push(&input, &mut Vec::new());
        assert_eq!(t.end(), StreamEnd::Cut);
        let consumed = t.consumed();
        assert_eq!(
            (consumed.billed.input_tokens, consumed.billed.output_tokens, consumed.reported.output_tokens),
            (9, 2, 1)
        );
    }
}

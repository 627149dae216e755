//! Stream: `GenerateContentResponse` events → OpenAI `chat.completion.chunk`s.
//!
//! Per the Gemini API reference: `:streamGenerateContent?alt=sse` sends server-sent events
//! each carrying one `GenerateContentResponse`, read as the answer is (`response`).

use super::call_id::tool_call_id;
use super::response::{finish_reason, identity, WireError, WireResponse};
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::usage::{Consumed, Meter};
use crate::providers::canonical::{Chunks, Identity};
use crate::providers::{StreamEnd, StreamTranslator};
use crate::util::sse::SseDecoder;
use crate::wire::openai::stream_error_event;
use serde_json::json;

pub(in crate::providers) fn stream(req: &ChatRequest) -> Box<dyn StreamTranslator> {
    let chunks = Chunks {
        identity: Identity { model: req.model.clone(), created: req.received_at, ..Identity::default() },
        wants_usage: req.client_wants_usage,
    };
    let state = StreamState { chunks, meter: Meter::new(req.facts.input_tokens), ..StreamState::default() };
    Box::new(Translator { decoder: SseDecoder::new(), state })
}

struct Translator {
    decoder: SseDecoder,
    state: StreamState,
}

/// A Gemini stream has no terminal event of its own: it is complete once a chunk with a
/// `finishReason` (or a prompt block) has arrived, and cut if it ends before one.
#[derive(Default)]
struct StreamState {
    chunks: Chunks,
    calls: usize,
    /// The latest `usageMetadata` (before the last chunk, the prompt's count only), and
    /// what reached the client: text, function names and arguments.
    meter: Meter,
    started: bool,
    done: bool,
    failed: bool,
}

impl StreamTranslator for Translator {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let state = &mut self.state;
        self.decoder.push(bytes, |event| {
            if let Some(data) = event.data.as_deref() {
                state.on_data(data, out);
            }
        });
    }

    fn started(&self) -> bool {
        self.state.started
    }

    fn end(&mut self) -> StreamEnd {
        StreamEnd::of(self.state.failed, self.state.done, self.decoder.has_partial())
    }

    fn consumed(&self) -> Consumed {
        let state = &self.state;
        state.meter.consumed(state.done && !state.failed && !self.decoder.has_partial())
    }
}

impl StreamState {
    fn on_data(&mut self, data: &str, out: &mut Vec<u8>) {
        if self.done || self.failed {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<WireResponse>(data.as_bytes()) else { return };
        if let Some(error) = &answer.error {
            self.fail(out, error);
            return;
        }
        if self.chunks.identity.id.is_empty() {
            let Identity { model, created, .. } = &self.chunks.identity;
            self.chunks.identity = identity(*created, model, &answer, data.as_bytes());
            self.chunks.role(out);
        }
        if let Some(usage) = answer.usage_metadata {
            self.meter.reported = Some(usage.into());
        }
        let blocked = answer.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_ref()).is_some();
        let Some(candidate) = answer.candidates.into_iter().next() else {
            if blocked {
                self.finish(out, "content_filter");
            }
            return;
        };
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(text) = part.text.filter(|t| !t.is_empty() && !part.thought) {
                self.started = true;
                self.meter.relayed(&text);
                self.chunks.text(out, &text);
            }
            if let Some(call) = part.function_call {
                self.started = true;
                let id = tool_call_id(&self.chunks.identity.id, self.calls, part.thought_signature.as_deref());
                let arguments = call.args.unwrap_or_else(|| json!({})).to_string();
                self.meter.relayed(&call.name);
                self.meter.relayed(&arguments);
                self.chunks.tool_call_start(out, self.calls, &id, &call.name);
                self.chunks.tool_call_arguments(out, self.calls, &arguments);
                self.calls += 1;
            }
        }
        if let Some(reason) = candidate.finish_reason {
            self.finish(out, finish_reason(&reason, self.calls > 0));
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        self.started = true;
        self.done = true;
        self.chunks.finish(out, reason);
        self.chunks.done(out, self.meter.reported.unwrap_or_default());
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: &WireError) {
        self.failed = true;
        let code = match error.status.as_str() {
            "RESOURCE_EXHAUSTED" => "upstream_rate_limited",
            "UNAVAILABLE" => "upstream_overloaded",
            _ => "upstream_failed",
        };
        let message = format!("The provider ended the stream with an error ({}): {}", error.status, error.message);
        out.extend_from_slice(&stream_error_event(&GatewayError::new(502, "upstream_error", code, message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::usage::Usage;
    use crate::providers::gemini::call_id::signature_of;
    use crate::providers::gemini::test_support::{data, run_with, Run, PROMPT_ONLY_THEN_CUT, RECORDED};
    use serde_json::Value;

    fn run(input: &[u8], wants_usage: bool, cut: usize) -> Run {
        run_with(stream, input, wants_usage, cut)
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "chatcmpl-r2", "object": "chat.completion.chunk", "created": 1_750_000_000, "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn a_recorded_stream_translates_to_openai_chunks() {
        let run = run(RECORDED.as_bytes(), false, 0);
        let events = data(&run.out);
        let id = events[3]["choices"][0]["delta"]["tool_calls"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(signature_of(&id).as_deref(), Some("Cv8B+/x="));
        assert_eq!(
            events,
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Caf\u{e9} "}), Value::Null),
                chunk(json!({"content": "weather:"}), Value::Null),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}),
                    Value::Null
                ),
                chunk(json!({}), json!("tool_calls")),
                json!("[DONE]"),
            ]
        );
        assert_eq!(run.end, StreamEnd::Complete);
        assert_eq!(
            run.consumed,
            Consumed::reported(Usage {
                input_tokens: 50,
                output_tokens: 42,
                cached_input_tokens: 30,
                cache_write_tokens: 0,
                web_searches: 0,
            })
        );
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let input = RECORDED.as_bytes();
        for wants_usage in [false, true] {
            let whole = run(input, wants_usage, 0);
            for cut in 1..=input.len() {
                let split = run(input, wants_usage, cut);
                assert_eq!(split.out, whole.out, "cut {cut}");
                assert_eq!((split.end, split.consumed), (whole.end, whole.consumed), "cut {cut}");
            }
        }
        let events = data(&run(input, true, 0).out);
        let usage_chunk = &events[events.len() - 2];
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
        assert!(events[..events.len() - 2].iter().all(|e| e.get("usage") == Some(&Value::Null)));
    }

    #[test]
    fn starts_at_the_first_content() {
        let first = RECORDED.find("\r\n\r\n").unwrap() + 4;
        assert!(!run(RECORDED.as_bytes(), false, first - 1).started_at_cut);
        assert!(run(RECORDED.as_bytes(), false, first).started_at_cut);
    }

    #[test]
    fn a_stream_without_a_finish_reason_is_cut() {
        let last = RECORDED.rfind("data: ").unwrap();
        let cut = run(&RECORDED.as_bytes()[..last], true, 0);
        assert_eq!(cut.end, StreamEnd::Cut);
        assert!(!cut.out.contains("[DONE]") && !cut.out.contains("finish_reason\":\"stop"));
        assert_eq!(
            cut.consumed,
            Consumed::reported(Usage { input_tokens: 50, output_tokens: 4, ..Usage::default() }),
            "the latest reported, as much as what reached the client (13 characters)"
        );
        assert_eq!(run(&RECORDED.as_bytes()[..RECORDED.len() - 3], false, 0).end, StreamEnd::Cut);
        assert_eq!(run(b"", false, 0).end, StreamEnd::Cut);
        let nothing = run(b"", false, 0).consumed;
        assert_eq!(
            (nothing.billed, nothing.reported),
            (Usage { input_tokens: 5, ..Usage::default() }, Usage::default())
        );
    }

    #[test]
    fn a_blocked_prompt_and_an_error_event() {
        let blocked = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": {\"promptTokenCount\": 9}}\r\n\r\n";
        let run_blocked = run(blocked.as_bytes(), false, 0);
        assert_eq!(run_blocked.end, StreamEnd::Complete);
        assert_eq!(data(&run_blocked.out)[1]["choices"][0]["finish_reason"], "content_filter");
        let first = RECORDED.find("\r\n\r\n").unwrap() + 4;
        let failing = format!(
            "{}data: {{\"error\": {{\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}}}\r\n\r\n",
            &RECORDED[..first]
        );
        let failed = run(failing.as_bytes(), false, 0);
        assert_eq!(failed.end, StreamEnd::Failed);
        let events = data(&failed.out);
        assert_eq!(events.len(), 3, "role, text, the error: {}", failed.out);
        assert_eq!(events[2]["error"]["code"], "upstream_overloaded");
    }

    #[test]
    fn a_cut_stream_is_billed_for_what_reached_the_client_not_the_prompt_only_count() {
        let cut = run(PROMPT_ONLY_THEN_CUT.as_bytes(), false, 0);
        assert_eq!(cut.end, StreamEnd::Cut);
        let reported = Usage { input_tokens: 30, ..Usage::default() };
        assert_eq!(cut.consumed, Consumed { reported, billed: Usage { output_tokens: 10, ..reported } });
    }
}

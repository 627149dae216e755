//! ConverseStream (`POST {base}/model/{modelId}/converse-stream`) to OpenAI
//! `chat.completion.chunk`s. Events per the Bedrock API reference ("ConverseStream",
//! "ConverseStreamOutput"), framed as `application/vnd.amazon.eventstream`
//! ([`super::eventstream`]).

use super::converse::{completion_id, finish_reason, WireUsage};
use super::eventstream::{Decoder, Message};
use super::{payload, WireError};
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::usage::{Consumed, Meter};
use crate::providers::canonical::{Chunks, Identity};
use crate::providers::{StreamEnd, StreamTranslator};
use crate::wire::openai::stream_error_event;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    content_block_index: u64,
    start: StartedBlock,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartedBlock {
    #[serde(default)]
    tool_use: Option<StartedToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartedToolUse {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    content_block_index: u64,
    delta: WireDelta,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolInput>,
}

#[derive(Deserialize)]
struct ToolInput {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: WireUsage,
}

pub(super) struct Translator {
    decoder: Decoder,
    state: StreamState,
}

impl Translator {
    pub(super) fn new(req: &ChatRequest) -> Translator {
        let chunks = Chunks {
            identity: Identity { model: req.model.clone(), created: req.received_at, ..Identity::default() },
            wants_usage: req.client_wants_usage,
        };
        let state = StreamState { chunks, meter: Meter::new(req.facts.input_tokens), ..StreamState::default() };
        Translator { decoder: Decoder::new(), state }
    }
}

/// Bedrock ends a stream with `messageStop` (the stop reason) and then `metadata` (the
/// usage). The stream is complete only once both have arrived: the finish chunk goes out
/// at `messageStop`, the usage chunk and `[DONE]` at `metadata`. A stream cut between the
/// two has its whole answer but no usage, so the gateway could neither give the client
/// the usage it asked for nor account for the tokens exactly: it is reported as cut, like
/// any stream without its terminal event, never finished with an invented `[DONE]`, and
/// billed for an estimate.
#[derive(Default)]
struct StreamState {
    chunks: Chunks,
    /// Content-block index of each tool call, in order: OpenAI numbers tool calls apart
    /// from text, Converse numbers every block.
    tool_blocks: Vec<u64>,
    /// The usage `metadata` reported, and what reached the client: text, tool names and
    /// tool input.
    meter: Meter,
    stopped: bool,
    done: bool,
    started: bool,
    /// An exception arrived, or the framing broke: the answer is incomplete whatever follows.
    failed: bool,
}

impl StreamTranslator for Translator {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let state = &mut self.state;
        let decoded = self.decoder.push(bytes, |message| state.on_message(&message, out));
        if let Err(e) = decoded {
            if !state.done && !state.failed {
                state.fail(out, "upstream_failed", &format!("The provider's event stream is corrupt: {e}."));
            }
        }
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
    fn on_message(&mut self, message: &Message<'_>, out: &mut Vec<u8>) {
        if self.done || self.failed {
            return;
        }
        if self.chunks.identity.id.is_empty() {
            self.chunks.identity.id = completion_id(self.chunks.identity.created, message.payload);
        }
        match (message.message_type(), message.event_type()) {
            (Some("exception"), _) => {
                let kind = message.exception_type().unwrap_or("exception");
                let text = payload::<WireError>(message).map(|e| e.message).unwrap_or_default();
                self.exception(out, kind, &text);
            }
            (Some("error"), _) => {
                let kind = message.error_code().unwrap_or("error");
                self.exception(out, kind, message.error_message().unwrap_or_default());
            }
            (_, Some(event)) => self.on_event(event, message, out),
            _ => {}
        }
    }

    fn on_event(&mut self, event: &str, message: &Message<'_>, out: &mut Vec<u8>) {
        match event {
            "messageStart" => self.chunks.role(out),
            "contentBlockStart" => {
                let Some(BlockStart { content_block_index, start }) = payload(message) else { return };
                if let Some(tool) = start.tool_use {
                    self.started = true;
                    self.meter.relayed(&tool.name);
                    self.chunks.tool_call_start(out, self.tool_blocks.len(), &tool.tool_use_id, &tool.name);
                    self.tool_blocks.push(content_block_index);
                }
            }
            "contentBlockDelta" => {
                let Some(BlockDelta { content_block_index, delta }) = payload(message) else { return };
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    self.started = true;
                    self.meter.relayed(&text);
                    self.chunks.text(out, &text);
                }
                let input = delta.tool_use.map(|t| t.input).filter(|i| !i.is_empty());
                let tool = self.tool_blocks.iter().position(|&b| b == content_block_index);
                if let (Some(input), Some(tool)) = (input, tool) {
                    self.meter.relayed(&input);
                    self.chunks.tool_call_arguments(out, tool, &input);
                }
            }
            "messageStop" => {
                let stop = payload::<MessageStop>(message).and_then(|m| m.stop_reason);
                self.started = true;
                self.stopped = true;
                self.chunks.finish(out, finish_reason(stop.as_deref()));
                self.finish_if_complete(out);
            }
            "metadata" => {
                if let Some(metadata) = payload::<Metadata>(message) {
                    self.meter.reported = Some(metadata.usage.total());
                    self.finish_if_complete(out);
                }
            }
            // contentBlockStop, and event types added after this was written.
            _ => {}
        }
    }

    fn finish_if_complete(&mut self, out: &mut Vec<u8>) {
        if let (true, Some(usage)) = (self.stopped, self.meter.reported) {
            self.done = true;
            self.chunks.done(out, usage);
        }
    }

    fn exception(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        let code = match kind {
            "throttlingException" => "upstream_rate_limited",
            "serviceUnavailableException" => "upstream_overloaded",
            _ => "upstream_failed",
        };
        self.fail(out, code, &format!("The provider ended the stream with an error ({kind}): {message}"));
    }

    fn fail(&mut self, out: &mut Vec<u8>, code: &'static str, message: &str) {
        self.failed = true;
        out.extend_from_slice(&stream_error_event(&GatewayError::new(502, "upstream_error", code, message)));
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::usage::Usage;
    use crate::providers::bedrock::tests::{frame, parse, user};
    use crate::providers::bedrock::Bedrock;
    use crate::providers::Provider;
    use serde_json::{json, Value};

    /// An event as Bedrock frames it, with the random-length `p` padding it adds to every
    /// payload.
    fn event(kind: &str, mut payload: Value) -> Vec<u8> {
        payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEFGH");
        let headers = [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")];
        frame(&headers, payload.to_string().as_bytes())
    }

    fn exception(kind: &str, message: &str) -> Vec<u8> {
        let headers =
            [(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")];
        frame(&headers, json!({"message": message}).to_string().as_bytes())
    }

    /// A ConverseStream answer: text with a multi-byte character to split inside, then a
    /// tool call whose input arrives in pieces; `messageStop` before `metadata`, as
    /// Bedrock sends them.
    fn recorded() -> Vec<Vec<u8>> {
        vec![
            event("messageStart", json!({"role": "assistant"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Caf\u{e9} "}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "weather:"}})),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_01", "name": "get_weather"}}}),
            ),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ""}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\": "}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}})),
            event("contentBlockStop", json!({"contentBlockIndex": 1})),
            event("messageStop", json!({"stopReason": "tool_use"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 20, "outputTokens": 42, "totalTokens": 92, "cacheReadInputTokens": 30},
                    "metrics": {"latencyMs": 812}}),
            ),
        ]
    }

    fn joined(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    struct Run {
        out: String,
        end: StreamEnd,
        consumed: Consumed,
        started_at_cut: bool,
    }

    fn run(input: &[u8], wants_usage: bool, cut: usize) -> Run {
        let mut body = json!({"model": "claude-eu", "messages": [user(json!("x"))], "stream": true});
        if wants_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut t = Bedrock.stream(&parse(body));
        let mut out = Vec::new();
        t.push(&input[..cut], &mut out);
        let started_at_cut = t.started();
        t.push(&input[cut..], &mut out);
        Run { out: String::from_utf8(out).unwrap(), end: t.end(), consumed: t.consumed(), started_at_cut }
    }

    fn data(out: &str) -> Vec<Value> {
        out.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| if d == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(d).unwrap() })
            .collect()
    }

    /// The chunks without their id, which is checked apart.
    fn chunks(out: &str) -> Vec<Value> {
        data(out)
            .into_iter()
            .map(|mut c| {
                if let Some(object) = c.as_object_mut() {
                    object.remove("id");
                }
                c
            })
            .collect()
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"object": "chat.completion.chunk", "created": 1_750_000_000, "model": "claude-eu",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn a_recorded_stream_translates_to_openai_chunks() {
        let run = run(&joined(&recorded()), false, 0);
        assert_eq!(
            chunks(&run.out),
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Caf\u{e9} "}), Value::Null),
                chunk(json!({"content": "weather:"}), Value::Null),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "tooluse_01", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}), Value::Null),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
                chunk(json!({}), json!("tool_calls")),
                json!("[DONE]"),
            ]
        );
        let ids: Vec<Value> = data(&run.out).iter().filter_map(|c| c.get("id").cloned()).collect();
        assert!(ids[0].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "{ids:?}");
        assert!(ids.iter().all(|id| *id == ids[0]), "one id for the whole stream");
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
        let input = joined(&recorded());
        for wants_usage in [false, true] {
            let whole = run(&input, wants_usage, 0);
            for cut in 1..=input.len() {
                let split = run(&input, wants_usage, cut);
                assert_eq!(split.out, whole.out, "cut {cut}");
                assert_eq!((split.end, split.consumed), (whole.end, whole.consumed), "cut {cut}");
            }
        }
    }

    #[test]
    fn include_usage_adds_null_usage_and_a_final_usage_chunk() {
        let events = data(&run(&joined(&recorded()), true, 0).out);
        let (done, rest) = events.split_last().unwrap();
        let (usage_chunk, chunks) = rest.split_last().unwrap();
        assert_eq!(done, "[DONE]");
        assert!(chunks.iter().all(|c| c.get("usage") == Some(&Value::Null)));
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(
            usage_chunk["usage"],
            json!({"prompt_tokens": 50, "completion_tokens": 42, "total_tokens": 92,
                "prompt_tokens_details": {"cached_tokens": 30}})
        );
    }

    #[test]
    fn starts_at_the_first_content_not_at_message_start() {
        let frames = recorded();
        let start = frames[0].len();
        let input = joined(&frames);
        assert!(!run(&input, false, start + frames[1].len() - 1).started_at_cut, "messageStart only");
        assert!(run(&input, false, start + frames[1].len()).started_at_cut);
        let finish_only = joined(&[frames[0].clone(), event("messageStop", json!({"stopReason": "end_turn"}))]);
        assert!(run(&finish_only, false, finish_only.len()).started_at_cut);
    }

    #[test]
    fn a_stream_without_its_terminal_events_is_cut() {
        let frames = recorded();
        // "Café weather:", `get_weather` and `{"city": "Paris"}`: 41 characters relayed,
        // about 11 tokens; the one-word prompt is estimated at 1 token and 4 of framing.
        let estimate = Consumed::at_least(None, Usage { input_tokens: 5, output_tokens: 11, ..Usage::default() });
        // Before messageStop: no finish, no usage chunk, no [DONE]; billed for an estimate.
        let cut = run(&joined(&frames[..9]), true, 0);
        assert_eq!((cut.end, cut.consumed), (StreamEnd::Cut, estimate));
        assert!(!cut.out.contains("finish_reason\":\"tool_calls") && !cut.out.contains("[DONE]"));
        // After messageStop, before metadata: the answer is whole but its usage never came;
        // the finish chunk has gone out, `[DONE]` must not.
        let cut = run(&joined(&frames[..10]), true, 0);
        assert_eq!((cut.end, cut.consumed), (StreamEnd::Cut, estimate));
        assert!(cut.out.contains("\"finish_reason\":\"tool_calls\"") && !cut.out.contains("[DONE]"));
        let prompt = Consumed::at_least(None, Usage { input_tokens: 5, ..Usage::default() });
        assert_eq!(run(&joined(&frames[..1]), false, 0).consumed, prompt, "nothing relayed: the prompt");
        // Mid-frame.
        let whole = joined(&frames);
        assert_eq!(run(&whole[..whole.len() - 3], false, 0).end, StreamEnd::Cut);
        assert_eq!(run(b"", false, 0).end, StreamEnd::Cut);
    }

    #[test]
    fn metadata_before_message_stop_still_completes() {
        let mut frames = recorded();
        frames.swap(9, 10);
        let run = run(&joined(&frames), true, 0);
        assert_eq!(run.end, StreamEnd::Complete);
        let events = data(&run.out);
        assert_eq!(events[events.len() - 3]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(events[events.len() - 2]["usage"]["completion_tokens"], 42);
    }

    #[test]
    fn an_exception_ends_the_stream_with_an_openai_error_chunk() {
        for (kind, code) in [
            ("throttlingException", "upstream_rate_limited"),
            ("serviceUnavailableException", "upstream_overloaded"),
            ("modelStreamErrorException", "upstream_failed"),
            ("internalServerException", "upstream_failed"),
            ("validationException", "upstream_failed"),
        ] {
            let mut frames = recorded();
            frames.insert(3, exception(kind, "Something broke mid-stream"));
            let input = joined(&frames);
            let run = run(&input, true, input.len());
            assert_eq!(run.end, StreamEnd::Failed, "{kind}");
            assert!(run.started_at_cut);
            let events = data(&run.out);
            assert_eq!(events.len(), 4, "role, two texts, the error; nothing after it: {}", run.out);
            let error = &events[3]["error"];
            assert_eq!(error["code"], code, "{kind}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(kind) && message.contains("Something broke mid-stream"), "{message}");
        }
        let error_frame =
            frame(&[(":message-type", "error"), (":error-code", "InternalFailure"), (":error-message", "boom")], b"");
        let run = run(&joined(&[recorded()[0].clone(), error_frame]), false, 0);
        assert_eq!(run.end, StreamEnd::Failed);
        assert!(run.out.contains("InternalFailure") && run.out.contains("boom"), "{}", run.out);
    }

    #[test]
    fn a_corrupt_frame_fails_the_stream() {
        let frames = recorded();
        let mut corrupt = frames[1].clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let run = run(&joined(&[frames[0].clone(), corrupt, frames[2].clone()]), false, 0);
        assert_eq!(run.end, StreamEnd::Failed);
        let events = data(&run.out);
        assert_eq!(events.len(), 2, "{}", run.out);
        assert_eq!(events[1]["error"]["code"], "upstream_failed");
        assert!(events[1]["error"]["message"].as_str().unwrap().contains("corrupt"));
    }

    #[test]
    fn a_cut_stream_is_billed_at_least_for_what_reached_the_client() {
        // Usage that arrives before the end (here `metadata` ahead of `messageStop`) is a
        // lower bound: 40 characters reached the client, 10 tokens, whatever it said.
        let input = joined(&[
            event("messageStart", json!({"role": "assistant"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "0123456789abcdefghij"}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "0123456789abcdefghij"}})),
            event("metadata", json!({"usage": {"inputTokens": 30, "outputTokens": 2, "totalTokens": 32}})),
        ]);
        let cut = run(&input, false, 0);
        assert_eq!(cut.end, StreamEnd::Cut);
        let reported = Usage { input_tokens: 30, output_tokens: 2, ..Usage::default() };
        assert_eq!(cut.consumed, Consumed { reported, billed: Usage { output_tokens: 10, ..reported } });
    }
}

//! Stream: Anthropic events → OpenAI `chat.completion.chunk`s.
//!
//! Per Anthropic's API reference ("Streaming Messages"): `message_start`,
//! `content_block_start` / `_delta` (`text_delta`, `input_json_delta`) / `_stop`,
//! `message_delta` with cumulative usage, `message_stop`, `ping`, `error`; event types not
//! listed there are to be ignored.

use super::response::{finish_reason, WireBlock, WireMessage, WireUsage};
use crate::model::error::GatewayError;
use crate::model::usage::Usage;
use crate::providers::canonical::Chunks;
use crate::providers::{StreamEnd, StreamTranslator};
use crate::util::sse::SseDecoder;
use crate::wire::openai::stream_error_event;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(try_from = "FlatEvent")]
enum WireEvent {
    MessageStart {
        message: WireMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: WireDelta,
    },
    MessageDelta {
        delta: MessageChange,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping`, `content_block_stop`, and event types added after this was written.
    Other,
}

#[derive(Deserialize)]
struct FlatEvent {
    #[serde(rename = "type")]
    kind: String,
    message: Option<WireMessage>,
    index: Option<u64>,
    content_block: Option<WireBlock>,
    /// A `WireDelta` in `content_block_delta`, a `MessageChange` in `message_delta`.
    delta: Option<FlatDelta>,
    usage: Option<WireUsage>,
    error: Option<WireError>,
}

impl TryFrom<FlatEvent> for WireEvent {
    type Error = &'static str;

    fn try_from(e: FlatEvent) -> Result<Self, &'static str> {
        const INCOMPLETE: &str = "event without the fields of its type";
        Ok(match e.kind.as_str() {
            "message_start" => WireEvent::MessageStart { message: e.message.ok_or(INCOMPLETE)? },
            "content_block_start" => WireEvent::ContentBlockStart {
                index: e.index.ok_or(INCOMPLETE)?,
                content_block: e.content_block.ok_or(INCOMPLETE)?,
            },
            "content_block_delta" => WireEvent::ContentBlockDelta {
                index: e.index.ok_or(INCOMPLETE)?,
                delta: WireDelta::try_from(e.delta.ok_or(INCOMPLETE)?)?,
            },
            "message_delta" => WireEvent::MessageDelta {
                delta: MessageChange { stop_reason: e.delta.ok_or(INCOMPLETE)?.stop_reason },
                usage: e.usage,
            },
            "message_stop" => WireEvent::MessageStop,
            "error" => WireEvent::Error { error: e.error.ok_or(INCOMPLETE)? },
            _ => WireEvent::Other,
        })
    }
}

enum WireDelta {
    TextDelta { text: String },
    InputJsonDelta { partial_json: String },
    Other,
}

#[derive(Deserialize)]
struct FlatDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    stop_reason: Option<String>,
}

impl TryFrom<FlatDelta> for WireDelta {
    type Error = &'static str;

    fn try_from(d: FlatDelta) -> Result<Self, &'static str> {
        Ok(match d.kind.as_deref().ok_or("delta without a type")? {
            "text_delta" => WireDelta::TextDelta { text: d.text.ok_or("text_delta without text")? },
            "input_json_delta" => WireDelta::InputJsonDelta {
                partial_json: d.partial_json.ok_or("input_json_delta without partial_json")?,
            },
            _ => WireDelta::Other,
        })
    }
}

struct MessageChange {
    stop_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

pub(super) struct Translator {
    decoder: SseDecoder,
    state: StreamState,
}

impl Translator {
    /// A reader of a Messages stream that writes OpenAI chunks through `chunks`.
    pub(super) fn new(chunks: Chunks, every_delta_is_content: bool) -> Self {
        let state = StreamState { chunks, every_delta_is_content, ..StreamState::default() };
        Translator { decoder: SseDecoder::new(), state }
    }
}

#[derive(Default)]
struct StreamState {
    chunks: Chunks,
    /// Content-block index of each tool call, in order: OpenAI numbers tool calls apart
    /// from text, Anthropic numbers every block.
    tool_blocks: Vec<u64>,
    usage: Option<WireUsage>,
    started: bool,
    stopped: bool,
    /// An `error` event arrived: the answer is incomplete whatever follows.
    failed: bool,
    /// Whether a delta of a type not translated (thinking, citations, …) counts as content:
    /// it does for a client that receives it.
    every_delta_is_content: bool,
}

impl StreamTranslator for Translator {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.decoder.push(bytes, |event| {
            if let Some(event) =
                event.data.as_deref().and_then(|d| serde_json::from_slice::<WireEvent>(d.as_bytes()).ok())
            {
                self.state.on_event(event, out);
            }
        });
    }

    fn started(&self) -> bool {
        self.state.started
    }

    fn end(&mut self) -> StreamEnd {
        StreamEnd::of(self.state.failed, self.state.stopped, self.decoder.has_partial())
    }

    fn usage(&self) -> Option<Usage> {
        self.state.usage.map(|u| u.total())
    }
}

impl StreamState {
    fn on_event(&mut self, event: WireEvent, out: &mut Vec<u8>) {
        if self.stopped || self.failed {
            return;
        }
        match event {
            WireEvent::MessageStart { message } => {
                self.chunks.identity.id = message.id;
                self.chunks.identity.model = message.model;
                self.usage = Some(message.usage);
                self.chunks.role(out);
            }
            WireEvent::ContentBlockStart { index, content_block } => self.block_start(index, content_block, out),
            WireEvent::ContentBlockDelta { index, delta } => self.block_delta(index, delta, out),
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(newer) = usage {
                    self.usage.get_or_insert_with(WireUsage::default).update(newer);
                }
                if let Some(reason) = delta.stop_reason.as_deref() {
                    self.started = true;
                    self.chunks.finish(out, finish_reason(Some(reason)));
                }
            }
            WireEvent::MessageStop => self.stop(out),
            WireEvent::Error { error } => {
                self.failed = true;
                out.extend_from_slice(&stream_error_event(&stream_error(&error)));
            }
            WireEvent::Other => {}
        }
    }

    fn block_start(&mut self, index: u64, block: WireBlock, out: &mut Vec<u8>) {
        match block {
            WireBlock::Text { text } => self.text(text, out),
            WireBlock::ToolUse { id, name, .. } => {
                self.started = true;
                self.chunks.tool_call_start(out, self.tool_blocks.len(), &id, &name);
                self.tool_blocks.push(index);
            }
            WireBlock::Other => {}
        }
    }

    fn block_delta(&mut self, index: u64, delta: WireDelta, out: &mut Vec<u8>) {
        match delta {
            WireDelta::TextDelta { text } => self.text(text, out),
            WireDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                let Some(tool) = self.tool_blocks.iter().position(|&b| b == index) else {
                    return;
                };
                self.chunks.tool_call_arguments(out, tool, &partial_json);
            }
            WireDelta::Other => self.started |= self.every_delta_is_content,
            _ => {}
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<u8>) {
        if !text.is_empty() {
            self.started = true;
            self.chunks.text(out, &text);
        }
    }

    fn stop(&mut self, out: &mut Vec<u8>) {
        self.stopped = true;
        self.chunks.done(out, self.usage.unwrap_or_default().total());
    }
}

fn stream_error(error: &WireError) -> GatewayError {
    let code = match error.kind.as_str() {
        "overloaded_error" => "upstream_overloaded",
        "rate_limit_error" => "upstream_rate_limited",
        _ => "upstream_failed",
    };
    let message = format!("The provider ended the stream with an error ({}): {}", error.kind, error.message);
    GatewayError::new(502, "upstream_error", code, message)
}

#[cfg(test)]
mod tests {
    use crate::model::usage::Usage;
    use crate::providers::anthropic::test_support::{parse, user, RECORDED};
    use crate::providers::anthropic::Anthropic;
    use crate::providers::{Provider, StreamEnd};
    use serde_json::{json, Value};

    struct Run {
        out: String,
        end: StreamEnd,
        usage: Option<Usage>,
        started_at_cut: bool,
    }

    fn run(input: &[u8], wants_usage: bool, cut: usize) -> Run {
        let mut body = json!({"model": "m", "messages": [user(json!("x"))], "stream": true});
        if wants_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut t = Anthropic.stream(&parse(body));
        let mut out = Vec::new();
        t.push(&input[..cut], &mut out);
        let started_at_cut = t.started();
        t.push(&input[cut..], &mut out);
        Run { out: String::from_utf8(out).unwrap(), end: t.end(), usage: t.usage(), started_at_cut }
    }

    fn data(out: &str) -> Vec<Value> {
        out.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| if d == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(d).unwrap() })
            .collect()
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "msg_02", "object": "chat.completion.chunk", "created": 1_750_000_000,
            "model": "claude-sonnet-4-5-20250929",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn a_recorded_stream_translates_to_openai_chunks() {
        let run = run(RECORDED.as_bytes(), false, 0);
        assert_eq!(
            data(&run.out),
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Caf\u{e9} "}), Value::Null),
                chunk(json!({"content": "weather:"}), Value::Null),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "toolu_01", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}), Value::Null),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
                chunk(json!({}), json!("tool_calls")),
                json!("[DONE]"),
            ]
        );
        assert_eq!(run.end, StreamEnd::Complete);
        assert_eq!(
            run.usage,
            Some(Usage { input_tokens: 50, output_tokens: 42, cached_input_tokens: 30, cache_write_tokens: 0 })
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
                assert_eq!((split.end, split.usage), (whole.end, whole.usage), "cut {cut}");
            }
        }
    }

    #[test]
    fn include_usage_adds_null_usage_and_a_final_usage_chunk() {
        let events = data(&run(RECORDED.as_bytes(), true, 0).out);
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
    fn starts_at_the_first_content_not_at_the_role_chunk() {
        let input = RECORDED.as_bytes();
        let first_text = RECORDED.find("\"text_delta\"").unwrap();
        let event_end = first_text + RECORDED[first_text..].find("\n\n").unwrap() + 2;
        assert!(!run(input, false, event_end - 1).started_at_cut, "message_start, empty text block, ping");
        assert!(run(input, false, event_end).started_at_cut);
        let finish_only = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":0}}\n\n",
        );
        assert!(run(finish_only.as_bytes(), false, finish_only.len()).started_at_cut);
    }

    #[test]
    fn a_stream_cut_before_message_stop_is_cut_with_partial_usage() {
        let before_delta = RECORDED.find("event: message_delta").unwrap();
        let cut = run(&RECORDED.as_bytes()[..before_delta], true, 0);
        assert_eq!(cut.end, StreamEnd::Cut);
        assert_eq!(
            cut.usage,
            Some(Usage { input_tokens: 50, output_tokens: 1, cached_input_tokens: 30, cache_write_tokens: 0 })
        );
        assert!(!cut.out.contains("[DONE]") && !cut.out.contains("\"usage\":{"));

        let before_stop = RECORDED.find("event: message_stop").unwrap();
        let cut = run(&RECORDED.as_bytes()[..before_stop], false, 0);
        assert_eq!((cut.end, cut.usage.map(|u| u.output_tokens)), (StreamEnd::Cut, Some(42)));
        assert!(cut.out.contains("\"finish_reason\":\"tool_calls\"") && !cut.out.contains("[DONE]"));

        let mid_event = &RECORDED.as_bytes()[..RECORDED.len() - 5];
        assert_eq!(run(mid_event, false, 0).end, StreamEnd::Cut);
        assert_eq!(run(b"", false, 0).usage, None);
    }

    #[test]
    fn an_error_event_ends_the_stream_with_an_openai_error_chunk() {
        let first_stop = RECORDED.find("event: content_block_stop").unwrap();
        let mut input = RECORDED[..first_stop].to_string();
        input += "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        input += &RECORDED[first_stop..];
        let run = run(input.as_bytes(), false, input.len());
        assert_eq!(run.end, StreamEnd::Failed);
        assert!(run.started_at_cut);
        let events = data(&run.out);
        let error = &events.last().unwrap()["error"];
        assert_eq!(error["code"], "upstream_overloaded");
        assert!(error["message"].as_str().unwrap().contains("Overloaded"));
        assert_eq!(events.len(), 4, "role, two texts, the error; nothing after it: {}", run.out);
    }
}

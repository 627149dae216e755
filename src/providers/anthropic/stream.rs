//! Stream: Anthropic events → OpenAI `chat.completion.chunk`s.
//!
//! Per Anthropic's API reference ("Streaming Messages"): `message_start`,
//! `content_block_start` / `_delta` (`text_delta`, `input_json_delta`) / `_stop`,
//! `message_delta` with cumulative usage, `message_stop`, `ping`, `error`; event types not
//! listed there are to be ignored.

use super::response::{finish_reason, InferenceGeo, WireBlock, WireMessage, WireUsage};
use crate::model::error::GatewayError;
use crate::model::usage::{Consumed, Meter};
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
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Extended thinking's text, counted and not kept: only a Messages client receives it.
    ThinkingDelta {
        chars: usize,
    },
    Other,
}

#[derive(Deserialize)]
struct FlatDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    thinking: Option<Chars>,
    stop_reason: Option<String>,
}

/// A string's length in characters, read without keeping (or allocating) the string.
struct Chars(usize);

impl<'de> Deserialize<'de> for Chars {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl serde::de::Visitor<'_> for Count {
            type Value = Chars;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, text: &str) -> Result<Chars, E> {
                Ok(Chars(text.chars().count()))
            }
        }
        d.deserialize_str(Count)
    }
}

impl TryFrom<FlatDelta> for WireDelta {
    type Error = &'static str;

    fn try_from(d: FlatDelta) -> Result<Self, &'static str> {
        Ok(match d.kind.as_deref().ok_or("delta without a type")? {
            "text_delta" => WireDelta::TextDelta { text: d.text.ok_or("text_delta without text")? },
            "input_json_delta" => WireDelta::InputJsonDelta {
                partial_json: d.partial_json.ok_or("input_json_delta without partial_json")?,
            },
            "thinking_delta" => WireDelta::ThinkingDelta { chars: d.thinking.map_or(0, |c| c.0) },
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
    /// A reader of a Messages stream that writes OpenAI chunks through `chunks`, for a
    /// prompt estimated at `estimated_input` tokens.
    pub(super) fn new(chunks: Chunks, every_delta_is_content: bool, estimated_input: u64) -> Self {
        let meter = Meter::new(estimated_input);
        let state = StreamState { chunks, every_delta_is_content, meter, ..StreamState::default() };
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
    /// What reached the client; its `reported` is `usage`, set when the stream is billed.
    meter: Meter,
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

    fn reported_geo(&self) -> Option<&'static str> {
        self.state.usage.and_then(|u| u.inference_geo).map(InferenceGeo::as_str)
    }

    fn consumed(&self) -> Consumed {
        let state = &self.state;
        let complete = state.stopped && !state.failed && !self.decoder.has_partial();
        let meter = Meter { reported: state.usage.map(|u| u.total()), ..state.meter.clone() };
        meter.consumed(complete)
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
                self.meter.relayed(&name);
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
                let tool = self.tool_blocks.iter().position(|&b| b == index);
                // A server tool's input reaches a Messages client too.
                if tool.is_some() || self.every_delta_is_content {
                    self.meter.relayed(&partial_json);
                }
                let Some(tool) = tool else { return };
                self.chunks.tool_call_arguments(out, tool, &partial_json);
            }
            WireDelta::ThinkingDelta { chars } if self.every_delta_is_content => {
                self.started = true;
                self.meter.relayed_chars += chars;
            }
            WireDelta::ThinkingDelta { .. } => {}
            WireDelta::Other => self.started |= self.every_delta_is_content,
            _ => {}
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<u8>) {
        if !text.is_empty() {
            self.started = true;
            self.meter.relayed(&text);
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
    use crate::model::usage::{Consumed, Usage};
    use crate::providers::anthropic::test_support::{parse, user, RECORDED};
    use crate::providers::anthropic::Anthropic;
    use crate::providers::{Provider, StreamEnd};
    use serde_json::{json, Value};

    struct Run {
        out: String,
        end: StreamEnd,
        consumed: Consumed,
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
        Run { out: String::from_utf8(out).unwrap(), end: t.end(), consumed: t.consumed(), started_at_cut }
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
            run.consumed,
            Consumed::reported(Usage {
                input_tokens: 50,
                output_tokens: 42,
                cached_input_tokens: 30,
                cache_write_tokens: 0,
                web_searches: 0,
            }),
            "billed from the final usage"
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
    fn a_stream_cut_before_message_stop_is_cut_and_billed_at_least_for_its_report() {
        let before_delta = RECORDED.find("event: message_delta").unwrap();
        let cut = run(&RECORDED.as_bytes()[..before_delta], true, 0);
        assert_eq!(cut.end, StreamEnd::Cut);
        assert!(!cut.out.contains("[DONE]") && !cut.out.contains("\"usage\":{"));

        // message_delta's count (42) is above what was relayed: it stands.
        let before_stop = RECORDED.find("event: message_stop").unwrap();
        let cut = run(&RECORDED.as_bytes()[..before_stop], false, 0);
        assert_eq!((cut.end, cut.consumed.billed.output_tokens), (StreamEnd::Cut, 42));
        assert!(!cut.consumed.is_estimated());
        assert!(cut.out.contains("\"finish_reason\":\"tool_calls\"") && !cut.out.contains("[DONE]"));

        let mid_event = &RECORDED.as_bytes()[..RECORDED.len() - 5];
        assert_eq!(run(mid_event, false, 0).end, StreamEnd::Cut);
        // Nothing at all after the 200: the prompt ("x": 1 token and 4 of framing), estimated.
        let nothing = run(b"", false, 0).consumed;
        assert_eq!(
            (nothing.billed, nothing.reported),
            (Usage { input_tokens: 5, ..Usage::default() }, Usage::default())
        );
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

    #[test]
    fn a_cut_stream_is_billed_for_what_reached_the_client_not_message_starts_count() {
        // message_start said 1 output token; "Café weather:", the tool's name and
        // `{"city": "Paris"}` reached the client: 41 characters, 11 tokens.
        let before_delta = RECORDED.find("event: message_delta").unwrap();
        let cut = run(&RECORDED.as_bytes()[..before_delta], false, 0);
        assert_eq!(cut.end, StreamEnd::Cut);
        let reported = Usage {
            input_tokens: 50,
            output_tokens: 1,
            cached_input_tokens: 30,
            cache_write_tokens: 0,
            web_searches: 0,
        };
        assert_eq!(cut.consumed, Consumed { reported, billed: Usage { output_tokens: 11, ..reported } });
        assert!(cut.consumed.is_estimated());
    }

    #[test]
    fn a_stream_reports_where_inference_ran_from_its_message_start() {
        let start = |geo: &str| {
            format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-6\",\"content\":[],\"usage\":{{\"input_tokens\":3,\"output_tokens\":1,\"inference_geo\":\"{geo}\"}}}}}}\n\n"
            )
        };
        let delta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n";
        for geo in ["us", "global"] {
            let mut t =
                Anthropic.stream(&parse(json!({"model": "fast", "stream": true, "messages": [user(json!("hi"))]})));
            assert_eq!(t.reported_geo(), None);
            t.push(format!("{}{delta}", start(geo)).as_bytes(), &mut Vec::new());
            assert_eq!(t.reported_geo(), Some(geo), "kept after a message_delta that does not repeat it");
        }
    }
}

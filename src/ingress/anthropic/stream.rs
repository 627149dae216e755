//! The stream: OpenAI `chat.completion.chunk`s → Anthropic's events ("Streaming Messages":
//! `message_start`, per content block `content_block_start`, `content_block_delta` and
//! `content_block_stop`, then `message_delta` and `message_stop`; `event: error` for a
//! failure mid-stream). `message_start` counts 0 input tokens, since OpenAI streams report
//! usage only at their end; `message_delta` carries the final counts.

use super::answer::{anthropic_usage, message_id, stop_reason};
use crate::ingress::StreamEncoder;
use crate::model::chat::ChatRequest;
use crate::model::usage::Usage;
use crate::util::sse::{write_event, Event, SseDecoder};
use crate::wire::anthropic::write_error_event;
use crate::wire::openai::{Chunk, ChunkError, ToolCallDelta};
use serde_json::{json, Value};

/// The content block being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// The OpenAI index of the tool call.
    Tool(u64),
}

pub struct Stream {
    decoder: SseDecoder,
    state: StreamState,
}

struct StreamState {
    model: String,
    /// `message_start` was written.
    started: bool,
    open: Option<Block>,
    /// Content blocks opened so far; the open one's index is one less.
    blocks: u64,
    /// OpenAI indexes of the tool calls begun.
    tools: Vec<u64>,
    stop_reason: Option<&'static str>,
    usage: Usage,
    /// `message_stop` or an error was written: nothing follows.
    ended: bool,
}

impl Stream {
    pub fn new(req: &ChatRequest) -> Self {
        let state = StreamState {
            model: req.model.clone(),
            started: false,
            open: None,
            blocks: 0,
            tools: Vec::new(),
            stop_reason: None,
            usage: Usage::default(),
            ended: false,
        };
        Stream { decoder: SseDecoder::new(), state }
    }
}

impl StreamEncoder for Stream {
    fn push(&mut self, openai: &[u8], out: &mut Vec<u8>) {
        let Self { decoder, state } = self;
        decoder.push(openai, |event| state.on_event(event, out));
    }
}

fn emit(out: &mut Vec<u8>, event: &str, data: Value) {
    write_event(out, Some(event), &data.to_string());
}

impl StreamState {
    fn on_event(&mut self, event: Event<'_>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let Some(data) = event.data.as_deref() else {
            // Comments keep an idle connection open, and SSE clients skip them in any format.
            out.extend_from_slice(event.raw);
            return;
        };
        if data == "[DONE]" {
            return self.done(out);
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data.as_bytes()) else { return };
        if let Some(error) = chunk.error {
            return self.fail(&error, out);
        }
        self.start(&chunk.id, out);
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                self.text(delta.content.as_deref().unwrap_or_default(), out);
                self.text(delta.refusal.as_deref().unwrap_or_default(), out);
                for call in delta.tool_calls.unwrap_or_default() {
                    self.tool_call(call, out);
                    if self.ended {
                        return;
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.close(out);
                self.stop_reason = Some(stop_reason(Some(&reason)));
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage.into();
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let message = json!({
            "id": message_id(id), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        emit(out, "message_start", json!({"type": "message_start", "message": message}));
    }

    fn open_block(&mut self, block: Block, content_block: Value, out: &mut Vec<u8>) {
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some(block);
        let start = json!({"type": "content_block_start", "index": index, "content_block": content_block});
        emit(out, "content_block_start", start);
    }

    fn delta(&self, delta: Value, out: &mut Vec<u8>) {
        emit(
            out,
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.blocks - 1, "delta": delta}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            emit(out, "content_block_stop", json!({"type": "content_block_stop", "index": self.blocks - 1}));
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(Block::Text) {
            self.open_block(Block::Text, json!({"type": "text", "text": ""}), out);
        }
        self.delta(json!({"type": "text_delta", "text": text}), out);
    }

    fn tool_call(&mut self, call: ToolCallDelta, out: &mut Vec<u8>) {
        let function = call.function.unwrap_or_default();
        if self.open != Some(Block::Tool(call.index)) {
            // OpenAI streams one call after the other; a closed block cannot be reopened.
            if self.tools.contains(&call.index) {
                let message = "The provider interleaved the arguments of parallel tool calls; the answer cannot be streamed in Anthropic's format.";
                return self.fail(&ChunkError { message: message.into(), code: Value::Null }, out);
            }
            self.tools.push(call.index);
            let name = function.name.unwrap_or_default();
            let block = json!({"type": "tool_use", "id": call.id.unwrap_or_default(), "name": name, "input": {}});
            self.open_block(Block::Tool(call.index), block, out);
        }
        if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
            self.delta(json!({"type": "input_json_delta", "partial_json": arguments}), out);
        }
    }

    /// At `[DONE]`. Without a finish reason the answer is incomplete, which the gateway
    /// reports with an error event of its own rather than an invented ending.
    fn done(&mut self, out: &mut Vec<u8>) {
        let Some(stop_reason) = self.stop_reason else { return };
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": anthropic_usage(self.usage),
        });
        emit(out, "message_delta", delta);
        emit(out, "message_stop", json!({"type": "message_stop"}));
        self.ended = true;
    }

    fn fail(&mut self, error: &ChunkError, out: &mut Vec<u8>) {
        let kind = if error.code == "upstream_overloaded" { "overloaded_error" } else { "api_error" };
        write_error_event(out, kind, &error.message);
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::anthropic::fixtures::{parse_ok, request, user};
    use crate::model::error::GatewayError;
    use crate::providers::{anthropic::Anthropic, Provider};

    /// An OpenAI stream as OpenAI sends it with usage requested: a keep-alive comment, the
    /// role chunk, text with a multi-byte character to split inside, two tool calls whose
    /// arguments arrive in pieces, the finish, the usage chunk, `[DONE]`.
    const OPENAI_STREAM: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caf\u{e9} \"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"time.\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\" \\\"Paris\\\"}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":42,\"total_tokens\":92,\"prompt_tokens_details\":{\"cached_tokens\":30}}}\n\n",
        "data: [DONE]\n\n",
    );

    fn encode(input: &[u8], cuts: &[usize]) -> String {
        let mut stream = Stream::new(&request());
        let mut out = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            stream.push(&input[last..cut], &mut out);
            last = cut;
        }
        String::from_utf8(out).unwrap()
    }

    /// (event name, data) of each event; `None` names a comment.
    fn events(out: &str) -> Vec<(Option<String>, Value)> {
        let mut all = Vec::new();
        SseDecoder::new().push(out.as_bytes(), |e| {
            let data = e.data.as_deref().map_or(Value::Null, |d| serde_json::from_str(d).unwrap());
            all.push((e.event.map(str::to_string), data));
        });
        all
    }

    fn event(name: &str, data: Value) -> (Option<String>, Value) {
        assert_eq!(data["type"], name, "Anthropic repeats the event name as the data's type");
        (Some(name.to_string()), data)
    }

    fn block_delta(index: u64, delta: Value) -> (Option<String>, Value) {
        event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}))
    }

    fn block_stop(index: u64) -> (Option<String>, Value) {
        event("content_block_stop", json!({"type": "content_block_stop", "index": index}))
    }

    fn message_start() -> (Option<String>, Value) {
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_chatcmpl-9", "type": "message",
                "role": "assistant", "model": "fast", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        )
    }

    #[test]
    fn an_openai_stream_becomes_anthropics_event_sequence() {
        let out = encode(OPENAI_STREAM.as_bytes(), &[]);
        assert!(out.starts_with(": keep-alive\n\nevent: message_start\ndata: {"), "{out}");
        let tool = |index: u64, id: &str, name: &str| {
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            )
        };
        assert_eq!(
            events(&out),
            vec![
                (None, Value::Null),
                message_start(),
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}})
                ),
                block_delta(0, json!({"type": "text_delta", "text": "Caf\u{e9} "})),
                block_delta(0, json!({"type": "text_delta", "text": "time."})),
                block_stop(0),
                tool(1, "call_a", "get_weather"),
                block_delta(1, json!({"type": "input_json_delta", "partial_json": "{\"city\":"})),
                block_delta(1, json!({"type": "input_json_delta", "partial_json": " \"Paris\"}"})),
                block_stop(1),
                tool(2, "call_b", "now"),
                block_delta(2, json!({"type": "input_json_delta", "partial_json": "{}"})),
                block_stop(2),
                event(
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                    "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30,
                        "output_tokens": 42}})
                ),
                event("message_stop", json!({"type": "message_stop"})),
            ]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let input = OPENAI_STREAM.as_bytes();
        let whole = encode(input, &[]);
        for cut in 0..=input.len() {
            assert_eq!(encode(input, &[cut]), whole, "cut at {cut}");
        }
        let bytes: Vec<usize> = (1..input.len()).collect();
        assert_eq!(encode(input, &bytes), whole, "byte at a time");
    }

    /// What Anthropic streams, translated by the Anthropic provider to OpenAI chunks and
    /// back by this ingress: an Anthropic client of an Anthropic deployment.
    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Gr\u{fc}\u{df}e\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn through_the_anthropic_provider(input: &[u8], cut: usize) -> (String, Usage) {
        let req = parse_ok(json!({"model": "claude", "max_tokens": 5, "stream": true, "messages": [user(json!("x"))]}));
        let mut provider = Anthropic.stream(&req);
        let mut encoder = Stream::new(&req);
        let mut out = Vec::new();
        for piece in [&input[..cut], &input[cut..]] {
            let mut openai = Vec::new();
            provider.push(piece, &mut openai);
            encoder.push(&openai, &mut out);
        }
        (String::from_utf8(out).unwrap(), provider.consumed().billed)
    }

    #[test]
    fn an_anthropic_stream_round_trips_through_the_canonical_form() {
        let input = ANTHROPIC_STREAM.as_bytes();
        let (out, usage) = through_the_anthropic_provider(input, 0);
        let events = events(&out);
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["id"], "msg_02");
        assert_eq!(events[2].1["delta"]["text"], "Gr\u{fc}\u{df}e");
        assert_eq!(
            events[4].1["content_block"],
            json!({"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}})
        );
        assert_eq!(events[5].1["delta"]["partial_json"], "{\"city\": \"Paris\"}");
        assert_eq!(events[7].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            events[7].1["usage"],
            json!({"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30, "output_tokens": 42})
        );
        assert_eq!((usage.input_tokens, usage.output_tokens), (50, 42), "the ledger's usage");
        for cut in 1..=input.len() {
            assert_eq!(through_the_anthropic_provider(input, cut).0, out, "cut at {cut}");
        }
    }

    #[test]
    fn an_error_chunk_becomes_an_error_event_and_ends_the_stream() {
        let second_text = OPENAI_STREAM.find("time.").unwrap();
        let cut = OPENAI_STREAM[..second_text].rfind("data:").unwrap();
        let error = |code: &str| {
            let e = GatewayError::new(502, "upstream_error", "x", "The provider ended the stream with an error");
            let mut input = OPENAI_STREAM[..cut].to_string();
            input += &format!("data: {}\n\n", e.to_json().replace("\"x\"", &format!("\"{code}\"")));
            input += &OPENAI_STREAM[cut..];
            events(&encode(input.as_bytes(), &[]))
        };
        let overloaded = error("upstream_overloaded");
        assert_eq!(overloaded.len(), 5, "comment, start, text block start and delta, the error; nothing after");
        assert_eq!(
            overloaded.last().unwrap(),
            &event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error",
                "message": "The provider ended the stream with an error"}})
            )
        );
        assert_eq!(error("stream_cut").last().unwrap().1["error"]["type"], "api_error");
        assert_eq!(error("upstream_failed").last().unwrap().1["error"]["type"], "api_error");
    }

    #[test]
    fn no_ending_is_invented_for_an_incomplete_stream() {
        let before_finish = OPENAI_STREAM.find("data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},").unwrap();
        let cut_then_done = format!("{}data: [DONE]\n\n", &OPENAI_STREAM[..before_finish]);
        let out = encode(cut_then_done.as_bytes(), &[]);
        assert!(!out.contains("message_delta") && !out.contains("message_stop"), "{out}");
        assert!(out.ends_with("\n\n"), "an open block stays open for the gateway's error event");
        let mut cut = String::from_utf8(crate::wire::openai::stream_error_event(&GatewayError::new(
            502,
            "upstream_error",
            "stream_cut",
            "cut",
        )))
        .unwrap();
        cut.insert_str(0, &OPENAI_STREAM[..before_finish]);
        assert_eq!(events(&encode(cut.as_bytes(), &[])).last().unwrap().1["error"]["type"], "api_error");
    }

    #[test]
    fn interleaved_tool_calls_end_with_an_error_rather_than_a_wrong_answer() {
        let chunk = |call: Value| {
            format!("data: {}\n\n", json!({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}))
        };
        let input = [
            chunk(json!({"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}})),
            chunk(json!({"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}})),
            chunk(json!({"index": 0, "function": {"arguments": "}"}})),
            chunk(json!({"index": 1, "function": {"arguments": ""}})),
        ]
        .concat();
        let events = events(&encode(input.as_bytes(), &[]));
        let (name, data) = events.last().unwrap();
        assert_eq!((name.as_deref(), &data["error"]["type"]), (Some("error"), &json!("api_error")));
        assert_eq!(events.iter().filter(|(n, _)| n.as_deref() == Some("content_block_delta")).count(), 2);
    }

    #[test]
    fn refusal_text_and_other_choices() {
        let input = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"No.\"}},{\"index\":1,\"delta\":{\"content\":\"other\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let events = events(&encode(input.as_bytes(), &[]));
        assert_eq!(events[2].1["delta"], json!({"type": "text_delta", "text": "No."}));
        assert!(!events.iter().any(|(_, d)| d["delta"]["text"] == "other"), "only the first choice is the answer");
        assert_eq!(events[4].1["delta"]["stop_reason"], "refusal");
        assert_eq!(events[4].1["usage"]["output_tokens"], 0);
    }
}

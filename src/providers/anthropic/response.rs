//! Response: an Anthropic message → OpenAI `chat.completion`.
//!
//! Per Anthropic's API reference: the Messages response ("Messages") and its `usage`. The
//! client side is OpenAI's Chat Completions reference.

use crate::model::usage::Usage;
use crate::providers::canonical::{self, Identity};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
pub(super) struct WireMessage {
    pub(super) id: String,
    pub(super) model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    pub(super) usage: WireUsage,
}

/// Only the block types a translated request can produce; thinking and server-tool blocks
/// need request options only native requests carry, whose answers are not translated.
///
/// This enum and the two `type`-tagged ones of `stream` are read through a flat struct
/// (`try_from`): serde's internally tagged enums buffer each value and monomorphise every
/// field type a second time, tens of KB of wasm.
#[derive(Deserialize)]
#[serde(try_from = "FlatBlock")]
pub(super) enum WireBlock {
    Text { text: String },
    ToolUse { id: String, name: String, input: Value },
    Other,
}

#[derive(Deserialize)]
struct FlatBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    input: Value,
}

impl TryFrom<FlatBlock> for WireBlock {
    type Error = &'static str;

    fn try_from(b: FlatBlock) -> Result<Self, Self::Error> {
        Ok(match b.kind.as_str() {
            "text" => WireBlock::Text { text: b.text.ok_or("text block without text")? },
            "tool_use" => WireBlock::ToolUse {
                id: b.id.ok_or("tool_use block without id")?,
                name: b.name.ok_or("tool_use block without name")?,
                input: b.input,
            },
            _ => WireBlock::Other,
        })
    }
}

/// The values of `usage.inference_geo` (Anthropic's Usage API: `us`, `global`, and
/// `not_available` for models that take no `inference_geo`).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum InferenceGeo {
    Us,
    Global,
    NotAvailable,
    #[serde(other)]
    Other,
}

impl InferenceGeo {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Us => "us",
            Self::Global => "global",
            Self::NotAvailable => "not_available",
            Self::Other => "other",
        }
    }
}

/// Anthropic's `usage.server_tool_use`: web searches are billed per search (web fetches
/// and code execution cost tokens only, or container time Anthropic bills apart).
#[derive(Deserialize, Default, Clone, Copy)]
struct ServerToolUse {
    #[serde(default)]
    web_search_requests: Option<u64>,
}

/// Where a whole answer says inference ran.
pub(super) fn reported_geo(body: &[u8]) -> Option<&'static str> {
    let message = serde_json::from_slice::<WireMessage>(body).ok()?;
    message.usage.inference_geo.map(InferenceGeo::as_str)
}

/// Anthropic's counts: `input_tokens` excludes the cached ones, which are counted apart.
/// Every field is optional because streamed `message_delta` events update only some.
#[derive(Deserialize, Default, Clone, Copy)]
pub(super) struct WireUsage {
    /// Where inference ran (`usage.inference_geo`).
    #[serde(default)]
    pub(super) inference_geo: Option<InferenceGeo>,
    /// What server tools ran; a stream reports it in `message_delta`.
    #[serde(default)]
    server_tool_use: Option<ServerToolUse>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    pub(super) fn update(&mut self, newer: WireUsage) {
        self.inference_geo = newer.inference_geo.or(self.inference_geo);
        self.server_tool_use = newer.server_tool_use.or(self.server_tool_use);
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = newer.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = newer.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
    }

    pub(super) fn total(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0) + cached + written,
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: cached,
            cache_write_tokens: written,
            web_searches: self.server_tool_use.and_then(|s| s.web_search_requests).unwrap_or(0),
        }
    }
}

pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, and pause_turn (a server tool's turn was paused).
        _ => "stop",
    }
}

pub(super) fn completion(message: &WireMessage, created: u64, usage: Usage) -> Value {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match block {
            WireBlock::Text { text: t } => text.get_or_insert_with(String::new).push_str(t),
            WireBlock::ToolUse { id, name, input } => tool_calls.push(canonical::tool_call(id, name, input)),
            WireBlock::Other => {}
        }
    }
    let identity = Identity { id: message.id.clone(), model: message.model.clone(), created };
    identity.completion(text, tool_calls, finish_reason(message.stop_reason.as_deref()), usage)
}

#[cfg(test)]
mod tests {
    use crate::model::error_class::ErrorClass;
    use crate::model::usage::Usage;
    use crate::providers::anthropic::test_support::{parse, user};
    use crate::providers::anthropic::Anthropic;
    use crate::providers::Provider;
    use serde_json::{json, Value};

    fn anthropic_message(content: Value, stop_reason: &str) -> Vec<u8> {
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5}
        })
        .to_string()
        .into_bytes()
    }

    fn respond(content: Value, stop_reason: &str) -> (Value, Option<Usage>) {
        let req = parse(json!({"model": "m", "messages": [user(json!("x"))]}));
        let (body, usage) = Anthropic.response(&req, anthropic_message(content, stop_reason)).unwrap();
        (serde_json::from_slice(&body).unwrap(), usage)
    }

    #[test]
    fn text_response_becomes_a_chat_completion_with_cache_usage() {
        let (body, usage) =
            respond(json!([{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]), "end_turn");
        assert_eq!(
            body,
            json!({
                "id": "msg_01", "object": "chat.completion", "created": 1_750_000_000,
                "model": "claude-sonnet-4-5-20250929",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello there", "refusal": null}}],
                "usage": {"prompt_tokens": 115, "completion_tokens": 7, "total_tokens": 122,
                    "prompt_tokens_details": {"cached_tokens": 100}},
            })
        );
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 115,
                output_tokens: 7,
                cached_input_tokens: 100,
                cache_write_tokens: 5,
                web_searches: 0
            })
        );
    }

    #[test]
    fn tool_use_response_becomes_tool_calls() {
        let (body, _) = respond(
            json!([{"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}]),
            "tool_use",
        );
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Checking.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        let (only_tool, _) = respond(json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}]), "tool_use");
        assert_eq!(only_tool["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn every_stop_reason_maps() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
        ] {
            let (body, _) = respond(json!([{"type": "text", "text": "x"}]), stop);
            assert_eq!(body["choices"][0]["finish_reason"], finish, "{stop}");
        }
    }

    #[test]
    fn a_response_that_is_not_a_message_is_a_server_error() {
        let req = parse(json!({"model": "m", "messages": [user(json!("x"))]}));
        assert_eq!(Anthropic.response(&req, b"garbage".to_vec()).unwrap_err(), ErrorClass::Server);
        assert_eq!(Anthropic.response(&req, b"{}".to_vec()).unwrap_err(), ErrorClass::Server);
    }
}

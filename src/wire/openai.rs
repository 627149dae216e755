//! OpenAI Chat Completions shapes the gateway reads and writes in more than one place:
//! the usage object, and the error event that ends a stream.

use crate::model::error::GatewayError;
use crate::model::usage::Usage;
use crate::util::sse::write_event;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<WireDetails>,
}

#[derive(Deserialize)]
struct WireDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
            ..Usage::default()
        }
    }
}

/// OpenAI's usage object already parsed into a JSON value, read as `WireUsage` reads it:
/// absent counts are 0, and a field of another type makes the whole unreadable. (Without
/// a second, Value-based copy of its deserializer.)
pub fn usage_of(u: &Value) -> Option<Usage> {
    fn count(v: Option<&Value>) -> Option<u64> {
        v.map_or(Some(0), Value::as_u64)
    }
    let u = u.as_object()?;
    let cached = match u.get("prompt_tokens_details") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) => match d.get("cached_tokens") {
            None | Some(Value::Null) => None,
            Some(c) => Some(c.as_u64()?),
        },
        Some(_) => return None,
    };
    Some(Usage {
        input_tokens: count(u.get("prompt_tokens"))?,
        output_tokens: count(u.get("completion_tokens"))?,
        cached_input_tokens: cached.unwrap_or(0),
        ..Usage::default()
    })
}

/// The error event that ends a stream the gateway could not complete; OpenAI's SDKs raise
/// an API error when a chunk carries `error`.
pub fn stream_error_event(error: &GatewayError) -> Vec<u8> {
    let mut out = Vec::new();
    write_event(&mut out, None, &error.to_json());
    out
}

/// A `chat.completion.chunk`, as far as the gateway reads one: the relay watches it for
/// content, the end and usage; the Anthropic ingress re-encodes it.
#[derive(Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    pub error: Option<ChunkError>,
}

#[derive(Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u64,
    #[serde(default)]
    pub delta: Option<Delta>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u64,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Deserialize, Default)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Deserialize)]
pub struct ChunkError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: Value,
}

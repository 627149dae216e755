//! Anthropic Messages API (api.anthropic.com and hosts speaking the same format).
//!
//! Wire format per Anthropic's API reference (platform.claude.com/docs): `POST
//! {base}/messages` with `x-api-key` and `anthropic-version: 2023-06-01`; the Messages
//! request and response shapes ("Messages", "Tool use": `tool_use` / `tool_result` blocks,
//! `tool_choice` auto/any/tool/none with `disable_parallel_tool_use`; "Vision": base64 and
//! URL image sources); the streaming event flow ("Streaming Messages": `message_start`,
//! `content_block_start` / `_delta` (`text_delta`, `input_json_delta`) / `_stop`,
//! `message_delta` with cumulative usage, `message_stop`, `ping`, `error`; event types not
//! listed there are to be ignored); the error body `{"type":"error","error":{type,message}}`
//! and its statuses ("Errors": 529 `overloaded_error`). The client side is OpenAI's Chat
//! Completions reference, as in `openai.rs`.

use super::canonical::{self, asks_nothing, refused_detail, Chunks, Cx, Identity, ToolChoice, IGNORED};
use super::{Auth, CountsTokens, Provider, SpeaksMessages, StreamEnd, StreamTranslator, UpstreamRequest};
use crate::config::Deployment;
use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::util::sse::SseDecoder;
use crate::wire::openai::stream_error_event;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub struct Anthropic;

const API_VERSION: &str = "2023-06-01";

/// Anthropic requires `max_tokens`; OpenAI clients may leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The image types Anthropic accepts in a base64 source.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

fn headers(auth: &Auth) -> Vec<(&'static str, String)> {
    let mut headers =
        vec![("content-type", "application/json".to_string()), ("anthropic-version", API_VERSION.to_string())];
    if let Some(key) = &auth.api_key {
        headers.push(("x-api-key", key.to_string()));
    }
    headers
}

impl Provider for Anthropic {
    fn messages(&self, _d: &Deployment) -> Option<&'static dyn SpeaksMessages> {
        Some(&Anthropic)
    }

    fn counts(&self, _d: &Deployment) -> Option<&'static dyn CountsTokens> {
        Some(&Anthropic)
    }

    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = request_body(&Cx { provider: "anthropic", deployment: &d.id }, &d.model, req)?;
        let body = serde_json::to_vec(&body).expect("a JSON map serialises");
        Ok(UpstreamRequest { url: format!("{}/messages", d.base_url), headers: headers(auth), body })
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        let message = serde_json::from_slice::<WireMessage>(&body).map_err(|_| ErrorClass::Server)?;
        let usage = message.usage.total();
        let completion = completion(&message, req.received_at, usage);
        Ok((completion.to_string().into_bytes(), Some(usage)))
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        // Read as a `Value`: a typed parse of a cold path costs its own deserializer.
        let error = serde_json::from_slice::<Value>(body).unwrap_or_default();
        let message = error["error"]["message"].as_str().unwrap_or_default().to_ascii_lowercase();
        if error["error"]["type"] == "overloaded_error" {
            return ErrorClass::Overloaded;
        }
        ErrorClass::of_status(status, || match status {
            // 402 is Anthropic's billing_error: like bad credentials, the operator's to fix.
            402 => ErrorClass::Auth,
            _ if is_context_length(&message) => ErrorClass::ContextLength,
            _ => ErrorClass::BadRequest,
        })
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        let chunks = Chunks {
            identity: Identity { created: req.received_at, ..Identity::default() },
            wants_usage: req.client_wants_usage,
        };
        let state = StreamState { chunks, ..StreamState::default() };
        Box::new(Translator { decoder: SseDecoder::new(), state })
    }
}

/// A client's Messages body, sent to `{base}{path}` as it came but for the deployment's
/// model, with the client's betas.
fn as_sent(d: &Deployment, path: &str, body: &Map<String, Value>, beta: Option<&str>, auth: &Auth) -> UpstreamRequest {
    let mut body = body.clone();
    body.insert("model".into(), d.model.clone().into());
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
pub fn native_stream() -> Box<dyn StreamTranslator> {
    let state = StreamState { every_delta_is_content: true, ..StreamState::default() };
    Box::new(Native { reader: Translator { decoder: SseDecoder::new(), state }, unused: Vec::new() })
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

    fn usage(&self) -> Option<Usage> {
        self.reader.usage()
    }

    fn cut_event(&self, e: &GatewayError) -> Vec<u8> {
        crate::wire::anthropic::stream_error_event(e)
    }
}

/// Anthropic's wordings for an input that does not fit: "prompt is too long: N tokens >
/// M maximum", and "input length and `max_tokens` exceed context limit".
fn is_context_length(message: &str) -> bool {
    message.contains("prompt is too long") || message.contains("context limit") || message.contains("context window")
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI Chat Completions → Anthropic Messages.

pub(super) fn request_body(cx: &Cx, model: &str, req: &ChatRequest) -> Result<Map<String, Value>, GatewayError> {
    let body = req.body();
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    out.insert("max_tokens".into(), DEFAULT_MAX_TOKENS.into());
    // OpenAI treats a null field as an absent one.
    for (key, value) in body.iter().filter(|(_, v)| !v.is_null()) {
        match key.as_str() {
            "model" | "tool_choice" | "parallel_tool_calls" | "user" | "safety_identifier" => {}
            "messages" => {
                let (system, messages) = conversation(cx, value)?;
                if !system.is_empty() {
                    out.insert("system".into(), system.join("\n\n").into());
                }
                out.insert("messages".into(), messages.into());
            }
            // The newer name wins when a client sends both.
            "max_tokens" if body.get("max_completion_tokens").is_some_and(|v| !v.is_null()) => {}
            "max_tokens" | "max_completion_tokens" => {
                out.insert("max_tokens".into(), value.clone());
            }
            "temperature" if value.as_f64().is_some_and(|t| t > 1.0) => {
                return Err(cx.unsupported("temperature", " above 1 (Anthropic's range is 0 to 1)"));
            }
            "temperature" | "top_p" => {
                out.insert(key.clone(), value.clone());
            }
            "stream" => {
                out.insert("stream".into(), req.stream.into());
            }
            "stop" => {
                out.insert("stop_sequences".into(), cx.stop_sequences(value)?);
            }
            "tools" => {
                out.insert("tools".into(), tools(cx, value)?);
            }
            k if IGNORED.contains(&k) || asks_nothing(k, value) => {}
            k => return Err(cx.unsupported(k, &refused_detail(k, value))),
        }
    }
    if let Some(choice) = tool_choice(cx, body)? {
        out.insert("tool_choice".into(), choice);
    }
    // `safety_identifier` replaces OpenAI's `user`; both identify the end user.
    if let Some(user) = ["safety_identifier", "user"].iter().find_map(|k| body.get(*k).filter(|v| !v.is_null())) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    Ok(out)
}

fn tools(cx: &Cx, tools: &Value) -> Result<Value, GatewayError> {
    let tools = cx.function_tools(tools)?.into_iter().map(|f| {
        let mut tool = json!({"name": f.name, "input_schema": f.parameters});
        if let Some(description) = f.description {
            tool["description"] = description.clone();
        }
        tool
    });
    Ok(tools.collect())
}

fn tool_choice(cx: &Cx, body: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    let parallel_off = body.get("parallel_tool_calls") == Some(&Value::Bool(false));
    let offers_tools = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    let mut choice = match cx.tool_choice(body)? {
        None if parallel_off && offers_tools => json!({"type": "auto"}),
        None => return Ok(None),
        Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::None) => json!({"type": "none"}),
        Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
    };
    // `none` takes no such flag; no tool use means no parallel tool use either.
    if parallel_off && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = true.into();
    }
    Ok(Some(choice))
}

/// The system prompt (every system and developer message, in order) and the turns.
/// Anthropic wants user and assistant turns to alternate, so consecutive messages that
/// land on the same role (tool results are user content) are merged into one turn.
fn conversation(cx: &Cx, messages: &Value) -> Result<(Vec<String>, Vec<Value>), GatewayError> {
    let messages = messages.as_array().ok_or_else(|| cx.invalid("messages", "must be an array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = cx.object(&path, message)?;
        let (role, blocks) = match message.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                system.extend(system_text(cx, &path, message)?);
                continue;
            }
            "user" => ("user", user_blocks(cx, &path, message)?),
            "assistant" => ("assistant", assistant_blocks(cx, &path, message)?),
            "tool" => ("user", vec![tool_result(cx, &path, message)?]),
            role => return Err(cx.unsupported(&format!("{path}.role"), &format!(" `{role}`"))),
        };
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok((system, turns))
}

/// `name` is accepted on every role and not sent: it only labels participants, Anthropic
/// has no such field, and agent frameworks set it on every message.
fn system_text(cx: &Cx, path: &str, message: &Map<String, Value>) -> Result<Vec<String>, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "name"])?;
    let blocks = content_blocks(cx, path, message.get("content"), &["text"])?;
    Ok(blocks.into_iter().filter_map(|b| b["text"].as_str().map(str::to_string)).collect())
}

fn user_blocks(cx: &Cx, path: &str, message: &Map<String, Value>) -> Result<Vec<Value>, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "name"])?;
    content_blocks(cx, path, message.get("content"), &["text", "image_url", "file"])
}

fn assistant_blocks(cx: &Cx, path: &str, message: &Map<String, Value>) -> Result<Vec<Value>, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "name", "tool_calls", "refusal"])?;
    let mut blocks = content_blocks(cx, path, message.get("content"), &["text", "refusal"])?;
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        blocks.push(text_block(refusal));
    }
    // OpenAI histories carry `content: ""` beside tool calls; Anthropic rejects empty text.
    blocks.retain(|b| b["text"] != "");
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls.as_array().ok_or_else(|| cx.invalid(&format!("{path}.tool_calls"), "must be an array"))?;
        for (j, call) in calls.iter().enumerate() {
            blocks.push(tool_use(cx, &format!("{path}.tool_calls[{j}]"), call)?);
        }
    }
    Ok(blocks)
}

fn tool_use(cx: &Cx, path: &str, call: &Value) -> Result<Value, GatewayError> {
    let call = cx.tool_call(path, call)?;
    Ok(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}))
}

fn tool_result(cx: &Cx, path: &str, message: &Map<String, Value>) -> Result<Value, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "tool_call_id"])?;
    let id = cx.string(&format!("{path}.tool_call_id"), message.get("tool_call_id").unwrap_or(&Value::Null))?;
    let content = match message.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        other => Value::Array(content_blocks(cx, path, other, &["text"])?),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// A message's `content` (a string, an array of parts, or nothing) as Anthropic blocks,
/// accepting only the part types in `allowed`.
fn content_blocks(cx: &Cx, path: &str, content: Option<&Value>, allowed: &[&str]) -> Result<Vec<Value>, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text_block(text)]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| content_part(cx, &format!("{path}.content[{j}]"), part, allowed))
            .collect(),
        Some(_) => Err(cx.invalid(&format!("{path}.content"), "must be a string or an array of content parts")),
    }
}

fn content_part(cx: &Cx, path: &str, part: &Value, allowed: &[&str]) -> Result<Value, GatewayError> {
    let part = cx.object(path, part)?;
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    if !allowed.contains(&kind) {
        return Err(cx.unsupported(&format!("{path}.type"), &format!(" `{kind}`")));
    }
    cx.check_keys(path, part, &["type", kind])?;
    let field = format!("{path}.{kind}");
    let inner = part.get(kind).unwrap_or(&Value::Null);
    match kind {
        "image_url" => image(cx, &field, inner),
        "file" => document(cx, &field, inner),
        _ => Ok(text_block(cx.string(&field, inner)?)),
    }
}

/// `detail` is accepted and not sent: it trades OpenAI's image cost against fidelity, and
/// Anthropic has no such choice.
fn image(cx: &Cx, path: &str, image: &Value) -> Result<Value, GatewayError> {
    let image = cx.object(path, image)?;
    cx.check_keys(path, image, &["url", "detail"])?;
    let url_path = format!("{path}.url");
    let url = cx.string(&url_path, image.get("url").unwrap_or(&Value::Null))?;
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    let (media_type, data) = data_url(cx, &url_path, url)?;
    if !IMAGE_TYPES.contains(&media_type) {
        return Err(cx.unsupported(&url_path, &format!(" with media type `{media_type}`")));
    }
    Ok(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}))
}

/// OpenAI's inline file part; Anthropic takes inline PDFs as document blocks.
fn document(cx: &Cx, path: &str, file: &Value) -> Result<Value, GatewayError> {
    let file = cx.object(path, file)?;
    cx.check_keys(path, file, &["file_data", "filename"])?;
    let data_path = format!("{path}.file_data");
    let (media_type, data) = data_url(cx, &data_path, cx.string(&data_path, &file["file_data"])?)?;
    if media_type != "application/pdf" {
        return Err(cx.unsupported(&data_path, &format!(" with media type `{media_type}`")));
    }
    Ok(json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}))
}

fn data_url<'u>(cx: &Cx, path: &str, url: &'u str) -> Result<(&'u str, &'u str), GatewayError> {
    canonical::data_url(url).ok_or_else(|| cx.invalid(path, "must be an http(s) URL or a base64 `data:` URL"))
}

// ---------------------------------------------------------------------------------------
// Response: Anthropic message → OpenAI `chat.completion`.

#[derive(Deserialize)]
struct WireMessage {
    id: String,
    model: String,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

/// Only the block types a translated request can produce; thinking and server-tool blocks
/// need request options only native requests carry, whose answers are not translated.
///
/// This enum and the other two `type`-tagged ones are read through a flat struct
/// (`try_from`): serde's internally tagged enums buffer each value and monomorphise every
/// field type a second time, tens of KB of wasm.
#[derive(Deserialize)]
#[serde(try_from = "FlatBlock")]
enum WireBlock {
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

/// Anthropic's counts: `input_tokens` excludes the cached ones, which are counted apart.
/// Every field is optional because streamed `message_delta` events update only some.
#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
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
    fn update(&mut self, newer: WireUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = newer.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = newer.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
    }

    fn total(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0) + cached + written,
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: cached,
            cache_write_tokens: written,
        }
    }
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, and pause_turn (a server tool's turn was paused).
        _ => "stop",
    }
}

fn completion(message: &WireMessage, created: u64, usage: Usage) -> Value {
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

// ---------------------------------------------------------------------------------------
// Stream: Anthropic events → OpenAI `chat.completion.chunk`s.

#[derive(Deserialize)]
#[serde(try_from = "FlatEvent")]
enum WireEvent {
    MessageStart {
        message: StartedMessage,
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
    message: Option<StartedMessage>,
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

#[derive(Deserialize)]
struct StartedMessage {
    id: String,
    model: String,
    #[serde(default)]
    usage: WireUsage,
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

struct Translator {
    decoder: SseDecoder,
    state: StreamState,
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
    use super::*;
    use crate::model::chat;
    use crate::util::valueread::FromValue;

    fn deployment() -> Deployment {
        Deployment::read(&json!({
            "id": "claude-eu", "provider": "anthropic", "model": "claude-sonnet-4-5",
            "base_url": "https://api.anthropic.com/v1", "jurisdiction": "eu", "region": "eu", "price": {"input": "1", "output": "1"}
        }))
        .unwrap()
    }

    fn parse(body: Value) -> ChatRequest {
        let mut req = chat::parse(body.to_string().as_bytes()).unwrap();
        req.received_at = 1_750_000_000;
        req
    }

    fn build(body: Value) -> Result<Value, GatewayError> {
        let up = Anthropic.build(
            &deployment(),
            &parse(body),
            &Auth { api_key: Some("sk-ant-test".into()), ..Auth::default() },
        )?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    fn refused(body: Value) -> GatewayError {
        build(body).unwrap_err()
    }

    fn user(content: Value) -> Value {
        json!({"role": "user", "content": content})
    }

    #[test]
    fn request_targets_messages_with_anthropic_headers() {
        let req = parse(json!({"model": "fast", "messages": [user(json!("hi"))]}));
        let up = Anthropic
            .build(&deployment(), &req, &Auth { api_key: Some("sk-ant-test".into()), ..Auth::default() })
            .unwrap();
        assert_eq!(up.url, "https://api.anthropic.com/v1/messages");
        assert!(up.headers.contains(&("x-api-key", "sk-ant-test".into())));
        assert!(up.headers.contains(&("anthropic-version", "2023-06-01".into())));
        assert!(up.headers.contains(&("content-type", "application/json".into())));
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            body,
            json!({"model": "claude-sonnet-4-5", "max_tokens": 4096,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
        let keyless = Anthropic.build(&deployment(), &req, &Auth::default()).unwrap();
        assert!(!keyless.headers.iter().any(|(k, _)| *k == "x-api-key"));
    }

    #[test]
    fn system_and_developer_messages_are_hoisted_and_turns_merged() {
        let body = build(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            user(json!("one")),
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "two", "name": "alice"},
            {"role": "assistant", "content": "Deux."},
        ]}))
        .unwrap();
        assert_eq!(body["system"], "Be brief.\n\nAnswer in French.");
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Deux."}]},
            ])
        );
        let e = refused(json!({"model": "m", "messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}));
        assert!(e.message.contains("`messages[0].content[0].type` `image_url`"), "{}", e.message);
    }

    #[test]
    fn multi_part_content_with_base64_and_url_images() {
        let body = build(json!({"model": "m", "messages": [user(json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        ]))]}))
        .unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
            ])
        );
        let image = |url: &str| {
            refused(
                json!({"model": "m", "messages": [user(json!([{"type": "image_url", "image_url": {"url": url}}]))]}),
            )
        };
        assert!(image("data:image/tiff;base64,AAAA").message.contains("`image/tiff`"));
        assert_eq!(image("ftp://x/y.png").code, "invalid_request");
        let audio = refused(json!({"model": "m", "messages": [user(json!([
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]))]}));
        assert!(audio.message.contains("`input_audio`") && audio.message.contains("anthropic"));
    }

    #[test]
    fn tools_tool_calls_and_merged_tool_results() {
        let body = build(json!({"model": "m",
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "now"}},
            ],
            "tool_choice": "required", "parallel_tool_calls": false,
            "messages": [
                user(json!("Weather in Paris and Rome?")),
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
                user(json!("Thanks")),
            ]}))
        .unwrap();
        assert_eq!(
            body["tools"],
            json!([
                {"name": "get_weather", "description": "Weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert_eq!(body["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "text", "text": "Thanks"},
                ]},
            ])
        );
    }

    #[test]
    fn tool_choice_modes() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let choice = |choice: Value, parallel: Value| {
            let body = json!({"model": "m", "messages": [user(json!("x"))], "tools": tools,
                "tool_choice": choice, "parallel_tool_calls": parallel});
            build(body).map(|b| b["tool_choice"].clone())
        };
        assert_eq!(choice(json!("auto"), Value::Null).unwrap(), json!({"type": "auto"}));
        assert_eq!(choice(json!("none"), json!(false)).unwrap(), json!({"type": "none"}));
        assert_eq!(choice(Value::Null, json!(true)).unwrap(), Value::Null);
        assert_eq!(
            choice(Value::Null, json!(false)).unwrap(),
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "f"}}), Value::Null).unwrap(),
            json!({"type": "tool", "name": "f"})
        );
        let allowed = choice(json!({"type": "allowed_tools", "allowed_tools": {}}), Value::Null).unwrap_err();
        assert!(allowed.message.contains("`tool_choice` of type `allowed_tools`"), "{}", allowed.message);
        assert_eq!(choice(json!("sometimes"), Value::Null).unwrap_err().code, "invalid_request");
    }

    #[test]
    fn invalid_tool_arguments_are_a_400() {
        let call = |arguments: &str| {
            build(json!({"model": "m", "messages": [user(json!("x")), {"role": "assistant", "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": arguments}}]}]}))
        };
        let e = call("{not json").unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_request"));
        assert!(e.message.contains("messages[1].tool_calls[0].function.arguments"), "{}", e.message);
        assert!(call("[1]").is_err());
        assert_eq!(call("").unwrap()["messages"][1]["content"][0]["input"], json!({}));
    }

    #[test]
    fn sampling_options_map() {
        let body = build(json!({"model": "m", "messages": [user(json!("x"))], "max_completion_tokens": 300,
            "max_tokens": 10, "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "u-1", "stream": true,
            "stream_options": {"include_usage": true}, "n": 1, "logprobs": false, "presence_penalty": 0,
            "response_format": {"type": "text"}, "store": false, "seed": null}))
        .unwrap();
        assert_eq!(body["max_tokens"], 300);
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["top_p"], 0.9);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(body["stream"], true);
        for absent in ["stream_options", "n", "logprobs", "presence_penalty", "response_format", "store", "seed"] {
            assert!(body.get(absent).is_none(), "{absent}");
        }
        let body = build(json!({"model": "m", "messages": [user(json!("x"))], "max_tokens": 10,
            "stop": ["a", "b"], "user": "u-1", "safety_identifier": "s-1"}))
        .unwrap();
        assert_eq!((body["max_tokens"].clone(), body["stop_sequences"].clone()), (json!(10), json!(["a", "b"])));
        assert_eq!(body["metadata"]["user_id"], "s-1");
    }

    #[test]
    fn unsupported_fields_are_a_400_naming_field_and_provider() {
        let with = |field: &str, value: Value| {
            let mut body = json!({"model": "m", "messages": [user(json!("x"))]});
            body[field] = value;
            refused(body)
        };
        for (field, value) in canonical::fields_messages_apis_refuse() {
            let e = with(field, value);
            assert_eq!((e.status, e.code), (400, "unsupported_parameter"), "{field}");
            assert!(e.message.contains(&format!("`{field}`")), "{field}: {}", e.message);
            assert!(e.message.contains("provider anthropic (deployment `claude-eu`)"), "{}", e.message);
        }
        assert!(with("response_format", json!({"type": "json_schema"})).message.contains("`json_schema`"));
        let strict = with("tools", json!([{"type": "function", "function": {"name": "f", "strict": true}}]));
        assert!(strict.message.contains("`tools[0].function.strict`"));
        let message_field = refused(json!({"model": "m", "messages": [{"role": "user", "content": "x", "audio": {}}]}));
        assert!(message_field.message.contains("`messages[0].audio`"));
        let function_role =
            refused(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}));
        assert!(function_role.message.contains("`messages[0].role` `function`"));
    }

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
            Some(Usage { input_tokens: 115, output_tokens: 7, cached_input_tokens: 100, cache_write_tokens: 5 })
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

    #[test]
    fn classification() {
        let error = |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});
        let c = |status, body: Value| Anthropic.classify(status, body.to_string().as_bytes());
        let plain = |status| Anthropic.classify(status, b"");
        assert_eq!(c(429, error("rate_limit_error", "slow down")), ErrorClass::RateLimited);
        assert_eq!(c(529, error("overloaded_error", "Overloaded")), ErrorClass::Overloaded);
        assert_eq!(c(500, error("overloaded_error", "Overloaded")), ErrorClass::Overloaded);
        assert_eq!(plain(529), ErrorClass::Overloaded);
        assert_eq!(plain(503), ErrorClass::Overloaded);
        assert_eq!(c(500, error("api_error", "Internal server error")), ErrorClass::Server);
        assert_eq!(plain(502), ErrorClass::Server);
        assert_eq!(plain(504), ErrorClass::Timeout);
        assert_eq!(c(401, error("authentication_error", "invalid x-api-key")), ErrorClass::Auth);
        assert_eq!(c(403, error("permission_error", "no")), ErrorClass::Auth);
        assert_eq!(c(404, error("not_found_error", "model: x")), ErrorClass::NotFound);
        assert_eq!(c(413, error("request_too_large", "Request exceeds the maximum size")), ErrorClass::BadRequest);
        let too_long = error("invalid_request_error", "prompt is too long: 209353 tokens > 199999 maximum");
        assert_eq!(c(400, too_long), ErrorClass::ContextLength);
        let over_limit = error(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, decrease input length or `max_tokens` and try again",
        );
        assert_eq!(c(400, over_limit), ErrorClass::ContextLength);
        assert_eq!(c(400, error("invalid_request_error", "max_tokens: Field required")), ErrorClass::BadRequest);
        assert_eq!(plain(400), ErrorClass::BadRequest);
    }

    /// A stream as Anthropic sends it: text, then a tool call whose input arrives in
    /// pieces, with a ping and a multi-byte character to split inside.
    const RECORDED: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":20,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Caf\u{e9} \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"weather:\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

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
        let mut t = native_stream();
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
            let (end, usage) = (whole.end(), whole.usage());
            assert_eq!(end, StreamEnd::Complete);
            for cut in 1..=input.len() {
                let (mut t, out, _) = native_run(input, cut);
                assert_eq!(out, input.as_bytes(), "cut {cut}");
                assert_eq!((t.end(), t.usage()), (end, usage), "cut {cut}");
            }
        }
        let usage = native_run(THINKING, 0).0.usage();
        assert_eq!(
            usage,
            Some(Usage { input_tokens: 52, output_tokens: 30, cached_input_tokens: 0, cache_write_tokens: 40 })
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
            Some(Usage { input_tokens: 12, output_tokens: 3, cached_input_tokens: 7, cache_write_tokens: 0 })
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
}

//! Anthropic Messages as a client format (`POST /v1/messages`): an Anthropic SDK pointed at
//! the gateway reaches any provider.
//!
//! Formats per Anthropic's API reference (platform.claude.com/docs): the request and the
//! message object ("Messages": `system` as a string or text blocks; `text`, `image` (base64
//! or URL source), `tool_use` and `tool_result` (with `is_error`) blocks; `tools` with
//! `input_schema`; `tool_choice` auto / any / tool / none with `disable_parallel_tool_use`;
//! `max_tokens` required; usage whose `input_tokens` excludes cache reads); the stream
//! ("Streaming Messages": `message_start`, then per content block `content_block_start`,
//! `content_block_delta` (`text_delta`, `input_json_delta`) and `content_block_stop`, then
//! `message_delta` with the stop reason and cumulative usage, `message_stop`, and `event:
//! error` for a failure mid-stream); the errors ("Errors": `{"type":"error","error":{type,
//! message}}`; 400 invalid_request_error, 401 authentication_error, 402 billing_error, 403
//! permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 500
//! api_error, 504 timeout_error, 529 overloaded_error). The canonical side is OpenAI's Chat
//! Completions reference.
//!
//! A deployment in Anthropic's own format (`anthropic`, and `vertex` with the `anthropic`
//! publisher) gets the request as the client sent it, model swapped, and its answer, whole
//! or streamed, goes back as it came (`ChatRequest::native`; `providers::messages`). The
//! rest of this module is the translation for deployments in other formats, and where
//! the two formats differ:
//! - `cache_control` is accepted and dropped wherever it appears: it asks for prompt
//!   caching, which changes cost and never the answer, and the canonical request has no
//!   per-block cache markers (OpenAI-format providers cache prompts by themselves).
//! - `top_k`, `thinking`, and any field or block type not handled here have no
//!   translation: such a request goes only to Anthropic-format deployments, and is refused
//!   with a 400 naming the field when its alias has none. Never dropped.
//! - A failed tool result (`is_error`) starts its text with `Error: `, since OpenAI tool
//!   messages carry no such flag.
//! - OpenAI's `stop` becomes `end_turn` even when a stop sequence ended the answer: OpenAI
//!   does not say which.
//! - A stream's `message_start` counts 0 input tokens, since OpenAI streams report usage
//!   only at their end; `message_delta` carries the final counts (input ones included).
//! - Cache writes are not told apart from other input tokens (the OpenAI usage the
//!   providers answer with has no field for them).

use super::StreamEncoder;
use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::util::sse::{write_event, Event, SseDecoder};
use crate::wire::anthropic::write_error_event;
use crate::wire::openai::{usage_of, WireUsage};
use serde::Deserialize;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------
// Request: Anthropic Messages → OpenAI Chat Completions.

fn missing(field: &str) -> GatewayError {
    GatewayError::bad_request("missing_field", format!("Missing required field `{field}`."))
}

fn invalid(path: &str, why: &str) -> GatewayError {
    GatewayError::bad_request("invalid_request", format!("`{path}` {why}."))
}

/// What the canonical (OpenAI) form cannot carry: such a request can still go, as it is,
/// to a deployment in Anthropic's format (`ChatRequest::native`).
fn unsupported(path: &str, detail: &str) -> GatewayError {
    GatewayError::bad_request(
        "unsupported_parameter",
        format!("`{path}`{detail} has no equivalent in the OpenAI format that deployments of other providers take"),
    )
}

/// Every non-null key of `object` must be in `allowed`: a key not translated would
/// otherwise be lost on the way.
fn check_keys(path: &str, object: &Map<String, Value>, allowed: &[&str]) -> Result<(), GatewayError> {
    match object.iter().find(|(k, v)| !v.is_null() && !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(unsupported(&format!("{path}.{k}"), "")),
        None => Ok(()),
    }
}

fn object<'v>(path: &str, value: &'v Value) -> Result<&'v Map<String, Value>, GatewayError> {
    value.as_object().ok_or_else(|| invalid(path, "must be an object"))
}

fn string<'v>(path: &str, value: Option<&'v Value>) -> Result<&'v str, GatewayError> {
    value.and_then(Value::as_str).ok_or_else(|| invalid(path, "must be a string"))
}

/// The body as an object, null fields removed (a null field is an absent one), with the
/// alias it names; its `messages` checked to be a non-empty array.
fn envelope(bytes: &[u8]) -> Result<(Map<String, Value>, String), GatewayError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| GatewayError::bad_request("invalid_json", format!("The request body is not valid JSON: {e}.")))?;
    let Value::Object(mut body) = value else {
        return Err(GatewayError::bad_request("invalid_json", "The request body must be a JSON object."));
    };
    body.retain(|_, v| !v.is_null());
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("model", "must be a non-empty string")),
        None => return Err(missing("model")),
    };
    match body.get("messages") {
        Some(Value::Array(turns)) if !turns.is_empty() => Ok((body, model)),
        Some(_) => Err(invalid("messages", "must be a non-empty array")),
        None => Err(missing("messages")),
    }
}

/// A `POST /v1/messages/count_tokens` request: the alias it names, and its body for the
/// deployment that counts (which judges the rest, as it would for the request itself).
pub struct CountTokens {
    pub model: String,
    pub body: Map<String, Value>,
}

pub fn parse_count_tokens(bytes: &[u8]) -> Result<CountTokens, GatewayError> {
    let (body, model) = envelope(bytes)?;
    Ok(CountTokens { model, body })
}

pub fn parse(bytes: &[u8]) -> Result<ChatRequest, GatewayError> {
    let (body, model) = envelope(bytes)?;
    match body.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n > 0) => {}
        Some(_) => return Err(invalid("max_tokens", "must be a positive integer")),
        None => return Err(missing("max_tokens")),
    }
    let stream = match body.get("stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "must be a boolean")),
    };
    // What cannot be translated is no error yet: an Anthropic-format deployment takes the
    // request as it is. A malformed request is one, for every deployment.
    let (canonical, untranslatable) = match canonical(&body, stream) {
        Ok(canonical) => (canonical, None),
        Err(e) if e.code == "unsupported_parameter" => (body.clone(), Some(e)),
        Err(e) => return Err(e),
    };
    let native = NativeMessages { body, beta: None, untranslatable };
    Ok(ChatRequest::made(canonical, model, stream, stream, Some(native)))
}

/// The request in OpenAI's Chat Completions form; `model`, `max_tokens` and `messages`
/// are checked already.
fn canonical(body: &Map<String, Value>, stream: bool) -> Result<Map<String, Value>, GatewayError> {
    let mut messages = Vec::new();
    if let Some(system) = body.get("system") {
        messages.push(json!({"role": "system", "content": system_content(system)?}));
    }
    for (i, turn) in body["messages"].as_array().into_iter().flatten().enumerate() {
        message(&format!("messages[{i}]"), turn, &mut messages)?;
    }
    let mut out = Map::new();
    out.insert("model".into(), body["model"].clone());
    out.insert("messages".into(), messages.into());
    // OpenAI's current name; `max_tokens` is refused by its reasoning models.
    out.insert("max_completion_tokens".into(), body["max_tokens"].clone());
    for (key, value) in body {
        match key.as_str() {
            "model" | "messages" | "max_tokens" | "system" | "tool_choice" => {}
            "stream" if stream => {
                out.insert("stream".into(), true.into());
                // The final usage chunk is what `message_delta` reports.
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
            "stream" => {}
            "temperature" | "top_p" if value.is_number() => {
                out.insert(key.clone(), value.clone());
            }
            "temperature" | "top_p" => return Err(invalid(key, "must be a number")),
            "stop_sequences" => {
                let sequences = value.as_array().filter(|s| s.iter().all(Value::is_string));
                let sequences = sequences.ok_or_else(|| invalid(key, "must be an array of strings"))?;
                if !sequences.is_empty() {
                    out.insert("stop".into(), value.clone());
                }
            }
            "metadata" => {
                let metadata = object(key, value)?;
                check_keys(key, metadata, &["user_id"])?;
                if let Some(user) = metadata.get("user_id").filter(|u| !u.is_null()) {
                    out.insert("user".into(), string("metadata.user_id", Some(user))?.into());
                }
            }
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "top_k" => return Err(unsupported("top_k", " (top-k sampling)")),
            "thinking" => return Err(unsupported("thinking", " (extended thinking)")),
            k => return Err(unsupported(k, "")),
        }
    }
    if let Some(choice) = body.get("tool_choice") {
        tool_choice(choice, &mut out)?;
    }
    Ok(out)
}

fn system_content(system: &Value) -> Result<Value, GatewayError> {
    match system {
        Value::String(text) => Ok(text.clone().into()),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, block)| {
                let path = format!("system[{j}]");
                match block_type(&path, block)? {
                    ("text", block) => text_part(&path, block),
                    (other, _) => Err(unsupported(&format!("{path}.type"), &format!(" `{other}`"))),
                }
            })
            .collect(),
        _ => Err(invalid("system", "must be a string or an array of text blocks")),
    }
}

fn block_type<'v>(path: &str, block: &'v Value) -> Result<(&'v str, &'v Map<String, Value>), GatewayError> {
    let block = object(path, block)?;
    Ok((string(&format!("{path}.type"), block.get("type"))?, block))
}

fn text_part(path: &str, block: &Map<String, Value>) -> Result<Value, GatewayError> {
    check_keys(path, block, &["type", "text", "cache_control"])?;
    Ok(json!({"type": "text", "text": string(&format!("{path}.text"), block.get("text"))?}))
}

/// One turn, appended as OpenAI messages: a user turn's tool results become tool messages,
/// in their place among the user's other content.
fn message(path: &str, turn: &Value, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    let turn = object(path, turn)?;
    check_keys(path, turn, &["role", "content"])?;
    let content = turn.get("content").ok_or_else(|| missing(&format!("{path}.content")))?;
    let blocks = match content {
        Value::String(_) => None,
        Value::Array(blocks) => Some(blocks),
        _ => return Err(invalid(&format!("{path}.content"), "must be a string or an array of content blocks")),
    };
    match (turn.get("role").and_then(Value::as_str), blocks) {
        (Some(role @ ("user" | "assistant")), None) => out.push(json!({"role": role, "content": content})),
        (Some("user"), Some(blocks)) => user(path, blocks, out)?,
        (Some("assistant"), Some(blocks)) => out.push(assistant(path, blocks)?),
        _ => return Err(invalid(&format!("{path}.role"), "must be `user` or `assistant`")),
    }
    Ok(())
}

fn user(path: &str, blocks: &[Value], out: &mut Vec<Value>) -> Result<(), GatewayError> {
    let flush = |parts: &mut Vec<Value>, out: &mut Vec<Value>| {
        if !parts.is_empty() {
            out.push(json!({"role": "user", "content": std::mem::take(parts)}));
        }
    };
    if blocks.is_empty() {
        out.push(json!({"role": "user", "content": []}));
    }
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("{path}.content[{j}]");
        match block_type(&path, block)? {
            ("text", block) => parts.push(text_part(&path, block)?),
            ("image", block) => parts.push(image_part(&path, block)?),
            ("tool_result", block) => {
                flush(&mut parts, out);
                out.push(tool_message(&path, block)?);
            }
            (other, _) => return Err(unsupported(&format!("{path}.type"), &format!(" `{other}`"))),
        }
    }
    flush(&mut parts, out);
    Ok(())
}

fn image_part(path: &str, block: &Map<String, Value>) -> Result<Value, GatewayError> {
    check_keys(path, block, &["type", "source", "cache_control"])?;
    let source_path = format!("{path}.source");
    let source = object(&source_path, block.get("source").unwrap_or(&Value::Null))?;
    let url = match string(&format!("{source_path}.type"), source.get("type"))? {
        "base64" => {
            check_keys(&source_path, source, &["type", "media_type", "data"])?;
            let media_type = string(&format!("{source_path}.media_type"), source.get("media_type"))?;
            let data = string(&format!("{source_path}.data"), source.get("data"))?;
            format!("data:{media_type};base64,{data}")
        }
        "url" => {
            check_keys(&source_path, source, &["type", "url"])?;
            string(&format!("{source_path}.url"), source.get("url"))?.to_string()
        }
        other => return Err(unsupported(&format!("{source_path}.type"), &format!(" `{other}`"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// OpenAI tool messages take text only.
fn tool_message(path: &str, block: &Map<String, Value>) -> Result<Value, GatewayError> {
    check_keys(path, block, &["type", "tool_use_id", "content", "is_error", "cache_control"])?;
    let id = string(&format!("{path}.tool_use_id"), block.get("tool_use_id"))?;
    let content = match block.get("content") {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let path = format!("{path}.content[{k}]");
                match block_type(&path, b)? {
                    ("text", b) => text_part(&path, b),
                    (other, _) => Err(unsupported(&format!("{path}.type"), &format!(" `{other}` in a tool result"))),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(&format!("{path}.content"), "must be a string or an array of text blocks")),
    };
    let content = match block.get("is_error") {
        None | Some(Value::Null | Value::Bool(false)) => content,
        Some(Value::Bool(true)) => failed(content),
        Some(_) => return Err(invalid(&format!("{path}.is_error"), "must be a boolean")),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn failed(content: Value) -> Value {
    match content {
        Value::Array(mut parts) if !parts.is_empty() => {
            let text = format!("Error: {}", parts[0]["text"].as_str().unwrap_or_default());
            parts[0]["text"] = text.into();
            parts.into()
        }
        Value::String(text) if !text.is_empty() => format!("Error: {text}").into(),
        _ => "Error".into(),
    }
}

fn assistant(path: &str, blocks: &[Value]) -> Result<Value, GatewayError> {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("{path}.content[{j}]");
        match block_type(&path, block)? {
            ("text", block) => parts.push(text_part(&path, block)?),
            ("tool_use", block) => {
                check_keys(&path, block, &["type", "id", "name", "input", "cache_control"])?;
                let input = block.get("input").filter(|i| i.is_object());
                let input = input.ok_or_else(|| invalid(&format!("{path}.input"), "must be an object"))?;
                calls.push(json!({
                    "id": string(&format!("{path}.id"), block.get("id"))?,
                    "type": "function",
                    "function": {"name": string(&format!("{path}.name"), block.get("name"))?, "arguments": input.to_string()},
                }));
            }
            (other, _) => return Err(unsupported(&format!("{path}.type"), &format!(" `{other}`"))),
        }
    }
    let content = if parts.is_empty() { Value::Null } else { parts.into() };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    Ok(message)
}

fn tools(tools: &Value) -> Result<Value, GatewayError> {
    let tools = tools.as_array().ok_or_else(|| invalid("tools", "must be an array"))?;
    let tool = |(i, tool): (usize, &Value)| {
        let path = format!("tools[{i}]");
        let tool = object(&path, tool)?;
        // Typed tools are Anthropic's server and client tools (web search, bash, …).
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "custom" => {}
            Some(kind) => return Err(unsupported(&format!("{path}.type"), &format!(" {kind}"))),
        }
        check_keys(&path, tool, &["type", "name", "description", "input_schema", "cache_control", "strict"])?;
        let schema_path = format!("{path}.input_schema");
        let mut function = json!({
            "name": string(&format!("{path}.name"), tool.get("name"))?,
            "parameters": object(&schema_path, tool.get("input_schema").unwrap_or(&Value::Null))?,
        });
        if let Some(description) = tool.get("description").filter(|d| !d.is_null()) {
            function["description"] = string(&format!("{path}.description"), Some(description))?.into();
        }
        match tool.get("strict") {
            None | Some(Value::Null) => {}
            Some(strict @ Value::Bool(_)) => function["strict"] = strict.clone(),
            Some(_) => return Err(invalid(&format!("{path}.strict"), "must be a boolean")),
        }
        Ok(json!({"type": "function", "function": function}))
    };
    tools.iter().enumerate().map(tool).collect()
}

fn tool_choice(choice: &Value, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let choice = object("tool_choice", choice)?;
    let (openai, allowed): (Value, &[&str]) = match string("tool_choice.type", choice.get("type"))? {
        "auto" => ("auto".into(), &["type", "disable_parallel_tool_use"]),
        "any" => ("required".into(), &["type", "disable_parallel_tool_use"]),
        "tool" => {
            let name = string("tool_choice.name", choice.get("name"))?;
            (json!({"type": "function", "function": {"name": name}}), &["type", "name", "disable_parallel_tool_use"])
        }
        "none" => ("none".into(), &["type"]),
        _ => return Err(invalid("tool_choice.type", "must be `auto`, `any`, `tool` or `none`")),
    };
    check_keys("tool_choice", choice, allowed)?;
    out.insert("tool_choice".into(), openai);
    match choice.get("disable_parallel_tool_use") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        // OpenAI refuses `parallel_tool_calls` without tools; without tools nothing runs in parallel anyway.
        Some(Value::Bool(true)) if !out.contains_key("tools") => {}
        Some(Value::Bool(true)) => {
            out.insert("parallel_tool_calls".into(), false.into());
        }
        Some(_) => return Err(invalid("tool_choice.disable_parallel_tool_use", "must be a boolean")),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Answer: OpenAI `chat.completion` → Anthropic message.

/// Usage in Anthropic's terms: OpenAI's prompt tokens include the cached ones; Anthropic's
/// input tokens do not.
fn anthropic_usage(u: Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens.saturating_sub(u.cached_input_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_input_tokens,
        "output_tokens": u.output_tokens,
    })
}

/// The parts of an OpenAI `chat.completion` the translation reads. The answer is walked
/// as a `Value` (a non-streamed answer is parsed once, so typed structs would only add a
/// deserializer each) and checked as a typed parse would check it: `choices` and every
/// choice's `message` present, tool calls with `id` and `function.name`, and every field
/// read of its type (or null where it is optional).
struct Completion<'a> {
    id: &'a str,
    choice: Option<(&'a Value, Option<&'a str>)>,
    usage: Option<Usage>,
}

struct ReplyToolCall<'a> {
    id: &'a str,
    name: &'a str,
    arguments: &'a str,
}

/// Absent or null: `Some(None)`; a string: `Some(Some(..))`; anything else: `None`.
fn optional_str<'a>(o: &'a Map<String, Value>, key: &str) -> Option<Option<&'a str>> {
    match o.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_str().map(Some),
    }
}

/// Absent: `""`; otherwise it must be a string.
fn defaulted_str<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).map_or(Some(""), Value::as_str)
}

fn tool_calls(reply: &Map<String, Value>) -> Option<Vec<ReplyToolCall<'_>>> {
    let calls = match reply.get("tool_calls") {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(calls) => calls.as_array()?,
    };
    calls
        .iter()
        .map(|call| {
            let call = call.as_object()?;
            let function = call.get("function")?.as_object()?;
            Some(ReplyToolCall {
                id: call.get("id")?.as_str()?,
                name: function.get("name")?.as_str()?,
                arguments: defaulted_str(function, "arguments")?,
            })
        })
        .collect()
}

fn completion(v: &Value) -> Option<Completion<'_>> {
    let c = v.as_object()?;
    let id = defaulted_str(c, "id")?;
    let mut choice = None;
    for ch in c.get("choices")?.as_array()? {
        let ch = ch.as_object()?;
        let message = ch.get("message")?;
        let reply = message.as_object()?;
        optional_str(reply, "refusal")?;
        tool_calls(reply)?;
        let finish_reason = optional_str(ch, "finish_reason")?;
        choice = choice.or(Some((message, finish_reason)));
    }
    let usage = match c.get("usage") {
        None | Some(Value::Null) => None,
        Some(u) => Some(usage_of(u)?),
    };
    Some(Completion { id, choice, usage })
}

/// Anthropic ids start with `msg_`; an answer from Anthropic keeps its own.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// `Err` when a tool call's arguments are not a JSON object: Anthropic's `input` must be
/// one, so such an answer is as unusable as a malformed one (another deployment may do
/// better).
pub fn response(req: &ChatRequest, body: &[u8]) -> Result<Vec<u8>, ErrorClass> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| ErrorClass::Server)?;
    let completion = completion(&answer).ok_or(ErrorClass::Server)?;
    let (message, finish_reason) = completion.choice.ok_or(ErrorClass::Server)?;
    let reply = message.as_object().ok_or(ErrorClass::Server)?;
    let mut content = Vec::new();
    match reply.get("content").unwrap_or(&Value::Null) {
        Value::String(text) if !text.is_empty() => content.push(text_block(text)),
        Value::Array(parts) => content.extend(parts.iter().filter_map(|p| p["text"].as_str()).map(text_block)),
        _ => {}
    }
    let refusal = optional_str(reply, "refusal").flatten();
    content.extend(refusal.filter(|r| !r.is_empty()).map(text_block));
    for call in tool_calls(reply).unwrap_or_default() {
        // A function without arguments may come back as "" rather than "{}".
        let input: Value = if call.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_slice(call.arguments.as_bytes()).map_err(|_| ErrorClass::Server)?
        };
        if !input.is_object() {
            return Err(ErrorClass::Server);
        }
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
    }
    let message = json!({
        "id": message_id(completion.id),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason(finish_reason),
        "stop_sequence": null,
        "usage": anthropic_usage(completion.usage.unwrap_or_default()),
    });
    Ok(message.to_string().into_bytes())
}

// ---------------------------------------------------------------------------------------
// Stream: OpenAI `chat.completion.chunk`s → Anthropic's events.

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: String,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<ChunkError>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize, Default)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChunkError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Value,
}

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
    use crate::util::valueread::FromValue;
    use crate::wire::anthropic::error_body;

    /// The typed parse `completion` replaced, kept as the oracle for what it accepts.
    mod typed {
        use crate::wire::openai::WireUsage;
        use serde::Deserialize;
        use serde_json::Value;

        #[derive(Deserialize)]
        pub struct Completion {
            #[serde(default)]
            pub id: String,
            pub choices: Vec<CompletionChoice>,
            #[serde(default)]
            pub usage: Option<WireUsage>,
        }
        #[derive(Deserialize)]
        pub struct CompletionChoice {
            pub message: Reply,
            #[serde(default)]
            pub finish_reason: Option<String>,
        }
        #[derive(Deserialize)]
        pub struct Reply {
            #[serde(default)]
            pub content: Value,
            #[serde(default)]
            pub refusal: Option<String>,
            #[serde(default)]
            pub tool_calls: Option<Vec<ReplyToolCall>>,
        }
        #[derive(Deserialize)]
        pub struct ReplyToolCall {
            pub id: String,
            pub function: ReplyFunction,
        }
        #[derive(Deserialize)]
        pub struct ReplyFunction {
            pub name: String,
            #[serde(default)]
            pub arguments: String,
        }
    }

    #[test]
    fn completion_accepts_what_the_typed_parse_accepts() {
        let bodies = [
            r#"{"id":"c1","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"t","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"t","function":{"name":"f"}}]}}],"usage":null}"#,
            r#"{"choices":[{"message":{"refusal":"no","tool_calls":null}},{"message":{}}]}"#,
            r#"{"choices":[]}"#,
            r#"{"id":null,"choices":[]}"#,
            r#"{"id":3,"choices":[]}"#,
            r#"{}"#,
            r#"{"choices":[{}]}"#,
            r#"{"choices":[{"message":{}},{"message":3}]}"#,
            r#"{"choices":[{"message":{},"finish_reason":7}]}"#,
            r#"{"choices":[{"message":{"refusal":1}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":{}}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"t","function":{"name":"f","arguments":null}}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"t","function":{}}]}}]}"#,
            r#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":"5"}}"#,
            r#"{"choices":[{"message":{}}],"usage":{"prompt_tokens_details":{"cached_tokens":null}}}"#,
            r#"{"choices":[{"message":{"content":[{"text":"a"}]}}],"extra":true}"#,
        ];
        for body in bodies {
            let typed = serde_json::from_slice::<typed::Completion>(body.as_bytes()).ok();
            let value: Value = serde_json::from_slice(body.as_bytes()).unwrap();
            let walked = completion(&value);
            assert_eq!(walked.is_some(), typed.is_some(), "{body}");
            let (Some(t), Some(w)) = (typed, walked) else { continue };
            assert_eq!(w.id, t.id, "{body}");
            let first = t.choices.first();
            assert_eq!(w.choice.map(|c| c.1), first.map(|c| c.finish_reason.as_deref()), "{body}");
            assert_eq!(w.usage, t.usage.map(Usage::from), "{body}");
            if let (Some((message, _)), Some(c)) = (w.choice, first) {
                let reply = message.as_object().unwrap();
                assert_eq!(reply.get("content").unwrap_or(&Value::Null), &c.message.content, "{body}");
                assert_eq!(optional_str(reply, "refusal").flatten(), c.message.refusal.as_deref(), "{body}");
                let calls: Vec<_> = tool_calls(reply).unwrap().iter().map(|c| (c.id, c.name, c.arguments)).collect();
                let typed_calls: Vec<_> = c
                    .message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|c| (c.id.as_str(), c.function.name.as_str(), c.function.arguments.as_str()))
                    .collect();
                assert_eq!(calls, typed_calls, "{body}");
            }
        }
    }
    use crate::config::Deployment;
    use crate::model::chat;
    use crate::providers::{anthropic::Anthropic, Auth, Provider};

    fn parse_ok(body: Value) -> ChatRequest {
        let req = parse(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        // Whatever the translation makes must be a request the OpenAI ingress accepts too.
        chat::parse(serde_json::to_vec(req.body()).unwrap()).unwrap();
        req
    }

    fn refused(body: Value) -> GatewayError {
        parse(body.to_string().as_bytes()).unwrap_err()
    }

    /// Why a request accepted for Anthropic-format deployments has no canonical form.
    fn untranslatable(body: Value) -> GatewayError {
        let req = parse(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let native = req.native.as_ref().expect("a Messages request keeps its native form");
        assert_eq!(req.body(), &native.body, "routing reads the native body");
        native.untranslatable.clone().expect("not translatable")
    }

    fn user(content: Value) -> Value {
        json!({"role": "user", "content": content})
    }

    #[test]
    fn a_simple_request_maps_field_by_field() {
        let req = parse_ok(json!({
            "model": "fast", "max_tokens": 256, "system": "Be brief.",
            "messages": [user(json!("Hello")), {"role": "assistant", "content": "Hi!"}, user(json!("Bye"))],
            "temperature": 0.3, "top_p": 0.9, "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
            "stream": false,
        }));
        assert_eq!(
            Value::Object(req.body().clone()),
            json!({
                "model": "fast",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi!"},
                    {"role": "user", "content": "Bye"},
                ],
                "max_completion_tokens": 256, "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "user": "u-1",
            })
        );
        assert_eq!(req.model, "fast");
        assert!(!req.stream && !req.client_wants_usage);
    }

    #[test]
    fn a_stream_asks_for_the_final_usage() {
        let req = parse_ok(json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [user(json!("x"))],
            "stop_sequences": [], "metadata": {"user_id": null}}));
        assert!(req.stream && req.client_wants_usage);
        assert_eq!(req.body()["stream"], true);
        assert_eq!(req.body()["stream_options"], json!({"include_usage": true}));
        assert!(!req.body().contains_key("stop") && !req.body().contains_key("user"), "empty values ask for nothing");
    }

    #[test]
    fn system_blocks_become_text_parts_without_cache_control() {
        let req = parse_ok(json!({"model": "m", "max_tokens": 5, "messages": [user(json!([
                {"type": "text", "text": "Question?", "cache_control": {"type": "ephemeral"}}]))],
            "system": [{"type": "text", "text": "You are terse."},
                {"type": "text", "text": "Long context…", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}));
        assert_eq!(
            req.body()["messages"],
            json!([
                {"role": "system", "content": [{"type": "text", "text": "You are terse."},
                    {"type": "text", "text": "Long context…"}]},
                {"role": "user", "content": [{"type": "text", "text": "Question?"}]},
            ])
        );
    }

    fn tool_conversation() -> Value {
        json!({
            "model": "claude", "max_tokens": 1024,
            "tools": [
                {"name": "get_weather", "description": "Weather in a city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                    "cache_control": {"type": "ephemeral"}},
                {"type": "custom", "name": "now", "input_schema": {"type": "object"}},
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                user(json!([
                    {"type": "text", "text": "Weather in Paris and Rome? See the map."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.jpg"}},
                ])),
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
                ]},
                user(json!([
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C, sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                        "content": [{"type": "text", "text": "station offline"}]},
                    {"type": "text", "text": "And tomorrow?"},
                ])),
            ],
        })
    }

    #[test]
    fn tools_tool_calls_tool_results_and_images_map() {
        let req = parse_ok(tool_conversation());
        assert_eq!(
            req.body()["tools"],
            json!([
                {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
            ])
        );
        let strict = parse_ok(json!({"model": "m", "max_tokens": 5, "messages": [user(json!("x"))],
            "tools": [{"name": "f", "input_schema": {"type": "object"}, "strict": true}]}));
        assert_eq!(strict.body()["tools"][0]["function"]["strict"], true);
        assert_eq!(req.body()["tool_choice"], "required");
        assert_eq!(req.body()["parallel_tool_calls"], false);
        assert_eq!(
            req.body()["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris and Rome? See the map."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg"}},
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking both."}], "tool_calls": [
                    {"id": "toolu_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C, sunny"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "Error: station offline"}]},
                {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
            ])
        );
    }

    #[test]
    fn tool_results_keep_their_place_and_failures_say_so() {
        let req = parse_ok(json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            user(json!([
                {"type": "text", "text": "before"},
                {"type": "tool_result", "tool_use_id": "t1", "is_error": true},
                {"type": "tool_result", "tool_use_id": "t1", "is_error": false, "content": []},
                {"type": "tool_result", "tool_use_id": "t1", "is_error": true, "content": "boom"},
            ])),
            user(json!([])),
        ]}));
        assert_eq!(
            req.body()["messages"],
            json!([
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "user", "content": [{"type": "text", "text": "before"}]},
                {"role": "tool", "tool_call_id": "t1", "content": "Error"},
                {"role": "tool", "tool_call_id": "t1", "content": []},
                {"role": "tool", "tool_call_id": "t1", "content": "Error: boom"},
                {"role": "user", "content": []},
            ])
        );
    }

    #[test]
    fn every_tool_choice_maps() {
        let with = |choice: Value| {
            let mut body = tool_conversation();
            body["tool_choice"] = choice;
            parse_ok(body).body().clone()
        };
        let auto = with(json!({"type": "auto"}));
        assert_eq!((&auto["tool_choice"], auto.get("parallel_tool_calls")), (&json!("auto"), None));
        assert_eq!(with(json!({"type": "any"}))["tool_choice"], "required");
        assert_eq!(with(json!({"type": "none"}))["tool_choice"], "none");
        let tool = with(json!({"type": "tool", "name": "now", "disable_parallel_tool_use": true}));
        assert_eq!(tool["tool_choice"], json!({"type": "function", "function": {"name": "now"}}));
        assert_eq!(tool["parallel_tool_calls"], false);
        let no_tools = parse_ok(json!({"model": "m", "max_tokens": 5, "messages": [user(json!("x"))],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}));
        assert!(!no_tools.body().contains_key("parallel_tool_calls"), "OpenAI refuses it without tools");
        let e = untranslatable(json!({"model": "m", "max_tokens": 5, "messages": [user(json!("x"))],
            "tool_choice": {"type": "none", "disable_parallel_tool_use": true}}));
        assert!(e.message.contains("`tool_choice.disable_parallel_tool_use`"), "{}", e.message);
        let e = refused(json!({"model": "m", "max_tokens": 5, "messages": [user(json!("x"))],
            "tool_choice": {"type": "sometimes"}}));
        assert!(e.message.contains("`tool_choice.type`"), "{}", e.message);
    }

    #[test]
    fn required_fields_and_types_are_checked() {
        let e = refused(json!({"model": "m", "messages": [user(json!("x"))]}));
        assert_eq!((e.status, e.code), (400, "missing_field"));
        assert!(e.message.contains("`max_tokens`"), "{}", e.message);
        assert!(refused(json!({"max_tokens": 5, "messages": [user(json!("x"))]})).message.contains("`model`"));
        assert!(refused(json!({"model": "m", "max_tokens": 5})).message.contains("`messages`"));
        assert!(refused(json!({"model": "m", "max_tokens": 5, "messages": []})).message.contains("non-empty"));
        for bad in [json!(0), json!(-1), json!(1.5), json!("10")] {
            let e = refused(json!({"model": "m", "max_tokens": bad, "messages": [user(json!("x"))]}));
            assert!(e.message.contains("`max_tokens` must be a positive integer"), "{}", e.message);
        }
        let base = |field: &str, value: Value| {
            let mut body = json!({"model": "m", "max_tokens": 5, "messages": [user(json!("x"))]});
            body[field] = value;
            refused(body).message
        };
        assert!(base("stream", json!("yes")).contains("`stream` must be a boolean"));
        assert!(base("temperature", json!("hot")).contains("`temperature` must be a number"));
        assert!(base("stop_sequences", json!("END")).contains("`stop_sequences`"));
        let system_role =
            refused(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}));
        assert!(system_role.message.contains("`messages[0].role` must be `user` or `assistant`"));
        assert_eq!(parse(b"{not json").unwrap_err().code, "invalid_json");
        assert_eq!(parse(b"[1]").unwrap_err().code, "invalid_json");
    }

    #[test]
    fn what_cannot_be_translated_is_named_and_the_request_kept_whole() {
        let with = |field: &str, value: Value| {
            let mut body = json!({"model": "m", "max_tokens": 5, "messages": [user(json!("x"))], "nothing": null});
            body[field] = value.clone();
            let req = parse(body.to_string().as_bytes()).unwrap();
            let native = req.native.as_ref().unwrap();
            assert_eq!(native.body[field], value, "kept as sent");
            assert!(!native.body.contains_key("nothing"), "null fields are absent ones");
            let e = untranslatable(body);
            assert_eq!((e.status, e.code), (400, "unsupported_parameter"));
            e.message
        };
        assert!(with("top_k", json!(40)).contains("`top_k`"));
        assert!(with("thinking", json!({"type": "enabled", "budget_tokens": 2000})).contains("`thinking`"));
        assert!(with("service_tier", json!("auto")).contains("`service_tier`"));
        assert!(with("metadata", json!({"user_id": "u", "tier": "gold"})).contains("`metadata.tier`"));
        assert!(with("tools", json!([{"type": "web_search_20250305", "name": "web_search"}]))
            .contains("`tools[0].type` \"web_search_20250305\""));
        let in_message =
            |blocks: Value| untranslatable(json!({"model": "m", "max_tokens": 5, "messages": [user(blocks)]})).message;
        assert!(in_message(json!([{"type": "document", "source": {"type": "text", "data": "x"}}]))
            .contains("`messages[0].content[0].type` `document`"));
        assert!(in_message(json!([{"type": "image", "source": {"type": "file", "file_id": "f1"}}]))
            .contains("`messages[0].content[0].source.type` `file`"));
        assert!(in_message(json!([{"type": "text", "text": "x", "citations": [{"type": "char_location"}]}]))
            .contains("`messages[0].content[0].citations`"));
        let image_result = json!([{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]);
        assert!(in_message(image_result).contains("`messages[0].content[0].content[0].type` `image` in a tool result"));
        let thinking = untranslatable(json!({"model": "m", "max_tokens": 5, "messages": [user(json!("x")),
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}]}]}));
        assert!(thinking.message.contains("`messages[1].content[0].type` `thinking`"), "{}", thinking.message);
    }

    #[test]
    fn a_translatable_request_keeps_its_native_form_too() {
        let body = json!({"model": "m", "max_tokens": 5, "messages": [user(json!([
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]))]});
        let req = parse_ok(body.clone());
        let native = req.native.unwrap();
        assert!(native.translatable() && native.beta.is_none());
        assert_eq!(Value::Object(native.body), body, "cache markers included");
    }

    fn deployment(provider: &str) -> Deployment {
        Deployment::read(&json!({
            "id": "d", "provider": provider, "model": "upstream-model", "base_url": "https://example.com/v1",
            "jurisdiction": "eu", "region": "eu", "price": {"input": "1", "output": "1"}
        }))
        .unwrap()
    }

    #[test]
    fn through_the_anthropic_provider_the_request_comes_back_the_same() {
        let original = tool_conversation();
        let req = parse_ok(original.clone());
        let auth = Auth { api_key: Some("sk-ant-test".into()), ..Auth::default() };
        let up = Anthropic.build(&deployment("anthropic"), &req, &auth).unwrap();
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        let mut expected = original;
        expected["model"] = json!("upstream-model");
        // What does not survive: cache markers, the `custom` tool type (the default), and
        // the error flag of a tool result, which became text.
        expected["tools"][0].as_object_mut().unwrap().remove("cache_control");
        expected["tools"][1].as_object_mut().unwrap().remove("type");
        expected["messages"][2]["content"][1] = json!({"type": "tool_result", "tool_use_id": "toolu_2",
            "content": [{"type": "text", "text": "Error: station offline"}]});
        assert_eq!(sent, expected);
    }

    fn openai_completion(message: Value, finish_reason: &str) -> Vec<u8> {
        json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129,
                "prompt_tokens_details": {"cached_tokens": 100}},
        })
        .to_string()
        .into_bytes()
    }

    fn request() -> ChatRequest {
        parse_ok(json!({"model": "fast", "max_tokens": 5, "messages": [user(json!("x"))]}))
    }

    fn answer(message: Value, finish_reason: &str) -> Value {
        serde_json::from_slice(&response(&request(), &openai_completion(message, finish_reason)).unwrap()).unwrap()
    }

    #[test]
    fn a_text_answer_becomes_a_message() {
        assert_eq!(
            answer(json!({"role": "assistant", "content": "Hello!", "refusal": null}), "stop"),
            json!({
                "id": "msg_chatcmpl-abc", "type": "message", "role": "assistant", "model": "fast",
                "content": [{"type": "text", "text": "Hello!"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
                    "output_tokens": 9},
            })
        );
    }

    #[test]
    fn tool_calls_become_tool_use_blocks_with_parsed_input() {
        let message = answer(
            json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ]}),
            "tool_calls",
        );
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["content"],
            json!([
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
            ])
        );
        let bad = |arguments: &str| {
            let message = json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]});
            response(&request(), &openai_completion(message, "tool_calls"))
        };
        assert_eq!(bad("{\"city\": \"Par"), Err(ErrorClass::Server));
        assert_eq!(bad("[1]"), Err(ErrorClass::Server));
    }

    #[test]
    fn stop_reasons_parts_refusals_and_ids() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(answer(json!({"role": "assistant", "content": "x"}), finish)["stop_reason"], stop, "{finish}");
        }
        let parts = answer(
            json!({"role": "assistant", "content": [{"type": "text", "text": "a"},
            {"type": "text", "text": "b"}]}),
            "stop",
        );
        assert_eq!(parts["content"], json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]));
        let refusal = answer(json!({"role": "assistant", "content": null, "refusal": "I can't help."}), "stop");
        assert_eq!(refusal["content"], json!([{"type": "text", "text": "I can't help."}]));
        assert_eq!(answer(json!({"role": "assistant", "content": ""}), "stop")["content"], json!([]));
        let from_anthropic = br#"{"id":"msg_01X","choices":[{"message":{"content":"x"},"finish_reason":"stop"}]}"#;
        let v: Value = serde_json::from_slice(&response(&request(), from_anthropic).unwrap()).unwrap();
        assert_eq!(v["id"], "msg_01X");
        assert_eq!(v["usage"]["input_tokens"], 0, "no usage reported counts nothing");
        assert_eq!(response(&request(), b"{\"choices\":[]}"), Err(ErrorClass::Server));
        assert_eq!(response(&request(), b"garbage"), Err(ErrorClass::Server));
    }

    #[test]
    fn errors_have_anthropics_shape_and_types() {
        let kind = |e: GatewayError| {
            let v: Value = serde_json::from_str(&error_body(&e)).unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["message"], e.message.as_str());
            v["error"]["type"].as_str().unwrap().to_string()
        };
        let new = |status, code| GatewayError::new(status, "x", code, "m");
        assert_eq!(kind(missing("max_tokens")), "invalid_request_error");
        assert_eq!(kind(GatewayError::unauthorized("no key")), "authentication_error");
        assert_eq!(kind(new(402, "budget_exceeded")), "billing_error");
        assert_eq!(kind(GatewayError::forbidden("team_mismatch", "m")), "permission_error");
        assert_eq!(kind(GatewayError::model_not_found("nope")), "not_found_error");
        assert_eq!(kind(GatewayError::method_not_allowed("GET", "/v1/messages", "POST")), "invalid_request_error");
        assert_eq!(kind(GatewayError::payload_too_large(10)), "request_too_large");
        assert_eq!(kind(new(429, "rate_limited")), "rate_limit_error");
        assert_eq!(kind(new(429, "upstream_rate_limited")), "rate_limit_error");
        assert_eq!(kind(new(503, "upstream_overloaded")), "overloaded_error");
        assert_eq!(kind(new(529, "x")), "overloaded_error");
        assert_eq!(kind(new(502, "upstream_timeout")), "timeout_error");
        assert_eq!(kind(new(502, "upstream_failed")), "api_error");
        assert_eq!(kind(GatewayError::residency_unsatisfiable("eu", "none")), "api_error");
        assert_eq!(kind(GatewayError::internal("x")), "api_error");
    }

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

    fn through_the_anthropic_provider(input: &[u8], cut: usize) -> (String, Option<Usage>) {
        let req = parse_ok(json!({"model": "claude", "max_tokens": 5, "stream": true, "messages": [user(json!("x"))]}));
        let mut provider = Anthropic.stream(&req);
        let mut encoder = Stream::new(&req);
        let mut out = Vec::new();
        for piece in [&input[..cut], &input[cut..]] {
            let mut openai = Vec::new();
            provider.push(piece, &mut openai);
            encoder.push(&openai, &mut out);
        }
        (String::from_utf8(out).unwrap(), provider.usage())
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
        assert_eq!(usage.map(|u| (u.input_tokens, u.output_tokens)), Some((50, 42)), "the ledger's usage");
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

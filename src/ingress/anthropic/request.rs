//! The request: Anthropic Messages → OpenAI Chat Completions ("Messages": `system` as a
//! string or text blocks; `text`, `image` (base64 or URL), `tool_use` and `tool_result`
//! blocks; `tools`; `tool_choice`), and the envelope `count_tokens` shares. Where the two differ:
//! - `cache_control` is accepted and dropped wherever it appears: it changes cost, never the
//!   answer, and the canonical request has no per-block cache markers.
//! - `top_k`, `thinking`, and any field or block type not handled here have no translation:
//!   such a request goes only to Anthropic-format deployments, and is refused with a 400
//!   naming the field when its alias has none. Never dropped.
//! - A failed tool result (`is_error`) starts its text with `Error: `, since OpenAI tool
//!   messages carry no such flag.

use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use serde_json::{json, Map, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Deployment;
    use crate::ingress::anthropic::fixtures::{parse_ok, user};
    use crate::providers::{anthropic::Anthropic, Auth, Provider};
    use crate::util::valueread::FromValue;
    use crate::wire::anthropic::error_body;

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
}

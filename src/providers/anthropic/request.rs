//! Request: OpenAI Chat Completions → Anthropic Messages.
//!
//! Per Anthropic's API reference: the Messages request ("Messages"; "Tool use":
//! `tool_use` / `tool_result` blocks, `tool_choice` auto/any/tool/none with
//! `disable_parallel_tool_use`; "Vision": base64 and URL image sources). The client side is
//! OpenAI's Chat Completions reference, as in `openai.rs`.

use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::providers::canonical::{self, asks_nothing, refused_detail, Cx, ToolChoice, IGNORED};
use serde_json::{json, Map, Value};

/// Anthropic requires `max_tokens`; OpenAI clients may leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The image types Anthropic accepts in a base64 source.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

pub(in crate::providers) fn request_body(
    cx: &Cx,
    model: &str,
    req: &ChatRequest,
) -> Result<Map<String, Value>, GatewayError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::anthropic::test_support::{deployment, parse, user};
    use crate::providers::anthropic::Anthropic;
    use crate::providers::{Auth, Provider};

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
}

//! OpenAI Chat Completions to Converse (`POST {base}/model/{modelId}/converse`) and its
//! answer back to a `chat.completion`. Wire format per the Bedrock API reference
//! ("Converse"; `ContentBlock`; "MessageStopEvent" for stop reasons; "TokenUsage", whose
//! `inputTokens` leaves out the cache reads and writes counted beside it).

use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::providers::canonical::{self, asks_nothing, refused_detail, Cx, Identity, ToolChoice, IGNORED};
use crate::util::hash::sha256_hex;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// OpenAI's image media types and Converse's names for them.
const IMAGE_FORMATS: &[(&str, &str)] =
    &[("image/png", "png"), ("image/jpeg", "jpeg"), ("image/gif", "gif"), ("image/webp", "webp")];

// ---------------------------------------------------------------------------------------
// Request: OpenAI Chat Completions → Converse.

pub(super) fn request_body(cx: &Cx, req: &ChatRequest) -> Result<Map<String, Value>, GatewayError> {
    let body = req.body();
    let mut out = Map::new();
    let mut inference = Map::new();
    let mut carries_tool_blocks = false;
    // OpenAI treats a null field as an absent one.
    for (key, value) in body.iter().filter(|(_, v)| !v.is_null()) {
        match key.as_str() {
            // The operation path carries `stream`; the tool fields are read below.
            "model" | "stream" | "tools" | "tool_choice" | "parallel_tool_calls" => {}
            // They only identify the end user to the provider. Converse's nearest field,
            // `requestMetadata`, labels invocation logs and restricts its characters, so
            // sending them there could turn a valid request into a 400.
            "user" | "safety_identifier" => {}
            "messages" => {
                let conversation = conversation(cx, value)?;
                carries_tool_blocks = conversation.carries_tool_blocks;
                if !conversation.system.is_empty() {
                    out.insert("system".into(), conversation.system.into());
                }
                out.insert("messages".into(), conversation.turns.into());
            }
            // The newer name wins when a client sends both.
            "max_tokens" if body.get("max_completion_tokens").is_some_and(|v| !v.is_null()) => {}
            "max_tokens" | "max_completion_tokens" => {
                inference.insert("maxTokens".into(), value.clone());
            }
            "temperature" if value.as_f64().is_some_and(|t| t > 1.0) => {
                return Err(cx.unsupported("temperature", " above 1 (Converse's range is 0 to 1)"));
            }
            "temperature" => {
                inference.insert("temperature".into(), value.clone());
            }
            "top_p" => {
                inference.insert("topP".into(), value.clone());
            }
            "stop" => {
                inference.insert("stopSequences".into(), cx.stop_sequences(value)?);
            }
            k if IGNORED.contains(&k) || asks_nothing(k, value) => {}
            k => return Err(cx.unsupported(k, &refused_detail(k, value))),
        }
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), inference.into());
    }
    if let Some(config) = tool_config(cx, body, carries_tool_blocks)? {
        out.insert("toolConfig".into(), config);
    }
    Ok(out)
}

/// Converse has no tool choice "none". A request without `toolConfig` offers the model no
/// tool, which is what `none` asks, so `none` leaves it out; but Converse refuses `toolUse`
/// and `toolResult` blocks without a `toolConfig` ("The toolConfig field must be defined
/// when using toolUse and toolResult content blocks"), and a conversation that carries
/// them would need the tools offered, which `none` forbids: that is a 400.
fn tool_config(cx: &Cx, body: &Map<String, Value>, carries_tool_blocks: bool) -> Result<Option<Value>, GatewayError> {
    let choice = cx.tool_choice(body)?;
    if choice == Some(ToolChoice::None) {
        if carries_tool_blocks {
            return Err(cx.unsupported(
                "tool_choice",
                " `none` in a conversation with tool calls (Converse needs the tools offered there and cannot be told not to call them)",
            ));
        }
        return Ok(None);
    }
    let tools = match body.get("tools").filter(|t| !t.is_null()) {
        Some(tools) => cx.function_tools(tools)?,
        None => Vec::new(),
    };
    if tools.is_empty() {
        return match choice {
            Some(_) => Err(cx.invalid("tool_choice", "needs `tools`")),
            None => Ok(None),
        };
    }
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(cx.unsupported("parallel_tool_calls", " `false`"));
    }
    let specs: Vec<Value> = tools
        .into_iter()
        .map(|f| {
            let mut spec = json!({"name": f.name, "inputSchema": {"json": f.parameters}});
            if let Some(description) = f.description {
                spec["description"] = description.clone();
            }
            json!({"toolSpec": spec})
        })
        .collect();
    let mut config = json!({"tools": specs});
    // `auto` is Converse's default, and some models refuse an explicit `toolChoice`.
    match choice {
        Some(ToolChoice::Required) => config["toolChoice"] = json!({"any": {}}),
        Some(ToolChoice::Function(name)) => config["toolChoice"] = json!({"tool": {"name": name}}),
        _ => {}
    }
    Ok(Some(config))
}

struct Conversation {
    system: Vec<Value>,
    turns: Vec<Value>,
    carries_tool_blocks: bool,
}

/// The system prompt (every system and developer message, in order) and the turns.
/// Converse wants user and assistant turns to alternate, so consecutive messages that land
/// on the same role (tool results are user content) are merged into one turn.
fn conversation(cx: &Cx, messages: &Value) -> Result<Conversation, GatewayError> {
    let messages = messages.as_array().ok_or_else(|| cx.invalid("messages", "must be an array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut carries_tool_blocks = false;
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = cx.object(&path, message)?;
        let (role, blocks) = match message.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                cx.check_keys(&path, message, &["role", "content", "name"])?;
                system.extend(content_blocks(cx, &path, message.get("content"), &["text"])?);
                continue;
            }
            "user" => {
                cx.check_keys(&path, message, &["role", "content", "name"])?;
                ("user", content_blocks(cx, &path, message.get("content"), &["text", "image_url"])?)
            }
            "assistant" => ("assistant", assistant_blocks(cx, &path, message)?),
            "tool" => ("user", vec![tool_result(cx, &path, message)?]),
            role => return Err(cx.unsupported(&format!("{path}.role"), &format!(" `{role}`"))),
        };
        carries_tool_blocks |= blocks.iter().any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some());
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok(Conversation { system, turns, carries_tool_blocks })
}

/// `name` is accepted on every role and not sent: it only labels participants, and
/// Converse has no such field.
fn assistant_blocks(cx: &Cx, path: &str, message: &Map<String, Value>) -> Result<Vec<Value>, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "name", "tool_calls", "refusal"])?;
    let mut blocks = content_blocks(cx, path, message.get("content"), &["text", "refusal"])?;
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        blocks.push(json!({"text": refusal}));
    }
    // OpenAI histories carry `content: ""` beside tool calls; Converse rejects blank text.
    blocks.retain(|b| b["text"] != "");
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls.as_array().ok_or_else(|| cx.invalid(&format!("{path}.tool_calls"), "must be an array"))?;
        for (j, call) in calls.iter().enumerate() {
            let call = cx.tool_call(&format!("{path}.tool_calls[{j}]"), call)?;
            blocks.push(json!({"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.input}}));
        }
    }
    Ok(blocks)
}

fn tool_result(cx: &Cx, path: &str, message: &Map<String, Value>) -> Result<Value, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "tool_call_id"])?;
    let id = cx.string(&format!("{path}.tool_call_id"), message.get("tool_call_id").unwrap_or(&Value::Null))?;
    let content = content_blocks(cx, path, message.get("content"), &["text"])?;
    Ok(json!({"toolResult": {"toolUseId": id, "content": content}}))
}

/// A message's `content` (a string, an array of parts, or nothing) as Converse blocks,
/// accepting only the part types in `allowed`.
fn content_blocks(cx: &Cx, path: &str, content: Option<&Value>, allowed: &[&str]) -> Result<Vec<Value>, GatewayError> {
    canonical::map_parts(cx, path, content, allowed, |kind, field, inner| match kind {
        "image_url" => image(cx, field, inner),
        _ => Ok(json!({"text": cx.string(field, inner)?})),
    })
}

/// `detail` is accepted and not sent: it trades OpenAI's image cost against fidelity, and
/// Converse has no such choice.
fn image(cx: &Cx, path: &str, image: &Value) -> Result<Value, GatewayError> {
    let image = cx.object(path, image)?;
    cx.check_keys(path, image, &["url", "detail"])?;
    let url_path = format!("{path}.url");
    let url = cx.string(&url_path, image.get("url").unwrap_or(&Value::Null))?;
    if url.starts_with("https://") || url.starts_with("http://") {
        // Converse takes image bytes (or an S3 location), never a URL for it to fetch.
        return Err(
            cx.unsupported(&url_path, " with an http(s) URL (Converse takes images inline: send a base64 `data:` URL)")
        );
    }
    let (media_type, data) =
        canonical::data_url(url).ok_or_else(|| cx.invalid(&url_path, "must be a base64 `data:` URL"))?;
    let format = IMAGE_FORMATS
        .iter()
        .find_map(|(media, format)| (*media == media_type).then_some(*format))
        .ok_or_else(|| cx.unsupported(&url_path, &format!(" with media type `{media_type}`")))?;
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

// ---------------------------------------------------------------------------------------
// Response: Converse → OpenAI `chat.completion`.

/// A Converse answer as a `chat.completion`, with its usage.
pub(super) fn completion(req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
    let body_value: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::Server)?;
    let answer = read_answer(&body_value).ok_or(ErrorClass::Server)?;
    let (usage, text, tool_calls) = (answer.usage, answer.text, answer.tool_calls);
    let identity = identity(req, &body);
    let completion = identity.completion(text, tool_calls, finish_reason(answer.stop_reason), usage);
    Ok((completion.to_string().into_bytes(), Some(usage)))
}

/// A Converse answer as the response needs it.
struct Answer<'a> {
    text: Option<String>,
    tool_calls: Vec<Value>,
    stop_reason: Option<&'a str>,
    usage: Usage,
}

/// Reads a parsed Converse answer (`output.message.content` blocks of `text` or `toolUse`,
/// `stopReason`, `usage`) with the checks the derived structs in the tests make: required
/// fields present, every field of its type; `None` where they would fail. Walking the
/// Value saves the wasm a deserializer per struct on this once-per-request path.
fn read_answer(v: &Value) -> Option<Answer<'_>> {
    fn opt_str(v: Option<&Value>) -> Option<Option<&str>> {
        match v {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_str().map(Some),
        }
    }
    let v = v.as_object()?;
    let message = v.get("output")?.as_object()?.get("message")?.as_object()?;
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    if let Some(content) = message.get("content") {
        for block in content.as_array()? {
            let block = block.as_object()?;
            if let Some(t) = opt_str(block.get("text"))? {
                text.get_or_insert_with(String::new).push_str(t);
            }
            match block.get("toolUse") {
                None | Some(Value::Null) => {}
                Some(call) => {
                    let call = call.as_object()?;
                    let id = call.get("toolUseId")?.as_str()?;
                    let name = call.get("name")?.as_str()?;
                    let input = call.get("input").unwrap_or(&Value::Null);
                    tool_calls.push(canonical::tool_call(id, name, input));
                }
            }
        }
    }
    let stop_reason = opt_str(v.get("stopReason"))?;
    let usage = match v.get("usage") {
        None => WireUsage::default(),
        Some(u) => {
            let u = u.as_object()?;
            let count = |name: &str| u.get(name).map_or(Some(0), Value::as_u64);
            WireUsage {
                input_tokens: count("inputTokens")?,
                output_tokens: count("outputTokens")?,
                cache_read_input_tokens: count("cacheReadInputTokens")?,
                cache_write_input_tokens: count("cacheWriteInputTokens")?,
            }
        }
    };
    Some(Answer { text, tool_calls, stop_reason, usage: usage.total() })
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl WireUsage {
    pub(super) fn total(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens + self.cache_read_input_tokens + self.cache_write_input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cache_read_input_tokens,
            cache_write_tokens: self.cache_write_input_tokens,
            ..Usage::default()
        }
    }
}

/// Converse answers carry neither an id nor the model (the request id travels in a header
/// the provider interface does not see): the id is derived from the answer's bytes and the
/// time, and the model is the alias the client asked for.
fn identity(req: &ChatRequest, answer: &[u8]) -> Identity {
    Identity { id: completion_id(req.received_at, answer), model: req.model.clone(), created: req.received_at }
}

pub(super) fn completion_id(created: u64, answer: &[u8]) -> String {
    let mut bytes = created.to_be_bytes().to_vec();
    bytes.extend_from_slice(answer);
    format!("chatcmpl-{}", &sha256_hex(&bytes)[..24])
}

pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        // end_turn, stop_sequence, and malformed_model_output / malformed_tool_use, which
        // end the turn without a usable continuation.
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::bedrock::tests::{deployment, parse, sigv4_auth, user};
    use crate::providers::bedrock::Bedrock;
    use crate::providers::Provider;

    // -----------------------------------------------------------------------------------
    // Request.

    fn build(body: Value) -> Result<Value, GatewayError> {
        let up = Bedrock.build(&deployment(), &parse(body), &sigv4_auth())?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    fn refused(body: Value) -> GatewayError {
        build(body).unwrap_err()
    }

    #[test]
    fn system_and_developer_messages_become_system_blocks_and_turns_merge() {
        let body = build(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            user(json!("one")),
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "two", "name": "alice"},
            {"role": "assistant", "content": "Deux."},
        ]}))
        .unwrap();
        assert_eq!(body["system"], json!([{"text": "Be brief."}, {"text": "Answer in French."}]));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "one"}, {"text": "two"}]},
                {"role": "assistant", "content": [{"text": "Deux."}]},
            ])
        );
        assert!(body.get("inferenceConfig").is_none() && body.get("toolConfig").is_none());
        let e = refused(json!({"model": "m", "messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}));
        assert!(e.message.contains("`messages[0].content[0].type` `image_url`"), "{}", e.message);
    }

    #[test]
    fn base64_images_become_image_blocks_and_urls_are_refused() {
        let body = build(json!({"model": "m", "messages": [user(json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        ]))]}))
        .unwrap();
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                {"text": "What is in these?"},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}},
            ])
        );
        let image = |url: &str| {
            refused(
                json!({"model": "m", "messages": [user(json!([{"type": "image_url", "image_url": {"url": url}}]))]}),
            )
        };
        let remote = image("https://example.com/cat.jpg");
        assert_eq!((remote.status, remote.code), (400, "unsupported_parameter"));
        assert!(
            remote.message.contains("`messages[0].content[0].image_url.url` with an http(s) URL"),
            "{}",
            remote.message
        );
        assert!(remote.message.contains("provider bedrock (deployment `bedrock-eu`)"), "{}", remote.message);
        assert!(image("data:image/tiff;base64,AAAA").message.contains("`image/tiff`"));
        assert_eq!(image("ftp://x/y.png").code, "invalid_request");
        let file = refused(json!({"model": "m", "messages": [user(json!([
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]))]}));
        assert!(file.message.contains("`messages[0].content[0].type` `file`"), "{}", file.message);
    }

    #[test]
    fn tools_tool_calls_and_merged_tool_results() {
        let body = build(json!({"model": "m",
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "now"}},
            ],
            "tool_choice": "required", "parallel_tool_calls": true,
            "messages": [
                user(json!("Weather in Paris and Rome?")),
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "t2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "t1", "content": "18C"},
                {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "21C"}]},
                user(json!("Thanks")),
            ]}))
        .unwrap();
        assert_eq!(
            body["toolConfig"],
            json!({
                "tools": [
                    {"toolSpec": {"name": "get_weather", "description": "Weather",
                        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}},
                    {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
                ],
                "toolChoice": {"any": {}},
            })
        );
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "t2", "name": "get_weather", "input": {"city": "Rome"}}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"text": "18C"}]}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"text": "21C"}]}},
                    {"text": "Thanks"},
                ]},
            ])
        );
    }

    #[test]
    fn tool_choice_modes() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let history = json!([user(json!("x")),
            {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "done"}]);
        let with = |choice: Value, parallel: Value, messages: &Value| {
            build(json!({"model": "m", "messages": messages, "tools": tools, "tool_choice": choice,
                "parallel_tool_calls": parallel}))
        };
        let plain = json!([user(json!("x"))]);
        let config = |choice: Value| with(choice, Value::Null, &plain).map(|b| b["toolConfig"].clone());
        assert_eq!(
            config(json!("auto")).unwrap(),
            json!({"tools": [{"toolSpec": {"name": "f",
            "inputSchema": {"json": {"type": "object", "properties": {}}}}}]}),
            "auto is Converse's default"
        );
        assert_eq!(config(Value::Null).unwrap()["toolChoice"], Value::Null);
        assert_eq!(
            config(json!({"type": "function", "function": {"name": "f"}})).unwrap()["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        assert_eq!(config(json!("none")).unwrap(), Value::Null, "no tools offered, so none can be called");
        let none_with_history = with(json!("none"), Value::Null, &history).unwrap_err();
        assert!(none_with_history.message.contains("`tool_choice` `none` in a conversation with tool calls"));
        assert!(with(json!("auto"), Value::Null, &history).unwrap()["toolConfig"]["tools"].is_array());
        let serial = with(Value::Null, json!(false), &plain).unwrap_err();
        assert!(serial.message.contains("`parallel_tool_calls` `false`"), "{}", serial.message);
        let allowed = config(json!({"type": "allowed_tools", "allowed_tools": {}})).unwrap_err();
        assert!(allowed.message.contains("`tool_choice` of type `allowed_tools`"), "{}", allowed.message);
        let toolless = build(json!({"model": "m", "messages": plain, "tool_choice": "required"})).unwrap_err();
        assert_eq!(toolless.code, "invalid_request");
        let strict = build(json!({"model": "m", "messages": plain,
            "tools": [{"type": "function", "function": {"name": "f", "strict": true}}]}));
        assert!(strict.unwrap_err().message.contains("`tools[0].function.strict`"));
    }

    #[test]
    fn sampling_options_become_the_inference_config() {
        let body = build(json!({"model": "m", "messages": [user(json!("x"))], "max_completion_tokens": 300,
            "max_tokens": 10, "temperature": 0.5, "top_p": 0.9, "stop": "END", "user": "u-1", "stream": true,
            "stream_options": {"include_usage": true}, "n": 1, "logprobs": false, "presence_penalty": 0,
            "response_format": {"type": "text"}, "store": false, "seed": null}))
        .unwrap();
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]})
        );
        let sent: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(sent, ["inferenceConfig", "messages"]);
        let body =
            build(json!({"model": "m", "messages": [user(json!("x"))], "max_tokens": 10, "stop": ["a", "b"]})).unwrap();
        assert_eq!(body["inferenceConfig"], json!({"maxTokens": 10, "stopSequences": ["a", "b"]}));
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
            assert!(e.message.contains("provider bedrock (deployment `bedrock-eu`)"), "{}", e.message);
        }
        let message_field = refused(json!({"model": "m", "messages": [{"role": "user", "content": "x", "audio": {}}]}));
        assert!(message_field.message.contains("`messages[0].audio`"));
        let function_role =
            refused(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}));
        assert!(function_role.message.contains("`messages[0].role` `function`"));
        let bad_arguments = refused(json!({"model": "m", "messages": [user(json!("x")), {"role": "assistant",
            "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{nope"}}]}]}));
        assert!(bad_arguments.message.contains("messages[1].tool_calls[0].function.arguments"));
    }

    // -----------------------------------------------------------------------------------
    // Response.

    // The derived structs `read_answer` replaced: the reference it is checked against.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WireResponse {
        output: WireOutput,
        #[serde(default)]
        stop_reason: Option<String>,
        #[serde(default)]
        usage: WireUsage,
    }

    #[derive(Deserialize)]
    struct WireOutput {
        message: WireMessage,
    }

    #[derive(Deserialize)]
    struct WireMessage {
        #[serde(default)]
        content: Vec<WireBlock>,
    }

    /// A `ContentBlock` union: one member is set. Only text and tool use can answer a
    /// translated request; reasoning needs request fields this provider never sends.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WireBlock {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        tool_use: Option<WireToolUse>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WireToolUse {
        tool_use_id: String,
        name: String,
        #[serde(default)]
        input: Value,
    }

    /// What the derived structs made of an answer, in `read_answer`'s shape.
    /// Text, tool calls, stop reason, usage.
    type Read = (Option<String>, Vec<Value>, Option<String>, Usage);

    fn typed_answer(text: &str) -> Option<Read> {
        let answer = serde_json::from_str::<WireResponse>(text).ok()?;
        let mut out_text: Option<String> = None;
        let mut calls = Vec::new();
        for block in &answer.output.message.content {
            if let Some(t) = &block.text {
                out_text.get_or_insert_with(String::new).push_str(t);
            }
            if let Some(call) = &block.tool_use {
                calls.push(canonical::tool_call(&call.tool_use_id, &call.name, &call.input));
            }
        }
        Some((out_text, calls, answer.stop_reason, answer.usage.total()))
    }

    #[test]
    fn read_answer_agrees_with_the_derived_structs() {
        for text in [
            r#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi"},{"text":" there"}]}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":2,"totalTokens":7}}"#,
            r#"{"output":{"message":{"content":[{"toolUse":{"toolUseId":"t1","name":"f","input":{"a":1}}}]}},"stopReason":"tool_use"}"#,
            r#"{"output":{"message":{"content":[{"toolUse":{"toolUseId":"t1","name":"f"}},{"text":null,"toolUse":null}]}}}"#,
            r#"{"output":{"message":{}},"usage":{"cacheReadInputTokens":3,"cacheWriteInputTokens":4}}"#,
            r#"{"output":{"message":{"content":[]}},"stopReason":null,"x":[1]}"#,
            r#"{}"#,
            r#"{"output":{}}"#,
            r#"{"output":{"message":null}}"#,
            r#"{"output":{"message":{"content":null}}}"#,
            r#"{"output":{"message":{"content":{}}}}"#,
            r#"{"output":{"message":{"content":[7]}}}"#,
            r#"{"output":{"message":{"content":[{"text":3}]}}}"#,
            r#"{"output":{"message":{"content":[{"toolUse":{"name":"f"}}]}}}"#,
            r#"{"output":{"message":{"content":[{"toolUse":{"toolUseId":1,"name":"f"}}]}}}"#,
            r#"{"output":{"message":{"content":[{"toolUse":7}]}}}"#,
            r#"{"output":{"message":{}},"stopReason":3}"#,
            r#"{"output":{"message":{}},"usage":null}"#,
            r#"{"output":{"message":{}},"usage":{"inputTokens":-1}}"#,
            r#"{"output":{"message":{}},"usage":{"inputTokens":1.5}}"#,
            r#"{"output":{"message":{}},"usage":{"outputTokens":null}}"#,
            r#"{"output":{"message":{}},"usage":7}"#,
            r#"null"#,
            r#""x""#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let ours = read_answer(&value).map(|a| (a.text, a.tool_calls, a.stop_reason.map(str::to_string), a.usage));
            assert_eq!(ours, typed_answer(text), "{text}");
        }
    }

    fn converse_answer(content: Value, stop_reason: &str) -> Vec<u8> {
        json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": {"inputTokens": 10, "outputTokens": 7, "totalTokens": 122, "cacheReadInputTokens": 100,
                "cacheWriteInputTokens": 5},
            "metrics": {"latencyMs": 420}
        })
        .to_string()
        .into_bytes()
    }

    fn respond(content: Value, stop_reason: &str) -> (Value, Option<Usage>) {
        let req = parse(json!({"model": "claude-eu", "messages": [user(json!("x"))]}));
        let (body, usage) = Bedrock.response(&req, converse_answer(content, stop_reason)).unwrap();
        (serde_json::from_slice(&body).unwrap(), usage)
    }

    #[test]
    fn a_text_answer_becomes_a_chat_completion_with_cache_usage() {
        let (mut body, usage) = respond(json!([{"text": "Hello"}, {"text": " there"}]), "end_turn");
        let id = body["id"].take();
        assert!(id.as_str().is_some_and(|id| id.len() == 33 && id.starts_with("chatcmpl-")), "{id}");
        assert_eq!(
            body,
            json!({
                "id": null, "object": "chat.completion", "created": 1_750_000_000, "model": "claude-eu",
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
    fn tool_use_becomes_tool_calls() {
        let (body, _) = respond(
            json!([{"text": "Checking."},
                {"toolUse": {"toolUseId": "tooluse_9", "name": "get_weather", "input": {"city": "Paris"}}}]),
            "tool_use",
        );
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Checking.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "tooluse_9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        let (only_tool, _) = respond(json!([{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]), "tool_use");
        assert_eq!(only_tool["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn every_stop_reason_maps() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
            ("malformed_model_output", "stop"),
        ] {
            let (body, _) = respond(json!([{"text": "x"}]), stop);
            assert_eq!(body["choices"][0]["finish_reason"], finish, "{stop}");
        }
    }

    #[test]
    fn an_answer_that_is_not_converse_output_is_a_server_error() {
        let req = parse(json!({"model": "m", "messages": [user(json!("x"))]}));
        assert_eq!(Bedrock.response(&req, b"garbage".to_vec()).unwrap_err(), ErrorClass::Server);
        assert_eq!(Bedrock.response(&req, b"{}".to_vec()).unwrap_err(), ErrorClass::Server);
    }
}

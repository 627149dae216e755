//! Request: OpenAI Chat Completions → `GenerateContentRequest`.
//!
//! Per the Gemini API reference ("Generating content", "Caching", "Function calling"):
//! `systemInstruction`, `contents` of `user` / `model` turns made of `parts` (`text`,
//! `inlineData` {mimeType, data}, `functionCall` {name, args}, `functionResponse` {name,
//! response}), `tools[].functionDeclarations` (with `parametersJsonSchema`, which takes
//! JSON Schema as OpenAI clients write it, where `parameters` takes an OpenAPI subset),
//! `toolConfig.functionCallingConfig` (mode AUTO / ANY / NONE, `allowedFunctionNames`),
//! and `generationConfig` (`maxOutputTokens`, `temperature`, `topP`, `stopSequences`,
//! `candidateCount`, `seed`, `presencePenalty`, `frequencyPenalty`, `responseMimeType`
//! with `responseJsonSchema`).

use super::call_id::signature_of;
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::providers::canonical::{self, asks_nothing, refused_detail, Cx, ToolChoice, IGNORED};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub(in crate::providers) fn request_body(cx: &Cx, req: &ChatRequest) -> Result<Vec<u8>, GatewayError> {
    let body = req.body();
    let mut out = Map::new();
    let mut generation = Map::new();
    // OpenAI treats a null field as an absent one.
    for (key, value) in body.iter().filter(|(_, v)| !v.is_null()) {
        let setting = match key.as_str() {
            // The path carries the model and `stream`; the tool fields are read below.
            "model" | "stream" | "tools" | "tool_choice" | "parallel_tool_calls" => continue,
            // They only identify the end user, and Gemini has no such field.
            "user" | "safety_identifier" => continue,
            "messages" => {
                let (system, contents) = conversation(cx, value)?;
                if !system.is_empty() {
                    out.insert("systemInstruction".into(), json!({ "parts": system }));
                }
                out.insert("contents".into(), contents.into());
                continue;
            }
            // The newer name wins when a client sends both.
            "max_tokens" if body.get("max_completion_tokens").is_some_and(|v| !v.is_null()) => continue,
            "max_tokens" | "max_completion_tokens" => "maxOutputTokens",
            "temperature" => "temperature",
            "top_p" => "topP",
            "seed" => "seed",
            "presence_penalty" => "presencePenalty",
            "frequency_penalty" => "frequencyPenalty",
            "stop" => {
                generation.insert("stopSequences".into(), cx.stop_sequences(value)?);
                continue;
            }
            "n" if req.stream && value.as_u64().is_some_and(|n| n > 1) => {
                return Err(cx.unsupported("n", " above 1 in a stream (Gemini streams one candidate)"));
            }
            "n" => "candidateCount",
            "response_format" => {
                response_format(cx, value, &mut generation)?;
                continue;
            }
            k if IGNORED.contains(&k) || asks_nothing(k, value) => continue,
            k => return Err(cx.unsupported(k, &refused_detail(k, value))),
        };
        generation.insert(setting.into(), value.clone());
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), generation.into());
    }
    tools(cx, body, &mut out)?;
    Ok(serde_json::to_vec(&out).expect("a JSON map serialises"))
}

fn response_format(cx: &Cx, format: &Value, generation: &mut Map<String, Value>) -> Result<(), GatewayError> {
    match format["type"].as_str() {
        Some("text") => {}
        Some("json_object") => {
            generation.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            let spec = cx.object("response_format.json_schema", &format["json_schema"])?;
            cx.check_keys("response_format.json_schema", spec, &["name", "description", "schema", "strict"])?;
            generation.insert("responseMimeType".into(), "application/json".into());
            if let Some(schema) = spec.get("schema").filter(|s| !s.is_null()) {
                generation.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        _ => return Err(cx.unsupported("response_format", &refused_detail("response_format", format))),
    }
    Ok(())
}

fn tools(cx: &Cx, body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        return Err(cx.unsupported("parallel_tool_calls", " `false`"));
    }
    let declarations: Vec<Value> = match body.get("tools").filter(|t| !t.is_null()) {
        Some(tools) => cx
            .function_tools(tools)?
            .into_iter()
            .map(|f| {
                let mut declaration = json!({"name": f.name, "parametersJsonSchema": f.parameters});
                if let Some(description) = f.description {
                    declaration["description"] = description.clone();
                }
                declaration
            })
            .collect(),
        None => Vec::new(),
    };
    let choice = cx.tool_choice(body)?;
    if declarations.is_empty() {
        return match choice {
            Some(ToolChoice::None) | None => Ok(()),
            Some(_) => Err(cx.invalid("tool_choice", "needs `tools`")),
        };
    }
    out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
    let config = match choice {
        None => return Ok(()),
        Some(ToolChoice::Auto) => json!({"mode": "AUTO"}),
        Some(ToolChoice::Required) => json!({"mode": "ANY"}),
        Some(ToolChoice::None) => json!({"mode": "NONE"}),
        Some(ToolChoice::Function(name)) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    };
    out.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
    Ok(())
}

/// The system instruction's parts (every system and developer message, in order) and the
/// turns. Consecutive messages that land on the same role (function responses are the
/// user's) are merged into one turn, as Gemini wants a function call's responses together.
fn conversation(cx: &Cx, messages: &Value) -> Result<(Vec<Value>, Vec<Value>), GatewayError> {
    let messages = messages.as_array().ok_or_else(|| cx.invalid("messages", "must be an array"))?;
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    // Gemini answers a function call by its name; OpenAI by the call's id.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = cx.object(&path, message)?;
        let (role, parts) = match message.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                cx.check_keys(&path, message, &["role", "content", "name"])?;
                system.extend(parts(cx, &path, message.get("content"), &["text"])?);
                continue;
            }
            "user" => {
                cx.check_keys(&path, message, &["role", "content", "name"])?;
                ("user", parts(cx, &path, message.get("content"), &["text", "image_url", "file"])?)
            }
            "assistant" => ("model", model_parts(cx, &path, message, &mut names)?),
            "tool" => ("user", vec![function_response(cx, &path, message, &names)?]),
            role => return Err(cx.unsupported(&format!("{path}.role"), &format!(" `{role}`"))),
        };
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let turns = turns.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect();
    Ok((system, turns))
}

/// `name` is accepted on every role and not sent: it only labels participants.
fn model_parts<'v>(
    cx: &Cx,
    path: &str,
    message: &'v Map<String, Value>,
    names: &mut HashMap<&'v str, &'v str>,
) -> Result<Vec<Value>, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "name", "tool_calls", "refusal"])?;
    let mut parts = parts(cx, path, message.get("content"), &["text", "refusal"])?;
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        parts.push(json!({ "text": refusal }));
    }
    // OpenAI histories carry `content: ""` beside tool calls.
    parts.retain(|p| p["text"] != "");
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls.as_array().ok_or_else(|| cx.invalid(&format!("{path}.tool_calls"), "must be an array"))?;
        for (j, call) in calls.iter().enumerate() {
            let call = cx.tool_call(&format!("{path}.tool_calls[{j}]"), call)?;
            names.insert(call.id, call.name);
            let mut part = json!({"functionCall": {"name": call.name, "args": call.input}});
            if let Some(signature) = signature_of(call.id) {
                part["thoughtSignature"] = signature.into();
            }
            parts.push(part);
        }
    }
    Ok(parts)
}

fn function_response(
    cx: &Cx,
    path: &str,
    message: &Map<String, Value>,
    names: &HashMap<&str, &str>,
) -> Result<Value, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "tool_call_id"])?;
    let id_path = format!("{path}.tool_call_id");
    let id = cx.string(&id_path, message.get("tool_call_id").unwrap_or(&Value::Null))?;
    let name =
        names.get(id).ok_or_else(|| cx.invalid(&id_path, "names no tool call of an earlier assistant message"))?;
    let text: String = parts(cx, path, message.get("content"), &["text"])?
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    // Gemini wants an object; a tool's OpenAI result is text.
    Ok(json!({"functionResponse": {"name": name, "response": {"result": text}}}))
}

/// A message's `content` (a string, an array of parts, or nothing) as Gemini parts,
/// accepting only the part types in `allowed`.
fn parts(cx: &Cx, path: &str, content: Option<&Value>, allowed: &[&str]) -> Result<Vec<Value>, GatewayError> {
    canonical::map_parts(cx, path, content, allowed, |kind, field, inner| match kind {
        "image_url" => {
            // `detail` trades OpenAI's image cost against fidelity; Gemini has no such choice.
            let image = cx.object(field, inner)?;
            cx.check_keys(field, image, &["url", "detail"])?;
            inline_data(cx, &format!("{field}.url"), image.get("url").unwrap_or(&Value::Null))
        }
        "file" => {
            let file = cx.object(field, inner)?;
            cx.check_keys(field, file, &["file_data", "filename"])?;
            inline_data(cx, &format!("{field}.file_data"), file.get("file_data").unwrap_or(&Value::Null))
        }
        _ => Ok(json!({ "text": cx.string(field, inner)? })),
    })
}

fn inline_data(cx: &Cx, path: &str, url: &Value) -> Result<Value, GatewayError> {
    let url = cx.string(path, url)?;
    if url.starts_with("https://") || url.starts_with("http://") {
        // Gemini reads files inline or from its own file store, never from a URL.
        return Err(cx.unsupported(path, " with an http(s) URL (send the data inline as a base64 `data:` URL)"));
    }
    let (media_type, data) =
        canonical::data_url(url).ok_or_else(|| cx.invalid(path, "must be a base64 `data:` URL"))?;
    Ok(json!({"inlineData": {"mimeType": media_type, "data": data}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::gemini::call_id::tool_call_id;
    use crate::providers::gemini::test_support::{auth, deployment, parse, user};
    use crate::providers::gemini::Gemini;
    use crate::providers::Provider;

    pub fn build(body: Value) -> Result<Value, GatewayError> {
        let up = Gemini.build(&deployment(), &parse(body), &auth())?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    #[test]
    fn system_turns_images_and_generation_config() {
        let body = build(json!({"model": "m", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                user(json!([{"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}])),
                {"role": "user", "content": "And quickly.", "name": "alice"},
                {"role": "assistant", "content": "Un chat."},
            ],
            "max_completion_tokens": 300, "max_tokens": 10, "temperature": 1.5, "top_p": 0.9, "stop": "END", "n": 2,
            "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.25, "user": "u-1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true,
                "schema": {"type": "object", "additionalProperties": false}}},
            "logprobs": false, "stream_options": null}))
        .unwrap();
        assert_eq!(body["systemInstruction"], json!({"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}));
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "What is this?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                    {"text": "And quickly."}]},
                {"role": "model", "parts": [{"text": "Un chat."}]},
            ])
        );
        assert_eq!(
            body["generationConfig"],
            json!({"maxOutputTokens": 300, "temperature": 1.5, "topP": 0.9, "stopSequences": ["END"], "candidateCount": 2,
                "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": 0.25, "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "additionalProperties": false}})
        );
        let json_object =
            build(json!({"model": "m", "messages": [user(json!("x"))], "response_format": {"type": "json_object"}}));
        assert_eq!(json_object.unwrap()["generationConfig"], json!({"responseMimeType": "application/json"}));
    }

    #[test]
    fn tools_calls_responses_and_signatures() {
        let signed = tool_call_id("chatcmpl-r1", 0, Some("Cv8B+/x="));
        let body = build(json!({"model": "m",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}},
                {"type": "function", "function": {"name": "now"}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "messages": [
                user(json!("Weather in Paris and Rome?")),
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": signed, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": signed, "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                user(json!("Thanks")),
            ]}))
        .unwrap();
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather", "parametersJsonSchema":
                    {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}},
                {"name": "now", "parametersJsonSchema": {"type": "object", "properties": {}}},
            ]}])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "Cv8B+/x="},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"result": "21C"}}},
                    {"text": "Thanks"},
                ]},
            ])
        );
        assert!(signed.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{signed}");
        let orphan = build(
            json!({"model": "m", "messages": [user(json!("x")), {"role": "tool", "tool_call_id": "nope", "content": "1"}]}),
        );
        assert!(orphan.unwrap_err().message.contains("`messages[1].tool_call_id` names no tool call"));
        let mode = |choice: Value| {
            build(json!({"model": "m", "messages": [user(json!("x"))], "tool_choice": choice,
                "tools": [{"type": "function", "function": {"name": "f"}}]}))
            .unwrap()["toolConfig"]["functionCallingConfig"]["mode"]
                .clone()
        };
        assert_eq!(mode(json!("auto")), "AUTO");
        assert_eq!(mode(json!("required")), "ANY");
        assert_eq!(mode(json!("none")), "NONE");
        assert_eq!(mode(Value::Null), Value::Null);
    }

    #[test]
    fn unsupported_fields_are_a_400_naming_field_and_provider() {
        for (field, value) in [
            ("logprobs", json!(true)),
            ("top_logprobs", json!(2)),
            ("logit_bias", json!({"1": 1})),
            ("audio", json!({})),
            ("modalities", json!(["text", "audio"])),
            ("reasoning_effort", json!("low")),
            ("store", json!(true)),
            ("service_tier", json!("flex")),
            ("prediction", json!({"type": "content", "content": "x"})),
            ("parallel_tool_calls", json!(false)),
            ("response_format", json!({"type": "grammar"})),
            ("x_unknown", json!(1)),
        ] {
            let mut body = json!({"model": "m", "messages": [user(json!("x"))]});
            body[field] = value;
            let e = build(body).unwrap_err();
            assert_eq!((e.status, e.code), (400, "unsupported_parameter"), "{field}");
            assert!(e.message.contains(&format!("`{field}`")), "{field}: {}", e.message);
            assert!(e.message.contains("provider gemini (deployment `gemini-global`)"), "{}", e.message);
        }
        let streamed_n =
            build(json!({"model": "m", "stream": true, "n": 2, "messages": [user(json!("x"))]})).unwrap_err();
        assert!(streamed_n.message.contains("`n` above 1 in a stream"), "{}", streamed_n.message);
        let url = build(
            json!({"model": "m", "messages": [user(json!([{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]))]}),
        );
        assert!(url.unwrap_err().message.contains("`messages[0].content[0].image_url.url` with an http(s) URL"));
        let audio =
            build(json!({"model": "m", "messages": [user(json!([{"type": "input_audio", "input_audio": {}}]))]}));
        assert!(audio.unwrap_err().message.contains("`messages[0].content[0].type` `input_audio`"));
        let toolless = build(json!({"model": "m", "messages": [user(json!("x"))], "tool_choice": "required"}));
        assert_eq!(toolless.unwrap_err().code, "invalid_request");
    }
}

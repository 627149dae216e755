//! Mistral AI's La Plateforme (`https://api.mistral.ai/v1`): OpenAI's Chat Completions
//! shape with Mistral's own differences.
//!
//! Per Mistral's API reference (docs.mistral.ai/api, "Chat Completion"): the seed is
//! `random_seed`, `tool_choice` `any` means a tool must be called, `finish_reason` adds
//! `model_length`. Mistral refuses any field outside its schema with a 422, so the
//! gateway refuses such fields itself, naming them. A stream's finishing chunk always
//! carries the usage (Mistral has no `stream_options`).

use super::canonical::{asks_nothing, openai_usage, refused_detail, Cx, ToolChoice, IGNORED};
use super::{Auth, Provider, StreamEnd, StreamTranslator, UpstreamRequest};
use crate::config::Deployment;
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::{Consumed, Meter, Usage};
use crate::util::sse::{write_event, SseDecoder};
use crate::wire::openai::{stream_error_event, usage_of};
use serde_json::{json, Map, Value};

pub struct Mistral;

const PROVIDER: &str = "mistral";

/// Request fields that only Mistral has, passed on for clients that know where their alias
/// leads (they change nothing another provider would be asked).
const MISTRAL_FIELDS: &[&str] = &["random_seed", "safe_prompt"];

/// Fields passed on as they are: Mistral has them with OpenAI's meaning.
const SAME_AS_OPENAI: &[&str] = &[
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "response_format",
    "prediction",
    "parallel_tool_calls",
];

impl Provider for Mistral {
    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = request_body(&Cx { provider: PROVIDER, deployment: &d.id }, &d.model, req)?;
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(key) = &auth.api_key {
            headers.push(("authorization", format!("Bearer {key}")));
        }
        let body = serde_json::to_vec(&body).expect("a JSON map serialises");
        Ok(UpstreamRequest { url: format!("{}/chat/completions", d.base_url), headers, body })
    }

    fn response(&self, _req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        let mut answer = serde_json::from_slice::<Value>(&body).map_err(|_| ErrorClass::Server)?;
        let choices = answer.get_mut("choices").and_then(Value::as_array_mut).ok_or(ErrorClass::Server)?;
        for choice in choices {
            // The model failed part way: another deployment may well succeed.
            if choice["finish_reason"] == "error" {
                return Err(ErrorClass::Server);
            }
            normalise_finish(choice);
            if let Some(content) = choice.get_mut("message").and_then(|m| m.get_mut("content")) {
                normalise_content(content);
            }
        }
        let usage = answer.get("usage").and_then(usage_of);
        Ok((answer.to_string().into_bytes(), usage))
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        let text = String::from_utf8_lossy(body).to_ascii_lowercase();
        ErrorClass::of_status(status, || {
            // "Prompt contains N tokens, too large for model with M maximum context length".
            if text.contains("too large for model") || text.contains("context length") {
                ErrorClass::ContextLength
            } else {
                ErrorClass::BadRequest
            }
        })
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        Box::new(Translator {
            wants_usage: req.client_wants_usage,
            meter: Meter::new(req.facts.input_tokens),
            ..Translator::default()
        })
    }
}

// ---------------------------------------------------------------------------------------
// Request.

fn request_body(cx: &Cx, model: &str, req: &ChatRequest) -> Result<Map<String, Value>, GatewayError> {
    let body = req.body();
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    // OpenAI treats a null field as an absent one.
    for (key, value) in body.iter().filter(|(_, v)| !v.is_null()) {
        match key.as_str() {
            "model" => {}
            "messages" => {
                out.insert("messages".into(), messages(cx, value)?);
            }
            "stream" => {
                out.insert("stream".into(), req.stream.into());
            }
            // The newer name wins when a client sends both.
            "max_tokens" if body.get("max_completion_tokens").is_some_and(|v| !v.is_null()) => {}
            "max_tokens" | "max_completion_tokens" => {
                out.insert("max_tokens".into(), value.clone());
            }
            "seed" => {
                out.insert("random_seed".into(), value.clone());
            }
            "tools" => {
                out.insert("tools".into(), tools(cx, value)?);
            }
            "tool_choice" => {
                let choice = match cx.tool_choice(body)? {
                    Some(ToolChoice::Required) => json!("any"),
                    _ => value.clone(),
                };
                out.insert("tool_choice".into(), choice);
            }
            k if SAME_AS_OPENAI.contains(&k) || MISTRAL_FIELDS.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            // They only identify the end user, and Mistral has no such field.
            "user" | "safety_identifier" => {}
            k if IGNORED.contains(&k) || asks_nothing(k, value) => {}
            k => return Err(cx.unsupported(k, &refused_detail(k, value))),
        }
    }
    Ok(out)
}

/// Function tools pass on as they are (Mistral's tools are OpenAI's, `strict` included).
fn tools(cx: &Cx, tools: &Value) -> Result<Value, GatewayError> {
    let list = tools.as_array().ok_or_else(|| cx.invalid("tools", "must be an array"))?;
    for (i, tool) in list.iter().enumerate() {
        let kind = tool["type"].as_str().unwrap_or_default();
        if kind != "function" {
            return Err(cx.unsupported(&format!("tools[{i}].type"), &format!(" `{kind}`")));
        }
        cx.object(&format!("tools[{i}].function"), &tool["function"])?;
    }
    Ok(tools.clone())
}

/// The conversation with Mistral's roles: `developer` becomes `system`; `name`, which
/// only labels participants and which Mistral refuses on most roles, is left out.
fn messages(cx: &Cx, messages: &Value) -> Result<Value, GatewayError> {
    let messages = messages.as_array().ok_or_else(|| cx.invalid("messages", "must be an array"))?;
    let mut out = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = cx.object(&path, message)?;
        let content = message.get("content").filter(|c| !c.is_null());
        let translated = match message.get("role").and_then(Value::as_str).unwrap_or_default() {
            "system" | "developer" => {
                cx.check_keys(&path, message, &["role", "content", "name"])?;
                check_parts(cx, &path, content, &["text"])?;
                json!({"role": "system", "content": content})
            }
            "user" => {
                cx.check_keys(&path, message, &["role", "content", "name"])?;
                check_parts(cx, &path, content, &["text", "image_url"])?;
                json!({"role": "user", "content": content})
            }
            "assistant" => assistant(cx, &path, message)?,
            "tool" => {
                cx.check_keys(&path, message, &["role", "content", "tool_call_id", "name"])?;
                check_parts(cx, &path, content, &["text"])?;
                let mut tool = json!({"role": "tool", "content": content, "tool_call_id": message.get("tool_call_id")});
                if let Some(name) = message.get("name").filter(|n| !n.is_null()) {
                    tool["name"] = name.clone();
                }
                tool
            }
            role => return Err(cx.unsupported(&format!("{path}.role"), &format!(" `{role}`"))),
        };
        out.push(translated);
    }
    Ok(Value::Array(out))
}

fn assistant(cx: &Cx, path: &str, message: &Map<String, Value>) -> Result<Value, GatewayError> {
    cx.check_keys(path, message, &["role", "content", "name", "tool_calls", "refusal"])?;
    let mut content = message.get("content").filter(|c| !c.is_null()).cloned();
    check_parts(cx, path, content.as_ref(), &["text"])?;
    // A refusal in the history is what the assistant said.
    if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
        content = Some(match content {
            Some(Value::String(text)) if !text.is_empty() => format!("{text}\n{refusal}").into(),
            Some(Value::Array(mut parts)) => {
                parts.push(json!({"type": "text", "text": refusal}));
                Value::Array(parts)
            }
            _ => refusal.into(),
        });
    }
    let mut out = json!({"role": "assistant", "content": content});
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let list = calls.as_array().ok_or_else(|| cx.invalid(&format!("{path}.tool_calls"), "must be an array"))?;
        for (j, call) in list.iter().enumerate() {
            cx.tool_call(&format!("{path}.tool_calls[{j}]"), call)?;
        }
        out["tool_calls"] = calls.clone();
    }
    Ok(out)
}

/// A content that is an array may only hold parts of the `allowed` types; their fields
/// are OpenAI's, which Mistral shares.
fn check_parts(cx: &Cx, path: &str, content: Option<&Value>, allowed: &[&str]) -> Result<(), GatewayError> {
    let parts = match content {
        None | Some(Value::String(_)) => return Ok(()),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(cx.invalid(&format!("{path}.content"), "must be a string or an array of content parts")),
    };
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{path}.content[{j}]");
        let part = cx.object(&part_path, part)?;
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        if !allowed.contains(&kind) {
            return Err(cx.unsupported(&format!("{part_path}.type"), &format!(" `{kind}`")));
        }
        cx.check_keys(&part_path, part, &["type", kind])?;
        if kind == "image_url" {
            let image = part.get(kind).unwrap_or(&Value::Null);
            if !image.is_string() {
                cx.check_keys(&format!("{part_path}.image_url"), cx.object(&part_path, image)?, &["url", "detail"])?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Answers.

/// `model_length` is OpenAI's `length`: the answer stopped for want of room.
fn normalise_finish(choice: &mut Value) {
    if choice["finish_reason"] == "model_length" {
        choice["finish_reason"] = "length".into();
    }
}

/// Reasoning models answer with an array of chunks (thinking and text); OpenAI clients
/// expect the text as a string, and have no place for the thinking.
fn normalise_content(content: &mut Value) {
    if let Value::Array(chunks) = content {
        let text: String = chunks.iter().filter(|c| c["type"] == "text").filter_map(|c| c["text"].as_str()).collect();
        *content = text.into();
    }
}

#[derive(Default)]
struct Translator {
    decoder: SseDecoder,
    wants_usage: bool,
    /// The answer's id, model and creation time, for the usage chunk written at the end.
    identity: Option<(Value, Value, Value)>,
    meter: Meter,
    started: bool,
    finished: bool,
    done: bool,
    failed: bool,
}

impl StreamTranslator for Translator {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut decoder = std::mem::take(&mut self.decoder);
        decoder.push(bytes, |event| {
            if self.done || self.failed {
                return;
            }
            match event.data.as_deref() {
                // Comments keep idle connections open; pass them on.
                None => out.extend_from_slice(event.raw),
                Some("[DONE]") => self.done(out),
                Some(data) => match serde_json::from_slice::<Value>(data.as_bytes()) {
                    Ok(chunk) => self.chunk(chunk, out),
                    Err(_) => out.extend_from_slice(event.raw),
                },
            }
        });
        self.decoder = decoder;
    }

    fn started(&self) -> bool {
        self.started
    }

    fn end(&mut self) -> StreamEnd {
        StreamEnd::of(self.failed, self.done && self.finished, self.decoder.has_partial())
    }

    fn consumed(&self) -> Consumed {
        let complete = !self.failed && self.done && self.finished && !self.decoder.has_partial();
        self.meter.consumed(complete)
    }
}

impl Translator {
    fn chunk(&mut self, mut chunk: Value, out: &mut Vec<u8>) {
        if let Some(usage) = chunk.get("usage").and_then(usage_of) {
            self.meter.reported = Some(usage);
        }
        self.identity = Some((chunk["id"].clone(), chunk["model"].clone(), chunk["created"].clone()));
        let choices = chunk.get_mut("choices").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
        let mut kept = Vec::with_capacity(choices.len());
        for mut choice in choices {
            if choice["finish_reason"] == "error" {
                self.failed = true;
                let e = GatewayError::new(
                    502,
                    "upstream_error",
                    "upstream_failed",
                    "The provider ended the stream with an error (finish_reason `error`).",
                );
                out.extend_from_slice(&stream_error_event(&e));
                return;
            }
            if !choice["finish_reason"].is_null() {
                self.finished = true;
                self.started = true;
            }
            normalise_finish(&mut choice);
            if let Some(content) = choice.get_mut("delta").and_then(|d| d.get_mut("content")) {
                normalise_content(content);
                let text = content.as_str().unwrap_or_default();
                self.meter.relayed(text);
                self.started |= !text.is_empty();
            }
            if let Some(calls) = choice["delta"].get("tool_calls").filter(|c| !c.is_null()) {
                for function in calls.as_array().into_iter().flatten().map(|c| &c["function"]) {
                    self.meter.relayed(function["name"].as_str().unwrap_or_default());
                    self.meter.relayed(function["arguments"].as_str().unwrap_or_default());
                }
                self.started = true;
            }
            kept.push(choice);
        }
        chunk["choices"] = Value::Array(kept);
        // OpenAI's shape: `usage: null` on every chunk of a stream that ends with a usage
        // chunk, no `usage` at all otherwise; the usage itself goes in that last chunk.
        if let Some(fields) = chunk.as_object_mut() {
            if self.wants_usage {
                fields.insert("usage".into(), Value::Null);
            } else {
                fields.remove("usage");
            }
        }
        write_event(out, None, &chunk.to_string());
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        self.done = true;
        if self.wants_usage {
            let (id, model, created) = self.identity.clone().unwrap_or_default();
            let last = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": openai_usage(self.meter.reported.unwrap_or_default())});
            write_event(out, None, &last.to_string());
        }
        write_event(out, None, "[DONE]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat;
    use crate::util::valueread::FromValue;

    fn deployment() -> Deployment {
        Deployment::read(&json!({
            "id": "mistral-eu", "provider": "mistral", "model": "mistral-small-latest",
            "base_url": "https://api.mistral.ai/v1", "api_key_secret": "MISTRAL_API_KEY",
            "jurisdiction": "eu", "region": "eu", "price": {"input": "1", "output": "1"}
        }))
        .unwrap()
    }

    fn parse(body: Value) -> ChatRequest {
        chat::parse(body.to_string().as_bytes()).unwrap()
    }

    fn build(body: Value) -> Result<Value, GatewayError> {
        let auth = Auth { api_key: Some("mistral-key-0123456789".into()), ..Auth::default() };
        let up = Mistral.build(&deployment(), &parse(body), &auth)?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    fn user(content: Value) -> Value {
        json!({"role": "user", "content": content})
    }

    #[test]
    fn request_targets_chat_completions_with_a_bearer_key() {
        let auth = Auth { api_key: Some("mistral-key-0123456789".into()), ..Auth::default() };
        let up = Mistral.build(&deployment(), &parse(json!({"model": "fast", "messages": [user(json!("hi"))]})), &auth);
        let up = up.unwrap();
        assert_eq!(up.url, "https://api.mistral.ai/v1/chat/completions");
        assert!(up.headers.contains(&("authorization", "Bearer mistral-key-0123456789".into())));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body, json!({"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}]}));
    }

    #[test]
    fn openai_fields_become_mistrals() {
        let body = build(json!({"model": "m", "messages": [
                {"role": "developer", "content": "Be brief.", "name": "ops"},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}], "name": "alice"},
            ],
            "seed": 42, "max_completion_tokens": 300, "max_tokens": 10, "temperature": 0.3, "top_p": 0.9,
            "stop": ["END"], "n": 2, "presence_penalty": 0.5, "frequency_penalty": 0.1,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "stream": true, "stream_options": {"include_usage": true}, "user": "u-1", "safe_prompt": true,
            "logprobs": false, "store": false, "service_tier": "auto"}))
        .unwrap();
        assert_eq!(
            body,
            json!({"model": "mistral-small-latest",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}]},
                ],
                "random_seed": 42, "max_tokens": 300, "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "n": 2,
                "presence_penalty": 0.5, "frequency_penalty": 0.1,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
                "stream": true, "safe_prompt": true})
        );
    }

    #[test]
    fn tools_and_tool_choice() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": true}}]);
        let history = json!([
            user(json!("Weather in Paris?")),
            {"role": "assistant", "content": "", "tool_calls": [{"id": "D681PevKs", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}], "refusal": null},
            {"role": "tool", "tool_call_id": "D681PevKs", "content": "18C"},
        ]);
        let with =
            |choice: Value| build(json!({"model": "m", "messages": history, "tools": tools, "tool_choice": choice}));
        let body = with(json!("required")).unwrap();
        assert_eq!(body["tool_choice"], "any");
        assert_eq!(body["tools"], tools);
        assert_eq!(body["messages"][1]["tool_calls"], history[1]["tool_calls"]);
        assert_eq!(body["messages"][2], json!({"role": "tool", "content": "18C", "tool_call_id": "D681PevKs"}));
        assert_eq!(with(json!("auto")).unwrap()["tool_choice"], "auto");
        assert_eq!(with(json!("none")).unwrap()["tool_choice"], "none");
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(with(named.clone()).unwrap()["tool_choice"], named);
        let allowed = with(json!({"type": "allowed_tools", "allowed_tools": {}})).unwrap_err();
        assert!(allowed.message.contains("`tool_choice` of type `allowed_tools`"), "{}", allowed.message);
        let custom =
            build(json!({"model": "m", "messages": [user(json!("x"))], "tools": [{"type": "custom", "custom": {}}]}));
        assert!(custom.unwrap_err().message.contains("`tools[0].type` `custom`"));
        let refusal = build(json!({"model": "m", "messages": [user(json!("x")),
            {"role": "assistant", "content": null, "refusal": "I can't help with that."}]}))
        .unwrap();
        assert_eq!(refusal["messages"][1], json!({"role": "assistant", "content": "I can't help with that."}));
    }

    #[test]
    fn fields_mistral_rejects_are_a_400_naming_field_and_provider() {
        for (field, value) in [
            ("logprobs", json!(true)),
            ("top_logprobs", json!(2)),
            ("logit_bias", json!({"50256": -100})),
            ("audio", json!({"voice": "alloy"})),
            ("modalities", json!(["text", "audio"])),
            ("reasoning_effort", json!("high")),
            ("store", json!(true)),
            ("service_tier", json!("flex")),
            ("web_search_options", json!({})),
            ("functions", json!([{"name": "f"}])),
            ("x_unknown", json!(1)),
        ] {
            let mut body = json!({"model": "m", "messages": [user(json!("x"))]});
            body[field] = value;
            let e = build(body).unwrap_err();
            assert_eq!((e.status, e.code), (400, "unsupported_parameter"), "{field}");
            assert!(e.message.contains(&format!("`{field}`")), "{field}: {}", e.message);
            assert!(e.message.contains("provider mistral (deployment `mistral-eu`)"), "{}", e.message);
        }
        let file = build(
            json!({"model": "m", "messages": [user(json!([{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}]))]}),
        );
        assert!(file.unwrap_err().message.contains("`messages[0].content[0].type` `file`"));
        let audio_part = build(
            json!({"model": "m", "messages": [user(json!([{"type": "image_url", "image_url": {"url": "x", "zoom": 2}}]))]}),
        );
        assert!(audio_part.unwrap_err().message.contains("`messages[0].content[0].image_url.zoom`"));
        let role = build(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}));
        assert!(role.unwrap_err().message.contains("`messages[0].role` `function`"));
    }

    #[test]
    fn answers_become_openai_completions() {
        let req = parse(json!({"model": "m", "messages": [user(json!("x"))]}));
        let answer = json!({"id": "cmpl-1", "object": "chat.completion", "created": 1_750_000_000, "model": "mistral-small-latest",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Bonjour", "tool_calls": null}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                    {"type": "text", "text": "Salut"}]}, "finish_reason": "model_length"},
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}});
        let (body, usage) = Mistral.response(&req, answer.to_string().into_bytes()).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "Bonjour");
        assert_eq!(body["choices"][1]["message"]["content"], "Salut");
        assert_eq!(body["choices"][1]["finish_reason"], "length");
        assert_eq!(body["id"], "cmpl-1");
        assert_eq!(usage, Some(Usage { input_tokens: 12, output_tokens: 6, ..Usage::default() }));
        let failed = json!({"choices": [{"index": 0, "message": {"content": "Hal"}, "finish_reason": "error"}]});
        assert_eq!(Mistral.response(&req, failed.to_string().into_bytes()).unwrap_err(), ErrorClass::Server);
        assert_eq!(Mistral.response(&req, b"{}".to_vec()).unwrap_err(), ErrorClass::Server);
    }

    #[test]
    fn classification() {
        let c = |status, body: Value| Mistral.classify(status, body.to_string().as_bytes());
        let too_long = json!({"object": "error", "message": "Prompt contains 66385 tokens, too large for model with 32768 maximum context length", "type": "invalid_request_error"});
        assert_eq!(c(400, too_long), ErrorClass::ContextLength);
        let extra = json!({"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted"}]}, "type": "invalid_request_error"});
        assert_eq!(c(422, extra), ErrorClass::BadRequest);
        assert_eq!(c(429, json!({"message": "Requests rate limit exceeded"})), ErrorClass::RateLimited);
        assert_eq!(c(401, json!({"message": "Unauthorized"})), ErrorClass::Auth);
        assert_eq!(c(503, json!({})), ErrorClass::Overloaded);
        assert_eq!(c(500, json!({})), ErrorClass::Server);
        assert_eq!(c(404, json!({})), ErrorClass::NotFound);
    }

    fn chunk(delta: Value, finish: Value, usage: Option<Value>) -> String {
        let mut c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1_750_000_000,
            "model": "mistral-small-latest", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        format!("data: {c}\n\n")
    }

    /// As Mistral streams: the role, text with a multi-byte character, a finish chunk that
    /// carries the usage, `[DONE]`.
    fn recorded() -> String {
        [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null, None),
            chunk(json!({"content": "Caf\u{e9} "}), Value::Null, None),
            chunk(json!({"content": "ouvert"}), Value::Null, None),
            chunk(
                json!({"content": ""}),
                json!("stop"),
                Some(json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})),
            ),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat()
    }

    fn run(input: &str, wants_usage: bool, cut: usize) -> (String, StreamEnd, Consumed, bool) {
        let mut body = json!({"model": "m", "messages": [user(json!("x"))], "stream": true});
        if wants_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut t = Mistral.stream(&parse(body));
        let mut out = Vec::new();
        t.push(&input.as_bytes()[..cut], &mut out);
        let started = t.started();
        t.push(&input.as_bytes()[cut..], &mut out);
        (String::from_utf8(out).unwrap(), t.end(), t.consumed(), started)
    }

    fn data(out: &str) -> Vec<Value> {
        out.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| if d == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(d).unwrap() })
            .collect()
    }

    #[test]
    fn a_stream_translates_at_every_split_point() {
        let input = recorded();
        for wants_usage in [false, true] {
            let whole = run(&input, wants_usage, 0);
            for cut in 1..=input.len() {
                let split = run(&input, wants_usage, cut);
                assert_eq!((&split.0, split.1, split.2), (&whole.0, whole.1, whole.2), "cut {cut}");
            }
            assert_eq!(whole.1, StreamEnd::Complete);
            assert_eq!(whole.2, Consumed::reported(Usage { input_tokens: 9, output_tokens: 3, ..Usage::default() }));
            let events = data(&whole.0);
            assert_eq!(events.last().unwrap(), "[DONE]");
            let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
            assert_eq!(text, "Caf\u{e9} ouvert");
            if wants_usage {
                assert_eq!(events.len(), 6);
                assert!(events[..4].iter().all(|e| e["usage"].is_null() && e.get("usage").is_some()));
                assert_eq!(events[4]["choices"], json!([]));
                assert_eq!(events[4]["id"], "c1");
                assert_eq!(events[4]["usage"]["prompt_tokens"], 9);
            } else {
                assert_eq!(events.len(), 5);
                assert!(events[..4].iter().all(|e| e.get("usage").is_none()), "{}", whole.0);
            }
        }
    }

    #[test]
    fn starts_at_the_first_content_and_maps_model_length() {
        let input = recorded();
        let role_chunk = input.find("\n\n").unwrap() + 2;
        assert!(!run(&input, false, role_chunk).3);
        assert!(run(&input, false, role_chunk + chunk(json!({"content": "Caf\u{e9} "}), Value::Null, None).len()).3);
        let long = [chunk(json!({"content": "x"}), json!("model_length"), None), "data: [DONE]\n\n".into()].concat();
        let (out, end, ..) = run(&long, false, 0);
        assert_eq!(end, StreamEnd::Complete);
        assert_eq!(data(&out)[0]["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn cut_and_failed_streams() {
        let input = recorded();
        let before_finish =
            input.find("\"finish_reason\":\"stop\"").map(|i| input[..i].rfind("data: ").unwrap()).unwrap();
        let (out, end, consumed, _) = run(&input[..before_finish], true, 0);
        assert_eq!(end, StreamEnd::Cut);
        assert!(!out.contains("[DONE]"));
        let estimate = Usage { input_tokens: 5, output_tokens: 3, ..Usage::default() };
        assert_eq!(consumed, Consumed::at_least(None, estimate), "estimated");
        let no_done = &input[..input.find("data: [DONE]").unwrap()];
        assert_eq!(run(no_done, false, 0).1, StreamEnd::Cut);
        let error =
            [chunk(json!({"content": "Hal"}), Value::Null, None), chunk(json!({}), json!("error"), None)].concat();
        let (out, end, ..) = run(&error, false, 0);
        assert_eq!(end, StreamEnd::Failed);
        assert_eq!(data(&out).last().unwrap()["error"]["code"], "upstream_failed");
    }

    #[test]
    fn a_cut_stream_is_billed_at_least_for_what_reached_the_client() {
        // Usage on the first chunk (prompt only), then 40 characters of text, then the cut.
        let input = [
            chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                Some(json!({"prompt_tokens": 30, "completion_tokens": 0, "total_tokens": 30})),
            ),
            chunk(json!({"content": "0123456789abcdefghij"}), Value::Null, None),
            chunk(json!({"content": "0123456789abcdefghij"}), Value::Null, None),
        ]
        .concat();
        let (_, end, consumed, _) = run(&input, false, 0);
        assert_eq!(end, StreamEnd::Cut);
        let reported = Usage { input_tokens: 30, ..Usage::default() };
        assert_eq!(consumed, Consumed { reported, billed: Usage { output_tokens: 10, ..reported } });
    }
}

//! Google's Gemini API (`https://generativelanguage.googleapis.com/v1beta`), and the
//! `GenerateContent` format it shares with Gemini on Vertex AI ([`super::vertex`]).
//!
//! Per the Gemini API reference (ai.google.dev/api): `POST {base}/models/{model}:
//! generateContent`, and `:streamGenerateContent?alt=sse` for a stream of server-sent
//! events each carrying one `GenerateContentResponse`; the key in `x-goog-api-key`
//! ("Authentication"). The request ("Generating content", "Caching", "Function calling"):
//! `systemInstruction`, `contents` of `user` / `model` turns made of `parts` (`text`,
//! `inlineData` {mimeType, data}, `functionCall` {name, args}, `functionResponse` {name,
//! response}), `tools[].functionDeclarations` (with `parametersJsonSchema`, which takes
//! JSON Schema as OpenAI clients write it, where `parameters` takes an OpenAPI subset),
//! `toolConfig.functionCallingConfig` (mode AUTO / ANY / NONE, `allowedFunctionNames`),
//! and `generationConfig` (`maxOutputTokens`, `temperature`, `topP`, `stopSequences`,
//! `candidateCount`, `seed`, `presencePenalty`, `frequencyPenalty`, `responseMimeType`
//! with `responseJsonSchema`). The answer: `candidates[]` with `content.parts`,
//! `finishReason` ("FinishReason": STOP, MAX_TOKENS, SAFETY, RECITATION, LANGUAGE, OTHER,
//! BLOCKLIST, PROHIBITED_CONTENT, SPII, MALFORMED_FUNCTION_CALL, IMAGE_SAFETY, …),
//! `promptFeedback.blockReason` when the prompt itself was refused, and `usageMetadata`
//! ("UsageMetadata": `promptTokenCount` includes `cachedContentTokenCount`;
//! `candidatesTokenCount` leaves out `thoughtsTokenCount`, billed as output too). Errors
//! are `{"error": {code, message, status}}` with Google's canonical statuses.
//!
//! Gemini 3 models require the `thoughtSignature` of each function call part to come back
//! with it in the history ("Thought signatures"). OpenAI clients return a tool call's id
//! unchanged, so the gateway carries the signature inside the id it gives the call.

use super::canonical::{self, asks_nothing, refused_detail, Chunks, Cx, Identity, ToolChoice, IGNORED};
use super::{Auth, Provider, StreamEnd, StreamTranslator, UpstreamRequest};
use crate::config::Deployment;
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::util::hash::sha256_hex;
use crate::util::sse::SseDecoder;
use crate::wire::openai::stream_error_event;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

pub struct Gemini;

impl Provider for Gemini {
    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = request_body(&Cx { provider: "gemini", deployment: &d.id }, req)?;
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(key) = &auth.api_key {
            headers.push(("x-goog-api-key", key.clone()));
        }
        Ok(UpstreamRequest { url: format!("{}/models/{}:{}", d.base_url, d.model, method(req)), headers, body })
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        response(req, &body)
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        classify(status, body)
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        stream(req)
    }
}

/// The operation (and for streams, the SSE framing) the path ends with.
pub(super) fn method(req: &ChatRequest) -> &'static str {
    if req.stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    }
}

pub(super) fn classify(status: u16, body: &[u8]) -> ErrorClass {
    // Read as a `Value`: a typed parse of a cold path costs its own deserializer.
    let error = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let message = error["error"]["message"].as_str().unwrap_or_default().to_ascii_lowercase();
    ErrorClass::of_status(status, || match status {
        // A bad key is INVALID_ARGUMENT ("API key not valid. Please pass a valid API key.").
        400 if message.contains("api key") => ErrorClass::Auth,
        // "The input token count (N) exceeds the maximum number of tokens allowed (M)."
        _ if message.contains("token count") || message.contains("maximum number of tokens") => {
            ErrorClass::ContextLength
        }
        _ => ErrorClass::BadRequest,
    })
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI Chat Completions → GenerateContentRequest.

pub(super) fn request_body(cx: &Cx, req: &ChatRequest) -> Result<Vec<u8>, GatewayError> {
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

// ---------------------------------------------------------------------------------------
// Tool call ids that carry thought signatures.

/// Between a call's own id and the thought signature it carries. The id before it is
/// `call_` and hex digits, so the first occurrence is the separator.
const SIGNATURE_MARK: &str = "_ts_";

/// An OpenAI tool call id for call `index` of the answer identified by `answer`. Ids keep
/// to letters, digits, `_` and `-` (the signature in base64url) because other providers
/// restrict them, and a conversation may continue on another provider after a fallback.
fn tool_call_id(answer: &str, index: usize, signature: Option<&str>) -> String {
    let mut id = format!("call_{}_{index}", &sha256_hex(answer.as_bytes())[..12]);
    if let Some(signature) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_MARK);
        id.extend(signature.chars().filter(|c| *c != '=').map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        }));
    }
    id
}

/// The thought signature a tool call id carries, in the base64 Gemini sent it in.
fn signature_of(id: &str) -> Option<String> {
    let (_, encoded) = id.split_once(SIGNATURE_MARK)?;
    let mut signature: String = encoded
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !signature.len().is_multiple_of(4) {
        signature.push('=');
    }
    Some(signature)
}

// ---------------------------------------------------------------------------------------
// Answer: GenerateContentResponse → OpenAI `chat.completion`.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    /// An error reported inside a stream.
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    /// A thought summary, which OpenAI's answer has no place for.
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage {
            input_tokens: u.prompt_token_count,
            output_tokens: u.candidates_token_count + u.thoughts_token_count,
            cached_input_tokens: u.cached_content_token_count,
            cache_write_tokens: 0,
        }
    }
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

fn finish_reason(reason: &str, called_functions: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if called_functions => "tool_calls",
        // STOP, and LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL and the like, which end the
        // turn without a usable continuation.
        _ => "stop",
    }
}

/// Answers carry `responseId` and `modelVersion`; when they do not, the id is derived
/// from the answer's bytes and the model is the alias the client asked for.
fn identity(received_at: u64, alias: &str, answer: &WireResponse, bytes: &[u8]) -> Identity {
    let id = match &answer.response_id {
        Some(id) => format!("chatcmpl-{id}"),
        None => {
            let mut seed = received_at.to_be_bytes().to_vec();
            seed.extend_from_slice(bytes);
            format!("chatcmpl-{}", &sha256_hex(&seed)[..24])
        }
    };
    let model = answer.model_version.clone().unwrap_or_else(|| alias.to_string());
    Identity { id, model, created: received_at }
}

pub(super) fn response(req: &ChatRequest, body: &[u8]) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
    let answer = serde_json::from_slice::<WireResponse>(body).map_err(|_| ErrorClass::Server)?;
    let identity = identity(req.received_at, &req.model, &answer, body);
    let usage = answer.usage_metadata.map(Usage::from).unwrap_or_default();
    let blocked = answer.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_ref()).is_some();
    if answer.candidates.is_empty() && !blocked {
        return Err(ErrorClass::Server);
    }
    let choices: Vec<Value> = if blocked && answer.candidates.is_empty() {
        // The prompt itself was refused: no candidate, and nothing another provider would say
        // differently about the same content policy.
        vec![choice(0, None, Vec::new(), "content_filter")]
    } else {
        let mut calls = 0;
        answer
            .candidates
            .iter()
            .enumerate()
            .map(|(index, candidate)| {
                let mut text: Option<String> = None;
                let mut tool_calls = Vec::new();
                for part in candidate.content.iter().flat_map(|c| &c.parts) {
                    if let Some(t) = part.text.as_deref().filter(|_| !part.thought) {
                        text.get_or_insert_with(String::new).push_str(t);
                    }
                    if let Some(call) = &part.function_call {
                        let id = tool_call_id(&identity.id, calls, part.thought_signature.as_deref());
                        calls += 1;
                        tool_calls.push(canonical::tool_call(
                            &id,
                            &call.name,
                            call.args.as_ref().unwrap_or(&json!({})),
                        ));
                    }
                }
                let reason =
                    finish_reason(candidate.finish_reason.as_deref().unwrap_or("STOP"), !tool_calls.is_empty());
                choice(index, text, tool_calls, reason)
            })
            .collect()
    };
    let mut completion = identity.completion(None, Vec::new(), "stop", usage);
    completion["choices"] = choices.into();
    Ok((completion.to_string().into_bytes(), answer.usage_metadata.map(Usage::from)))
}

fn choice(index: usize, text: Option<String>, tool_calls: Vec<Value>, finish_reason: &str) -> Value {
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = tool_calls.into();
    }
    json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish_reason})
}

// ---------------------------------------------------------------------------------------
// Stream: GenerateContentResponse events → OpenAI `chat.completion.chunk`s.

pub(super) fn stream(req: &ChatRequest) -> Box<dyn StreamTranslator> {
    let chunks = Chunks {
        identity: Identity { model: req.model.clone(), created: req.received_at, ..Identity::default() },
        wants_usage: req.client_wants_usage,
    };
    let state = StreamState { chunks, estimated_input: req.facts.input_tokens, ..StreamState::default() };
    Box::new(Translator { decoder: SseDecoder::new(), state })
}

struct Translator {
    decoder: SseDecoder,
    state: StreamState,
}

/// A Gemini stream has no terminal event of its own: it is complete once a chunk with a
/// `finishReason` (or a prompt block) has arrived, and cut if it ends before one.
#[derive(Default)]
struct StreamState {
    chunks: Chunks,
    calls: usize,
    usage: Option<Usage>,
    estimated_input: u64,
    streamed_chars: usize,
    started: bool,
    done: bool,
    failed: bool,
}

impl StreamTranslator for Translator {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let state = &mut self.state;
        self.decoder.push(bytes, |event| {
            if let Some(data) = event.data.as_deref() {
                state.on_data(data, out);
            }
        });
    }

    fn started(&self) -> bool {
        self.state.started
    }

    fn end(&mut self) -> StreamEnd {
        StreamEnd::of(self.state.failed, self.state.done, self.decoder.has_partial())
    }

    /// The latest reported usage; for a stream cut before any, an estimate of what was
    /// consumed, billed rather than a silent zero.
    fn usage(&self) -> Option<Usage> {
        let state = &self.state;
        Usage::reported_or_estimated(state.usage, state.estimated_input, state.streamed_chars)
    }
}

impl StreamState {
    fn on_data(&mut self, data: &str, out: &mut Vec<u8>) {
        if self.done || self.failed {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<WireResponse>(data.as_bytes()) else { return };
        if let Some(error) = &answer.error {
            self.fail(out, error);
            return;
        }
        if self.chunks.identity.id.is_empty() {
            let Identity { model, created, .. } = &self.chunks.identity;
            self.chunks.identity = identity(*created, model, &answer, data.as_bytes());
            self.chunks.role(out);
        }
        if let Some(usage) = answer.usage_metadata {
            self.usage = Some(usage.into());
        }
        let blocked = answer.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_ref()).is_some();
        let Some(candidate) = answer.candidates.into_iter().next() else {
            if blocked {
                self.finish(out, "content_filter");
            }
            return;
        };
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(text) = part.text.filter(|t| !t.is_empty() && !part.thought) {
                self.started = true;
                self.streamed_chars += text.chars().count();
                self.chunks.text(out, &text);
            }
            if let Some(call) = part.function_call {
                self.started = true;
                let id = tool_call_id(&self.chunks.identity.id, self.calls, part.thought_signature.as_deref());
                let arguments = call.args.unwrap_or_else(|| json!({})).to_string();
                self.streamed_chars += arguments.len();
                self.chunks.tool_call_start(out, self.calls, &id, &call.name);
                self.chunks.tool_call_arguments(out, self.calls, &arguments);
                self.calls += 1;
            }
        }
        if let Some(reason) = candidate.finish_reason {
            self.finish(out, finish_reason(&reason, self.calls > 0));
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: &str) {
        self.started = true;
        self.done = true;
        self.chunks.finish(out, reason);
        self.chunks.done(out, self.usage.unwrap_or_default());
    }

    fn fail(&mut self, out: &mut Vec<u8>, error: &WireError) {
        self.failed = true;
        let code = match error.status.as_str() {
            "RESOURCE_EXHAUSTED" => "upstream_rate_limited",
            "UNAVAILABLE" => "upstream_overloaded",
            _ => "upstream_failed",
        };
        let message = format!("The provider ended the stream with an error ({}): {}", error.status, error.message);
        out.extend_from_slice(&stream_error_event(&GatewayError::new(502, "upstream_error", code, message)));
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::chat;
    use crate::util::valueread::FromValue;

    fn deployment_json() -> Value {
        json!({
            "id": "gemini-global", "provider": "gemini", "model": "gemini-2.5-flash",
            "base_url": "https://generativelanguage.googleapis.com/v1beta", "api_key_secret": "GEMINI_API_KEY",
            "jurisdiction": "global", "region": "global", "price": {"input": "1", "output": "1"}
        })
    }

    fn deployment() -> Deployment {
        Deployment::read(&deployment_json()).unwrap()
    }

    pub fn parse(body: Value) -> ChatRequest {
        let mut req = chat::parse(body.to_string().as_bytes()).unwrap();
        req.received_at = 1_750_000_000;
        req
    }

    fn auth() -> Auth {
        Auth { api_key: Some("AIzaTESTKEY0123456789".into()), ..Auth::default() }
    }

    pub fn build(body: Value) -> Result<Value, GatewayError> {
        let up = Gemini.build(&deployment(), &parse(body), &auth())?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    pub fn user(content: Value) -> Value {
        json!({"role": "user", "content": content})
    }

    #[test]
    fn request_targets_generate_content_with_the_key_header() {
        let up =
            Gemini.build(&deployment(), &parse(json!({"model": "fast", "messages": [user(json!("hi"))]})), &auth());
        let up = up.unwrap();
        assert_eq!(up.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
        assert!(up.headers.contains(&("x-goog-api-key", "AIzaTESTKEY0123456789".into())));
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
        let streamed = Gemini.build(
            &deployment(),
            &parse(json!({"model": "m", "stream": true, "messages": [user(json!("hi"))]})),
            &auth(),
        );
        assert!(streamed.unwrap().url.ends_with("/models/gemini-2.5-flash:streamGenerateContent?alt=sse"));
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
    fn signatures_survive_the_round_trip_through_an_id() {
        for signature in ["Cv8B+/x=", "AAAA", "a+b/cQ==", "EiYKJGYxZDQ5"] {
            let id = tool_call_id("chatcmpl-x", 3, Some(signature));
            assert_eq!(signature_of(&id).as_deref(), Some(signature), "{id}");
        }
        assert_eq!(signature_of(&tool_call_id("chatcmpl-x", 0, None)), None);
        assert_eq!(signature_of("call_abc"), None);
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

    pub fn answer(parts: Value, finish: &str) -> Value {
        json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 7, "thoughtsTokenCount": 5,
                "cachedContentTokenCount": 100, "totalTokenCount": 132},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"
        })
    }

    pub fn respond(answer: Value) -> (Value, Option<Usage>) {
        let req = parse(json!({"model": "fast", "messages": [user(json!("x"))]}));
        let (body, usage) = response(&req, answer.to_string().as_bytes()).unwrap();
        (serde_json::from_slice(&body).unwrap(), usage)
    }

    #[test]
    fn a_text_answer_becomes_a_chat_completion_with_cache_usage() {
        let (body, usage) = respond(answer(
            json!([{"text": "thinking…", "thought": true}, {"text": "Hello"}, {"text": " there"}]),
            "STOP",
        ));
        assert_eq!(
            body,
            json!({
                "id": "chatcmpl-r1", "object": "chat.completion", "created": 1_750_000_000, "model": "gemini-2.5-flash",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello there", "refusal": null}}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 12, "total_tokens": 132,
                    "prompt_tokens_details": {"cached_tokens": 100}},
            })
        );
        assert_eq!(
            usage,
            Some(Usage { input_tokens: 120, output_tokens: 12, cached_input_tokens: 100, cache_write_tokens: 0 })
        );
    }

    #[test]
    fn function_calls_become_tool_calls_carrying_their_signature() {
        let (body, _) = respond(answer(
            json!([{"text": "Checking."}, {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "Cv8B+/x="},
                {"functionCall": {"name": "now"}}]),
            "STOP",
        ));
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Checking.");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls[0]["function"], json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}));
        assert_eq!(signature_of(calls[0]["id"].as_str().unwrap()).as_deref(), Some("Cv8B+/x="));
        assert_eq!(calls[1]["function"], json!({"name": "now", "arguments": "{}"}));
        assert_ne!(calls[0]["id"], calls[1]["id"]);
    }

    #[test]
    fn finish_reasons_candidates_and_blocked_prompts() {
        for (reason, finish) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("LANGUAGE", "stop"),
            ("OTHER", "stop"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
        ] {
            let (body, _) = respond(answer(json!([{"text": "x"}]), reason));
            assert_eq!(body["choices"][0]["finish_reason"], finish, "{reason}");
        }
        let mut two = answer(json!([{"text": "one"}]), "STOP");
        two["candidates"]
            .as_array_mut()
            .unwrap()
            .push(json!({"content": {"parts": [{"text": "two"}]}, "finishReason": "MAX_TOKENS", "index": 1}));
        let (body, _) = respond(two);
        assert_eq!(body["choices"][1]["index"], 1);
        assert_eq!(body["choices"][1]["message"]["content"], "two");
        assert_eq!(body["choices"][1]["finish_reason"], "length");
        let (blocked, usage) =
            respond(json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8}}));
        assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(blocked["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(usage, Some(Usage { input_tokens: 8, ..Usage::default() }));
        let req = parse(json!({"model": "m", "messages": [user(json!("x"))]}));
        assert_eq!(response(&req, b"{}").unwrap_err(), ErrorClass::Server);
        assert_eq!(response(&req, b"garbage").unwrap_err(), ErrorClass::Server);
    }

    #[test]
    fn classification() {
        let error = |code: u16, status: &str, message: &str| {
            json!({"error": {"code": code, "status": status, "message": message}}).to_string().into_bytes()
        };
        assert_eq!(
            classify(429, &error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted")),
            ErrorClass::RateLimited
        );
        assert_eq!(classify(503, &error(503, "UNAVAILABLE", "The model is overloaded.")), ErrorClass::Overloaded);
        assert_eq!(classify(504, &error(504, "DEADLINE_EXCEEDED", "Deadline exceeded")), ErrorClass::Timeout);
        assert_eq!(classify(500, &error(500, "INTERNAL", "An internal error has occurred.")), ErrorClass::Server);
        assert_eq!(
            classify(400, &error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")),
            ErrorClass::Auth
        );
        assert_eq!(classify(403, &error(403, "PERMISSION_DENIED", "denied")), ErrorClass::Auth);
        assert_eq!(classify(404, &error(404, "NOT_FOUND", "models/x is not found")), ErrorClass::NotFound);
        let too_long = error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        );
        assert_eq!(classify(400, &too_long), ErrorClass::ContextLength);
        assert_eq!(
            classify(400, &error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")),
            ErrorClass::BadRequest
        );
        assert_eq!(classify(400, b"not json"), ErrorClass::BadRequest);
    }

    /// A stream as Gemini sends it (`alt=sse`, CRLF line ends): text in pieces with a
    /// multi-byte character, then a function call, then the finish with the usage.
    pub const RECORDED: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Caf\u{e9} \"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 50,\"candidatesTokenCount\": 2,\"totalTokenCount\": 52},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r2\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"weather:\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 50,\"candidatesTokenCount\": 4,\"totalTokenCount\": 54},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r2\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"Cv8B+/x=\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 50,\"candidatesTokenCount\": 42,\"cachedContentTokenCount\": 30,\"totalTokenCount\": 92},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r2\"}\r\n\r\n",
    );

    pub struct Run {
        pub out: String,
        pub end: StreamEnd,
        pub usage: Option<Usage>,
        pub started_at_cut: bool,
    }

    pub fn run_with(
        translator: impl Fn(&ChatRequest) -> Box<dyn StreamTranslator>,
        input: &[u8],
        wants_usage: bool,
        cut: usize,
    ) -> Run {
        let mut body = json!({"model": "fast", "messages": [user(json!("x"))], "stream": true});
        if wants_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut t = translator(&parse(body));
        let mut out = Vec::new();
        t.push(&input[..cut], &mut out);
        let started_at_cut = t.started();
        t.push(&input[cut..], &mut out);
        Run { out: String::from_utf8(out).unwrap(), end: t.end(), usage: t.usage(), started_at_cut }
    }

    fn run(input: &[u8], wants_usage: bool, cut: usize) -> Run {
        run_with(stream, input, wants_usage, cut)
    }

    pub fn data(out: &str) -> Vec<Value> {
        out.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| if d == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(d).unwrap() })
            .collect()
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "chatcmpl-r2", "object": "chat.completion.chunk", "created": 1_750_000_000, "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn a_recorded_stream_translates_to_openai_chunks() {
        let run = run(RECORDED.as_bytes(), false, 0);
        let events = data(&run.out);
        let id = events[3]["choices"][0]["delta"]["tool_calls"][0]["id"].as_str().unwrap().to_string();
        assert_eq!(signature_of(&id).as_deref(), Some("Cv8B+/x="));
        assert_eq!(
            events,
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Caf\u{e9} "}), Value::Null),
                chunk(json!({"content": "weather:"}), Value::Null),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": id, "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}),
                    Value::Null
                ),
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
        let events = data(&run(input, true, 0).out);
        let usage_chunk = &events[events.len() - 2];
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"], 30);
        assert!(events[..events.len() - 2].iter().all(|e| e.get("usage") == Some(&Value::Null)));
    }

    #[test]
    fn starts_at_the_first_content() {
        let first = RECORDED.find("\r\n\r\n").unwrap() + 4;
        assert!(!run(RECORDED.as_bytes(), false, first - 1).started_at_cut);
        assert!(run(RECORDED.as_bytes(), false, first).started_at_cut);
    }

    #[test]
    fn a_stream_without_a_finish_reason_is_cut() {
        let last = RECORDED.rfind("data: ").unwrap();
        let cut = run(&RECORDED.as_bytes()[..last], true, 0);
        assert_eq!(cut.end, StreamEnd::Cut);
        assert!(!cut.out.contains("[DONE]") && !cut.out.contains("finish_reason\":\"stop"));
        assert_eq!(
            cut.usage,
            Some(Usage { input_tokens: 50, output_tokens: 4, ..Usage::default() }),
            "the latest reported"
        );
        assert_eq!(run(&RECORDED.as_bytes()[..RECORDED.len() - 3], false, 0).end, StreamEnd::Cut);
        assert_eq!(run(b"", false, 0).end, StreamEnd::Cut);
        assert_eq!(run(b"", false, 0).usage, None);
    }

    #[test]
    fn a_blocked_prompt_and_an_error_event() {
        let blocked = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": {\"promptTokenCount\": 9}}\r\n\r\n";
        let run_blocked = run(blocked.as_bytes(), false, 0);
        assert_eq!(run_blocked.end, StreamEnd::Complete);
        assert_eq!(data(&run_blocked.out)[1]["choices"][0]["finish_reason"], "content_filter");
        let first = RECORDED.find("\r\n\r\n").unwrap() + 4;
        let failing = format!(
            "{}data: {{\"error\": {{\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}}}\r\n\r\n",
            &RECORDED[..first]
        );
        let failed = run(failing.as_bytes(), false, 0);
        assert_eq!(failed.end, StreamEnd::Failed);
        let events = data(&failed.out);
        assert_eq!(events.len(), 3, "role, text, the error: {}", failed.out);
        assert_eq!(events[2]["error"]["code"], "upstream_overloaded");
    }

    #[test]
    fn the_gemini_api_is_global_only() {
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
            let mut d = deployment_json();
            edit(&mut d);
            config["deployments"].as_array_mut().unwrap().push(d);
            crate::config::parse(&config.to_string()).map(drop)
        };
        assert_eq!(with(&|_| {}), Ok(()));
        let err = with(&|d| d["jurisdiction"] = json!("eu")).unwrap_err();
        assert!(err.starts_with("deployment `gemini-global`: the Gemini API has no region control"), "{err}");
        assert!(err.contains("must be `global`, not `eu`"), "{err}");
        let err = with(&|d| drop(d.as_object_mut().unwrap().remove("api_key_secret"))).unwrap_err();
        assert!(err.contains("need `api_key_secret`"), "{err}");
        assert!(with(&|d| d["model"] = json!("models/gemini-2.5-flash")).unwrap_err().contains("bare model name"));
    }
}

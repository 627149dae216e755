//! AWS Bedrock through its Converse API (the bedrock-runtime endpoint of a region).
//!
//! Wire format per the Amazon Bedrock API reference (docs.aws.amazon.com/bedrock/latest/
//! APIReference): `POST {base}/model/{modelId}/converse` and `/converse-stream`
//! ("Converse", "ConverseStream"); the request's `messages` of `ContentBlock`s (`text`,
//! `image` with `format` png|jpeg|gif|webp and base64 `source.bytes`, `toolUse`,
//! `toolResult`), `system`, `inferenceConfig` (`maxTokens`, `temperature` and `topP` in
//! 0..=1, `stopSequences`) and `toolConfig` (`tools[].toolSpec` with `inputSchema.json`,
//! `toolChoice` auto|any|tool: there is no "none"); the answer's `output.message`,
//! `stopReason` ("MessageStopEvent": end_turn, tool_use, max_tokens, stop_sequence,
//! guardrail_intervened, content_filtered) and `usage` ("TokenUsage": `inputTokens`
//! without the cache reads and writes, which `cacheReadInputTokens` /
//! `cacheWriteInputTokens` count beside it); the stream's events ("ConverseStreamOutput":
//! `messageStart`, `contentBlockStart` (tool use), `contentBlockDelta` (text, tool input
//! fragments), `contentBlockStop`, `messageStop`, `metadata` with usage, and the
//! exceptions `internalServerException`, `modelStreamErrorException`,
//! `serviceUnavailableException`, `throttlingException`, `validationException`) framed as
//! `application/vnd.amazon.eventstream` ([`crate::providers::bedrock::eventstream`]); and Converse's
//! errors, whose JSON body is `{"message"}` while the type travels in `x-amzn-ErrorType`.
//!
//! Claude models also take Anthropic's Messages body through InvokeModel (user guide,
//! "Anthropic Claude Messages API"): `POST {base}/model/{modelId}/invoke` and
//! `/invoke-with-response-stream`, with `anthropic_version: "bedrock-2023-05-31"` and any
//! betas as `anthropic_beta` in the body, the model only in the path, and no `metadata`. The answer is
//! Anthropic's message; the stream is event-stream `chunk` events whose `bytes` are
//! Anthropic's events in base64. A `/v1/messages` request goes to them that way, as the
//! client sent it ([`super::SpeaksMessages`]).
//!
//! Authentication is SigV4 for service `bedrock` ([`crate::providers::bedrock::sigv4`]) or a Bedrock API
//! key as `Authorization: Bearer` (user guide, "Use an Amazon Bedrock API key"). Model ids
//! may be cross-region inference profiles, whose prefix names the geography they may
//! process in (user guide, "Supported Regions and models for inference profiles").

pub mod eventstream;
pub mod sigv4;

use super::canonical::{self, asks_nothing, refused_detail, Chunks, Cx, Identity, ToolChoice, IGNORED};
use super::{anthropic, Auth, CountsTokens, Provider, SpeaksMessages, StreamEnd, StreamTranslator, UpstreamRequest};
use crate::config::provider::bedrock::PROFILES;
use crate::config::{Deployment, ProviderSettings};
use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::util::base64;
use crate::util::hash::sha256_hex;
use crate::wire::anthropic::write_error_event;
use crate::wire::openai::stream_error_event;
use eventstream::{Decoder, Message};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sigv4::{AmzDate, Payload, SigningParams};

pub struct Bedrock;

const PROVIDER: &str = "bedrock";

/// The SigV4 signing name of bedrock-runtime.
const SERVICE: &str = "bedrock";

/// OpenAI's image media types and Converse's names for them.
const IMAGE_FORMATS: &[(&str, &str)] =
    &[("image/png", "png"), ("image/jpeg", "jpeg"), ("image/gif", "gif"), ("image/webp", "webp")];

/// The model path of a deployment's model: an id, a profile id or an ARN, escaped.
fn model_url(d: &Deployment, operation: &str) -> String {
    format!("{}/model/{}/{operation}", d.base_url, sigv4::encode_path_segment(&d.model))
}

/// A request to bedrock-runtime, signed (SigV4) or with the deployment's API key.
fn authorized(d: &Deployment, url: String, body: Vec<u8>, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(aws) = &auth.aws {
        let ProviderSettings::Bedrock(settings) = &d.provider else {
            return Err(GatewayError::internal(format!("Deployment `{}` is not a Bedrock deployment.", d.id)));
        };
        let region = settings.aws_region.as_str();
        let signed: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let request = sigv4::Request { method: "POST", url: &url, headers: &signed, payload: Payload::Bytes(&body) };
        let params = SigningParams {
            access_key_id: &aws.access_key_id,
            secret_access_key: &aws.secret_access_key,
            session_token: aws.session_token.as_deref(),
            region,
            service: SERVICE,
            time: AmzDate::from_unix_seconds(auth.now_unix),
            content_sha256_header: false,
        };
        let added = sigv4::sign(&request, &params).map_err(|e| GatewayError::internal(e.to_string()))?;
        headers.extend(added);
    } else if let Some(key) = &auth.api_key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    Ok(UpstreamRequest { url, headers, body })
}

impl Provider for Bedrock {
    /// Claude models take Messages requests and count tokens through InvokeModel.
    fn messages(&self, d: &Deployment) -> Option<&'static dyn SpeaksMessages> {
        is_claude(d).then_some(&Bedrock as &dyn SpeaksMessages)
    }

    fn counts(&self, d: &Deployment) -> Option<&'static dyn CountsTokens> {
        is_claude(d).then_some(&Bedrock as &dyn CountsTokens)
    }

    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = request_body(&Cx { provider: PROVIDER, deployment: &d.id }, req)?;
        let body = serde_json::to_vec(&body).expect("a JSON map serialises");
        let operation = if req.stream { "converse-stream" } else { "converse" };
        authorized(d, model_url(d, operation), body, auth)
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        let body_value: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::Server)?;
        let answer = read_answer(&body_value).ok_or(ErrorClass::Server)?;
        let (usage, text, tool_calls) = (answer.usage, answer.text, answer.tool_calls);
        let identity = identity(req, &body);
        let completion = identity.completion(text, tool_calls, finish_reason(answer.stop_reason), usage);
        Ok((completion.to_string().into_bytes(), Some(usage)))
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        let message = serde_json::from_slice::<WireError>(body).map(|e| e.message).unwrap_or_default();
        let message = message.to_ascii_lowercase();
        match status {
            // ThrottlingException, and ModelNotReadyException while a model loads.
            429 => ErrorClass::RateLimited,
            503 => ErrorClass::Overloaded,
            408 | 504 => ErrorClass::Timeout,
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            // ModelErrorException: the model failed while processing, not the request.
            424 => ErrorClass::Server,
            400..=499 if is_context_length(&message) => ErrorClass::ContextLength,
            // ServiceQuotaExceededException is a 400 that "can be resubmitted later".
            400 if message.contains("service quota") => ErrorClass::RateLimited,
            400..=499 => ErrorClass::BadRequest,
            _ => ErrorClass::Server,
        }
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        let chunks = Chunks {
            identity: Identity { model: req.model.clone(), created: req.received_at, ..Identity::default() },
            wants_usage: req.client_wants_usage,
        };
        let state = StreamState { chunks, estimated_input: req.facts.input_tokens, ..StreamState::default() };
        Box::new(Translator { decoder: Decoder::new(), state })
    }
}

/// The version of Anthropic's Messages API that Claude on Bedrock takes, in the body.
const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Whether the deployment's model is one of Anthropic's (a model id, a profile id or an
/// ARN ending in either), which InvokeModel takes Messages requests for.
pub fn is_claude(d: &Deployment) -> bool {
    foundation_id(d).starts_with("anthropic.")
}

/// The foundation model's id in a deployment's model: an ARN's last part, an inference
/// profile's without its prefix.
fn foundation_id(d: &Deployment) -> &str {
    let id = d.model.rsplit('/').next().unwrap_or_default();
    PROFILES.iter().find_map(|(prefix, _)| id.strip_prefix(prefix)).unwrap_or(id)
}

impl SpeaksMessages for Bedrock {
    fn build_native(
        &self,
        d: &Deployment,
        req: &ChatRequest,
        native: &NativeMessages,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body =
            serde_json::to_vec(&invoke_body(&native.body, native.beta.as_deref())).expect("a JSON map serialises");
        let operation = if req.stream { "invoke-with-response-stream" } else { "invoke" };
        authorized(d, model_url(d, operation), body, auth)
    }

    fn native_stream(&self) -> Box<dyn StreamTranslator> {
        Box::new(NativeStream {
            frames: Decoder::new(),
            events: anthropic::native_stream(),
            sse: Vec::new(),
            corrupt: false,
        })
    }
}

/// A Messages body as InvokeModel takes it for Claude. The path names the model, and the
/// operation says whether to stream. InvokeModel refuses `metadata`, whose end-user id
/// Bedrock has no field for: it is left out, as Converse requests leave out OpenAI's
/// `user`. Betas go in the body.
fn invoke_body(messages: &Map<String, Value>, beta: Option<&str>) -> Map<String, Value> {
    let mut body = messages.clone();
    body.remove("model");
    body.remove("stream");
    body.remove("metadata");
    body.insert("anthropic_version".into(), ANTHROPIC_VERSION.into());
    if let Some(beta) = beta {
        let betas: Vec<Value> = beta.split(',').map(str::trim).filter(|b| !b.is_empty()).map(|b| b.into()).collect();
        body.insert("anthropic_beta".into(), betas.into());
    }
    body
}

/// CountTokens (`POST /model/{modelId}/count-tokens`, "CountTokens" in the Bedrock
/// Runtime API reference) counts the InvokeModel body it is given, base64 in
/// `input.invokeModel.body`. It takes a foundation model's own id only, not an inference
/// profile's: a profile's `eu.`-style prefix is dropped, which changes where nothing is
/// processed, since counting runs no model; the request still goes to the deployment's
/// regional endpoint. The body must be a valid InvokeModel body, so it gets a
/// `max_tokens` (which no count depends on) above any thinking budget.
impl CountsTokens for Bedrock {
    fn count_request(
        &self,
        d: &Deployment,
        body: &Map<String, Value>,
        beta: Option<&str>,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut invoke = invoke_body(body, beta);
        if !invoke.contains_key("max_tokens") {
            let budget = invoke.get("thinking").and_then(|t| t.get("budget_tokens")).and_then(Value::as_u64);
            invoke.insert("max_tokens".into(), (budget.unwrap_or(0) + 1).into());
        }
        let invoke = serde_json::to_vec(&invoke).expect("a JSON map serialises");
        let body = json!({"input": {"invokeModel": {"body": base64::standard(&invoke)}}});
        let url = format!("{}/model/{}/count-tokens", d.base_url, sigv4::encode_path_segment(foundation_id(d)));
        authorized(d, url, body.to_string().into_bytes(), auth)
    }

    /// `{"inputTokens": n}` becomes Anthropic's `{"input_tokens": n}`.
    fn count_answer(&self, body: Vec<u8>) -> Result<Vec<u8>, ErrorClass> {
        let count: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::Server)?;
        let n = count.get("inputTokens").and_then(Value::as_u64).ok_or(ErrorClass::Server)?;
        Ok(json!({"input_tokens": n}).to_string().into_bytes())
    }
}

/// InvokeModel's stream for a Messages client: each `chunk` event's Anthropic event goes
/// on as Anthropic's SSE would carry it; an exception becomes Anthropic's `error` event.
struct NativeStream {
    frames: Decoder,
    /// Reads and passes on the events, as for Anthropic's own stream.
    events: Box<dyn StreamTranslator>,
    /// The SSE made from the frames of one push (one buffer, reused).
    sse: Vec<u8>,
    corrupt: bool,
}

impl StreamTranslator for NativeStream {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut sse = std::mem::take(&mut self.sse);
        sse.clear();
        let decoded = self.frames.push(bytes, |message| native_event(&message, &mut sse));
        if let (Err(e), false) = (decoded, self.corrupt) {
            self.corrupt = true;
            write_error_event(&mut sse, "api_error", &format!("The provider's event stream is corrupt: {e}."));
        }
        self.events.push(&sse, out);
        self.sse = sse;
    }

    fn started(&self) -> bool {
        self.events.started()
    }

    fn end(&mut self) -> StreamEnd {
        match self.events.end() {
            StreamEnd::Complete if self.frames.has_partial() => StreamEnd::Cut,
            end => end,
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.events.usage()
    }

    fn cut_event(&self, e: &GatewayError) -> Vec<u8> {
        self.events.cut_event(e)
    }
}

/// One InvokeModel stream message as Anthropic's SSE.
fn native_event(message: &Message<'_>, sse: &mut Vec<u8>) {
    match (message.message_type(), message.event_type()) {
        (Some("exception"), _) => {
            let text = payload::<WireError>(message).map(|e| e.message).unwrap_or_default();
            let kind = match message.exception_type().unwrap_or_default() {
                "throttlingException" => "rate_limit_error",
                "serviceUnavailableException" => "overloaded_error",
                "validationException" => "invalid_request_error",
                _ => "api_error",
            };
            write_error_event(sse, kind, &text);
        }
        (Some("error"), _) => write_error_event(sse, "api_error", message.error_message().unwrap_or_default()),
        (_, Some("chunk")) => {
            // `{"bytes": base64}`, and in it an event, whose `type` names it.
            let chunk = payload::<Value>(message);
            let event = chunk.as_ref().and_then(|c| base64::decode(c.get("bytes")?.as_str()?));
            let parsed = event.as_deref().and_then(|e| serde_json::from_slice::<Value>(e).ok());
            match (&event, parsed.as_ref().and_then(|p| p.get("type")?.as_str())) {
                (Some(event), Some(kind)) => {
                    crate::util::sse::write_event(sse, Some(kind), &String::from_utf8_lossy(event))
                }
                _ => write_error_event(sse, "api_error", "The provider sent a stream chunk that is not an event."),
            }
        }
        _ => {}
    }
}

/// Bedrock's wordings for an input that does not fit: "Input is too long for requested
/// model", the model's own "prompt is too long: N tokens > M maximum", "input length and
/// `max_tokens` exceed context limit", "maximum context length is N tokens", and a
/// `maxTokens` the input leaves no room for ("max tokens … exceeds").
fn is_context_length(message: &str) -> bool {
    message.contains("too long")
        || message.contains("context limit")
        || message.contains("context window")
        || message.contains("context length")
        || ((message.contains("max tokens") || message.contains("maximum tokens")) && message.contains("exceed"))
}

/// Converse answers carry neither an id nor the model (the request id travels in a header
/// the provider interface does not see): the id is derived from the answer's bytes and the
/// time, and the model is the alias the client asked for.
fn identity(req: &ChatRequest, answer: &[u8]) -> Identity {
    Identity { id: completion_id(req.received_at, answer), model: req.model.clone(), created: req.received_at }
}

fn completion_id(created: u64, answer: &[u8]) -> String {
    let mut bytes = created.to_be_bytes().to_vec();
    bytes.extend_from_slice(answer);
    format!("chatcmpl-{}", &sha256_hex(&bytes)[..24])
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        // end_turn, stop_sequence, and malformed_model_output / malformed_tool_use, which
        // end the turn without a usable continuation.
        _ => "stop",
    }
}

// ---------------------------------------------------------------------------------------
// Request: OpenAI Chat Completions → Converse.

fn request_body(cx: &Cx, req: &ChatRequest) -> Result<Map<String, Value>, GatewayError> {
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
struct WireUsage {
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
    fn total(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens + self.cache_read_input_tokens + self.cache_write_input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cache_read_input_tokens,
            cache_write_tokens: self.cache_write_input_tokens,
        }
    }
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default)]
    message: String,
}

// ---------------------------------------------------------------------------------------
// Stream: ConverseStream events → OpenAI `chat.completion.chunk`s.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    content_block_index: u64,
    start: StartedBlock,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartedBlock {
    #[serde(default)]
    tool_use: Option<StartedToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartedToolUse {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    content_block_index: u64,
    delta: WireDelta,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolInput>,
}

#[derive(Deserialize)]
struct ToolInput {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: WireUsage,
}

struct Translator {
    decoder: Decoder,
    state: StreamState,
}

/// Bedrock ends a stream with `messageStop` (the stop reason) and then `metadata` (the
/// usage). The stream is complete only once both have arrived: the finish chunk goes out
/// at `messageStop`, the usage chunk and `[DONE]` at `metadata`. A stream cut between the
/// two has its whole answer but no usage, so the gateway could neither give the client
/// the usage it asked for nor account for the tokens exactly: it is reported as cut, like
/// any stream without its terminal event, never finished with an invented `[DONE]`, and
/// billed for an estimate.
#[derive(Default)]
struct StreamState {
    chunks: Chunks,
    /// Content-block index of each tool call, in order: OpenAI numbers tool calls apart
    /// from text, Converse numbers every block.
    tool_blocks: Vec<u64>,
    usage: Option<Usage>,
    /// For a stream cut before its usage: the prompt's estimated size, and the characters
    /// of text and tool input relayed.
    estimated_input: u64,
    streamed_chars: usize,
    stopped: bool,
    done: bool,
    started: bool,
    /// An exception arrived, or the framing broke: the answer is incomplete whatever follows.
    failed: bool,
}

impl StreamTranslator for Translator {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let state = &mut self.state;
        let decoded = self.decoder.push(bytes, |message| state.on_message(&message, out));
        if let Err(e) = decoded {
            if !state.done && !state.failed {
                state.fail(out, "upstream_failed", &format!("The provider's event stream is corrupt: {e}."));
            }
        }
    }

    fn started(&self) -> bool {
        self.state.started
    }

    fn end(&mut self) -> StreamEnd {
        StreamEnd::of(self.state.failed, self.state.done, self.decoder.has_partial())
    }

    /// The reported usage; for a stream cut before it, an estimate of what was consumed,
    /// billed rather than a silent zero.
    fn usage(&self) -> Option<Usage> {
        let state = &self.state;
        Usage::reported_or_estimated(state.usage, state.estimated_input, state.streamed_chars)
    }
}

fn payload<T: DeserializeOwned>(message: &Message<'_>) -> Option<T> {
    serde_json::from_slice(message.payload).ok()
}

impl StreamState {
    fn on_message(&mut self, message: &Message<'_>, out: &mut Vec<u8>) {
        if self.done || self.failed {
            return;
        }
        if self.chunks.identity.id.is_empty() {
            self.chunks.identity.id = completion_id(self.chunks.identity.created, message.payload);
        }
        match (message.message_type(), message.event_type()) {
            (Some("exception"), _) => {
                let kind = message.exception_type().unwrap_or("exception");
                let text = payload::<WireError>(message).map(|e| e.message).unwrap_or_default();
                self.exception(out, kind, &text);
            }
            (Some("error"), _) => {
                let kind = message.error_code().unwrap_or("error");
                self.exception(out, kind, message.error_message().unwrap_or_default());
            }
            (_, Some(event)) => self.on_event(event, message, out),
            _ => {}
        }
    }

    fn on_event(&mut self, event: &str, message: &Message<'_>, out: &mut Vec<u8>) {
        match event {
            "messageStart" => self.chunks.role(out),
            "contentBlockStart" => {
                let Some(BlockStart { content_block_index, start }) = payload(message) else { return };
                if let Some(tool) = start.tool_use {
                    self.started = true;
                    self.chunks.tool_call_start(out, self.tool_blocks.len(), &tool.tool_use_id, &tool.name);
                    self.tool_blocks.push(content_block_index);
                }
            }
            "contentBlockDelta" => {
                let Some(BlockDelta { content_block_index, delta }) = payload(message) else { return };
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    self.started = true;
                    self.streamed_chars += text.chars().count();
                    self.chunks.text(out, &text);
                }
                let input = delta.tool_use.map(|t| t.input).filter(|i| !i.is_empty());
                let tool = self.tool_blocks.iter().position(|&b| b == content_block_index);
                if let (Some(input), Some(tool)) = (input, tool) {
                    self.streamed_chars += input.chars().count();
                    self.chunks.tool_call_arguments(out, tool, &input);
                }
            }
            "messageStop" => {
                let stop = payload::<MessageStop>(message).and_then(|m| m.stop_reason);
                self.started = true;
                self.stopped = true;
                self.chunks.finish(out, finish_reason(stop.as_deref()));
                self.finish_if_complete(out);
            }
            "metadata" => {
                if let Some(metadata) = payload::<Metadata>(message) {
                    self.usage = Some(metadata.usage.total());
                    self.finish_if_complete(out);
                }
            }
            // contentBlockStop, and event types added after this was written.
            _ => {}
        }
    }

    fn finish_if_complete(&mut self, out: &mut Vec<u8>) {
        if let (true, Some(usage)) = (self.stopped, self.usage) {
            self.done = true;
            self.chunks.done(out, usage);
        }
    }

    fn exception(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        let code = match kind {
            "throttlingException" => "upstream_rate_limited",
            "serviceUnavailableException" => "upstream_overloaded",
            _ => "upstream_failed",
        };
        self.fail(out, code, &format!("The provider ended the stream with an error ({kind}): {message}"));
    }

    fn fail(&mut self, out: &mut Vec<u8>, code: &'static str, message: &str) {
        self.failed = true;
        out.extend_from_slice(&stream_error_event(&GatewayError::new(502, "upstream_error", code, message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat;
    use crate::providers::bedrock::eventstream::{encode, Header};
    use crate::providers::AwsCredentials;
    use crate::util::valueread::FromValue;

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

    const MODEL: &str = "eu.anthropic.claude-3-haiku-20240307-v1:0";

    fn deployment_json() -> Value {
        json!({
            "id": "bedrock-eu", "provider": "bedrock", "model": MODEL,
            "base_url": "https://bedrock-runtime.eu-central-1.amazonaws.com", "aws_region": "eu-central-1",
            "aws_access_key_id_secret": "AWS_KEY_ID", "aws_secret_access_key_secret": "AWS_SECRET",
            "jurisdiction": "eu", "region": "eu-central-1", "price": {"input": "1", "output": "1"}
        })
    }

    fn deployment() -> Deployment {
        Deployment::read(&deployment_json()).unwrap()
    }

    /// 2025-06-15T12:00:00Z.
    const NOW: u64 = 1_749_988_800;

    fn sigv4_auth() -> Auth {
        let aws = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("IQoJtoken".into()),
        };
        Auth { aws: Some(aws), now_unix: NOW, ..Auth::default() }
    }

    fn parse(body: Value) -> ChatRequest {
        let mut req = chat::parse(body.to_string().as_bytes()).unwrap();
        req.received_at = 1_750_000_000;
        req
    }

    fn build(body: Value) -> Result<Value, GatewayError> {
        let up = Bedrock.build(&deployment(), &parse(body), &sigv4_auth())?;
        Ok(serde_json::from_slice(&up.body).unwrap())
    }

    fn refused(body: Value) -> GatewayError {
        build(body).unwrap_err()
    }

    fn user(content: Value) -> Value {
        json!({"role": "user", "content": content})
    }

    fn header<'a>(up: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
        up.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_signed_request_targets_converse_with_the_encoded_model_id() {
        let up = Bedrock
            .build(&deployment(), &parse(json!({"model": "fast", "messages": [user(json!("hi"))]})), &sigv4_auth())
            .unwrap();
        assert_eq!(
            up.url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/eu.anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(up.body, br#"{"messages":[{"content":[{"text":"hi"}],"role":"user"}]}"#);
        assert_eq!(header(&up, "content-type"), Some("application/json"));
        assert_eq!(header(&up, "x-amz-date"), Some("20250615T120000Z"));
        assert_eq!(header(&up, "x-amz-security-token"), Some("IQoJtoken"));
        // Computed apart from this code base (Python's hmac over the canonical request,
        // whose path is the wire path encoded once more: `%3A` signs as `%253A`).
        assert_eq!(
            header(&up, "authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250615/eu-central-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
                 Signature=8566fecf0690c4f4ace600348f1b3524c785471c0d0b190d960f02551eaa16df"
            )
        );
    }

    #[test]
    fn the_signature_covers_the_exact_bytes_sent() {
        let body = json!({"model": "fast", "stream": true, "max_tokens": 9, "messages": [user(json!("héllo"))]});
        let up = Bedrock.build(&deployment(), &parse(body), &sigv4_auth()).unwrap();
        assert!(up.url.ends_with("/model/eu.anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"), "{}", up.url);
        let aws = sigv4_auth().aws.unwrap();
        let request = sigv4::Request {
            method: "POST",
            url: &up.url,
            headers: &[("content-type", "application/json")],
            payload: Payload::Bytes(&up.body),
        };
        let params = SigningParams {
            access_key_id: &aws.access_key_id,
            secret_access_key: &aws.secret_access_key,
            session_token: aws.session_token.as_deref(),
            region: "eu-central-1",
            service: "bedrock",
            time: AmzDate::from_unix_seconds(NOW),
            content_sha256_header: false,
        };
        let expected = sigv4::sign(&request, &params).unwrap();
        assert_eq!(header(&up, "authorization"), expected.last().map(|(_, v)| v.as_str()));
    }

    #[test]
    fn an_api_key_is_sent_as_a_bearer_token() {
        let auth = Auth { api_key: Some("bedrock-api-key-123".into()), ..Auth::default() };
        let up =
            Bedrock.build(&deployment(), &parse(json!({"model": "m", "messages": [user(json!("x"))]})), &auth).unwrap();
        assert_eq!(header(&up, "authorization"), Some("Bearer bedrock-api-key-123"));
        assert_eq!(header(&up, "x-amz-date"), None);
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
            Some(Usage { input_tokens: 115, output_tokens: 7, cached_input_tokens: 100, cache_write_tokens: 5 })
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

    #[test]
    fn classification() {
        let c = |status, message: &str| Bedrock.classify(status, json!({"message": message}).to_string().as_bytes());
        assert_eq!(c(429, "Too many requests, please wait before trying again."), ErrorClass::RateLimited);
        assert_eq!(c(429, "Model is not ready for inference."), ErrorClass::RateLimited);
        assert_eq!(c(503, "Bedrock is unable to process your request."), ErrorClass::Overloaded);
        assert_eq!(c(500, "The server encountered an internal error."), ErrorClass::Server);
        assert_eq!(c(424, "Received error from the model."), ErrorClass::Server);
        assert_eq!(c(408, "Model has timed out in processing the request."), ErrorClass::Timeout);
        assert_eq!(c(403, "The security token included in the request is invalid."), ErrorClass::Auth);
        assert_eq!(c(403, "You don't have access to the model with the specified model ID."), ErrorClass::Auth);
        assert_eq!(c(404, "The provided model identifier is invalid."), ErrorClass::NotFound);
        assert_eq!(c(400, "Input is too long for requested model."), ErrorClass::ContextLength);
        assert_eq!(
            c(400, "The model returned the following errors: prompt is too long: 201135 tokens > 200000 maximum"),
            ErrorClass::ContextLength
        );
        assert_eq!(
            c(400, "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000"),
            ErrorClass::ContextLength
        );
        assert_eq!(
            c(400, "The maximum tokens you requested exceeds the model limit of 8192."),
            ErrorClass::ContextLength
        );
        assert_eq!(c(400, "Your request exceeds the service quota for your account."), ErrorClass::RateLimited);
        assert_eq!(
            c(400, "The text field in the ContentBlock object at messages.0.content.0 is blank."),
            ErrorClass::BadRequest
        );
        assert_eq!(c(400, "max_tokens: Field required"), ErrorClass::BadRequest);
        assert_eq!(Bedrock.classify(400, b"not json"), ErrorClass::BadRequest);
        assert_eq!(Bedrock.classify(502, b""), ErrorClass::Server);
    }

    // -----------------------------------------------------------------------------------
    // Streams.

    fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let headers: Vec<Header> = headers.iter().map(|(name, value)| Header::string(name, value)).collect();
        encode(&headers, payload).unwrap()
    }

    /// An event as Bedrock frames it, with the random-length `p` padding it adds to every
    /// payload.
    fn event(kind: &str, mut payload: Value) -> Vec<u8> {
        payload["p"] = json!("abcdefghijklmnopqrstuvwxyzABCDEFGH");
        let headers = [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")];
        frame(&headers, payload.to_string().as_bytes())
    }

    fn exception(kind: &str, message: &str) -> Vec<u8> {
        let headers =
            [(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")];
        frame(&headers, json!({"message": message}).to_string().as_bytes())
    }

    /// A ConverseStream answer: text with a multi-byte character to split inside, then a
    /// tool call whose input arrives in pieces; `messageStop` before `metadata`, as
    /// Bedrock sends them.
    fn recorded() -> Vec<Vec<u8>> {
        vec![
            event("messageStart", json!({"role": "assistant"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Caf\u{e9} "}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "weather:"}})),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event(
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_01", "name": "get_weather"}}}),
            ),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ""}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\": "}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}})),
            event("contentBlockStop", json!({"contentBlockIndex": 1})),
            event("messageStop", json!({"stopReason": "tool_use"})),
            event(
                "metadata",
                json!({"usage": {"inputTokens": 20, "outputTokens": 42, "totalTokens": 92, "cacheReadInputTokens": 30},
                    "metrics": {"latencyMs": 812}}),
            ),
        ]
    }

    fn joined(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    struct Run {
        out: String,
        end: StreamEnd,
        usage: Option<Usage>,
        started_at_cut: bool,
    }

    fn run(input: &[u8], wants_usage: bool, cut: usize) -> Run {
        let mut body = json!({"model": "claude-eu", "messages": [user(json!("x"))], "stream": true});
        if wants_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut t = Bedrock.stream(&parse(body));
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

    /// The chunks without their id, which is checked apart.
    fn chunks(out: &str) -> Vec<Value> {
        data(out)
            .into_iter()
            .map(|mut c| {
                if let Some(object) = c.as_object_mut() {
                    object.remove("id");
                }
                c
            })
            .collect()
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"object": "chat.completion.chunk", "created": 1_750_000_000, "model": "claude-eu",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn a_recorded_stream_translates_to_openai_chunks() {
        let run = run(&joined(&recorded()), false, 0);
        assert_eq!(
            chunks(&run.out),
            vec![
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": "Caf\u{e9} "}), Value::Null),
                chunk(json!({"content": "weather:"}), Value::Null),
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "tooluse_01", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    Value::Null
                ),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}), Value::Null),
                chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
                chunk(json!({}), json!("tool_calls")),
                json!("[DONE]"),
            ]
        );
        let ids: Vec<Value> = data(&run.out).iter().filter_map(|c| c.get("id").cloned()).collect();
        assert!(ids[0].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "{ids:?}");
        assert!(ids.iter().all(|id| *id == ids[0]), "one id for the whole stream");
        assert_eq!(run.end, StreamEnd::Complete);
        assert_eq!(
            run.usage,
            Some(Usage { input_tokens: 50, output_tokens: 42, cached_input_tokens: 30, cache_write_tokens: 0 })
        );
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let input = joined(&recorded());
        for wants_usage in [false, true] {
            let whole = run(&input, wants_usage, 0);
            for cut in 1..=input.len() {
                let split = run(&input, wants_usage, cut);
                assert_eq!(split.out, whole.out, "cut {cut}");
                assert_eq!((split.end, split.usage), (whole.end, whole.usage), "cut {cut}");
            }
        }
    }

    #[test]
    fn include_usage_adds_null_usage_and_a_final_usage_chunk() {
        let events = data(&run(&joined(&recorded()), true, 0).out);
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
    fn starts_at_the_first_content_not_at_message_start() {
        let frames = recorded();
        let start = frames[0].len();
        let input = joined(&frames);
        assert!(!run(&input, false, start + frames[1].len() - 1).started_at_cut, "messageStart only");
        assert!(run(&input, false, start + frames[1].len()).started_at_cut);
        let finish_only = joined(&[frames[0].clone(), event("messageStop", json!({"stopReason": "end_turn"}))]);
        assert!(run(&finish_only, false, finish_only.len()).started_at_cut);
    }

    #[test]
    fn a_stream_without_its_terminal_events_is_cut() {
        let frames = recorded();
        // "Café weather:" and `{"city": "Paris"}`: 30 characters relayed, about 8 tokens; the
        // one-word prompt is estimated at 1 token and 4 of framing.
        let estimate = Some(Usage { input_tokens: 5, output_tokens: 8, ..Usage::default() });
        // Before messageStop: no finish, no usage chunk, no [DONE]; billed for an estimate.
        let cut = run(&joined(&frames[..9]), true, 0);
        assert_eq!((cut.end, cut.usage), (StreamEnd::Cut, estimate));
        assert!(!cut.out.contains("finish_reason\":\"tool_calls") && !cut.out.contains("[DONE]"));
        // After messageStop, before metadata: the answer is whole but its usage never came;
        // the finish chunk has gone out, `[DONE]` must not.
        let cut = run(&joined(&frames[..10]), true, 0);
        assert_eq!((cut.end, cut.usage), (StreamEnd::Cut, estimate));
        assert!(cut.out.contains("\"finish_reason\":\"tool_calls\"") && !cut.out.contains("[DONE]"));
        assert_eq!(run(&joined(&frames[..1]), false, 0).usage, None, "nothing relayed, nothing billed");
        // Mid-frame.
        let whole = joined(&frames);
        assert_eq!(run(&whole[..whole.len() - 3], false, 0).end, StreamEnd::Cut);
        assert_eq!(run(b"", false, 0).end, StreamEnd::Cut);
    }

    #[test]
    fn metadata_before_message_stop_still_completes() {
        let mut frames = recorded();
        frames.swap(9, 10);
        let run = run(&joined(&frames), true, 0);
        assert_eq!(run.end, StreamEnd::Complete);
        let events = data(&run.out);
        assert_eq!(events[events.len() - 3]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(events[events.len() - 2]["usage"]["completion_tokens"], 42);
    }

    #[test]
    fn an_exception_ends_the_stream_with_an_openai_error_chunk() {
        for (kind, code) in [
            ("throttlingException", "upstream_rate_limited"),
            ("serviceUnavailableException", "upstream_overloaded"),
            ("modelStreamErrorException", "upstream_failed"),
            ("internalServerException", "upstream_failed"),
            ("validationException", "upstream_failed"),
        ] {
            let mut frames = recorded();
            frames.insert(3, exception(kind, "Something broke mid-stream"));
            let input = joined(&frames);
            let run = run(&input, true, input.len());
            assert_eq!(run.end, StreamEnd::Failed, "{kind}");
            assert!(run.started_at_cut);
            let events = data(&run.out);
            assert_eq!(events.len(), 4, "role, two texts, the error; nothing after it: {}", run.out);
            let error = &events[3]["error"];
            assert_eq!(error["code"], code, "{kind}");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(kind) && message.contains("Something broke mid-stream"), "{message}");
        }
        let error_frame =
            frame(&[(":message-type", "error"), (":error-code", "InternalFailure"), (":error-message", "boom")], b"");
        let run = run(&joined(&[recorded()[0].clone(), error_frame]), false, 0);
        assert_eq!(run.end, StreamEnd::Failed);
        assert!(run.out.contains("InternalFailure") && run.out.contains("boom"), "{}", run.out);
    }

    #[test]
    fn a_corrupt_frame_fails_the_stream() {
        let frames = recorded();
        let mut corrupt = frames[1].clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let run = run(&joined(&[frames[0].clone(), corrupt, frames[2].clone()]), false, 0);
        assert_eq!(run.end, StreamEnd::Failed);
        let events = data(&run.out);
        assert_eq!(events.len(), 2, "{}", run.out);
        assert_eq!(events[1]["error"]["code"], "upstream_failed");
        assert!(events[1]["error"]["message"].as_str().unwrap().contains("corrupt"));
    }

    // -----------------------------------------------------------------------------------
    // Config validation.

    fn config_with(edit: impl FnOnce(&mut Value)) -> Result<crate::config::Gateway, String> {
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        let mut bedrock = deployment_json();
        edit(&mut bedrock);
        config["deployments"].as_array_mut().unwrap().push(bedrock);
        crate::config::parse(&config.to_string())
    }

    fn rejects(edit: impl FnOnce(&mut Value), needle: &str) {
        let err = config_with(edit).map(drop).unwrap_err();
        assert!(err.contains("deployment `bedrock-eu`"), "{err}");
        assert!(err.contains(needle), "error `{err}` should mention `{needle}`");
    }

    #[test]
    fn inference_profiles_must_match_the_jurisdiction() {
        let profile = |model: &str, jurisdiction: &str| {
            config_with(|d| {
                d["model"] = model.into();
                d["jurisdiction"] = jurisdiction.into();
            })
            .map(drop)
        };
        for (model, jurisdiction) in [
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu"),
            ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us"),
            ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "us"),
            ("apac.amazon.nova-pro-v1:0", "apac"),
            ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "jp"),
            ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "apac"),
            ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "au"),
            ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "apac"),
            ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "global"),
            ("anthropic.claude-3-haiku-20240307-v1:0", "eu"),
            ("anthropic.claude-3-haiku-20240307-v1:0", "global"),
            (
                "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
                "eu",
            ),
        ] {
            assert_eq!(profile(model, jurisdiction), Ok(()), "{model} in {jurisdiction}");
        }
        for (model, jurisdiction, needle) in [
            ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu", "must be `global`, not `eu`"),
            ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu", "`us.` cross-region inference profile"),
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "us", "must be `eu`, not `us`"),
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "global", "must be `eu`, not `global`"),
            ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "eu", "must be `us`"),
            ("apac.amazon.nova-pro-v1:0", "jp", "must be `apac`, not `jp`"),
            ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "au", "must be `jp` or `apac`, not `au`"),
            ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "jp", "must be `au` or `apac`"),
            ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0", "eu", "`us.`"),
        ] {
            let err = profile(model, jurisdiction).unwrap_err();
            assert!(err.starts_with("deployment `bedrock-eu`: model"), "{err}");
            assert!(err.contains(needle), "{model} in {jurisdiction}: `{err}` should mention `{needle}`");
        }
    }

    #[test]
    fn region_and_credentials_are_validated() {
        assert!(config_with(|_| {}).is_ok());
        rejects(|d| d.as_object_mut().unwrap().remove("aws_region").map(drop).unwrap(), "need `aws_region`");
        rejects(|d| d["aws_region"] = "EU Central".into(), "not an AWS region name");
        rejects(|d| d["aws_region"] = "us-east-1".into(), "is not in aws_region `us-east-1`");
        assert!(config_with(|d| {
            d["base_url"] = "http://127.0.0.1:9/bedrock-eu".into();
        })
        .is_ok());
        rejects(|d| d["api_key_secret"] = "BEDROCK_KEY".into(), "not both");
        rejects(
            |d| {
                let d = d.as_object_mut().unwrap();
                d.remove("aws_access_key_id_secret");
                d.remove("aws_secret_access_key_secret");
            },
            "needs credentials",
        );
        rejects(
            |d| d.as_object_mut().unwrap().remove("aws_secret_access_key_secret").map(drop).unwrap(),
            "go together",
        );
        rejects(|d| d["aws_session_token_secret"] = "bad name".into(), "aws_session_token_secret `bad name`");
        let api_key = config_with(|d| {
            let d = d.as_object_mut().unwrap();
            d.remove("aws_access_key_id_secret");
            d.remove("aws_secret_access_key_secret");
            d.insert("api_key_secret".into(), "BEDROCK_KEY".into());
        });
        assert!(api_key.is_ok());
    }

    #[test]
    fn aws_fields_are_for_bedrock_only() {
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        config["deployments"][0]["aws_region"] = json!("eu-central-1");
        let err = crate::config::parse(&config.to_string()).map(drop).unwrap_err();
        assert!(err.contains("deployment `eu-a` (openai): unknown field `aws_region`"), "{err}");
    }

    // -----------------------------------------------------------------------------------
    // Messages requests for Claude, through InvokeModel.

    #[test]
    fn only_anthropic_models_take_messages_requests() {
        let with_model = |model: &str| {
            let mut d = deployment();
            d.model = model.into();
            is_claude(&d)
        };
        assert!(with_model(MODEL));
        assert!(with_model("anthropic.claude-sonnet-4-5-20250929-v1:0"));
        assert!(with_model(
            "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
        ));
        assert!(!with_model("eu.meta.llama3-2-3b-instruct-v1:0"));
        assert!(!with_model("mistral.mistral-large-2407-v1:0"));
    }

    #[test]
    fn a_messages_request_is_invoked_as_sent_with_bedrocks_version_and_betas_in_the_body() {
        let body = json!({"model": "alias", "max_tokens": 64, "stream": true, "top_k": 5, "metadata": {"user_id": "u-1"},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "system": [{"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "x"}]});
        let req = crate::ingress::anthropic::parse(body.to_string().as_bytes()).unwrap();
        let mut native = req.native.clone().unwrap();
        native.beta = Some("context-1m-2025-08-07, interleaved-thinking-2025-05-14".into());
        let up = Bedrock.build_native(&deployment(), &req, &native, &sigv4_auth()).unwrap();
        assert_eq!(
            up.url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/eu.anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream"
        );
        assert!(sigv4_signed(&up));
        let mut expected = body;
        let fields = expected.as_object_mut().unwrap();
        fields.remove("model");
        fields.remove("stream");
        fields.remove("metadata");
        fields.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
        fields.insert("anthropic_beta".into(), json!(["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]));
        assert_eq!(serde_json::from_slice::<Value>(&up.body).unwrap(), expected);
    }

    fn sigv4_signed(up: &UpstreamRequest) -> bool {
        up.headers.iter().any(|(name, value)| *name == "authorization" && value.starts_with("AWS4-HMAC-SHA256 "))
    }

    /// The InvokeModel body a CountTokens request carries, decoded.
    fn counted(up: &UpstreamRequest) -> Value {
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        let invoke = crate::util::base64::decode(sent["input"]["invokeModel"]["body"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&invoke).unwrap()
    }

    #[test]
    fn tokens_are_counted_by_the_foundation_model_on_the_invoke_body() {
        let body = json!({"model": "alias", "thinking": {"type": "enabled", "budget_tokens": 2048},
            "system": "Be brief.", "messages": [{"role": "user", "content": "x"}]});
        let counter = crate::providers::counts_tokens(&deployment()).expect("Claude on Bedrock counts tokens");
        let up =
            counter.count_request(&deployment(), body.as_object().unwrap(), Some("b-1,b-2"), &sigv4_auth()).unwrap();
        // The `eu.` profile's foundation model: CountTokens takes no profile.
        assert_eq!(
            up.url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/count-tokens"
        );
        assert!(sigv4_signed(&up));
        let mut expected = body;
        let fields = expected.as_object_mut().unwrap();
        fields.remove("model");
        fields.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
        fields.insert("anthropic_beta".into(), json!(["b-1", "b-2"]));
        fields.insert("max_tokens".into(), json!(2049));
        assert_eq!(counted(&up), expected);
        // A client's own max_tokens stays.
        let own = json!({"model": "alias", "max_tokens": 10, "messages": []});
        let up = counter.count_request(&deployment(), own.as_object().unwrap(), None, &sigv4_auth()).unwrap();
        assert_eq!(counted(&up)["max_tokens"], 10);

        assert_eq!(counter.count_answer(br#"{"inputTokens":42}"#.to_vec()).unwrap(), br#"{"input_tokens":42}"#);
        for wrong in [&br#"{"input_tokens":42}"#[..], b"{}", b"nope"] {
            assert_eq!(counter.count_answer(wrong.to_vec()), Err(ErrorClass::Server));
        }
    }

    /// Anthropic's events as InvokeModel streams them: base64 in `chunk` frames.
    fn invoke_stream(events: &[Value]) -> Vec<u8> {
        let chunk = |event: &Value| {
            let padded = crate::util::base64::standard(event.to_string().as_bytes());
            let headers = [(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")];
            frame(&headers, json!({"bytes": padded}).to_string().as_bytes())
        };
        events.iter().flat_map(chunk).collect()
    }

    fn claude_events() -> Vec<Value> {
        vec![
            json!({"type": "message_start", "message": {"id": "msg_bdrk_01", "type": "message", "role": "assistant",
                "model": "claude-3-haiku-20240307", "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello \u{e9}"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 9, "outputTokenCount": 4}}),
        ]
    }

    fn as_sse(events: &[Value]) -> String {
        events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect()
    }

    #[test]
    fn an_invoke_stream_reaches_a_messages_client_as_anthropics_events_at_every_split() {
        let events = claude_events();
        let input = invoke_stream(&events);
        for cut in 0..=input.len() {
            let mut t = Bedrock.native_stream();
            let mut out = Vec::new();
            t.push(&input[..cut], &mut out);
            t.push(&input[cut..], &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), as_sse(&events), "cut {cut}");
            assert_eq!(t.end(), StreamEnd::Complete, "cut {cut}");
            assert_eq!(t.usage().map(|u| (u.input_tokens, u.output_tokens)), Some((9, 4)), "cut {cut}");
        }
        // Cut inside a frame: what arrived is passed on, and the stream is cut.
        let mut t = Bedrock.native_stream();
        let mut out = Vec::new();
        t.push(&input[..input.len() - 3], &mut out);
        assert_eq!(t.end(), StreamEnd::Cut);
        assert!(String::from_utf8(t.cut_event(&GatewayError::internal("cut"))).unwrap().starts_with("event: error\n"));
    }

    #[test]
    fn an_exception_mid_stream_is_anthropics_error_event() {
        let events = claude_events();
        let mut input = invoke_stream(&events[..3]);
        let headers = [
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ];
        input.extend(frame(&headers, br#"{"message":"Too many tokens"}"#));
        let mut t = Bedrock.native_stream();
        let mut out = Vec::new();
        t.push(&input, &mut out);
        let out = String::from_utf8(out).unwrap();
        let expected_error =
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Too many tokens"}});
        assert_eq!(out, format!("{}event: error\ndata: {expected_error}\n\n", as_sse(&events[..3])));
        assert_eq!(t.end(), StreamEnd::Failed);
        // A frame that breaks the framing ends it the same way, once.
        let mut t = Bedrock.native_stream();
        let mut out = Vec::new();
        t.push(&[0, 0, 0, 5, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8], &mut out);
        t.push(b"more", &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("event: error").count(), 1, "{out}");
        assert_eq!(t.end(), StreamEnd::Failed);
    }
}

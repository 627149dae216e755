//! The Anthropic Messages wire format, after Anthropic's published API reference
//! (platform.claude.com/docs: "Messages", "Streaming Messages", "Errors"): the `message`
//! object with text / `tool_use` content blocks and usage that counts cache reads apart
//! from `input_tokens`; the SSE stream of named events (`message_start`,
//! `content_block_start`, `ping`, `content_block_delta` with `text_delta` /
//! `input_json_delta`, `content_block_stop`, `message_delta`, `message_stop`); and the
//! error object `{"type":"error","error":{type,message}}` with 529 `overloaded_error`.
//!
//! Requests are validated as Anthropic does: `model`, `max_tokens` and `messages` are
//! required, unknown top-level fields are refused, and turns must start with `user` and
//! alternate, with no `system` role among them.
//!
//! With `thinking` enabled, the answer opens with a `thinking` block (streamed as a
//! `thinking_delta` and a `signature_delta`), as extended thinking answers do.
//!
//! Faults are the shared [`Behaviour`](crate::Behaviour)s. `error_code` names the error
//! `type` of a scripted status (`context_length_exceeded` gives Anthropic's "prompt is too
//! long" 400); with `cut_after`, it makes the stream end with an `error` event of that
//! type after the given number of content events, as Anthropic reports a failure it hits
//! mid-stream, instead of closing the connection.

use std::io;
use std::thread::sleep;
use std::time::Duration;

use serde_json::{json, Value};

use crate::answer::{self, Usage};
use crate::http::{Request, Responder};
use crate::Call;

/// The top-level fields of a Messages request; Anthropic refuses any other.
const FIELDS: &[&str] = &[
    "model",
    "inference_geo",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
];

pub(crate) fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn invalid_request(message: &str) -> Value {
    error_body("invalid_request_error", message)
}

/// The error Anthropic sends for the scripted `status`.
fn fault(call: &Call, status: u16, model: &str) -> (Value, Option<u64>) {
    let b = &call.behaviour;
    let (default_kind, message) = match status {
        400 if b.error_code.as_deref() == Some("context_length_exceeded") => {
            return (invalid_request("prompt is too long: 210000 tokens > 200000 maximum"), None);
        }
        400 => ("invalid_request_error", format!("Mock error {status}")),
        401 => ("authentication_error", "invalid x-api-key".to_string()),
        403 => ("permission_error", "Your API key does not have permission to use the specified resource.".into()),
        404 => ("not_found_error", format!("model: {model}")),
        413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes.".into()),
        429 => (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.".into(),
        ),
        529 => ("overloaded_error", "Overloaded".into()),
        500.. => ("api_error", "Internal server error".into()),
        _ => ("invalid_request_error", format!("Mock error {status}")),
    };
    let kind = b.error_code.as_deref().unwrap_or(default_kind);
    let retry_after = b.retry_after.or((status == 429).then_some(1));
    (error_body(kind, &message), retry_after)
}

/// The text of a `content` (a string or an array of blocks), tool results included.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => {
            blocks.iter().map(|b| b["text"].as_str().map_or_else(|| text_of(&b["content"]), str::to_string)).collect()
        }
        _ => String::new(),
    }
}

/// Where a Messages request arrived: Anthropic's API, or Claude on Vertex AI, whose path
/// names the model and whose body carries the API version instead of a header
/// (Anthropic's "Claude on Vertex AI").
pub(crate) enum Host<'a> {
    Anthropic,
    Vertex {
        model: &'a str,
    },
    /// Bedrock's InvokeModel: the path names the model and whether to stream, the body
    /// carries the API version and any betas.
    Bedrock {
        model: &'a str,
        stream: bool,
    },
}

/// The only `anthropic_version` Claude on Vertex AI takes.
const VERTEX_VERSION: &str = "vertex-2023-10-16";
/// The only `anthropic_version` Claude on Bedrock takes.
const BEDROCK_VERSION: &str = "bedrock-2023-05-31";

/// How a stream's events travel: Anthropic's SSE, or Bedrock's event-stream frames.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    Sse,
    EventStream,
}

/// Anthropic's checks on a request body, in the order it reports them.
pub(crate) fn validate<'a>(body: &'a Value, host: &Host<'a>) -> Result<(&'a str, &'a [Value]), String> {
    let fields = body.as_object().ok_or("The request body is not a valid JSON object.")?;
    let allowed = |k: &str| match host {
        Host::Anthropic => FIELDS.contains(&k),
        Host::Vertex { .. } => k != "model" && (k == "anthropic_version" || FIELDS.contains(&k)),
        Host::Bedrock { .. } => {
            !matches!(k, "model" | "stream" | "metadata")
                && (matches!(k, "anthropic_version" | "anthropic_beta") || FIELDS.contains(&k))
        }
    };
    if let Some(extra) = fields.keys().find(|k| !allowed(k)) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    let model = match host {
        Host::Anthropic => body["model"].as_str().ok_or("model: Field required")?,
        Host::Vertex { model } if body["anthropic_version"] == VERTEX_VERSION => model,
        Host::Vertex { .. } => return Err(format!("anthropic_version: must be \"{VERTEX_VERSION}\"")),
        Host::Bedrock { model, .. } if body["anthropic_version"] == BEDROCK_VERSION => model,
        Host::Bedrock { .. } => return Err(format!("anthropic_version: must be \"{BEDROCK_VERSION}\"")),
    };
    if !body["max_tokens"].is_u64() {
        return Err("max_tokens: Field required".into());
    }
    // Anthropic's "Data residency": `us` or `global`, `us` only on Claude 4.6 and later.
    match (host, body.get("inference_geo").map(|g| g.as_str())) {
        (_, None) => {}
        (Host::Anthropic, Some(Some("global"))) => {}
        (Host::Anthropic, Some(Some("us"))) if is_claude_4_6_or_later(model) => {}
        (Host::Anthropic, Some(Some("us"))) => {
            return Err(format!("inference_geo: `us` is not supported for model {model}"));
        }
        (Host::Anthropic, _) => return Err("inference_geo: Input should be 'us' or 'global'".into()),
        _ => return Err("inference_geo: Extra inputs are not permitted".into()),
    }
    if body["thinking"]["type"] == "enabled" && !body["thinking"]["budget_tokens"].is_u64() {
        return Err("thinking.enabled.budget_tokens: Field required".into());
    }
    let messages = body["messages"].as_array().ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut previous = "assistant";
    for (i, message) in messages.iter().enumerate() {
        match message["role"].as_str() {
            Some("system") => {
                return Err(format!(
                    "messages.{i}.role: \"system\" is not a message role; use the top-level `system` parameter"
                ));
            }
            Some(role @ ("user" | "assistant")) if role == previous => {
                return Err(if i == 0 {
                    "messages: the first message must use the \"user\" role".to_string()
                } else {
                    format!("messages.{i}: roles must alternate between \"user\" and \"assistant\"; found two \"{role}\" turns in a row")
                });
            }
            Some(role @ ("user" | "assistant")) => previous = role,
            _ => return Err(format!("messages.{i}.role: Input should be 'user' or 'assistant'")),
        }
    }
    Ok((model, messages))
}

/// `POST /v1/messages/count_tokens` ("Count Message tokens"): `{"input_tokens": n}`, n as
/// the answer to the same request would report it (a `prompt_tokens` directive, else an
/// estimate from the text). Checked as Anthropic does: `model` and `messages` required,
/// no `max_tokens` needed, the fields of a Messages request but `stream` and the sampling
/// ones. On Vertex AI (`.../models/count-tokens:rawPredict`) the version is in the body,
/// not a header, and the model still is.
pub(crate) fn count_tokens(call: &Call, request: &Request, vertex: bool, out: &mut Responder) -> io::Result<()> {
    let id_header = [("request-id", "req_mock_count")];
    if let Some(status) = call.behaviour.status.filter(|&s| s != 200) {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let (error, _) = fault(call, status, body["model"].as_str().unwrap_or("unknown"));
        return out.json(status, &id_header, &error);
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    if vertex && body["anthropic_version"] != VERTEX_VERSION {
        return out.json(
            400,
            &id_header,
            &invalid_request(&format!("anthropic_version: must be \"{VERTEX_VERSION}\"")),
        );
    }
    if !vertex && request.header("anthropic-version").is_none() {
        return out.json(400, &id_header, &invalid_request("anthropic-version: header is required"));
    }
    const COUNTED: &[&str] = &["model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"];
    let counted = |k: &str| COUNTED.contains(&k) || (vertex && k == "anthropic_version");
    let fields = body.as_object().map(|o| o.keys().find(|k| !counted(k)).cloned());
    let problem = match (fields, body["model"].as_str(), body["messages"].as_array()) {
        (None, _, _) => Some("The request body is not a valid JSON object.".to_string()),
        (Some(Some(extra)), _, _) => Some(format!("{extra}: Extra inputs are not permitted")),
        (_, None, _) => Some("model: Field required".into()),
        (_, _, None) => Some("messages: Field required".into()),
        _ => None,
    };
    if let Some(problem) = problem {
        return out.json(400, &id_header, &invalid_request(&problem));
    }
    out.json(200, &id_header, &json!({"input_tokens": prompt_tokens(call, &body)}))
}

/// The input tokens of a Messages body: a `prompt_tokens` directive, else an estimate.
pub(crate) fn prompt_tokens(call: &Call, body: &Value) -> u64 {
    let messages = body["messages"].as_array().map_or(&[][..], Vec::as_slice);
    let prompt_chars = text_of(&body["system"]).chars().count()
        + messages.iter().map(|m| text_of(&m["content"]).chars().count()).sum::<usize>();
    Usage::new(&call.behaviour, prompt_chars, "", 1).prompt
}

pub(crate) fn messages(call: &Call, request: &Request, host: Host, out: &mut Responder) -> io::Result<()> {
    let request_id = format!("req_mock_{}", call.seq);
    let id_header = [("request-id", request_id.as_str())];
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);

    if let Some(status) = call.behaviour.status.filter(|&s| s != 200) {
        let (error, retry_after) = fault(call, status, body["model"].as_str().unwrap_or("unknown"));
        let retry_after = retry_after.map(|s| s.to_string());
        let mut headers = id_header.to_vec();
        headers.extend(retry_after.as_deref().map(|s| ("retry-after", s)));
        return out.json(status, &headers, &error);
    }
    let (streamed, framing) = match host {
        Host::Bedrock { stream, .. } => (stream, Framing::EventStream),
        _ => (body["stream"] == true, Framing::Sse),
    };
    if matches!(host, Host::Anthropic) && request.header("anthropic-version").is_none() {
        return out.json(400, &id_header, &invalid_request("anthropic-version: header is required"));
    }
    let (model, messages) = match validate(&body, &host) {
        Ok(valid) => valid,
        Err(message) => return out.json(400, &id_header, &invalid_request(&message)),
    };

    let b = &call.behaviour;
    let last_user = messages.iter().rev().find(|m| m["role"] == "user");
    let reply = answer::reply(b, &call.tag, &last_user.map(|m| text_of(&m["content"])).unwrap_or_default());
    let offers_tools = body["tools"].as_array().is_some_and(|tools| !tools.is_empty());
    let tool = b.tool_call.as_deref().filter(|_| offers_tools);
    let arguments = b.tool_args.as_deref().unwrap_or("{}");
    let Ok(input) = serde_json::from_str::<Value>(arguments) else {
        let error = invalid_request(&format!("mock-provider: tool_args is not JSON: {arguments}"));
        return out.json(400, &id_header, &error);
    };
    let prompt_chars = text_of(&body["system"]).chars().count()
        + messages.iter().map(|m| text_of(&m["content"]).chars().count()).sum::<usize>();
    let generated = if tool.is_some() { arguments } else { reply.as_str() };
    let answer = Answer {
        thinking: body["thinking"]["type"] == "enabled",
        id: format!("msg_mock_{}", call.seq),
        tool_id: format!("toolu_mock_{}", call.seq),
        model,
        tool,
        input,
        generated,
        usage: Usage::new(b, prompt_chars, generated, 1),
        // Only Anthropic's own API reports it; a directive stands for Anthropic ignoring the
        // request's geography.
        web_searches: u64::from(body["tools"].as_array().is_some_and(|tools| {
            tools.iter().any(|t| t["type"].as_str().is_some_and(|k| k.starts_with("web_search_")))
        })),
        inference_geo: matches!(host, Host::Anthropic).then(|| {
            b.inference_geo.clone().unwrap_or_else(|| body["inference_geo"].as_str().unwrap_or("global").to_string())
        }),
    };
    if streamed {
        stream(call, &answer, &id_header, framing, out)
    } else {
        out.json(200, &id_header, &answer.message())
    }
}

/// `claude-<family>-<major>-<minor>…` of 4.6 or later, as this mock reads model ids.
fn is_claude_4_6_or_later(model: &str) -> bool {
    let parts: Vec<&str> = model.split('-').collect();
    let number = |i: usize| parts.get(i).filter(|p| p.len() <= 2).and_then(|p| p.parse::<u32>().ok());
    match (parts.first(), number(2), number(3)) {
        (Some(&"claude"), Some(major), minor) => (major, minor.unwrap_or(0)) >= (4, 6),
        _ => false,
    }
}

struct Answer<'a> {
    /// Extended thinking was asked for: a thinking block comes first.
    thinking: bool,
    id: String,
    tool_id: String,
    model: &'a str,
    /// The tool to call instead of answering in text.
    tool: Option<&'a str>,
    /// The tool call's input, parsed.
    input: Value,
    /// The reply text, or the tool call's input as JSON text.
    generated: &'a str,
    usage: Usage,
    inference_geo: Option<String>,
    /// Searches the web search server tool ran: one when the request offers it.
    web_searches: u64,
}

impl Answer<'_> {
    /// Anthropic's `input_tokens` leaves out the tokens read from the cache.
    fn usage(&self, output_tokens: u64) -> Value {
        let u = &self.usage;
        let mut usage = json!({
            "input_tokens": u.prompt.saturating_sub(u.cached),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": u.cached,
            "output_tokens": output_tokens,
        });
        if let Some(geo) = &self.inference_geo {
            usage["inference_geo"] = geo.as_str().into();
        }
        if self.web_searches > 0 {
            usage["server_tool_use"] = json!({"web_search_requests": self.web_searches});
        }
        usage
    }

    /// A stream's `message_delta` usage: the output, and the server tools that ran.
    fn final_delta_usage(&self) -> Value {
        let mut usage = json!({"output_tokens": self.usage.completion});
        if self.web_searches > 0 {
            usage["server_tool_use"] = json!({"web_search_requests": self.web_searches});
        }
        usage
    }

    fn stop_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    /// The content block as `content_block_start` announces it; whole when `full`.
    fn block(&self, full: bool) -> Value {
        match self.tool {
            Some(name) => {
                let input = if full { self.input.clone() } else { json!({}) };
                json!({"type": "tool_use", "id": self.tool_id, "name": name, "input": input})
            }
            None => json!({"type": "text", "text": if full { self.generated } else { "" }}),
        }
    }

    fn delta(&self, piece: &str) -> Value {
        match self.tool {
            Some(_) => json!({"type": "input_json_delta", "partial_json": piece}),
            None => json!({"type": "text_delta", "text": piece}),
        }
    }

    fn thinking_block(&self) -> Value {
        json!({"type": "thinking", "thinking": "Mock reasoning.", "signature": format!("mock-signature-{}", self.id)})
    }

    /// The index of the answer's own block: after the thinking block, if any.
    fn index(&self) -> u64 {
        u64::from(self.thinking)
    }

    fn message(&self) -> Value {
        let mut content: Vec<Value> = self.thinking.then(|| self.thinking_block()).into_iter().collect();
        content.push(self.block(true));
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason(),
            "stop_sequence": null,
            "usage": self.usage(self.usage.completion),
        })
    }
}

struct Events<'a> {
    out: &'a mut Responder,
    framing: Framing,
}

impl Events<'_> {
    fn send(&mut self, event: &Value) -> io::Result<()> {
        match self.framing {
            Framing::Sse => {
                let name = event["type"].as_str().unwrap_or_default();
                self.out.chunk(format!("event: {name}\ndata: {event}\n\n").as_bytes())
            }
            Framing::EventStream => self.out.chunk(&crate::eventstream::chunk_frame(event)),
        }
    }
}

fn stream(
    call: &Call,
    answer: &Answer,
    headers: &[(&str, &str)],
    framing: Framing,
    out: &mut Responder,
) -> io::Result<()> {
    let b = &call.behaviour;
    let delay = Duration::from_millis(b.chunk_delay_ms.unwrap_or(call.default_chunk_delay_ms));
    let content_type = match framing {
        Framing::Sse => "text/event-stream",
        Framing::EventStream => "application/vnd.amazon.eventstream",
    };
    let mut all_headers = vec![("Content-Type", content_type), ("Cache-Control", "no-cache")];
    all_headers.extend_from_slice(headers);
    out.start_stream(200, &all_headers)?;
    if b.cut_after == Some(0) && b.error_code.is_none() {
        return out.cut();
    }
    let mut events = Events { out, framing };

    let mut started = answer.message();
    started["content"] = json!([]);
    started["stop_reason"] = Value::Null;
    started["usage"] = answer.usage(1);
    events.send(&json!({"type": "message_start", "message": started}))?;
    if answer.thinking {
        let block = answer.thinking_block();
        events.send(
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        )?;
        let thought = json!({"type": "thinking_delta", "thinking": block["thinking"]});
        events.send(&json!({"type": "content_block_delta", "index": 0, "delta": thought}))?;
        let signature = json!({"type": "signature_delta", "signature": block["signature"]});
        events.send(&json!({"type": "content_block_delta", "index": 0, "delta": signature}))?;
        events.send(&json!({"type": "content_block_stop", "index": 0}))?;
    }
    let index = answer.index();
    events.send(&json!({"type": "content_block_start", "index": index, "content_block": answer.block(false)}))?;
    events.send(&json!({"type": "ping"}))?;
    for (sent, piece) in answer::pieces(answer.generated, b.chunks).iter().enumerate() {
        if b.cut_after == Some(sent) {
            break;
        }
        sleep(delay);
        events.send(&json!({"type": "content_block_delta", "index": index, "delta": answer.delta(piece)}))?;
    }
    if b.cut_after.is_some() {
        return end_early(b.error_code.as_deref(), &mut events);
    }

    sleep(delay);
    events.send(&json!({"type": "content_block_stop", "index": index}))?;
    let change = json!({"stop_reason": answer.stop_reason(), "stop_sequence": null});
    events.send(&json!({"type": "message_delta", "delta": change, "usage": answer.final_delta_usage()}))?;
    let mut stop = json!({"type": "message_stop"});
    if framing == Framing::EventStream {
        let u = &answer.usage;
        stop["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": u.prompt, "outputTokenCount": u.completion,
            "invocationLatency": 1, "firstByteLatency": 1});
    }
    events.send(&stop)?;
    events.out.end_stream()
}

/// A stream that fails part way: with an `error` event that ends it normally when an error
/// type was scripted, else by dropping the connection.
fn end_early(error_code: Option<&str>, events: &mut Events) -> io::Result<()> {
    let Some(kind) = error_code else {
        return events.out.cut();
    };
    let message = if kind == "overloaded_error" { "Overloaded" } else { "Mock stream error" };
    match events.framing {
        Framing::Sse => events.send(&error_body(kind, message))?,
        // Bedrock reports it as an exception frame (`error_code=throttlingException`).
        Framing::EventStream => events.out.chunk(&crate::eventstream::exception_frame(kind, message))?,
    }
    events.out.end_stream()
}

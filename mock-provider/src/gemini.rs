//! Google's `GenerateContent` wire format, as the Gemini API (`/v1beta/models/{m}:
//! generateContent`, key in `x-goog-api-key`) and Vertex AI's Gemini publisher
//! (`/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`, an
//! OAuth access token) serve it, after the Gemini API reference: the request's `contents`
//! of `user` / `model` turns of `parts`, `systemInstruction`, `tools`, `toolConfig`,
//! `generationConfig`; the answer's `candidates[].content.parts` (`text`, `functionCall`
//! with a `thoughtSignature`), `finishReason`, `usageMetadata` (`promptTokenCount`
//! including `cachedContentTokenCount`), `modelVersion`, `responseId`; the stream
//! (`:streamGenerateContent?alt=sse`) of `data:` events each a whole response, the last
//! with the `finishReason` and final usage; and errors as `{"error": {code, message,
//! status}}`.
//!
//! Faults are the shared [`Behaviour`](crate::Behaviour)s. `error_code`
//! `context_length_exceeded` gives Gemini's token-count 400; with `cut_after`, an
//! `error_code` (a canonical status such as `UNAVAILABLE`) ends the stream with an error
//! event after that many content events instead of dropping the connection.

use std::io;
use std::thread::sleep;
use std::time::Duration;

use serde_json::{json, Value};

use crate::answer::{self, Usage};
use crate::gcp;
use crate::http::{Request, Responder};
use crate::{Call, State};

/// The top-level fields of a `GenerateContentRequest`; Google refuses any other.
const FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
];

/// Who is serving: the Gemini API, or Vertex AI.
pub(crate) enum Host {
    GeminiApi,
    Vertex,
}

fn error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "status": status, "message": message}})
}

fn canonical_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn fault(call: &Call, status: u16) -> Value {
    let b = &call.behaviour;
    match (status, b.error_code.as_deref()) {
        (400, Some("context_length_exceeded")) => error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        ),
        (429, _) => error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        (503, _) => error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        _ => {
            error(status, b.error_code.as_deref().unwrap_or(canonical_status(status)), &format!("Mock error {status}"))
        }
    }
}

/// The text of a turn's parts, function responses included.
fn text_of(content: &Value) -> String {
    let parts = content["parts"].as_array().map(Vec::as_slice).unwrap_or_default();
    parts
        .iter()
        .map(|p| p["text"].as_str().map_or_else(|| p["functionResponse"]["response"].to_string(), str::to_string))
        .collect()
}

/// Google's checks on a request body.
fn validate(body: &Value) -> Result<&[Value], String> {
    let fields = body.as_object().ok_or("Invalid JSON payload received.")?;
    if let Some(extra) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("Invalid JSON payload received. Unknown name \"{extra}\": Cannot find field."));
    }
    let contents = body["contents"].as_array().filter(|c| !c.is_empty()).ok_or("contents is not specified")?;
    for (i, content) in contents.iter().enumerate() {
        if !matches!(content["role"].as_str(), Some("user" | "model")) {
            return Err(format!("Please use a valid role: user, model. (contents[{i}])"));
        }
        if content["parts"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!("contents[{i}].parts must not be empty"));
        }
    }
    Ok(contents)
}

pub(crate) fn generate(
    state: &State,
    call: &Call,
    request: &Request,
    host: Host,
    stream: bool,
    out: &mut Responder,
) -> io::Result<()> {
    if let Some(status) = call.behaviour.status.filter(|&s| s != 200) {
        let retry_after = call.behaviour.retry_after.or((status == 429).then_some(1)).map(|s| s.to_string());
        let headers: Vec<(&str, &str)> = retry_after.as_deref().map(|s| ("retry-after", s)).into_iter().collect();
        return out.json(status, &headers, &fault(call, status));
    }
    match host {
        Host::GeminiApi if request.header("x-goog-api-key").is_none_or(str::is_empty) => {
            let message = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.";
            return out.json(403, &[], &error(403, "PERMISSION_DENIED", message));
        }
        Host::Vertex if !gcp::authorized(state, request) => return out.json(401, &[], &gcp::unauthenticated()),
        _ => {}
    }
    if stream && request.query("alt").as_deref() != Some("sse") {
        return out.json(400, &[], &error(400, "INVALID_ARGUMENT", "mock-provider streams only with alt=sse"));
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let contents = match validate(&body) {
        Ok(contents) => contents,
        Err(message) => return out.json(400, &[], &error(400, "INVALID_ARGUMENT", &message)),
    };
    let model = request.path().rsplit("/models/").next().and_then(|m| m.split(':').next()).unwrap_or("unknown");
    let b = &call.behaviour;
    let last_user = contents.iter().rev().find(|c| c["role"] == "user").map(text_of).unwrap_or_default();
    let reply = answer::reply(b, &call.tag, &last_user);
    let offers_tools = body["tools"]
        .as_array()
        .is_some_and(|tools| tools.iter().any(|t| t["functionDeclarations"].as_array().is_some_and(|d| !d.is_empty())));
    let tool = b.tool_call.as_deref().filter(|_| offers_tools);
    let arguments = b.tool_args.as_deref().unwrap_or("{}");
    let Ok(args) = serde_json::from_str::<Value>(arguments) else {
        let message = format!("mock-provider: tool_args is not JSON: {arguments}");
        return out.json(400, &[], &error(400, "INVALID_ARGUMENT", &message));
    };
    let prompt_chars = text_of(&body["systemInstruction"]).chars().count()
        + contents.iter().map(|c| text_of(c).chars().count()).sum::<usize>();
    let generated = if tool.is_some() { arguments } else { reply.as_str() };
    let answer = Answer {
        response_id: format!("mock-{}", call.seq),
        model,
        tool,
        args,
        signature: format!("bW9jay1zaWduYXR1cmUt{:04}", call.seq % 10_000),
        generated,
        usage: Usage::new(b, prompt_chars, generated, 1),
    };
    if stream {
        stream_answer(call, &answer, out)
    } else {
        out.json(200, &[], &answer.response(answer.parts(None), true))
    }
}

struct Answer<'a> {
    response_id: String,
    model: &'a str,
    /// The function to call instead of answering in text.
    tool: Option<&'a str>,
    args: Value,
    /// The function call's thought signature, as Gemini 3 models attach one.
    signature: String,
    /// The reply text, or the function call's arguments as JSON text.
    generated: &'a str,
    usage: Usage,
}

impl Answer<'_> {
    /// The parts of the whole answer, or of one streamed piece of text.
    fn parts(&self, piece: Option<&str>) -> Value {
        match (self.tool, piece) {
            (Some(name), _) => {
                json!([{"functionCall": {"name": name, "args": self.args}, "thoughtSignature": self.signature}])
            }
            (None, Some(piece)) => json!([{ "text": piece }]),
            (None, None) => json!([{ "text": self.generated }]),
        }
    }

    fn usage(&self, completion: u64) -> Value {
        let u = &self.usage;
        let mut usage = json!({"promptTokenCount": u.prompt, "candidatesTokenCount": completion,
            "totalTokenCount": u.prompt + completion});
        if u.cached > 0 {
            usage["cachedContentTokenCount"] = u.cached.into();
        }
        usage
    }

    fn response(&self, parts: Value, last: bool) -> Value {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if last {
            candidate["finishReason"] = "STOP".into();
        }
        let completion = if last { self.usage.completion } else { 0 };
        json!({"candidates": [candidate], "usageMetadata": self.usage(completion),
            "modelVersion": self.model, "responseId": self.response_id})
    }
}

fn send(out: &mut Responder, event: &Value) -> io::Result<()> {
    out.chunk(format!("data: {event}\r\n\r\n").as_bytes())
}

fn stream_answer(call: &Call, answer: &Answer, out: &mut Responder) -> io::Result<()> {
    let b = &call.behaviour;
    let delay = Duration::from_millis(b.chunk_delay_ms.unwrap_or(call.default_chunk_delay_ms));
    out.start_stream(200, &[("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])?;
    if b.cut_after == Some(0) && b.error_code.is_none() {
        return out.cut();
    }
    // A function call arrives whole, in the last event.
    let pieces = if answer.tool.is_some() { Vec::new() } else { answer::pieces(answer.generated, b.chunks) };
    for (sent, piece) in pieces.iter().enumerate() {
        if b.cut_after == Some(sent) {
            break;
        }
        sleep(delay);
        send(out, &answer.response(answer.parts(Some(piece)), false))?;
    }
    if b.cut_after.is_some() {
        return match b.error_code.as_deref() {
            Some(status) => {
                send(out, &error(503, status, "Mock stream error"))?;
                out.end_stream()
            }
            None => out.cut(),
        };
    }
    sleep(delay);
    let last = if answer.tool.is_some() { answer.parts(None) } else { json!([{ "text": "" }]) };
    send(out, &answer.response(last, true))?;
    out.end_stream()
}

//! The AWS Bedrock Converse wire format, after the Amazon Bedrock API reference
//! ("Converse", "ConverseStream", "ConverseStreamOutput", "TokenUsage"): `POST
//! .../model/{modelId}/converse` answers `{output: {message}, stopReason, usage,
//! metrics}`, with `inputTokens` leaving out the cache reads that `cacheReadInputTokens`
//! counts; `.../converse-stream` answers `application/vnd.amazon.eventstream` frames
//! (`messageStart`, `contentBlockStart` for a tool use, `contentBlockDelta`,
//! `contentBlockStop`, `messageStop`, then `metadata` with the usage), each payload padded
//! with a `p` field as Bedrock pads them. Errors are `{"message"}` with the type in
//! `x-amzn-ErrorType`; a failure mid-stream is an exception frame.
//!
//! Requests are validated as Bedrock does: no unknown top-level fields (the model is in
//! the path, never the body), turns that start with `user` and alternate, no blank text,
//! `toolConfig` whenever the history carries `toolUse`/`toolResult` blocks. Auth is a
//! Bedrock API key (`Authorization: Bearer`) or a SigV4 `Authorization` of the right
//! shape for service `bedrock` with its `x-amz-date`; the signature itself is checked by
//! the end-to-end tests, which know the secret.
//!
//! Claude models' InvokeModel (`.../model/{modelId}/invoke` and
//! `/invoke-with-response-stream`, "Anthropic Claude Messages API") is answered by
//! [`crate::anthropic`] with this module's auth, faults and framing (the body carries
//! `anthropic_version` and may carry `anthropic_beta`, never `model`, `stream` or
//! `metadata`, which Bedrock refuses): the stream's events
//! travel base64-encoded in `chunk` frames, the last with Bedrock's invocation metrics.
//!
//! Faults are the shared [`Behaviour`](crate::Behaviour)s. `error_code` names the error
//! type of a scripted status (`context_length_exceeded` gives Bedrock's "Input is too
//! long" 400); with `cut_after`, it names the exception frame (e.g. `throttlingException`)
//! that ends the stream after that many content events.

use std::io;
use std::thread::sleep;
use std::time::Duration;

use serde_json::{json, Value};

use crate::answer::{self, Usage};
use crate::http::{Request, Responder};
use crate::Call;

/// The top-level fields of a Converse request; Bedrock refuses any other.
const FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
];

/// A Bedrock error: status, type (for `x-amzn-ErrorType`) and message.
struct Fault {
    status: u16,
    kind: String,
    message: String,
}

impl Fault {
    fn new(status: u16, kind: &str, message: impl Into<String>) -> Fault {
        Fault { status, kind: kind.to_string(), message: message.into() }
    }

    fn validation(message: impl Into<String>) -> Fault {
        Fault::new(400, "ValidationException", message)
    }

    fn send(&self, out: &mut Responder, request_id: &str, retry_after: Option<u64>) -> io::Result<()> {
        let error_type = format!("{}:http://internal.amazon.com/coral/com.amazon.bedrock/", self.kind);
        let retry_after = retry_after.map(|s| s.to_string());
        let mut headers = vec![("x-amzn-ErrorType", error_type.as_str()), ("x-amzn-RequestId", request_id)];
        headers.extend(retry_after.as_deref().map(|s| ("Retry-After", s)));
        out.json(self.status, &headers, &json!({"message": self.message}))
    }
}

/// The error Bedrock sends for the scripted `status`.
fn scripted(call: &Call, status: u16) -> Fault {
    let code = call.behaviour.error_code.as_deref();
    if status == 400 && code == Some("context_length_exceeded") {
        return Fault::validation("Input is too long for requested model.");
    }
    let (kind, message) = match status {
        403 => ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
        404 => {
            ("ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier.")
        }
        408 => ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
        424 => ("ModelErrorException", "Received error from the model."),
        429 => ("ThrottlingException", "Too many requests, please wait before trying again."),
        503 => ("ServiceUnavailableException", "Bedrock is unable to process your request."),
        500.. => ("InternalServerException", "The server encountered an internal error while processing the request."),
        _ => ("ValidationException", "Mock validation error."),
    };
    Fault::new(status, code.unwrap_or(kind), message)
}

/// A Bedrock API key, or a SigV4 `Authorization` whose credential scope names service
/// `bedrock` on the day of its `x-amz-date`, signing `host` and `x-amz-date` (and the
/// session token when one is sent).
fn check_auth(request: &Request) -> Result<(), Fault> {
    let denied = |why: &str| Fault::new(403, "InvalidSignatureException", format!("mock-provider: {why}"));
    let Some(authorization) = request.header("authorization") else {
        return Err(Fault::new(403, "MissingAuthenticationTokenException", "Missing Authentication Token"));
    };
    // Header values arrive trimmed: an empty token leaves a bare `Bearer`.
    if authorization == "Bearer" {
        return Err(denied("empty bearer token"));
    }
    if authorization.starts_with("Bearer ") {
        return Ok(());
    }
    let Some(fields) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(denied("Authorization is neither `Bearer` nor `AWS4-HMAC-SHA256`"));
    };
    let field = |name: &str| fields.split(", ").find_map(|f| f.strip_prefix(name)?.strip_prefix('='));
    let (Some(credential), Some(signed), Some(signature)) =
        (field("Credential"), field("SignedHeaders"), field("Signature"))
    else {
        return Err(denied("Authorization lacks Credential, SignedHeaders or Signature"));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(denied("Credential is not key/date/region/service/aws4_request"));
    };
    let amz_date = request.header("x-amz-date").unwrap_or_default();
    let signed: Vec<&str> = signed.split(';').collect();
    let checks = [
        (!key_id.is_empty() && !region.is_empty(), "Credential lacks a key id or region"),
        (service == "bedrock", "the credential scope's service is not `bedrock`"),
        (terminator == "aws4_request", "the credential scope does not end with aws4_request"),
        (date.len() == 8 && amz_date.starts_with(date), "x-amz-date is missing or not the credential's date"),
        (signed.contains(&"host") && signed.contains(&"x-amz-date"), "host and x-amz-date are not signed"),
        (
            request.header("x-amz-security-token").is_none() || signed.contains(&"x-amz-security-token"),
            "x-amz-security-token is sent but not signed",
        ),
        (
            signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "Signature is not 64 lowercase hex digits",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, why)) => Err(denied(why)),
        None => Ok(()),
    }
}

/// The text of a list of content blocks, tool results included.
fn text_of(blocks: &Value) -> String {
    let Some(blocks) = blocks.as_array() else {
        return String::new();
    };
    blocks
        .iter()
        .map(|b| b["text"].as_str().map_or_else(|| text_of(&b["toolResult"]["content"]), str::to_string))
        .collect()
}

/// Bedrock's checks on a request body, with its wordings.
fn validate(body: &Value) -> Result<&[Value], String> {
    let fields = body.as_object().ok_or("Malformed input request: the body is not a JSON object.")?;
    if let Some(extra) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "Malformed input request: extraneous key [{extra}] is not permitted, please reformat your input and try again."
        ));
    }
    let messages = body["messages"].as_array().filter(|m| !m.is_empty()).ok_or(
        "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
    )?;
    let mut previous = "assistant";
    let mut tool_blocks = false;
    for (i, message) in messages.iter().enumerate() {
        match message["role"].as_str() {
            Some(role @ ("user" | "assistant")) if role == previous => {
                return Err(if i == 0 {
                    "A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_string()
                } else {
                    "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".to_string()
                });
            }
            Some(role @ ("user" | "assistant")) => previous = role,
            _ => return Err(format!("messages.{i}.role: must be one of user, assistant")),
        }
        let content = message["content"].as_array().filter(|c| !c.is_empty());
        let content = content.ok_or_else(|| format!("The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."))?;
        for (j, block) in content.iter().enumerate() {
            if block["text"].as_str().is_some_and(|t| t.trim().is_empty()) {
                return Err(format!(
                    "The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."
                ));
            }
            tool_blocks |= block.get("toolUse").is_some() || block.get("toolResult").is_some();
        }
    }
    if tool_blocks && body.get("toolConfig").is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
    }
    if body["inferenceConfig"]["temperature"].as_f64().is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err("1 validation error detected: Value at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1".into());
    }
    Ok(messages)
}

/// InvokeModel for a Claude model: Bedrock's auth and faults, then Anthropic's format.
pub(crate) fn invoke(call: &Call, request: &Request, model: &str, stream: bool, out: &mut Responder) -> io::Result<()> {
    if let Some(sent) = refuse(call, request, &request_id(call), out) {
        return sent;
    }
    crate::anthropic::messages(call, request, crate::anthropic::Host::Bedrock { model, stream }, out)
}

/// CountTokens (`{base}/model/{modelId}/count-tokens`): the InvokeModel body, base64 in
/// `input.invokeModel.body`, checked as InvokeModel would; `{"inputTokens": n}`. Like
/// Bedrock, it refuses an inference profile's id: only foundation models count.
pub(crate) fn count_tokens(call: &Call, request: &Request, model: &str, out: &mut Responder) -> io::Result<()> {
    let id = request_id(call);
    if let Some(sent) = refuse(call, request, &id, out) {
        return sent;
    }
    if ["global.", "us.", "us-gov.", "eu.", "apac.", "jp.", "au."].iter().any(|p| model.starts_with(p)) {
        return Fault::validation("The provided model doesn't support counting tokens.").send(out, &id, None);
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let invoke = body["input"]["invokeModel"]["body"]
        .as_str()
        .and_then(crate::base64::decode_padded)
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(invoke) = invoke else {
        return Fault::validation("input.invokeModel.body: a base64-encoded JSON body is required.")
            .send(out, &id, None);
    };
    let host = crate::anthropic::Host::Bedrock { model, stream: false };
    if let Err(problem) = crate::anthropic::validate(&invoke, &host) {
        return Fault::validation(problem).send(out, &id, None);
    }
    out.json(
        200,
        &[("x-amzn-RequestId", id.as_str())],
        &json!({"inputTokens": crate::anthropic::prompt_tokens(call, &invoke)}),
    )
}

/// The InvokeModel body a CountTokens request carries, decoded.
pub(crate) fn counted_payload(path: &str, body: &str) -> Option<String> {
    if !(path.contains("/model/") && path.ends_with("/count-tokens")) {
        return None;
    }
    let body: Value = serde_json::from_str(body).ok()?;
    let bytes = crate::base64::decode_padded(body["input"]["invokeModel"]["body"].as_str()?)?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn request_id(call: &Call) -> String {
    format!("00000000-0000-4000-8000-{:012}", call.seq)
}

/// Sends the scripted fault, or the refusal of a request without valid auth, if any.
fn refuse(call: &Call, request: &Request, request_id: &str, out: &mut Responder) -> Option<io::Result<()>> {
    let b = &call.behaviour;
    if let Some(status) = b.status.filter(|&s| s != 200) {
        return Some(scripted(call, status).send(out, request_id, b.retry_after.or((status == 429).then_some(1))));
    }
    check_auth(request).err().map(|fault| fault.send(out, request_id, None))
}

pub(crate) fn converse(call: &Call, request: &Request, stream: bool, out: &mut Responder) -> io::Result<()> {
    let request_id = request_id(call);
    if let Some(sent) = refuse(call, request, &request_id, out) {
        return sent;
    }
    let b = &call.behaviour;
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let messages = match validate(&body) {
        Ok(messages) => messages,
        Err(message) => return Fault::validation(message).send(out, &request_id, None),
    };

    let last_user = messages.iter().rev().find(|m| m["role"] == "user");
    let reply = answer::reply(b, &call.tag, &last_user.map(|m| text_of(&m["content"])).unwrap_or_default());
    let offers_tools = body["toolConfig"]["tools"].as_array().is_some_and(|tools| !tools.is_empty());
    let tool = b.tool_call.as_deref().filter(|_| offers_tools);
    let arguments = b.tool_args.as_deref().unwrap_or("{}");
    let Ok(input) = serde_json::from_str::<Value>(arguments) else {
        let fault = Fault::validation(format!("mock-provider: tool_args is not JSON: {arguments}"));
        return fault.send(out, &request_id, None);
    };
    let prompt_chars = text_of(&body["system"]).chars().count()
        + messages.iter().map(|m| text_of(&m["content"]).chars().count()).sum::<usize>();
    let generated = if tool.is_some() { arguments } else { reply.as_str() };
    let answer = Answer {
        tool_id: format!("tooluse_mock_{}", call.seq),
        tool,
        input,
        generated,
        usage: Usage::new(b, prompt_chars, generated, 1),
    };
    if stream {
        send_stream(call, &answer, &request_id, out)
    } else {
        out.json(200, &[("x-amzn-RequestId", request_id.as_str())], &answer.output())
    }
}

struct Answer<'a> {
    tool_id: String,
    /// The tool to call instead of answering in text.
    tool: Option<&'a str>,
    /// The tool call's input, parsed.
    input: Value,
    /// The reply text, or the tool call's input as JSON text.
    generated: &'a str,
    usage: Usage,
}

impl Answer<'_> {
    /// Bedrock's `inputTokens` leaves out the tokens read from the cache; the cache
    /// fields appear only when the cache was used.
    fn usage(&self) -> Value {
        let u = &self.usage;
        let mut usage = json!({
            "inputTokens": u.prompt.saturating_sub(u.cached),
            "outputTokens": u.completion,
            "totalTokens": u.prompt + u.completion,
        });
        if u.cached > 0 {
            usage["cacheReadInputTokens"] = u.cached.into();
            usage["cacheWriteInputTokens"] = 0.into();
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

    fn output(&self) -> Value {
        let block = match self.tool {
            Some(name) => json!({"toolUse": {"toolUseId": self.tool_id, "name": name, "input": self.input}}),
            None => json!({"text": self.generated}),
        };
        json!({
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": self.stop_reason(),
            "usage": self.usage(),
            "metrics": {"latencyMs": 1},
        })
    }

    fn delta(&self, piece: &str) -> Value {
        match self.tool {
            Some(_) => json!({"toolUse": {"input": piece}}),
            None => json!({"text": piece}),
        }
    }
}

/// Writes the events of one ConverseStream answer.
struct Events<'a> {
    out: &'a mut Responder,
    sent: usize,
}

impl Events<'_> {
    /// Bedrock pads each payload to a varying length so that sizes do not reveal tokens.
    fn event(&mut self, kind: &str, mut payload: Value) -> io::Result<()> {
        const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        self.sent += 1;
        payload["p"] = PADDING[..1 + self.sent * 7 % PADDING.len()].into();
        let headers = [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")];
        self.out.chunk(&crate::eventstream::frame(&headers, payload.to_string().as_bytes()))
    }

    fn exception(&mut self, code: &str, message: &str) -> io::Result<()> {
        self.out.chunk(&crate::eventstream::exception_frame(code, message))
    }
}

fn send_stream(call: &Call, answer: &Answer, request_id: &str, out: &mut Responder) -> io::Result<()> {
    let b = &call.behaviour;
    let delay = Duration::from_millis(b.chunk_delay_ms.unwrap_or(call.default_chunk_delay_ms));
    let headers = [("Content-Type", "application/vnd.amazon.eventstream"), ("x-amzn-RequestId", request_id)];
    out.start_stream(200, &headers)?;
    if b.cut_after == Some(0) && b.error_code.is_none() {
        return out.cut();
    }
    let mut events = Events { out, sent: 0 };
    events.event("messageStart", json!({"role": "assistant"}))?;
    if let Some(name) = answer.tool {
        let start = json!({"toolUse": {"toolUseId": answer.tool_id, "name": name}});
        events.event("contentBlockStart", json!({"contentBlockIndex": 0, "start": start}))?;
    }
    for (sent, piece) in answer::pieces(answer.generated, b.chunks).iter().enumerate() {
        if b.cut_after == Some(sent) {
            break;
        }
        sleep(delay);
        events.event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": answer.delta(piece)}))?;
    }
    if b.cut_after.is_some() {
        return match b.error_code.as_deref() {
            Some(code) => {
                events.exception(code, "Mock stream error")?;
                events.out.end_stream()
            }
            None => events.out.cut(),
        };
    }
    sleep(delay);
    events.event("contentBlockStop", json!({"contentBlockIndex": 0}))?;
    events.event("messageStop", json!({"stopReason": answer.stop_reason()}))?;
    events.event("metadata", json!({"usage": answer.usage(), "metrics": {"latencyMs": 1}}))?;
    events.out.end_stream()
}

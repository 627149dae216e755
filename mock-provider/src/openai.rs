//! The OpenAI Chat Completions wire format, after OpenAI's published API reference
//! (platform.openai.com/docs/api-reference/chat): the `chat.completion` object, the
//! `chat.completion.chunk` stream with its role / content / tool-call deltas,
//! `stream_options.include_usage`, and the `{"error": {message, type, param, code}}`
//! error object. Azure OpenAI and Mistral speak the same format with differences of
//! their own ([`Flavour`]), so they are served here too.

use std::io;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::answer::{self, Usage};
use crate::http::{Request, Responder};
use crate::Call;

/// Upper bound on `n`, as OpenAI enforces.
const MAX_CHOICES: u64 = 128;

/// The top-level fields of a Mistral chat request (docs.mistral.ai/api); Mistral answers
/// any other with a 422.
const MISTRAL_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "metadata",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "prompt_mode",
    "safe_prompt",
];

/// Which provider's variant of the format answers a request.
pub(crate) enum Flavour<'a> {
    OpenAi,
    /// Azure OpenAI: the key in `api-key`; the deployments API (`deployment` set) names the
    /// model in its path and needs `?api-version=`; streams open with a chunk of the
    /// prompt's content-filter results and no choices.
    Azure {
        deployment: Option<&'a str>,
    },
    /// Mistral: a strict schema (an unknown field is a 422 `extra_forbidden`, as
    /// `stream_options` is), and the usage always in the chunk that finishes a stream.
    Mistral,
}

/// Azure's answer to a missing or wrong `api-key`.
fn azure_denied() -> Value {
    json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}})
}

/// Mistral's validation error for fields outside its schema.
fn mistral_extra_forbidden(fields: &[&String]) -> Value {
    let detail: Vec<Value> = fields
        .iter()
        .map(|f| json!({"type": "extra_forbidden", "loc": ["body", f], "msg": "Extra inputs are not permitted"}))
        .collect();
    json!({"object": "error", "message": {"detail": detail}, "type": "invalid_request_error", "param": null, "code": null})
}

pub(crate) fn error_body(message: &str, kind: Option<&str>, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

fn invalid_request(message: &str, param: Option<&str>, code: Option<&str>) -> Value {
    error_body(message, Some("invalid_request_error"), param, code)
}

/// OpenAI's answer to an unknown path or method.
pub(crate) fn not_found(request: &Request, out: &mut Responder) -> io::Result<()> {
    let message = format!("Invalid URL ({} {})", request.method, request.path());
    out.json(404, &[], &invalid_request(&message, None, None))
}

pub(crate) fn models(out: &mut Responder) -> io::Result<()> {
    let model = |id: &str| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock-provider"});
    let data = ["gpt-4o", "gpt-4o-mini", "mock-model"].map(model);
    out.json(200, &[], &json!({"object": "list", "data": data}))
}

/// The error a real provider would send for the scripted `status`.
fn fault(call: &Call, status: u16, model: &str) -> (Value, Option<u64>) {
    let b = &call.behaviour;
    let code = b.error_code.as_deref();
    let body = match (status, code) {
        (400, Some("context_length_exceeded")) => invalid_request(
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens. Please reduce the length of the messages.",
            Some("messages"),
            code,
        ),
        // Azure OpenAI's content-filter refusal, the only provider that sends one as a 400.
        (400, Some("content_filter")) => json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": {"filtered": true, "severity": "high"}}}}}),
        (401, _) => invalid_request(
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            None,
            code.or(Some("invalid_api_key")),
        ),
        (429, _) => error_body(
            &format!(
                "Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in {}s.",
                b.retry_after.unwrap_or(1)
            ),
            Some("requests"),
            None,
            code.or(Some("rate_limit_exceeded")),
        ),
        // Anthropic's overload answer: gateways see it whatever format they asked for.
        (529, _) => json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        (500, _) => error_body(
            "The server had an error while processing your request. Sorry about that!",
            Some("server_error"),
            None,
            code,
        ),
        (503, _) => error_body(
            "The server is overloaded or not ready yet.",
            Some("server_error"),
            None,
            code,
        ),
        (500.., _) => error_body(&format!("Mock upstream error {status}"), Some("server_error"), None, code),
        _ => invalid_request(&format!("Mock error {status}"), None, code),
    };
    let retry_after = b.retry_after.or((status == 429).then_some(1));
    (body, retry_after)
}

/// Text of a message's `content`, whether a string or an array of content parts.
fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

pub(crate) fn chat(call: &Call, request: &Request, flavour: Flavour, out: &mut Responder) -> io::Result<()> {
    let request_id = format!("req_mock_{}", call.seq);
    let id_header = [("x-request-id", request_id.as_str())];
    let body: Option<Value> = serde_json::from_slice(&request.body).ok().filter(Value::is_object);
    let model = body.as_ref().and_then(|b| b["model"].as_str()).unwrap_or("unknown");

    if let Some(status) = call.behaviour.status.filter(|&s| s != 200) {
        let (error, retry_after) = fault(call, status, model);
        let retry_after = retry_after.map(|s| s.to_string());
        let mut headers = id_header.to_vec();
        headers.extend(retry_after.as_deref().map(|s| ("Retry-After", s)));
        return out.json(status, &headers, &error);
    }

    match flavour {
        Flavour::Azure { .. } if request.header("api-key").is_none_or(str::is_empty) => {
            return out.json(401, &id_header, &azure_denied());
        }
        Flavour::Azure { deployment: Some(_) } if request.query("api-version").is_none() => {
            let error = json!({"error": {"code": "404", "message": "Resource not found"}});
            return out.json(404, &id_header, &error);
        }
        Flavour::Mistral if !request.header("authorization").is_some_and(|a| a.starts_with("Bearer ")) => {
            return out.json(401, &id_header, &json!({"message": "Unauthorized", "request_id": request_id}));
        }
        _ => {}
    }
    if let (Flavour::Mistral, Some(fields)) = (&flavour, body.as_ref().and_then(Value::as_object)) {
        let extra: Vec<&String> = fields.keys().filter(|k| !MISTRAL_FIELDS.contains(&k.as_str())).collect();
        if !extra.is_empty() {
            return out.json(422, &id_header, &mistral_extra_forbidden(&extra));
        }
    }
    let Some(body) = body else {
        let message = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)";
        return out.json(400, &id_header, &invalid_request(message, None, None));
    };
    let path_model = match flavour {
        Flavour::Azure { deployment } => deployment,
        _ => None,
    };
    let Some(model) = path_model.or(body["model"].as_str()) else {
        let error = invalid_request("you must provide a model parameter", None, None);
        return out.json(400, &id_header, &error);
    };
    let Some(messages) = body["messages"].as_array() else {
        let error = invalid_request(
            "Missing required parameter: 'messages'.",
            Some("messages"),
            Some("missing_required_parameter"),
        );
        return out.json(400, &id_header, &error);
    };
    if messages.is_empty() {
        let error = invalid_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        );
        return out.json(400, &id_header, &error);
    }

    let b = &call.behaviour;
    let last_user = messages.iter().rev().find(|m| m["role"] == "user");
    let reply = answer::reply(b, &call.tag, &last_user.map(content_text).unwrap_or_default());
    let offers_tools = body["tools"].as_array().is_some_and(|tools| !tools.is_empty());
    let tool = b.tool_call.as_deref().filter(|_| offers_tools);
    let arguments = b.tool_args.as_deref().unwrap_or("{}");
    let n = body["n"].as_u64().unwrap_or(1).clamp(1, MAX_CHOICES) as usize;
    let prompt_chars = messages.iter().map(|m| content_text(m).chars().count()).sum();
    let generated = if tool.is_some() { arguments } else { reply.as_str() };
    let answer = Answer {
        id: format!("chatcmpl-mock-{}", call.seq),
        call_id: format!("call_mock_{}", call.seq),
        created: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        model,
        n,
        tool,
        generated,
        usage: Usage::new(b, prompt_chars, generated, n),
    };
    if body["stream"] == true {
        let include_usage = body["stream_options"]["include_usage"] == true;
        stream(call, &answer, &flavour, include_usage, &id_header, out)
    } else {
        out.json(200, &id_header, &answer.completion())
    }
}

struct Answer<'a> {
    id: String,
    call_id: String,
    created: u64,
    model: &'a str,
    n: usize,
    /// The function to call instead of answering in text.
    tool: Option<&'a str>,
    /// The reply text, or the tool call's arguments.
    generated: &'a str,
    usage: Usage,
}

impl Answer<'_> {
    fn usage(&self) -> Value {
        let u = &self.usage;
        json!({
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.prompt + u.completion,
            "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        })
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    fn completion(&self) -> Value {
        let message = match self.tool {
            Some(name) => {
                json!({"role": "assistant", "content": null, "refusal": null, "annotations": [],
                "tool_calls": [{"id": self.call_id, "type": "function",
                    "function": {"name": name, "arguments": self.generated}}]})
            }
            None => {
                json!({"role": "assistant", "content": self.generated, "refusal": null, "annotations": []})
            }
        };
        let choice = |index| json!({"index": index, "message": message, "logprobs": null, "finish_reason": self.finish_reason()});
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": (0..self.n).map(choice).collect::<Vec<_>>(),
            "usage": self.usage(),
            "system_fingerprint": "fp_mock",
        })
    }

    fn chunk(&self, choices: Value, include_usage: bool) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// One chunk per choice carrying `delta`, as OpenAI streams `n` > 1.
    fn deltas(&self, delta: &Value, finish_reason: Option<&str>, include_usage: bool) -> Vec<Value> {
        (0..self.n)
            .map(|index| {
                let choice = json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish_reason});
                self.chunk(json!([choice]), include_usage)
            })
            .collect()
    }
}

fn send(out: &mut Responder, event: &Value) -> io::Result<()> {
    out.chunk(format!("data: {event}\n\n").as_bytes())
}

fn stream(
    call: &Call,
    answer: &Answer,
    flavour: &Flavour,
    include_usage: bool,
    headers: &[(&str, &str)],
    out: &mut Responder,
) -> io::Result<()> {
    let b = &call.behaviour;
    let delay = Duration::from_millis(b.chunk_delay_ms.unwrap_or(call.default_chunk_delay_ms));
    let mut all_headers = vec![("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")];
    all_headers.extend_from_slice(headers);
    out.start_stream(200, &all_headers)?;
    if b.cut_after == Some(0) {
        return out.cut();
    }
    if let Flavour::Azure { .. } = flavour {
        let filters = json!({"hate": {"filtered": false, "severity": "safe"}, "violence": {"filtered": false, "severity": "safe"}});
        let prompt = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}]});
        send(out, &prompt)?;
    }

    let first = match answer.tool {
        Some(name) => json!({"role": "assistant", "content": null, "refusal": null,
            "tool_calls": [{"index": 0, "id": answer.call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
        None => json!({"role": "assistant", "content": "", "refusal": null}),
    };
    for event in answer.deltas(&first, None, include_usage) {
        send(out, &event)?;
    }
    let pieces = answer::pieces(answer.generated, b.chunks);
    for (sent, piece) in pieces.iter().enumerate() {
        if b.cut_after == Some(sent) {
            break;
        }
        sleep(delay);
        let delta = match answer.tool {
            Some(_) => json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None => json!({"content": piece}),
        };
        for event in answer.deltas(&delta, None, include_usage) {
            send(out, &event)?;
        }
    }
    if b.cut_after.is_some() {
        return out.cut();
    }

    sleep(delay);
    for mut event in answer.deltas(&json!({}), Some(answer.finish_reason()), include_usage) {
        if let Flavour::Mistral = flavour {
            event["usage"] = answer.usage();
        }
        send(out, &event)?;
    }
    if include_usage {
        let mut last = answer.chunk(json!([]), true);
        last["usage"] = answer.usage();
        send(out, &last)?;
    }
    out.chunk(b"data: [DONE]\n\n")?;
    out.end_stream()
}

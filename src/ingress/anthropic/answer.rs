//! The answer: an OpenAI `chat.completion` → an Anthropic message ("Messages"). OpenAI's
//! `stop` becomes `end_turn` even when a stop sequence ended the answer (OpenAI does not say
//! which), and cache writes count as other input tokens (OpenAI's usage has no field for them).

use crate::model::chat::ChatRequest;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::wire::openai::usage_of;
use serde_json::{json, Map, Value};

/// Usage in Anthropic's terms: OpenAI's prompt tokens include the cached ones; Anthropic's
/// input tokens do not.
pub(super) fn anthropic_usage(u: Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens.saturating_sub(u.cached_input_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_input_tokens,
        "output_tokens": u.output_tokens,
    })
}

/// The parts of an OpenAI `chat.completion` the translation reads. The answer is walked
/// as a `Value` (a non-streamed answer is parsed once, so typed structs would only add a
/// deserializer each) and checked as a typed parse would check it: `choices` and every
/// choice's `message` present, tool calls with `id` and `function.name`, and every field
/// read of its type (or null where it is optional).
struct Completion<'a> {
    id: &'a str,
    choice: Option<(&'a Value, Option<&'a str>)>,
    usage: Option<Usage>,
}

struct ReplyToolCall<'a> {
    id: &'a str,
    name: &'a str,
    arguments: &'a str,
}

/// Absent or null: `Some(None)`; a string: `Some(Some(..))`; anything else: `None`.
fn optional_str<'a>(o: &'a Map<String, Value>, key: &str) -> Option<Option<&'a str>> {
    match o.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_str().map(Some),
    }
}

/// Absent: `""`; otherwise it must be a string.
fn defaulted_str<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).map_or(Some(""), Value::as_str)
}

fn tool_calls(reply: &Map<String, Value>) -> Option<Vec<ReplyToolCall<'_>>> {
    let calls = match reply.get("tool_calls") {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(calls) => calls.as_array()?,
    };
    calls
        .iter()
        .map(|call| {
            let call = call.as_object()?;
            let function = call.get("function")?.as_object()?;
            Some(ReplyToolCall {
                id: call.get("id")?.as_str()?,
                name: function.get("name")?.as_str()?,
                arguments: defaulted_str(function, "arguments")?,
            })
        })
        .collect()
}

fn completion(v: &Value) -> Option<Completion<'_>> {
    let c = v.as_object()?;
    let id = defaulted_str(c, "id")?;
    let mut choice = None;
    for ch in c.get("choices")?.as_array()? {
        let ch = ch.as_object()?;
        let message = ch.get("message")?;
        let reply = message.as_object()?;
        optional_str(reply, "refusal")?;
        tool_calls(reply)?;
        let finish_reason = optional_str(ch, "finish_reason")?;
        choice = choice.or(Some((message, finish_reason)));
    }
    let usage = match c.get("usage") {
        None | Some(Value::Null) => None,
        Some(u) => Some(usage_of(u)?),
    };
    Some(Completion { id, choice, usage })
}

/// Anthropic ids start with `msg_`; an answer from Anthropic keeps its own.
pub(super) fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{id}")
    }
}

pub(super) fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// `Err` when a tool call's arguments are not a JSON object: Anthropic's `input` must be
/// one, so such an answer is as unusable as a malformed one (another deployment may do
/// better).
pub fn response(req: &ChatRequest, body: &[u8]) -> Result<Vec<u8>, ErrorClass> {
    let answer: Value = serde_json::from_slice(body).map_err(|_| ErrorClass::Server)?;
    let completion = completion(&answer).ok_or(ErrorClass::Server)?;
    let (message, finish_reason) = completion.choice.ok_or(ErrorClass::Server)?;
    let reply = message.as_object().ok_or(ErrorClass::Server)?;
    let mut content = Vec::new();
    match reply.get("content").unwrap_or(&Value::Null) {
        Value::String(text) if !text.is_empty() => content.push(text_block(text)),
        Value::Array(parts) => content.extend(parts.iter().filter_map(|p| p["text"].as_str()).map(text_block)),
        _ => {}
    }
    let refusal = optional_str(reply, "refusal").flatten();
    content.extend(refusal.filter(|r| !r.is_empty()).map(text_block));
    for call in tool_calls(reply).unwrap_or_default() {
        // A function without arguments may come back as "" rather than "{}".
        let input: Value = if call.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_slice(call.arguments.as_bytes()).map_err(|_| ErrorClass::Server)?
        };
        if !input.is_object() {
            return Err(ErrorClass::Server);
        }
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
    }
    let message = json!({
        "id": message_id(completion.id),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason(finish_reason),
        "stop_sequence": null,
        "usage": anthropic_usage(completion.usage.unwrap_or_default()),
    });
    Ok(message.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::anthropic::fixtures::request;

    /// The typed parse `completion` replaced, kept as the oracle for what it accepts.
    mod typed {
        use crate::wire::openai::WireUsage;
        use serde::Deserialize;
        use serde_json::Value;

        #[derive(Deserialize)]
        pub struct Completion {
            #[serde(default)]
            pub id: String,
            pub choices: Vec<CompletionChoice>,
            #[serde(default)]
            pub usage: Option<WireUsage>,
        }
        #[derive(Deserialize)]
        pub struct CompletionChoice {
            pub message: Reply,
            #[serde(default)]
            pub finish_reason: Option<String>,
        }
        #[derive(Deserialize)]
        pub struct Reply {
            #[serde(default)]
            pub content: Value,
            #[serde(default)]
            pub refusal: Option<String>,
            #[serde(default)]
            pub tool_calls: Option<Vec<ReplyToolCall>>,
        }
        #[derive(Deserialize)]
        pub struct ReplyToolCall {
            pub id: String,
            pub function: ReplyFunction,
        }
        #[derive(Deserialize)]
        pub struct ReplyFunction {
            pub name: String,
            #[serde(default)]
            pub arguments: String,
        }
    }

    #[test]
    fn completion_accepts_what_the_typed_parse_accepts() {
        let bodies = [
            r#"{"id":"c1","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"t","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"t","function":{"name":"f"}}]}}],"usage":null}"#,
            r#"{"choices":[{"message":{"refusal":"no","tool_calls":null}},{"message":{}}]}"#,
            r#"{"choices":[]}"#,
            r#"{"id":null,"choices":[]}"#,
            r#"{"id":3,"choices":[]}"#,
            r#"{}"#,
            r#"{"choices":[{}]}"#,
            r#"{"choices":[{"message":{}},{"message":3}]}"#,
            r#"{"choices":[{"message":{},"finish_reason":7}]}"#,
            r#"{"choices":[{"message":{"refusal":1}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":{}}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"t","function":{"name":"f","arguments":null}}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"t","function":{}}]}}]}"#,
            r#"{"choices":[{"message":{}}],"usage":{"prompt_tokens":"5"}}"#,
            r#"{"choices":[{"message":{}}],"usage":{"prompt_tokens_details":{"cached_tokens":null}}}"#,
            r#"{"choices":[{"message":{"content":[{"text":"a"}]}}],"extra":true}"#,
        ];
        for body in bodies {
            let typed = serde_json::from_slice::<typed::Completion>(body.as_bytes()).ok();
            let value: Value = serde_json::from_slice(body.as_bytes()).unwrap();
            let walked = completion(&value);
            assert_eq!(walked.is_some(), typed.is_some(), "{body}");
            let (Some(t), Some(w)) = (typed, walked) else { continue };
            assert_eq!(w.id, t.id, "{body}");
            let first = t.choices.first();
            assert_eq!(w.choice.map(|c| c.1), first.map(|c| c.finish_reason.as_deref()), "{body}");
            assert_eq!(w.usage, t.usage.map(Usage::from), "{body}");
            if let (Some((message, _)), Some(c)) = (w.choice, first) {
                let reply = message.as_object().unwrap();
                assert_eq!(reply.get("content").unwrap_or(&Value::Null), &c.message.content, "{body}");
                assert_eq!(optional_str(reply, "refusal").flatten(), c.message.refusal.as_deref(), "{body}");
                let calls: Vec<_> = tool_calls(reply).unwrap().iter().map(|c| (c.id, c.name, c.arguments)).collect();
                let typed_calls: Vec<_> = c
                    .message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|c| (c.id.as_str(), c.function.name.as_str(), c.function.arguments.as_str()))
                    .collect();
                assert_eq!(calls, typed_calls, "{body}");
            }
        }
    }

    fn openai_completion(message: Value, finish_reason: &str) -> Vec<u8> {
        json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "created": 1, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129,
                "prompt_tokens_details": {"cached_tokens": 100}},
        })
        .to_string()
        .into_bytes()
    }

    fn answer(message: Value, finish_reason: &str) -> Value {
        serde_json::from_slice(&response(&request(), &openai_completion(message, finish_reason)).unwrap()).unwrap()
    }

    #[test]
    fn a_text_answer_becomes_a_message() {
        assert_eq!(
            answer(json!({"role": "assistant", "content": "Hello!", "refusal": null}), "stop"),
            json!({
                "id": "msg_chatcmpl-abc", "type": "message", "role": "assistant", "model": "fast",
                "content": [{"type": "text", "text": "Hello!"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
                    "output_tokens": 9},
            })
        );
    }

    #[test]
    fn tool_calls_become_tool_use_blocks_with_parsed_input() {
        let message = answer(
            json!({"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ]}),
            "tool_calls",
        );
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["content"],
            json!([
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
            ])
        );
        let bad = |arguments: &str| {
            let message = json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]});
            response(&request(), &openai_completion(message, "tool_calls"))
        };
        assert_eq!(bad("{\"city\": \"Par"), Err(ErrorClass::Server));
        assert_eq!(bad("[1]"), Err(ErrorClass::Server));
    }

    #[test]
    fn stop_reasons_parts_refusals_and_ids() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(answer(json!({"role": "assistant", "content": "x"}), finish)["stop_reason"], stop, "{finish}");
        }
        let parts = answer(
            json!({"role": "assistant", "content": [{"type": "text", "text": "a"},
            {"type": "text", "text": "b"}]}),
            "stop",
        );
        assert_eq!(parts["content"], json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]));
        let refusal = answer(json!({"role": "assistant", "content": null, "refusal": "I can't help."}), "stop");
        assert_eq!(refusal["content"], json!([{"type": "text", "text": "I can't help."}]));
        assert_eq!(answer(json!({"role": "assistant", "content": ""}), "stop")["content"], json!([]));
        let from_anthropic = br#"{"id":"msg_01X","choices":[{"message":{"content":"x"},"finish_reason":"stop"}]}"#;
        let v: Value = serde_json::from_slice(&response(&request(), from_anthropic).unwrap()).unwrap();
        assert_eq!(v["id"], "msg_01X");
        assert_eq!(v["usage"]["input_tokens"], 0, "no usage reported counts nothing");
        assert_eq!(response(&request(), b"{\"choices\":[]}"), Err(ErrorClass::Server));
        assert_eq!(response(&request(), b"garbage"), Err(ErrorClass::Server));
    }
}

//! Answer: `GenerateContentResponse` → OpenAI `chat.completion`.
//!
//! Per the Gemini API reference: `candidates[]` with `content.parts`, `finishReason`
//! ("FinishReason": STOP, MAX_TOKENS, SAFETY, RECITATION, LANGUAGE, OTHER, BLOCKLIST,
//! PROHIBITED_CONTENT, SPII, MALFORMED_FUNCTION_CALL, IMAGE_SAFETY, …),
//! `promptFeedback.blockReason` when the prompt itself was refused, and `usageMetadata`
//! ("UsageMetadata": `promptTokenCount` includes `cachedContentTokenCount`;
//! `candidatesTokenCount` leaves out `thoughtsTokenCount`, billed as output too).

use super::call_id::tool_call_id;
use crate::model::chat::ChatRequest;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use crate::providers::canonical::{self, Identity};
use crate::util::hash::sha256_hex;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireResponse {
    #[serde(default)]
    pub(super) candidates: Vec<WireCandidate>,
    #[serde(default)]
    pub(super) prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub(super) usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    /// An error reported inside a stream.
    #[serde(default)]
    pub(super) error: Option<WireError>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireCandidate {
    #[serde(default)]
    pub(super) content: Option<WireContent>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct WireContent {
    #[serde(default)]
    pub(super) parts: Vec<WirePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WirePart {
    #[serde(default)]
    pub(super) text: Option<String>,
    /// A thought summary, which OpenAI's answer has no place for.
    #[serde(default)]
    pub(super) thought: bool,
    #[serde(default)]
    pub(super) function_call: Option<WireFunctionCall>,
    #[serde(default)]
    pub(super) thought_signature: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WireFunctionCall {
    pub(super) name: String,
    #[serde(default)]
    pub(super) args: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback {
    #[serde(default)]
    pub(super) block_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireUsage {
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
            ..Usage::default()
        }
    }
}

#[derive(Deserialize, Default)]
pub(super) struct WireError {
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) status: String,
}

pub(super) fn finish_reason(reason: &str, called_functions: bool) -> &'static str {
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
pub(super) fn identity(received_at: u64, alias: &str, answer: &WireResponse, bytes: &[u8]) -> Identity {
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

pub(in crate::providers) fn response(req: &ChatRequest, body: &[u8]) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::gemini::call_id::signature_of;
    use crate::providers::gemini::test_support::{answer, parse, user};

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
            Some(Usage {
                input_tokens: 120,
                output_tokens: 12,
                cached_input_tokens: 100,
                cache_write_tokens: 0,
                web_searches: 0
            })
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
}

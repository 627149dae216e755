//! The client's OpenAI Chat Completions request: validated once at the edge, kept as the
//! client sent it (unknown fields included, so nothing the client asked for is lost), and
//! re-targeted per upstream attempt by the provider module.

use crate::error::GatewayError;
use serde_json::{Map, Value};

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The canonical request; for a Messages request it cannot express (see
    /// [`NativeMessages::untranslatable`]) the client's body, whose `messages`, `tools`
    /// and `max_tokens` routing reads alike, and which only an Anthropic-format
    /// deployment, taking the native body, is ever given.
    pub body: Map<String, Value>,
    /// The alias the client asked for.
    pub model: String,
    pub stream: bool,
    /// Whether the client itself asked for the final usage chunk.
    pub client_wants_usage: bool,
    /// Unix seconds when the gateway received it (set by the shell): `created` of translated answers.
    pub received_at: u64,
    /// The Messages request as sent, when the client spoke Anthropic's format.
    pub native: Option<NativeMessages>,
}

/// A `POST /v1/messages` request as the client sent it. A deployment that speaks
/// Anthropic's Messages format itself gets it with nothing translated away (prompt-cache
/// markers, extended thinking, `top_k`, fields and block types newer than the gateway)
/// and answers the client as it is.
#[derive(Debug, Clone)]
pub struct NativeMessages {
    /// The client's body, null fields removed.
    pub body: Map<String, Value>,
    /// The client's `anthropic-beta` header (set by the shell): its opt-in to beta features.
    pub beta: Option<String>,
    /// Why the canonical form cannot carry the request, if it cannot: then deployments in
    /// other formats cannot serve it.
    pub untranslatable: Option<GatewayError>,
}

impl NativeMessages {
    pub fn translatable(&self) -> bool {
        self.untranslatable.is_none()
    }
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request("invalid_request", message)
}

/// Rough token count of a text (about four characters a token), for usage a provider did
/// not report and for context-window checks.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

impl ChatRequest {
    /// The prompt's size in tokens, estimated from its text: what a stream cut before the
    /// provider reported usage is billed for as input.
    pub fn estimated_input_tokens(&self) -> u64 {
        let text_len = |content: &Value| match content {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => {
                parts.iter().filter_map(|p| p.get("text")?.as_str()).map(|t| t.chars().count()).sum()
            }
            _ => 0,
        };
        let messages = self.body.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        // A Messages body kept as sent has its system prompt apart.
        let system = estimate_tokens(self.body.get("system").map_or(0, text_len));
        // A few tokens of framing per message, as chat templates add.
        system + messages.iter().map(|m| estimate_tokens(m.get("content").map_or(0, text_len)) + 4).sum::<u64>()
    }
}

pub fn parse(bytes: &[u8]) -> Result<ChatRequest, GatewayError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| GatewayError::bad_request("invalid_json", format!("The request body is not valid JSON: {e}.")))?;
    let Value::Object(body) = value else {
        return Err(GatewayError::bad_request("invalid_json", "The request body must be a JSON object."));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("`model` must be a non-empty string.")),
        None => return Err(GatewayError::bad_request("missing_field", "Missing required field `model`.")),
    };
    match body.get("messages") {
        None => return Err(GatewayError::bad_request("missing_field", "Missing required field `messages`.")),
        Some(Value::Array(messages)) if !messages.is_empty() => {
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str);
                match role {
                    Some(r) if ROLES.contains(&r) => {}
                    Some(r) => {
                        return Err(invalid(format!(
                            "`messages[{i}].role` is `{r}`; expected one of {}.",
                            ROLES.join(", ")
                        )))
                    }
                    None => return Err(invalid(format!("`messages[{i}]` needs a string `role`."))),
                }
            }
        }
        Some(_) => return Err(invalid("`messages` must be a non-empty array.")),
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream` must be a boolean.")),
    };
    let client_wants_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok(ChatRequest { body, model, stream, client_wants_usage, received_at: 0, native: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> GatewayError {
        parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_a_minimal_request_and_keeps_unknown_fields() {
        let r = parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"x_custom":{"a":1}}"#).unwrap();
        assert_eq!(r.model, "fast");
        assert!(!r.stream && !r.client_wants_usage);
        assert_eq!(r.body["x_custom"]["a"], 1);
    }

    #[test]
    fn estimates_input_tokens_from_the_text() {
        let r = parse(br#"{"model":"m","messages":[{"role":"system","content":"12345678"},{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#).unwrap();
        assert_eq!(r.estimated_input_tokens(), (2 + 4) + (1 + 4));
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(5), 2);
    }

    #[test]
    fn reads_stream_flags() {
        let r = parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(r.stream && r.client_wants_usage);
    }

    #[test]
    fn rejects_bad_input_with_clear_messages() {
        assert_eq!(err("{not json").code, "invalid_json");
        assert_eq!(err("[1]").code, "invalid_json");
        assert_eq!(err("").code, "invalid_json");
        let e = err(r#"{"messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!((e.status, e.code), (400, "missing_field"));
        assert!(e.message.contains("`model`"));
        assert!(err(r#"{"model":"m"}"#).message.contains("`messages`"));
        assert!(err(r#"{"model":"m","messages":[]}"#).message.contains("non-empty"));
        assert!(err(r#"{"model":"","messages":[{"role":"user"}]}"#).message.contains("non-empty string"));
        assert!(err(r#"{"model":"m","messages":[{"content":"x"}]}"#).message.contains("messages[0]"));
        assert!(err(r#"{"model":"m","messages":[{"role":"robot"}]}"#).message.contains("`robot`"));
        assert!(err(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#).message.contains("boolean"));
    }
}

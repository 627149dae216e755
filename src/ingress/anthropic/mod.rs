//! Anthropic Messages as a client format (`POST /v1/messages`, `/v1/messages/count_tokens`):
//! an Anthropic SDK pointed at the gateway reaches any provider. Shapes per Anthropic's API
//! reference (platform.claude.com/docs): "Messages", "Streaming Messages" and "Errors" (the
//! error body is `wire::anthropic`'s); the canonical side is OpenAI's Chat Completions.
//!
//! A deployment in Anthropic's format (`anthropic`, and `vertex` with the `anthropic`
//! publisher) gets the request as the client sent it, model swapped, and its answer goes back
//! as it came (`ChatRequest::native`). For the others, `request` translates the request to
//! the canonical form, and `answer` and `stream` translate the answer back.

mod answer;
mod request;
mod stream;

pub use answer::response;
pub use request::{parse, parse_count_tokens, CountTokens};
pub use stream::Stream;

/// Helpers the submodules' tests share.
#[cfg(test)]
mod fixtures {
    use super::parse;
    use crate::model::chat::{self, ChatRequest};
    use serde_json::{json, Value};

    pub(super) fn parse_ok(body: Value) -> ChatRequest {
        let req = parse(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        // Whatever the translation makes must be a request the OpenAI ingress accepts too.
        chat::parse(serde_json::to_vec(req.body()).unwrap()).unwrap();
        req
    }

    pub(super) fn user(content: Value) -> Value {
        json!({"role": "user", "content": content})
    }

    pub(super) fn request() -> ChatRequest {
        parse_ok(json!({"model": "fast", "max_tokens": 5, "messages": [user(json!("x"))]}))
    }
}

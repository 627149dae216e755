//! The formats clients speak to the gateway. Routing, budgets, the ledger and every
//! provider work on one canonical request (OpenAI Chat Completions, [`ChatRequest`]) and
//! answer in OpenAI's shapes; an ingress turns the client's request into that form, and the
//! answer (whole or streamed) and the errors back into the client's format. A deployment
//! that speaks the client's format itself skips both translations (`ChatRequest::native`).

pub mod anthropic;

use crate::model::chat::{self, ChatRequest};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// `POST /v1/chat/completions`, and the errors of every route that is not an ingress.
    OpenAi,
    /// `POST /v1/messages` and `/v1/messages/count_tokens`.
    Anthropic,
}

/// Re-encodes the gateway's OpenAI `chat.completion.chunk` stream in the client's format.
pub trait StreamEncoder {
    /// Consumes OpenAI SSE bytes, split anywhere, and appends what the client should receive.
    fn push(&mut self, openai: &[u8], out: &mut Vec<u8>);
}

impl Ingress {
    /// The format of the errors answered on `path`.
    pub fn for_path(path: &str) -> Self {
        if path == "/v1/messages" || path == "/v1/messages/count_tokens" {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }

    pub fn parse(self, body: Vec<u8>) -> Result<ChatRequest, GatewayError> {
        match self {
            Self::OpenAi => chat::parse(body),
            Self::Anthropic => anthropic::parse(&body),
        }
    }

    /// The JSON error body, for `e.status`.
    pub fn error_body(self, e: &GatewayError) -> String {
        match self {
            Self::OpenAi => e.to_json(),
            Self::Anthropic => crate::wire::anthropic::error_body(e),
        }
    }

    /// A provider's answer (an OpenAI `chat.completion`) in the client's format; `Err` when
    /// it cannot be expressed there, which makes it as unusable as a malformed answer.
    pub fn response(self, req: &ChatRequest, body: Vec<u8>) -> Result<Vec<u8>, ErrorClass> {
        match self {
            Self::OpenAi => Ok(body),
            Self::Anthropic => anthropic::response(req, &body),
        }
    }

    /// `None` when the OpenAI stream goes to the client as it is.
    pub fn stream(self, req: &ChatRequest) -> Option<Box<dyn StreamEncoder>> {
        match self {
            Self::OpenAi => None,
            Self::Anthropic => Some(Box::new(anthropic::Stream::new(req))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_decides_the_format() {
        assert_eq!(Ingress::for_path("/v1/messages"), Ingress::Anthropic);
        assert_eq!(Ingress::for_path("/v1/chat/completions"), Ingress::OpenAi);
        assert_eq!(Ingress::for_path("/v1/messages/count_tokens"), Ingress::Anthropic);
        assert_eq!(Ingress::for_path("/v1/messages/batches"), Ingress::OpenAi);
    }

    #[test]
    fn openai_passes_through() {
        let req =
            Ingress::OpenAi.parse(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_vec()).unwrap();
        assert_eq!(Ingress::OpenAi.response(&req, b"{}".to_vec()), Ok(b"{}".to_vec()));
        assert!(Ingress::OpenAi.stream(&req).is_none());
        let e = GatewayError::unauthorized("no key");
        assert_eq!(Ingress::OpenAi.error_body(&e), e.to_json());
    }
}

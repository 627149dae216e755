//! Providers behind one interface: build the upstream request, read usage from a response,
//! classify errors, translate a stream chunk by chunk. One module per provider wire format.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
mod canonical;
pub mod gemini;
pub mod mistral;
pub mod openai;
pub mod vertex;

use crate::config::provider::vertex::VertexPublisher;
use crate::config::{Deployment, ProviderSettings};
use crate::model::chat::{ChatRequest, NativeMessages};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::{Consumed, Usage};
use serde_json::{Map, Value};

/// What one upstream call authenticates with, resolved by the shell from the
/// deployment's Worker secrets.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub api_key: Option<String>,
    /// AWS credentials, for providers whose requests are SigV4-signed (Bedrock).
    pub aws: Option<AwsCredentials>,
    /// An OAuth access token, for providers whose credentials are exchanged for one
    /// (Vertex AI's service accounts).
    pub bearer_token: Option<String>,
    /// Unix seconds, for providers whose requests are signed with the time.
    pub now_unix: u64,
}

#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Present with temporary (STS) credentials.
    pub session_token: Option<String>,
}

impl Auth {
    /// Every secret value, for redaction. The access key id is not secret by AWS's
    /// definition, but it names the account's credentials, and AWS echoes it in errors.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        let aws = self.aws.iter().flat_map(|a| {
            [Some(a.access_key_id.as_str()), Some(a.secret_access_key.as_str()), a.session_token.as_deref()]
        });
        self.api_key.as_deref().into_iter().chain(aws.flatten()).chain(self.bearer_token.as_deref())
    }
}

pub struct UpstreamRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// How an upstream stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// With the provider's terminal event(s).
    Complete,
    /// Without them: cut, however cleanly the connection closed.
    Cut,
    /// The provider reported an error mid-stream, already passed on to the client as an
    /// error event in its format.
    Failed,
}

impl StreamEnd {
    /// A reported error wins; otherwise complete only when the terminal event arrived and
    /// no unfinished frame is pending.
    pub fn of(failed: bool, terminal_seen: bool, partial_pending: bool) -> StreamEnd {
        if failed {
            StreamEnd::Failed
        } else if terminal_seen && !partial_pending {
            StreamEnd::Complete
        } else {
            StreamEnd::Cut
        }
    }
}

/// Translates one upstream stream into the client's format as bytes arrive.
pub trait StreamTranslator {
    /// Consumes upstream bytes and appends what the client should receive to `out`.
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>);
    /// True once a content-bearing event has passed: before that the gateway may still
    /// fall back to another deployment, after it the client has an answer under way.
    fn started(&self) -> bool;
    /// At upstream end of stream: whether it ended with its terminal event.
    fn end(&mut self) -> StreamEnd;
    /// What the stream is billed for: the provider's final usage once it completed, else
    /// at least what it reported and what reached the client ([`Meter::consumed`]).
    fn consumed(&self) -> Consumed;
    /// Where the provider says it processed the request, once it has said so.
    fn reported_geo(&self) -> Option<&'static str> {
        None
    }

    /// The event that tells the client the gateway ended its stream early, in the format
    /// this translator writes.
    fn cut_event(&self, e: &GatewayError) -> Vec<u8> {
        crate::wire::openai::stream_error_event(e)
    }
}

/// A provider wire format. The gateway's canonical form is OpenAI Chat Completions: every
/// provider turns a [`ChatRequest`] into its own request, and its answers (whole or
/// streamed) back into OpenAI's shapes.
pub trait Provider {
    /// The upstream request, or a 400 naming the field this provider cannot honour
    /// (never a silently dropped field).
    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError>;
    /// A complete (non-streamed) success body as an OpenAI `chat.completion`, with its
    /// usage. `Err` when the body is not what the provider promised.
    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass>;
    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass;
    /// Translates the success stream into OpenAI `chat.completion.chunk` SSE.
    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator>;

    /// Where a whole success body says the provider processed the request, for providers
    /// that report it (Anthropic's `usage.inference_geo`).
    fn reported_geo(&self, _body: &[u8]) -> Option<&'static str> {
        None
    }

    /// This provider as one that takes Anthropic's Messages requests for `d`'s model.
    fn messages(&self, _d: &Deployment) -> Option<&'static dyn SpeaksMessages> {
        None
    }

    /// This provider as one that counts a Messages request's tokens for `d`'s model.
    fn counts(&self, _d: &Deployment) -> Option<&'static dyn CountsTokens> {
        None
    }
}

/// A provider that takes Anthropic's Messages requests for its models: a `/v1/messages`
/// request reaches it as the client sent it, and its answer goes back as it came
/// ([`anthropic::native_response`], [`anthropic::native_stream`]).
pub trait SpeaksMessages {
    fn build_native(
        &self,
        d: &Deployment,
        req: &ChatRequest,
        native: &NativeMessages,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError>;

    /// The stream as Anthropic's events, passed on as they come.
    fn native_stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        anthropic::native_stream(req)
    }
}

/// A provider that counts a Messages request's input tokens without running it.
pub trait CountsTokens {
    /// `body` is the client's `count_tokens` body; `beta`, its `anthropic-beta` header.
    fn count_request(
        &self,
        d: &Deployment,
        body: &Map<String, Value>,
        beta: Option<&str>,
        auth: &Auth,
    ) -> Result<UpstreamRequest, GatewayError>;

    /// The count as Anthropic answers it (`{"input_tokens": n}`).
    fn count_answer(&self, body: Vec<u8>) -> Result<Vec<u8>, ErrorClass> {
        anthropic::token_count(body)
    }
}

/// The wire format of a deployment: its provider's, and on Vertex AI its publisher's. One
/// line per provider.
pub fn for_deployment(d: &Deployment) -> &'static dyn Provider {
    match &d.provider {
        ProviderSettings::Openai => &openai::OpenAi,
        ProviderSettings::Anthropic => &anthropic::Anthropic,
        ProviderSettings::Bedrock(_) => &bedrock::Bedrock,
        ProviderSettings::AzureOpenai(_) => &azure::Azure,
        ProviderSettings::Mistral => &mistral::Mistral,
        ProviderSettings::Gemini => &gemini::Gemini,
        ProviderSettings::Vertex(v) if v.publisher == VertexPublisher::Anthropic => &vertex::VertexClaude,
        ProviderSettings::Vertex(_) => &vertex::VertexGemini,
    }
}

/// The deployment's provider, if it takes Messages requests for this deployment's model.
pub fn speaks_messages(d: &Deployment) -> Option<&'static dyn SpeaksMessages> {
    for_deployment(d).messages(d)
}

/// The deployment's provider, if it can count tokens for it.
pub fn counts_tokens(d: &Deployment) -> Option<&'static dyn CountsTokens> {
    for_deployment(d).counts(d)
}

/// Removes provider secrets from text that may be shown to a client (providers echo parts
/// of rejected keys in their error messages).
pub fn redact(text: &str, auth: &Auth) -> String {
    let mut s = text.to_string();
    for k in auth.secrets() {
        if k.len() >= 8 {
            s = s.replace(k, "[redacted]");
            // Providers quote a key's head and tail (`sk-abc***xyz`).
            s = s.replace(&k[..8], "[redacted]");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_whole_and_quoted_keys() {
        let key = "sk-proj-ABCDEFGHIJKLMNOP";
        let msg = format!("Incorrect API key provided: {key}. Also sk-proj-A***NOP");
        let out = redact(&msg, &Auth { api_key: Some(key.into()), ..Auth::default() });
        assert!(!out.contains(key) && !out.contains("sk-proj-"), "{out}");
        assert_eq!(redact("x", &Auth::default()), "x");
    }

    #[test]
    fn aws_credentials_are_redacted_too() {
        let aws = AwsCredentials {
            access_key_id: "AKIDEXAMPLEKEYID0001".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("IQoJb3JpZ2luX2VjEXAMPLETOKEN".into()),
        };
        let auth = Auth { aws: Some(aws), ..Auth::default() };
        let out = redact(
            "key AKIDEXAMPLEKEYID0001 secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY token IQoJb3JpZ2luX2VjEXAMPLETOKEN",
            &auth,
        );
        assert_eq!(out, "key [redacted] secret [redacted] token [redacted]");
    }
}

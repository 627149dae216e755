//! AWS Bedrock, a region's bedrock-runtime endpoint: OpenAI chat through Converse
//! (`converse`, `stream`), Claude's Messages and token counts through InvokeModel (`invoke`).
//!
//! Per the Bedrock user guide and API reference: requests are SigV4-signed for service
//! `bedrock` ([`sigv4`]) or carry an API key as a bearer token ("Use an Amazon Bedrock API
//! key"); model ids may be cross-region inference profiles ("Supported Regions and models
//! for inference profiles"); errors are `{"message"}`, their type in `x-amzn-ErrorType`.

mod converse;
pub mod eventstream;
mod invoke;
pub mod sigv4;
mod stream;

pub use invoke::is_claude;

use super::canonical::Cx;
use super::{Auth, CountsTokens, Provider, SpeaksMessages, StreamTranslator, UpstreamRequest};
use crate::config::{Deployment, ProviderSettings};
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;
use eventstream::Message;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sigv4::{AmzDate, Payload, SigningParams};

pub struct Bedrock;

const PROVIDER: &str = "bedrock";

/// The SigV4 signing name of bedrock-runtime.
const SERVICE: &str = "bedrock";

/// The model path of a deployment's model: an id, a profile id or an ARN, escaped.
fn model_url(d: &Deployment, operation: &str) -> String {
    format!("{}/model/{}/{operation}", d.base_url, sigv4::encode_path_segment(&d.model))
}

/// A request to bedrock-runtime, signed (SigV4) or with the deployment's API key.
fn authorized(d: &Deployment, url: String, body: Vec<u8>, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(aws) = &auth.aws {
        let ProviderSettings::Bedrock(settings) = &d.provider else {
            return Err(GatewayError::internal(format!("Deployment `{}` is not a Bedrock deployment.", d.id)));
        };
        let region = settings.aws_region.as_str();
        let signed: Vec<(&str, &str)> = headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let request = sigv4::Request { method: "POST", url: &url, headers: &signed, payload: Payload::Bytes(&body) };
        let params = SigningParams {
            access_key_id: &aws.access_key_id,
            secret_access_key: &aws.secret_access_key,
            session_token: aws.session_token.as_deref(),
            region,
            service: SERVICE,
            time: AmzDate::from_unix_seconds(auth.now_unix),
            content_sha256_header: false,
        };
        let added = sigv4::sign(&request, &params).map_err(|e| GatewayError::internal(e.to_string()))?;
        headers.extend(added);
    } else if let Some(key) = &auth.api_key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    Ok(UpstreamRequest { url, headers, body })
}

impl Provider for Bedrock {
    /// Claude models take Messages requests and count tokens through InvokeModel.
    fn messages(&self, d: &Deployment) -> Option<&'static dyn SpeaksMessages> {
        is_claude(d).then_some(&Bedrock as &dyn SpeaksMessages)
    }

    fn counts(&self, d: &Deployment) -> Option<&'static dyn CountsTokens> {
        is_claude(d).then_some(&Bedrock as &dyn CountsTokens)
    }

    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = converse::request_body(&Cx { provider: PROVIDER, deployment: &d.id }, req)?;
        let body = serde_json::to_vec(&body).expect("a JSON map serialises");
        let operation = if req.stream { "converse-stream" } else { "converse" };
        authorized(d, model_url(d, operation), body, auth)
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        converse::completion(req, body)
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        let message = serde_json::from_slice::<WireError>(body).map(|e| e.message).unwrap_or_default();
        let message = message.to_ascii_lowercase();
        match status {
            // ThrottlingException, and ModelNotReadyException while a model loads.
            429 => ErrorClass::RateLimited,
            503 => ErrorClass::Overloaded,
            408 | 504 => ErrorClass::Timeout,
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            // ModelErrorException: the model failed while processing, not the request.
            424 => ErrorClass::Server,
            400..=499 if is_context_length(&message) => ErrorClass::ContextLength,
            // ServiceQuotaExceededException is a 400 that "can be resubmitted later".
            400 if message.contains("service quota") => ErrorClass::RateLimited,
            400..=499 => ErrorClass::BadRequest,
            _ => ErrorClass::Server,
        }
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        Box::new(stream::Translator::new(req))
    }
}

/// Bedrock's wordings for an input that does not fit: "Input is too long for requested
/// model", the model's own "prompt is too long: N tokens > M maximum", "input length and
/// `max_tokens` exceed context limit", "maximum context length is N tokens", and a
/// `maxTokens` the input leaves no room for ("max tokens … exceeds").
fn is_context_length(message: &str) -> bool {
    message.contains("too long")
        || message.contains("context limit")
        || message.contains("context window")
        || message.contains("context length")
        || ((message.contains("max tokens") || message.contains("maximum tokens")) && message.contains("exceed"))
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default)]
    message: String,
}

/// An event-stream message's JSON payload.
fn payload<T: DeserializeOwned>(message: &Message<'_>) -> Option<T> {
    serde_json::from_slice(message.payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat;
    use crate::providers::bedrock::eventstream::{encode, Header};
    use crate::providers::AwsCredentials;
    use crate::util::valueread::FromValue;
    use serde_json::{json, Value};

    // Shared with the submodules' tests.

    pub(super) const MODEL: &str = "eu.anthropic.claude-3-haiku-20240307-v1:0";

    pub(super) fn deployment_json() -> Value {
        json!({
            "id": "bedrock-eu", "provider": "bedrock", "model": MODEL,
            "base_url": "https://bedrock-runtime.eu-central-1.amazonaws.com", "aws_region": "eu-central-1",
            "aws_access_key_id_secret": "AWS_KEY_ID", "aws_secret_access_key_secret": "AWS_SECRET",
            "jurisdiction": "europe", "region": "eu-central-1", "price": {"input": "1", "output": "1"}
        })
    }

    pub(super) fn deployment() -> Deployment {
        Deployment::read(&deployment_json()).unwrap()
    }

    /// 2025-06-15T12:00:00Z.
    const NOW: u64 = 1_749_988_800;

    pub(super) fn sigv4_auth() -> Auth {
        let aws = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("IQoJtoken".into()),
        };
        Auth { aws: Some(aws), now_unix: NOW, ..Auth::default() }
    }

    pub(super) fn parse(body: Value) -> ChatRequest {
        let mut req = chat::parse(body.to_string().as_bytes()).unwrap();
        req.received_at = 1_750_000_000;
        req
    }

    pub(super) fn user(content: Value) -> Value {
        json!({"role": "user", "content": content})
    }

    pub(super) fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let headers: Vec<Header> = headers.iter().map(|(name, value)| Header::string(name, value)).collect();
        encode(&headers, payload).unwrap()
    }

    // -----------------------------------------------------------------------------------
    // Signed requests, or with an API key.

    fn header<'a>(up: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
        up.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_signed_request_targets_converse_with_the_encoded_model_id() {
        let up = Bedrock
            .build(&deployment(), &parse(json!({"model": "fast", "messages": [user(json!("hi"))]})), &sigv4_auth())
            .unwrap();
        assert_eq!(
            up.url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/eu.anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(up.body, br#"{"messages":[{"content":[{"text":"hi"}],"role":"user"}]}"#);
        assert_eq!(header(&up, "content-type"), Some("application/json"));
        assert_eq!(header(&up, "x-amz-date"), Some("20250615T120000Z"));
        assert_eq!(header(&up, "x-amz-security-token"), Some("IQoJtoken"));
        // Computed apart from this code base (Python's hmac over the canonical request,
        // whose path is the wire path encoded once more: `%3A` signs as `%253A`).
        assert_eq!(
            header(&up, "authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250615/eu-central-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, \
                 Signature=8566fecf0690c4f4ace600348f1b3524c785471c0d0b190d960f02551eaa16df"
            )
        );
    }

    #[test]
    fn the_signature_covers_the_exact_bytes_sent() {
        let body = json!({"model": "fast", "stream": true, "max_tokens": 9, "messages": [user(json!("héllo"))]});
        let up = Bedrock.build(&deployment(), &parse(body), &sigv4_auth()).unwrap();
        assert!(up.url.ends_with("/model/eu.anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"), "{}", up.url);
        let aws = sigv4_auth().aws.unwrap();
        let request = sigv4::Request {
            method: "POST",
            url: &up.url,
            headers: &[("content-type", "application/json")],
            payload: Payload::Bytes(&up.body),
        };
        let params = SigningParams {
            access_key_id: &aws.access_key_id,
            secret_access_key: &aws.secret_access_key,
            session_token: aws.session_token.as_deref(),
            region: "eu-central-1",
            service: "bedrock",
            time: AmzDate::from_unix_seconds(NOW),
            content_sha256_header: false,
        };
        let expected = sigv4::sign(&request, &params).unwrap();
        assert_eq!(header(&up, "authorization"), expected.last().map(|(_, v)| v.as_str()));
    }

    #[test]
    fn an_api_key_is_sent_as_a_bearer_token() {
        let auth = Auth { api_key: Some("bedrock-api-key-123".into()), ..Auth::default() };
        let up =
            Bedrock.build(&deployment(), &parse(json!({"model": "m", "messages": [user(json!("x"))]})), &auth).unwrap();
        assert_eq!(header(&up, "authorization"), Some("Bearer bedrock-api-key-123"));
        assert_eq!(header(&up, "x-amz-date"), None);
    }

    // -----------------------------------------------------------------------------------
    // Error classification.

    #[test]
    fn classification() {
        let c = |status, message: &str| Bedrock.classify(status, json!({"message": message}).to_string().as_bytes());
        assert_eq!(c(429, "Too many requests, please wait before trying again."), ErrorClass::RateLimited);
        assert_eq!(c(429, "Model is not ready for inference."), ErrorClass::RateLimited);
        assert_eq!(c(503, "Bedrock is unable to process your request."), ErrorClass::Overloaded);
        assert_eq!(c(500, "The server encountered an internal error."), ErrorClass::Server);
        assert_eq!(c(424, "Received error from the model."), ErrorClass::Server);
        assert_eq!(c(408, "Model has timed out in processing the request."), ErrorClass::Timeout);
        assert_eq!(c(403, "The security token included in the request is invalid."), ErrorClass::Auth);
        assert_eq!(c(403, "You don't have access to the model with the specified model ID."), ErrorClass::Auth);
        assert_eq!(c(404, "The provided model identifier is invalid."), ErrorClass::NotFound);
        assert_eq!(c(400, "Input is too long for requested model."), ErrorClass::ContextLength);
        assert_eq!(
            c(400, "The model returned the following errors: prompt is too long: 201135 tokens > 200000 maximum"),
            ErrorClass::ContextLength
        );
        assert_eq!(
            c(400, "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000"),
            ErrorClass::ContextLength
        );
        assert_eq!(
            c(400, "The maximum tokens you requested exceeds the model limit of 8192."),
            ErrorClass::ContextLength
        );
        assert_eq!(c(400, "Your request exceeds the service quota for your account."), ErrorClass::RateLimited);
        assert_eq!(
            c(400, "The text field in the ContentBlock object at messages.0.content.0 is blank."),
            ErrorClass::BadRequest
        );
        assert_eq!(c(400, "max_tokens: Field required"), ErrorClass::BadRequest);
        assert_eq!(Bedrock.classify(400, b"not json"), ErrorClass::BadRequest);
        assert_eq!(Bedrock.classify(502, b""), ErrorClass::Server);
    }

    // -----------------------------------------------------------------------------------
    // Config validation.

    fn config_with(edit: impl FnOnce(&mut Value)) -> Result<crate::config::Gateway, String> {
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        let mut bedrock = deployment_json();
        edit(&mut bedrock);
        config["deployments"].as_array_mut().unwrap().push(bedrock);
        crate::config::parse(&config.to_string())
    }

    fn rejects(edit: impl FnOnce(&mut Value), needle: &str) {
        let err = config_with(edit).map(drop).unwrap_err();
        assert!(err.contains("deployment `bedrock-eu`"), "{err}");
        assert!(err.contains(needle), "error `{err}` should mention `{needle}`");
    }

    #[test]
    fn inference_profiles_must_match_the_jurisdiction() {
        let profile = |model: &str, jurisdiction: &str| {
            config_with(|d| {
                d["model"] = model.into();
                d["jurisdiction"] = jurisdiction.into();
            })
            .map(drop)
        };
        for (model, jurisdiction) in [
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "europe"),
            ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us"),
            ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "us"),
            ("apac.amazon.nova-pro-v1:0", "apac"),
            ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "jp"),
            ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "apac"),
            ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "au"),
            ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "apac"),
            ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "global"),
            ("anthropic.claude-3-haiku-20240307-v1:0", "eu"),
            ("anthropic.claude-3-haiku-20240307-v1:0", "global"),
            (
                "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
                "europe",
            ),
        ] {
            assert_eq!(profile(model, jurisdiction), Ok(()), "{model} in {jurisdiction}");
        }
        for (model, jurisdiction, needle) in [
            ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu", "must be `global`, not `eu`"),
            ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu", "`us.` cross-region inference profile"),
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "us", "must be `europe`, not `us`"),
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "global", "must be `europe`, not `global`"),
            // The EU geography's regions include London and Zurich: not the EU alone.
            ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu", "must be `europe`, not `eu`"),
            ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "eu", "must be `us`"),
            ("apac.amazon.nova-pro-v1:0", "jp", "must be `apac`, not `jp`"),
            ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "au", "must be `jp` or `apac`, not `au`"),
            ("au.anthropic.claude-sonnet-4-5-20250929-v1:0", "jp", "must be `au` or `apac`"),
            ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0", "eu", "`us.`"),
        ] {
            let err = profile(model, jurisdiction).unwrap_err();
            assert!(err.starts_with("deployment `bedrock-eu`: model"), "{err}");
            assert!(err.contains(needle), "{model} in {jurisdiction}: `{err}` should mention `{needle}`");
        }
    }

    #[test]
    fn region_and_credentials_are_validated() {
        assert!(config_with(|_| {}).is_ok());
        rejects(|d| d.as_object_mut().unwrap().remove("aws_region").map(drop).unwrap(), "need `aws_region`");
        rejects(|d| d["aws_region"] = "EU Central".into(), "not an AWS region name");
        rejects(|d| d["aws_region"] = "us-east-1".into(), "is not in aws_region `us-east-1`");
        assert!(config_with(|d| {
            d["base_url"] = "http://127.0.0.1:9/bedrock-eu".into();
        })
        .is_ok());
        rejects(|d| d["api_key_secret"] = "BEDROCK_KEY".into(), "not both");
        rejects(
            |d| {
                let d = d.as_object_mut().unwrap();
                d.remove("aws_access_key_id_secret");
                d.remove("aws_secret_access_key_secret");
            },
            "needs credentials",
        );
        rejects(
            |d| d.as_object_mut().unwrap().remove("aws_secret_access_key_secret").map(drop).unwrap(),
            "go together",
        );
        rejects(|d| d["aws_session_token_secret"] = "bad name".into(), "aws_session_token_secret `bad name`");
        let api_key = config_with(|d| {
            let d = d.as_object_mut().unwrap();
            d.remove("aws_access_key_id_secret");
            d.remove("aws_secret_access_key_secret");
            d.insert("api_key_secret".into(), "BEDROCK_KEY".into());
        });
        assert!(api_key.is_ok());
    }

    #[test]
    fn aws_fields_are_for_bedrock_only() {
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        config["deployments"][0]["aws_region"] = json!("eu-central-1");
        let err = crate::config::parse(&config.to_string()).map(drop).unwrap_err();
        assert!(err.contains("deployment `eu-a` (openai): unknown field `aws_region`"), "{err}");
    }
}

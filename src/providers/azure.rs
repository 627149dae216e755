//! Azure OpenAI: OpenAI's Chat Completions on an Azure resource.
//!
//! Per Microsoft Learn's "Azure OpenAI REST API reference" (`/openai/deployments/{id}/chat/
//! completions?api-version=…`, key in `api-key`) and "API version lifecycle" (the v1 API,
//! model in the body). A content-filter refusal is a 400 with code `content_filter`.

use super::openai::{self, OpenAi};
use super::{Auth, Provider, StreamTranslator, UpstreamRequest};
use crate::config::provider::azure::V1;
use crate::config::{Deployment, ProviderSettings};
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Usage;

pub struct Azure;

impl Provider for Azure {
    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let version = match &d.provider {
            ProviderSettings::AzureOpenai(a) => a.api_version.as_str(),
            _ => V1,
        };
        let (url, body) = if version == V1 {
            (format!("{}/openai/v1/chat/completions", d.base_url), openai::request_body(req, Some(&d.model)))
        } else {
            // The path names the deployment, so the body names no model.
            let url = format!("{}/openai/deployments/{}/chat/completions?api-version={version}", d.base_url, d.model);
            (url, openai::request_body(req, None))
        };
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(key) = &auth.api_key {
            headers.push(("api-key", key.clone()));
        }
        Ok(UpstreamRequest { url, headers, body })
    }

    fn response(&self, req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        OpenAi.response(req, body)
    }

    /// OpenAI's statuses and codes: Azure's content-filter refusal is a 400 with code
    /// `content_filter`, its context overflow code `context_length_exceeded`.
    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        OpenAi.classify(status, body)
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        OpenAi.stream(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat;
    use crate::model::usage::Consumed;
    use crate::providers::StreamEnd;
    use crate::util::valueread::FromValue;
    use serde_json::{json, Value};

    fn deployment_json() -> Value {
        json!({
            "id": "azure-eu", "provider": "azure_openai", "model": "gpt-4o-mini-eu",
            "base_url": "https://contoso-eu.openai.azure.com", "api_key_secret": "AZURE_EU_KEY",
            "api_version": "2024-10-21", "azure_deployment_type": "data_zone_eu",
            "jurisdiction": "eu", "region": "swedencentral", "price": {"input": "1", "output": "1"}
        })
    }

    fn deployment(edit: impl FnOnce(&mut Value)) -> Deployment {
        let mut d = deployment_json();
        edit(&mut d);
        Deployment::read(&d).unwrap()
    }

    fn auth() -> Auth {
        Auth { api_key: Some("azure-key-0123456789".into()), ..Auth::default() }
    }

    #[test]
    fn the_deployments_api_names_the_deployment_in_the_path() {
        let req =
            chat::parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#).unwrap();
        let up = Azure.build(&deployment(|_| {}), &req, &auth()).unwrap();
        assert_eq!(
            up.url,
            "https://contoso-eu.openai.azure.com/openai/deployments/gpt-4o-mini-eu/chat/completions?api-version=2024-10-21"
        );
        assert!(up.headers.contains(&("api-key", "azure-key-0123456789".into())));
        assert!(!up.headers.iter().any(|(k, _)| *k == "authorization"));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body, json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}));
    }

    #[test]
    fn the_v1_api_names_the_deployment_as_the_model() {
        let req =
            chat::parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true}"#).unwrap();
        let up = Azure.build(&deployment(|d| d["api_version"] = json!("v1")), &req, &auth()).unwrap();
        assert_eq!(up.url, "https://contoso-eu.openai.azure.com/openai/v1/chat/completions");
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini-eu");
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn a_filtered_answer_passes_through_with_its_usage() {
        let req = chat::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            "choices": [{"index": 0, "finish_reason": "content_filter",
                "message": {"role": "assistant", "content": null},
                "content_filter_results": {"violence": {"filtered": true, "severity": "high"}}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9}})
        .to_string()
        .into_bytes();
        let (out, usage) = Azure.response(&req, body.clone()).unwrap();
        assert_eq!(out, body);
        assert_eq!(usage, Some(Usage { input_tokens: 9, ..Usage::default() }));
    }

    #[test]
    fn content_filter_refusals_are_classified() {
        let refusal = json!({"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation"}}});
        assert_eq!(Azure.classify(400, refusal.to_string().as_bytes()), ErrorClass::ContentFilter);
        let too_long = json!({"error": {"code": "context_length_exceeded", "message": "This model's maximum context length is 128000 tokens."}});
        assert_eq!(Azure.classify(400, too_long.to_string().as_bytes()), ErrorClass::ContextLength);
        let missing = json!({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}});
        assert_eq!(Azure.classify(404, missing.to_string().as_bytes()), ErrorClass::NotFound);
        assert_eq!(Azure.classify(429, b"{}"), ErrorClass::RateLimited);
        assert_eq!(Azure.classify(401, b"{}"), ErrorClass::Auth);
    }

    /// Azure opens a stream with the prompt's filter results in a chunk without choices,
    /// and ends a filtered answer with `finish_reason: "content_filter"`.
    #[test]
    fn a_filtered_stream_is_complete_and_passes_through_at_every_split_point() {
        let input = concat!(
            "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Part\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\",\"content_filter_results\":{\"hate\":{\"filtered\":true}}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n",
            "data: [DONE]\n\n",
        );
        let req = chat::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#).unwrap();
        let usage_chunk =
            input.find("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],").unwrap();
        let expected = format!("{}data: [DONE]\n\n", &input[..usage_chunk]);
        for cut in 0..=input.len() {
            let mut t = Azure.stream(&req);
            let mut out = Vec::new();
            t.push(&input.as_bytes()[..cut], &mut out);
            t.push(&input.as_bytes()[cut..], &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "cut {cut}");
            assert_eq!(t.end(), StreamEnd::Complete);
            let usage = Usage { input_tokens: 5, output_tokens: 1, ..Usage::default() };
            assert_eq!(t.consumed(), Consumed::reported(usage));
        }
        let mut t = Azure.stream(&req);
        t.push(&input.as_bytes()[..input.find("\"role\"").unwrap()], &mut Vec::new());
        assert!(!t.started(), "the prompt filter chunk is not content");
    }

    fn config_with(edit: impl FnOnce(&mut Value)) -> Result<crate::config::Gateway, String> {
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        let mut d = deployment_json();
        edit(&mut d);
        config["deployments"].as_array_mut().unwrap().push(d);
        crate::config::parse(&config.to_string())
    }

    #[test]
    fn the_deployment_type_decides_the_jurisdiction() {
        let with = |kind: &str, jurisdiction: &str| {
            config_with(|d| {
                d["azure_deployment_type"] = json!(kind);
                d["jurisdiction"] = json!(jurisdiction);
            })
            .map(drop)
        };
        for (kind, jurisdiction) in [
            ("global", "global"),
            ("data_zone_eu", "eu"),
            ("data_zone_us", "us"),
            ("regional", "eu"),
            ("regional", "ch"),
            ("regional", "jp"),
        ] {
            assert_eq!(with(kind, jurisdiction), Ok(()), "{kind} in {jurisdiction}");
        }
        for (kind, jurisdiction, needle) in [
            ("global", "eu", "may process in any Azure region, so the jurisdiction must be `global`, not `eu`"),
            ("data_zone_eu", "global", "must be `eu`, not `global`"),
            ("data_zone_eu", "ch", "must be `eu`, not `ch`"),
            ("data_zone_us", "eu", "must be `us`, not `eu`"),
            ("regional", "global", "not `global`"),
        ] {
            let err = with(kind, jurisdiction).unwrap_err();
            assert!(err.starts_with("deployment `azure-eu`: a "), "{err}");
            assert!(err.contains(needle), "{kind} in {jurisdiction}: `{err}` should mention `{needle}`");
        }
    }

    #[test]
    fn version_key_and_type_are_required() {
        let rejects = |edit: &dyn Fn(&mut Value), needle: &str| {
            let err = config_with(edit).map(drop).unwrap_err();
            assert!(err.contains("deployment `azure-eu`") && err.contains(needle), "`{err}` should mention `{needle}`");
        };
        rejects(&|d| drop(d.as_object_mut().unwrap().remove("api_version")), "need `api_version`");
        rejects(&|d| d["api_version"] = json!("latest"), "api_version `latest`");
        rejects(&|d| drop(d.as_object_mut().unwrap().remove("api_key_secret")), "need `api_key_secret`");
        rejects(&|d| drop(d.as_object_mut().unwrap().remove("azure_deployment_type")), "need `azure_deployment_type`");
        let unknown = config_with(|d| d["azure_deployment_type"] = json!("worldwide")).map(drop).unwrap_err();
        assert!(unknown.contains("unknown variant `worldwide`"), "{unknown}");
        rejects(&|d| d["model"] = json!("gpt/4o"), "not an Azure deployment name");
        assert!(config_with(|d| d["api_version"] = json!("2025-04-01-preview")).is_ok());
        assert!(config_with(|d| d["api_version"] = json!("v1")).is_ok());
        let mut config: Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        config["deployments"][0]["api_version"] = json!("2024-10-21");
        let err = crate::config::parse(&config.to_string()).map(drop).unwrap_err();
        assert!(err.contains("deployment `eu-a` (openai): unknown field `api_version`"), "{err}");
    }

    #[test]
    fn a_cut_stream_is_billed_at_least_for_what_reached_the_client() {
        // Usage reported on the first chunk (prompt only), then 40 characters, then the cut.
        let text = |t: &str| {
            format!("data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"finish_reason\":null}}]}}\n\n")
        };
        let input = format!(
            "data: {{\"id\":\"c\",\"choices\":[],\"prompt_filter_results\":[],\"usage\":{{\"prompt_tokens\":30,\"completion_tokens\":0}}}}\n\n{}{}",
            text("0123456789abcdefghij"),
            text("0123456789abcdefghij")
        );
        let req = chat::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#).unwrap();
        let mut t = Azure.stream(&req);
        t.push(input.as_bytes(), &mut Vec::new());
        assert_eq!(t.end(), StreamEnd::Cut);
        let reported = Usage { input_tokens: 30, ..Usage::default() };
        assert_eq!(t.consumed(), Consumed { reported, billed: Usage { output_tokens: 10, ..reported } });
    }
}

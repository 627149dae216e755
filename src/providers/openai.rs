//! OpenAI Chat Completions (api.openai.com, its regional data-residency hosts and any
//! OpenAI-compatible server). Wire format per OpenAI's API reference: `POST
//! {base}/chat/completions`, `Authorization: Bearer`, SSE `chat.completion.chunk` events
//! ending with `data: [DONE]`, usage in a last `choices: []` chunk when
//! `stream_options.include_usage` is set.

use super::{Auth, Provider, StreamEnd, StreamTranslator, UpstreamRequest};
use crate::config::Deployment;
use crate::model::chat::ChatRequest;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::{Consumed, Meter, Usage};
use crate::util::sse::SseDecoder;
use crate::wire::openai::Chunk;
use serde_json::{Map, Value};

pub struct OpenAi;

/// The upstream body of an OpenAI-format request: the client's with the alias replaced by
/// the deployment's model (or left out, for endpoints whose path names the model) and, for
/// streams, usage requested. A body as sent is copied member by member, not re-serialised.
/// Also Azure OpenAI's, which differs only in where the model is named.
pub(crate) fn request_body(req: &ChatRequest, model: Option<&str>) -> Vec<u8> {
    let ask_usage = req.stream;
    let mut out = Vec::with_capacity(req.sent_len() + 64);
    out.push(b'{');
    let put = |out: &mut Vec<u8>, key: &str| {
        if out.len() > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).expect("a string serialises");
        out.push(b':');
    };
    let mut had_options = false;
    req.each_member(|key, value| match key {
        "model" => {
            if let Some(model) = model {
                put(&mut out, key);
                serde_json::to_writer(&mut out, model).expect("a string serialises");
            }
        }
        "stream_options" if ask_usage => {
            had_options = true;
            let mut options = match value.value() {
                Value::Object(options) => options,
                _ => Map::new(),
            };
            options.insert("include_usage".into(), Value::Bool(true));
            put(&mut out, key);
            serde_json::to_writer(&mut out, &options).expect("a JSON map serialises");
        }
        _ => {
            put(&mut out, key);
            value.write(&mut out);
        }
    });
    if ask_usage && !had_options {
        put(&mut out, "stream_options");
        out.extend_from_slice(br#"{"include_usage":true}"#);
    }
    out.push(b'}');
    out
}

impl Provider for OpenAi {
    fn build(&self, d: &Deployment, req: &ChatRequest, auth: &Auth) -> Result<UpstreamRequest, GatewayError> {
        let body = request_body(req, Some(&d.model));
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(key) = &auth.api_key {
            headers.push(("authorization", format!("Bearer {key}")));
        }
        Ok(UpstreamRequest { url: format!("{}/chat/completions", d.base_url), headers, body })
    }

    /// Already in the client's format: passed on byte for byte, read only for its usage.
    fn response(&self, _req: &ChatRequest, body: Vec<u8>) -> Result<(Vec<u8>, Option<Usage>), ErrorClass> {
        let parsed = serde_json::from_slice::<Chunk>(&body).map_err(|_| ErrorClass::Server)?;
        Ok((body, parsed.usage.map(Usage::from)))
    }

    fn classify(&self, status: u16, body: &[u8]) -> ErrorClass {
        let text = String::from_utf8_lossy(body);
        ErrorClass::of_status(status, || {
            if text.contains("context_length_exceeded") {
                ErrorClass::ContextLength
            } else if text.contains("content_filter") || text.contains("content_policy") {
                ErrorClass::ContentFilter
            } else {
                ErrorClass::BadRequest
            }
        })
    }

    fn stream(&self, req: &ChatRequest) -> Box<dyn StreamTranslator> {
        Box::new(PassThrough {
            client_wants_usage: req.client_wants_usage,
            meter: Meter::new(req.facts.input_tokens),
            ..PassThrough::default()
        })
    }
}

/// OpenAI upstream to OpenAI client: events pass through byte for byte; the gateway only
/// watches them for usage and the terminal events, and hides the usage chunk it asked for
/// on the client's behalf.
#[derive(Default)]
struct PassThrough {
    decoder: SseDecoder,
    client_wants_usage: bool,
    started: bool,
    finished: bool,
    done: bool,
    /// The usage chunk (or usage an OpenAI-compatible server sends earlier), and the
    /// characters of content, tool names and arguments relayed.
    meter: Meter,
}

impl StreamTranslator for PassThrough {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let Self { decoder, client_wants_usage, started, finished, done, meter } = self;
        decoder.push(bytes, |event| {
            let Some(data) = event.data.as_deref() else {
                // Comments keep idle connections open; pass them on.
                out.extend_from_slice(event.raw);
                return;
            };
            if data == "[DONE]" {
                *done = true;
                out.extend_from_slice(event.raw);
                return;
            }
            let Ok(chunk) = serde_json::from_slice::<Chunk>(data.as_bytes()) else {
                out.extend_from_slice(event.raw);
                return;
            };
            let usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
            if let Some(u) = chunk.usage {
                meter.reported = Some(u.into());
                *started = true;
            }
            for choice in &chunk.choices {
                if choice.finish_reason.is_some() {
                    *finished = true;
                    *started = true;
                }
                if let Some(d) = &choice.delta {
                    let len = |s: &Option<String>| s.as_deref().map_or(0, |s| s.chars().count());
                    let calls = d.tool_calls.iter().flatten().filter_map(|c| c.function.as_ref());
                    let called: usize = calls.map(|f| len(&f.name) + len(&f.arguments)).sum();
                    let text = len(&d.content) + len(&d.refusal);
                    meter.relayed_chars += text + called;
                    if text > 0 || d.tool_calls.is_some() {
                        *started = true;
                    }
                }
            }
            if !usage_only || *client_wants_usage {
                out.extend_from_slice(event.raw);
            }
        });
    }

    fn started(&self) -> bool {
        self.started
    }

    fn end(&mut self) -> StreamEnd {
        StreamEnd::of(false, self.done && self.finished, self.decoder.has_partial())
    }

    fn consumed(&self) -> Consumed {
        let complete = self.done && self.finished && !self.decoder.has_partial();
        self.meter.consumed(complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat::{self, ChatRequest};
    use crate::util::valueread::FromValue;
    use crate::wire::openai::{stream_error_event, usage_of, WireUsage};
    use serde_json::json;

    fn deployment() -> Deployment {
        Deployment::read(&serde_json::json!({
            "id": "d", "provider": "openai", "model": "gpt-4.1-mini", "base_url": "https://eu.api.openai.com/v1",
            "jurisdiction": "eu", "region": "eu", "price": {"input": "1", "output": "1"}
        }))
        .unwrap()
    }

    #[test]
    fn usage_of_reads_a_value_as_wire_usage_reads_text() {
        for text in [
            r#"{"prompt_tokens":10,"completion_tokens":3}"#,
            r#"{"prompt_tokens":10,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4},"x":1}"#,
            r#"{"prompt_tokens_details":null}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":null}}"#,
            r#"{"prompt_tokens_details":{}}"#,
            r#"{}"#,
            r#"{"prompt_tokens":"10"}"#,
            r#"{"prompt_tokens":null}"#,
            r#"{"prompt_tokens":1.5}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens_details":3}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":"4"}}"#,
            r#"null"#,
            r#"7"#,
        ] {
            let typed = serde_json::from_slice::<WireUsage>(text.as_bytes()).ok().map(Usage::from);
            let value: Value = serde_json::from_slice(text.as_bytes()).unwrap();
            assert_eq!(usage_of(&value), typed, "{text}");
        }
    }

    #[test]
    fn request_targets_the_deployment_and_keeps_every_field() {
        let req =
            chat::parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"x":[1]}"#)
                .unwrap();
        let up =
            OpenAi.build(&deployment(), &req, &Auth { api_key: Some("sk-test".into()), ..Auth::default() }).unwrap();
        assert_eq!(up.url, "https://eu.api.openai.com/v1/chat/completions");
        assert!(up.headers.contains(&("authorization", "Bearer sk-test".into())));
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "gpt-4.1-mini");
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(body["x"][0], 1);
        assert!(body.get("stream_options").is_none());
        let keyless = OpenAi.build(&deployment(), &req, &Auth::default()).unwrap();
        assert!(!keyless.headers.iter().any(|(k, _)| *k == "authorization"));
    }

    #[test]
    fn a_body_as_sent_is_copied_not_reserialised() {
        let text = br#"{"messages":[{"role":"user","content":"h\u00e9 \"q\"  x"}], "model" : "fast","temperature":1.50,"n":1e0}"#;
        let req = chat::parse(text).unwrap();
        let expected = br#"{"messages":[{"role":"user","content":"h\u00e9 \"q\"  x"}],"model":"gpt-4.1-mini","temperature":1.50,"n":1e0}"#;
        assert_eq!(
            String::from_utf8_lossy(&request_body(&req, Some("gpt-4.1-mini"))),
            String::from_utf8_lossy(expected)
        );
        req.body();
        assert_eq!(request_body(&req, Some("gpt-4.1-mini")), expected, "the same once the tree is built");
        let seed = chat::parse(br#"{"model":"m","messages":[{"role":"user"}],"seed":18446744073709551616}"#).unwrap();
        assert!(request_body(&seed, Some("x")).ends_with(br#""seed":18446744073709551616}"#), "beyond u64: no float");
        let twice = chat::parse(br#"{"model":"a","stream":true,"stream_options":{"x":1},"messages":[{"role":"user"}],"model":"b","stream_options":null}"#).unwrap();
        assert_eq!(
            request_body(&twice, Some("m")),
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"x":1},"messages":[{"role":"user"}],"model":"m","stream_options":{"include_usage":true}}"#,
            "a repeated key is repeated, and its last value is what the client meant"
        );
        let azure = br#"{"messages":[{"role":"user","content":"h\u00e9 \"q\"  x"}],"temperature":1.50,"n":1e0}"#;
        assert_eq!(request_body(&req, None), azure);
    }

    #[test]
    fn sent_and_made_bodies_become_the_same_upstream_json() {
        let bodies = [
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}]}),
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": true}),
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": null}),
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": {"include_usage": false, "k": [1]}}),
            json!({"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": false, "stream_options": {"k": 1}}),
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "é\n\u{1F600}"}]}], "model": "a", "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}], "z": {}, "y": [], "": 0}),
        ];
        for body in bodies {
            let sent = chat::parse(body.to_string().as_bytes()).unwrap();
            let made = ChatRequest::made(sent.body().clone(), sent.model.clone(), sent.stream, false, None);
            for model in [Some("gpt"), None] {
                let mut expected = body.as_object().unwrap().clone();
                match model {
                    Some(model) => expected.insert("model".into(), json!(model)),
                    None => expected.remove("model"),
                };
                if sent.stream {
                    let options = expected.entry("stream_options").or_insert(json!({}));
                    if !options.is_object() {
                        *options = json!({});
                    }
                    options["include_usage"] = json!(true);
                }
                for req in [&sent, &made] {
                    let up: Value = serde_json::from_slice(&request_body(req, model)).unwrap();
                    assert_eq!(up, Value::Object(expected.clone()), "{body} {model:?}");
                }
            }
        }
    }

    #[test]
    fn streams_ask_for_usage_and_keep_other_stream_options() {
        let req = chat::parse(
            br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"foo":1}}"#,
        )
        .unwrap();
        let body: Value =
            serde_json::from_slice(&OpenAi.build(&deployment(), &req, &Auth::default()).unwrap().body).unwrap();
        assert_eq!(body["stream_options"], serde_json::json!({"foo": 1, "include_usage": true}));
        let req = chat::parse(br#"{"model":"f","messages":[{"role":"user"}],"stream":true}"#).unwrap();
        let body: Value =
            serde_json::from_slice(&OpenAi.build(&deployment(), &req, &Auth::default()).unwrap().body).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn responses_pass_through_with_their_usage() {
        let req = chat::parse(br#"{"model":"m","messages":[{"role":"user"}]}"#).unwrap();
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let (out, usage) = OpenAi.response(&req, body.to_vec()).unwrap();
        assert_eq!(out, body);
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 5,
                cached_input_tokens: 4,
                cache_write_tokens: 0,
                web_searches: 0
            })
        );
        assert_eq!(OpenAi.response(&req, b"{}".to_vec()).unwrap().1, None);
        assert_eq!(OpenAi.response(&req, b"garbage".to_vec()).unwrap_err(), ErrorClass::Server);
    }

    #[test]
    fn classification() {
        let c = |s, b: &str| OpenAi.classify(s, b.as_bytes());
        assert_eq!(c(429, ""), ErrorClass::RateLimited);
        assert_eq!(c(529, ""), ErrorClass::Overloaded);
        assert_eq!(c(503, ""), ErrorClass::Overloaded);
        assert_eq!(c(500, ""), ErrorClass::Server);
        assert_eq!(c(502, ""), ErrorClass::Server);
        assert_eq!(c(504, ""), ErrorClass::Timeout);
        assert_eq!(c(401, ""), ErrorClass::Auth);
        assert_eq!(c(404, ""), ErrorClass::NotFound);
        assert_eq!(c(400, r#"{"error":{"code":"context_length_exceeded"}}"#), ErrorClass::ContextLength);
        assert_eq!(c(400, r#"{"error":{"code":"content_filter"}}"#), ErrorClass::ContentFilter);
        assert_eq!(c(400, "{}"), ErrorClass::BadRequest);
    }

    fn chunk(content: &str) -> String {
        format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n")
    }

    fn recorded(with_usage_chunk: bool, done: bool) -> String {
        let mut s = String::from("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
        s += &chunk("Hel");
        s += &chunk("lo");
        s += "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
        if with_usage_chunk {
            s += "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
        }
        if done {
            s += "data: [DONE]\n\n";
        }
        s
    }

    fn run(input: &str, wants_usage: bool, cut: usize) -> (Vec<u8>, StreamEnd, Consumed, bool) {
        let body = if wants_usage {
            r#"{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#
        } else {
            r#"{"model":"m","messages":[{"role":"user"}],"stream":true}"#
        };
        let req = chat::parse(body.as_bytes()).unwrap();
        let mut t = OpenAi.stream(&req);
        let mut out = Vec::new();
        t.push(&input.as_bytes()[..cut], &mut out);
        let started_early = t.started();
        t.push(&input.as_bytes()[cut..], &mut out);
        (out, t.end(), t.consumed(), started_early)
    }

    #[test]
    fn passes_through_and_hides_the_usage_chunk_at_every_split_point() {
        let input = recorded(true, true);
        for cut in 0..=input.len() {
            let (out, end, usage, _) = run(&input, false, cut);
            assert_eq!(String::from_utf8(out).unwrap(), recorded(false, true), "cut {cut}");
            assert_eq!(end, StreamEnd::Complete);
            assert_eq!(usage, Consumed::reported(Usage { input_tokens: 9, output_tokens: 2, ..Usage::default() }));
            let (out, ..) = run(&input, true, cut);
            assert_eq!(String::from_utf8(out).unwrap(), input, "cut {cut}");
        }
    }

    #[test]
    fn starts_only_at_the_first_content() {
        let input = recorded(true, true);
        let role_chunk_len = input.find("\n\n").unwrap() + 2;
        assert!(!run(&input, false, role_chunk_len).3, "a role-only chunk is not content");
        assert!(run(&input, false, role_chunk_len + chunk("Hel").len()).3);
    }

    #[test]
    fn a_stream_without_its_terminal_events_is_cut() {
        let no_done = recorded(true, false);
        assert_eq!(run(&no_done, false, 0).1, StreamEnd::Cut);
        let mut no_finish = String::from(&chunk("a"));
        no_finish += "data: [DONE]\n\n";
        assert_eq!(run(&no_finish, false, 0).1, StreamEnd::Cut);
        let mid_event = format!("{}data: {{\"id\"", recorded(true, true));
        assert_eq!(run(&mid_event, false, 0).1, StreamEnd::Cut);
        // Cut before the usage chunk: billed for an estimate of what was consumed.
        let (_, end, usage, _) = run(&chunk("xxxxx"), false, 0);
        assert_eq!(end, StreamEnd::Cut);
        let estimate = Usage { input_tokens: 4, output_tokens: 2, ..Usage::default() };
        assert_eq!(usage, Consumed::at_least(None, estimate));
        assert!(usage.is_estimated());
    }

    #[test]
    fn error_event_is_an_openai_error_chunk() {
        let e = crate::model::error::GatewayError::new(502, "upstream_error", "stream_cut", "cut");
        let ev = String::from_utf8(stream_error_event(&e)).unwrap();
        assert!(ev.starts_with("data: {\"error\":{") && ev.ends_with("\n\n"));
    }

    /// An OpenAI-compatible server that reports usage early (on its first chunk) and is cut:
    /// what was reported is a lower bound; 40 characters reached the client, 10 tokens.
    fn early_usage_then_cut() -> String {
        let early = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":0,\"total_tokens\":30}}\n\n";
        format!("{early}{}{}", chunk("0123456789abcdefghij"), chunk("0123456789abcdefghij"))
    }

    #[test]
    fn a_cut_stream_is_billed_at_least_for_what_reached_the_client() {
        let (_, end, consumed, _) = run(&early_usage_then_cut(), false, 0);
        assert_eq!(end, StreamEnd::Cut);
        let reported = Usage { input_tokens: 30, ..Usage::default() };
        assert_eq!(consumed, Consumed { reported, billed: Usage { output_tokens: 10, ..reported } });
        // The same stream, complete: its report is final. Without a report, estimated.
        let complete = format!("{}data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n", early_usage_then_cut());
        assert_eq!(run(&complete, false, 0).2, Consumed::reported(reported));
        assert!(run(&recorded(false, true), false, 0).2.is_estimated());
    }
}

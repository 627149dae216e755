//! End to end through workerd: the Anthropic Messages ingress (`POST /v1/messages`), as
//! an Anthropic SDK pointed at the gateway uses it (key in `x-api-key`, an
//! `anthropic-version` header), answered by OpenAI-format deployments (translated) and
//! Anthropic-format ones (as sent, as answered).

mod support;

use mock_provider::{Behaviour, Script};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::gateway::{gateway, mock, BUDGET_KEY, KEY};
use support::http;
use support::nonce;

fn headers_for<'a>(key: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("x-api-key", key), ("anthropic-version", "2023-06-01"), ("content-type", "application/json")];
    all.extend_from_slice(extra);
    all
}

fn messages_as(key: &str, body: &Value, extra: &[(&str, &str)]) -> http::Response {
    let url = gateway().url("/v1/messages");
    http::send("POST", &url, &headers_for(key, extra), Some(body.to_string().as_bytes())).expect("gateway answers")
}

fn messages(body: &Value) -> http::Response {
    messages_as(KEY, body, &[])
}

/// A streamed answer: its status, content type, and (event name, data) pairs.
fn stream(body: &Value) -> (u16, Option<String>, Vec<(String, Value)>) {
    let url = gateway().url("/v1/messages");
    let s = http::send_streaming("POST", &url, &headers_for(KEY, &[]), Some(body.to_string().as_bytes()))
        .expect("gateway answers");
    let (status, content_type) = (s.status, s.header("content-type").map(str::to_string));
    let text = String::from_utf8(s.collect().expect("the stream ends properly")).unwrap();
    let events = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let field = |name: &str| e.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
            let data = serde_json::from_str(field("data:")).unwrap_or_else(|_| panic!("event data is JSON: {e}"));
            (field("event:").to_string(), data)
        })
        .collect();
    (status, content_type, events)
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 200, "messages": [{"role": "user", "content": text}]})
}

fn only_upstream(needle: &str) -> Value {
    let all = mock().requests_matching(needle);
    assert_eq!(all.len(), 1, "one upstream request for {needle}");
    all[0].json()
}

fn assert_anthropic_error(r: &http::Response, status: u16, kind: &str) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    v["error"]["message"].as_str().expect("a message").to_string()
}

#[test]
fn an_openai_deployment_answers_an_anthropic_request() {
    let n = nonce("msg-openai");
    let body = json!({"model": "single", "max_tokens": 64, "system": "Be brief.", "temperature": 0.2,
        "messages": [{"role": "user", "content": format!("{n} [mock:prompt_tokens=12,completion_tokens=5,cached_tokens=4]")}]});
    let r = messages(&body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-gateway-provider"), Some("openai"));
    assert_eq!(r.header("x-gateway-deployment"), Some("us-1"));
    assert_eq!(r.header("x-gateway-tried"), Some("us-1:200 ok"));
    assert!(r.header("x-gateway-cost-usd").is_some() && r.header("x-gateway-request-id").is_some());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"), "{v}");
    assert_eq!((&v["type"], &v["role"], &v["model"]), (&json!("message"), &json!("assistant"), &json!("single")));
    assert_eq!(v["content"][0]["type"], "text");
    assert!(v["content"][0]["text"].as_str().unwrap().contains(&n), "{v}");
    assert_eq!((&v["stop_reason"], &v["stop_sequence"]), (&json!("end_turn"), &Value::Null));
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 8, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 5})
    );

    let up = only_upstream(&n);
    assert_eq!(up["model"], "model-us-1");
    assert_eq!(up["max_completion_tokens"], 64);
    assert_eq!(up["temperature"], 0.2);
    assert_eq!(up["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(up["messages"][1]["role"], "user");
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

fn streamed_text(events: &[(String, Value)]) -> String {
    events.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect()
}

#[test]
fn an_openai_deployment_streams_anthropic_events() {
    let n = nonce("msg-openai-stream");
    let mut body = ask("single", &format!("{n} [mock:chunks=4,prompt_tokens=12,completion_tokens=5]"));
    body["stream"] = json!(true);
    let (status, content_type, events) = stream(&body);
    assert_eq!(status, 200);
    assert!(content_type.unwrap().starts_with("text/event-stream"));
    assert_eq!(names(&events)[..3], ["message_start", "content_block_start", "content_block_delta"]);
    assert_eq!(names(&events)[events.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert!(events.iter().all(|(name, data)| data["type"] == name.as_str()), "{events:?}");
    assert_eq!(events[0].1["message"]["model"], "single");
    assert!(streamed_text(&events).contains(&n));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        (delta["usage"]["input_tokens"].as_u64(), delta["usage"]["output_tokens"].as_u64()),
        (Some(12), Some(5))
    );
    let up = only_upstream(&n);
    assert_eq!((&up["stream"], &up["stream_options"]["include_usage"]), (&json!(true), &json!(true)));
}

#[test]
fn an_anthropic_deployment_streams_to_an_anthropic_client() {
    let n = nonce("msg-claude-stream");
    let mut body = ask("claude", &format!("{n} [mock:chunks=3,prompt_tokens=20,completion_tokens=6]"));
    body["stream"] = json!(true);
    body["system"] = json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]);
    body["metadata"] = json!({"user_id": "user-7"});
    let (status, _, events) = stream(&body);
    assert_eq!(status, 200);
    assert_eq!(names(&events)[0], "message_start");
    assert_eq!(names(&events)[events.len() - 2..], ["message_delta", "message_stop"]);
    assert!(streamed_text(&events).contains(&n));
    // Anthropic's own events: the input counted at the start, the output at the end.
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 20);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 6);

    let upstream = mock().requests_matching(&n);
    assert_eq!(upstream[0].path, "/claude-1/v1/messages");
    let mut sent = body;
    sent["model"] = json!("model-claude-1");
    assert_eq!(upstream[0].json(), sent, "as the client sent it, cache marker included");
}

/// A request only Anthropic's format carries: extended thinking, top-k sampling and a
/// one-hour prompt cache, which needs a beta.
fn thinking_request(alias: &str, text: &str) -> Value {
    json!({"model": alias, "max_tokens": 2048, "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "Long shared context.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": text}]})
}

#[test]
fn an_anthropic_deployment_gets_the_request_as_sent_and_its_answer_comes_back_as_it_was() {
    let n = nonce("msg-native");
    let team = nonce("msg-native-team");
    let body = thinking_request("claude", &format!("{n} [mock:prompt_tokens=30,completion_tokens=7,cached_tokens=20]"));
    let beta = "extended-cache-ttl-2025-04-11";
    let r = messages_as(KEY, &body, &[("anthropic-beta", beta), ("x-gateway-team", &team)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-deployment"), Some("claude-1"));
    let v = r.json();
    // The deployment's own answer: its id and model, and the thinking block the OpenAI
    // form has no place for.
    assert!(v["id"].as_str().unwrap().starts_with("msg_mock_"), "{v}");
    assert_eq!(v["model"], "model-claude-1");
    assert_eq!(v["content"][0]["type"], "thinking", "{v}");
    assert!(v["content"][0]["signature"].is_string());
    assert!(v["content"][1]["text"].as_str().unwrap().contains(&n));
    assert_eq!(v["usage"]["cache_read_input_tokens"], 20);

    let up = mock().requests_matching(&n);
    assert_eq!(up.len(), 1);
    let mut sent = body;
    sent["model"] = json!("model-claude-1");
    assert_eq!(up[0].json(), sent);
    assert_eq!(up[0].header("anthropic-beta"), Some(beta));

    // Billed from the usage the deployment reported, cache reads included.
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 1), 1);
    let e = &gateway().d1(&format!("SELECT * FROM cost_events WHERE team = '{team}'"))[0];
    assert_eq!((e["deployment"].as_str(), e["outcome"].as_str()), (Some("claude-1"), Some("ok")));
    assert_eq!(
        (e["input_tokens"].as_u64(), e["cached_tokens"].as_u64(), e["output_tokens"].as_u64()),
        (Some(30), Some(20), Some(7))
    );
}

#[test]
fn anthropic_format_deployments_stream_as_they_sent_it_thinking_included() {
    for (alias, model, path) in [
        ("claude", "model-claude-1", "/claude-1/v1/messages"),
        ("vertex-claude", "claude-sonnet-4-6", ":streamRawPredict"),
    ] {
        let n = nonce(&format!("msg-native-stream-{alias}"));
        let mut body = thinking_request(alias, &format!("{n} [mock:chunks=3,prompt_tokens=20,completion_tokens=6]"));
        body["stream"] = json!(true);
        let (status, _, events) = stream(&body);
        assert_eq!(status, 200, "{alias}");
        assert_eq!(
            names(&events)[..6],
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start"
            ],
            "{alias}"
        );
        assert_eq!(names(&events)[events.len() - 2..], ["message_delta", "message_stop"], "{alias}");
        assert!(names(&events).contains(&"ping"), "{alias}: every event passes");
        assert_eq!(events[0].1["message"]["model"], model, "{alias}");
        assert_eq!(events[2].1["delta"]["type"], "thinking_delta", "{alias}");
        assert_eq!(events[3].1["delta"]["type"], "signature_delta", "{alias}");
        assert!(streamed_text(&events).contains(&n), "{alias}");

        let up = mock().requests_matching(&n);
        assert!(up[0].path.ends_with(path), "{alias}: {}", up[0].path);
        let sent = up[0].json();
        assert_eq!(
            (&sent["thinking"], &sent["top_k"], &sent["system"]),
            (&body["thinking"], &body["top_k"], &body["system"])
        );
    }
}

#[test]
fn claude_on_bedrock_takes_messages_requests_through_invoke_model() {
    let model = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0";
    let n = nonce("msg-bedrock");
    let mut body = thinking_request("bedrock", &format!("{n} [mock:prompt_tokens=30,completion_tokens=7]"));
    body["metadata"] = json!({"user_id": "user-7"});
    let r = messages_as(KEY, &body, &[("anthropic-beta", "context-1m-2025-08-07")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-deployment"), Some("bedrock-eu"));
    let v = r.json();
    assert_eq!((&v["model"], &v["content"][0]["type"]), (&json!(model), &json!("thinking")), "{v}");
    assert!(v["content"][1]["text"].as_str().unwrap().contains(&n));
    let up = mock().requests_matching(&n);
    assert!(up[0].path.ends_with("/invoke"), "{}", up[0].path);
    let mut sent = body.clone();
    let fields = sent.as_object_mut().unwrap();
    fields.remove("model");
    fields.remove("metadata");
    fields.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
    fields.insert("anthropic_beta".into(), json!(["context-1m-2025-08-07"]));
    assert_eq!(up[0].json(), sent);
    assert!(up[0].header("authorization").unwrap().starts_with("AWS4-HMAC-SHA256 "));

    let n = nonce("msg-bedrock-stream");
    let mut body = thinking_request("bedrock", &format!("{n} [mock:chunks=3]"));
    body["stream"] = json!(true);
    let (status, _, events) = stream(&body);
    assert_eq!(status, 200);
    assert_eq!(names(&events)[..3], ["message_start", "content_block_start", "content_block_delta"]);
    assert_eq!(events[2].1["delta"]["type"], "thinking_delta");
    assert_eq!(names(&events)[events.len() - 2..], ["message_delta", "message_stop"]);
    assert!(events.last().unwrap().1["amazon-bedrock-invocationMetrics"].is_object(), "as Bedrock sent it");
    assert!(streamed_text(&events).contains(&n));
    let up = mock().requests_matching(&n);
    assert!(up[0].path.ends_with("/invoke-with-response-stream"), "{}", up[0].path);
    assert!(up[0].json().get("stream").is_none(), "the operation says it");

    // An exception part way is Anthropic's error event, with no invented ending.
    let n = nonce("msg-bedrock-throttled");
    let mut body = ask("bedrock", &format!("{n} [mock:chunks=5,cut_after=2,error_code=ThrottlingException]"));
    body["stream"] = json!(true);
    let (status, _, events) = stream(&body);
    assert_eq!(status, 200);
    let (name, data) = events.last().unwrap();
    assert_eq!((name.as_str(), &data["error"]["type"]), ("error", &json!("rate_limit_error")), "{events:?}");
    assert!(!names(&events).contains(&"message_stop"));
}

/// `POST /v1/messages/count_tokens`, as Claude Code calls it every turn.
fn count(body: &Value, extra: &[(&str, &str)]) -> http::Response {
    let url = gateway().url("/v1/messages/count_tokens?beta=true");
    http::send("POST", &url, &headers_for(KEY, extra), Some(body.to_string().as_bytes())).expect("gateway answers")
}

#[test]
fn tokens_are_counted_by_an_anthropic_deployment_and_never_billed() {
    let n = nonce("count");
    let team = nonce("count-team");
    let body = json!({"model": "claude", "thinking": {"type": "enabled", "budget_tokens": 1024},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": format!("{n} [mock:prompt_tokens=1234]")}]});
    let r = count(&body, &[("anthropic-beta", "token-efficient-tools-2025-02-19"), ("x-gateway-team", &team)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"input_tokens": 1234}));
    assert_eq!(r.header("x-gateway-deployment"), Some("claude-1"));
    let up = mock().requests_matching(&n);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].path, "/claude-1/v1/messages/count_tokens");
    let mut sent = body;
    sent["model"] = json!("model-claude-1");
    assert_eq!(up[0].json(), sent, "as the client sent it");
    assert_eq!(up[0].header("anthropic-beta"), Some("token-efficient-tools-2025-02-19"));

    // Counting is free: a request of the same team is billed, the count is not.
    let r =
        messages_as(KEY, &ask("claude", "[mock:prompt_tokens=3,completion_tokens=1]"), &[("x-gateway-team", &team)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sql = format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'");
    assert_eq!(wait_count(&sql, 1), 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(wait_count(&sql, 1), 1, "only the request");
}

#[test]
fn claude_on_vertex_counts_tokens_at_its_count_endpoint() {
    let n = nonce("count-vertex");
    let body = json!({"model": "vertex-claude", "system": "Be brief.",
        "messages": [{"role": "user", "content": format!("{n} [mock:prompt_tokens=321]")}]});
    let r = count(&body, &[("anthropic-beta", "context-1m-2025-08-07")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"input_tokens": 321}));
    assert_eq!(r.header("x-gateway-deployment"), Some("vertex-claude"));
    let up = mock().requests_matching(&n);
    assert_eq!(up.len(), 1);
    assert!(up[0].path.ends_with("/publishers/anthropic/models/count-tokens:rawPredict"), "{}", up[0].path);
    let mut sent = body;
    sent["model"] = json!("claude-sonnet-4-6");
    sent["anthropic_version"] = json!("vertex-2023-10-16");
    assert_eq!(up[0].json(), sent);
    assert_eq!(up[0].header("anthropic-beta"), Some("context-1m-2025-08-07"));
    assert!(up[0].header("authorization").is_some_and(|a| a.starts_with("Bearer ")));
}

#[test]
fn claude_on_bedrock_counts_tokens_with_count_tokens_on_the_invoke_body() {
    let n = nonce("count-bedrock");
    let body = json!({"model": "bedrock", "system": "Be brief.",
        "messages": [{"role": "user", "content": format!("{n} [mock:prompt_tokens=55]")}]});
    let r = count(&body, &[("anthropic-beta", "context-1m-2025-08-07")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"input_tokens": 55}), "Anthropic's answer, not Bedrock's inputTokens");
    assert_eq!(r.header("x-gateway-deployment"), Some("bedrock-eu"));
    let up = mock().requests_matching(&n);
    assert_eq!(up.len(), 1);
    // The profile's foundation model (the mock, like Bedrock, refuses a profile's id).
    assert!(up[0].path.ends_with("/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"), "{}", up[0].path);
    assert!(up[0].header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")));
    let sent = up[0].json();
    let invoke = sent["input"]["invokeModel"]["body"].as_str().expect("the InvokeModel body, base64");
    assert!(!invoke.contains(&n), "encoded, not as text");
}

#[test]
fn counting_falls_back_and_refuses_what_it_cannot_count() {
    // Whichever of the alias's two Anthropic deployments comes first, failing, the other
    // counts (before its Bedrock deployment).
    let ask_count = |n: &str| json!({"model": "claude-us-or-bedrock", "messages": [{"role": "user", "content": format!("{n} [mock:prompt_tokens=7]")}]});
    let first = count(&ask_count(&nonce("count-first")), &[]).header("x-gateway-deployment").unwrap().to_string();
    let other = if first == "claude-1" { "claude-us" } else { "claude-1" };
    let n = nonce("count-fallback");
    mock().script(Script {
        tag: first.clone(),
        needle: n.clone(),
        times: None,
        behaviour: Behaviour::parse("status=529").unwrap(),
    });
    let r = count(&ask_count(&n), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"input_tokens": 7}));
    let tried = format!("{first}:529 overloaded, {other}:200 ok");
    assert_eq!(r.header("x-gateway-tried"), Some(tried.as_str()));

    let n = nonce("count-openai");
    let message = assert_anthropic_error(
        &count(&json!({"model": "single", "messages": [{"role": "user", "content": n}]}), &[]),
        400,
        "invalid_request_error",
    );
    assert!(message.contains("alias `single`") && message.contains("count tokens"), "{message}");
    assert!(mock().requests_matching(&n).is_empty());
    let unset = json!({"model": "claude-unset", "messages": [{"role": "user", "content": "x"}]});
    let message = assert_anthropic_error(&count(&unset, &[]), 503, "api_error");
    assert!(message.contains("claude-unset (its secret is not set)"), "{message}");
    let message = assert_anthropic_error(&count(&json!({"model": "claude"}), &[]), 400, "invalid_request_error");
    assert!(message.contains("`messages`"), "{message}");
}

#[test]
fn what_only_anthropic_carries_never_reaches_another_format() {
    // An alias without an Anthropic-format deployment refuses it by name.
    let n = nonce("msg-thinking-openai");
    let message = assert_anthropic_error(&messages(&thinking_request("single", &n)), 400, "invalid_request_error");
    assert!(message.contains("`thinking`") && message.contains("alias `single`"), "{message}");
    assert!(mock().requests_matching(&n).is_empty(), "nothing was sent upstream");

    // With one, the others are no fallback for it; a request the OpenAI form can carry
    // still falls back to them, translated.
    for (text, tried, status) in
        [("thinking", "claude-1:529 overloaded", 503), ("plain", "claude-1:529 overloaded, us-1:200 ok", 200)]
    {
        let n = nonce(&format!("msg-fallback-{text}"));
        mock().script(Script {
            tag: "claude-1".into(),
            needle: n.clone(),
            times: None,
            behaviour: Behaviour::parse("status=529").unwrap(),
        });
        let body =
            if text == "thinking" { thinking_request("claude-then-openai", &n) } else { ask("claude-then-openai", &n) };
        let r = messages(&body);
        assert_eq!((r.status, r.header("x-gateway-tried")), (status, Some(tried)), "{text}: {}", r.text());
        let reached: Vec<String> = mock().requests_matching(&n).into_iter().map(|r| r.tag).collect();
        assert_eq!(reached, if status == 200 { vec!["claude-1", "us-1"] } else { vec!["claude-1"] }, "{text}");
        if status == 200 {
            assert_eq!(r.json()["model"], "claude-then-openai", "the translated answer names the alias");
        }
    }
}

#[test]
fn a_stream_that_fails_midway_ends_with_an_anthropic_error_event() {
    for (alias, directive, kind) in [
        ("single", "chunks=5,cut_after=2", "api_error"),
        ("claude", "chunks=5,cut_after=2,error_code=overloaded_error", "overloaded_error"),
        // Cut without a word from Anthropic: the gateway's own error event, in its format.
        ("claude", "chunks=5,cut_after=2", "api_error"),
    ] {
        let n = nonce(&format!("msg-cut-{alias}"));
        let mut body = ask(alias, &format!("{n} [mock:{directive}]"));
        body["stream"] = json!(true);
        let (status, _, events) = stream(&body);
        assert_eq!(status, 200, "{alias}");
        assert_eq!(names(&events)[0], "message_start", "{alias}");
        assert!(names(&events).contains(&"content_block_delta"), "{alias}: {events:?}");
        let (name, data) = events.last().unwrap();
        assert_eq!((name.as_str(), &data["type"], &data["error"]["type"]), ("error", &json!("error"), &json!(kind)));
        assert!(!names(&events).contains(&"message_stop"), "{alias}: no invented ending");
    }
}

#[test]
fn a_tool_round_trip_in_anthropic_format_through_either_provider() {
    for alias in ["single", "claude"] {
        let n = nonce(&format!("msg-tool-{alias}"));
        let tools = json!([{"name": "get_weather", "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
        let question = json!({"role": "user",
            "content": format!("{n} weather in Paris? [mock:tool_call=get_weather,tool_args={{\"city\": \"Paris\"}}]")});
        let ask = json!({"model": alias, "max_tokens": 200, "tools": tools, "tool_choice": {"type": "auto"},
            "messages": [question]});
        let r = messages(&ask);
        assert_eq!(r.status, 200, "{alias}: {}", r.text());
        let v = r.json();
        assert_eq!(v["stop_reason"], "tool_use", "{alias}: {v}");
        let call = v["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").expect("a tool_use block");
        assert_eq!((&call["name"], &call["input"]), (&json!("get_weather"), &json!({"city": "Paris"})), "{alias}");
        let id = call["id"].as_str().unwrap().to_string();

        // The tool's result goes back as the next user turn, without the mock's directive.
        let n2 = nonce(&format!("msg-tool-result-{alias}"));
        let result = format!("18°C and sunny {n2}");
        let answer = json!({"model": alias, "max_tokens": 200, "tools": tools, "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": v["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": result}]},
        ]});
        let r = messages(&answer);
        assert_eq!(r.status, 200, "{alias}: {}", r.text());
        assert_eq!(r.json()["stop_reason"], "end_turn", "{alias}");
        let sent = only_upstream(&n2);
        let sent = sent["messages"].as_array().unwrap();
        if alias == "single" {
            assert_eq!(sent[1]["tool_calls"][0]["id"], id.as_str());
            assert_eq!(sent[1]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
            assert_eq!(sent[2], json!({"role": "tool", "tool_call_id": id, "content": result}));
        } else {
            assert_eq!(sent[1]["content"].as_array().unwrap().last().unwrap()["input"], json!({"city": "Paris"}));
            assert_eq!(sent[2]["content"][0], json!({"type": "tool_result", "tool_use_id": id, "content": result}));
        }
    }
}

#[test]
fn errors_have_anthropics_shape() {
    let url = gateway().url("/v1/messages");
    let body = ask("single", "hi").to_string();
    let r = http::send("POST", &url, &[("anthropic-version", "2023-06-01")], Some(body.as_bytes())).unwrap();
    assert_anthropic_error(&r, 401, "authentication_error");
    let wrong = http::send("POST", &url, &headers_for("gw-not-a-key", &[]), Some(body.as_bytes())).unwrap();
    assert_anthropic_error(&wrong, 401, "authentication_error");

    let message = assert_anthropic_error(&messages(&ask("no-such-alias", "hi")), 404, "not_found_error");
    assert!(message.contains("no-such-alias"), "{message}");

    let n = nonce("msg-no-max");
    let no_max = json!({"model": "single", "messages": [{"role": "user", "content": n}]});
    let message = assert_anthropic_error(&messages(&no_max), 400, "invalid_request_error");
    assert!(message.contains("`max_tokens`"), "{message}");
    let mut top_k = ask("single", &n);
    top_k["top_k"] = json!(5);
    let message = assert_anthropic_error(&messages(&top_k), 400, "invalid_request_error");
    assert!(message.contains("`top_k`"), "{message}");
    assert!(mock().requests_matching(&n).is_empty(), "nothing was sent upstream");

    let get = http::send("GET", &url, &headers_for(KEY, &[]), None).unwrap();
    assert_anthropic_error(&get, 405, "invalid_request_error");
    assert_eq!(get.header("allow"), Some("POST"));

    let r = messages(&ask("dead", "hi"));
    assert_anthropic_error(&r, 502, "api_error");
    assert_eq!(r.header("x-gateway-attempts"), Some("1"), "the receipt headers stay");

    let chat = gateway().chat(&json!({"model": "no-such-alias", "messages": [{"role": "user", "content": "x"}]}), &[]);
    assert_eq!((chat.status, &chat.json()["error"]["code"]), (404, &json!("model_not_found")), "OpenAI's stays");
}

/// Polls D1 until `sql`'s first row's `n` reaches `want` (the queue consumer batches).
fn wait_count(sql: &str, want: u64) -> u64 {
    let started = Instant::now();
    loop {
        let n = gateway().d1(sql).first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
        if n >= want || started.elapsed() > Duration::from_secs(40) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn messages_requests_are_billed_in_the_ledger() {
    let team = nonce("msg-ledger");
    let r =
        messages_as(KEY, &ask("single", "[mock:prompt_tokens=100,completion_tokens=10]"), &[("x-gateway-team", &team)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-gateway-request-id").unwrap().to_string();
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 1), 1);
    let rows = gateway().d1(&format!("SELECT * FROM cost_events WHERE team = '{team}'"));
    let e = &rows[0];
    assert_eq!(e["request_id"], id.as_str());
    assert_eq!((e["outcome"].as_str(), e["status"].as_u64()), (Some("ok"), Some(200)));
    assert_eq!((e["alias"].as_str(), e["deployment"].as_str()), (Some("single"), Some("us-1")));
    assert_eq!((e["input_tokens"].as_u64(), e["output_tokens"].as_u64()), (Some(100), Some(10)));
    assert_eq!(e["cost_micros"].as_u64(), Some(100 * 3 + 10 * 15));
}

#[test]
fn a_hard_budget_refuses_with_a_billing_error() {
    // Each request costs 60 micro-dollars; the key's budget is 100.
    let text = "[mock:prompt_tokens=10,completion_tokens=2]";
    let statuses: Vec<u16> = (0..3).map(|_| messages_as(BUDGET_KEY, &ask("single", text), &[]).status).collect();
    assert_eq!(statuses, [200, 200, 402]);
    let message = assert_anthropic_error(&messages_as(BUDGET_KEY, &ask("single", text), &[]), 402, "billing_error");
    assert!(message.contains("key `budgeted`"), "{message}");
}

#[test]
fn server_tools_are_refused_where_residency_restricts_and_sent_where_it_does_not() {
    // Web search runs on Anthropic's servers wherever they choose: no jurisdiction holds it.
    let n = nonce("web-search");
    let mut body = ask("claude-us-or-bedrock", &n);
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]);
    let german = [("x-gateway-geo-country", "DE"), ("x-gateway-geo-continent", "EU")];
    let r = messages_as(KEY, &body, &german);
    let message = assert_anthropic_error(&r, 400, "invalid_request_error");
    assert!(message.contains("`tools[0]` (web_search_20250305)") && message.contains("eu-callers"), "{message}");
    assert!(mock().requests_matching(&n).is_empty(), "nothing left the gateway");
    let r = messages_as(KEY, &body, &[("x-gateway-geo-country", "US")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(only_upstream(&n)["tools"][0]["type"], "web_search_20250305");
    // Its search is billed at Anthropic's $10 per 1,000, beside the tokens.
    let tokens = &r.json()["usage"];
    let (input, output) = (tokens["input_tokens"].as_u64().unwrap(), tokens["output_tokens"].as_u64().unwrap());
    let token_cost = ((input * 3_300_000 + output * 16_500_000) * 110 + 50_000_000) / 100_000_000;
    let cost: u64 = r.header("x-gateway-cost-usd").unwrap().replace('.', "").parse().unwrap();
    assert_eq!(cost, token_cost + 10_000, "one search at $0.01 on top of {token_cost} micro-dollars of tokens");
}

#[test]
fn counting_tokens_is_rate_limited_like_requests() {
    let r =
        gateway().admin("POST", "/admin/keys", Some(&json!({"id": nonce("count-limited"), "rate_limit": "RL_TINY"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    let url = gateway().url("/v1/messages/count_tokens");
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            let body =
                json!({"model": "claude", "messages": [{"role": "user", "content": nonce("count-me")}]}).to_string();
            http::send("POST", &url, &headers_for(&key, &[]), Some(body.as_bytes())).unwrap().status
        })
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 429], "RL_TINY allows three a minute");
}

/// 112 characters, in 8 pieces: a stream cut after 4 has relayed 56 of them, 14 tokens.
const LONG_REPLY: &str =
    "The quick brown fox jumps over the lazy dog while the patient gateway counts every token that reaches its client";

#[test]
fn a_cut_stream_is_billed_for_what_reached_the_client_passed_through_or_translated() {
    // Claude's stream passes through as Anthropic sent it (message_start: 1 output token);
    // Gemini's is translated into Anthropic's events (its chunks before the last: none).
    // 14 tokens of text had reached the client at the cut; at $3 / $15 per MTok.
    for (alias, deployment, reported_output) in [("claude", "claude-1", 1u64), ("gemini", "gemini", 0)] {
        let team = nonce(&format!("msg-cut-billed-{alias}"));
        let mut body = ask(alias, &format!("{team} [mock:chunks=8,cut_after=4,prompt_tokens=200,reply={LONG_REPLY}]"));
        body["stream"] = json!(true);
        let url = gateway().url("/v1/messages");
        let headers = headers_for(KEY, &[("x-gateway-team", &team)]);
        let s =
            http::send_streaming("POST", &url, &headers, Some(body.to_string().as_bytes())).expect("gateway answers");
        assert_eq!((s.status, s.header("x-gateway-deployment")), (200, Some(deployment)));
        let _ = s.collect();
        assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 1), 1);
        let e = gateway().d1(&format!("SELECT * FROM cost_events WHERE team = '{team}'")).remove(0);
        assert_eq!(e["outcome"], "cut", "{alias}: {e}");
        assert_eq!((e["input_tokens"].as_u64(), e["output_tokens"].as_u64()), (Some(200), Some(14)), "{alias}: {e}");
        assert_eq!(e["cost_micros"].as_u64(), Some(200 * 3 + 14 * 15), "{alias}: {e}");
        let estimated = (14 - reported_output) * 15;
        assert_eq!(e["cost_estimated_micros"].as_u64(), Some(estimated), "{alias}: the part above the report: {e}");
    }
}

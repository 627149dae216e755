//! The mock's Anthropic Messages format over real sockets, through the same HTTP client
//! the gateway's end-to-end tests use.

use std::io::ErrorKind;

use mock_provider::{Behaviour, MockServer, Script};
use serde_json::{json, Value};

#[path = "../../tests/support/http.rs"]
mod client;

fn start() -> MockServer {
    MockServer::start("127.0.0.1:0").unwrap()
}

fn messages_url(server: &MockServer, tag: &str) -> String {
    format!("{}/{tag}/v1/messages", server.base_url())
}

fn body(prompt: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "Be brief.",
        "messages": [{"role": "user", "content": prompt}]})
}

fn post(server: &MockServer, tag: &str, body: &Value) -> client::Response {
    let headers =
        [("content-type", "application/json"), ("x-api-key", "sk-ant-test"), ("anthropic-version", "2023-06-01")];
    client::send("POST", &messages_url(server, tag), &headers, Some(body.to_string().as_bytes())).unwrap()
}

fn streamed(prompt: &str) -> Value {
    let mut body = body(prompt);
    body["stream"] = json!(true);
    body
}

/// The stream's events as (SSE event name, data), checking the two agree.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(name.strip_prefix("event: "), data["type"].as_str(), "{e}");
            data
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn error_of(response: &client::Response) -> (String, String) {
    let body = response.json();
    assert_eq!(body["type"], "error", "{body}");
    (body["error"]["type"].as_str().unwrap().to_string(), body["error"]["message"].as_str().unwrap().to_string())
}

#[test]
fn a_normal_answer_is_a_message() {
    let server = start();
    let response = post(&server, "eu-claude", &body("hi there nonce-m1"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("request-id"), Some("req_mock_1"));
    let message = response.json();
    assert!(message["id"].as_str().unwrap().starts_with("msg_mock_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-sonnet-4-5");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hello from the mock provider (eu-claude). You said: hi there nonce-m1"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    // 9 + 17 characters of system and message text -> 7 input tokens; 11 words. Asked for
    // no inference_geo, Anthropic reports it ran anywhere.
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 11, "inference_geo": "global"})
    );
    let logged = &server.requests_matching("nonce-m1")[0];
    assert_eq!((logged.tag.as_str(), logged.path.as_str()), ("eu-claude", "/eu-claude/v1/messages"));
    assert_eq!(logged.header("x-api-key"), Some("sk-ant-test"));
}

#[test]
fn cached_tokens_are_counted_apart_from_input_tokens() {
    let server = start();
    let message = post(&server, "eu", &body("[mock:prompt_tokens=100,completion_tokens=9,cached_tokens=60]")).json();
    assert_eq!(message["usage"]["input_tokens"], 40);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 60);
    assert_eq!(message["usage"]["output_tokens"], 9);
}

#[test]
fn a_streamed_answer_has_anthropics_event_flow() {
    let server = start();
    let response = post(&server, "eu", &streamed("[mock:reply=one two three]"));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = events(&response.text());
    assert_eq!(
        types(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0]["message"];
    assert_eq!((start["content"].clone(), start["stop_reason"].clone()), (json!([]), Value::Null));
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(events[1]["content_block"], json!({"type": "text", "text": ""}));
    let text: String = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, "one two three");
    assert_eq!(events[3]["delta"], json!({"type": "text_delta", "text": "one "}));
    assert_eq!(events[7]["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
    assert_eq!(events[7]["usage"], json!({"output_tokens": 3}));
}

#[test]
fn tool_use_plain_and_streamed() {
    let server = start();
    let mut request = body(r#"[mock:tool_call=get_weather,tool_args={"city": "Paris"},chunks=3] weather?"#);
    request["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object"}}]);
    let message = post(&server, "eu", &request).json();
    assert_eq!(message["stop_reason"], "tool_use");
    let block = &message["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!((block["name"].clone(), block["input"].clone()), (json!("get_weather"), json!({"city": "Paris"})));

    request["stream"] = json!(true);
    let events = events(&post(&server, "eu", &request).text());
    assert_eq!(events[1]["content_block"]["input"], json!({}));
    assert_eq!(events[1]["content_block"]["name"], "get_weather");
    let json: String = events.iter().filter_map(|e| e["delta"]["partial_json"].as_str()).collect();
    assert_eq!(json, r#"{"city": "Paris"}"#);
    assert_eq!(events.iter().filter(|e| e["delta"]["type"] == "input_json_delta").count(), 3);
    assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "tool_use");

    request.as_object_mut().unwrap().remove("tools");
    request["stream"] = json!(false);
    assert_eq!(post(&server, "eu", &request).json()["stop_reason"], "end_turn");
}

#[test]
fn cut_after_drops_the_connection_mid_stream() {
    let server = start();
    let body = streamed("[mock:chunks=4,cut_after=2]").to_string();
    let url = messages_url(&server, "eu");
    let headers = [("anthropic-version", "2023-06-01")];
    let mut stream = client::send_streaming("POST", &url, &headers, Some(body.as_bytes())).unwrap();
    let mut raw = Vec::new();
    let error = loop {
        match stream.next_chunk() {
            Ok(Some((_, piece))) => raw.extend(piece),
            Ok(None) => panic!("a cut stream must not end normally"),
            Err(e) => break e,
        }
    };
    assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
    let events = events(&String::from_utf8(raw).unwrap());
    assert_eq!(
        types(&events),
        ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta"]
    );

    let body = streamed("[mock:cut_after=0]").to_string();
    let mut stream = client::send_streaming("POST", &url, &headers, Some(body.as_bytes())).unwrap();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.next_chunk().unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn an_error_code_with_cut_after_ends_with_an_error_event() {
    let server = start();
    let response = post(&server, "eu", &streamed("[mock:chunks=3,cut_after=1,error_code=overloaded_error]"));
    assert_eq!(response.status, 200);
    let events = events(&response.text());
    assert_eq!(types(&events), ["message_start", "content_block_start", "ping", "content_block_delta", "error"]);
    assert_eq!(events[4]["error"], json!({"type": "overloaded_error", "message": "Overloaded"}));
}

#[test]
fn errors_have_anthropics_shape() {
    let server = start();
    let answer = |spec: &str| post(&server, "eu", &body(&format!("[mock:{spec}]")));

    let overloaded = answer("status=529");
    assert_eq!(overloaded.status, 529);
    assert_eq!(error_of(&overloaded), ("overloaded_error".into(), "Overloaded".into()));
    let limited = answer("status=429");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(error_of(&limited).0, "rate_limit_error");
    assert_eq!(answer("status=429,retry_after=9").header("retry-after"), Some("9"));
    assert_eq!(error_of(&answer("status=500")).0, "api_error");
    assert_eq!(answer("status=500").header("retry-after"), None);
    assert_eq!(error_of(&answer("status=401")).0, "authentication_error");
    assert_eq!(error_of(&answer("status=403")).0, "permission_error");
    assert_eq!(error_of(&answer("status=404")), ("not_found_error".into(), "model: claude-sonnet-4-5".into()));
    assert_eq!(error_of(&answer("status=400")).0, "invalid_request_error");
    let too_long = error_of(&answer("status=400,error_code=context_length_exceeded"));
    assert_eq!(too_long.0, "invalid_request_error");
    assert!(too_long.1.starts_with("prompt is too long"), "{}", too_long.1);
    assert_eq!(error_of(&answer("status=500,error_code=overloaded_error")).0, "overloaded_error");
}

#[test]
fn scripts_apply_to_anthropic_deployments_too() {
    let server = start();
    server.script(Script {
        tag: "eu-claude".into(),
        needle: "nonce-s1".into(),
        times: Some(1),
        behaviour: Behaviour::parse("status=529").unwrap(),
    });
    assert_eq!(post(&server, "eu-claude", &body("nonce-s1")).status, 529);
    assert_eq!(post(&server, "eu-claude", &body("nonce-s1")).status, 200);
}

#[test]
fn invalid_requests_are_refused_like_anthropic_does() {
    let server = start();
    let refuse = |body: Value| {
        let response = post(&server, "eu", &body);
        assert_eq!(response.status, 400, "{}", response.text());
        let (kind, message) = error_of(&response);
        assert_eq!(kind, "invalid_request_error");
        message
    };
    let user = |text: &str| json!({"role": "user", "content": text});
    let assistant = |text: &str| json!({"role": "assistant", "content": text});
    let with = |messages: Value| json!({"model": "m", "max_tokens": 10, "messages": messages});

    assert!(refuse(json!({"model": "m", "messages": [user("x")]})).contains("max_tokens"));
    assert!(refuse(json!({"model": "m", "max_tokens": 10})).contains("messages"));
    assert!(refuse(json!({"max_tokens": 10, "messages": [user("x")]})).contains("model"));
    assert!(refuse(with(json!([]))).contains("at least one"));
    assert!(refuse(with(json!([assistant("x"), user("y")]))).contains("first message"));
    assert!(refuse(with(json!([user("x"), user("y")]))).contains("alternate"));
    assert!(refuse(with(json!([user("x"), assistant("y"), assistant("z")]))).contains("alternate"));
    assert!(refuse(with(json!([{"role": "system", "content": "x"}, user("y")]))).contains("system"));
    assert!(refuse(with(json!([{"role": "tool", "content": "x"}]))).contains("role"));
    let mut extra = with(json!([user("x")]));
    extra["n"] = json!(1);
    assert!(refuse(extra).contains("n: Extra inputs are not permitted"));
    assert!(refuse(json!("not an object")).contains("JSON"));

    let unversioned =
        client::send("POST", &messages_url(&server, "eu"), &[], Some(with(json!([user("x")])).to_string().as_bytes()))
            .unwrap();
    assert_eq!(unversioned.status, 400);
    assert!(error_of(&unversioned).1.contains("anthropic-version"));

    let tool_result = json!([user("x"), assistant("y"),
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "18C"}]}]);
    assert_eq!(post(&server, "eu", &with(tool_result)).status, 200, "tool results are user turns");
}

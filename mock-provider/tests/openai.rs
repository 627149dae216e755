//! The mock over real sockets, through the same HTTP client the gateway's end-to-end
//! tests use.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mock_provider::{Behaviour, MockServer, Script};
use serde_json::{json, Value};

#[path = "../../tests/support/http.rs"]
mod client;

fn start() -> MockServer {
    MockServer::start("127.0.0.1:0").unwrap()
}

fn chat_url(server: &MockServer, tag: &str) -> String {
    format!("{}/{tag}/v1/chat/completions", server.base_url())
}

fn chat_body(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": prompt},
    ]})
}

fn post(server: &MockServer, tag: &str, body: &Value) -> client::Response {
    let headers = [("content-type", "application/json"), ("authorization", "Bearer sk-test-key")];
    client::send("POST", &chat_url(server, tag), &headers, Some(body.to_string().as_bytes())).unwrap()
}

fn streamed(prompt: &str, include_usage: bool) -> Value {
    let mut body = chat_body(prompt);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The stream's JSON events, checking that it ends with exactly one `[DONE]`.
fn events(response: &client::Response) -> Vec<Value> {
    let mut data = client::sse_data_lines(&response.text());
    assert_eq!(data.pop().as_deref(), Some("[DONE]"), "{}", response.text());
    data.iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

fn content(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

fn script(tag: &str, needle: &str, times: Option<u32>, spec: &str) -> Script {
    Script { tag: tag.into(), needle: needle.into(), times, behaviour: Behaviour::parse(spec).unwrap() }
}

#[test]
fn a_normal_answer_has_the_chat_completion_shape() {
    let server = start();
    let response = post(&server, "eu-openai", &chat_body("hi there nonce-a1"));
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    let answer = response.json();
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(answer["model"], "gpt-4o-mini");
    let choice = &answer["choices"][0];
    assert_eq!(answer["choices"].as_array().unwrap().len(), 1);
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Hello from the mock provider (eu-openai). You said: hi there nonce-a1");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    // 26 characters of message text -> 7 prompt tokens; 11 words in the reply.
    assert_eq!(answer["usage"]["prompt_tokens"], 7);
    assert_eq!(answer["usage"]["completion_tokens"], 11);
    assert_eq!(answer["usage"]["total_tokens"], 18);
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

    let logged = server.requests_matching("nonce-a1");
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].tag, "eu-openai");
    assert_eq!(logged[0].method, "POST");
    assert_eq!(logged[0].path, "/eu-openai/v1/chat/completions");
    assert_eq!(logged[0].header("Authorization"), Some("Bearer sk-test-key"));
    assert_eq!(logged[0].json()["model"], "gpt-4o-mini");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn overrides_and_n_choices() {
    let server = start();
    let mut body =
        chat_body("[mock:reply=Bonjour tout le monde,prompt_tokens=100,completion_tokens=20,cached_tokens=60]");
    body["n"] = json!(2);
    let answer = post(&server, "eu-openai", &body).json();
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[1]["message"]["content"], "Bonjour tout le monde");
    assert_eq!(answer["usage"]["prompt_tokens"], 100);
    assert_eq!(answer["usage"]["total_tokens"], 120);
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 60);
}

#[test]
fn a_streamed_answer_arrives_chunk_by_chunk() {
    let server = start();
    let body = streamed("[mock:reply=one two three,chunk_delay_ms=50]", false);
    let mut stream =
        client::send_streaming("POST", &chat_url(&server, "eu-openai"), &[], Some(body.to_string().as_bytes()))
            .unwrap();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    let mut arrivals = Vec::new();
    let mut raw = Vec::new();
    while let Some((at, piece)) = stream.next_chunk().unwrap() {
        arrivals.push(at);
        raw.extend(piece);
    }
    // role, 3 words, finish, [DONE]: each its own write, 50 ms apart from the role on.
    assert!(arrivals.len() >= 5, "{} pieces", arrivals.len());
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= Duration::from_millis(190), "{spread:?}");

    let response = client::Response { status: 200, headers: vec![], body: raw };
    let events = events(&response);
    assert_eq!(events.len(), 5);
    let first = &events[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "gpt-4o-mini");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(events.iter().all(|e| e["id"] == first["id"] && e.get("usage").is_none()));
    assert_eq!(content(&events), "one two three");
    assert_eq!(events[1]["choices"][0]["delta"]["content"], "one ");
    let last = &events[4]["choices"][0];
    assert_eq!(last["finish_reason"], "stop");
    assert_eq!(last["delta"], json!({}));
    assert!(events[..4].iter().all(|e| e["choices"][0]["finish_reason"].is_null()));
}

#[test]
fn include_usage_adds_a_usage_chunk_before_done() {
    let server = start();
    let response = post(&server, "eu-openai", &streamed("[mock:chunks=3] count these words please", true));
    let events = events(&response);
    // role + 3 content + finish + usage
    assert_eq!(events.len(), 6);
    assert!(events[..5].iter().all(|e| e["usage"].is_null() && e.get("usage").is_some()));
    let usage_chunk = &events[5];
    assert_eq!(usage_chunk["choices"], json!([]));
    let completion = usage_chunk["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(completion as usize, content(&events).split_whitespace().count());
    // 9 + 40 characters of message text.
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 13);
}

#[test]
fn streamed_n_choices_interleave() {
    let server = start();
    let mut body = streamed("[mock:reply=a b]", false);
    body["n"] = json!(2);
    let events = events(&post(&server, "eu-openai", &body));
    let of = |index: u64| -> String {
        let mine = events.iter().filter(|e| e["choices"][0]["index"] == index);
        mine.filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
    };
    assert_eq!(events.len(), 8);
    assert_eq!((of(0), of(1)), ("a b".to_string(), "a b".to_string()));
}

#[test]
fn tool_calls_plain_and_streamed() {
    let server = start();
    let mut body = chat_body(r#"[mock:tool_call=get_weather,tool_args={"city": "Paris"}] weather?"#);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]);
    let answer = post(&server, "eu-openai", &body).json();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city": "Paris"}"#);

    body["stream"] = json!(true);
    let events = events(&post(&server, "eu-openai", &body));
    let first = &events[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!((first["index"].clone(), first["type"].clone()), (json!(0), json!("function")));
    assert_eq!(first["function"]["name"], "get_weather");
    let arguments: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"city": "Paris"}"#);
    assert_eq!(events.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

    // Without `tools` in the request the directive falls back to a text answer.
    body.as_object_mut().unwrap().remove("tools");
    body["stream"] = json!(false);
    assert_eq!(post(&server, "eu-openai", &body).json()["choices"][0]["finish_reason"], "stop");
}

#[test]
fn cut_after_closes_without_finish_or_done() {
    let server = start();
    let body = streamed("[mock:chunks=4,cut_after=2] nonce-cut", true);
    let url = chat_url(&server, "eu-openai");
    let mut stream = client::send_streaming("POST", &url, &[], Some(body.to_string().as_bytes())).unwrap();
    assert_eq!(stream.status, 200);
    let mut raw = Vec::new();
    let error = loop {
        match stream.next_chunk() {
            Ok(Some((_, piece))) => raw.extend(piece),
            Ok(None) => panic!("a cut stream must not end normally"),
            Err(e) => break e,
        }
    };
    assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
    let text = String::from_utf8(raw).unwrap();
    let data = client::sse_data_lines(&text);
    assert_eq!(data.len(), 3, "role + 2 content chunks: {text}");
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"stop"));
    assert!(client::send("POST", &url, &[], Some(body.to_string().as_bytes())).is_err());

    let body = streamed("[mock:cut_after=0]", false);
    let mut stream = client::send_streaming("POST", &url, &[], Some(body.to_string().as_bytes())).unwrap();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.next_chunk().unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn scripts_apply_by_tag_and_needle_and_run_out() {
    let server = start();
    server.script(script("us-openai", "nonce-s1", Some(1), "status=503"));
    server.script(script("*", "nonce-s2", None, "status=429,retry_after=7"));

    assert_eq!(post(&server, "eu-openai", &chat_body("nonce-s1")).status, 200, "other tag");
    let failed = post(&server, "us-openai", &chat_body("nonce-s1"));
    assert_eq!(failed.status, 503);
    assert_eq!(failed.json()["error"]["type"], "server_error");
    assert_eq!(post(&server, "us-openai", &chat_body("nonce-s1")).status, 200, "used up");

    for tag in ["eu-openai", "us-openai"] {
        let limited = post(&server, tag, &chat_body("nonce-s2"));
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after"), Some("7"));
        let error = &limited.json()["error"];
        assert_eq!(error["code"], "rate_limit_exceeded");
        assert!(error["message"].as_str().unwrap().contains("gpt-4o-mini"));
        assert!(error.get("param").is_some());
    }
    server.clear_scripts();
    assert_eq!(post(&server, "eu-openai", &chat_body("nonce-s2")).status, 200);
}

#[test]
fn error_bodies_look_like_the_real_ones() {
    let server = start();
    let answer = |spec: &str| post(&server, "eu-openai", &chat_body(&format!("[mock:{spec}]")));

    let limited = answer("status=429");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json()["error"]["type"], "requests");

    let overloaded = answer("status=529");
    assert_eq!(overloaded.status, 529);
    assert_eq!(
        overloaded.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    let too_long = answer("status=400,error_code=context_length_exceeded").json();
    assert_eq!(too_long["error"]["code"], "context_length_exceeded");
    assert_eq!(too_long["error"]["type"], "invalid_request_error");
    assert_eq!(answer("status=400,error_code=content_filter").json()["error"]["code"], "content_filter");
    assert_eq!(answer("status=401").json()["error"]["code"], "invalid_api_key");
    let server_error = answer("status=500");
    assert_eq!(server_error.status, 500);
    assert_eq!(server_error.header("retry-after"), None);
    assert_eq!(server_error.json()["error"]["code"], Value::Null);

    let typo = answer("stauts=500");
    assert_eq!(typo.status, 400);
    assert!(typo.json()["error"]["message"].as_str().unwrap().contains("stauts"));
}

#[test]
fn invalid_requests_are_refused_like_openai_does() {
    let server = start();
    let url = chat_url(&server, "eu-openai");
    let refuse = |body: &[u8]| {
        let response = client::send("POST", &url, &[], Some(body)).unwrap();
        assert_eq!(response.status, 400, "{}", response.text());
        response.json()["error"].clone()
    };
    assert_eq!(refuse(b"{not json")["type"], "invalid_request_error");
    assert!(refuse(br#"{"messages": []}"#)["message"].as_str().unwrap().contains("model"));
    assert_eq!(refuse(br#"{"model": "m"}"#)["param"], "messages");
    assert_eq!(refuse(br#"{"model": "m", "messages": []}"#)["code"], "empty_array");
}

#[test]
fn delays_hold_back_the_first_byte() {
    let server = start();
    let started = std::time::Instant::now();
    let response = post(&server, "eu-openai", &chat_body("[mock:first_byte_delay_ms=150]"));
    assert_eq!(response.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn azure_and_v1_paths_and_models() {
    let server = start();
    let base = server.base_url();
    let body = chat_body("nonce-az").to_string();
    for path in [
        "/westeurope/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
        "/westeurope/openai/v1/chat/completions",
        "/mistral/v1/chat/completions",
    ] {
        let headers = [("api-key", "azure-key"), ("authorization", "Bearer mistral-key")];
        let response = client::send("POST", &format!("{base}{path}"), &headers, Some(body.as_bytes())).unwrap();
        assert_eq!(response.json()["object"], "chat.completion", "{path}");
    }
    let logged = server.requests_matching("nonce-az");
    assert_eq!(logged[0].tag, "westeurope");
    assert!(logged[0].path.ends_with("?api-version=2024-10-21"));

    let models = client::send("GET", &format!("{base}/eu-openai/v1/models"), &[], None).unwrap();
    assert_eq!(models.json()["object"], "list");
    let missing = client::send("GET", &format!("{base}/eu-openai/v1/chat/completions"), &[], None).unwrap();
    assert_eq!(missing.status, 404);
}

#[test]
fn the_control_api_scripts_and_shows_the_log() {
    let server = start();
    let base = server.base_url();
    let control = |method: &str, path: &str, body: Option<&str>| {
        client::send(method, &format!("{base}/_mock/{path}"), &[], body.map(str::as_bytes)).unwrap()
    };
    assert_eq!(control("GET", "health", None).json()["status"], "ok");
    let script = r#"{"tag": "eu-openai", "needle": "nonce c/1", "times": 1, "status": 500}"#;
    assert_eq!(control("POST", "script", Some(script)).status, 200);
    assert_eq!(control("POST", "script", Some(r#"{"bogus": 1}"#)).status, 400);
    assert_eq!(post(&server, "eu-openai", &chat_body("nonce c/1")).status, 500);
    assert_eq!(post(&server, "eu-openai", &chat_body("nonce c/1")).status, 200);

    control("POST", "script", Some(r#"{"needle": "nonce c/1", "status": 503}"#));
    assert_eq!(control("DELETE", "script", None).status, 200);
    assert_eq!(post(&server, "eu-openai", &chat_body("nonce c/1")).status, 200);

    let logged = control("GET", "requests?needle=nonce+c%2F1", None).json();
    let logged = logged.as_array().unwrap();
    assert_eq!(logged.len(), 3, "control calls are not logged");
    assert_eq!(logged[0]["tag"], "eu-openai");
    assert!(logged[0]["received_at_ms"].as_u64().is_some());
    assert!(logged[0]["headers"].as_array().unwrap().contains(&json!(["authorization", "Bearer sk-test-key"])));
}

/// Reads one Content-Length answer off a kept-alive connection.
fn read_answer(reader: &mut BufReader<TcpStream>) -> (String, Value) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status.trim().to_string(), serde_json::from_slice(&body).unwrap())
}

#[test]
fn keep_alive_serves_sequential_requests_on_one_connection() {
    let server = start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for prompt in ["first nonce-ka", "second nonce-ka"] {
        let body = chat_body(prompt).to_string();
        let request = format!(
            "POST /eu-openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let (status, answer) = read_answer(&mut reader);
        assert_eq!(status, "HTTP/1.1 200 OK");
        let reply = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(reply.ends_with(prompt), "{reply}");
    }
    assert_eq!(server.requests_matching("nonce-ka").len(), 2);
}

#[test]
fn chunked_request_bodies_and_expect_continue() {
    let server = start();
    let body = chat_body("chunked nonce-ch").to_string();
    let (a, b) = body.split_at(10);
    let chunked = format!("{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-trailer: 1\r\n\r\n", a.len(), b.len());
    let headers = [("transfer-encoding", "chunked"), ("expect", "100-continue")];
    let response = client::send("POST", &chat_url(&server, "eu-openai"), &headers, Some(chunked.as_bytes())).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(server.requests_matching("nonce-ch")[0].body, body);
}

#[test]
fn a_malformed_request_harms_only_its_connection() {
    let server = start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream.write_all(b"POST /x HTTP/1.1\r\nContent-Length: lots\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("Connection: close"));
    assert_eq!(post(&server, "eu-openai", &chat_body("still alive")).status, 200);
}

#[test]
fn dropping_the_server_stops_accepting() {
    let server = start();
    let port = server.port();
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn the_client_refuses_other_hosts() {
    for url in ["http://localhost:1/x", "https://127.0.0.1:1/", "http://10.0.0.1:80/", "http://127.0.0.1.evil:1/"] {
        let error = client::send("GET", url, &[], None).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{url}");
    }
}

#[test]
fn the_library_rejects_non_loopback_addresses() {
    assert!(MockServer::start("0.0.0.0:0").is_err());
}

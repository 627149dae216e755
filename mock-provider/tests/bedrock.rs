//! The mock's Bedrock Converse format over real sockets, through the same HTTP client the
//! gateway's end-to-end tests use.

use std::io::ErrorKind;

use mock_provider::{Behaviour, MockServer, Script};
use serde_json::{json, Value};

#[path = "../../tests/support/http.rs"]
mod client;

const MODEL_PATH: &str = "eu.anthropic.claude-3-haiku-20240307-v1%3A0";

/// A SigV4 `Authorization` of the right shape (the mock checks the shape, not the
/// signature, which needs the secret).
const SIGV4: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250615/eu-central-1/bedrock/aws4_request, \
    SignedHeaders=content-type;host;x-amz-date, \
    Signature=8566fecf0690c4f4ace600348f1b3524c785471c0d0b190d960f02551eaa16df";
const AMZ_DATE: &str = "20250615T120000Z";

fn start() -> MockServer {
    MockServer::start("127.0.0.1:0").unwrap()
}

fn url(server: &MockServer, tag: &str, operation: &str) -> String {
    format!("{}/{tag}/model/{MODEL_PATH}/{operation}", server.base_url())
}

fn body(prompt: &str) -> Value {
    json!({"system": [{"text": "Be brief."}], "messages": [{"role": "user", "content": [{"text": prompt}]}]})
}

fn post_with(server: &MockServer, operation: &str, headers: &[(&str, &str)], body: &Value) -> client::Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    client::send("POST", &url(server, "eu", operation), &all, Some(body.to_string().as_bytes())).unwrap()
}

fn post(server: &MockServer, body: &Value) -> client::Response {
    post_with(server, "converse", &[("authorization", "Bearer bedrock-api-key")], body)
}

fn post_stream(server: &MockServer, body: &Value) -> client::Response {
    post_with(server, "converse-stream", &[("authorization", SIGV4), ("x-amz-date", AMZ_DATE)], body)
}

/// CRC-32 (ISO-HDLC), for checking frames apart from both the mock's writer and the
/// gateway's decoder.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One decoded frame: its string headers and its JSON payload.
#[derive(Debug)]
struct Frame {
    headers: Vec<(String, String)>,
    payload: Value,
}

impl Frame {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn event_type(&self) -> &str {
        self.header(":event-type").or(self.header(":exception-type")).unwrap()
    }
}

/// Splits a whole event-stream body into frames, checking both CRCs of each.
fn decode(mut bytes: &[u8]) -> Vec<Frame> {
    let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap());
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let total = be32(bytes) as usize;
        let headers_len = be32(&bytes[4..]) as usize;
        assert_eq!(be32(&bytes[8..]), crc32(&bytes[..8]), "prelude CRC");
        assert_eq!(be32(&bytes[total - 4..]), crc32(&bytes[..total - 4]), "message CRC");
        let (mut raw, payload) = bytes[12..total - 4].split_at(headers_len);
        let mut headers = Vec::new();
        while !raw.is_empty() {
            let name_len = raw[0] as usize;
            let name = String::from_utf8(raw[1..1 + name_len].to_vec()).unwrap();
            assert_eq!(raw[1 + name_len], 7, "string header");
            let value_len = u16::from_be_bytes([raw[2 + name_len], raw[3 + name_len]]) as usize;
            let value = String::from_utf8(raw[4 + name_len..4 + name_len + value_len].to_vec()).unwrap();
            headers.push((name, value));
            raw = &raw[4 + name_len + value_len..];
        }
        frames.push(Frame { headers, payload: serde_json::from_slice(payload).unwrap() });
        bytes = &bytes[total..];
    }
    frames
}

fn types(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(Frame::event_type).collect()
}

fn error_of(response: &client::Response) -> (String, String) {
    let kind = response.header("x-amzn-errortype").expect("x-amzn-ErrorType").split(':').next().unwrap().to_string();
    (kind, response.json()["message"].as_str().unwrap().to_string())
}

#[test]
fn a_normal_answer_is_converse_output() {
    let server = start();
    let response = post(&server, &body("hi there nonce-b1"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.header("x-amzn-requestid").is_some());
    assert_eq!(
        response.json(),
        json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": "Hello from the mock provider (eu). You said: hi there nonce-b1"}]}},
            "stopReason": "end_turn",
            // 9 + 17 characters of system and message text -> 7 input tokens; 11 words.
            "usage": {"inputTokens": 7, "outputTokens": 11, "totalTokens": 18},
            "metrics": {"latencyMs": 1},
        })
    );
    let logged = &server.requests_matching("nonce-b1")[0];
    assert_eq!(logged.tag, "eu");
    assert_eq!(logged.path, format!("/eu/model/{MODEL_PATH}/converse"));
    assert_eq!(logged.header("authorization"), Some("Bearer bedrock-api-key"));
}

#[test]
fn cached_tokens_are_counted_apart_from_input_tokens() {
    let server = start();
    let answer = post(&server, &body("[mock:prompt_tokens=100,completion_tokens=9,cached_tokens=60]")).json();
    assert_eq!(
        answer["usage"],
        json!({"inputTokens": 40, "outputTokens": 9, "totalTokens": 109, "cacheReadInputTokens": 60,
            "cacheWriteInputTokens": 0})
    );
}

#[test]
fn a_streamed_answer_is_event_stream_frames() {
    let server = start();
    let response = post_stream(&server, &body("[mock:reply=one two three,prompt_tokens=12]"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/vnd.amazon.eventstream"));
    let frames = decode(&response.body);
    assert_eq!(
        types(&frames),
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    for frame in &frames {
        assert_eq!(frame.header(":message-type"), Some("event"));
        assert_eq!(frame.header(":content-type"), Some("application/json"));
        assert!(frame.payload["p"].as_str().is_some_and(|p| !p.is_empty()), "padded: {:?}", frame.payload);
    }
    let text: String = frames.iter().filter_map(|f| f.payload["delta"]["text"].as_str()).collect();
    assert_eq!(text, "one two three");
    assert_eq!(frames[0].payload["role"], "assistant");
    assert_eq!(frames[1].payload["contentBlockIndex"], 0);
    assert_eq!(frames[5].payload["stopReason"], "end_turn");
    assert_eq!(frames[6].payload["usage"], json!({"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}));
}

#[test]
fn tool_use_plain_and_streamed() {
    let server = start();
    let mut request = body(r#"[mock:tool_call=get_weather,tool_args={"city": "Paris"},chunks=3] weather?"#);
    request["toolConfig"] =
        json!({"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]});
    let answer = post(&server, &request).json();
    assert_eq!(answer["stopReason"], "tool_use");
    let tool_use = &answer["output"]["message"]["content"][0]["toolUse"];
    assert!(tool_use["toolUseId"].as_str().unwrap().starts_with("tooluse_"));
    assert_eq!((tool_use["name"].clone(), tool_use["input"].clone()), (json!("get_weather"), json!({"city": "Paris"})));

    let frames = decode(&post_stream(&server, &request).body);
    assert_eq!(types(&frames)[..2], ["messageStart", "contentBlockStart"]);
    assert_eq!(frames[1].payload["start"]["toolUse"]["name"], "get_weather");
    assert!(frames[1].payload["start"]["toolUse"]["toolUseId"].as_str().unwrap().starts_with("tooluse_"));
    let input: String = frames.iter().filter_map(|f| f.payload["delta"]["toolUse"]["input"].as_str()).collect();
    assert_eq!(input, r#"{"city": "Paris"}"#);
    assert_eq!(frames.iter().filter(|f| f.payload["delta"]["toolUse"].is_object()).count(), 3);
    assert_eq!(frames[frames.len() - 2].payload["stopReason"], "tool_use");

    request.as_object_mut().unwrap().remove("toolConfig");
    assert_eq!(post(&server, &request).json()["stopReason"], "end_turn");
}

#[test]
fn cut_after_drops_the_connection_mid_stream() {
    let server = start();
    let request = body("[mock:chunks=4,cut_after=2]").to_string();
    let headers = [("authorization", "Bearer k")];
    let mut stream =
        client::send_streaming("POST", &url(&server, "eu", "converse-stream"), &headers, Some(request.as_bytes()))
            .unwrap();
    let mut raw = Vec::new();
    let error = loop {
        match stream.next_chunk() {
            Ok(Some((_, piece))) => raw.extend(piece),
            Ok(None) => panic!("a cut stream must not end normally"),
            Err(e) => break e,
        }
    };
    assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
    assert_eq!(types(&decode(&raw)), ["messageStart", "contentBlockDelta", "contentBlockDelta"]);

    let request = body("[mock:cut_after=0]").to_string();
    let mut stream =
        client::send_streaming("POST", &url(&server, "eu", "converse-stream"), &headers, Some(request.as_bytes()))
            .unwrap();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.next_chunk().unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn an_error_code_with_cut_after_ends_with_an_exception_frame() {
    let server = start();
    let response = post_stream(&server, &body("[mock:chunks=3,cut_after=1,error_code=ThrottlingException]"));
    assert_eq!(response.status, 200);
    let frames = decode(&response.body);
    assert_eq!(types(&frames), ["messageStart", "contentBlockDelta", "throttlingException"]);
    let exception = &frames[2];
    assert_eq!(exception.header(":message-type"), Some("exception"));
    assert_eq!(exception.payload, json!({"message": "Mock stream error"}));
    let response = post_stream(&server, &body("[mock:cut_after=0,error_code=modelStreamErrorException]"));
    assert_eq!(types(&decode(&response.body)), ["messageStart", "modelStreamErrorException"]);
}

#[test]
fn errors_have_bedrocks_shape() {
    let server = start();
    let answer = |spec: &str| post(&server, &body(&format!("[mock:{spec}]")));
    let throttled = answer("status=429");
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("1"));
    assert!(throttled.header("x-amzn-errortype").unwrap().starts_with("ThrottlingException:http://"));
    assert_eq!(
        error_of(&throttled),
        ("ThrottlingException".into(), "Too many requests, please wait before trying again.".into())
    );
    assert_eq!(answer("status=429,retry_after=9").header("retry-after"), Some("9"));
    let unavailable = answer("status=503");
    assert_eq!((unavailable.status, error_of(&unavailable).0), (503, "ServiceUnavailableException".into()));
    assert_eq!(unavailable.header("retry-after"), None);
    for (status, kind) in [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (408, "ModelTimeoutException"),
        (424, "ModelErrorException"),
        (500, "InternalServerException"),
    ] {
        let response = answer(&format!("status={status}"));
        assert_eq!((response.status, error_of(&response).0), (status, kind.to_string()));
    }
    let too_long = error_of(&answer("status=400,error_code=context_length_exceeded"));
    assert_eq!(too_long, ("ValidationException".into(), "Input is too long for requested model.".into()));
    assert_eq!(
        error_of(&answer("status=400,error_code=ServiceQuotaExceededException")).0,
        "ServiceQuotaExceededException"
    );
}

#[test]
fn requests_need_a_bearer_key_or_a_sigv4_shaped_signature() {
    let server = start();
    let request = body("auth");
    let with = |headers: &[(&str, &str)]| post_with(&server, "converse", headers, &request);

    let anonymous = with(&[]);
    assert_eq!(anonymous.status, 403);
    assert_eq!(
        error_of(&anonymous),
        ("MissingAuthenticationTokenException".into(), "Missing Authentication Token".into())
    );
    assert_eq!(with(&[("authorization", SIGV4), ("x-amz-date", AMZ_DATE)]).status, 200);
    assert_eq!(with(&[("authorization", "Bearer k")]).status, 200);

    let refused = |headers: &[(&str, &str)], needle: &str| {
        let response = with(headers);
        assert_eq!(response.status, 403, "{needle}");
        let (kind, message) = error_of(&response);
        assert_eq!(kind, "InvalidSignatureException");
        assert!(message.contains(needle), "`{message}` should mention `{needle}`");
    };
    refused(&[("authorization", "Bearer ")], "empty bearer");
    refused(&[("authorization", "Basic dTpw")], "neither");
    refused(&[("authorization", SIGV4)], "x-amz-date");
    refused(&[("authorization", SIGV4), ("x-amz-date", "20250616T000000Z")], "x-amz-date");
    refused(&[("authorization", &SIGV4.replace("/bedrock/", "/s3/")), ("x-amz-date", AMZ_DATE)], "`bedrock`");
    refused(&[("authorization", &SIGV4.replace(";host", "")), ("x-amz-date", AMZ_DATE)], "host and x-amz-date");
    refused(
        &[("authorization", SIGV4), ("x-amz-date", AMZ_DATE), ("x-amz-security-token", "t")],
        "x-amz-security-token",
    );
    refused(&[("authorization", &SIGV4.replace("Signature=8566", "Signature=")), ("x-amz-date", AMZ_DATE)], "64");
    refused(&[("authorization", "AWS4-HMAC-SHA256 Credential=a/b")], "lacks");
}

#[test]
fn invalid_requests_are_refused_like_bedrock_does() {
    let server = start();
    let refuse = |body: Value| {
        let response = post(&server, &body);
        assert_eq!(response.status, 400, "{}", response.text());
        let (kind, message) = error_of(&response);
        assert_eq!(kind, "ValidationException");
        message
    };
    let user = |text: &str| json!({"role": "user", "content": [{"text": text}]});
    let assistant = |text: &str| json!({"role": "assistant", "content": [{"text": text}]});
    let with = |messages: Value| json!({"messages": messages});

    let mut with_model = with(json!([user("x")]));
    with_model["model"] = json!("eu.anthropic.claude");
    assert!(refuse(with_model).contains("extraneous key [model] is not permitted"));
    assert!(refuse(with(json!([]))).contains("start with a user message"));
    assert!(refuse(with(json!([assistant("x"), user("y")]))).contains("start with a user message"));
    assert!(refuse(with(json!([user("x"), user("y")]))).contains("alternate"));
    assert!(refuse(with(json!([{"role": "system", "content": [{"text": "x"}]}]))).contains("role"));
    assert!(refuse(with(json!([{"role": "user", "content": []}]))).contains("messages.0 is empty"));
    assert!(refuse(with(json!([user(" ")]))).contains("messages.0.content.0 is blank"));
    let tool_history = json!([user("x"),
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [{"text": "18C"}]}}]}]);
    assert!(refuse(with(tool_history.clone())).contains("toolConfig field must be defined"));
    let mut with_tools = with(tool_history);
    with_tools["toolConfig"] = json!({"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {}}}}]});
    assert_eq!(post(&server, &with_tools).status, 200, "tool results are user turns");
    let mut hot = with(json!([user("x")]));
    hot["inferenceConfig"] = json!({"temperature": 1.5});
    assert!(refuse(hot).contains("inferenceConfig.temperature"));
}

#[test]
fn scripts_apply_to_bedrock_deployments_too() {
    let server = start();
    server.script(Script {
        tag: "eu".into(),
        needle: "nonce-s2".into(),
        times: Some(1),
        behaviour: Behaviour::parse("status=503").unwrap(),
    });
    assert_eq!(post(&server, &body("nonce-s2")).status, 503);
    assert_eq!(post(&server, &body("nonce-s2")).status, 200);
}

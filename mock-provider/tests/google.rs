//! The mock's Google formats over real sockets: the Gemini API, the OAuth token endpoint,
//! and Vertex AI's Gemini and Claude (rawPredict) paths, which take only tokens it issued.

use std::time::{SystemTime, UNIX_EPOCH};

use mock_provider::{Behaviour, MockServer, Script};
use serde_json::{json, Value};

#[path = "../../tests/support/http.rs"]
mod client;

fn start() -> MockServer {
    MockServer::start("127.0.0.1:0").unwrap()
}

fn post(server: &MockServer, path: &str, headers: &[(&str, &str)], body: &[u8]) -> client::Response {
    client::send("POST", &format!("{}{path}", server.base_url()), headers, Some(body)).unwrap()
}

fn gemini_body(prompt: &str) -> Value {
    json!({"systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": prompt}]}]})
}

const GEMINI: &str = "/gemini/v1beta/models/gemini-2.5-flash";
const KEY: [(&str, &str); 1] = [("x-goog-api-key", "AIza-test")];

fn events(text: &str) -> Vec<Value> {
    assert!(text.split("\r\n\r\n").filter(|e| !e.is_empty()).all(|e| e.starts_with("data: ")), "{text}");
    client::sse_data_lines(&text.replace("\r\n", "\n")).iter().map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[test]
fn a_gemini_answer_has_candidates_and_usage() {
    let server = start();
    let r = post(
        &server,
        &format!("{GEMINI}:generateContent"),
        &KEY,
        gemini_body("hi there [mock:cached_tokens=2]").to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    let candidate = &answer["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(candidate["content"]["parts"][0]["text"], "Hello from the mock provider (gemini). You said: hi there");
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(answer["modelVersion"], "gemini-2.5-flash");
    // "Be brief." and the prompt: 9 + 31 characters, 10 tokens; 10 words.
    assert_eq!(
        answer["usageMetadata"],
        json!({"promptTokenCount": 10, "candidatesTokenCount": 10, "totalTokenCount": 20, "cachedContentTokenCount": 2})
    );
}

#[test]
fn a_gemini_stream_is_sse_ending_with_the_finish_reason() {
    let server = start();
    let path = format!("{GEMINI}:streamGenerateContent?alt=sse");
    let r = post(
        &server,
        &path,
        &KEY,
        gemini_body("one two three [mock:chunks=3,completion_tokens=3]").to_string().as_bytes(),
    );
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = events(&r.text());
    assert_eq!(events.len(), 4);
    let text: String =
        events.iter().filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
    assert!(text.ends_with("You said: one two three"), "{text}");
    assert!(events[..3].iter().all(|e| e["candidates"][0].get("finishReason").is_none()));
    assert_eq!(events[3]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[3]["usageMetadata"]["candidatesTokenCount"], 3);
    let unframed =
        post(&server, &format!("{GEMINI}:streamGenerateContent"), &KEY, gemini_body("x").to_string().as_bytes());
    assert_eq!(unframed.status, 400);
}

#[test]
fn function_calls_carry_a_thought_signature() {
    let server = start();
    let mut body = gemini_body("weather? [mock:tool_call=get_weather,tool_args={\"city\": \"Paris\"}]");
    body["tools"] =
        json!([{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}]}]);
    let r = post(&server, &format!("{GEMINI}:generateContent"), &KEY, body.to_string().as_bytes());
    let part = &r.json()["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"], json!({"name": "get_weather", "args": {"city": "Paris"}}));
    assert!(part["thoughtSignature"].as_str().is_some_and(|s| !s.is_empty()));
    let stream = post(&server, &format!("{GEMINI}:streamGenerateContent?alt=sse"), &KEY, body.to_string().as_bytes());
    let events = events(&stream.text());
    assert_eq!(events.len(), 1, "the call arrives whole, with the finish");
    assert_eq!(events[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"], "get_weather");
}

#[test]
fn gemini_errors_faults_and_refusals() {
    let server = start();
    let call = |headers: &[(&str, &str)], body: &Value| {
        post(&server, &format!("{GEMINI}:generateContent"), headers, body.to_string().as_bytes())
    };
    assert_eq!(call(&[], &gemini_body("x")).status, 403, "no key");
    let busy = call(&KEY, &gemini_body("[mock:status=503]"));
    assert_eq!((busy.status, busy.json()["error"]["status"].as_str()), (503, Some("UNAVAILABLE")));
    let limited = call(&KEY, &gemini_body("[mock:status=429]"));
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("1")));
    let long = call(&KEY, &gemini_body("[mock:status=400,error_code=context_length_exceeded]"));
    assert!(long.json()["error"]["message"].as_str().unwrap().contains("exceeds the maximum number of tokens"));
    let mut extra = gemini_body("x");
    extra["messages"] = json!([]);
    assert!(call(&KEY, &extra).json()["error"]["message"].as_str().unwrap().contains("Unknown name \"messages\""));
    let assistant = json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]});
    assert_eq!(call(&KEY, &assistant).status, 400);

    let path = format!("{GEMINI}:streamGenerateContent?alt=sse");
    let failing = post(
        &server,
        &path,
        &KEY,
        gemini_body("a b c [mock:chunks=3,cut_after=1,error_code=UNAVAILABLE]").to_string().as_bytes(),
    );
    let events = events(&failing.text());
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["error"]["status"], "UNAVAILABLE");
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT of the right shape for the mock's token endpoint at `audience`; the signature is
/// not a real one, which the mock does not check.
fn assertion(audience: &str, lifetime: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let claims = json!({"iss": "sa@project.iam.gserviceaccount.com", "aud": audience,
        "scope": "https://www.googleapis.com/auth/cloud-platform", "iat": now, "exp": now + lifetime});
    format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes()),
        base64url(&[7; 256])
    )
}

fn token(server: &MockServer, tag: &str, jwt: &str) -> client::Response {
    let form = format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}");
    post(server, &format!("/{tag}/token"), &[("content-type", "application/x-www-form-urlencoded")], form.as_bytes())
}

#[test]
fn the_token_endpoint_checks_the_jwt_shape() {
    let server = start();
    let audience = format!("{}/gcp/token", server.base_url());
    let issued = token(&server, "gcp", &assertion(&audience, 3600));
    assert_eq!(issued.status, 200, "{}", issued.text());
    let body = issued.json();
    assert!(body["access_token"].as_str().unwrap().starts_with("ya29.mock-gcp-"));
    assert_eq!((body["expires_in"].as_u64(), body["token_type"].as_str()), (Some(3599), Some("Bearer")));

    let refused = |jwt: &str, needle: &str| {
        let r = token(&server, "gcp", jwt);
        assert_eq!(r.status, 400, "{jwt}");
        assert_eq!(r.json()["error"], "invalid_grant");
        assert!(r.json()["error_description"].as_str().unwrap().contains(needle), "{}", r.text());
    };
    refused(&assertion("https://oauth2.googleapis.com/token", 3600), "`aud` must be");
    refused(&assertion(&audience, 7200), "within an hour");
    refused("a.b", "three parts");
    let short_signature =
        assertion(&audience, 3600).rsplit_once('.').map(|(signed, _)| format!("{signed}.AAAA")).unwrap();
    refused(&short_signature, "256 bytes");
    let wrong_grant = post(&server, "/gcp/token", &[], b"grant_type=client_credentials");
    assert_eq!(wrong_grant.json()["error"], "unsupported_grant_type");
    server.script(Script {
        tag: "gcp".into(),
        needle: String::new(),
        times: Some(1),
        behaviour: Behaviour::parse("status=503").unwrap(),
    });
    assert_eq!(token(&server, "gcp", &assertion(&audience, 3600)).status, 503);
}

fn issued_token(server: &MockServer) -> String {
    let audience = format!("{}/gcp/token", server.base_url());
    token(server, "gcp", &assertion(&audience, 3600)).json()["access_token"].as_str().unwrap().to_string()
}

#[test]
fn vertex_gemini_takes_only_issued_tokens() {
    let server = start();
    let path = "/vertex-eu/v1/projects/acme/locations/eu/publishers/google/models/gemini-2.5-flash:generateContent";
    let body = gemini_body("hi").to_string();
    let bearer = format!("Bearer {}", issued_token(&server));
    let r = post(&server, path, &[("authorization", &bearer)], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["modelVersion"], "gemini-2.5-flash");
    let forged = post(&server, path, &[("authorization", "Bearer ya29.forged")], body.as_bytes());
    assert_eq!((forged.status, forged.json()["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    assert_eq!(post(&server, path, &KEY, body.as_bytes()).status, 401, "an API key is not a Vertex credential");
}

#[test]
fn claude_on_vertex_takes_the_version_in_the_body_and_the_model_from_the_path() {
    let server = start();
    let bearer = format!("Bearer {}", issued_token(&server));
    let headers = [("authorization", bearer.as_str())];
    let base = "/vertex-claude/v1/projects/acme/locations/eu/publishers/anthropic/models/claude-sonnet-4-6";
    let body = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&server, &format!("{base}:rawPredict"), &headers, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["type"].as_str(), r.json()["model"].as_str()), (Some("message"), Some("claude-sonnet-4-6")));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post(&server, &format!("{base}:streamRawPredict"), &headers, streamed.to_string().as_bytes());
    assert!(
        r.text().starts_with("event: message_start\n") && r.text().contains("event: message_stop\n"),
        "{}",
        r.text()
    );

    let mut named = body.clone();
    named["model"] = json!("claude-sonnet-4-6");
    let refused = post(&server, &format!("{base}:rawPredict"), &headers, named.to_string().as_bytes());
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("model: Extra inputs"), "{}", refused.text());
    let mut unversioned = body.clone();
    unversioned.as_object_mut().unwrap().remove("anthropic_version");
    let refused = post(&server, &format!("{base}:rawPredict"), &headers, unversioned.to_string().as_bytes());
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("vertex-2023-10-16"));
    assert_eq!(post(&server, &format!("{base}:rawPredict"), &[], body.to_string().as_bytes()).status, 401);
}

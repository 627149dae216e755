//! What the tests of the Gemini translation share, and Vertex's Gemini publisher reuses: a
//! deployment, a parsed request, an answer, and a recorded stream with a runner for it.

use crate::config::Deployment;
use crate::model::chat::{self, ChatRequest};
use crate::model::usage::Consumed;
use crate::providers::{Auth, StreamEnd, StreamTranslator};
use crate::util::valueread::FromValue;
use serde_json::{json, Value};

pub(super) fn deployment_json() -> Value {
    json!({
        "id": "gemini-global", "provider": "gemini", "model": "gemini-2.5-flash",
        "base_url": "https://generativelanguage.googleapis.com/v1beta", "api_key_secret": "GEMINI_API_KEY",
        "jurisdiction": "global", "region": "global", "price": {"input": "1", "output": "1"}
    })
}

pub(super) fn deployment() -> Deployment {
    Deployment::read(&deployment_json()).unwrap()
}

pub fn parse(body: Value) -> ChatRequest {
    let mut req = chat::parse(body.to_string().as_bytes()).unwrap();
    req.received_at = 1_750_000_000;
    req
}

pub(super) fn auth() -> Auth {
    Auth { api_key: Some("AIzaTESTKEY0123456789".into()), ..Auth::default() }
}

pub fn user(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

pub fn answer(parts: Value, finish: &str) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 7, "thoughtsTokenCount": 5,
            "cachedContentTokenCount": 100, "totalTokenCount": 132},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1"
    })
}

/// A stream as Gemini sends it (`alt=sse`, CRLF line ends): text in pieces with a
/// multi-byte character, then a function call, then the finish with the usage.
pub const RECORDED: &str = concat!(
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Caf\u{e9} \"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 50,\"candidatesTokenCount\": 2,\"totalTokenCount\": 52},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r2\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"weather:\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 50,\"candidatesTokenCount\": 4,\"totalTokenCount\": 54},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r2\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"Cv8B+/x=\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 50,\"candidatesTokenCount\": 42,\"cachedContentTokenCount\": 30,\"totalTokenCount\": 92},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r2\"}\r\n\r\n",
);

/// As Gemini streams: every chunk before the last reports the prompt's tokens and no
/// candidates; 40 characters of text reach the client, then the connection is cut.
pub const PROMPT_ONLY_THEN_CUT: &str = concat!(
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"0123456789abcdefghij\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 30,\"totalTokenCount\": 30},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r3\"}\r\n\r\n",
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"0123456789abcdefghij\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 30,\"totalTokenCount\": 30},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r3\"}\r\n\r\n",
);

pub struct Run {
    pub out: String,
    pub end: StreamEnd,
    pub consumed: Consumed,
    pub started_at_cut: bool,
}

pub fn run_with(
    translator: impl Fn(&ChatRequest) -> Box<dyn StreamTranslator>,
    input: &[u8],
    wants_usage: bool,
    cut: usize,
) -> Run {
    let mut body = json!({"model": "fast", "messages": [user(json!("x"))], "stream": true});
    if wants_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut t = translator(&parse(body));
    let mut out = Vec::new();
    t.push(&input[..cut], &mut out);
    let started_at_cut = t.started();
    t.push(&input[cut..], &mut out);
    Run { out: String::from_utf8(out).unwrap(), end: t.end(), consumed: t.consumed(), started_at_cut }
}

pub fn data(out: &str) -> Vec<Value> {
    out.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| if d == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(d).unwrap() })
        .collect()
}

//! Every provider request the mock received, for tests to assert on (which deployment
//! was tried, which key and headers were sent, what the translated body was).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::faults::lock;

#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// The first path segment, which names the deployment in test base URLs.
    pub tag: String,
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    /// Decoded from UTF-8, lossily.
    pub body: String,
    /// What the body carries encoded, decoded (Bedrock's CountTokens sends the request it
    /// counts in base64): needle searches and `[mock:...]` directives read it too.
    pub payload: Option<String>,
    pub received_at: SystemTime,
}

impl LoggedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub(crate) fn to_json(&self) -> Value {
        let at = self.received_at.duration_since(UNIX_EPOCH).unwrap_or_default();
        json!({
            "tag": self.tag,
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "payload": self.payload,
            "received_at_ms": at.as_millis() as u64,
        })
    }
}

#[derive(Default)]
pub(crate) struct RequestLog(Mutex<Vec<LoggedRequest>>);

impl RequestLog {
    pub(crate) fn push(&self, request: LoggedRequest) {
        lock(&self.0).push(request);
    }

    pub(crate) fn matching(&self, needle: &str) -> Vec<LoggedRequest> {
        let log = lock(&self.0);
        let has = |r: &LoggedRequest| r.body.contains(needle) || r.payload.as_ref().is_some_and(|p| p.contains(needle));
        log.iter().filter(|r| has(r)).cloned().collect()
    }
}

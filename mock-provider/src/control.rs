//! `/_mock/...`: the same controls as the library API, over HTTP, for the `make dev`
//! binary and for poking at a running mock with curl.

use std::io;

use serde_json::{json, Value};

use crate::faults::{Behaviour, Script};
use crate::http::{Request, Responder};
use crate::State;

pub(crate) fn handle(state: &State, request: &Request, out: &mut Responder) -> io::Result<()> {
    match (request.method.as_str(), request.path()) {
        ("GET", "/_mock/health") => out.json(200, &[], &json!({"status": "ok"})),
        ("POST", "/_mock/script") => match parse_script(&request.body) {
            Ok(script) => {
                state.scripts.add(script);
                out.json(200, &[], &json!({"ok": true}))
            }
            Err(message) => out.json(400, &[], &json!({"error": message})),
        },
        ("DELETE", "/_mock/script") => {
            state.scripts.clear();
            out.json(200, &[], &json!({"ok": true}))
        }
        ("GET", "/_mock/requests") => {
            let needle = request.query("needle").unwrap_or_default();
            let requests = state.log.matching(&needle);
            let requests: Vec<Value> = requests.iter().map(|r| r.to_json()).collect();
            out.json(200, &[], &Value::Array(requests))
        }
        _ => out.json(404, &[], &json!({"error": "unknown mock control path"})),
    }
}

/// `{"tag": "eu-openai", "needle": "n-42", "times": 1, "status": 503, ...}`; `tag`
/// defaults to `*`, `needle` to empty (any body), `times` to unlimited.
fn parse_script(body: &[u8]) -> Result<Script, String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice(body) else {
        return Err("expected a JSON object".into());
    };
    let mut script = Script { tag: "*".into(), needle: String::new(), times: None, behaviour: Behaviour::default() };
    for (key, value) in fields {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            // Lets `tool_args` be given as a JSON object rather than a string.
            other => other.to_string(),
        };
        match key.as_str() {
            "tag" => script.tag = text,
            "needle" => script.needle = text,
            "times" => {
                let times = text.parse().map_err(|_| format!("`times` needs a whole number, got `{text}`"))?;
                script.times = Some(times);
            }
            _ => script.behaviour.set(&key, &text)?,
        }
    }
    Ok(script)
}

//! The client's OpenAI Chat Completions request: validated once at the edge, kept as the
//! client sent it (unknown fields included, so nothing the client asked for is lost), and
//! re-targeted per upstream attempt by the provider module.
//!
//! An OpenAI client's body is kept as its bytes, split into top-level members: an
//! OpenAI-format upstream is sent those bytes with only the model (and the usage option)
//! changed, and the members routing reads are the only ones parsed. The whole body
//! becomes a tree only for a provider that translates it.

use crate::model::error::GatewayError;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::cell::{OnceCell, RefCell};
use std::ops::Range;

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// The members validation and [`Facts`] read; every other one stays bytes until a
/// provider that translates the body asks for the tree.
const READ: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "system",
    "response_format",
    "max_completion_tokens",
    "max_tokens",
    "user",
    "metadata",
];

#[derive(Debug)]
pub struct ChatRequest {
    body: Body,
    /// The alias the client asked for.
    pub model: String,
    pub stream: bool,
    /// Whether the client itself asked for the final usage chunk.
    pub client_wants_usage: bool,
    /// Unix seconds when the gateway received it (set by the shell): `created` of translated answers.
    pub received_at: u64,
    /// The Messages request as sent, when the client spoke Anthropic's format.
    pub native: Option<NativeMessages>,
    pub facts: Facts,
}

#[derive(Debug)]
enum Body {
    /// An OpenAI client's body as sent, with its top-level members' keys and spans.
    Sent {
        bytes: Vec<u8>,
        members: Vec<(String, Range<usize>)>,
        /// The [`READ`] members, parsed; moved into `tree` when it is built.
        read: RefCell<Map<String, Value>>,
        tree: OnceCell<Map<String, Value>>,
    },
    /// A body the gateway made: the canonical form of a Messages request, or the client's
    /// Messages body (see [`NativeMessages::untranslatable`]).
    Made(Map<String, Value>),
}

/// A top-level member's value: the client's bytes, or a value the gateway made.
#[derive(Debug, Clone, Copy)]
pub enum Member<'a> {
    Sent(&'a [u8]),
    Made(&'a Value),
}

/// What routing and billing read of a request, taken once when it is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// An image among the messages' content parts.
    pub vision: bool,
    /// A non-empty `tools`.
    pub tools: bool,
    /// A `response_format` asking for JSON.
    pub json_mode: bool,
    /// The answer's token budget the client set (`max_completion_tokens`, else `max_tokens`), or 0.
    pub answer_tokens: u64,
    /// The prompt's size in tokens, estimated from its text: what a stream cut before the
    /// provider reported usage is billed for as input.
    pub input_tokens: u64,
    /// OpenAI's `user`, or the `metadata.user_id` of a Messages body kept as sent.
    pub user: Option<String>,
}

impl Facts {
    fn of<'a>(get: impl Fn(&str) -> Option<&'a Value>, tools: bool) -> Facts {
        let text_len = |content: &Value| match content {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => {
                parts.iter().filter_map(|p| p.get("text")?.as_str()).map(|t| t.chars().count()).sum()
            }
            _ => 0,
        };
        let messages = get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let vision = messages.iter().any(|m| {
            m.get("content").and_then(Value::as_array).is_some_and(|parts| {
                parts.iter().any(|p| matches!(p.get("type").and_then(Value::as_str), Some("image_url" | "image")))
            })
        });
        // A Messages body kept as sent has its system prompt apart.
        let system = estimate_tokens(get("system").map_or(0, text_len));
        // A few tokens of framing per message, as chat templates add.
        let input_tokens =
            system + messages.iter().map(|m| estimate_tokens(m.get("content").map_or(0, text_len)) + 4).sum::<u64>();
        let json_mode = get("response_format")
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "json_object" || t == "json_schema");
        let answer_tokens = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| get(k)?.as_u64()).unwrap_or(0);
        let user = get("user").or_else(|| get("metadata")?.get("user_id")).and_then(Value::as_str).map(str::to_owned);
        Facts { vision, tools, json_mode, answer_tokens, input_tokens, user }
    }
}

/// A `POST /v1/messages` request as the client sent it. A deployment that speaks
/// Anthropic's Messages format itself gets it with nothing translated away (prompt-cache
/// markers, extended thinking, `top_k`, fields and block types newer than the gateway)
/// and answers the client as it is.
#[derive(Debug, Clone)]
pub struct NativeMessages {
    /// The client's body, null fields removed.
    pub body: Map<String, Value>,
    /// The client's `anthropic-beta` header (set by the shell): its opt-in to beta features.
    pub beta: Option<String>,
    /// Why the canonical form cannot carry the request, if it cannot: then deployments in
    /// other formats cannot serve it.
    pub untranslatable: Option<GatewayError>,
}

impl NativeMessages {
    pub fn translatable(&self) -> bool {
        self.untranslatable.is_none()
    }

    /// The tools Anthropic runs on its own servers (web search, web fetch, code
    /// execution), by their index in `tools` and their type.
    pub fn server_tools(&self) -> Vec<(usize, &str)> {
        const SERVER_TOOLS: [&str; 3] = ["web_search_", "web_fetch_", "code_execution_"];
        let tools = self.body.get("tools").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        tools
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.get("type")?.as_str()?)))
            .filter(|(_, kind)| SERVER_TOOLS.iter().any(|prefix| kind.starts_with(prefix)))
            .collect()
    }
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::bad_request("invalid_request", message)
}

/// Rough token count of a text (about four characters a token), for usage a provider did
/// not report and for context-window checks.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

impl Member<'_> {
    /// Appends the value as JSON.
    pub fn write(self, out: &mut Vec<u8>) {
        match self {
            Member::Sent(bytes) => out.extend_from_slice(bytes),
            Member::Made(value) => serde_json::to_writer(out, value).expect("a JSON value serialises"),
        }
    }

    pub fn value(self) -> Value {
        match self {
            // Checked as JSON, and for depth, when the body was split.
            Member::Sent(bytes) => serde_json::from_slice(bytes).unwrap_or_default(),
            Member::Made(value) => value.clone(),
        }
    }
}

impl ChatRequest {
    /// A request whose body the gateway made: for a canonical body, `native` is the
    /// client's Messages request.
    pub fn made(
        body: Map<String, Value>,
        model: String,
        stream: bool,
        client_wants_usage: bool,
        native: Option<NativeMessages>,
    ) -> ChatRequest {
        let tools = body.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
        let facts = Facts::of(|k| body.get(k), tools);
        ChatRequest { body: Body::Made(body), model, stream, client_wants_usage, received_at: 0, native, facts }
    }

    /// The body as a tree: for a body as sent, parsed on first use.
    pub fn body(&self) -> &Map<String, Value> {
        match &self.body {
            Body::Made(body) => body,
            Body::Sent { bytes, members, read, tree } => tree.get_or_init(|| {
                let mut body = read.take();
                for (key, span) in members.iter().filter(|(key, _)| !READ.contains(&key.as_str())) {
                    body.insert(key.clone(), Member::Sent(&bytes[span.clone()]).value());
                }
                body
            }),
        }
    }

    /// Calls `f` with the top-level members in order. A key the client repeated is repeated,
    /// as sent: every JSON parser the gateway, OpenAI or a client uses keeps the last.
    pub fn each_member<'a>(&'a self, mut f: impl FnMut(&'a str, Member<'a>)) {
        match &self.body {
            Body::Made(body) => body.iter().for_each(|(key, value)| f(key, Member::Made(value))),
            Body::Sent { bytes, members, .. } => {
                for (key, span) in members {
                    f(key, Member::Sent(&bytes[span.clone()]));
                }
            }
        }
    }

    /// The size of the body as sent; 0 for one the gateway made.
    pub fn sent_len(&self) -> usize {
        match &self.body {
            Body::Sent { bytes, .. } => bytes.len(),
            Body::Made(_) => 0,
        }
    }
}

/// The keys of a JSON object's top-level members and the spans of their values.
fn split(bytes: &[u8]) -> Result<Vec<(String, Range<usize>)>, serde_json::Error> {
    struct Members<'b>(&'b [u8]);
    impl<'de> Visitor<'de> for Members<'_> {
        type Value = Vec<(String, Range<usize>)>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                // A raw value read from a slice borrows its text from it.
                let start = value.get().as_ptr() as usize - self.0.as_ptr() as usize;
                members.push((key, start..start + value.get().len()));
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let members = de.deserialize_map(Members(bytes))?;
    de.end()?;
    Ok(members)
}

/// The deepest nesting of arrays and objects a member may have: serde_json parses a value
/// nested one level deeper only with its recursion limit lifted.
const MAX_DEPTH: usize = 127;

/// How deeply arrays and objects nest in a JSON value's text.
fn depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    deepest
}

/// Whether a JSON value's text is an array with something in it.
fn non_empty_array(text: &[u8]) -> bool {
    text.first() == Some(&b'[') && text[1..].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b']')
}

/// An OpenAI client's request.
pub fn parse(bytes: impl Into<Vec<u8>>) -> Result<ChatRequest, GatewayError> {
    let bytes = bytes.into();
    let members = split(&bytes).map_err(|e| {
        let message = if e.is_data() {
            "The request body must be a JSON object.".to_string()
        } else {
            format!("The request body is not valid JSON: {e}.")
        };
        GatewayError::bad_request("invalid_json", message)
    })?;
    let mut read = Map::new();
    let mut tools = false;
    for (key, span) in &members {
        let text = &bytes[span.clone()];
        if READ.contains(&key.as_str()) {
            let value = serde_json::from_slice(text)
                .map_err(|e| GatewayError::bad_request("invalid_json", format!("`{key}` could not be read: {e}.")))?;
            read.insert(key.clone(), value);
            continue;
        }
        // What a parser would refuse when the tree is built must be refused now.
        if depth(text) > MAX_DEPTH {
            return Err(GatewayError::bad_request(
                "invalid_json",
                format!("`{key}` is nested more than {MAX_DEPTH} levels deep."),
            ));
        }
        if key == "tools" {
            tools = non_empty_array(text);
        }
    }
    let (model, stream, client_wants_usage) = check(&read)?;
    let facts = Facts::of(|k| read.get(k), tools);
    let body = Body::Sent { bytes, members, read: RefCell::new(read), tree: OnceCell::new() };
    Ok(ChatRequest { body, model, stream, client_wants_usage, received_at: 0, native: None, facts })
}

/// The model, `stream` and whether the client asked for usage, of a valid request.
fn check(body: &Map<String, Value>) -> Result<(String, bool, bool), GatewayError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("`model` must be a non-empty string.")),
        None => return Err(GatewayError::bad_request("missing_field", "Missing required field `model`.")),
    };
    match body.get("messages") {
        None => return Err(GatewayError::bad_request("missing_field", "Missing required field `messages`.")),
        Some(Value::Array(messages)) if !messages.is_empty() => {
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str);
                match role {
                    Some(r) if ROLES.contains(&r) => {}
                    Some(r) => {
                        return Err(invalid(format!(
                            "`messages[{i}].role` is `{r}`; expected one of {}.",
                            ROLES.join(", ")
                        )))
                    }
                    None => return Err(invalid(format!("`messages[{i}]` needs a string `role`."))),
                }
            }
        }
        Some(_) => return Err(invalid("`messages` must be a non-empty array.")),
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream` must be a boolean.")),
    };
    let client_wants_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    Ok((model, stream, client_wants_usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(body: &str) -> GatewayError {
        parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_a_minimal_request_and_keeps_unknown_fields() {
        let r = parse(br#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"x_custom":{"a":1}}"#).unwrap();
        assert_eq!(r.model, "fast");
        assert!(!r.stream && !r.client_wants_usage);
        assert_eq!(r.body()["x_custom"]["a"], 1);
    }

    #[test]
    fn estimates_input_tokens_from_the_text() {
        let r = parse(br#"{"model":"m","messages":[{"role":"system","content":"12345678"},{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#).unwrap();
        assert_eq!(r.facts.input_tokens, (2 + 4) + (1 + 4));
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(5), 2);
    }

    fn sent(r: &ChatRequest) -> Vec<(&str, &[u8])> {
        let mut members = Vec::new();
        r.each_member(|key, value| match value {
            Member::Sent(bytes) => members.push((key, bytes)),
            Member::Made(_) => panic!("`{key}` was made"),
        });
        members
    }

    #[test]
    fn keeps_each_member_as_sent_in_order() {
        let text = br#" { "x_b" : [1, 2 ] ,"model":"m","n":1.50,"messages":[{"role":"user","content":"h\u00e9 \"q\""}],"e":1e2 } "#;
        let r = parse(text).unwrap();
        assert_eq!(
            sent(&r),
            vec![
                ("x_b", &b"[1, 2 ]"[..]),
                ("model", br#""m""#),
                ("n", b"1.50"),
                ("messages", br#"[{"role":"user","content":"h\u00e9 \"q\""}]"#),
                ("e", b"1e2"),
            ]
        );
        let tree = Value::Object(r.body().clone());
        assert_eq!(tree, serde_json::from_slice::<Value>(text).unwrap(), "the tree is what a parser makes");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_a_parser_does() {
        let text = br#"{"model":"a","t":1,"messages":[{"role":"user"}],"t":2,"mod\u0065l":"b"}"#;
        let r = parse(text).unwrap();
        assert_eq!(r.model, "b");
        assert_eq!(sent(&r).len(), 5);
        assert_eq!(Value::Object(r.body().clone()), serde_json::from_slice::<Value>(text).unwrap());
        let many: String = (0..100_000).map(|i| format!(r#""k{}":{i},"#, i % 50_000)).collect();
        let r = parse(format!(r#"{{{many}"model":"m","messages":[{{"role":"user"}}]}}"#).as_bytes()).unwrap();
        assert_eq!(r.body().len(), 50_002);
        assert_eq!(r.body()["k0"], 50_000);
    }

    #[test]
    fn reads_what_routing_needs_without_the_rest() {
        let r = parse(br#"{"model":"m","user":"u-1","max_tokens":9,"max_completion_tokens":7,"tools":[ ],"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(r.facts, Facts { answer_tokens: 7, input_tokens: 5, user: Some("u-1".into()), ..Facts::default() });
        for (tools, non_empty) in
            [("[]", false), ("[ \n ]", false), ("[{}]", true), ("[ 1 ]", true), ("{}", false), ("null", false)]
        {
            let r =
                parse(format!(r#"{{"model":"m","messages":[{{"role":"user"}}],"tools":{tools}}}"#).as_bytes()).unwrap();
            assert_eq!(r.facts.tools, non_empty, "{tools}");
        }
        let r = parse(br#"{"model":"m","messages":[{"role":"user"}],"metadata":{"user_id":"u-2"}}"#).unwrap();
        assert_eq!(r.facts.user.as_deref(), Some("u-2"));
    }

    #[test]
    fn nesting_is_refused_where_a_parser_would_refuse_it() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for n in [0, 1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 100_000] {
            let member = nested(n);
            let parses = serde_json::from_str::<Value>(&member).is_ok() || n == 0;
            assert_eq!(depth(member.as_bytes()) <= MAX_DEPTH, parses, "{n}");
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user"}}],"x":{}}}"#, if n == 0 { "1" } else { &member });
            match parse(body.as_bytes()) {
                Ok(r) => {
                    let x = if n == 0 { json!(1) } else { serde_json::from_str(&member).unwrap() };
                    assert_eq!(r.body()["x"], x, "{n}");
                }
                Err(e) => assert!(!parses && e.message.contains("`x` is nested more than 127"), "{n}: {}", e.message),
            }
        }
        assert_eq!(depth(br#"{"a":"[[[{{\"]]","b":[{}]}"#), 3, "brackets in strings do not count");
        let deep = format!(r#"{{"model":"m","messages":[{{"role":"user","content":{}}}]}}"#, nested(200));
        let e = err(&deep);
        assert_eq!(e.code, "invalid_json");
        assert!(e.message.contains("`messages` could not be read: recursion limit exceeded"), "{}", e.message);
    }

    #[test]
    fn reads_stream_flags() {
        let r = parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(r.stream && r.client_wants_usage);
    }

    #[test]
    fn rejects_bad_input_with_clear_messages() {
        assert_eq!(err("{not json").code, "invalid_json");
        assert!(err("{not json").message.contains("not valid JSON"));
        assert!(err(r#"{"model":"m"} x"#).message.contains("not valid JSON"));
        assert!(err("[1]").message.contains("must be a JSON object"));
        assert!(err(r#""text""#).message.contains("must be a JSON object"));
        assert_eq!(err("[1]").code, "invalid_json");
        assert_eq!(err("").code, "invalid_json");
        let e = err(r#"{"messages":[{"role":"user","content":"x"}]}"#);
        assert_eq!((e.status, e.code), (400, "missing_field"));
        assert!(e.message.contains("`model`"));
        assert!(err(r#"{"model":"m"}"#).message.contains("`messages`"));
        assert!(err(r#"{"model":"m","messages":[]}"#).message.contains("non-empty"));
        assert!(err(r#"{"model":"","messages":[{"role":"user"}]}"#).message.contains("non-empty string"));
        assert!(err(r#"{"model":"m","messages":[{"content":"x"}]}"#).message.contains("messages[0]"));
        assert!(err(r#"{"model":"m","messages":[{"role":"robot"}]}"#).message.contains("`robot`"));
        assert!(err(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#).message.contains("boolean"));
    }
}

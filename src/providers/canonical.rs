//! The OpenAI side of the providers that translate: reading the client's Chat Completions
//! request field by field (a field a provider cannot honour is a 400 naming it, never
//! silently dropped), and writing OpenAI's answer shapes (`chat.completion`, the
//! `chat.completion.chunk` stream). Field meanings are OpenAI's Chat Completions reference.

use crate::model::error::GatewayError;
use crate::model::usage::Usage;
use crate::util::sse::write_event;
use serde_json::{json, Map, Value};

/// Top-level fields accepted without being sent: `stream_options` only decides the final
/// usage chunk, which the translator writes itself; `metadata` only labels completions
/// stored at OpenAI (`store: true` is refused); the prompt-cache fields are OpenAI cache
/// routing hints that change cost, never the answer.
pub(super) const IGNORED: &[&str] = &["stream_options", "metadata", "prompt_cache_key", "prompt_cache_retention"];

/// Builds the client's errors, naming provider and deployment so the operator can tell
/// which route refused.
pub(super) struct Cx<'a> {
    pub provider: &'static str,
    pub deployment: &'a str,
}

/// A function the client offers the model.
pub(super) struct FunctionTool<'v> {
    pub name: &'v str,
    pub description: Option<&'v Value>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// The client's `tool_choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToolChoice<'v> {
    Auto,
    Required,
    None,
    Function(&'v str),
}

/// A tool call from an assistant turn of the history, its arguments parsed.
pub(super) struct ToolCall<'v> {
    pub id: &'v str,
    pub name: &'v str,
    /// Always a JSON object.
    pub input: Value,
}

impl Cx<'_> {
    pub fn unsupported(&self, field: &str, detail: &str) -> GatewayError {
        GatewayError::bad_request(
            "unsupported_parameter",
            format!(
                "`{field}`{detail} is not supported by provider {} (deployment `{}`); remove it or use an alias served by another provider.",
                self.provider, self.deployment
            ),
        )
    }

    pub fn invalid(&self, field: &str, why: &str) -> GatewayError {
        GatewayError::bad_request("invalid_request", format!("`{field}` {why}."))
    }

    /// Every non-null key of `object` must be in `allowed`: a key the gateway does not
    /// translate would otherwise be lost on the way.
    pub fn check_keys(&self, path: &str, object: &Map<String, Value>, allowed: &[&str]) -> Result<(), GatewayError> {
        match object.iter().find(|(k, v)| !v.is_null() && !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(self.unsupported(&format!("{path}.{k}"), "")),
            None => Ok(()),
        }
    }

    pub fn object<'v>(&self, path: &str, value: &'v Value) -> Result<&'v Map<String, Value>, GatewayError> {
        value.as_object().ok_or_else(|| self.invalid(path, "must be an object"))
    }

    pub fn string<'v>(&self, path: &str, value: &'v Value) -> Result<&'v str, GatewayError> {
        value.as_str().ok_or_else(|| self.invalid(path, "must be a string"))
    }

    /// `stop` as a list of sequences.
    pub fn stop_sequences(&self, stop: &Value) -> Result<Value, GatewayError> {
        match stop {
            Value::String(s) => Ok(json!([s])),
            Value::Array(_) => Ok(stop.clone()),
            _ => Err(self.invalid("stop", "must be a string or an array of strings")),
        }
    }

    /// `tools`: only function tools, and not `strict` ones (no translating provider
    /// guarantees schema-exact arguments).
    pub fn function_tools<'v>(&self, tools: &'v Value) -> Result<Vec<FunctionTool<'v>>, GatewayError> {
        let tools = tools.as_array().ok_or_else(|| self.invalid("tools", "must be an array"))?;
        tools.iter().enumerate().map(|(i, tool)| self.function_tool(&format!("tools[{i}]"), tool)).collect()
    }

    fn function_tool<'v>(&self, path: &str, tool: &'v Value) -> Result<FunctionTool<'v>, GatewayError> {
        let kind = tool["type"].as_str().unwrap_or_default();
        if kind != "function" {
            return Err(self.unsupported(&format!("{path}.type"), &format!(" `{kind}`")));
        }
        let path = format!("{path}.function");
        let function = self.object(&path, &tool["function"])?;
        self.check_keys(&path, function, &["name", "description", "parameters", "strict"])?;
        if function.get("strict") == Some(&Value::Bool(true)) {
            return Err(self.unsupported(&format!("{path}.strict"), " `true`"));
        }
        Ok(FunctionTool {
            name: self.string(&format!("{path}.name"), &function["name"])?,
            description: function.get("description").filter(|d| !d.is_null()),
            // OpenAI: no `parameters` means a function without arguments.
            parameters: function
                .get("parameters")
                .filter(|p| !p.is_null())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
    }

    /// The request's `tool_choice`, when it has one.
    pub fn tool_choice<'v>(&self, body: &'v Map<String, Value>) -> Result<Option<ToolChoice<'v>>, GatewayError> {
        match body.get("tool_choice").filter(|c| !c.is_null()) {
            None => Ok(None),
            Some(Value::String(mode)) => match mode.as_str() {
                "auto" => Ok(Some(ToolChoice::Auto)),
                "required" => Ok(Some(ToolChoice::Required)),
                "none" => Ok(Some(ToolChoice::None)),
                _ => Err(self.invalid("tool_choice", "must be `auto`, `required`, `none` or a function")),
            },
            Some(named) if named["type"] == "function" => {
                Ok(Some(ToolChoice::Function(self.string("tool_choice.function.name", &named["function"]["name"])?)))
            }
            Some(other) => {
                let kind = other["type"].as_str().unwrap_or_default();
                Err(self.unsupported("tool_choice", &format!(" of type `{kind}`")))
            }
        }
    }

    /// One entry of an assistant message's `tool_calls`.
    pub fn tool_call<'v>(&self, path: &str, call: &'v Value) -> Result<ToolCall<'v>, GatewayError> {
        let call = self.object(path, call)?;
        self.check_keys(path, call, &["id", "type", "function"])?;
        if let Some(kind) = call.get("type").and_then(Value::as_str).filter(|k| *k != "function") {
            return Err(self.unsupported(&format!("{path}.type"), &format!(" `{kind}`")));
        }
        let function = self.object(&format!("{path}.function"), &call["function"])?;
        let arguments_path = format!("{path}.function.arguments");
        let arguments = self.string(&arguments_path, function.get("arguments").unwrap_or(&Value::Null))?;
        // A function without arguments may come back as "" rather than "{}".
        let input: Value = if arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_slice(arguments.as_bytes())
                .map_err(|e| self.invalid(&arguments_path, &format!("is not valid JSON ({e})")))?
        };
        if !input.is_object() {
            return Err(self.invalid(&arguments_path, "must encode a JSON object"));
        }
        Ok(ToolCall {
            id: self.string(&format!("{path}.id"), call.get("id").unwrap_or(&Value::Null))?,
            name: self.string(&format!("{path}.function.name"), function.get("name").unwrap_or(&Value::Null))?,
            input,
        })
    }
}

/// True when an option the provider lacks is set to OpenAI's default, which asks for
/// nothing the provider does not already do.
pub(super) fn asks_nothing(key: &str, value: &Value) -> bool {
    match key {
        "n" => value == 1,
        "logprobs" | "store" => value == false,
        "presence_penalty" | "frequency_penalty" => value.as_f64() == Some(0.0),
        "logit_bias" => value.as_object().is_some_and(Map::is_empty),
        "modalities" => value == &json!(["text"]),
        "response_format" => value["type"] == "text",
        "service_tier" => value == "auto",
        _ => false,
    }
}

pub(super) fn refused_detail(key: &str, value: &Value) -> String {
    match (key, value["type"].as_str()) {
        ("response_format", Some(kind)) => format!(" of type `{kind}`"),
        _ => String::new(),
    }
}

/// `data:<media type>;base64,<data>` → (media type, data).
pub(super) fn data_url(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

pub(super) fn openai_usage(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
    })
}

/// What identifies one answer: the same on a completion and on every chunk of a stream.
#[derive(Default)]
pub(super) struct Identity {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl Identity {
    /// An OpenAI `chat.completion`.
    pub fn completion(&self, text: Option<String>, tool_calls: Vec<Value>, finish_reason: &str, usage: Usage) -> Value {
        let mut reply = json!({"role": "assistant", "content": text, "refusal": null});
        if !tool_calls.is_empty() {
            reply["tool_calls"] = tool_calls.into();
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": reply, "logprobs": null, "finish_reason": finish_reason}],
            "usage": openai_usage(usage),
        })
    }
}

/// An OpenAI tool call as a completion's message carries it.
pub(super) fn tool_call(id: &str, name: &str, input: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}})
}

/// Writes one stream's OpenAI `chat.completion.chunk` events.
#[derive(Default)]
pub(super) struct Chunks {
    pub identity: Identity,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub wants_usage: bool,
}

/// A JSON string, escaped.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Chunks are written straight into the output, not built as `Value`s first: a stream's
/// every event passes here, and the tree of maps cost more than decoding the upstream.
impl Chunks {
    /// The chunk up to and including `"choices":`.
    fn open(&self, out: &mut Vec<u8>) {
        let Identity { id, model, created } = &self.identity;
        out.extend_from_slice(b"data: {\"id\":");
        json_str(out, id);
        out.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        out.extend_from_slice(created.to_string().as_bytes());
        out.extend_from_slice(b",\"model\":");
        json_str(out, model);
        out.extend_from_slice(b",\"choices\":");
    }

    /// One choice whose delta `delta` writes (an object's members, without braces).
    pub fn chunk(&self, out: &mut Vec<u8>, delta: impl FnOnce(&mut Vec<u8>), finish_reason: Option<&str>) {
        self.open(out);
        out.extend_from_slice(b"[{\"index\":0,\"delta\":{");
        delta(out);
        out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":");
        match finish_reason {
            Some(reason) => json_str(out, reason),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        // OpenAI puts `usage: null` on every chunk of a stream that will end with usage.
        if self.wants_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
    }

    pub fn role(&self, out: &mut Vec<u8>) {
        self.chunk(out, |o| o.extend_from_slice(b"\"role\":\"assistant\",\"content\":\"\""), None);
    }

    pub fn text(&self, out: &mut Vec<u8>, text: &str) {
        self.chunk(
            out,
            |o| {
                o.extend_from_slice(b"\"content\":");
                json_str(o, text);
            },
            None,
        );
    }

    /// The first chunk of tool call number `index` (OpenAI numbers tool calls apart from
    /// text): its id and name, with arguments still to come.
    pub fn tool_call_start(&self, out: &mut Vec<u8>, index: usize, id: &str, name: &str) {
        self.chunk(
            out,
            |o| {
                o.extend_from_slice(format!("\"tool_calls\":[{{\"index\":{index},\"id\":").as_bytes());
                json_str(o, id);
                o.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                json_str(o, name);
                o.extend_from_slice(b",\"arguments\":\"\"}}]");
            },
            None,
        );
    }

    pub fn tool_call_arguments(&self, out: &mut Vec<u8>, index: usize, arguments: &str) {
        self.chunk(
            out,
            |o| {
                o.extend_from_slice(
                    format!("\"tool_calls\":[{{\"index\":{index},\"function\":{{\"arguments\":").as_bytes(),
                );
                json_str(o, arguments);
                o.extend_from_slice(b"}}]");
            },
            None,
        );
    }

    pub fn finish(&self, out: &mut Vec<u8>, finish_reason: &str) {
        self.chunk(out, |_| {}, Some(finish_reason));
    }

    /// OpenAI's ending: the usage chunk when the client asked for it, then `[DONE]`.
    pub fn done(&self, out: &mut Vec<u8>, usage: Usage) {
        if self.wants_usage {
            self.open(out);
            out.extend_from_slice(b"[],\"usage\":");
            let _ = serde_json::to_writer(&mut *out, &openai_usage(usage));
            out.extend_from_slice(b"}\n\n");
        }
        write_event(out, None, "[DONE]");
    }
}

/// A message's content parts (a string is one text part), each checked against `allowed`
/// and turned into the provider's form by `part`, given its type, its field path and its
/// payload.
pub(super) fn map_parts(
    cx: &Cx,
    path: &str,
    content: Option<&Value>,
    allowed: &[&str],
    part: impl Fn(&str, &str, &Value) -> Result<Value, GatewayError>,
) -> Result<Vec<Value>, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({ "text": text })]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(j, item)| {
                let path = format!("{path}.content[{j}]");
                let object = cx.object(&path, item)?;
                let kind = object.get("type").and_then(Value::as_str).unwrap_or_default();
                if !allowed.contains(&kind) {
                    return Err(cx.unsupported(&format!("{path}.type"), &format!(" `{kind}`")));
                }
                cx.check_keys(&path, object, &["type", kind])?;
                part(kind, &format!("{path}.{kind}"), object.get(kind).unwrap_or(&Value::Null))
            })
            .collect(),
        Some(_) => Err(cx.invalid(&format!("{path}.content"), "must be a string or an array of content parts")),
    }
}

/// OpenAI request fields (and values) that Anthropic's Messages API and Bedrock's Converse
/// have no place for, each of which their translators must refuse by name.
#[cfg(test)]
pub(super) fn fields_messages_apis_refuse() -> Vec<(&'static str, Value)> {
    vec![
        ("response_format", json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})),
        ("response_format", json!({"type": "json_object"})),
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(1)),
        ("seed", json!(7)),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
        ("modalities", json!(["text", "audio"])),
        ("logit_bias", json!({"50256": -100})),
        ("reasoning_effort", json!("high")),
        ("store", json!(true)),
        ("prediction", json!({"type": "content", "content": "x"})),
        ("web_search_options", json!({})),
        ("functions", json!([{"name": "f"}])),
        ("temperature", json!(1.5)),
        ("x_unknown_option", json!(1)),
    ]
}

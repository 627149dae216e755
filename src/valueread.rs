//! Reading small, cold JSON objects from a parsed `serde_json::Value` inside a hand-written
//! `Deserialize`, instead of a derived one: the derive makes a struct deserializer (1–4 KB
//! of wasm each) for every type, while `Value`'s is in the wasm anyway. The errors are
//! serde's own (`invalid type: …, expected a string`, `unknown field …`, `missing field …`).

use serde::de::{Error, Unexpected};
use serde_json::{Map, Value};

/// The object a type is read from.
pub fn object<'v, E: Error>(v: &'v Value, expected: &'static str) -> Result<&'v Map<String, Value>, E> {
    v.as_object().ok_or_else(|| E::invalid_type(unexpected(v), &expected))
}

/// A field missing or `null` is `None`, as `#[serde(default)] Option<String>` reads it.
pub fn opt_string<E: Error>(o: &Map<String, Value>, name: &str) -> Result<Option<String>, E> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(E::invalid_type(unexpected(v), &"a string")),
    }
}

pub fn opt_f64<E: Error>(o: &Map<String, Value>, name: &str) -> Result<Option<f64>, E> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v) => Err(E::invalid_type(unexpected(v), &"f64")),
    }
}

pub fn opt_bool<E: Error>(o: &Map<String, Value>, name: &str) -> Result<Option<bool>, E> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(E::invalid_type(unexpected(v), &"a boolean")),
    }
}

/// `#[serde(deny_unknown_fields)]`.
pub fn deny_unknown<E: Error>(o: &Map<String, Value>, fields: &'static [&'static str]) -> Result<(), E> {
    match o.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(k) => Err(E::unknown_field(k, fields)),
        None => Ok(()),
    }
}

pub fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

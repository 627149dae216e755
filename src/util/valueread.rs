//! Reading JSON into the types the gateway stores and is sent (config, admin bodies, KV
//! records) from a parsed `serde_json::Value`, instead of through a derived `Deserialize`:
//! the derive makes a struct deserializer (1–9 KB of wasm each) for every type, while
//! `Value`'s is in the wasm anyway. The errors are serde's own (`invalid type: …, expected
//! a string`, `unknown field …`, `missing field …`), and say where (`deployments[2].price`),
//! which a `Value` no longer knows by line and column.

use serde::de::{Error, Unexpected};
use serde_json::{Map, Value};

/// A type read from a JSON value. `at` is where the value sits in the document, for errors.
pub trait FromValue: Sized {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String>;

    /// The whole document as this type.
    fn read(v: &Value) -> Result<Self, String> {
        Self::from_value(v, At::Root)
    }
}

/// Where a value sits in the document (`deployments[2].price`). Written out only for an
/// error, so reading allocates no path.
#[derive(Clone, Copy)]
pub enum At<'a> {
    Root,
    Field(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Field(At::Root, name) => f.write_str(name),
            At::Field(parent, name) => write!(f, "{parent}.{name}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn unexpected(v: &Value) -> Unexpected<'_> {
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

type SerdeError = serde_json::Error;

/// `e` prefixed with where it happened, unless that is the document itself.
pub fn fail(at: At<'_>, e: impl std::fmt::Display) -> String {
    match at {
        At::Root => e.to_string(),
        _ => format!("{at}: {e}"),
    }
}

pub fn invalid_type(v: &Value, at: At<'_>, expected: &'static str) -> String {
    fail(at, SerdeError::invalid_type(unexpected(v), &expected))
}

/// The fields of an object read as a struct. A strict reader (`#[serde(deny_unknown_fields)]`)
/// notes the names it reads, so that [`Fields::done`] can refuse any other: the reader's
/// own calls are the list of known fields.
pub struct Fields<'v, 'a> {
    map: &'v Map<String, Value>,
    at: At<'a>,
    read: Option<std::cell::RefCell<Vec<&'static str>>>,
}

impl<'v, 'a> Fields<'v, 'a> {
    /// `v` as an object whose other fields are ignored (serde's default).
    pub fn any(v: &'v Value, at: At<'a>) -> Result<Self, String> {
        let map = v.as_object().ok_or_else(|| invalid_type(v, at, "an object"))?;
        Ok(Fields { map, at, read: None })
    }

    /// `v` as an object with no fields but those read before [`done`](Self::done).
    pub fn strict(v: &'v Value, at: At<'a>) -> Result<Self, String> {
        Ok(Fields { read: Some(Default::default()), ..Fields::any(v, at)? })
    }

    /// `value`, unless the object has a field that was not read.
    pub fn done<T>(&self, value: T) -> Result<T, String> {
        self.check().map(|()| value)
    }

    fn check(&self) -> Result<(), String> {
        match self.unread() {
            Some(e) => Err(fail(self.at, e)),
            None => Ok(()),
        }
    }

    /// serde's error for the first field that was not read, if there is one.
    pub fn unread(&self) -> Option<String> {
        let read = self.read.as_ref()?.borrow();
        let k = self.map.keys().find(|k| !read.contains(&k.as_str()))?;
        Some(unknown_field(k, &read))
    }

    /// The object's value for `name`, noted as read.
    fn get(&self, name: &'static str) -> Option<&'v Value> {
        if let Some(read) = &self.read {
            read.borrow_mut().push(name);
        }
        self.map.get(name)
    }

    /// Whether the object has `name` (not noted as read).
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn req<T: FromValue>(&self, name: &'static str) -> Result<T, String> {
        match self.get(name) {
            Some(v) => T::from_value(v, At::Field(&self.at, name)),
            None => Err(fail(self.at, SerdeError::missing_field(name))),
        }
    }

    /// An `Option` field: absent and `null` are both `None`.
    pub fn opt<T: FromValue>(&self, name: &'static str) -> Result<Option<T>, String> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::from_value(v, At::Field(&self.at, name)).map(Some),
        }
    }

    /// A `#[serde(default)]` field: `default` when absent; `null` is read like any value.
    pub fn or<T: FromValue>(&self, name: &'static str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => T::from_value(v, At::Field(&self.at, name)),
        }
    }
}

impl FromValue for Value {
    fn from_value(v: &Value, _: At<'_>) -> Result<Self, String> {
        Ok(v.clone())
    }
}

impl FromValue for String {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        v.as_str().map(str::to_string).ok_or_else(|| invalid_type(v, at, "a string"))
    }
}

impl FromValue for bool {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        v.as_bool().ok_or_else(|| invalid_type(v, at, "a boolean"))
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        v.as_f64().ok_or_else(|| invalid_type(v, at, "f64"))
    }
}

/// An unsigned integer up to `max`, refused as serde refuses it for the type `expected`.
fn unsigned(v: &Value, at: At<'_>, expected: &'static str, max: u64) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n <= max => Ok(n),
        _ if v.is_i64() || v.is_u64() => Err(fail(at, SerdeError::invalid_value(unexpected(v), &expected))),
        _ => Err(invalid_type(v, at, expected)),
    }
}

impl FromValue for u32 {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        unsigned(v, at, "u32", u32::MAX.into()).map(|n| n as u32)
    }
}

impl FromValue for u64 {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        unsigned(v, at, "u64", u64::MAX)
    }
}

impl FromValue for usize {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        unsigned(v, at, "usize", usize::MAX as u64).map(|n| n as usize)
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let items = v.as_array().ok_or_else(|| invalid_type(v, at, "a sequence"))?;
        // A loop: a collect into `Result` compiles its iterator adapters per `T`, larger.
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(T::from_value(item, At::Index(&at, i))?);
        }
        Ok(out)
    }
}

impl<T: FromValue> FromValue for std::collections::BTreeMap<String, T> {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let map = v.as_object().ok_or_else(|| invalid_type(v, at, "a map"))?;
        // Inserted one by one: collecting would sort first, with a sort compiled per `T`.
        let mut out = std::collections::BTreeMap::new();
        for (k, item) in map {
            out.insert(k.clone(), T::from_value(item, At::Field(&at, k))?);
        }
        Ok(out)
    }
}

impl FromValue for [f64; 2] {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let expected = "an array of length 2";
        match v.as_array().map(Vec::as_slice) {
            Some([a, b]) => Ok([f64::from_value(a, At::Index(&at, 0))?, f64::from_value(b, At::Index(&at, 1))?]),
            Some(items) => Err(fail(at, SerdeError::invalid_length(items.len(), &expected))),
            None => Err(invalid_type(v, at, expected)),
        }
    }
}

/// serde's `unknown field` message, for a list of fields known only at run time.
fn unknown_field(name: &str, known: &[&str]) -> String {
    format!("unknown field `{name}`, expected one of `{}`", known.join("`, `"))
}

/// A unit variant of an enum with `#[serde(rename_all = "snake_case")]`: the index of its
/// name in `names`.
pub fn variant(v: &Value, at: At<'_>, names: &'static [&'static str]) -> Result<usize, String> {
    let name = v.as_str().ok_or_else(|| invalid_type(v, at, "a string"))?;
    names.iter().position(|n| *n == name).ok_or_else(|| fail(at, SerdeError::unknown_variant(name, names)))
}

/// A JSON document as a `Value`, refusing an object that names a key twice (`duplicate
/// field `allow` at line 3 column 20`), where `serde_json` would keep the last: a derived
/// reader refused a struct's field given twice, and a typo is better refused than half
/// read.
pub fn parse(json: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Unique>(json).map(|u| u.0)
}

struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(s.into())
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(s.into())
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(item) = map.next_value()?;
            match out.entry(key) {
                serde_json::map::Entry::Occupied(e) => {
                    return Err(A::Error::custom(format_args!("duplicate field `{}`", e.key())))
                }
                serde_json::map::Entry::Vacant(e) => e.insert(item),
            };
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_what_serde_json_reads_and_refuses_a_key_named_twice() {
        let text = r#"{"a": [1, -2, 3.5, 1e300, 18446744073709551615, "x\"\u00e9", true, null, {}, []], "b": {"c": {"d": "e"}}}"#;
        assert_eq!(parse(text.as_bytes()).unwrap(), serde_json::from_str::<Value>(text).unwrap());
        let twice = parse(br#"{"b": {"c": 1, "c": 2}}"#).unwrap_err().to_string();
        assert_eq!(twice, "duplicate field `c` at line 1 column 22");
        assert!(parse(b"[1,").is_err());
    }
}

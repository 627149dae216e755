//! The admin API's pure parts: who is calling (labelled admin tokens), what a config
//! change changes (the audit's diff summary), and the explain answer for a hypothetical
//! caller.

use crate::config::Gateway;
use crate::model::geo::{distance_km, Caller};
use crate::policy::residency::{self, Subject};
use crate::util::hash::sha256_hex;
use crate::util::valueread::{At, Fields, FromValue};
use serde::Serialize;
use serde_json::{Map, Value};

/// Admin tokens from the `ADMIN_TOKEN` secret: `label:token` entries separated by commas
/// (`compliance:<token>,platform:<token>`). The label is the identity the audit log records.
#[derive(Debug, Default)]
pub struct AdminTokens {
    by_hash: Vec<(String, String)>,
}

const MIN_TOKEN: usize = 16;
const MAX_TOKEN: usize = 512;
const MAX_LABEL: usize = 32;

impl AdminTokens {
    /// The tokens, or why the secret is not in the format. Strict on purpose: a secret that
    /// could be read two ways (a bare token, a token with `:` in it, a short or repeated
    /// one) disables the admin API rather than being read in the way its writer may not
    /// have meant (`abc:def` as the 3-character token `def`). Errors never show a token.
    /// Unset or blank: no tokens (the API is off).
    pub fn parse(secret: &str) -> Result<AdminTokens, String> {
        let secret = secret.trim();
        let mut by_hash: Vec<(String, String)> = Vec::new();
        if secret.is_empty() {
            return Ok(AdminTokens { by_hash });
        }
        for (i, entry) in secret.split(',').map(str::trim).enumerate() {
            let n = i + 1;
            if entry.is_empty() {
                return Err(format!("entry {n} is empty; entries are `label:token`, separated by commas"));
            }
            let Some((label, token)) = entry.split_once(':') else {
                return Err(format!("entry {n} has no label; write it as `label:token`"));
            };
            let label_ok = label.len() <= MAX_LABEL
                && !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
            if !label_ok {
                return Err(format!(
                    "entry {n}: the label is not 1 to {MAX_LABEL} lowercase letters, digits, `-` or `_`"
                ));
            }
            let at = format!("entry {n} (`{label}`)");
            if !token.bytes().all(|b| b.is_ascii_graphic() && b != b':' && b != b',') {
                return Err(format!("{at}: the token may not contain `:`, `,`, spaces or non-ASCII characters"));
            }
            if !(MIN_TOKEN..=MAX_TOKEN).contains(&token.len()) {
                return Err(format!(
                    "{at}: the token has {} characters; at least {MIN_TOKEN} and at most {MAX_TOKEN}",
                    token.len()
                ));
            }
            let hash = sha256_hex(token.as_bytes());
            if by_hash.iter().any(|(l, _)| l == label) {
                return Err(format!("entry {n}: the label `{label}` is used twice"));
            }
            if by_hash.iter().any(|(_, h)| *h == hash) {
                return Err(format!("{at}: the same token as another entry; each label needs its own"));
            }
            by_hash.push((label.to_string(), hash));
        }
        Ok(AdminTokens { by_hash })
    }

    /// The label of the presented token, if it is one.
    pub fn authenticate(&self, presented: &str) -> Option<&str> {
        let hash = sha256_hex(presented.as_bytes());
        self.by_hash.iter().find(|(_, h)| *h == hash).map(|(label, _)| label.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// Parts of the document that are collections of named entries, reported entry by entry
/// (`rules added: ch-banking`, `deployments changed: eu-a (price.input)`): lists matched by
/// their entries' id field, and maps by key.
const SECTIONS: &[(&str, &str, Option<&str>)] = &[
    ("deployments", "deployments", Some("id")),
    ("aliases", "aliases", Some("name")),
    ("keys", "keys", Some("id")),
    ("residency.rules", "rules", Some("id")),
    ("residency.compliance_tags", "compliance tags", None),
    ("budgets.teams", "team budgets", None),
];

/// What a config change changes, one line per kind of change, for the audit log and the
/// answer. The documents are compared as JSON, field by field, so every field takes part
/// (a field the config gains later included): the answer is empty exactly when the two
/// documents are equal.
pub fn config_diff(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    if out.is_empty() && old != new {
        // Unreachable by construction (the walk reports every difference); kept so that a
        // change can never be answered "unchanged".
        out.push("document changed".into());
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value for the audit: compact JSON, cut short.
fn show(v: Option<&Value>) -> String {
    let Some(v) = v else { return "(none)".into() };
    let text = v.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// An object, or none for an absent one: compared with an empty object.
fn object<'v>(v: Option<&'v Value>, none: &'v Map<String, Value>) -> Option<&'v Map<String, Value>> {
    match v {
        None => Some(none),
        Some(v) => v.as_object(),
    }
}

fn find<'v>(list: &[(&str, &'v Value)], key: &str) -> Option<&'v Value> {
    list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Objects (an absent one counts as empty) field by field, sections entry by entry,
/// anything else as a whole: `limits.max_attempts: 3 -> 5`.
fn walk(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
    if let Some((_, label, id)) = SECTIONS.iter().find(|(p, _, _)| *p == path) {
        if section(label, *id, old, new, out) {
            return;
        }
    }
    let none = Map::new();
    match (object(old, &none), object(new, &none)) {
        (Some(a), Some(b)) if old.is_some() || new.is_some() => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                walk(&join(path, key), a.get(key), b.get(key), out);
            }
        }
        _ if old != new => out.push(format!("{path}: {} -> {}", show(old), show(new))),
        _ => {}
    }
}

/// The field paths inside one entry where it changed (empty when the entry is not an
/// object and changed as a whole).
fn changed_fields(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
    match (old.and_then(Value::as_object), new.and_then(Value::as_object)) {
        (Some(a), Some(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                changed_fields(&join(path, key), a.get(key), b.get(key), out);
            }
        }
        _ if old != new => out.push(path.to_string()),
        _ => {}
    }
}

/// `label added/removed/changed/reordered` lines for a section; false when the values do
/// not have the section's shape (then they are compared as plain values).
fn section(label: &str, id: Option<&str>, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) -> bool {
    let (Some(old), Some(new)) = (entries(old, id), entries(new, id)) else { return false };
    let added: Vec<&str> = new.iter().map(|(k, _)| *k).filter(|k| find(&old, k).is_none()).collect();
    let removed: Vec<&str> = old.iter().map(|(k, _)| *k).filter(|k| find(&new, k).is_none()).collect();
    let changed: Vec<String> = new
        .iter()
        .filter_map(|(k, v)| {
            let before = find(&old, k)?;
            let mut fields = Vec::new();
            changed_fields("", Some(before), Some(v), &mut fields);
            match fields.as_slice() {
                [] => None,
                [whole] if whole.is_empty() => Some(k.to_string()),
                _ => Some(format!("{k} ({})", fields.join(", "))),
            }
        })
        .collect();
    for (verb, items) in [("added", added.join(", ")), ("removed", removed.join(", ")), ("changed", changed.join(", "))]
    {
        if !items.is_empty() {
            out.push(format!("{label} {verb}: {items}"));
        }
    }
    // The order of a list's entries is part of the document (it decides which rule
    // applies first).
    let common = |a: &[(&str, &Value)], b: &[(&str, &Value)]| -> Vec<String> {
        a.iter().map(|(k, _)| k.to_string()).filter(|k| find(b, k).is_some()).collect()
    };
    if id.is_some() && common(&old, &new) != common(&new, &old) {
        let now: Vec<&str> = new.iter().map(|(k, _)| *k).collect();
        out.push(format!("{label} reordered: {}", now.join(" > ")));
    }
    true
}

/// A section's entries by name, in order: a list of objects with unique string ids, or a
/// map; absent is empty. None for anything else.
fn entries<'v>(v: Option<&'v Value>, id: Option<&str>) -> Option<Vec<(&'v str, &'v Value)>> {
    let list: Vec<(&str, &Value)> = match (v, id) {
        (None, _) => Vec::new(),
        (Some(Value::Object(m)), None) => m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        (Some(Value::Array(a)), Some(field)) => {
            a.iter().map(|e| Some((e.get(field)?.as_str()?, e))).collect::<Option<Vec<_>>>()?
        }
        _ => return None,
    };
    let mut names: Vec<&str> = list.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    names.windows(2).all(|w| w[0] != w[1]).then_some(list)
}

/// A hypothetical request for `POST /admin/residency/explain`. Read through a `Value` (see
/// `crate::util::valueread`) with the checks of the derived `TypedExplainQuery` in the tests:
/// `model` required, the rest optional, no other field.
#[derive(Debug, PartialEq)]
pub struct ExplainQuery {
    pub model: String,
    pub country: Option<String>,
    pub continent: Option<String>,
    pub eu: Option<bool>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub compliance: Option<String>,
    pub team: Option<String>,
    /// A key id from the config, whose team and residency policy then apply.
    pub key: Option<String>,
}

impl FromValue for ExplainQuery {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(ExplainQuery {
            model: f.req("model")?,
            country: f.opt("country")?,
            continent: f.opt("continent")?,
            eu: f.opt("eu")?,
            latitude: f.opt("latitude")?,
            longitude: f.opt("longitude")?,
            compliance: f.opt("compliance")?,
            team: f.opt("team")?,
            key: f.opt("key")?,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Explained {
    pub caller: String,
    pub location_known: bool,
    pub rule: String,
    pub allowed: String,
    pub candidates: Vec<ExplainedCandidate>,
}

#[derive(Debug, Serialize)]
pub struct ExplainedCandidate {
    pub deployment: String,
    pub jurisdiction: String,
    pub region: String,
    /// Position in the order the gateway would try it; none when dropped.
    pub order: Option<usize>,
    pub distance_km: Option<u64>,
    pub reason: String,
}

/// What the gateway would decide for the hypothetical request: the rule, the allowed
/// jurisdictions and every deployment of the alias, kept (in try order) or left out (why:
/// the rules, or a Worker secret it names that `secret_set` says is not set).
pub fn explain(
    g: &Gateway,
    q: &ExplainQuery,
    secret_set: &dyn Fn(&str) -> bool,
) -> Result<Explained, crate::model::error::GatewayError> {
    let alias = g.alias(&q.model).ok_or_else(|| crate::model::error::GatewayError::model_not_found(&q.model))?;
    let key = match &q.key {
        Some(id) => Some(g.config.keys.iter().find(|k| &k.id == id).ok_or_else(|| {
            crate::model::error::GatewayError::bad_request("unknown_key", format!("No gateway key with id `{id}`."))
        })?),
        None => None,
    };
    let mut caller = Caller::new(q.country.as_deref(), q.continent.as_deref(), q.eu);
    caller.location = q.latitude.zip(q.longitude).map(|(lat, lon)| [lat, lon]);
    let team = q.team.clone().or_else(|| key.and_then(|k| k.team.clone()));
    let compliance = residency::compliance_tags(q.compliance.as_deref());
    let subject = Subject {
        caller: &caller,
        compliance: &compliance,
        team: team.as_deref(),
        key_id: key.map(|k| k.id.as_str()),
        key_policy: key.and_then(|k| k.residency.as_deref()),
    };
    let decision = residency::decide(&g.config.residency, &subject)?;
    let cands = residency::candidates(g, alias, &decision, &caller);
    let distance = |id: &str| {
        let d = g.deployment(id)?;
        caller.location.zip(d.location).map(|(a, b)| distance_km(a, b).round() as u64)
    };
    let mut order = 0;
    let mut candidates: Vec<ExplainedCandidate> = cands
        .kept
        .iter()
        .map(|d| {
            let allowed = format!("jurisdiction `{}` is allowed by rule `{}`", d.jurisdiction, decision.rule);
            let unset: Vec<&str> = d.secrets().map(|(_, name)| name).filter(|name| !secret_set(name)).collect();
            let (order, reason) = if unset.is_empty() {
                order += 1;
                (Some(order), allowed)
            } else {
                (None, format!("{allowed}, but it is skipped: its secret {} is not set", unset.join(", ")))
            };
            ExplainedCandidate {
                deployment: d.id.clone(),
                jurisdiction: d.jurisdiction.clone(),
                region: d.region.clone(),
                order,
                distance_km: distance(&d.id),
                reason,
            }
        })
        .collect();
    candidates.extend(cands.dropped.iter().map(|x| {
        let d = g.deployment(&x.deployment).expect("dropped deployments exist");
        ExplainedCandidate {
            deployment: d.id.clone(),
            jurisdiction: d.jurisdiction.clone(),
            region: d.region.clone(),
            order: None,
            distance_km: distance(&d.id),
            reason: x.reason.clone(),
        }
    }));
    Ok(Explained {
        caller: caller.label(),
        location_known: caller.location_known(),
        rule: decision.rule,
        allowed: decision.allowed.label(),
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde::Deserialize;

    #[test]
    fn admin_tokens_carry_labels() {
        let t = AdminTokens::parse(" compliance:s3cret-s3cret-s3cret , platform:t0ken-t0ken-t0ken-t0ken\n").unwrap();
        assert_eq!(t.authenticate("s3cret-s3cret-s3cret"), Some("compliance"));
        assert_eq!(t.authenticate("t0ken-t0ken-t0ken-t0ken"), Some("platform"));
        assert_eq!(t.authenticate("platform:t0ken-t0ken-t0ken-t0ken"), None);
        assert_eq!(t.authenticate("nope"), None);
        assert!(AdminTokens::parse("").unwrap().is_empty());
        assert!(AdminTokens::parse(" \n").unwrap().is_empty());
    }

    /// Anything but `label:token` entries, each unambiguous, disables the admin API: the
    /// secret is never read as something its writer may not have meant.
    #[test]
    fn admin_token_format_is_strict() {
        let refused = |secret: &str, needle: &str| {
            let e = AdminTokens::parse(secret).err().unwrap_or_else(|| panic!("`{secret}` was accepted"));
            assert!(e.contains(needle), "`{secret}`: {e} should say `{needle}`");
            assert!(!e.contains("abcdefghijklmnop"), "an error never shows a token: {e}");
        };
        refused("abc:def", "entry 1 (`abc`): the token has 3 characters; at least 16");
        refused("abcdefghijklmnopqrst", "entry 1 has no label");
        refused("ops:abcdefghijklmnop:q", "entry 1 (`ops`): the token may not contain");
        refused("Bad Label:abcdefghijklmnopqrst", "entry 1: the label");
        refused(":abcdefghijklmnopqrst", "entry 1: the label");
        refused("ops:abcdefghij klmnopqrst", "entry 1 (`ops`): the token may not contain");
        refused("ops:abcdefghijklmnopqrst,", "entry 2 is empty");
        refused("ops:abcdefghijklmnopqrst,,x:abcdefghijklmnopqrsu", "entry 2 is empty");
        refused("ops:abcdefghijklmnopqrst,ops:abcdefghijklmnopqrsu", "entry 2: the label `ops` is used twice");
        refused("ops:abcdefghijklmnopqrst,dev:abcdefghijklmnopqrst", "entry 2 (`dev`): the same token as another");
        refused(&format!("ops:{}", "a".repeat(513)), "at most 512");
    }

    /// A config with every field the reader knows, one deployment per provider with
    /// settings of its own; `every_field_is_in_the_full_config` keeps it complete.
    fn full() -> Value {
        let price = serde_json::json!({"input": "3.00", "output": "15.00", "cached_input": "0.30", "cache_write": "3.75",
            "web_search": "10.00"});
        serde_json::json!({
            "deployments": [
                {"id": "oa", "provider": "openai", "model": "gpt", "base_url": "https://eu.api.openai.com/v1",
                 "api_key_secret": "OPENAI_KEY", "jurisdiction": "europe", "region": "eu", "location": [50.1, 8.7],
                 "first_byte_timeout_ms": 20000, "price": price,
                 "capabilities": {"vision": true, "tools": false, "json_mode": true, "context_window": 128000},
                 "health": {"failure_threshold": 4, "window_ms": 30000, "cooldown_ms": 10000}},
                {"id": "br", "provider": "bedrock", "model": "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
                 "base_url": "https://bedrock-runtime.eu-central-1.amazonaws.com", "aws_region": "eu-central-1",
                 "aws_access_key_id_secret": "AWS_ID", "aws_secret_access_key_secret": "AWS_KEY",
                 "aws_session_token_secret": "AWS_TOKEN", "jurisdiction": "europe", "region": "eu-central-1", "price": price},
                {"id": "az", "provider": "azure_openai", "model": "gpt-4o", "base_url": "https://r.openai.azure.com",
                 "api_key_secret": "AZURE_KEY", "api_version": "2024-10-21", "azure_deployment_type": "data_zone_eu",
                 "jurisdiction": "eu", "region": "swedencentral", "price": price},
                {"id": "vx", "provider": "vertex", "model": "gemini-2.5-flash", "base_url": "https://aiplatform.eu.rep.googleapis.com",
                 "gcp_project": "p", "gcp_location": "eu", "vertex_publisher": "google",
                 "gcp_service_account_secret": "GCP_SA", "jurisdiction": "eu", "region": "eu", "price": price}
            ],
            "aliases": [
                {"name": "fast", "description": "d", "strategy": "weighted", "deployments": ["oa", "az"],
                 "weights": {"oa": 90, "az": 10}, "sticky": "user"},
                {"name": "claude", "deployments": ["br"]},
                {"name": "gem", "deployments": ["vx"]}
            ],
            "keys": [
                {"id": "k1", "sha256": "a".repeat(64), "team": "search", "feature": "rank", "env": "prod",
                 "aliases": ["fast"], "residency": ["eu"], "budget": {"monthly_usd": "200.00", "mode": "hard"},
                 "rate_limit": "RL_STANDARD"},
                {"id": "k2", "secret": "GATEWAY_KEY_OPS"}
            ],
            "residency": {
                "unknown_location": "most_restrictive",
                "compliance_tags": {"gdpr": ["eu", "uk"], "eu-data": ["eu", "uk"]},
                "distance_band_km": 1000,
                "rules": [
                    {"id": "gdpr-tag", "description": "GDPR", "when": {"compliance": ["gdpr"]}, "allow": ["eu"]},
                    {"id": "eu-callers", "when": {"countries": ["DE", "FR"], "continents": ["EU"], "eu": true, "compliance": ["eu-data"],
                     "teams": ["search"], "keys": ["k1"]}, "allow": ["eu", "uk"]},
                    {"id": "default", "allow": ["any"]}
                ]
            },
            "limits": {"max_body_bytes": 4194304, "max_attempts": 3, "total_deadline_ms": 60000,
                       "max_retry_after_ms": 5000,
                       "health": {"failure_threshold": 5, "window_ms": 60000, "cooldown_ms": 30000}},
            "budgets": {"teams": {"search": {"monthly_usd": "2400.00", "mode": "soft"}}}
        })
    }

    /// Every object the reader reads strictly names each field it knows: a field added to
    /// the config must be added to `full()` too, so that the leaf walk covers it.
    #[test]
    fn every_field_is_in_the_full_config() {
        let doc = full();
        config::parse(&doc.to_string()).expect("the full config is valid");
        let strict: &[(&str, &[&str])] = &[
            ("", &[]),
            ("/deployments/0", &[]),
            ("/deployments/1", &["api_key_secret", "location", "first_byte_timeout_ms", "capabilities", "health"]),
            ("/deployments/2", &["location", "first_byte_timeout_ms", "capabilities", "health"]),
            ("/deployments/3", &["api_key_secret", "location", "first_byte_timeout_ms", "capabilities", "health"]),
            ("/deployments/0/price", &[]),
            ("/deployments/0/capabilities", &[]),
            ("/deployments/0/health", &[]),
            ("/aliases/0", &[]),
            ("/keys/0", &["secret"]),
            ("/keys/1", &["sha256", "team", "feature", "env", "aliases", "residency", "budget", "rate_limit"]),
            ("/keys/0/budget", &[]),
            ("/residency", &[]),
            ("/residency/rules/0", &[]),
            ("/residency/rules/1/when", &[]),
            ("/limits", &[]),
            ("/limits/health", &[]),
            ("/budgets", &[]),
            ("/budgets/teams/search", &[]),
        ];
        for (pointer, absent) in strict {
            let mut probe = doc.clone();
            probe.pointer_mut(pointer).unwrap().as_object_mut().unwrap().insert("zz_unknown".into(), 1.into());
            let err = config::parse(&probe.to_string()).unwrap_err();
            let known = err.split("expected one of ").nth(1).unwrap_or_else(|| panic!("{pointer}: {err}"));
            let object = doc.pointer(pointer).unwrap().as_object().unwrap();
            for name in known.split(", ").map(|n| n.trim_matches('`')) {
                assert!(object.contains_key(name) || absent.contains(&name), "{pointer} lacks `{name}`");
            }
        }
    }

    /// Every leaf position of a JSON document with its pointer.
    fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, x)| leaves(x, format!("{at}/{k}"), out)),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| leaves(x, format!("{at}/{i}"), out)),
            _ => out.push(at),
        }
    }

    fn mutated(v: &Value) -> Value {
        match v {
            Value::Bool(b) => Value::Bool(!b),
            Value::Number(n) => match n.as_u64() {
                Some(u) => (u + 1).into(),
                None => (n.as_f64().unwrap() + 0.5).into(),
            },
            Value::String(s) => format!("{s}x").into(),
            _ => Value::Bool(true),
        }
    }

    /// What a change at `pointer` must be reported as: the last field name on the path
    /// (a named entry's id field is reported by the entry's old id).
    fn mention(doc: &Value, pointer: &str) -> String {
        let parts: Vec<&str> = pointer.split('/').skip(1).collect();
        let last = parts.iter().rposition(|p| p.parse::<usize>().is_err()).unwrap();
        if matches!(parts[last], "id" | "name") {
            return doc.pointer(pointer).unwrap().as_str().unwrap().to_string();
        }
        parts[last].to_string()
    }

    /// Every leaf of the full config, changed or removed, is in the diff: nothing a PUT
    /// changes can be answered "unchanged" or left out of the audit.
    #[test]
    fn config_diff_sees_every_leaf() {
        let old = full();
        assert!(config_diff(&old, &old.clone()).is_empty());
        let mut paths = Vec::new();
        leaves(&old, String::new(), &mut paths);
        assert!(paths.len() > 100, "{}", paths.len());
        for pointer in &paths {
            let mut new = old.clone();
            let leaf = new.pointer_mut(pointer).unwrap();
            *leaf = mutated(leaf);
            let diff = config_diff(&old, &new).join("; ");
            let needle = mention(&old, pointer);
            assert!(diff.contains(&needle), "changing {pointer}: {diff:?} should mention `{needle}`");
        }
        // And every field removed (object members) is seen too.
        for pointer in &paths {
            let (parent, field) = pointer.rsplit_once('/').unwrap();
            let mut new = old.clone();
            let Some(object) = new.pointer_mut(parent).and_then(Value::as_object_mut) else { continue };
            object.remove(field);
            assert!(!config_diff(&old, &new).is_empty(), "removing {pointer} is not seen");
        }
    }

    fn sample() -> Gateway {
        config::parse(&config::tests::sample()).unwrap()
    }

    fn sample_doc() -> Value {
        serde_json::from_str(&config::tests::sample()).unwrap()
    }

    #[test]
    fn config_diff_names_what_changed() {
        let old = sample_doc();
        let mut new = old.clone();
        let rules = new["residency"]["rules"].as_array_mut().unwrap();
        rules[1]["allow"] = serde_json::json!(["eu", "uk"]);
        rules.remove(2);
        rules.insert(0, serde_json::json!({"id": "swiss", "when": {"countries": ["CH"]}, "allow": ["ch"]}));
        new["residency"]["compliance_tags"]["hipaa"] = serde_json::json!(["us"]);
        new["residency"]["compliance_tags"]["gdpr"] = serde_json::json!(["eu"]);
        assert_eq!(
            config_diff(&old, &new),
            vec![
                "compliance tags added: hipaa",
                "compliance tags changed: gdpr",
                "rules added: swiss",
                "rules removed: apac-callers",
                "rules changed: eu-callers (allow)",
            ]
        );
        let mut swapped = old.clone();
        swapped["residency"]["rules"].as_array_mut().unwrap().swap(0, 1);
        assert_eq!(
            config_diff(&old, &swapped),
            vec!["rules reordered: eu-callers > gdpr-tag > apac-callers > default"]
        );
    }

    #[test]
    fn config_diff_covers_every_section() {
        let old = sample_doc();
        let mut new = old.clone();
        new["deployments"][0]["model"] = "other".into();
        new["deployments"][1]["price"]["input"] = "9".into();
        new["aliases"].as_array_mut().unwrap().pop();
        new["limits"] = serde_json::json!({"max_attempts": 5});
        new["budgets"] = serde_json::json!({"teams": {"search": {"monthly_usd": "10"}}});
        assert_eq!(
            config_diff(&old, &new),
            vec![
                "aliases removed: us-only",
                "deployments changed: eu-a (model), eu-b (price.input)",
                "team budgets added: search",
                "limits.max_attempts: (none) -> 5",
            ]
        );
        // Key order and whitespace are not changes; a long value is cut short.
        let reparsed: Value = serde_json::from_str(&serde_json::to_string_pretty(&old).unwrap()).unwrap();
        assert!(config_diff(&old, &reparsed).is_empty());
        let mut long = old.clone();
        long["aliases"][0]["description"] = "x".repeat(100).into();
        assert_eq!(config_diff(&old, &long), vec!["aliases changed: chat (description)"]);
        let mut odd = old.clone();
        odd["limits"] = serde_json::json!(["not", "an", "object", "x".repeat(80)]);
        let line = &config_diff(&old, &odd)[0];
        assert!(line.starts_with("limits: (none) -> [\"not\"") && line.ends_with('…'), "{line}");
    }

    /// The derived reader `ExplainQuery`'s hand-written one replaced, as the reference.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct TypedExplainQuery {
        model: String,
        #[serde(default)]
        country: Option<String>,
        #[serde(default)]
        continent: Option<String>,
        #[serde(default)]
        eu: Option<bool>,
        #[serde(default)]
        latitude: Option<f64>,
        #[serde(default)]
        longitude: Option<f64>,
        #[serde(default)]
        compliance: Option<String>,
        #[serde(default)]
        team: Option<String>,
        /// A key id from the config, whose team and residency policy then apply.
        #[serde(default)]
        key: Option<String>,
    }

    #[test]
    fn explain_query_reads_as_the_derived_struct_did() {
        for text in [
            r#"{"model":"chat"}"#,
            r#"{"model":"chat","country":"JP","continent":"AS","eu":false,"latitude":35,"longitude":139.7,"compliance":"gdpr","team":"t","key":"k"}"#,
            r#"{"model":"chat","country":null,"eu":null,"latitude":-1}"#,
            r#"{}"#,
            r#"{"model":null}"#,
            r#"{"model":3}"#,
            r#"{"model":"chat","colour":1}"#,
            r#"{"model":"chat","eu":"yes"}"#,
            r#"{"model":"chat","latitude":"35"}"#,
            r#"{"model":"chat","team":[]}"#,
            r#"[]"#,
            r#"null"#,
        ] {
            let ours = serde_json::from_str(text).map_err(|e| e.to_string()).and_then(|v| ExplainQuery::read(&v));
            let typed = serde_json::from_str::<TypedExplainQuery>(text);
            assert_eq!(ours.is_ok(), typed.is_ok(), "{text}: {ours:?} / {typed:?}");
            if let (Ok(a), Ok(b)) = (ours, typed) {
                assert_eq!(
                    (a.model, a.country, a.continent, a.eu, a.latitude, a.longitude, a.compliance, a.team, a.key),
                    (b.model, b.country, b.continent, b.eu, b.latitude, b.longitude, b.compliance, b.team, b.key),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn explain_lists_kept_and_dropped_candidates() {
        let g = sample();
        let q = serde_json::json!({
            "model": "chat", "country": "JP", "continent": "AS", "latitude": 35.7, "longitude": 139.7
        });
        let q = ExplainQuery::read(&q).unwrap();
        let e = explain(&g, &q, &|_| true).unwrap();
        assert_eq!((e.rule.as_str(), e.allowed.as_str(), e.caller.as_str()), ("apac-callers", "apac", "JP/AS"));
        let kept: Vec<(&str, Option<usize>)> =
            e.candidates.iter().map(|c| (c.deployment.as_str(), c.order)).filter(|c| c.1.is_some()).collect();
        assert_eq!(kept, vec![("jp-a", Some(1)), ("sg-a", Some(2))]);
        assert_eq!(e.candidates.len(), 6);
        assert_eq!(e.candidates[0].distance_km, Some(0));
        let dropped = e.candidates.iter().find(|c| c.deployment == "eu-a").unwrap();
        assert!(dropped.order.is_none() && dropped.reason.contains("not allowed by rule `apac-callers`"));

        let q = ExplainQuery::read(&serde_json::json!({"model": "chat", "key": "k2"})).unwrap();
        let e = explain(&g, &q, &|_| true).unwrap();
        assert_eq!((e.rule.as_str(), e.allowed.as_str(), e.location_known), ("eu-callers", "eu", false));
        let bad = ExplainQuery::read(&serde_json::json!({"model": "nope"})).unwrap();
        assert_eq!(explain(&g, &bad, &|_| true).unwrap_err().status, 404);
        assert!(ExplainQuery::read(&serde_json::json!({"model": "chat", "colour": 1})).is_err());
    }
}

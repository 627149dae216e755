//! Import of a LiteLLM proxy config (`model_list` and `router_settings`, as JSON) into a
//! draft of this gateway's config, with a note for everything that does not map. The
//! draft is returned for review, not applied: LiteLLM has no notion of jurisdiction or
//! (often) price, and both must be right before a config goes live.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, PartialEq)]
pub struct Imported {
    /// `deployments`, `aliases` and `limits` for the gateway config.
    pub draft: Value,
    pub notes: Vec<String>,
}

/// LiteLLM's `provider/` model prefixes that have a counterpart here.
fn provider(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "openai" | "text-completion-openai" => "openai",
        "anthropic" => "anthropic",
        "bedrock" | "bedrock_converse" => "bedrock",
        "azure" => "azure_openai",
        "mistral" => "mistral",
        "gemini" => "gemini",
        "vertex_ai" => "vertex",
        _ => return None,
    })
}

fn default_base(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "openai" => "https://api.openai.com/v1",
        "anthropic" => "https://api.anthropic.com/v1",
        "mistral" => "https://api.mistral.ai/v1",
        "gemini" => "https://generativelanguage.googleapis.com",
        _ => return None,
    })
}

/// What LiteLLM's region fields say about where a deployment processes requests.
fn jurisdiction(provider: &str, params: &Map<String, Value>) -> &'static str {
    let region = params.get("aws_region_name").or(params.get("vertex_location")).and_then(Value::as_str).unwrap_or("");
    let model = params.get("model").and_then(Value::as_str).unwrap_or("");
    let api_base = params.get("api_base").and_then(Value::as_str).unwrap_or("");
    match provider {
        "bedrock" if model.contains("/global.") => "global",
        "bedrock" if region.starts_with("eu-") || model.contains("/eu.") => "eu",
        "bedrock" if region.starts_with("us-") || model.contains("/us.") => "us",
        "bedrock" if region.starts_with("ap-") || model.contains("/apac.") => "apac",
        "vertex" if region == "eu" || region.starts_with("europe-") => "eu",
        "vertex" if region == "us" || region.starts_with("us-") => "us",
        "mistral" if api_base.contains("://api.eu.mistral.ai") => "eu",
        "mistral" if api_base.contains("://api.us.mistral.ai") => "us",
        _ => "global",
    }
}

/// `os.environ/NAME` → `NAME`; LiteLLM's other forms put a key in the config itself.
fn secret_name(v: &Value) -> Result<String, String> {
    match v.as_str() {
        Some(s) if s.starts_with("os.environ/") => Ok(s["os.environ/".len()..].to_string()),
        Some(_) => Err("holds a key in clear; put it in a Worker secret and name it in api_key_secret".into()),
        None => Err("is not a string".into()),
    }
}

/// `0.000003` USD per token → `"3"` USD per million tokens, through the number's text so
/// no float rounding creeps in.
fn per_mtok(v: &Value) -> Option<String> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text.as_str(), 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^-scale, and a million tokens is 10^6 of them.
    let digits = format!("{int}{frac}");
    let scale = frac.len() as i32 - exp - 6;
    let s = if scale <= 0 {
        format!("{digits}{}", "0".repeat((-scale) as usize))
    } else {
        let padded = format!("{}{digits}", "0".repeat((scale as usize + 1).saturating_sub(digits.len())));
        let (w, f) = padded.split_at(padded.len() - scale as usize);
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            w.to_string()
        } else {
            format!("{w}.{f}")
        }
    };
    let s = s.trim_start_matches('0');
    Some(if s.is_empty() || s.starts_with('.') { format!("0{s}") } else { s.to_string() })
}

pub fn import(litellm: &Value) -> Result<Imported, String> {
    let list = litellm.get("model_list").and_then(Value::as_array).ok_or("`model_list` is missing or not a list")?;
    let mut notes = Vec::new();
    let mut deployments = Vec::new();
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, entry) in list.iter().enumerate() {
        let alias =
            entry.get("model_name").and_then(Value::as_str).ok_or(format!("model_list[{i}] has no model_name"))?;
        let params = entry
            .get("litellm_params")
            .and_then(Value::as_object)
            .ok_or(format!("model_list[{i}] has no litellm_params"))?;
        let model = params
            .get("model")
            .and_then(Value::as_str)
            .ok_or(format!("model_list[{i}] has no litellm_params.model"))?;
        let (prefix, name) = model.split_once('/').unwrap_or(("openai", model));
        let Some(kind) = provider(prefix) else {
            notes.push(format!("model_list[{i}] ({model}): provider `{prefix}` is not supported here; skipped"));
            continue;
        };
        let id = format!("{alias}-{}", deployments.len() + 1).replace(['/', ' ', ':'], "-");
        let mut d = json!({"id": id, "provider": kind, "model": name, "jurisdiction": jurisdiction(kind, params), "region": "unknown"});
        if let Some(base) = params.get("api_base").and_then(Value::as_str).or(default_base(kind)) {
            d["base_url"] = json!(base.trim_end_matches('/'));
        } else {
            notes.push(format!("deployment `{id}`: set base_url (LiteLLM derives it for {prefix})"));
        }
        if let Some(key) = params.get("api_key") {
            match secret_name(key) {
                Ok(name) => d["api_key_secret"] = json!(name),
                Err(why) => notes.push(format!("deployment `{id}`: api_key {why}")),
            }
        }
        for (from, to) in [
            ("aws_region_name", "aws_region"),
            ("api_version", "api_version"),
            ("vertex_project", "gcp_project"),
            ("vertex_location", "gcp_location"),
        ] {
            if let Some(v) = params.get(from) {
                d[to] = v.clone();
                if from.ends_with("region_name") || from == "vertex_location" {
                    d["region"] = v.clone();
                }
            }
        }
        if d["jurisdiction"] == "global" {
            notes.push(format!("deployment `{id}`: jurisdiction set to global (LiteLLM does not say where it processes); narrow it if you know"));
        }
        let info = entry.get("model_info").and_then(Value::as_object);
        let cost = |field: &str| params.get(field).or_else(|| info.and_then(|m| m.get(field))).and_then(per_mtok);
        match (cost("input_cost_per_token"), cost("output_cost_per_token")) {
            (Some(input), Some(output)) => d["price"] = json!({"input": input, "output": output}),
            _ => notes.push(format!(
                "deployment `{id}`: add a price (USD per million tokens); LiteLLM's built-in table is not imported"
            )),
        }
        for ignored in ["rpm", "tpm", "max_parallel_requests", "stream_timeout"] {
            if params.contains_key(ignored) {
                notes.push(format!(
                    "deployment `{id}`: `{ignored}` is not mapped (use key rate limits and first_byte_timeout_ms)"
                ));
            }
        }
        aliases.entry(alias.to_string()).or_default().push(id);
        deployments.push(d);
    }
    let settings = litellm.get("router_settings").and_then(Value::as_object);
    let get = |k: &str| settings.and_then(|s| s.get(k));
    let strategy = match get("routing_strategy").and_then(Value::as_str) {
        None | Some("simple-shuffle") => "weighted",
        Some("latency-based-routing") => "latency",
        Some("cost-based-routing") => "cost",
        Some(other) => {
            notes.push(format!("routing_strategy `{other}` has no counterpart; aliases use priority order"));
            "priority"
        }
    };
    let aliases: Vec<Value> = aliases
        .into_iter()
        .map(|(name, ids)| {
            if strategy == "weighted" && ids.len() > 1 {
                // Inserted, not collected: a collect sorts first, with a sort compiled per call site.
                let mut weights = Map::new();
                for id in &ids {
                    weights.insert(id.clone(), json!(1));
                }
                json!({"name": name, "strategy": "weighted", "deployments": ids, "weights": weights})
            } else {
                json!({"name": name, "strategy": if strategy == "weighted" { "priority" } else { strategy }, "deployments": ids})
            }
        })
        .collect();
    let mut limits = json!({});
    if let Some(n) = get("num_retries").and_then(Value::as_u64) {
        limits["max_attempts"] = json!(n + 1);
    }
    if let Some(t) = get("timeout").and_then(Value::as_f64) {
        limits["total_deadline_ms"] = json!((t * 1000.0).round() as u64);
    }
    let mut health = json!({});
    if let Some(n) = get("allowed_fails").and_then(Value::as_u64) {
        health["failure_threshold"] = json!(n + 1);
    }
    if let Some(c) = get("cooldown_time").and_then(Value::as_f64) {
        health["cooldown_ms"] = json!((c * 1000.0).round() as u64);
    }
    if health.as_object().is_some_and(|h| !h.is_empty()) {
        limits["health"] = health;
    }
    if get("fallbacks").is_some() || get("context_window_fallbacks").is_some() {
        notes.push("fallbacks are not mapped: list the fallback deployments in the alias itself, in order".into());
    }
    notes.push("add residency rules and gateway keys: LiteLLM's config has neither".into());
    Ok(Imported { draft: json!({"deployments": deployments, "aliases": aliases, "limits": limits}), notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_articles_config_imports() {
        // The routing config from the article this gateway grew from, as JSON.
        let litellm = json!({
            "model_list": [
                {"model_name": "fast-classify", "litellm_params": {"model": "anthropic/claude-haiku-4-5-20251001", "api_key": "os.environ/ANTHROPIC_API_KEY", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000005}},
                {"model_name": "generate", "litellm_params": {"model": "anthropic/claude-sonnet-4-20250514", "api_key": "os.environ/ANTHROPIC_API_KEY"}},
                {"model_name": "generate", "litellm_params": {"model": "bedrock/anthropic.claude-sonnet-4-v1", "aws_region_name": "eu-central-1", "rpm": 100}}
            ],
            "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2}
        });
        let out = import(&litellm).unwrap();
        let d = &out.draft["deployments"];
        assert_eq!(d[0]["provider"], "anthropic");
        assert_eq!(d[0]["model"], "claude-haiku-4-5-20251001");
        assert_eq!(d[0]["api_key_secret"], "ANTHROPIC_API_KEY");
        assert_eq!(d[0]["base_url"], "https://api.anthropic.com/v1");
        assert_eq!(d[0]["price"], json!({"input": "1", "output": "5"}));
        assert_eq!((d[2]["provider"].as_str(), d[2]["jurisdiction"].as_str()), (Some("bedrock"), Some("eu")));
        assert_eq!(d[2]["aws_region"], "eu-central-1");
        let a = &out.draft["aliases"];
        assert_eq!(a[1]["name"], "generate");
        assert_eq!(a[1]["strategy"], "weighted");
        assert_eq!(a[1]["deployments"], json!(["generate-2", "generate-3"]));
        assert_eq!(a[0]["strategy"], "priority", "one deployment: nothing to shuffle");
        assert_eq!(out.draft["limits"]["max_attempts"], 3);
        let notes = out.notes.join("\n");
        assert!(notes.contains("`generate-2`: add a price"), "{notes}");
        assert!(notes.contains("`generate-3`: `rpm` is not mapped"), "{notes}");
        assert!(notes.contains("`generate-3`: set base_url"), "{notes}");
        assert!(notes.contains("residency rules"));
    }

    #[test]
    fn what_does_not_map_is_said() {
        let litellm = json!({
            "model_list": [
                {"model_name": "x", "litellm_params": {"model": "cohere/command-r", "api_key": "k"}},
                {"model_name": "y", "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-live-123"}}
            ],
            "router_settings": {"routing_strategy": "usage-based-routing-v2", "fallbacks": [{"y": ["x"]}], "allowed_fails": 2, "cooldown_time": 30, "timeout": 12.5}
        });
        let out = import(&litellm).unwrap();
        let notes = out.notes.join("\n");
        assert!(notes.contains("provider `cohere` is not supported"));
        assert!(notes.contains("holds a key in clear"));
        assert!(!out.draft.to_string().contains("sk-live-123"), "a clear key is never copied");
        assert!(notes.contains("usage-based-routing-v2"));
        assert!(notes.contains("fallbacks are not mapped"));
        assert_eq!(
            out.draft["limits"],
            json!({"total_deadline_ms": 12500, "health": {"failure_threshold": 3, "cooldown_ms": 30000}})
        );
        assert!(import(&json!({})).is_err());
        assert!(import(&json!({"model_list": [{"litellm_params": {}}]})).unwrap_err().contains("model_name"));
    }

    #[test]
    fn per_token_prices_become_per_million_exactly() {
        assert_eq!(per_mtok(&json!(0.000003)).as_deref(), Some("3"));
        assert_eq!(per_mtok(&json!(1.5e-7)).as_deref(), Some("0.15"));
        assert_eq!(per_mtok(&json!("0.0000025")).as_deref(), Some("2.5"));
        assert_eq!(per_mtok(&json!(0.00001)).as_deref(), Some("10"));
        assert_eq!(per_mtok(&json!(2)).as_deref(), Some("2000000"));
        assert_eq!(per_mtok(&json!(null)), None);
    }
}

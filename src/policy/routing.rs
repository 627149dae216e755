//! Which of the residency-allowed deployments may serve this request (capabilities) and in
//! what order to try them (the alias's strategy, within each distance band). Residency
//! decides the set; nothing here can add to it.

use crate::config::{Alias, Capabilities, Deployment, Gateway, Sticky, Strategy};
use crate::model::chat::ChatRequest;
use crate::policy::residency::{Candidates, Dropped};
use crate::providers;
use crate::util::hash::sha256_hex;
use std::collections::HashMap;

/// What an alias can do: what any of its deployments can, since capability routing sends
/// each request to one that can; the largest known context window.
pub fn alias_capabilities(g: &Gateway, alias: &Alias) -> Capabilities {
    let deployments = alias.deployments.iter().filter_map(|id| g.deployment(id));
    deployments.fold(Capabilities { vision: false, tools: false, json_mode: false, context_window: None }, |acc, d| {
        let c = &d.capabilities;
        Capabilities {
            vision: acc.vision || c.vision,
            tools: acc.tools || c.tools,
            json_mode: acc.json_mode || c.json_mode,
            context_window: acc.context_window.max(c.context_window),
        }
    })
}

/// What the request needs from a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub vision: bool,
    pub tools: bool,
    pub json_mode: bool,
    /// Estimated prompt tokens plus the answer's token budget.
    pub tokens: u64,
    /// A Messages request with what only Anthropic's format carries (extended thinking,
    /// `top_k`, …): only deployments in that format can take it.
    pub anthropic_only: bool,
}

pub fn needs(req: &ChatRequest) -> Needs {
    let f = &req.facts;
    let anthropic_only = req.native.as_ref().is_some_and(|n| !n.translatable());
    Needs {
        vision: f.vision,
        tools: f.tools,
        json_mode: f.json_mode,
        tokens: f.input_tokens + f.answer_tokens,
        anthropic_only,
    }
}

/// Why `d` cannot serve `n`, if it cannot.
fn unfit(d: &Deployment, n: &Needs) -> Option<String> {
    let c = &d.capabilities;
    if n.anthropic_only && providers::speaks_messages(d).is_none() {
        return Some(
            "the request uses what only Anthropic's Messages format carries, and the deployment speaks another".into(),
        );
    }
    if n.vision && !c.vision {
        return Some("the request has images and the deployment has no vision".into());
    }
    if n.tools && !c.tools {
        return Some("the request has tools and the deployment has no tool use".into());
    }
    if n.json_mode && !c.json_mode {
        return Some("the request asks for JSON output and the deployment has no JSON mode".into());
    }
    match c.context_window {
        Some(window) if n.tokens > window => {
            Some(format!("about {} tokens do not fit its context window of {window}", n.tokens))
        }
        _ => None,
    }
}

/// Drops the candidates that cannot serve the request, saying why.
pub fn fit(c: &mut Candidates, n: &Needs) {
    let mut i = 0;
    while i < c.kept.len() {
        match unfit(c.kept[i], n) {
            Some(reason) => {
                c.dropped.push(Dropped { deployment: c.kept[i].id.clone(), reason, residency: false });
                c.kept.remove(i);
                c.bands.remove(i);
            }
            None => i += 1,
        }
    }
}

/// What a strategy may look at.
pub struct Signals<'a> {
    /// Recent time to first byte per deployment, from this colo.
    pub ttfb_ms: &'a HashMap<String, u64>,
    /// A random draw for this request, or a hash of the sticky identity.
    pub draw: u64,
}

/// The draw for a weighted alias: stable for a sticky identity, else `random`.
pub fn draw(alias: &Alias, key_id: &str, country: Option<&str>, user: Option<&str>, random: u64) -> u64 {
    let identity = match alias.sticky {
        Sticky::None => return random,
        Sticky::Caller => format!("{key_id}|{}", country.unwrap_or("-")),
        Sticky::User => match user {
            Some(u) => format!("user|{u}"),
            None => return random,
        },
    };
    let hash = sha256_hex(format!("{}|{identity}", alias.name).as_bytes());
    u64::from_str_radix(&hash[..16], 16).expect("hex digits")
}

/// Reorders candidates by the alias's strategy inside each distance band.
pub fn order(alias: &Alias, c: &mut Candidates, s: &Signals) {
    let rank: Vec<u64> = match alias.strategy {
        Strategy::Priority => return,
        Strategy::Cost => c.kept.iter().map(|d| d.price.input.0.saturating_add(d.price.output.0)).collect(),
        // Deployments without a measurement go first, so that each gets measured.
        Strategy::Latency => c.kept.iter().map(|d| s.ttfb_ms.get(&d.id).map_or(0, |t| t + 1)).collect(),
        Strategy::Weighted => weighted_ranks(alias, c, s.draw),
    };
    let mut idx: Vec<usize> = (0..c.kept.len()).collect();
    idx.sort_by_key(|&i| (c.bands[i], rank[i]));
    c.kept = idx.iter().map(|&i| c.kept[i]).collect();
    c.bands = idx.iter().map(|&i| c.bands[i]).collect();
}

/// Rank 0 for the deployment the draw picks among the allowed ones, in proportion to
/// their weights; the others follow by descending weight, as fallbacks.
fn weighted_ranks(alias: &Alias, c: &Candidates, draw: u64) -> Vec<u64> {
    let weight = |d: &Deployment| u64::from(alias.weights.get(&d.id).copied().unwrap_or(0));
    let total: u64 = c.kept.iter().map(|d| weight(d)).sum();
    let mut chosen = None;
    if total > 0 {
        let mut point = draw % total;
        for (i, d) in c.kept.iter().enumerate() {
            let w = weight(d);
            if point < w {
                chosen = Some(i);
                break;
            }
            point -= w;
        }
    }
    c.kept
        .iter()
        .enumerate()
        .map(|(i, d)| if Some(i) == chosen { 0 } else { 1 + (u64::from(u32::MAX) - weight(d)) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::model::chat;
    use crate::model::geo::Caller;
    use crate::policy::residency::{candidates, decide, Subject};

    fn gateway(edit: impl FnOnce(&mut serde_json::Value)) -> Gateway {
        let mut v: serde_json::Value = serde_json::from_str(&config::tests::sample()).unwrap();
        edit(&mut v);
        config::parse(&v.to_string()).unwrap()
    }

    fn cands<'a>(g: &'a Gateway, alias: &str, caller: &Caller) -> Candidates<'a> {
        let s = Subject { caller, compliance: &[], team: None, key_id: None, key_policy: None };
        let d = decide(&g.config.residency, &s).unwrap();
        candidates(g, g.alias(alias).unwrap(), &d, caller)
    }

    fn ids(c: &Candidates) -> Vec<String> {
        c.kept.iter().map(|d| d.id.clone()).collect()
    }

    #[test]
    fn requests_need_what_their_body_uses() {
        let r = chat::parse(br#"{"model":"m","max_tokens":100,"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_schema"},"messages":[{"role":"user","content":[{"type":"text","text":"12345678"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#).unwrap();
        assert_eq!(
            needs(&r),
            Needs { vision: true, tools: true, json_mode: true, tokens: 2 + 4 + 100, anthropic_only: false }
        );
        let plain = chat::parse(br#"{"model":"m","tools":[],"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(needs(&plain), Needs { tokens: 5, ..Needs::default() });
    }

    #[test]
    fn a_messages_request_only_anthropic_carries_needs_an_anthropic_deployment() {
        let body = serde_json::json!({"model": "m", "max_tokens": 100, "thinking": {"type": "enabled", "budget_tokens": 50},
            "system": [{"type": "text", "text": "1234", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "12345678"},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]});
        let r = crate::ingress::anthropic::parse(body.to_string().as_bytes()).unwrap();
        let n = needs(&r);
        assert_eq!(n, Needs { vision: true, tokens: 1 + 2 + 4 + 100, anthropic_only: true, ..Needs::default() });
        let g = gateway(|v| {
            v["deployments"][3]["provider"] = serde_json::json!("anthropic");
            v["deployments"][3]["api_key_secret"] = serde_json::json!("ANTHROPIC_KEY");
            v["deployments"][3]["jurisdiction"] = serde_json::json!("global");
        });
        let mut c = cands(&g, "chat", &Caller::new(Some("US"), Some("NA"), None));
        let all = c.kept.len();
        fit(&mut c, &n);
        assert_eq!(ids(&c), vec![g.config.deployments[3].id.clone()]);
        assert_eq!(c.dropped.len(), all - 1);
        assert!(c.dropped.iter().all(|d| d.reason.contains("only Anthropic's Messages format carries")));
        let translatable = crate::ingress::anthropic::parse(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        assert!(!needs(&translatable).anthropic_only);
    }

    #[test]
    fn capability_routing_drops_what_cannot_serve() {
        let g = gateway(|v| {
            v["deployments"][0]["capabilities"] = serde_json::json!({"vision": false});
            v["deployments"][1]["capabilities"] = serde_json::json!({"context_window": 1000});
            v["deployments"][2]["capabilities"] = serde_json::json!({"tools": false, "json_mode": false});
        });
        let us = Caller::new(Some("US"), Some("NA"), None);
        let mut c = cands(&g, "chat", &us);
        fit(&mut c, &Needs { vision: true, tools: true, tokens: 2000, ..Needs::default() });
        assert_eq!(ids(&c), vec!["jp-a", "sg-a", "gl-a"]);
        let reasons: Vec<&str> = c.dropped.iter().map(|d| d.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("no vision")));
        assert!(reasons.iter().any(|r| r.contains("context window of 1000")));
        assert!(reasons.iter().any(|r| r.contains("no tool use")));
        assert_eq!(c.kept.len(), c.bands.len());
    }

    #[test]
    fn an_alias_can_do_what_any_of_its_deployments_can() {
        let g = gateway(|v| {
            v["deployments"][0]["capabilities"] = serde_json::json!({"vision": false, "context_window": 8000});
            v["deployments"][1]["capabilities"] =
                serde_json::json!({"vision": false, "tools": false, "context_window": 200000});
            v["aliases"][1]["deployments"] = serde_json::json!(["eu-a"]);
        });
        let c = alias_capabilities(&g, g.alias("us-only").unwrap());
        assert_eq!(c, Capabilities { vision: false, tools: true, json_mode: true, context_window: Some(8000) });
        let c = alias_capabilities(&g, g.alias("chat").unwrap());
        assert_eq!((c.vision, c.context_window), (true, Some(200000)));
    }

    #[test]
    fn cost_and_latency_order_within_the_allowed_set() {
        let g = gateway(|v| {
            v["aliases"][0]["strategy"] = "cost".into();
            v["deployments"][1]["price"] = serde_json::json!({"input": "0.1", "output": "0.2"});
        });
        let de = Caller::new(Some("DE"), Some("EU"), None);
        let mut c = cands(&g, "chat", &de);
        assert_eq!(ids(&c), vec!["eu-a", "eu-b"]);
        let empty = HashMap::new();
        order(g.alias("chat").unwrap(), &mut c, &Signals { ttfb_ms: &empty, draw: 0 });
        assert_eq!(ids(&c), vec!["eu-b", "eu-a"], "cheapest first, still only EU");

        let g = gateway(|v| v["aliases"][0]["strategy"] = "latency".into());
        let mut c = cands(&g, "chat", &de);
        let ttfb = HashMap::from([("eu-a".to_string(), 900), ("eu-b".to_string(), 120)]);
        order(g.alias("chat").unwrap(), &mut c, &Signals { ttfb_ms: &ttfb, draw: 0 });
        assert_eq!(ids(&c), vec!["eu-b", "eu-a"]);
        let only_a = HashMap::from([("eu-a".to_string(), 5)]);
        let mut c = cands(&g, "chat", &de);
        order(g.alias("chat").unwrap(), &mut c, &Signals { ttfb_ms: &only_a, draw: 0 });
        assert_eq!(ids(&c), vec!["eu-b", "eu-a"], "an unmeasured deployment is tried first, to be measured");
    }

    #[test]
    fn strategies_never_cross_distance_bands() {
        let g = gateway(|v| v["aliases"][0]["strategy"] = "cost".into());
        let mut tokyo = Caller::new(Some("JP"), Some("AS"), None);
        tokyo.location = Some([35.7, 139.7]);
        let mut g2 = g;
        g2.config.residency.distance_band_km = 10.0;
        let mut c = cands(&g2, "chat", &tokyo);
        let empty = HashMap::new();
        order(g2.alias("chat").unwrap(), &mut c, &Signals { ttfb_ms: &empty, draw: 0 });
        assert_eq!(ids(&c), vec!["jp-a", "sg-a"]);
    }

    fn weighted(sticky: &str) -> Gateway {
        gateway(|v| {
            v["aliases"][0] = serde_json::json!({"name": "chat", "strategy": "weighted", "sticky": sticky,
                "deployments": ["eu-a", "eu-b"], "weights": {"eu-a": 90, "eu-b": 10}});
        })
    }

    #[test]
    fn a_90_10_split_lands_within_tolerance_over_many_draws() {
        let g = weighted("none");
        let de = Caller::new(Some("DE"), Some("EU"), None);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut first_a = 0;
        let n = 20_000;
        for _ in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut c = cands(&g, "chat", &de);
            let empty = HashMap::new();
            order(g.alias("chat").unwrap(), &mut c, &Signals { ttfb_ms: &empty, draw: rng });
            assert_eq!(c.kept.len(), 2, "the other stays as a fallback");
            if c.kept[0].id == "eu-a" {
                first_a += 1;
            }
        }
        let share = f64::from(first_a) / f64::from(n);
        assert!((share - 0.9).abs() < 0.01, "{share}");
    }

    #[test]
    fn sticky_draws_are_stable_per_identity() {
        let g = weighted("user");
        let alias = g.alias("chat").unwrap();
        assert_eq!(draw(alias, "k", None, Some("alice"), 1), draw(alias, "k", None, Some("alice"), 2));
        assert_eq!(draw(alias, "k", None, None, 7), 7, "no user: a fresh draw");
        let picks: std::collections::HashSet<u64> =
            (0..50).map(|i| draw(alias, "k", None, Some(&format!("user-{i}")), 0) % 100).collect();
        assert!(picks.len() > 10, "different users spread over the split");
        let g = weighted("caller");
        let alias = g.alias("chat").unwrap();
        assert_eq!(draw(alias, "k", Some("DE"), None, 1), draw(alias, "k", Some("DE"), None, 99));
        assert_ne!(draw(alias, "k", Some("DE"), None, 1), draw(alias, "k2", Some("DE"), None, 1));
    }

    #[test]
    fn weights_are_validated() {
        let bad = |edit: serde_json::Value, needle: &str| {
            let mut v: serde_json::Value = serde_json::from_str(&config::tests::sample()).unwrap();
            v["aliases"][0] = edit;
            let e = config::parse(&v.to_string()).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        bad(
            serde_json::json!({"name": "chat", "strategy": "weighted", "deployments": ["eu-a", "eu-b"], "weights": {"eu-a": 1}}),
            "`eu-b` has no weight",
        );
        bad(
            serde_json::json!({"name": "chat", "strategy": "weighted", "deployments": ["eu-a"], "weights": {"eu-a": 0}}),
            "sum to 0",
        );
        bad(
            serde_json::json!({"name": "chat", "strategy": "weighted", "deployments": ["eu-a"], "weights": {"eu-a": 1, "us-a": 1}}),
            "does not list",
        );
        bad(
            serde_json::json!({"name": "chat", "deployments": ["eu-a"], "weights": {"eu-a": 1}}),
            "only for the weighted",
        );
    }
}

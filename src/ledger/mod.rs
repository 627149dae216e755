//! The cost event: one per client request, whatever its outcome, carrying everything the
//! breakdowns group by and everything an auditor needs to see where it was processed.

pub mod breakdown;
pub mod pricing;

use crate::config::Deployment;
use crate::ledger::pricing::cost_micros;
use crate::model::error_class::ErrorClass;
use crate::model::geo::Caller;
use crate::model::usage::{Consumed, Usage};
use crate::policy::attempts::{Attempt, AttemptLog, Charge};
use crate::policy::tags::Tags;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A complete answer.
    Ok,
    /// A stream that ended without its terminal event or with an upstream error: billed
    /// at least for its prompt and for what reached the client.
    Cut,
    /// No answer: the client got an error.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Cut => "cut",
            Outcome::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub deployment: String,
    pub status: Option<u16>,
    /// `None` for the attempt that answered.
    pub failure: Option<String>,
    /// Tokens the call is billed for (reported, or estimated where not); absent for a call
    /// that provably cost nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// What the call cost, at its own deployment's price, and the part of that estimated.
    #[serde(default)]
    pub cost_micros: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cost_estimated_micros: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostEvent {
    pub request_id: String,
    pub ts_ms: u64,
    pub day: String,
    pub key_id: String,
    pub team: String,
    pub feature: String,
    pub env: String,
    pub caller_country: Option<String>,
    pub caller_continent: Option<String>,
    pub caller_colo: Option<String>,
    pub residency_rule: String,
    pub jurisdiction: Option<String>,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub deployment: Option<String>,
    pub endpoint_host: Option<String>,
    pub alias: String,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    /// The sum of the attempts' costs: every call that may have cost money is priced, at
    /// its deployment's price; what its provider did not report is estimated. (Events from
    /// before that may carry `null`: unpriced.)
    pub cost_micros: u64,
    /// The part of `cost_micros` that is the gateway's estimate rather than the providers'
    /// reports.
    #[serde(default)]
    pub cost_estimated_micros: u64,
    /// Attempts whose provider reported processing outside the deployment's jurisdiction.
    #[serde(default)]
    pub residency_breaches: u32,
    pub status: u16,
    pub outcome: Outcome,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub attempts: Vec<AttemptRecord>,
}

/// What is known about a request when its response is complete.
pub struct Facts<'a> {
    pub request_id: &'a str,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub ttfb_ms: Option<u64>,
    pub key_id: &'a str,
    pub tags: &'a Tags,
    pub caller: &'a Caller,
    pub rule: &'a str,
    pub alias: &'a str,
    /// The deployment that answered (or last failed), if any was called.
    pub deployment: Option<&'a Deployment>,
    pub provider: Option<&'a str>,
    /// What the answer consumed, when there was one: the answering attempt's charge, at
    /// `deployment`'s price.
    pub answer: Option<Consumed>,
    pub status: u16,
    pub outcome: Outcome,
    pub attempts: &'a AttemptLog,
}

/// `https://eu.api.openai.com/v1` → `eu.api.openai.com`.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    host_port.rsplit_once('@').map_or(host_port, |(_, h)| h)
}

impl AttemptRecord {
    fn of(a: &Attempt, charge: Option<Charge>) -> AttemptRecord {
        let billed = charge.map(|c| c.consumed.billed);
        let (cost, estimated) = charge.map_or((0, 0), priced);
        AttemptRecord {
            deployment: a.deployment.clone(),
            status: a.status,
            failure: a.failure.map(|c| c.as_str().to_string()),
            input_tokens: billed.map(|u| u.input_tokens),
            output_tokens: billed.map(|u| u.output_tokens),
            cost_micros: cost,
            cost_estimated_micros: estimated,
        }
    }
}

/// A call's cost at its price, and the part above what its provider reported: rounded
/// once each, so the estimated part never exceeds the cost.
fn priced(c: Charge) -> (u64, u64) {
    let cost = cost_micros(&c.price, &c.consumed.billed);
    (cost, cost.saturating_sub(cost_micros(&c.price, &c.consumed.reported)))
}

impl CostEvent {
    /// The event, its cost the sum of its attempts' (the answering one's is `f.answer` at
    /// `f.deployment`'s price), its tokens theirs.
    pub fn new(f: &Facts) -> CostEvent {
        let answer = f.answer.zip(f.deployment).map(|(consumed, d)| Charge { consumed, price: d.price });
        let charge_of = |a: &Attempt| if a.failure.is_none() { answer } else { a.charge };
        let tried = &f.attempts.attempts;
        let attempts: Vec<AttemptRecord> = tried.iter().map(|a| AttemptRecord::of(a, charge_of(a))).collect();
        let usage = tried.iter().filter_map(charge_of).fold(Usage::default(), |sum, c| sum.plus(c.consumed.billed));
        CostEvent {
            request_id: f.request_id.to_string(),
            ts_ms: f.started_ms,
            day: crate::util::time::day(f.started_ms),
            key_id: f.key_id.to_string(),
            team: f.tags.team.clone(),
            feature: f.tags.feature.clone(),
            env: f.tags.env.clone(),
            caller_country: f.caller.country.clone(),
            caller_continent: f.caller.continent.clone(),
            caller_colo: f.caller.colo.clone(),
            residency_rule: f.rule.to_string(),
            jurisdiction: f.deployment.map(|d| d.jurisdiction.clone()),
            provider: f.provider.map(str::to_string),
            region: f.deployment.map(|d| d.region.clone()),
            deployment: f.deployment.map(|d| d.id.clone()),
            endpoint_host: f.deployment.map(|d| host_of(&d.base_url).to_string()),
            alias: f.alias.to_string(),
            model: f.deployment.map(|d| d.model.clone()),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_tokens: usage.cached_input_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            cost_micros: attempts.iter().map(|a| a.cost_micros).sum(),
            cost_estimated_micros: attempts.iter().map(|a| a.cost_estimated_micros).sum(),
            residency_breaches: tried.iter().filter(|a| a.failure == Some(ErrorClass::ResidencyBreach)).count() as u32,
            status: f.status,
            outcome: f.outcome,
            latency_ms: f.finished_ms.saturating_sub(f.started_ms),
            ttfb_ms: f.ttfb_ms,
            attempts,
        }
    }
}

/// Checks that JSON text claiming to be a cost event has every field D1's insert reads,
/// of the right kind, and returns its request id. Read as a `Value` rather than into a
/// `CostEvent`: the worker then carries no second event parser just for this check.
pub fn check_event_json(json: &[u8]) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let event = value.as_object().ok_or("not an object")?;
    let field = |name: &str| event.get(name).unwrap_or(&serde_json::Value::Null);
    type Kind = (fn(&serde_json::Value) -> bool, &'static str);
    let text: Kind = (serde_json::Value::is_string, "a string");
    let text_or_null: Kind = (|v| v.is_string() || v.is_null(), "a string or null");
    let number: Kind = (serde_json::Value::is_u64, "a whole number");
    let number_or_null: Kind = (|v| v.is_u64() || v.is_null(), "a whole number or null");
    let fields: [(&[&str], Kind); 4] = [
        (&["request_id", "day", "key_id", "team", "feature", "env", "residency_rule", "alias"], text),
        (
            &[
                "caller_country",
                "caller_continent",
                "caller_colo",
                "jurisdiction",
                "provider",
                "region",
                "deployment",
                "endpoint_host",
                "model",
            ],
            text_or_null,
        ),
        (
            &["ts_ms", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "status", "latency_ms"],
            number,
        ),
        // `cost_micros` is null in events from before every attempt was priced, and
        // `cost_estimated_micros` absent.
        (&["cost_micros", "cost_estimated_micros", "ttfb_ms"], number_or_null),
    ];
    let wrong = |name: &str, kind: &str| Err(format!("`{name}` must be {kind}"));
    for (names, (fits, kind)) in fields {
        if let Some(name) = names.iter().find(|name| !fits(field(name))) {
            return wrong(name, kind);
        }
    }
    if !matches!(field("outcome").as_str(), Some("ok" | "cut" | "error")) {
        return wrong("outcome", "ok, cut or error");
    }
    if !field("attempts").is_array() {
        return wrong("attempts", "an array");
    }
    Ok(field("request_id").as_str().unwrap_or_default().to_string())
}

/// The cost events in one queue message's text: a JSON array of event texts (what an
/// isolate packs its gathered events into), or a single event (what producers before
/// that sent). Each comes back as its own text, for `check_event_json`.
pub fn events_in_message(text: &str) -> Result<Vec<&str>, String> {
    if !text.trim_start().starts_with('[') {
        return Ok(vec![text]);
    }
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(items.into_iter().map(|item| item.get()).collect())
}

/// Consecutive runs of at most `max_items` items whose texts, joined into a JSON array,
/// stay within `max_bytes` (an item larger than that goes alone): queue messages within
/// the message size limit, D1 parameters within the value size limit.
pub fn pack(lens: &[usize], max_bytes: usize, max_items: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 2);
    for (i, len) in lens.iter().enumerate() {
        if i > start && (bytes + len + 1 > max_bytes || i - start == max_items) {
            runs.push(start..i);
            (start, bytes) = (i, 2);
        }
        bytes += len + 1;
    }
    if start < lens.len() {
        runs.push(start..lens.len());
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::price::{PerMtok, Price};
    use crate::model::error_class::ErrorClass;
    use crate::util::valueread::FromValue;

    fn deployment() -> Deployment {
        Deployment::read(&serde_json::json!({
            "id": "eu-1", "provider": "openai", "model": "gpt-x", "base_url": "https://user@eu.api.example.com:8443/v1?x=1",
            "jurisdiction": "eu", "region": "eu-central-1", "price": {"input": "3", "output": "15"}
        }))
        .unwrap()
    }

    fn facts<'a>(
        d: Option<&'a Deployment>,
        answer: Option<Consumed>,
        outcome: Outcome,
        log: &'a AttemptLog,
        tags: &'a Tags,
        caller: &'a Caller,
    ) -> Facts<'a> {
        Facts {
            request_id: "r1",
            started_ms: 1_764_028_800_123,
            finished_ms: 1_764_028_800_623,
            ttfb_ms: Some(40),
            key_id: "k",
            tags,
            caller,
            rule: "eu-callers",
            alias: "chat",
            deployment: d,
            provider: d.map(|_| "openai"),
            answer,
            status: 200,
            outcome,
            attempts: log,
        }
    }

    #[test]
    fn an_attempt_whose_provider_reported_processing_elsewhere_is_counted_as_a_breach() {
        let d = deployment();
        let (tags, caller) = (Tags { team: "t".into(), feature: "f".into(), env: "e".into() }, Caller::default());
        let mut log = AttemptLog::default();
        log.failed("claude-us", Some(200), ErrorClass::ResidencyBreach);
        log.succeeded("eu-1", 200);
        let usage = Usage { input_tokens: 10, output_tokens: 1, ..Usage::default() };
        let e = CostEvent::new(&facts(Some(&d), Some(Consumed::reported(usage)), Outcome::Ok, &log, &tags, &caller));
        assert_eq!(e.residency_breaches, 1);
        assert_eq!(e.attempts[0].failure.as_deref(), Some("residency_breach"));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"residency_breaches\":1"), "{json}");
        let clean = AttemptLog { attempts: log.attempts[1..].to_vec() };
        let e = CostEvent::new(&facts(Some(&d), Some(Consumed::reported(usage)), Outcome::Ok, &clean, &tags, &caller));
        assert_eq!(e.residency_breaches, 0);
    }

    #[test]
    fn an_answered_request_is_priced_and_placed() {
        let d = deployment();
        let tags = Tags { team: "search".into(), feature: "summarize".into(), env: "qa".into() };
        let caller = Caller { colo: Some("FRA".into()), ..Caller::new(Some("DE"), Some("EU"), None) };
        let mut log = AttemptLog::default();
        log.failed("eu-0", Some(529), ErrorClass::Overloaded);
        log.succeeded("eu-1", 200);
        let usage = Usage { input_tokens: 1000, output_tokens: 100, ..Usage::default() };
        let e = CostEvent::new(&facts(Some(&d), Some(Consumed::reported(usage)), Outcome::Ok, &log, &tags, &caller));
        assert_eq!(e.day, "2025-11-25");
        assert_eq!((e.cost_micros, e.cost_estimated_micros), (3_000 + 1_500, 0));
        assert_eq!(e.endpoint_host.as_deref(), Some("eu.api.example.com:8443"));
        assert_eq!((e.jurisdiction.as_deref(), e.region.as_deref()), (Some("eu"), Some("eu-central-1")));
        assert_eq!((e.caller_country.as_deref(), e.caller_colo.as_deref()), (Some("DE"), Some("FRA")));
        assert_eq!(e.latency_ms, 500);
        assert_eq!(
            e.attempts[0],
            AttemptRecord {
                deployment: "eu-0".into(),
                status: Some(529),
                failure: Some("overloaded".into()),
                input_tokens: None,
                output_tokens: None,
                cost_micros: 0,
                cost_estimated_micros: 0,
            },
            "an error status is not billed"
        );
        assert_eq!((e.attempts[1].input_tokens, e.attempts[1].cost_micros), (Some(1000), 4_500));
        let back: CostEvent = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn an_estimated_answer_shows_its_estimated_part() {
        let d = deployment();
        let tags = Tags { team: "t".into(), feature: "f".into(), env: "e".into() };
        let caller = Caller::default();
        let mut log = AttemptLog::default();
        log.succeeded("eu-1", 200);
        // A cut stream: the provider had said 10 in, 1 out; 3 out had reached the client.
        let reported = Usage { input_tokens: 10, output_tokens: 1, ..Usage::default() };
        let cut = Consumed::at_least(Some(reported), Usage::estimate(4, 12));
        let e = CostEvent::new(&facts(Some(&d), Some(cut), Outcome::Cut, &log, &tags, &caller));
        assert_eq!((e.input_tokens, e.output_tokens), (10, 3));
        assert_eq!((e.cost_micros, e.cost_estimated_micros), (30 + 45, 30));
        assert_eq!((e.attempts[0].cost_micros, e.attempts[0].cost_estimated_micros), (75, 30));
        // Nothing called: nothing billed.
        let failed = CostEvent::new(&facts(None, None, Outcome::Error, &AttemptLog::default(), &tags, &caller));
        assert_eq!((failed.cost_micros, failed.deployment), (0, None));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("https://eu.api.openai.com/v1"), "eu.api.openai.com");
        assert_eq!(host_of("http://127.0.0.1:8788/mock-eu/v1"), "127.0.0.1:8788");
        assert_eq!(host_of("no-scheme/x"), "no-scheme");
    }

    #[test]
    fn event_json_is_checked_field_by_field() {
        let d = deployment();
        let tags = Tags { team: "search".into(), feature: "summarize".into(), env: "qa".into() };
        let caller = Caller::new(Some("DE"), Some("EU"), None);
        let mut log = AttemptLog::default();
        log.succeeded("eu-1", 200);
        let usage = Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() };
        let event =
            CostEvent::new(&facts(Some(&d), Some(Consumed::reported(usage)), Outcome::Ok, &log, &tags, &caller));
        let json = serde_json::to_vec(&event).unwrap();
        assert_eq!(check_event_json(&json).unwrap(), event.request_id);
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["caller_country"] = serde_json::Value::Null;
        v["ttfb_ms"] = serde_json::Value::Null;
        assert!(check_event_json(v.to_string().as_bytes()).is_ok(), "optional fields may be null");
        for (name, bad) in [
            ("request_id", serde_json::json!(7)),
            ("ts_ms", serde_json::json!("soon")),
            ("status", serde_json::json!(-1)),
            ("outcome", serde_json::json!("maybe")),
            ("attempts", serde_json::json!({})),
            ("model", serde_json::json!(3)),
            ("cost_micros", serde_json::json!(1.5)),
            ("cost_estimated_micros", serde_json::json!("some")),
        ] {
            let mut broken = v.clone();
            broken[name] = bad;
            let e = check_event_json(broken.to_string().as_bytes()).unwrap_err();
            assert!(e.contains(name), "{name}: {e}");
        }
        let mut older = v.clone();
        older.as_object_mut().unwrap().remove("cost_estimated_micros");
        older["cost_micros"] = serde_json::Value::Null;
        assert!(check_event_json(older.to_string().as_bytes()).is_ok(), "an event from before estimates");
        let mut missing = v.clone();
        missing.as_object_mut().unwrap().remove("team");
        assert!(check_event_json(missing.to_string().as_bytes()).unwrap_err().contains("team"));
        assert!(check_event_json(b"[1]").is_err());
        assert!(check_event_json(b"").is_err());
        assert!(check_event_json(b"{\"request_id\":").is_err());
    }

    #[test]
    fn a_message_holds_one_event_or_an_array_of_them() {
        assert_eq!(events_in_message(r#"{"request_id":"a"}"#), Ok(vec![r#"{"request_id":"a"}"#]));
        assert_eq!(
            events_in_message(r#" [{"request_id":"a"}, {"request_id":"b","x":[1,{"y":"]"}]}]"#),
            Ok(vec![r#"{"request_id":"a"}"#, r#"{"request_id":"b","x":[1,{"y":"]"}]}"#])
        );
        assert_eq!(events_in_message("[]"), Ok(vec![]));
        assert!(events_in_message(r#"[{"request_id":"a"},"#).is_err());
        // Not an array: passed on whole, for the event check to refuse.
        assert_eq!(events_in_message("7"), Ok(vec!["7"]));
    }

    #[test]
    fn packs_within_the_limit_and_never_drops_an_item() {
        assert!(pack(&[], 100, 10).is_empty());
        assert_eq!(pack(&[10, 10, 10], 100, 10), vec![0..3]);
        // "[" + 40 + "," + 40 + "]" is 83: a third 40 would make 124.
        assert_eq!(pack(&[40, 40, 40, 40, 40], 100, 10), vec![0..2, 2..4, 4..5]);
        assert_eq!(pack(&[500, 10, 500], 100, 10), vec![0..1, 1..2, 2..3], "an oversized item goes alone");
        assert_eq!(pack(&[1; 7], 100, 3), vec![0..3, 3..6, 6..7], "at most max_items");
        for (max, items) in [(1, 60), (50, 60), (97, 2), (98, 60), (99, 5), (1000, 60), (1000, 7)] {
            let lens: Vec<usize> = (0..60).map(|i| (i * 37) % 90 + 1).collect();
            let runs = pack(&lens, max, items);
            assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), lens.len());
            assert!(runs.windows(2).all(|w| w[0].end == w[1].start) && runs[0].start == 0);
            for r in &runs {
                let joined = 2 + lens[r.clone()].iter().sum::<usize>() + r.len() - 1;
                assert!(joined <= max || r.len() == 1, "{r:?} at {max}: {joined}");
                assert!(r.len() <= items);
            }
        }
    }

    fn charge(input: u64, output: u64, price: &Deployment) -> Charge {
        Charge {
            consumed: Consumed::reported(Usage { input_tokens: input, output_tokens: output, ..Usage::default() }),
            price: price.price,
        }
    }

    #[test]
    fn tokens_a_failed_attempt_reported_are_priced_into_the_event() {
        let d = deployment();
        let tags = Tags { team: "t".into(), feature: "f".into(), env: "e".into() };
        let caller = Caller::default();
        let mut log = AttemptLog::default();
        // A stream that reported its prompt (1,000 tokens) and then failed before content.
        log.failed_after("eu-1", Some(200), ErrorClass::Server, Some(charge(1000, 0, &d)));
        log.succeeded("eu-1", 200);
        let usage = Usage { input_tokens: 1000, output_tokens: 100, ..Usage::default() };
        let e = CostEvent::new(&facts(Some(&d), Some(Consumed::reported(usage)), Outcome::Ok, &log, &tags, &caller));
        assert_eq!(e.cost_micros, 3_000 + (3_000 + 1_500), "both calls were billed by the provider");
        assert_eq!((e.input_tokens, e.output_tokens), (2000, 100));
        assert_eq!(e.attempts[0].cost_micros, 3_000);
    }

    /// A small deterministic generator (xorshift), for the property below.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn an_events_cost_is_the_sum_of_its_priced_attempts() {
        let prices = [
            Price {
                input: PerMtok(3_000_000),
                output: PerMtok(15_000_000),
                cached_input: None,
                cache_write: None,
                web_search: None,
                uplift_pct: 100,
            },
            Price {
                input: PerMtok(330_000),
                output: PerMtok(1_650_001),
                cached_input: Some(PerMtok(33_333)),
                cache_write: Some(PerMtok(412_500)),
                web_search: None,
                uplift_pct: 110,
            },
        ];
        let mut d = deployment();
        let tags = Tags { team: "t".into(), feature: "f".into(), env: "e".into() };
        let caller = Caller::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let usage = |rng: &mut Rng| {
                let input = rng.below(50_000);
                Usage {
                    input_tokens: input,
                    output_tokens: rng.below(8_000),
                    cached_input_tokens: rng.below(input + 1) / 2,
                    cache_write_tokens: rng.below(input + 1) / 4,
                    web_searches: 0,
                }
            };
            let consumed = |rng: &mut Rng, reported: Usage, estimate: Usage| match rng.below(3) {
                0 => Consumed::reported(reported),
                1 => Consumed::at_least(Some(reported), estimate),
                _ => Consumed::at_least(None, estimate),
            };
            let mut log = AttemptLog::default();
            let mut expected = (0, 0);
            for i in 0..rng.below(4) {
                let (r, e) = (usage(&mut rng), usage(&mut rng));
                let price = prices[rng.below(2) as usize];
                let charge = (rng.below(3) > 0).then(|| Charge { consumed: consumed(&mut rng, r, e), price });
                if let Some(c) = charge {
                    let (cost, estimated) =
                        (cost_micros(&c.price, &c.consumed.billed), cost_micros(&c.price, &c.consumed.reported));
                    expected = (expected.0 + cost, expected.1 + cost.saturating_sub(estimated));
                }
                log.failed_after(&format!("d{i}"), Some(200), ErrorClass::Server, charge);
            }
            let answered = rng.below(2) == 0;
            let (r, e) = (usage(&mut rng), usage(&mut rng));
            let answer = answered.then(|| consumed(&mut rng, r, e));
            d.price = prices[rng.below(2) as usize];
            if let Some(a) = answer {
                log.succeeded("eu-1", 200);
                let cost = cost_micros(&d.price, &a.billed);
                expected = (expected.0 + cost, expected.1 + cost.saturating_sub(cost_micros(&d.price, &a.reported)));
            }
            let outcome = if answered { Outcome::Ok } else { Outcome::Error };
            let e = CostEvent::new(&facts(Some(&d), answer, outcome, &log, &tags, &caller));
            assert_eq!((e.cost_micros, e.cost_estimated_micros), expected);
            assert_eq!(e.cost_micros, e.attempts.iter().map(|a| a.cost_micros).sum::<u64>());
            assert_eq!(e.cost_estimated_micros, e.attempts.iter().map(|a| a.cost_estimated_micros).sum::<u64>());
            assert!(e.attempts.iter().all(|a| a.cost_estimated_micros <= a.cost_micros));
            let billed: u64 = e.attempts.iter().filter_map(|a| a.input_tokens).sum();
            assert_eq!(e.input_tokens, billed);
        }
    }
}

//! Properties of the request's policy over random configs, callers, tags, key policies,
//! credentials, circuits and failure sequences: what is tried stays within what the rules
//! allow, in the order routing chose; a tag or a key policy never widens that set.

use crate::config::{self, Gateway, Limits};
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::geo::Caller;
use crate::model::usage::{Consumed, Usage};
use crate::policy::attempts::{self, Attempts, Failure, Next};
use crate::policy::health::Admission;
use crate::policy::residency::{candidates, decide, Allowed, Subject};
use crate::providers::Auth;
use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{json, Value};

const JURISDICTIONS: [&str; 8] = ["eu", "uk", "ch", "europe", "us", "apac", "jp", "global"];
const ALLOWABLE: [&str; 7] = ["eu", "uk", "ch", "europe", "us", "apac", "jp"];
const TAGS: [&str; 3] = ["t1", "t2", "t3"];
const COUNTRIES: [&str; 8] = ["DE", "FR", "GB", "CH", "US", "JP", "SG", "XX"];
const CONTINENTS: [&str; 4] = ["EU", "NA", "AS", "OC"];

fn list(from: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<&'static str>> {
    subsequence(from, 0..=max.min(from.len()))
}

fn some(from: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<&'static str>> {
    subsequence(from, 1..=max.min(from.len()))
}

#[derive(Debug, Clone)]
struct RuleSpec {
    countries: Vec<&'static str>,
    continents: Vec<&'static str>,
    eu: Option<bool>,
    tag: Option<&'static str>,
    team: Option<&'static str>,
    allow: Vec<&'static str>,
    any: bool,
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        list(&COUNTRIES, 2),
        list(&CONTINENTS, 1),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(&TAGS[..])),
        prop::option::of(prop::sample::select(&["a", "b"][..])),
        some(&ALLOWABLE, 3),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(countries, continents, eu, tag, team, allow, any)| RuleSpec {
            countries,
            continents,
            eu,
            tag,
            team,
            allow,
            any,
        })
}

/// A config of random deployments (jurisdiction, context window, place), one alias over a
/// shuffled subset of them, random tags and rules ending in an unconditional one.
fn config() -> impl Strategy<Value = Value> {
    let deployment = (0..JURISDICTIONS.len(), prop::option::of(1u64..4), prop::option::of((-60i32..70, -170i32..170)));
    (
        prop::collection::vec(deployment, 1..7),
        prop::collection::vec(some(&ALLOWABLE, 3), 3),
        prop::collection::vec(rule(), 0..5),
        prop::bool::ANY,
        1usize..5,
        0u16..3000,
    )
        .prop_flat_map(|(deps, tag_lists, rules, last_any, max_attempts, band)| {
            let n = deps.len();
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            (Just((deps, tag_lists, rules, last_any, max_attempts, band)), order, 1..=n)
        })
        .prop_map(|((deps, tag_lists, rules, last_any, max_attempts, band), order, take)| {
            let deployments: Vec<Value> = deps
                .iter()
                .enumerate()
                .map(|(i, (j, window, place))| {
                    let mut d = json!({
                        "id": format!("d{i}"), "provider": "openai", "model": "m",
                        "base_url": format!("http://127.0.0.1:1/d{i}/v1"),
                        "jurisdiction": JURISDICTIONS[*j], "region": "r",
                        "price": {"input": "1", "output": "2"},
                    });
                    if let Some(w) = window {
                        d["capabilities"] = json!({"context_window": w * 8192});
                    }
                    if let Some((lat, lon)) = place {
                        d["location"] = json!([lat, lon]);
                    }
                    d
                })
                .collect();
            let alias: Vec<String> = order[..take].iter().map(|i| format!("d{i}")).collect();
            let tags: serde_json::Map<String, Value> =
                TAGS.iter().zip(&tag_lists).map(|(t, l)| (t.to_string(), json!(l))).collect();
            let mut rule_docs: Vec<Value> = rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    // Valid by construction where validation would refuse: a rule conditioned
                    // on EU membership names no countries, and a tag's rule allows only what
                    // the tag's own list does.
                    let mut when = json!({"countries": r.countries, "continents": r.continents});
                    if let (Some(eu), true) = (r.eu, r.countries.is_empty()) {
                        when["eu"] = json!(eu);
                    }
                    let mut allow = if r.any { vec!["any"] } else { r.allow.clone() };
                    if let Some(t) = r.tag {
                        when["compliance"] = json!([t]);
                        let tag_list = &tag_lists[TAGS.iter().position(|x| *x == t).unwrap()];
                        allow.retain(|j| tag_list.contains(j));
                        if allow.is_empty() {
                            allow.clone_from(tag_list);
                        }
                    }
                    if let Some(team) = r.team {
                        when["teams"] = json!([team]);
                    }
                    json!({"id": format!("r{i}"), "when": when, "allow": allow})
                })
                .collect();
            let last = if last_any { vec!["any"] } else { vec!["us", "eu"] };
            rule_docs.push(json!({"id": "last", "allow": last}));
            json!({
                "deployments": deployments,
                "aliases": [{"name": "chat", "deployments": alias}],
                "residency": {"compliance_tags": tags, "rules": rule_docs, "distance_band_km": band},
                "limits": {"max_attempts": max_attempts},
            })
        })
}

#[derive(Debug, Clone)]
struct Request {
    country: &'static str,
    continent: &'static str,
    place: Option<(i32, i32)>,
    tags: Vec<&'static str>,
    team: Option<&'static str>,
    key_policy: Option<Vec<&'static str>>,
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(&COUNTRIES[..]),
        prop::sample::select(&CONTINENTS[..]),
        prop::option::of((-60i32..70, -170i32..170)),
        list(&TAGS, 2),
        prop::option::of(prop::sample::select(&["a", "b"][..])),
        prop::option::of(list(&ALLOWABLE, 3)),
    )
        .prop_map(|(country, continent, place, tags, team, key_policy)| Request {
            country,
            continent,
            place,
            tags,
            team,
            key_policy,
        })
}

/// What one attempt meets, as the shell would report it.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Answer,
    RateLimited(Option<u32>),
    Overloaded,
    ServerError,
    NoAnswer,
    CutStream,
    ContextLength,
    BadRequest,
    TokenExchangeFailed,
    Unsupported,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        2 => Just(Outcome::Answer),
        2 => prop::option::of(0u32..4).prop_map(Outcome::RateLimited),
        1 => Just(Outcome::Overloaded),
        1 => Just(Outcome::ServerError),
        1 => Just(Outcome::NoAnswer),
        1 => Just(Outcome::CutStream),
        1 => Just(Outcome::ContextLength),
        1 => Just(Outcome::BadRequest),
        1 => Just(Outcome::TokenExchangeFailed),
        1 => Just(Outcome::Unsupported),
    ]
}

fn failure(o: Outcome) -> Failure {
    match o {
        Outcome::RateLimited(after) => Failure::refused(429, ErrorClass::RateLimited, after, Vec::new()),
        Outcome::Overloaded => Failure::refused(529, ErrorClass::Overloaded, None, Vec::new()),
        Outcome::ServerError => Failure::refused(500, ErrorClass::Server, None, Vec::new()),
        Outcome::NoAnswer => Failure::no_answer(ErrorClass::Timeout, 100),
        Outcome::CutStream => Failure::unusable(
            200,
            ErrorClass::Server,
            Consumed::reported(Usage { input_tokens: 10, ..Usage::default() }),
        ),
        Outcome::ContextLength => Failure::refused(400, ErrorClass::ContextLength, None, Vec::new()),
        _ => Failure::refused(400, ErrorClass::BadRequest, None, br#"{"error":{"message":"no"}}"#.to_vec()),
    }
}

fn caller(r: &Request) -> Caller {
    let location = r.place.map(|(lat, lon)| [f64::from(lat), f64::from(lon)]);
    Caller { location, ..Caller::new(Some(r.country), Some(r.continent), None) }
}

/// Runs one request's attempts the way the shell does; returns what was tried, in order,
/// with the outcome that ended it (`None`: nothing could be tried).
fn run(g: &Gateway, queue: Vec<String>, limits: &Limits, outcomes: &[Outcome]) -> (Vec<String>, Vec<String>) {
    let ids: Vec<&config::Deployment> = queue.iter().map(|id| g.deployment(id).unwrap()).collect();
    let mut a = Attempts::new(ids.into_iter().map(|d| (d, Auth::default())), limits, 0, None);
    let mut outcomes = outcomes.iter().copied().chain(std::iter::repeat(Outcome::Answer));
    let (mut now, mut retried) = (0, Vec::new());
    while let Some((d, auth, timeout)) = a.next(now) {
        assert!(timeout > 0, "an attempt is given no time");
        match outcomes.next().unwrap() {
            Outcome::Answer => {
                a.answered(d, 200);
                break;
            }
            Outcome::TokenExchangeFailed => a.unauthorized(d, ErrorClass::Auth),
            Outcome::Unsupported => a.unsupported(d, GatewayError::bad_request("unsupported", "no")),
            o => match a.failed(d, auth, &failure(o), now) {
                Next::FallBack | Next::OnlyLargerContext => {}
                Next::RetrySame(wait) => {
                    retried.push(d.id.clone());
                    now += wait;
                }
                Next::Fail(e) => {
                    assert!((400..600).contains(&e.status), "{e:?}");
                    break;
                }
            },
        }
        now += 250;
    }
    if a.log.attempts.last().is_none_or(|t| t.failure.is_some()) {
        let e = a.exhausted();
        assert!((400..600).contains(&e.status), "{e:?}");
    }
    (a.log.attempts.iter().map(|t| t.deployment.clone()).collect(), retried)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, max_global_rejects: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn what_is_tried_is_allowed_and_in_routing_order(
        doc in config(),
        req in request(),
        no_secret in prop::collection::vec(any::<bool>(), 7),
        cooling in prop::collection::vec(any::<bool>(), 7),
        outcomes in prop::collection::vec(outcome(), 0..10),
    ) {
        let g = config::parse(&doc.to_string());
        prop_assume!(g.is_ok());
        let g = g.unwrap();
        let caller = caller(&req);
        let tags: Vec<String> = req.tags.iter().map(|t| t.to_string()).collect();
        let policy: Option<Vec<String>> = req.key_policy.as_ref().map(|l| l.iter().map(|j| j.to_string()).collect());
        let s = Subject { caller: &caller, compliance: &tags, team: req.team, key_id: None, key_policy: policy.as_deref() };
        let d = decide(&g.config.residency, &s).unwrap();
        let own = decide(&g.config.residency, &Subject { compliance: &[], key_policy: None, ..s }).unwrap().allowed;
        let alias = g.alias("chat").unwrap();
        let c = candidates(&g, alias, &d, &caller);
        prop_assert_eq!(c.kept.len() + c.dropped.len(), alias.deployments.len());

        let index = |id: &str| id[1..].parse::<usize>().unwrap();
        let plan = attempts::plan(
            &c.kept,
            |d| (!no_secret[index(&d.id)]).then_some(()),
            |d| if cooling[index(&d.id)] { Admission::Skip } else { Admission::Try },
        );
        let queue: Vec<String> = plan.queue.iter().map(|(d, _)| d.id.clone()).collect();
        if queue.is_empty() {
            let e = attempts::unservable("chat", &d, &c, &plan, Some(3));
            let code = if c.kept.is_empty() && c.dropped.iter().any(|x| x.residency) {
                "residency_unsatisfiable"
            } else {
                "upstream_unavailable"
            };
            prop_assert_eq!(e.code, code);
            return Ok(());
        }
        let (tried, retried) = run(&g, queue.clone(), &g.config.limits, &outcomes);

        for id in &tried {
            let j = &g.deployment(id).unwrap().jurisdiction;
            prop_assert!(d.allowed.permits(j), "{} ({}) is outside {:?}", id, j, d.allowed);
            prop_assert!(own.permits(j), "a tag or key policy widened {:?} to {}", own, id);
            prop_assert!(j != "global" || d.allowed == Allowed::Any);
        }
        // Routing's order, each deployment once, but for one wait on the last candidate.
        prop_assert!(retried.len() <= 1);
        let mut once = tried.clone();
        if let Some(r) = retried.first() {
            let at = once.iter().rposition(|t| t == r).unwrap();
            once.remove(at);
            prop_assert_eq!(queue.last(), Some(r));
        }
        let mut rest = queue.iter();
        for t in &once {
            prop_assert!(rest.any(|q| q == t), "{:?} is not in the order {:?}", once, queue);
        }
        let made = tried.len() - outcomes.iter().take(tried.len()).filter(|o| matches!(o, Outcome::Unsupported)).count();
        prop_assert!(made <= g.config.limits.max_attempts, "{} attempts, limit {}", made, g.config.limits.max_attempts);
    }

    #[test]
    fn a_tag_or_a_key_policy_never_widens_the_set(doc in config(), req in request(), extra in prop::sample::select(&TAGS[..])) {
        let g = config::parse(&doc.to_string());
        prop_assume!(g.is_ok());
        let g = g.unwrap();
        let caller = caller(&req);
        let tags: Vec<String> = req.tags.iter().map(|t| t.to_string()).collect();
        let policy: Option<Vec<String>> = req.key_policy.as_ref().map(|l| l.iter().map(|j| j.to_string()).collect());
        let kept = |tags: &[String], policy: Option<&[String]>| -> Vec<String> {
            let s = Subject { caller: &caller, compliance: tags, team: req.team, key_id: None, key_policy: policy };
            let d = decide(&g.config.residency, &s).unwrap();
            candidates(&g, g.alias("chat").unwrap(), &d, &caller).kept.iter().map(|d| d.id.clone()).collect()
        };
        let base = kept(&tags, None);
        let mut more = tags.clone();
        more.push(extra.to_string());
        for narrower in [kept(&more, None), kept(&tags, policy.as_deref()), kept(&more, policy.as_deref())] {
            for id in &narrower {
                prop_assert!(base.contains(id), "{} was not allowed before: {:?} vs {:?}", id, narrower, base);
            }
        }
    }
}

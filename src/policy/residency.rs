//! Residency: which jurisdictions a request may be processed in, and which of an alias's
//! deployments that leaves, nearest first. Fail closed: an empty answer is an error, never
//! a reason to look elsewhere.

use crate::config::{parts, Alias, Deployment, Gateway, Residency, Rule, UnknownLocation, ANY};
use crate::model::error::GatewayError;
use crate::model::geo::{distance_km, Caller};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// No restriction: any deployment, `global` ones included.
    Any,
    /// Only these jurisdictions; never contains `global`.
    Only(Vec<String>),
}

impl Allowed {
    /// A rule's or tag's list, a union (`europe`) standing for its parts.
    fn from_list(list: &[String]) -> Allowed {
        if list.iter().any(|j| j == ANY) {
            Allowed::Any
        } else {
            let mut v: Vec<String> = list.iter().flat_map(|j| parts(j)).map(|j| j.to_string()).collect();
            v.sort();
            v.dedup();
            Allowed::Only(v)
        }
    }

    /// Whether a deployment in `jurisdiction` may serve: for a union, every part must be
    /// allowed, since it may process in any of them.
    pub fn permits(&self, jurisdiction: &str) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(list) => parts(jurisdiction).all(|p| list.iter().any(|j| j == p)),
        }
    }

    /// Intersection: a tag or a key policy can only take jurisdictions away.
    fn narrow(self, list: &[String]) -> Allowed {
        self.intersect(Allowed::from_list(list))
    }

    fn intersect(self, other: Allowed) -> Allowed {
        match (self, other) {
            (Allowed::Any, o) => o,
            (s, Allowed::Any) => s,
            (Allowed::Only(a), Allowed::Only(b)) => Allowed::Only(a.into_iter().filter(|j| b.contains(j)).collect()),
        }
    }

    /// How many jurisdictions it lets through; `Any` counts as more than every list.
    fn breadth(&self) -> usize {
        match self {
            Allowed::Any => usize::MAX,
            Allowed::Only(v) => v.len(),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Allowed::Any => ANY.to_string(),
            Allowed::Only(v) if v.is_empty() => "none".to_string(),
            Allowed::Only(v) => v.join(","),
        }
    }
}

/// Who is asking, as far as residency cares. `team` and `key_id` are what the key is
/// bound to, never what the request asserts: a rule conditioned on them may allow more
/// than the location rules, so a caller must not be able to select it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub caller: &'a Caller,
    /// The request's compliance tags (lowercase); each can only narrow.
    pub compliance: &'a [String],
    pub team: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub key_policy: Option<&'a [String]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub rule: String,
    pub allowed: Allowed,
}

fn listed(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
}

fn matches_identity(rule: &Rule, s: &Subject, tag: Option<&str>) -> bool {
    let w = &rule.when;
    listed(&w.compliance, tag) && listed(&w.teams, s.team) && listed(&w.keys, s.key_id)
}

fn matches_location(rule: &Rule, c: &Caller) -> bool {
    let w = &rule.when;
    listed(&w.countries, c.country.as_deref())
        && listed(&w.continents, c.continent.as_deref())
        && w.eu.is_none_or(|eu| c.eu == Some(eu))
}

/// The rule that applies and what it allows after narrowing by the compliance tags and the
/// key's policy. A tag is asserted by the client, so it only takes away: the request is
/// decided without tags and once per tag, and gets the intersection, named after every rule
/// that narrowed it (`gdpr-tag+apac-callers`).
pub fn decide(r: &Residency, s: &Subject) -> Result<Decision, GatewayError> {
    let own = decide_for(r, s, None)?;
    let mut tagged: Option<Decision> = None;
    for tag in s.compliance {
        let one = decide_for(r, s, Some(tag))?;
        tagged = Some(match tagged {
            None => one,
            Some(d) => d.and(one),
        });
    }
    Ok(match tagged {
        None => own,
        // The caller's own rule is named only when it took something away.
        Some(t) if own.allowed.clone().intersect(t.allowed.clone()) == t.allowed => t,
        Some(t) => t.and(own),
    })
}

impl Decision {
    fn and(self, other: Decision) -> Decision {
        let rule = if self.rule.split('+').any(|id| id == other.rule) {
            self.rule
        } else {
            format!("{}+{}", self.rule, other.rule)
        };
        Decision { rule, allowed: self.allowed.intersect(other.allowed) }
    }
}

fn decide_for(r: &Residency, s: &Subject, tag: Option<&str>) -> Result<Decision, GatewayError> {
    let tag_allows = match tag {
        None => None,
        Some(tag) => Some(r.compliance_tags.get(tag).ok_or_else(|| {
            let known: Vec<&str> = r.compliance_tags.keys().map(String::as_str).collect();
            GatewayError::bad_request(
                "unknown_compliance_tag",
                format!("Unknown compliance tag `{tag}` in x-gateway-compliance (known: {}).", known.join(", ")),
            )
        })?),
    };

    let rule = if s.caller.location_known() {
        r.rules.iter().find(|rule| matches_identity(rule, s, tag) && matches_location(rule, s.caller))
    } else {
        match r.unknown_location {
            UnknownLocation::IgnoreLocation => {
                r.rules.iter().find(|rule| matches_identity(rule, s, tag) && !rule.when.has_location())
            }
            UnknownLocation::MostRestrictive => r
                .rules
                .iter()
                .filter(|rule| matches_identity(rule, s, tag))
                .min_by_key(|rule| Allowed::from_list(&rule.allow).breadth()),
        }
    }
    // Validation guarantees a final unconditional rule; this only guards a config that
    // bypassed it.
    .ok_or_else(|| GatewayError::residency_unsatisfiable("none", "no residency rule matches the caller"))?;

    let mut allowed = Allowed::from_list(&rule.allow);
    if let Some(list) = tag_allows {
        allowed = allowed.narrow(list);
    }
    if let Some(list) = s.key_policy {
        allowed = allowed.narrow(list);
    }
    Ok(Decision { rule: rule.id.clone(), allowed })
}

/// Tools a provider runs on its own servers (Anthropic's web search, web fetch, code
/// execution) go where that provider chooses, whatever the deployment's jurisdiction: they
/// are refused unless the decision allows any jurisdiction.
pub fn check_server_tools(decision: &Decision, tools: &[(usize, &str)]) -> Result<(), GatewayError> {
    match (tools.first(), &decision.allowed) {
        (None, _) | (_, Allowed::Any) => Ok(()),
        (Some((i, kind)), allowed) => Err(GatewayError::bad_request(
            "server_tool_not_allowed",
            format!(
                "`tools[{i}]` ({kind}) runs on the provider's own servers, outside the jurisdictions residency rule `{}` allows ({}); remove it, or ask for a rule that allows any jurisdiction.",
                decision.rule,
                allowed.label()
            ),
        )),
    }
}

/// The request's compliance tags from `x-gateway-compliance`: comma-separated, lowercased,
/// each once.
pub fn compliance_tags(header: Option<&str>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in header.unwrap_or_default().split(',').map(|t| t.trim().to_ascii_lowercase()) {
        if !tag.is_empty() && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

/// Why a deployment of the alias is not a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub deployment: String,
    pub reason: String,
    /// Left out by the residency rules, not for what the request needs.
    pub residency: bool,
}

#[derive(Debug)]
pub struct Candidates<'a> {
    /// In the order to try them.
    pub kept: Vec<&'a Deployment>,
    /// For each kept deployment, its distance band (0 for the nearest ones): a routing
    /// strategy may reorder deployments within a band, never across.
    pub bands: Vec<u64>,
    pub dropped: Vec<Dropped>,
}

/// The alias's deployments the decision allows, nearest first. Deployments within
/// `distance_band_km` of the nearest one count as equally near, so the alias's own order
/// decides between them; without a caller location the alias's order stands.
pub fn candidates<'a>(g: &'a Gateway, alias: &Alias, decision: &Decision, caller: &Caller) -> Candidates<'a> {
    let mut kept = Vec::with_capacity(alias.deployments.len());
    let mut dropped = Vec::new();
    for id in &alias.deployments {
        let d = g.deployment(id).expect("validated alias names known deployments");
        if decision.allowed.permits(&d.jurisdiction) {
            kept.push(d);
        } else {
            dropped.push(Dropped {
                deployment: d.id.clone(),
                residency: true,
                reason: format!(
                    "jurisdiction `{}` is not allowed by rule `{}` (allowed: {})",
                    d.jurisdiction,
                    decision.rule,
                    decision.allowed.label()
                ),
            });
        }
    }
    let bands = match caller.location {
        Some(here) => {
            let distance = |d: &Deployment| d.location.map(|there| distance_km(here, there));
            let nearest = kept.iter().filter_map(|d| distance(d)).fold(f64::INFINITY, f64::min);
            let width = g.config.residency.distance_band_km.max(f64::MIN_POSITIVE);
            // Deployments without a location go after every located one.
            let band = |d: &Deployment| distance(d).map_or(u64::MAX, |km| ((km - nearest) / width) as u64);
            kept.sort_by_key(|d| band(d));
            kept.iter().map(|d| band(d)).collect()
        }
        None => vec![0; kept.len()],
    };
    Candidates { kept, bands, dropped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn gw() -> Gateway {
        config::parse(&config::tests::sample()).unwrap()
    }

    fn subject<'a>(caller: &'a Caller, tag: Option<&'a str>) -> Subject<'a> {
        let compliance: &'a [String] = match tag {
            None => &[],
            Some(t) => Box::leak(Box::new([t.to_string()])),
        };
        Subject { caller, compliance, team: None, key_id: None, key_policy: None }
    }

    fn at(country: &str, continent: &str, location: Option<[f64; 2]>) -> Caller {
        Caller { location, ..Caller::new(Some(country), Some(continent), None) }
    }

    fn order(g: &Gateway, caller: &Caller, tag: Option<&str>) -> (String, Vec<String>) {
        let d = decide(&g.config.residency, &subject(caller, tag)).unwrap();
        let c = candidates(g, g.alias("chat").unwrap(), &d, caller);
        (d.rule, c.kept.iter().map(|d| d.id.clone()).collect())
    }

    #[test]
    fn eu_callers_stay_in_the_eu_nearest_first() {
        let g = gw();
        let paris = at("FR", "EU", Some([48.86, 2.35]));
        assert_eq!(order(&g, &paris, None), ("eu-callers".into(), vec!["eu-a".into(), "eu-b".into()]));
        let helsinki = at("FI", "EU", Some([60.17, 24.94]));
        assert_eq!(order(&g, &helsinki, None).1, vec!["eu-a", "eu-b"]);
    }

    #[test]
    fn apac_callers_go_to_the_nearest_apac_region() {
        let g = gw();
        let tokyo = at("JP", "AS", Some([35.68, 139.69]));
        assert_eq!(order(&g, &tokyo, None), ("apac-callers".into(), vec!["jp-a".into(), "sg-a".into()]));
        let singapore = at("SG", "AS", Some([1.29, 103.85]));
        assert_eq!(order(&g, &singapore, None).1, vec!["sg-a", "jp-a"]);
        // Without coordinates the alias order stands.
        assert_eq!(order(&g, &at("JP", "AS", None), None).1, vec!["jp-a", "sg-a"]);
    }

    #[test]
    fn a_compliance_tag_narrows_and_never_widens() {
        let g = gw();
        let us = at("US", "NA", Some([40.7, -74.0]));
        let (rule, kept) = order(&g, &us, Some("gdpr"));
        assert_eq!((rule.as_str(), kept), ("gdpr-tag", vec!["eu-a".to_string(), "eu-b".to_string()]));
        // An EU caller tagged us-only: the EU rule allows eu, the tag allows us: nothing.
        let de = at("DE", "EU", None);
        let d = decide(&g.config.residency, &subject(&de, Some("us-only"))).unwrap();
        assert_eq!(d.allowed, Allowed::Only(vec![]));
        assert!(candidates(&g, g.alias("chat").unwrap(), &d, &de).kept.is_empty());
        // Untagged US callers fall to the default rule, global endpoints included.
        assert_eq!(order(&g, &us, None).1.len(), 6);
    }

    #[test]
    fn a_tag_narrows_what_the_callers_own_rule_allows() {
        let g = gw();
        // The gdpr tag's rule allows the EU; the Japanese caller's own rule, APAC only.
        let tokyo = at("JP", "AS", Some([35.68, 139.69]));
        let d = decide(&g.config.residency, &subject(&tokyo, Some("gdpr"))).unwrap();
        assert_eq!((d.rule.as_str(), &d.allowed), ("gdpr-tag+apac-callers", &Allowed::Only(vec![])));
        // An EU caller's rule allows the EU already: the tag's rule is the whole answer.
        let paris = at("FR", "EU", None);
        assert_eq!(order(&g, &paris, Some("gdpr")), ("gdpr-tag".into(), vec!["eu-a".into(), "eu-b".into()]));
    }

    #[test]
    fn unknown_tag_is_a_400() {
        let g = gw();
        let c = at("US", "NA", None);
        let e = decide(&g.config.residency, &subject(&c, Some("hipaa"))).unwrap_err();
        assert_eq!((e.status, e.code), (400, "unknown_compliance_tag"));
        assert!(e.message.contains("gdpr"));
    }

    #[test]
    fn key_policy_narrows() {
        let g = gw();
        let c = at("US", "NA", None);
        let policy = vec!["eu".to_string()];
        let s = Subject { key_policy: Some(&policy), ..subject(&c, None) };
        let d = decide(&g.config.residency, &s).unwrap();
        assert_eq!((d.rule.as_str(), d.allowed), ("default", Allowed::Only(vec!["eu".into()])));
    }

    #[test]
    fn unknown_location_takes_the_most_restrictive_rule_by_default() {
        let g = gw();
        for code in ["XX", "T1"] {
            let c = Caller::new(Some(code), None, None);
            let d = decide(&g.config.residency, &subject(&c, None)).unwrap();
            assert_eq!(d.rule, "eu-callers", "{code}");
        }
        let mut g = gw();
        g.config.residency.unknown_location = UnknownLocation::IgnoreLocation;
        let c = Caller::new(Some("T1"), Some("EU"), None);
        assert_eq!(decide(&g.config.residency, &subject(&c, None)).unwrap().rule, "default");
    }

    #[test]
    fn dropped_candidates_say_why() {
        let g = gw();
        let c = at("DE", "EU", None);
        let d = decide(&g.config.residency, &subject(&c, None)).unwrap();
        let cands = candidates(&g, g.alias("chat").unwrap(), &d, &c);
        let dropped: Vec<&str> = cands.dropped.iter().map(|d| d.deployment.as_str()).collect();
        assert_eq!(dropped, vec!["us-a", "jp-a", "sg-a", "gl-a"]);
        assert!(cands.dropped[3].reason.contains("`global` is not allowed by rule `eu-callers`"));
    }

    /// A small deterministic generator, so the property cases below are reproducible.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[(self.next() as usize) % items.len()]
        }
    }

    #[test]
    fn property_no_candidate_outside_the_allowed_set_and_nearest_first() {
        let g = gw();
        let mut rng = Lcg(7);
        let countries = ["DE", "FR", "US", "JP", "SG", "AU", "BR", "XX", "T1", "CH", "GB"];
        let continents = ["EU", "NA", "AS", "OC", "SA", "AF"];
        let tags = [None, Some("gdpr"), Some("us-only")];
        for _ in 0..5000 {
            let lat = (rng.next() % 180) as f64 - 90.0;
            let lon = (rng.next() % 360) as f64 - 180.0;
            let location = if rng.next().is_multiple_of(4) { None } else { Some([lat, lon]) };
            let caller = at(rng.pick(&countries), rng.pick(&continents), location);
            let tag = rng.pick(&tags);
            let d = decide(&g.config.residency, &subject(&caller, tag)).unwrap();
            let c = candidates(&g, g.alias("chat").unwrap(), &d, &caller);
            for dep in &c.kept {
                assert!(d.allowed.permits(&dep.jurisdiction));
                if let Some(t) = tag {
                    assert!(g.config.residency.compliance_tags[t].contains(&dep.jurisdiction), "tag {t} leaked");
                }
                if d.allowed != Allowed::Any {
                    assert_ne!(dep.jurisdiction, "global");
                }
            }
            assert_eq!(c.kept.len() + c.dropped.len(), 6);
            if let Some(here) = location {
                let dist: Vec<f64> = c.kept.iter().filter_map(|d| d.location).map(|l| distance_km(here, l)).collect();
                if let Some(first) = dist.first() {
                    let nearest = dist.iter().cloned().fold(f64::INFINITY, f64::min);
                    assert!(first - nearest < g.config.residency.distance_band_km, "{first} vs {nearest}");
                }
            }
        }
    }

    /// A random rule set over the sample deployments: random tags, random conditions,
    /// random allow lists, a final catch-all.
    fn random_residency(rng: &mut Lcg) -> Residency {
        let js = ["eu", "uk", "ch", "us", "apac", "jp"];
        let pick_list = |rng: &mut Lcg, from: &[&str], max: u64| -> Vec<String> {
            let n = rng.next() % (max + 1);
            let mut v: Vec<String> = (0..n).map(|_| rng.pick(from).to_string()).collect();
            v.sort();
            v.dedup();
            v
        };
        let mut tags = std::collections::BTreeMap::new();
        for tag in ["t1", "t2", "t3"] {
            let mut list = pick_list(rng, &js, 3);
            if list.is_empty() {
                list.push("eu".into());
            }
            tags.insert(tag.to_string(), list);
        }
        let mut rules = Vec::new();
        for i in 0..(rng.next() % 6) {
            let when = crate::config::Conditions {
                countries: pick_list(rng, &["DE", "FR", "US", "JP", "SG", "GB"], 2),
                continents: pick_list(rng, &["EU", "NA", "AS"], 1),
                eu: match rng.next() % 3 {
                    0 => Some(true),
                    1 => Some(false),
                    _ => None,
                },
                compliance: pick_list(rng, &["t1", "t2", "t3"], 1),
                teams: pick_list(rng, &["a", "b"], 1),
                keys: Vec::new(),
            };
            let allow = if rng.next().is_multiple_of(5) { vec!["any".to_string()] } else { pick_list(rng, &js, 3) };
            rules.push(Rule { id: format!("r{i}"), description: None, when, allow });
        }
        let last = if rng.next().is_multiple_of(2) {
            vec!["any".to_string()]
        } else {
            vec!["us".to_string(), "eu".to_string()]
        };
        rules.push(Rule { id: "last".into(), description: None, when: Default::default(), allow: last });
        let unknown_location = if rng.next().is_multiple_of(2) {
            UnknownLocation::MostRestrictive
        } else {
            UnknownLocation::IgnoreLocation
        };
        Residency { unknown_location, compliance_tags: tags, distance_band_km: (rng.next() % 3000) as f64, rules }
    }

    #[test]
    fn property_random_valid_rule_sets_never_route_outside_what_they_allow() {
        let mut rng = Lcg(42);
        let base = gw();
        let (mut valid, mut checked) = (0, 0);
        for _ in 0..3000 {
            let residency = random_residency(&mut rng);
            let mut config = base.config.clone();
            config.residency = residency;
            let Ok(g) = crate::config::parse(&config_json(&config)) else { continue };
            valid += 1;
            for _ in 0..20 {
                let location = (!rng.next().is_multiple_of(3))
                    .then(|| [(rng.next() % 180) as f64 - 90.0, (rng.next() % 360) as f64 - 180.0]);
                let caller = at(
                    rng.pick(&["DE", "FR", "US", "JP", "SG", "GB", "XX", "T1"]),
                    rng.pick(&["EU", "NA", "AS"]),
                    location,
                );
                let tag = rng.pick(&[None, Some("t1"), Some("t2"), Some("t3")]);
                let team = rng.pick(&[None, Some("a"), Some("b")]);
                let policy = [vec!["eu".to_string()], vec!["us".to_string(), "apac".to_string()]];
                let key_policy = rng.pick(&[None, Some(&policy[0][..]), Some(&policy[1][..])]);
                let tags: Vec<String> = tag.map(str::to_string).into_iter().collect();
                let s = Subject { caller: &caller, compliance: &tags, team, key_id: None, key_policy };
                let d = decide(&g.config.residency, &s).unwrap();
                let untagged = Subject { compliance: &[], key_policy: None, ..s };
                let own = decide(&g.config.residency, &untagged).unwrap().allowed;
                let c = candidates(&g, g.alias("chat").unwrap(), &d, &caller);
                for dep in &c.kept {
                    checked += 1;
                    for id in d.rule.split('+') {
                        let rule = g.config.residency.rules.iter().find(|r| r.id == id).unwrap();
                        assert!(
                            Allowed::from_list(&rule.allow).permits(&dep.jurisdiction),
                            "{id} never allowed {}",
                            dep.id
                        );
                    }
                    assert!(own.permits(&dep.jurisdiction), "a tag or key policy widened {:?} to {}", own, dep.id);
                    if let Some(t) = tag {
                        assert!(g.config.residency.compliance_tags[t].contains(&dep.jurisdiction), "tag {t} widened");
                    }
                    if let Some(p) = key_policy {
                        assert!(p.contains(&dep.jurisdiction), "key policy widened");
                    }
                    if dep.jurisdiction == "global" {
                        assert_eq!(d.allowed, Allowed::Any);
                    }
                }
                for dropped in &c.dropped {
                    let dep = g.deployment(&dropped.deployment).unwrap();
                    assert!(!d.allowed.permits(&dep.jurisdiction), "{} dropped though allowed", dep.id);
                }
                if let (Some(here), Some(first)) = (location, c.kept.first()) {
                    let dist = |x: &Deployment| x.location.map(|l| distance_km(here, l));
                    let nearest = c.kept.iter().filter_map(|x| dist(x)).fold(f64::INFINITY, f64::min);
                    if let Some(first) = dist(first) {
                        assert!(first - nearest <= g.config.residency.distance_band_km + 1e-6);
                    }
                }
            }
        }
        assert!(
            valid > 300 && checked > 10_000,
            "the generator must produce enough valid rule sets ({valid}, {checked})"
        );
    }

    /// Configs are only ever built from JSON; rebuild one so validation runs as in production.
    fn config_json(c: &crate::config::Config) -> String {
        let rules: Vec<serde_json::Value> = c
            .residency
            .rules
            .iter()
            .map(|r| {
                serde_json::json!({"id": r.id, "when": {"countries": r.when.countries, "continents": r.when.continents,
                    "eu": r.when.eu, "compliance": r.when.compliance, "teams": r.when.teams}, "allow": r.allow})
            })
            .collect();
        let mut v: serde_json::Value = serde_json::from_str(&crate::config::tests::sample()).unwrap();
        v["residency"] = serde_json::json!({
            "unknown_location": match c.residency.unknown_location { UnknownLocation::MostRestrictive => "most_restrictive", UnknownLocation::IgnoreLocation => "ignore_location" },
            "compliance_tags": c.residency.compliance_tags,
            "distance_band_km": c.residency.distance_band_km,
            "rules": rules,
        });
        v.to_string()
    }

    #[test]
    fn several_compliance_tags_get_the_intersection_of_every_tags_decision() {
        let mut g = gw();
        let tags = &mut g.config.residency.compliance_tags;
        tags.insert("eea".into(), vec!["eu".into(), "uk".into()]);
        // A rule for one tag allows more than the other tag's own rule.
        g.config.residency.rules.insert(
            0,
            Rule {
                id: "eea-tag".into(),
                description: None,
                when: crate::config::Conditions { compliance: vec!["eea".into()], ..Default::default() },
                allow: vec!["eu".into(), "uk".into()],
            },
        );
        let us = at("US", "NA", None);
        let both = ["eea".to_string(), "us-only".to_string()];
        let d = decide(&g.config.residency, &Subject { compliance: &both, ..subject(&us, None) }).unwrap();
        assert_eq!(d.allowed, Allowed::Only(vec![]), "eu/uk and us have nothing in common");
        let gdpr_eea = ["eea".to_string(), "gdpr".to_string()];
        let d = decide(&g.config.residency, &Subject { compliance: &gdpr_eea, ..subject(&us, None) }).unwrap();
        assert_eq!((d.rule.as_str(), d.allowed), ("eea-tag+gdpr-tag", Allowed::Only(vec!["eu".into()])));
        let unknown = ["gdpr".to_string(), "hipaa".to_string()];
        let e = decide(&g.config.residency, &Subject { compliance: &unknown, ..subject(&us, None) }).unwrap_err();
        assert_eq!(e.code, "unknown_compliance_tag");
    }

    #[test]
    fn a_deployment_that_may_process_in_any_of_several_jurisdictions_needs_all_of_them() {
        let list = |l: &[&str]| Allowed::from_list(&l.iter().map(|j| j.to_string()).collect::<Vec<_>>());
        // `europe`: the EU/EEA, the UK or Switzerland (Bedrock's `eu.` profiles).
        assert!(!list(&["eu"]).permits("europe"));
        assert!(!list(&["eu", "uk"]).permits("europe"));
        assert!(list(&["eu", "uk", "ch"]).permits("europe"));
        assert!(list(&["any"]).permits("europe"));
        let europe = list(&["europe"]);
        for j in ["europe", "eu", "uk", "ch"] {
            assert!(europe.permits(j), "a rule allowing europe allows {j}");
        }
        assert!(!europe.permits("us"));
        // Narrowing keeps what every list allows, parts included.
        let gdpr = ["eu".to_string(), "uk".to_string(), "ch".to_string()];
        assert!(europe.clone().narrow(&gdpr).permits("europe"));
        assert!(!europe.narrow(&["eu".to_string()]).permits("europe"));
    }
}

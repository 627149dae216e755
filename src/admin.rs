//! The admin API's pure parts: who is calling (labelled admin tokens), what a config
//! change changes (the audit's diff summary), and the explain answer for a hypothetical
//! caller.

use crate::config::{Config, Gateway, Residency, Rule};
use crate::model::geo::{distance_km, Caller};
use crate::policy::residency::{self, Subject};
use crate::util::hash::sha256_hex;
use crate::util::valueread::{At, Fields, FromValue};
use serde::Serialize;
use serde_json::Value;

/// Admin tokens from the `ADMIN_TOKEN` secret: `label:token` pairs separated by commas
/// (`compliance:s3cret,platform:t0ken`), or one bare token labelled `admin`. The label is
/// the identity the audit log records.
#[derive(Debug, Default)]
pub struct AdminTokens {
    by_hash: Vec<(String, String)>,
}

impl AdminTokens {
    pub fn parse(secret: &str) -> AdminTokens {
        let by_hash = secret
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .filter_map(|entry| {
                let (label, token) = entry.split_once(':').unwrap_or(("admin", entry));
                let token = token.trim();
                (!token.is_empty()).then(|| (label.trim().to_string(), sha256_hex(token.as_bytes())))
            })
            .collect();
        AdminTokens { by_hash }
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

/// `rules added: a, b` / `removed` / `changed` lines for one section of the config.
fn section_diff<T: PartialEq>(what: &str, old: &[T], new: &[T], id: impl Fn(&T) -> &str, out: &mut Vec<String>) {
    let find = |list: &[T], key: &str| list.iter().position(|x| id(x) == key);
    let added: Vec<&str> = new.iter().map(&id).filter(|k| find(old, k).is_none()).collect();
    let removed: Vec<&str> = old.iter().map(&id).filter(|k| find(new, k).is_none()).collect();
    let changed: Vec<&str> = new.iter().filter(|n| find(old, id(n)).is_some_and(|i| old[i] != **n)).map(&id).collect();
    for (verb, items) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !items.is_empty() {
            out.push(format!("{what} {verb}: {}", items.join(", ")));
        }
    }
}

/// One line per kind of change between two rule sets, for the audit log.
pub fn residency_diff(old: &Residency, new: &Residency) -> Vec<String> {
    let mut out = Vec::new();
    section_diff("rules", &old.rules, &new.rules, |r: &Rule| r.id.as_str(), &mut out);
    let order = |r: &Residency, other: &Residency| -> Vec<String> {
        r.rules.iter().map(|x| x.id.clone()).filter(|id| other.rules.iter().any(|o| &o.id == id)).collect()
    };
    if order(old, new) != order(new, old) {
        let now: Vec<&str> = new.rules.iter().map(|r| r.id.as_str()).collect();
        out.push(format!("rules reordered: {}", now.join(" > ")));
    }
    let tags = |r: &Residency| r.compliance_tags.iter().map(|(t, j)| (t.clone(), j.clone())).collect::<Vec<_>>();
    section_diff("compliance tags", &tags(old), &tags(new), |(t, _): &(String, Vec<String>)| t.as_str(), &mut out);
    if old.unknown_location != new.unknown_location {
        out.push(format!("unknown_location: {} -> {}", old.unknown_location.as_str(), new.unknown_location.as_str()));
    }
    if old.distance_band_km != new.distance_band_km {
        out.push(format!("distance_band_km: {} -> {}", old.distance_band_km, new.distance_band_km));
    }
    out
}

/// Residency changes plus the routing parts (deployments, aliases, keys, limits).
pub fn config_diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = residency_diff(&old.residency, &new.residency);
    section_diff("deployments", &old.deployments, &new.deployments, |d| d.id.as_str(), &mut out);
    section_diff("aliases", &old.aliases, &new.aliases, |a| a.name.as_str(), &mut out);
    section_diff("keys", &old.keys, &new.keys, |k| k.id.as_str(), &mut out);
    if old.limits != new.limits {
        // Numbers only: Debug here prints no strings, so it needs no escaping tables.
        out.push(format!("limits: {:?} -> {:?}", old.limits, new.limits));
    }
    out
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
        let t = AdminTokens::parse("compliance:s3cret, platform:t0k:en ,bare");
        assert_eq!(t.authenticate("s3cret"), Some("compliance"));
        assert_eq!(t.authenticate("t0k:en"), Some("platform"));
        assert_eq!(t.authenticate("platform:t0k:en"), None);
        assert_eq!(AdminTokens::parse("solo-token").authenticate("solo-token"), Some("admin"));
        assert_eq!(t.authenticate("nope"), None);
        assert!(AdminTokens::parse(" , ").is_empty());
        assert!(AdminTokens::parse("label:").is_empty());
    }

    fn sample() -> Gateway {
        config::parse(&config::tests::sample()).unwrap()
    }

    #[test]
    fn residency_diff_names_what_changed() {
        let old = sample().config.residency;
        let mut new = old.clone();
        assert!(residency_diff(&old, &new).is_empty());
        new.rules[1].allow = vec!["eu".into(), "uk".into()];
        new.rules.remove(2);
        let mut added = new.rules[0].clone();
        added.id = "swiss".into();
        added.when.compliance.clear();
        added.when.countries = vec!["CH".into()];
        new.rules.insert(0, added);
        new.compliance_tags.insert("hipaa".into(), vec!["us".into()]);
        new.compliance_tags.insert("gdpr".into(), vec!["eu".into()]);
        let diff = residency_diff(&old, &new);
        assert_eq!(
            diff,
            vec![
                "rules added: swiss",
                "rules removed: apac-callers",
                "rules changed: eu-callers",
                "compliance tags added: hipaa",
                "compliance tags changed: gdpr",
            ]
        );
        let mut swapped = old.clone();
        swapped.rules.swap(0, 1);
        assert_eq!(
            residency_diff(&old, &swapped),
            vec!["rules reordered: eu-callers > gdpr-tag > apac-callers > default"]
        );
    }

    #[test]
    fn config_diff_covers_routing() {
        let old = sample().config;
        let mut new = old.clone();
        new.deployments[0].model = "other".into();
        new.aliases.pop();
        new.limits.max_attempts = 5;
        let diff = config_diff(&old, &new);
        assert!(diff.contains(&"deployments changed: eu-a".to_string()), "{diff:?}");
        assert!(diff.contains(&"aliases removed: us-only".to_string()), "{diff:?}");
        assert!(diff.iter().any(|l| l.starts_with("limits:")), "{diff:?}");
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

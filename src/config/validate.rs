//! Config validation as a whole: ids unique, references known, each provider's own rules,
//! residency rules that can all match and never point a tagged request outside its tag.

use super::*;
use crate::model::tag::is_tag_value;

fn unique<'a>(what: &str, ids: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty() {
            return Err(format!("a {what} has an empty id"));
        }
        if !seen.insert(id) {
            return Err(format!("duplicate {what} id `{id}`"));
        }
    }
    Ok(())
}

/// Names the config gives teams (and a key's default tags) must be what a request's tag
/// becomes, or they would never compare equal and a rule or budget would silently not apply.
fn check_tag(place: &str, what: &str, value: &str) -> Result<(), String> {
    if is_tag_value(value) {
        Ok(())
    } else {
        Err(format!(
            "{place}: {what} `{value}` is not a tag value (1 to 64 lowercase letters, digits, `.`, `_`, `-`; requests' tags are lowercased)"
        ))
    }
}

pub(crate) fn is_secret_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn check_jurisdictions(list: &[String], place: &str) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("{place}: the jurisdiction list is empty"));
    }
    for j in list {
        if j == "global" {
            return Err(format!(
                "{place}: `global` endpoints may process anywhere, so they cannot be allowed by a restricting list; use [\"any\"] for no restriction"
            ));
        }
        if j == ANY {
            if list.len() > 1 {
                return Err(format!("{place}: \"any\" must stand alone"));
            }
        } else if !JURISDICTIONS.contains(&j.as_str()) {
            return Err(format!("{place}: unknown jurisdiction `{j}` (known: {})", JURISDICTIONS.join(", ")));
        }
    }
    Ok(())
}

pub fn validate(c: &Config) -> Result<(), String> {
    unique("deployment", c.deployments.iter().map(|d| d.id.as_str()))?;
    unique("alias", c.aliases.iter().map(|a| a.name.as_str()))?;
    unique("key", c.keys.iter().map(|k| k.id.as_str()))?;
    unique("rule", c.residency.rules.iter().map(|r| r.id.as_str()))?;

    for d in &c.deployments {
        let at = format!("deployment `{}`", d.id);
        if !(d.base_url.starts_with("https://") || d.base_url.starts_with("http://")) {
            return Err(format!("{at}: base_url must start with https:// or http://"));
        }
        if d.base_url.ends_with('/') {
            return Err(format!("{at}: base_url must not end with `/`"));
        }
        if d.model.is_empty() {
            return Err(format!("{at}: model is empty"));
        }
        if !JURISDICTIONS.contains(&d.jurisdiction.as_str()) {
            return Err(format!(
                "{at}: unknown jurisdiction `{}` (known: {})",
                d.jurisdiction,
                JURISDICTIONS.join(", ")
            ));
        }
        for (field, name) in d.secrets() {
            if !is_secret_name(name) {
                return Err(format!("{at}: {field} `{name}` is not a secret name (A-Z, 0-9, _)"));
            }
        }
        if let Some([lat, lon]) = d.location {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(format!("{at}: location [{lat}, {lon}] is not a latitude/longitude"));
            }
        }
        if d.first_byte_timeout_ms == 0 {
            return Err(format!("{at}: first_byte_timeout_ms must be positive"));
        }
        if d.health.is_some_and(|h| h.failure_threshold == 0 || h.window_ms == 0) {
            return Err(format!("{at}: health.failure_threshold and health.window_ms must be positive"));
        }
        d.provider.validate(d).map_err(|why| format!("{at}: {why}"))?;
    }

    for a in &c.aliases {
        if a.deployments.is_empty() {
            return Err(format!("alias `{}` lists no deployments", a.name));
        }
        unique(&format!("deployment in alias `{}`", a.name), a.deployments.iter().map(String::as_str))?;
        for d in &a.deployments {
            if !c.deployments.iter().any(|x| &x.id == d) {
                return Err(format!("alias `{}` names unknown deployment `{d}`", a.name));
            }
        }
        validate_weights(a)?;
    }

    for k in &c.keys {
        validate_key(c, k)?;
    }
    let l = &c.limits;
    if l.max_attempts == 0 || l.total_deadline_ms == 0 || l.health.failure_threshold == 0 || l.health.window_ms == 0 {
        return Err(
            "limits: max_attempts, total_deadline_ms, health.failure_threshold and health.window_ms must be positive"
                .into(),
        );
    }

    for team in c.budgets.teams.keys() {
        check_tag("budgets.teams", "team", team)?;
    }
    validate_residency(&c.residency)
}

fn validate_weights(a: &Alias) -> Result<(), String> {
    let at = format!("alias `{}`", a.name);
    if a.strategy != Strategy::Weighted {
        if !a.weights.is_empty() {
            return Err(format!("{at}: weights are only for the weighted strategy"));
        }
        if a.sticky != Sticky::None {
            return Err(format!("{at}: sticky is only for the weighted strategy"));
        }
        return Ok(());
    }
    for d in a.weights.keys() {
        if !a.deployments.contains(d) {
            return Err(format!("{at}: weight for `{d}`, which the alias does not list"));
        }
    }
    if let Some(d) = a.deployments.iter().find(|d| !a.weights.contains_key(*d)) {
        return Err(format!("{at}: deployment `{d}` has no weight"));
    }
    let total: u64 = a.weights.values().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return Err(format!("{at}: the weights sum to 0; give at least one deployment a positive weight"));
    }
    Ok(())
}

/// A key against the config it will be used with (also for keys created at run time).
pub fn validate_key(c: &Config, k: &KeyConfig) -> Result<(), String> {
    let at = format!("key `{}`", k.id);
    if k.id.is_empty()
        || k.id.len() > 64
        || !k.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!("{at}: an id is 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    match (&k.sha256, &k.secret) {
        (Some(h), None) => {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("{at}: sha256 must be 64 lowercase hex digits"));
            }
        }
        (None, Some(s)) if is_secret_name(s) => {}
        (None, Some(s)) => return Err(format!("{at}: secret `{s}` is not a secret name (A-Z, 0-9, _)")),
        _ => return Err(format!("{at}: give exactly one of sha256 or secret")),
    }
    for alias in k.aliases.iter().flatten() {
        if !c.aliases.iter().any(|a| &a.name == alias) {
            return Err(format!("{at}: unknown alias `{alias}`"));
        }
    }
    if let Some(r) = &k.residency {
        check_jurisdictions(r, &format!("{at} residency"))?;
    }
    for (what, value) in [("team", &k.team), ("feature", &k.feature), ("env", &k.env)] {
        if let Some(v) = value {
            check_tag(&at, what, v)?;
        }
    }
    if let Some(b) = &k.rate_limit {
        if !is_secret_name(b) {
            return Err(format!("{at}: rate_limit `{b}` is not a binding name (A-Z, 0-9, _)"));
        }
    }
    Ok(())
}

fn validate_residency(r: &Residency) -> Result<(), String> {
    if r.distance_band_km.is_nan() || r.distance_band_km < 0.0 {
        return Err("residency.distance_band_km must be zero or positive".into());
    }
    for (tag, list) in &r.compliance_tags {
        if tag.is_empty()
            || !tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!("compliance tag `{tag}`: use lowercase letters, digits, - and _"));
        }
        check_jurisdictions(list, &format!("compliance tag `{tag}`"))?;
        if list.iter().any(|j| j == ANY) {
            return Err(format!("compliance tag `{tag}`: a tag must restrict; \"any\" is not allowed"));
        }
    }
    let Some(last) = r.rules.last() else {
        return Err("residency.rules is empty; the last rule must match every request".into());
    };
    if !last.when.is_empty() {
        return Err(format!(
            "residency rule `{}`: the last rule must have no conditions, so every request matches a rule",
            last.id
        ));
    }
    for (i, rule) in r.rules.iter().enumerate() {
        let at = format!("residency rule `{}`", rule.id);
        check_jurisdictions(&rule.allow, &at)?;
        if let Some(earlier) = r.rules[..i].iter().find(|e| e.when.covers(&rule.when)) {
            return Err(format!(
                "{at} can never match: every request it matches is matched first by rule `{}`",
                earlier.id
            ));
        }
        let w = &rule.when;
        for c in &w.countries {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!("{at}: country `{c}` is not an ISO 3166-1 alpha-2 code in capitals"));
            }
        }
        if let Some(eu) = w.eu {
            if !w.countries.is_empty() && w.countries.iter().all(|c| crate::model::geo::is_eu_member(c) != eu) {
                return Err(format!(
                    "{at} can never match: none of its countries is {}an EU member, but it requires eu = {eu}",
                    if eu { "" } else { "not " }
                ));
            }
        }
        for c in &w.continents {
            if !CONTINENTS.contains(&c.as_str()) {
                return Err(format!("{at}: unknown continent `{c}` (known: {})", CONTINENTS.join(", ")));
            }
        }
        for team in &w.teams {
            check_tag(&at, "team", team)?;
        }
        for tag in &w.compliance {
            let Some(tag_allows) = r.compliance_tags.get(tag) else {
                return Err(format!("{at}: unknown compliance tag `{tag}`"));
            };
            // A rule that only ever sees requests carrying these tags must not point them at
            // a jurisdiction one of the tags forbids.
            if w.compliance.len() == 1 {
                let tag_permits = |j: &str| parts(j).all(|p| tag_allows.iter().any(|t| parts(t).any(|q| q == p)));
                if let Some(bad) = rule.allow.iter().find(|j| *j == ANY || !tag_permits(j)) {
                    return Err(format!(
                        "{at}: requests tagged `{tag}` may not reach `{bad}` (the tag allows {})",
                        tag_allows.join(", ")
                    ));
                }
            }
        }
    }
    Ok(())
}

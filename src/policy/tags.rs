//! Cost tags: team, feature and environment, from the `x-gateway-*` headers with the key's
//! defaults. A request without a tag is recorded as `untagged`, never dropped.

use crate::config::KeyConfig;
use crate::model::error::GatewayError;
use crate::model::tag::{is_tag_value, MAX_LEN};

pub const UNTAGGED: &str = "untagged";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    pub team: String,
    pub feature: String,
    pub env: String,
}

/// Lowercased, so `QA` and `qa` do not split a breakdown; letters, digits, `.`, `_`, `-`.
fn clean(header: &str, value: &str) -> Result<String, GatewayError> {
    let v = value.trim().to_ascii_lowercase();
    if is_tag_value(&v) {
        Ok(v)
    } else {
        Err(GatewayError::bad_request(
            "invalid_tag",
            format!("`{header}` must be 1 to {MAX_LEN} characters of letters, digits, `.`, `_` and `-`."),
        ))
    }
}

/// The request's tags. A key bound to a team cannot tag another team's spend: that would
/// let it slip past the team's budget.
pub fn resolve(
    key: &KeyConfig,
    team: Option<&str>,
    feature: Option<&str>,
    env: Option<&str>,
) -> Result<Tags, GatewayError> {
    let pick = |header: &str, given: Option<&str>, default: Option<&String>| -> Result<String, GatewayError> {
        match given.or(default.map(String::as_str)) {
            Some(v) => clean(header, v),
            None => Ok(UNTAGGED.to_string()),
        }
    };
    let tags = Tags {
        team: pick("x-gateway-team", team, key.team.as_ref())?,
        feature: pick("x-gateway-feature", feature, key.feature.as_ref())?,
        env: pick("x-gateway-env", env, key.env.as_ref())?,
    };
    if let Some(bound) = &key.team {
        if tags.team != bound.to_ascii_lowercase() {
            return Err(GatewayError::forbidden(
                "team_mismatch",
                format!("This key belongs to team `{bound}`; it cannot tag requests as team `{}`.", tags.team),
            ));
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::valueread::FromValue;

    fn key(team: Option<&str>, env: Option<&str>) -> KeyConfig {
        KeyConfig::read(&serde_json::json!({"id": "k", "sha256": "x", "team": team, "env": env})).unwrap()
    }

    #[test]
    fn headers_then_key_defaults_then_untagged() {
        let t = resolve(&key(None, Some("prod")), Some("Search"), Some("summarize"), None).unwrap();
        assert_eq!((t.team.as_str(), t.feature.as_str(), t.env.as_str()), ("search", "summarize", "prod"));
        let t = resolve(&key(None, None), None, None, None).unwrap();
        assert_eq!((t.team.as_str(), t.feature.as_str(), t.env.as_str()), (UNTAGGED, UNTAGGED, UNTAGGED));
        let t = resolve(&key(None, Some("prod")), None, None, Some("qa")).unwrap();
        assert_eq!(t.env, "qa", "a header overrides the key's default env");
    }

    #[test]
    fn values_are_validated() {
        for bad in ["", " ", "has space", "semi;colon", "ünï", &"x".repeat(65), "a/b"] {
            let e = resolve(&key(None, None), None, Some(bad), None).unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_tag"), "{bad:?}");
            assert!(e.message.contains("x-gateway-feature"));
        }
        assert!(resolve(&key(None, None), None, Some(&"x".repeat(64)), None).is_ok());
        assert!(resolve(&key(None, None), None, Some("v2.summarize_long-form"), None).is_ok());
    }

    #[test]
    fn a_team_bound_key_cannot_tag_another_team() {
        let k = key(Some("search"), None);
        assert_eq!(resolve(&k, None, None, None).unwrap().team, "search");
        assert_eq!(resolve(&k, Some("SEARCH"), None, None).unwrap().team, "search");
        let e = resolve(&k, Some("ads"), None, None).unwrap_err();
        assert_eq!((e.status, e.code), (403, "team_mismatch"));
    }
}

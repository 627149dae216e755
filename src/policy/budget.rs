//! Month-to-date spend against the budgets that apply to a request.

use crate::config::budget::{Budget, Mode};
use crate::config::price::format_usd;
use crate::model::error::GatewayError;
use crate::util::valueread::{At, Fields, FromValue};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Month-to-date spend in micro-dollars, as the cron's snapshot (plus what this isolate
/// has billed since) has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Spend {
    pub month: String,
    pub teams: BTreeMap<String, u64>,
    pub keys: BTreeMap<String, u64>,
    /// When the snapshot was taken (Unix ms).
    pub at_ms: u64,
}

impl FromValue for Spend {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(Spend { month: f.req("month")?, teams: f.req("teams")?, keys: f.req("keys")?, at_ms: f.req("at_ms")? })
    }
}

impl Spend {
    pub fn add(&mut self, team: &str, key: &str, micros: u64) {
        *self.teams.entry(team.to_string()).or_default() += micros;
        *self.keys.entry(key.to_string()).or_default() += micros;
    }
}

/// `Ok(warnings)` when the request may go ahead; 402 `budget_exceeded` when a hard budget
/// is spent.
pub fn check(
    spend: &Spend,
    key_id: &str,
    key_budget: Option<&Budget>,
    team: &str,
    team_budget: Option<&Budget>,
) -> Result<Vec<String>, GatewayError> {
    let mut warnings = Vec::new();
    let budgets =
        [("key", key_id, key_budget, spend.keys.get(key_id)), ("team", team, team_budget, spend.teams.get(team))];
    for (what, name, budget, spent) in budgets {
        let Some(b) = budget else { continue };
        let spent = spent.copied().unwrap_or(0);
        if spent < b.monthly_usd.0 {
            continue;
        }
        let detail = format!(
            "{what} `{name}` has spent ${} of its ${} monthly budget for {}",
            format_usd(spent),
            format_usd(b.monthly_usd.0),
            spend.month
        );
        match b.mode {
            Mode::Hard => {
                return Err(GatewayError::new(
                    402,
                    "insufficient_quota",
                    "budget_exceeded",
                    format!("Budget exhausted: {detail}."),
                ))
            }
            Mode::Soft => warnings.push(detail),
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::budget::Usd;
    use crate::config::price::parse_usd;

    fn budget(usd: &str, mode: Mode) -> Budget {
        Budget { monthly_usd: Usd(parse_usd(usd).unwrap()), mode }
    }

    fn spend(team: u64, key: u64) -> Spend {
        let mut s = Spend { month: "2026-11".into(), ..Spend::default() };
        s.add("search", "k1", key);
        s.add("search", "other-key", team.saturating_sub(key));
        s
    }

    #[test]
    fn a_hard_budget_refuses_once_reached() {
        let b = budget("10", Mode::Hard);
        assert_eq!(check(&spend(9_999_999, 0), "k1", None, "search", Some(&b)).unwrap(), Vec::<String>::new());
        let e = check(&spend(10_000_000, 0), "k1", None, "search", Some(&b)).unwrap_err();
        assert_eq!((e.status, e.code), (402, "budget_exceeded"));
        assert!(e.message.contains("team `search` has spent $10.000000 of its $10.000000"), "{}", e.message);
    }

    #[test]
    fn both_the_key_and_the_team_budget_apply() {
        let tight_key = budget("1", Mode::Hard);
        let roomy_team = budget("100", Mode::Hard);
        let e = check(&spend(2_000_000, 2_000_000), "k1", Some(&tight_key), "search", Some(&roomy_team)).unwrap_err();
        assert!(e.message.contains("key `k1`"));
        let roomy_key = budget("100", Mode::Hard);
        let tight_team = budget("1", Mode::Hard);
        let e = check(&spend(2_000_000, 0), "k1", Some(&roomy_key), "search", Some(&tight_team)).unwrap_err();
        assert!(e.message.contains("team `search`"), "another key's spend counts against the team");
    }

    #[test]
    fn a_soft_budget_warns() {
        let w = check(&spend(5_000_000, 5_000_000), "k1", Some(&budget("5", Mode::Soft)), "search", None).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("key `k1` has spent $5.000000"));
        assert!(check(&Spend::default(), "k1", None, "search", None).unwrap().is_empty());
    }
}

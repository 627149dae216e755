//! Monthly budgets: per key and per team, hard (refuse with 402) or soft (a warning
//! header). A request is checked against every budget that applies to it — its key's and
//! its team's, never one instead of the other.

use crate::config::price::{format_usd, parse_usd};
use crate::util::valueread::{fail, variant, At, Fields, FromValue};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse requests once the month's spend reaches the cap.
    #[default]
    Hard,
    /// Serve them, with `x-gateway-budget-warning`.
    Soft,
}

impl FromValue for Mode {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        Ok([Mode::Hard, Mode::Soft][variant(v, at, &["hard", "soft"])?])
    }
}

/// USD as a decimal string, held in micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usd(pub u64);

impl Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_usd(self.0))
    }
}

impl FromValue for Usd {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        parse_usd(&String::from_value(v, at)?).map(Usd).map_err(|e| fail(at, e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub monthly_usd: Usd,
    pub mode: Mode,
}

impl FromValue for Budget {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(Budget { monthly_usd: f.req("monthly_usd")?, mode: f.or("mode", Mode::default())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_from_config() {
        let read = |json: Value| Budget::from_value(&json, At::Field(&At::Root, "budget"));
        let b = read(serde_json::json!({"monthly_usd": "2400.50"})).unwrap();
        assert_eq!(b, Budget { monthly_usd: Usd(2_400_500_000), mode: Mode::Hard });
        assert_eq!(
            read(serde_json::json!({"monthly_usd": 10})).unwrap_err(),
            "budget.monthly_usd: invalid type: integer `10`, expected a string"
        );
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"monthly_usd":"2400.500000","mode":"hard"}"#);
        assert_eq!(
            read(serde_json::json!({"monthly_usd": "1", "mode": "sometimes"})).unwrap_err(),
            "budget.mode: unknown variant `sometimes`, expected `hard` or `soft`"
        );
        assert!(read(serde_json::json!({"monthly_usd": "1.0000001"})).unwrap_err().starts_with("budget.monthly_usd: "));
    }
}

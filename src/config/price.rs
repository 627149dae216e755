//! Prices and costs in integer micro-dollars, never floats: a price is micro-dollars per
//! million tokens (`"3.00"` USD/MTok = 3,000,000), so a cost is an exact integer product
//! rounded once, half up, to the micro-dollar.

use crate::util::valueread::{fail, invalid_type, At, Fields, FromValue};
use serde_json::Value;

/// USD per million tokens, held as micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PerMtok(pub u64);

/// A decimal string (`"0.075"`) so that no price passes through a float; whole numbers may
/// also be JSON integers.
impl FromValue for PerMtok {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        match v {
            Value::Number(n) if n.is_u64() => n
                .as_u64()
                .and_then(|n| n.checked_mul(1_000_000))
                .map(PerMtok)
                .ok_or_else(|| fail(at, "price too large")),
            Value::String(s) => parse_usd(s).map(PerMtok).map_err(|e| fail(at, e)),
            _ => Err(invalid_type(v, at, "a price in USD per million tokens as a decimal string like \"3.00\"")),
        }
    }
}

/// `"12.345678"` → 12,345,678 micro-dollars. At most six decimals: a finer price would be
/// silently rounded.
pub fn parse_usd(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a USD amount like \"3.00\" (at most 6 decimals)");
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty() || frac.len() > 6 || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let frac: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    whole.checked_mul(1_000_000).and_then(|w| w.checked_add(frac)).ok_or_else(bad)
}

/// `12345678` → `"12.345678"`.
pub fn format_usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// USD per 1,000 of something billed by the unit (web searches), as micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerThousand(pub u64);

impl FromValue for PerThousand {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let text = v
            .as_str()
            .ok_or_else(|| invalid_type(v, at, "a price in USD per 1,000 as a decimal string like \"10.00\""))?;
        parse_usd(text).map(PerThousand).map_err(|e| fail(at, e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: PerMtok,
    pub output: PerMtok,
    /// Cache reads; billed at `input` when absent.
    pub cached_input: Option<PerMtok>,
    /// Cache writes, where the provider bills them (Anthropic: 1.25× input); `input` when absent.
    pub cache_write: Option<PerMtok>,
    /// Web searches a server tool runs, per 1,000 (`"web_search": "10.00"`); Anthropic's
    /// own $10 on an `anthropic` deployment that does not say.
    pub web_search: Option<PerThousand>,
    /// What the provider charges on top of these list prices for the deployment's
    /// processing geography, in percent (Anthropic's `inference_geo`: 110); not a config
    /// field, but implied by the deployment.
    pub uplift_pct: u32,
}

impl FromValue for Price {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(Price {
            input: f.req("input")?,
            output: f.req("output")?,
            cached_input: f.opt("cached_input")?,
            cache_write: f.opt("cache_write")?,
            web_search: f.opt("web_search")?,
            uplift_pct: 100,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_usd_exactly() {
        assert_eq!(parse_usd("3").unwrap(), 3_000_000);
        assert_eq!(parse_usd("3.00").unwrap(), 3_000_000);
        assert_eq!(parse_usd("0.075").unwrap(), 75_000);
        assert_eq!(parse_usd("0.000001").unwrap(), 1);
        assert_eq!(parse_usd(" 25.5 ").unwrap(), 25_500_000);
        for bad in ["", ".5", "1.0000001", "-1", "1e3", "abc", "1.2.3", "18446744073709.551616"] {
            assert!(parse_usd(bad).is_err(), "{bad}");
        }
        assert_eq!(format_usd(12_345_678), "12.345678");
        assert_eq!(format_usd(5), "0.000005");
        let read = |json: Value| Price::from_value(&json, At::Field(&At::Root, "price"));
        let p = read(serde_json::json!({"input": 5, "output": "25.00", "cached_input": "0.50"})).unwrap();
        assert_eq!(
            (p.input, p.output, p.cached_input),
            (PerMtok(5_000_000), PerMtok(25_000_000), Some(PerMtok(500_000)))
        );
        let float = read(serde_json::json!({"input": 1.5, "output": "1"})).unwrap_err();
        assert!(float.starts_with("price.input: invalid type: floating point `1.5`, expected a price"), "{float}");
        let typo = read(serde_json::json!({"input": "1", "output": "1", "typo": "1"})).unwrap_err();
        assert!(typo.starts_with("price: unknown field `typo`"), "{typo}");
        assert!(read(serde_json::json!({"input": u64::MAX, "output": "1"})).unwrap_err().contains("price too large"));
    }
}

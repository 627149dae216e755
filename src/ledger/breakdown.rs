//! Cost breakdowns: "what does each team spend per feature per region per month" as one
//! query over the daily rollup. The query is built from a whitelist of dimensions, so a
//! client's group-by and filters never reach SQL as text.

use crate::config::price::format_usd;
use crate::model::error::GatewayError;
use serde::Serialize;
use serde_json::{Map, Value};

/// Query name → rollup column.
const DIMENSIONS: &[(&str, &str)] = &[
    ("day", "day"),
    ("team", "team"),
    ("feature", "feature"),
    ("env", "env"),
    ("country", "caller_country"),
    ("continent", "caller_continent"),
    ("jurisdiction", "jurisdiction"),
    ("provider", "provider"),
    ("region", "region"),
    ("deployment", "deployment"),
    ("model", "model"),
];

/// `cost_estimated_micros` is the part of `cost_micros` the gateway estimated (a call that
/// failed or was cut before its provider reported all of its usage).
const MEASURES: &[&str] = &[
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_micros",
    "cost_estimated_micros",
    "unpriced_requests",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

#[derive(Debug, PartialEq)]
pub struct Query {
    pub from: String,
    pub to: String,
    pub group_by: Vec<&'static str>,
    /// Dimension → accepted values.
    pub filters: Vec<(&'static str, Vec<String>)>,
    pub format: Format,
}

fn column(name: &str) -> Option<(&'static str, &'static str)> {
    DIMENSIONS.iter().find(|(n, _)| *n == name).copied()
}

fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn bad(message: String) -> GatewayError {
    GatewayError::bad_request("invalid_breakdown", message)
}

/// Parses query parameters: `from`, `to` (UTC days, inclusive; default: `default_from` to
/// `today`), `group_by` (comma-separated dimensions), `format` (`json` or `csv`), and any
/// dimension as a filter (comma-separated values).
pub fn parse_query<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    default_from: &str,
    today: &str,
) -> Result<Query, GatewayError> {
    let mut q = Query {
        from: default_from.into(),
        to: today.into(),
        group_by: Vec::new(),
        filters: Vec::new(),
        format: Format::Json,
    };
    let known = || DIMENSIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    for (k, v) in pairs {
        match k {
            "from" | "to" => {
                if !is_day(v) {
                    return Err(bad(format!("`{k}` must be a day like 2026-04-01, not `{v}`.")));
                }
                if k == "from" {
                    q.from = v.into();
                } else {
                    q.to = v.into();
                }
            }
            "group_by" => {
                for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                    let (name, _) = column(d).ok_or_else(|| bad(format!("Cannot group by `{d}`; use {}.", known())))?;
                    if !q.group_by.contains(&name) {
                        q.group_by.push(name);
                    }
                }
            }
            "format" => {
                q.format = match v {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    _ => return Err(bad(format!("`format` is json or csv, not `{v}`."))),
                }
            }
            _ => {
                let (name, _) =
                    column(k).ok_or_else(|| bad(format!("Unknown parameter `{k}`; filters are {}.", known())))?;
                let values: Vec<String> =
                    v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if values.is_empty() {
                    return Err(bad(format!("The filter `{k}` has no value.")));
                }
                q.filters.push((name, values));
            }
        }
    }
    if q.from > q.to {
        return Err(bad(format!("`from` ({}) is after `to` ({}).", q.from, q.to)));
    }
    Ok(q)
}

impl Query {
    /// The SQL and its parameters, in order.
    pub fn sql(&self) -> (String, Vec<String>) {
        let cols: Vec<&str> = self.group_by.iter().map(|d| column(d).expect("parsed dimensions exist").1).collect();
        let sums: Vec<String> = MEASURES.iter().map(|m| format!("SUM({m}) AS {m}")).collect();
        let select: Vec<String> =
            self.group_by.iter().zip(&cols).map(|(d, c)| format!("{c} AS {d}")).chain(sums).collect();
        let mut params = vec![self.from.clone(), self.to.clone()];
        let mut wheres = vec!["day >= ?1".to_string(), "day <= ?2".to_string()];
        for (d, values) in &self.filters {
            let c = column(d).expect("parsed dimensions exist").1;
            let marks: Vec<String> = values
                .iter()
                .map(|v| {
                    params.push(v.clone());
                    format!("?{}", params.len())
                })
                .collect();
            wheres.push(format!("{c} IN ({})", marks.join(", ")));
        }
        let mut sql = format!("SELECT {} FROM cost_daily WHERE {}", select.join(", "), wheres.join(" AND "));
        if !cols.is_empty() {
            sql += &format!(" GROUP BY {} ORDER BY cost_micros DESC, {}", cols.join(", "), cols.join(", "));
        }
        (sql, params)
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub cost_micros: u64,
    pub cost_usd: String,
    pub cost_estimated_micros: u64,
    /// The estimated part's share of the cost.
    pub estimated_pct: String,
    pub unpriced_requests: u64,
}

fn measure(row: &Map<String, Value>, name: &str) -> u64 {
    row.get(name).and_then(Value::as_u64).unwrap_or(0)
}

/// `12.34` (percent, two decimals, integer arithmetic).
fn share_pct(part: u64, total: u64) -> String {
    if total == 0 {
        return "0.00".into();
    }
    let basis = (u128::from(part) * 10_000 + u128::from(total) / 2) / u128::from(total);
    format!("{}.{:02}", basis / 100, basis % 100)
}

/// Rows with `cost_usd` and their `share_pct` of the total cost, and the totals. A query
/// that grouped by nothing has a single (total) row.
pub fn present(q: &Query, rows: Vec<Map<String, Value>>) -> (Vec<Map<String, Value>>, Totals) {
    let sum = |m: &str| rows.iter().map(|r| measure(r, m)).sum::<u64>();
    let total_cost = sum("cost_micros");
    let totals = Totals {
        requests: sum("requests"),
        input_tokens: sum("input_tokens"),
        output_tokens: sum("output_tokens"),
        cached_tokens: sum("cached_tokens"),
        cost_micros: total_cost,
        cost_usd: format_usd(total_cost),
        cost_estimated_micros: sum("cost_estimated_micros"),
        estimated_pct: share_pct(sum("cost_estimated_micros"), total_cost),
        unpriced_requests: sum("unpriced_requests"),
    };
    let rows = rows
        .into_iter()
        .filter(|r| !q.group_by.is_empty() || measure(r, "requests") > 0)
        .map(|mut r| {
            for m in MEASURES {
                r.insert((*m).into(), Value::from(measure(&r, m)));
            }
            let cost = measure(&r, "cost_micros");
            r.insert("cost_usd".into(), Value::from(format_usd(cost)));
            r.insert("share_pct".into(), Value::from(share_pct(cost, total_cost)));
            r.insert("estimated_pct".into(), Value::from(share_pct(measure(&r, "cost_estimated_micros"), cost)));
            r
        })
        .collect();
    (rows, totals)
}

fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn csv(q: &Query, rows: &[Map<String, Value>]) -> String {
    let mut header: Vec<&str> = q.group_by.clone();
    header.extend(MEASURES);
    header.extend(["cost_usd", "share_pct", "estimated_pct"]);
    let mut out = header.join(",") + "\n";
    for r in rows {
        let line: Vec<String> = header.iter().map(|h| csv_field(r.get(*h).unwrap_or(&Value::Null))).collect();
        out += &(line.join(",") + "\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<Query, GatewayError> {
        let pairs: Vec<(&str, &str)> =
            s.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap()).collect();
        parse_query(pairs.into_iter(), "2026-11-01", "2026-11-25")
    }

    #[test]
    fn builds_whitelisted_sql() {
        let q = parse("group_by=team,country,team&team=search,ads&env=qa&from=2026-10-01").unwrap();
        assert_eq!(q.group_by, vec!["team", "country"]);
        let (sql, params) = q.sql();
        assert_eq!(
            sql,
            "SELECT team AS team, caller_country AS country, SUM(requests) AS requests, SUM(input_tokens) AS input_tokens, \
SUM(output_tokens) AS output_tokens, SUM(cached_tokens) AS cached_tokens, SUM(cost_micros) AS cost_micros, \
SUM(cost_estimated_micros) AS cost_estimated_micros, SUM(unpriced_requests) AS unpriced_requests FROM cost_daily WHERE day >= ?1 AND day <= ?2 AND team IN (?3, ?4) \
AND env IN (?5) GROUP BY team, caller_country ORDER BY cost_micros DESC, team, caller_country"
        );
        assert_eq!(params, vec!["2026-10-01", "2026-11-25", "search", "ads", "qa"]);
        let (sql, _) = parse("").unwrap().sql();
        assert!(!sql.contains("GROUP BY"));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for (q, needle) in [
            ("group_by=team;drop", "Cannot group by `team;drop`"),
            ("colour=red", "Unknown parameter `colour`"),
            ("from=yesterday", "`from` must be a day"),
            ("from=2026-12-01&to=2026-11-01", "is after"),
            ("format=xml", "json or csv"),
            ("team=", "has no value"),
        ] {
            let e = parse(q).unwrap_err();
            assert_eq!((e.status, e.code), (400, "invalid_breakdown"));
            assert!(e.message.contains(needle), "{q}: {}", e.message);
        }
    }

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn shares_and_totals_in_integers() {
        let q = parse("group_by=env").unwrap();
        let rows = vec![
            row(json!({"env": "qa", "requests": 8, "cost_micros": 2_000_000, "input_tokens": 10})),
            row(json!({"env": "prod", "requests": 2, "cost_micros": 1_000_000, "cost_estimated_micros": 250_000,
                "unpriced_requests": 1})),
        ];
        let (rows, totals) = present(&q, rows);
        assert_eq!(totals.cost_usd, "3.000000");
        assert_eq!((totals.cost_estimated_micros, totals.estimated_pct.as_str()), (250_000, "8.33"));
        assert_eq!((&rows[0]["estimated_pct"], &rows[1]["estimated_pct"]), (&json!("0.00"), &json!("25.00")));
        assert_eq!((totals.requests, totals.unpriced_requests), (10, 1));
        assert_eq!(rows[0]["share_pct"], "66.67");
        assert_eq!(rows[1]["share_pct"], "33.33");
        assert_eq!(rows[1]["cost_usd"], "1.000000");
        assert_eq!(rows[1]["output_tokens"], 0);
        let text = csv(&q, &rows);
        assert_eq!(
            text.lines().next().unwrap(),
            "env,requests,input_tokens,output_tokens,cached_tokens,cost_micros,cost_estimated_micros,unpriced_requests,cost_usd,share_pct,estimated_pct"
        );
        assert_eq!(text.lines().nth(1).unwrap(), "qa,8,10,0,0,2000000,0,0,2.000000,66.67,0.00");
        assert_eq!(share_pct(1, 0), "0.00");
        assert_eq!(csv_field(&json!("a,\"b\"")), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn an_empty_ungrouped_total_has_no_rows() {
        let q = parse("").unwrap();
        let (rows, totals) = present(&q, vec![row(json!({"requests": null, "cost_micros": null}))]);
        assert!(rows.is_empty());
        assert_eq!(totals.cost_micros, 0);
    }
}

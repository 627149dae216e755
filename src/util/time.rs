//! UTC dates from Unix time, by `chrono`: the ledger's day and month keys, SigV4's
//! timestamps.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The UTC time of `unix_ms`; times beyond chrono's range (about 262,000 years) are the
/// epoch, which no clock the gateway reads can reach.
pub fn utc(unix_ms: u64) -> DateTime<Utc> {
    i64::try_from(unix_ms).ok().and_then(DateTime::from_timestamp_millis).unwrap_or_default()
}

/// `YYYY-MM-DD` (UTC) of a Unix time in milliseconds.
pub fn day(unix_ms: u64) -> String {
    let t = utc(unix_ms);
    format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

/// `YYYY-MM` (UTC) of a Unix time in milliseconds.
pub fn month(unix_ms: u64) -> String {
    let t = utc(unix_ms);
    format!("{:04}-{:02}", t.year(), t.month())
}

/// `YYYYMMDD` and `HHMMSS` (UTC) of a Unix time in seconds, as SigV4 writes them.
pub fn compact(unix_s: u64) -> (String, String) {
    let t = utc(unix_s.saturating_mul(1000));
    (
        format!("{:04}{:02}{:02}", t.year(), t.month(), t.day()),
        format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_months() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400_000), "2000-02-29");
        assert_eq!(day(1_764_028_799_999), "2025-11-24");
        assert_eq!(day(1_764_028_800_000), "2025-11-25");
        assert_eq!(month(1_764_028_800_000), "2025-11");
        assert_eq!(day(253_402_300_799_000), "9999-12-31");
        assert_eq!(compact(1_440_938_160), ("20150830".to_string(), "123600".to_string()));
    }
}

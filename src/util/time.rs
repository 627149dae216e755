//! UTC dates from Unix time, by `chrono`: the ledger's day and month keys, SigV4's
//! timestamps.

use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: u64 = 719_163;

/// The UTC date of `unix_ms`; dates beyond chrono's range (about 262,000 years) are the
/// epoch, which no clock the gateway reads can reach.
pub fn date(unix_ms: u64) -> NaiveDate {
    let days = unix_ms / 86_400_000 + UNIX_EPOCH_DAYS_FROM_CE;
    i32::try_from(days).ok().and_then(NaiveDate::from_num_days_from_ce_opt).unwrap_or_default()
}

/// `YYYY-MM-DD` (UTC) of a Unix time in milliseconds.
pub fn day(unix_ms: u64) -> String {
    let d = date(unix_ms);
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// `YYYY-MM` (UTC) of a Unix time in milliseconds.
pub fn month(unix_ms: u64) -> String {
    let d = date(unix_ms);
    format!("{:04}-{:02}", d.year(), d.month())
}

/// `YYYYMMDD` and `HHMMSS` (UTC) of a Unix time in seconds, as SigV4 writes them.
pub fn compact(unix_s: u64) -> (String, String) {
    let d = date(unix_s.saturating_mul(1000));
    let t = NaiveTime::from_num_seconds_from_midnight_opt((unix_s % 86_400) as u32, 0).unwrap_or_default();
    (
        format!("{:04}{:02}{:02}", d.year(), d.month(), d.day()),
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

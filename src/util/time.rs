//! UTC calendar dates from Unix time, without a date-time crate: the ledger's day and
//! month keys and SigV4's timestamps need nothing more.

/// Gregorian (year, month, day) of a day count since 1970-01-01, by splitting time into
/// 400-year eras (146097 days each) of years that start on March 1st, so that the leap
/// day falls at the end of a year and months have a regular length pattern.
pub fn civil_from_days(days: u64) -> (u64, u8, u8) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month as u8, day as u8)
}

/// `YYYY-MM-DD` (UTC) of a Unix time in milliseconds.
pub fn day(unix_ms: u64) -> String {
    let (y, m, d) = civil_from_days(unix_ms / 86_400_000);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM` (UTC) of a Unix time in milliseconds.
pub fn month(unix_ms: u64) -> String {
    day(unix_ms)[..7].to_string()
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
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }
}

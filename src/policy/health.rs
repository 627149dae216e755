//! A deployment's recent health, as one colo sees it: the circuit breaker that skips a
//! deployment that keeps failing, and the time to first byte the `latency` strategy
//! orders by. Plain data with the clock passed in; the shell keeps one per deployment in
//! the colo's cache.

use crate::config::HealthLimits;
use crate::util::valueread::{At, Fields, FromValue};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Times (Unix ms) of recent failures, oldest first.
    pub failures: Vec<u64>,
    /// Skipped until then.
    pub open_until: Option<u64>,
    /// A single probe is in flight until then: other requests keep skipping.
    pub probe_until: Option<u64>,
    /// Smoothed time to first byte of successful calls.
    pub ttfb_ms: Option<u64>,
    /// When the breaker last changed (Unix ms): of two views, the later one wins.
    pub changed_ms: Option<u64>,
}

impl FromValue for Health {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(Health {
            failures: f.req("failures")?,
            open_until: f.opt("open_until")?,
            probe_until: f.opt("probe_until")?,
            ttfb_ms: f.opt("ttfb_ms")?,
            changed_ms: f.opt("changed_ms")?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Healthy: try it.
    Try,
    /// After its cool-down: try it, as the one probe.
    Probe,
    /// Tripped: skip it.
    Skip,
}

impl Health {
    /// Whether a request may try this deployment now. A `Probe` answer claims the probe,
    /// so concurrent requests in the same isolate get `Skip` until it reports back (or
    /// until `probe_timeout_ms`, in case it never does).
    pub fn admit(&mut self, now: u64, probe_timeout_ms: u64) -> Admission {
        match self.open_until {
            None => Admission::Try,
            Some(until) if now < until => Admission::Skip,
            Some(_) if self.probe_until.is_some_and(|p| now < p) => Admission::Skip,
            Some(_) => {
                self.probe_until = Some(now + probe_timeout_ms);
                self.changed_ms = Some(now);
                Admission::Probe
            }
        }
    }

    /// A success closes the breaker and feeds the latency estimate (weight 1/4 to the
    /// newest, so one slow answer does not swing the order).
    pub fn succeeded(&mut self, now: u64, ttfb_ms: u64) {
        if !self.failures.is_empty() || self.open_until.is_some() || self.probe_until.is_some() {
            self.changed_ms = Some(now);
        }
        self.failures.clear();
        self.open_until = None;
        self.probe_until = None;
        self.ttfb_ms = Some(match self.ttfb_ms {
            None => ttfb_ms,
            Some(old) => (old * 3 + ttfb_ms) / 4,
        });
    }

    /// A failure that counts against the deployment (one that made the gateway fall back).
    /// Whether this isolate's view changed after the colo's record: a record read back
    /// can be older than the view, which may have changed after the read was asked for, or
    /// whose report may still be on the way. On a tie the colo's record is the one to
    /// keep, for the latency the colo's other isolates measured.
    pub fn is_later_than(&self, colo: &Health) -> bool {
        self.changed_ms > colo.changed_ms
    }

    /// Whether this view differs enough from `shared` (what the colo was last told) to tell
    /// it again: any change to the breaker, or a latency that moved by more than a fifth
    /// (and at least 5 ms). Writing after every request cost a cache write per request,
    /// while the latency strategy only needs the rough figure.
    pub fn worth_sharing(&self, shared: &Health) -> bool {
        if (&self.failures, self.open_until, self.probe_until)
            != (&shared.failures, shared.open_until, shared.probe_until)
        {
            return true;
        }
        match (self.ttfb_ms, shared.ttfb_ms) {
            (Some(now), Some(then)) => now.abs_diff(then) > (then / 5).max(5),
            (now, then) => now != then,
        }
    }

    pub fn failed(&mut self, now: u64, limits: &HealthLimits) {
        self.changed_ms = Some(now);
        if self.open_until.is_some() {
            // The probe failed: another full cool-down.
            self.open_until = Some(now + limits.cooldown_ms);
            self.probe_until = None;
            return;
        }
        self.failures.retain(|t| now.saturating_sub(*t) < limits.window_ms);
        self.failures.push(now);
        if self.failures.len() >= limits.failure_threshold as usize {
            self.open_until = Some(now + limits.cooldown_ms);
            self.failures.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HealthLimits = HealthLimits { failure_threshold: 3, window_ms: 10_000, cooldown_ms: 5_000 };

    #[test]
    fn trips_after_the_threshold_within_the_window() {
        let mut h = Health::default();
        h.failed(0, &LIMITS);
        h.failed(11_000, &LIMITS);
        h.failed(12_000, &LIMITS);
        assert_eq!(h.admit(12_001, 1000), Admission::Try, "the first failure fell out of the window");
        h.failed(13_000, &LIMITS);
        assert_eq!(h.open_until, Some(18_000));
        assert_eq!(h.admit(17_999, 1000), Admission::Skip);
    }

    #[test]
    fn after_the_cool_down_a_single_probe() {
        let mut h = Health::default();
        for t in 0..3 {
            h.failed(t, &LIMITS);
        }
        assert_eq!(h.admit(5_002, 1_000), Admission::Probe);
        assert_eq!(h.admit(5_003, 1_000), Admission::Skip, "one probe at a time");
        assert_eq!(h.admit(6_003, 1_000), Admission::Probe, "a probe that never reported is replaced");
        h.succeeded(6_003, 80);
        assert_eq!(h.admit(6_004, 1_000), Admission::Try);
        assert_eq!((h.open_until, h.failures.len()), (None, 0));
    }

    #[test]
    fn a_failed_probe_opens_another_cool_down() {
        let mut h = Health::default();
        for t in 0..3 {
            h.failed(t, &LIMITS);
        }
        assert_eq!(h.admit(6_000, 1_000), Admission::Probe);
        h.failed(6_100, &LIMITS);
        assert_eq!(h.admit(6_200, 1_000), Admission::Skip);
        assert_eq!(h.open_until, Some(11_100));
        assert_eq!(h.admit(11_100, 1_000), Admission::Probe);
    }

    #[test]
    fn shares_breaker_changes_and_latency_drift_only() {
        let shared = Health { ttfb_ms: Some(100), ..Health::default() };
        let mut h = shared.clone();
        assert!(!h.worth_sharing(&shared));
        h.succeeded(2, 110);
        assert!(!h.worth_sharing(&shared), "a small drift stays local");
        h.succeeded(3, 400);
        assert!(h.worth_sharing(&shared), "a fifth or more is shared");
        let mut h = shared.clone();
        h.failed(1, &LIMITS);
        assert!(h.worth_sharing(&shared), "every breaker change is shared");
        let fast = Health { ttfb_ms: Some(2), ..Health::default() };
        let h = Health { ttfb_ms: Some(6), ..Health::default() };
        assert!(!h.worth_sharing(&fast), "below 5 ms, drift is noise");
        assert!(h.worth_sharing(&Health::default()), "the first latency is shared");
    }

    #[test]
    fn the_later_view_is_kept() {
        let mut local = Health::default();
        for t in 0..3 {
            local.failed(t, &LIMITS);
        }
        assert_eq!(local.admit(5_002, 1_000), Admission::Probe);
        local.succeeded(5_050, 40);
        // The colo still holds the open breaker this isolate reported before its probe.
        let colo = Health { open_until: Some(5_002), changed_ms: Some(2), ..Health::default() };
        assert!(local.is_later_than(&colo), "a record older than the view");
        let tripped = Health { open_until: Some(12_000), changed_ms: Some(7_000), ..Health::default() };
        assert!(!local.is_later_than(&tripped), "another isolate tripped it since");
        // Records written before the field existed, and latency-only successes, never
        // count as changes, so the colo's latency is adopted.
        let steady = Health { ttfb_ms: Some(30), ..Health::default() };
        let mut mine = Health::default();
        mine.succeeded(9_000, 90);
        assert_eq!(mine.changed_ms, None);
        assert!(!mine.is_later_than(&steady));
    }

    #[test]
    fn latency_is_smoothed() {
        let mut h = Health::default();
        h.succeeded(1, 100);
        assert_eq!(h.ttfb_ms, Some(100));
        h.succeeded(2, 500);
        assert_eq!(h.ttfb_ms, Some(200));
        let back = Health::read(&serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}

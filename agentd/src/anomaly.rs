//! Anomalies: what in the record a human should look at. Each is written as an
//! `anomaly` event (listed by `jitc audit --anomalies`) and, if the policy names an
//! `alert_command`, announced through it (e.g. `notify-send`).
//!
//! - a request for a canary secret (a decoy: refused, looking like any refusal);
//! - a request outside the policy's `working_hours`;
//! - the first use of a secret by an executable never seen with it before;
//! - a burst: more than the policy's `burst_per_minute` leases of one secret in a minute;
//! - repeated denials of one executable, or repeated wrong passphrases.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Denials from one executable within this window that count as "repeated".
const DENIAL_WINDOW: Duration = Duration::from_secs(600);
pub const DENIALS_BEFORE_ALERT: usize = 3;
/// Consecutive wrong passphrases that count as "repeated".
pub const WRONG_PASSPHRASES_BEFORE_ALERT: u32 = 3;

/// The most keys a window keeps before it forgets the quiet ones.
const MAX_KEYS: usize = 4096;

/// Events per key (a secret, an executable) in a sliding window. Only the newest
/// `limit + 1` times of a key are kept — that is all it takes to tell that more than
/// `limit` fell within the window — so memory stays small at any rate.
#[derive(Debug)]
struct Window {
    span: Duration,
    /// Recent times, and when the key last passed its limit.
    keys: HashMap<String, (VecDeque<Instant>, Option<Instant>)>,
}

impl Window {
    fn new(span: Duration) -> Window {
        Window {
            span,
            keys: HashMap::new(),
        }
    }

    /// Counts one event of `key`; how many fell within the window, up to `limit + 1`.
    fn push(&mut self, key: &str, limit: usize, now: Instant) -> usize {
        self.entry(key, limit, now).0.len()
    }

    /// Counts one event of `key`; `Some(limit + 1)` when that takes it past `limit`
    /// within the window, at most once per window.
    fn count(&mut self, key: &str, limit: usize, now: Instant) -> Option<usize> {
        let span = self.span;
        let (q, reported) = self.entry(key, limit, now);
        if q.len() <= limit || reported.is_some_and(|t| now.duration_since(t) < span) {
            return None;
        }
        *reported = Some(now);
        Some(q.len())
    }

    /// `key`'s times with `now` counted (the newest `limit + 1`), and when it last
    /// passed its limit.
    fn entry(
        &mut self,
        key: &str,
        limit: usize,
        now: Instant,
    ) -> (&mut VecDeque<Instant>, &mut Option<Instant>) {
        let span = self.span;
        if self.keys.len() >= MAX_KEYS {
            self.keys
                .retain(|_, (q, _)| q.back().is_some_and(|t| now.duration_since(*t) <= span));
            if self.keys.len() >= MAX_KEYS {
                // Thousands of keys active at once: start counting afresh rather than
                // grow (the events themselves are all in the audit log).
                tracing::warn!(keys = self.keys.len(), "anomaly counters full; reset");
                self.keys.clear();
            }
        }
        let (q, reported) = self.keys.entry(key.to_owned()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) > span) {
            q.pop_front();
        }
        q.push_back(now);
        while q.len() > limit + 1 {
            q.pop_front();
        }
        (q, reported)
    }
}

/// The counters behind the burst and denial anomalies, and the limits on how often
/// the same thing is reported.
#[derive(Debug)]
pub struct Counters {
    grants: Window,
    denials: Window,
    /// Reports of the same kind and subject (at most one per window).
    reports: Window,
    /// Alert commands started (at most `ALERTS_PER_MINUTE`).
    alerts: Window,
}

/// A repeated report of the same kind about the same subject is held back this long.
const REPORT_WINDOW: Duration = Duration::from_secs(600);
/// At most this many alert commands a minute; the anomalies themselves are all recorded.
pub const ALERTS_PER_MINUTE: usize = 10;

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            grants: Window::new(Duration::from_secs(60)),
            denials: Window::new(DENIAL_WINDOW),
            reports: Window::new(REPORT_WINDOW),
            alerts: Window::new(Duration::from_secs(60)),
        }
    }
}

impl Counters {
    /// Counts a grant of `secret`; `true` when it makes more than `limit` in a minute
    /// (said once a minute at most).
    pub fn grant(&mut self, secret: &str, limit: u32, now: Instant) -> bool {
        self.grants.count(secret, limit as usize, now).is_some()
    }

    /// Whether `kind` about `subject` was not reported in the last 10 minutes (and now
    /// counts as reported).
    pub fn first_in_a_while(&mut self, kind: &str, subject: &str, now: Instant) -> bool {
        self.reports
            .count(&format!("{kind}\0{subject}"), 0, now)
            .is_some()
    }

    /// Whether another alert command may start now for an anomaly of `kind` (at most
    /// `ALERTS_PER_MINUTE` of each kind: a flood of one kind does not silence another).
    pub fn alert_allowed(&mut self, kind: &str, now: Instant) -> bool {
        self.alerts.push(kind, ALERTS_PER_MINUTE, now) <= ALERTS_PER_MINUTE
    }

    /// Counts a denial for `who`; `true` when it reaches `DENIALS_BEFORE_ALERT` within
    /// the window (said once per window at most).
    pub fn denial(&mut self, who: &str, now: Instant) -> bool {
        self.denials
            .count(who, DENIALS_BEFORE_ALERT - 1, now)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_and_denials() {
        let mut c = Counters::default();
        let t = Instant::now();
        let ms = |i: u64| t + Duration::from_millis(i);
        for i in 0..5 {
            assert!(!c.grant("s", 5, ms(i)));
        }
        assert!(c.grant("s", 5, ms(10)));
        assert!(!c.grant("s", 5, ms(11)), "once a minute");
        assert!(!c.grant("other", 5, t));
        // A minute after the report, a burst is reported again.
        let later = t + Duration::from_secs(61);
        for i in 0..5 {
            assert!(!c.grant("s", 5, later + Duration::from_millis(i)));
        }
        assert!(c.grant("s", 5, later + Duration::from_millis(10)));
        // Slow and steady is no burst.
        for i in 0..100 {
            assert!(!c.grant("steady", 5, t + Duration::from_secs(15 * i)));
        }
        assert!(!c.denial("curl", t));
        assert!(!c.denial("curl", t));
        assert!(c.denial("curl", t));
        assert!(!c.denial("curl", t));
    }

    #[test]
    fn memory_stays_bounded_at_any_rate() {
        let mut c = Counters::default();
        let t = Instant::now();
        for i in 0..100_000 {
            c.grant("s", 30, t + Duration::from_micros(i));
            c.denial(&format!("exe-{i}"), t + Duration::from_micros(i));
        }
        assert!(c.grants.keys["s"].0.len() <= 31);
        assert!(c.denials.keys.len() <= MAX_KEYS + 1);
    }
}

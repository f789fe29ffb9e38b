//! Anomalies: what in the record a human should look at. Each is written as an
//! `anomaly` event (listed by `jitc audit --anomalies`) and, if the policy names an
//! `alert_command`, announced through it (e.g. `notify-send`).
//!
//! - a request for a canary secret (a decoy: refused, looking like any refusal);
//! - a request outside the policy's `working_hours`;
//! - the first use of a secret by an executable never seen with it before;
//! - a burst: more than the policy's `burst_per_minute` leases of one secret in a minute;
//! - repeated denials of one executable, or repeated wrong passphrases;
//! - a request approved from inside the tree that made it, a log that does not verify,
//!   a vault made where another had been; and what the audit writer finds (an unclean
//!   shutdown before it, a flood of rotations).
//!
//! Every rule — when something is an anomaly, and what is said about it — is here, in
//! `Detector`; the agent raises what it returns (`Agent::raise`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jitc_protocol::kinds::AnomalyKind;

use crate::policy::hours::WorkingHours;

/// An anomaly found: its kind, and what is said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub description: String,
}

impl Anomaly {
    pub fn new(kind: AnomalyKind, description: String) -> Anomaly {
        Anomaly { kind, description }
    }
}

const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Every rule that turns what happens into an anomaly, with the counters some need.
#[derive(Debug, Default)]
pub struct Detector {
    counters: Mutex<Counters>,
}

impl Detector {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request named a canary: always.
    pub fn canary(&self, canaries: &[String], who: &str, pid: u32) -> Anomaly {
        Anomaly::new(
            AnomalyKind::Canary,
            format!(
                "canary secret {} requested by {who} (pid {pid})",
                canaries.join(", ")
            ),
        )
    }

    /// A request for `secrets` at `day` (0 = Sunday) and `minute` of the day: outside
    /// `hours` (`text` as the policy wrote it), once in 10 minutes for the same secrets.
    pub fn outside_hours(
        &self,
        secrets: &[String],
        (text, hours): (&str, &WorkingHours),
        (day, minute): (u8, u32),
    ) -> Option<Anomaly> {
        if hours.contains(day, minute)
            || !self.counters().first_in_a_while(
                AnomalyKind::OutsideWorkingHours.as_str(),
                &secrets.join(","),
                Instant::now(),
            )
        {
            return None;
        }
        Some(Anomaly::new(
            AnomalyKind::OutsideWorkingHours,
            format!(
                "{} requested at {:02}:{:02} on {}, outside working hours ({text})",
                secrets.join(", "),
                minute / 60,
                minute % 60,
                DAY_NAMES[usize::from(day % 7)]
            ),
        ))
    }

    /// `secret` went to `exe` for the first time (the vault remembers what it has seen).
    pub fn first_use(&self, secret: &str, exe: &str) -> Anomaly {
        Anomaly::new(
            AnomalyKind::NewExecutable,
            format!("first use of '{secret}' by {exe}"),
        )
    }

    /// A grant of `secret`: more than `limit` in a minute is a burst (said once a
    /// minute at most).
    pub fn granted(&self, secret: &str, limit: u32) -> Option<Anomaly> {
        self.counters()
            .grant(secret, limit, Instant::now())
            .then(|| {
                Anomaly::new(
                    AnomalyKind::Burst,
                    format!("more than {limit} leases of '{secret}' within a minute"),
                )
            })
    }

    /// A refusal for `who`: `DENIALS_BEFORE_ALERT` within 10 minutes are an anomaly.
    pub fn denied(&self, who: &str) -> Option<Anomaly> {
        self.counters().denial(who, Instant::now()).then(|| {
            Anomaly::new(
                AnomalyKind::RepeatedDenials,
                format!(
                    "{DENIALS_BEFORE_ALERT} leases refused to requests from {who} within 10 minutes"
                ),
            )
        })
    }

    /// The `failures`-th wrong passphrase in a row: said at the threshold, then at every
    /// tenth of a run that goes on.
    pub fn wrong_passphrase(&self, failures: u32) -> Option<Anomaly> {
        let n = WRONG_PASSPHRASES_BEFORE_ALERT;
        (failures == n || (failures > n && failures.is_multiple_of(10))).then(|| {
            Anomaly::new(
                AnomalyKind::WrongPassphrases,
                format!("{failures} wrong passphrases in a row"),
            )
        })
    }

    /// Request `id` approved by `approver` from inside the tree that made it (`under`).
    pub fn self_approval(&self, id: u64, approver: u32, under: u32) -> Anomaly {
        Anomaly::new(
            AnomalyKind::SelfApproval,
            format!(
                "request {id} was approved from inside the process tree that made it (pid {approver}, under pid {under}); refused"
            ),
        )
    }

    /// Request `id` approved from inside sandbox `sandbox` (by pid `approver`).
    pub fn approval_from_sandbox(&self, id: u64, approver: u32, sandbox: u64) -> Anomaly {
        Anomaly::new(
            AnomalyKind::SelfApproval,
            format!(
                "an approval of request {id} came from inside sandbox {sandbox} (pid {approver}); refused"
            ),
        )
    }

    /// The log did not verify at unlock.
    pub fn tampered(&self, problem: &str) -> Anomaly {
        Anomaly::new(
            AnomalyKind::AuditLogTampered,
            format!("the audit log does not verify: {problem}"),
        )
    }

    /// The vault's journal ended in bytes no crash explains (see `journal::torn_tail`).
    pub fn journal_tail(&self, said: &str) -> Anomaly {
        Anomaly::new(AnomalyKind::UncleanShutdown, said.to_owned())
    }

    /// A vault was made where an earlier one had been (`traces`: what it left).
    pub fn vault_replaced(&self, traces: &[String]) -> Anomaly {
        Anomaly::new(
            AnomalyKind::VaultReplaced,
            format!(
                "a new vault was made where an earlier one had been ({}) — if you did not run 'jitc init', find the old vault and do not add secrets to this one",
                traces.join("; ")
            ),
        )
    }

    /// Whether another alert command may start now for `kind` (see `Counters`).
    pub fn alert_allowed(&self, kind: AnomalyKind) -> bool {
        self.counters().alert_allowed(kind.as_str(), Instant::now())
    }
}

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
struct Counters {
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
    fn grant(&mut self, secret: &str, limit: u32, now: Instant) -> bool {
        self.grants.count(secret, limit as usize, now).is_some()
    }

    /// Whether `kind` about `subject` was not reported in the last 10 minutes (and now
    /// counts as reported).
    fn first_in_a_while(&mut self, kind: &str, subject: &str, now: Instant) -> bool {
        self.reports
            .count(&format!("{kind}\0{subject}"), 0, now)
            .is_some()
    }

    /// Whether another alert command may start now for an anomaly of `kind` (at most
    /// `ALERTS_PER_MINUTE` of each kind: a flood of one kind does not silence another).
    fn alert_allowed(&mut self, kind: &str, now: Instant) -> bool {
        self.alerts.push(kind, ALERTS_PER_MINUTE, now) <= ALERTS_PER_MINUTE
    }

    /// Counts a denial for `who`; `true` when it reaches `DENIALS_BEFORE_ALERT` within
    /// the window (said once per window at most).
    fn denial(&mut self, who: &str, now: Instant) -> bool {
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

//! Requests waiting for a human: the table behind `jitc pending`, `approve` and `deny`,
//! and the memory that lets `once-per-task` ask once per task.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jitc_protocol::PendingInfo;
use tokio::sync::oneshot;

#[derive(Debug)]
pub enum Verdict {
    /// By whom (for the record).
    Approved(String),
    /// Why (told to the requester), and by whom (for the record only).
    Denied(String, Option<String>),
}

/// What an approval covers under `once-per-task`: the same task, the same secrets, the
/// same profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemoryKey {
    task: Option<String>,
    secrets: Vec<String>,
    profile: Option<String>,
}

impl MemoryKey {
    pub fn new(task: Option<&str>, secrets: &[String], profile: Option<&str>) -> MemoryKey {
        let mut secrets = secrets.to_vec();
        secrets.sort();
        secrets.dedup();
        MemoryKey {
            task: task.map(str::to_owned),
            secrets,
            profile: profile.map(str::to_owned),
        }
    }
}

#[derive(Debug)]
struct Waiting {
    info: PendingInfo,
    /// Boot-time deadline.
    deadline: Duration,
    /// Processes whose descendants may not approve this request: the requester, and the
    /// ancestor that gave it its profile (the coding agent itself).
    requesters: Vec<u32>,
    answer: Option<oneshot::Sender<Verdict>>,
}

#[derive(Debug, Default)]
pub struct Approvals {
    next_id: u64,
    waiting: BTreeMap<u64, Waiting>,
    /// Boot-time instant until which an approval is remembered.
    remembered: HashMap<MemoryKey, Duration>,
}

impl Approvals {
    /// Adds a waiting request; its id is in `info.id` on return.
    pub fn register(
        &mut self,
        mut info: PendingInfo,
        requesters: Vec<u32>,
        deadline: Duration,
    ) -> (u64, oneshot::Receiver<Verdict>) {
        self.next_id += 1;
        let id = self.next_id;
        info.id = id;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(
            id,
            Waiting {
                info,
                deadline,
                requesters,
                answer: Some(tx),
            },
        );
        (id, rx)
    }

    /// Forgets a request (answered, timed out, or its requester went away).
    pub fn remove(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    pub fn requesters(&self, id: u64) -> Option<&[u32]> {
        self.waiting.get(&id).map(|w| w.requesters.as_slice())
    }

    /// Delivers a verdict; false if nothing waits under that id any more.
    pub fn answer(&mut self, id: u64, verdict: Verdict) -> bool {
        match self.waiting.remove(&id).and_then(|mut w| w.answer.take()) {
            Some(tx) => tx.send(verdict).is_ok(),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn list(&self, now: Duration) -> Vec<PendingInfo> {
        self.waiting
            .values()
            .map(|w| PendingInfo {
                expires_in_secs: w.deadline.saturating_sub(now).as_secs(),
                ..w.info.clone()
            })
            .collect()
    }

    /// Whether an approval of `key` is still remembered at boot-time `now`.
    pub fn is_remembered(&mut self, key: &MemoryKey, now: Duration) -> bool {
        self.remembered.retain(|_, until| *until > now);
        self.remembered.contains_key(key)
    }

    pub fn remember(&mut self, key: MemoryKey, until: Duration) {
        self.remembered.insert(key, until);
    }

    /// Forgets every remembered approval (the vault was locked).
    pub fn forget_all(&mut self) {
        self.remembered.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PendingInfo {
        PendingInfo {
            id: 0,
            scope: jitc_protocol::Scope {
                secrets: vec!["a".into()],
                task: None,
                command: "/bin/true".into(),
                argv: vec![],
                pid: 9,
                chain: vec![],
                profile: None,
            },
            requested: 0,
            expires_in_secs: 0,
        }
    }

    #[test]
    fn register_answer_and_remember() {
        let mut a = Approvals::default();
        let (id, mut rx) = a.register(info(), vec![9], Duration::from_secs(60));
        assert_eq!(a.list(Duration::from_secs(10))[0].expires_in_secs, 50);
        assert_eq!(a.requesters(id), Some(&[9][..]));
        assert!(a.answer(id, Verdict::Approved("me".into())));
        assert!(matches!(rx.try_recv(), Ok(Verdict::Approved(_))));
        assert!(
            !a.answer(id, Verdict::Approved("me".into())),
            "answered once"
        );
        let key = MemoryKey::new(Some("t"), &["b".into(), "a".into()], None);
        a.remember(key.clone(), Duration::from_secs(100));
        let same = MemoryKey::new(Some("t"), &["a".into(), "b".into()], None);
        assert!(a.is_remembered(&same, Duration::from_secs(99)));
        assert!(!a.is_remembered(
            &MemoryKey::new(Some("u"), &["a".into()], None),
            Duration::ZERO
        ));
        assert!(!a.is_remembered(&same, Duration::from_secs(100)), "expired");
    }
}

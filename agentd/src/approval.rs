//! Requests waiting for a human: the table behind `jitc pending`, `approve` and `deny`,
//! the memory that lets `once-per-task` ask once per task, and `ask`, the wait itself —
//! an approver program asked with a prompt that cannot be forged, `jitc approve` from
//! a terminal, whichever answers first, or the timeout.

use jitc_protocol::kinds::EventKind;
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jitc_protocol::display::{
    MAX_SHOWN_ARGV, MAX_SHOWN_CHAIN, command_line, process_chain, visible,
};
use jitc_protocol::{ErrorCode, PendingInfo, Response, Scope};
use tokio::sync::oneshot;

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::clock::boot_now;
use crate::error::Refusal;
use crate::policy::Defaults;

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
    /// The executable approved: an approval for `psql` is not one for `curl`.
    command: String,
}

impl MemoryKey {
    pub fn new(
        task: Option<&str>,
        secrets: &[String],
        profile: Option<&str>,
        command: &str,
    ) -> MemoryKey {
        let mut secrets = secrets.to_vec();
        secrets.sort();
        secrets.dedup();
        MemoryKey {
            task: task.map(str::to_owned),
            secrets,
            profile: profile.map(str::to_owned),
            command: command.to_owned(),
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
    /// The requester's uid (waiting requests are counted per uid).
    uid: u32,
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
        uid: u32,
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
                uid,
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

    /// The id of the request that has waited longest.
    pub fn first_id(&self) -> Option<u64> {
        self.waiting.keys().next().copied()
    }

    /// Waiting requests with ids above `after`, as many as fit in about `budget` bytes
    /// of reply (at least one); and whether more follow.
    pub fn page(&self, after: u64, budget: usize, now: Duration) -> (Vec<PendingInfo>, bool) {
        crate::leases::page(
            self.waiting
                .range(after.saturating_add(1)..)
                .map(|(_, w)| PendingInfo {
                    expires_in_secs: w.deadline.saturating_sub(now).as_secs(),
                    ..w.info.clone()
                }),
            budget,
        )
    }

    /// Requests of `uid` waiting now.
    pub fn count_for(&self, uid: u32) -> usize {
        self.waiting.values().filter(|w| w.uid == uid).count()
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

/// Removes a waiting request from `jitc pending` however the wait ends (answered,
/// timed out, or the requester hung up and the future was dropped).
struct Registered<'a> {
    agent: &'a Agent,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.agent.approvals_mut().remove(self.id);
    }
}

/// What a human is asked to approve.
pub struct Ask<'a> {
    /// `lease`, or the change to the vault in words.
    pub action: String,
    pub scope: Scope,
    /// Processes none of whose descendants may approve (see `Waiting::requesters`).
    pub requesters: Vec<u32>,
    pub defaults: &'a Defaults,
    /// What every record about the request carries.
    pub base: &'a Event,
}

/// The prompt an approver program gets: who asks, for what, to do what — everything a
/// requester supplied shown escaped, the command line quoted and cut.
pub fn prompt(id: u64, action: &str, scope: &Scope) -> String {
    let mut text = if action == "lease" {
        format!(
            "jitc: allow this command to use secrets?\n\nprogram:  {}\ncommand:  {}\n",
            visible(&scope.command),
            command_line(&scope.argv, MAX_SHOWN_ARGV)
        )
    } else {
        format!(
            "jitc: allow this change to the vault?\n\nchange:   {}\n",
            visible(action)
        )
    };
    for w in &scope.warnings {
        text.push_str(&format!("WARNING:  {}\n", visible(w)));
    }
    text.push_str(&format!(
        "secrets:  {}\ntask:     {}\nasked by: {}\nprofile:  {}\n\n(request {id}; or run 'jitc approve {id}' / 'jitc deny {id}')",
        scope.secrets.join(", "),
        scope.task.as_deref().map(visible).unwrap_or("(none given)".into()),
        process_chain(&scope.chain, MAX_SHOWN_CHAIN),
        match (scope.sandbox, scope.profile.as_deref()) {
            (Some(id), Some(p)) => format!("{} (from inside sandbox {id})", visible(p)),
            (_, Some(p)) => visible(p).into_owned(),
            _ => "(none)".into(),
        },
    ));
    text
}

/// Puts the request in `jitc pending`, tells the requester it waits, asks the approver
/// program if there is one, and waits for the first answer or the timeout. Every step is
/// recorded with `ask.base`; the refusal is the requester's answer.
pub async fn ask(agent: &Agent, session: &mut Session, ask: Ask<'_>) -> Result<(), Refusal> {
    let defaults = ask.defaults;
    let timeout = defaults.approval_timeout;
    let uid = session.peer.uid;
    if agent.approvals_mut().count_for(uid) >= defaults.max_pending as usize {
        return Err(Refusal::busy(format!(
            "{} requests are waiting for approval already (the policy's max_pending); answer or deny some with 'jitc pending', then try again",
            defaults.max_pending
        )));
    }
    let info = PendingInfo {
        id: 0,
        action: ask.action.clone(),
        scope: ask.scope.clone(),
        requested: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        expires_in_secs: timeout.as_secs(),
    };
    let (id, answer) =
        agent
            .approvals_mut()
            .register(info, ask.requesters, uid, boot_now() + timeout);
    let _registered = Registered { agent, id };
    let approval_event = |kind: EventKind, reason: Option<String>| Event {
        approval: Some(id),
        reason,
        ..Event::new(kind).merge(ask.base)
    };
    let approver = defaults.approver.clone();
    let mut approver_failed = None;
    let mut asked = approver.as_ref().and_then(|argv| {
        let mut c = crate::socket::child_command(&argv[0]);
        c.args(&argv[1..])
            .arg(prompt(id, &ask.action, &ask.scope))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match c.spawn() {
            Ok(child) => {
                agent.set_approver_error(None);
                Some(child)
            }
            Err(e) => {
                let why = format!(
                    "the approver {} cannot be started ({e}); requests wait for 'jitc approve'",
                    visible(&argv[0])
                );
                tracing::warn!(approver = %argv[0], error = %e, "cannot run the approver");
                agent
                    .audit()
                    .record_later(Event::new(EventKind::PolicyError).reason(why.clone()));
                agent.set_approver_error(Some(why));
                approver_failed = Some(format!("{} could not be started ({e})", argv[0]));
                None
            }
        }
    });
    let _ = session
        .pushes
        .send(Response::Waiting(jitc_protocol::Waiting {
            id,
            approver: asked
                .as_ref()
                .and(approver.as_ref())
                .and_then(|a| a.first().cloned()),
            timeout_secs: timeout.as_secs(),
            approver_failed,
        }));
    tracing::info!(
        approval = id,
        action = %ask.action,
        pid = session.peer.pid,
        "approval requested"
    );
    agent
        .audit()
        .record_later(approval_event(EventKind::ApprovalRequested, None));
    let approver_name = approver.as_ref().map_or("the approver", |a| a[0].as_str());
    let approver_answer = async {
        match asked.as_mut() {
            Some(child) => child.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    let verdict = tokio::select! {
        v = answer => v.unwrap_or_else(|_| Verdict::Denied("the request was withdrawn".into(), None)),
        status = approver_answer => match status {
            Some(s) if s.success() => Verdict::Approved(format!("approved by {approver_name}")),
            _ => Verdict::Denied(format!("{approver_name} said no"), None),
        },
        () = tokio::time::sleep(timeout) => {
            tracing::warn!(approval = id, "approval timed out");
            agent.audit().record_later(approval_event(EventKind::ApprovalTimedOut, None));
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "approval timed out after {}; while a request waits, list requests with 'jitc pending' and approve with 'jitc approve ID'",
                    humantime::format_duration(timeout)
                ),
            ));
        }
    };
    // The approver, if still running, is killed as `asked` drops.
    match verdict {
        Verdict::Approved(by) => {
            tracing::info!(approval = id, "approval granted");
            // On record before it counts (and before once-per-task remembers it).
            agent
                .audit()
                .record(approval_event(EventKind::ApprovalGranted, Some(by)))
                .await
        }
        Verdict::Denied(why, by) => {
            tracing::warn!(approval = id, reason = %why, "approval denied");
            let recorded = match by {
                Some(by) => format!("{why} {by}"),
                None => why.clone(),
            };
            agent
                .audit()
                .record_later(approval_event(EventKind::ApprovalDenied, Some(recorded)));
            Err(Refusal::new(
                ErrorCode::Refused,
                format!("approval denied: {why}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PendingInfo {
        PendingInfo {
            id: 0,
            action: "lease".into(),
            scope: Scope {
                secrets: vec!["a".into()],
                task: None,
                command: "/bin/true".into(),
                argv: vec![],
                pid: 9,
                chain: vec![],
                profile: None,
                sandbox: None,
                warnings: vec![],
            },
            requested: 0,
            expires_in_secs: 0,
        }
    }

    #[test]
    fn register_answer_and_remember() {
        let mut a = Approvals::default();
        let (id, mut rx) = a.register(info(), vec![9], 1000, Duration::from_secs(60));
        let (page, more) = a.page(0, 1 << 20, Duration::from_secs(10));
        assert_eq!((page[0].expires_in_secs, more), (50, false));
        assert_eq!(a.count_for(1000), 1);
        assert_eq!(a.requesters(id), Some(&[9][..]));
        assert!(a.answer(id, Verdict::Approved("me".into())));
        assert!(matches!(rx.try_recv(), Ok(Verdict::Approved(_))));
        assert!(
            !a.answer(id, Verdict::Approved("me".into())),
            "answered once"
        );
        let key = MemoryKey::new(Some("t"), &["b".into(), "a".into()], None, "/usr/bin/psql");
        a.remember(key.clone(), Duration::from_secs(100));
        let same = MemoryKey::new(Some("t"), &["a".into(), "b".into()], None, "/usr/bin/psql");
        assert!(a.is_remembered(&same, Duration::from_secs(99)));
        assert!(!a.is_remembered(
            &MemoryKey::new(Some("u"), &["a".into()], None, "/usr/bin/psql"),
            Duration::ZERO
        ));
        let other_command =
            MemoryKey::new(Some("t"), &["a".into(), "b".into()], None, "/usr/bin/curl");
        assert!(!a.is_remembered(&other_command, Duration::ZERO));
        assert!(!a.is_remembered(&same, Duration::from_secs(100)), "expired");
    }

    #[test]
    fn a_long_chain_is_cut_with_a_count() {
        let mut scope = info().scope;
        scope.chain = (0..9)
            .map(|i| jitc_protocol::ProcessInfo {
                pid: 100 + i,
                exe: None,
                argv: vec![format!("p{i}")],
            })
            .collect();
        let text = prompt(1, "lease", &scope);
        assert!(text.contains("p5 (105) ← … (3 more)\n"), "{text}");
    }
}

//! The audit trail: every decision the agent makes, as JSON Lines in
//! `$XDG_STATE_HOME/jitc/audit.log`, on disk before it takes effect.
//!
//! One writer thread owns the file. Requests hand it events and (for decisions) wait
//! until their line is written and `fdatasync`ed; events that arrive while a sync is
//! under way are written and synced together (group commit), so durability costs one
//! sync per batch, not per request. Records of what has already happened (a lease
//! released, an anomaly) do not wake the writer: they go with the next decision, or
//! within `LINGER`. If a line cannot be written, the request it belongs to is refused
//! and `jitc status` shows the audit as failing.

pub mod chain;
pub mod conceal;
mod event;
pub mod sidecar;
#[cfg(test)]
mod tests;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jitc_protocol::AuditState;
use tokio::sync::{Notify, oneshot};

use crate::error::Refusal;
use chain::{Key, Tag};
pub use conceal::{Concealed, Needles, Reach, conceal, cut_tail, haystack, nul_joined, occurs};
pub use event::{BackendRecord, Event, HttpRecord, PeerJson};
pub use event::{LOCKED_WITHHELD, VALUE_WITHHELD};
use writer::Writer;

pub use jitc_protocol::audit_files::{KEEP, files_of, rotated};

/// Records nobody waits for, kept to try again while the log cannot be written.
const MAX_RETRY: usize = 10_000;

/// The longest a record nobody waits for stays queued.
const LINGER: Duration = Duration::from_millis(50);

type Waiter = oneshot::Sender<Result<(), AuditError>>;

/// Why the audit log cannot be written (so nothing that must be recorded may happen).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed: `action` names it ("write", "sync", "rotate", …).
    #[error("cannot {action} {} ({detail})", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the log is not open")]
    NotOpen,
    #[error("a new chain was asked for mid-batch")]
    NewChainMidBatch,
    /// A failed write left lines in the file that the agent disowned.
    #[error("a failed write left lines that could not be removed ({0}); restart the agent")]
    Unremovable(String),
    /// The writer task ended (a bug made it panic).
    #[error("the audit writer stopped (an internal error; see the agent's log); restart the agent")]
    WriterStopped,
}

impl AuditError {
    pub(crate) fn io(action: &'static str, path: &Path, e: impl std::fmt::Display) -> AuditError {
        AuditError::Io {
            action,
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    }
}

pub(crate) enum Job {
    Record(Box<Event>, Option<Waiter>),
    Key(Option<Key>),
    /// Answered once everything queued before it is written.
    Flush(Waiter),
    /// Start a new chain (see `Audit::new_chain`).
    NewChain(oneshot::Sender<Result<Option<PathBuf>, AuditError>>),
}

/// Jobs for the writer. Only `urgent` ones (someone waits) wake it at once.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    urgent: bool,
    /// A batch is being written (its records are not on disk yet).
    busy: bool,
}

#[derive(Default)]
struct Jobs {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Jobs({} queued)", self.lock().jobs.len())
    }
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts records that could not be written back at the front, to go with the next
    /// batch; past `MAX_RETRY` the oldest are dropped (and said so).
    fn requeue(&self, mut retry: Vec<Job>) {
        let mut q = self.lock();
        q.busy = false;
        if retry.is_empty() {
            return;
        }
        let dropped = retry.len().saturating_sub(MAX_RETRY);
        if dropped > 0 {
            tracing::error!(
                dropped,
                "audit records dropped: the log has been failing too long"
            );
            retry.drain(..dropped);
        }
        retry.append(&mut q.jobs);
        q.jobs = retry;
    }

    fn push(&self, job: Job, urgent: bool) {
        let mut q = self.lock();
        let first = q.jobs.is_empty();
        q.jobs.push(job);
        if urgent && !q.urgent {
            q.urgent = true;
            self.ready.notify_one();
        } else if first {
            // The writer starts the clock on this one.
            self.ready.notify_one();
        }
    }

    /// The next batch: everything queued, once something urgent is among it or the
    /// oldest has waited `LINGER`.
    async fn next_batch(&self) -> Vec<Job> {
        let mut deadline = None;
        loop {
            {
                let mut q = self.lock();
                let due = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                if q.urgent || (due && !q.jobs.is_empty()) {
                    q.urgent = false;
                    q.busy = true;
                    return std::mem::take(&mut q.jobs);
                }
                if q.jobs.is_empty() {
                    deadline = None;
                } else if deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + LINGER);
                }
            }
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, self.ready.notified()).await;
                }
                None => self.ready.notified().await,
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    error: Option<AuditError>,
    last_seq: u64,
    last_keyed: Option<(u64, Tag)>,
    tampered: Option<String>,
    /// Anomalies the writer found (an unclean shutdown before it, a rotation flood),
    /// for the agent to raise.
    alerts: Vec<(jitc_protocol::kinds::AnomalyKind, String)>,
    /// Whether the writer has written `audit.checkpoint` (then the vault remembers to
    /// expect it).
    sidecar_written: bool,
    /// How much history rotation keeps (the policy's, once loaded).
    retention: Retention,
}

/// How much of the log's history is kept (`[defaults] audit_keep`, `audit_keep_days`):
/// at each rotation the oldest files go while all of them together are larger than
/// `bytes`, or older than `days`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub bytes: u64,
    pub days: Option<u32>,
}

impl Retention {
    /// 1 GiB of compressed files: at a lease a minute all day every day, years.
    pub const DEFAULT_BYTES: u64 = 1 << 30;

    /// As a policy would say it (`audit_keep 1 GiB, audit_keep_days 90`).
    pub fn describe(&self) -> String {
        let mut s = format!("audit_keep {}", human_bytes(self.bytes));
        if let Some(d) = self.days {
            s.push_str(&format!(", audit_keep_days {d}"));
        }
        s
    }
}

/// `1 GiB`, `300 MiB`, `512 B`: the largest binary unit that divides `n`.
pub fn human_bytes(n: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} B")
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            bytes: Self::DEFAULT_BYTES,
            days: None,
        }
    }
}

/// The handle requests use to record events.
#[derive(Debug)]
pub struct Audit {
    jobs: Jobs,
    shared: Arc<Mutex<Shared>>,
    /// Held while the writer renames files (rotation, a new chain), and while a reader
    /// opens them: a reader sees the files all before or all after.
    renaming: Arc<Mutex<()>>,
    path: PathBuf,
    /// Taken by `run_writer`.
    writer: Mutex<Option<Writer>>,
    /// Rung when the writer has an anomaly to raise (see `take_alerts`).
    alerts: Arc<Notify>,
    /// Set when the writer task died: nothing can be recorded any more.
    dead: std::sync::atomic::AtomicBool,
}

/// Options of the writer.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// `fdatasync` before a decision takes effect (off only to measure its cost).
    pub sync: bool,
    /// Rotate past this size.
    pub max_bytes: u64,
}

impl Audit {
    /// Opens (or creates, 0600) the log and resumes its chain; `run_writer` writes.
    pub fn start(config: AuditConfig) -> Audit {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let renaming = Arc::new(Mutex::new(()));
        let path = config.path.clone();
        let alerts = Arc::new(Notify::new());
        let writer = Writer::open(config, shared.clone(), renaming.clone(), alerts.clone());
        Audit {
            jobs: Jobs::default(),
            shared,
            renaming,
            path,
            writer: Mutex::new(Some(writer)),
            alerts,
            dead: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Waits for anomalies the writer found, and takes them.
    pub async fn take_alerts(&self) -> Vec<(jitc_protocol::kinds::AnomalyKind, String)> {
        loop {
            let found = std::mem::take(&mut self.shared().alerts);
            if !found.is_empty() {
                return found;
            }
            self.alerts.notified().await;
        }
    }

    /// Whether `audit.checkpoint` has been written by this agent.
    pub fn sidecar_written(&self) -> bool {
        self.shared().sidecar_written
    }

    /// The sidecar's path.
    pub fn sidecar_path(&self) -> PathBuf {
        sidecar::path_for(&self.path)
    }

    /// Writes what is queued, batch after batch, for as long as the agent runs. It is
    /// a task on the agent's runtime, not a thread of its own: a request and the line
    /// that records it are handed over without waking another thread. Only the
    /// `fdatasync`, once per batch, runs on a blocking thread.
    pub async fn run_writer(&self) {
        let taken = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut writer) = taken else { return };
        loop {
            let mut batch = self.jobs.next_batch().await;
            let mut retry = Vec::new();
            // What came before a new chain is written to the old one.
            while let Some(at) = batch.iter().position(|j| matches!(j, Job::NewChain(_))) {
                let rest = batch.split_off(at + 1);
                if let Some(Job::NewChain(answer)) = batch.pop() {
                    retry.extend(writer.commit(batch).await);
                    let _ = answer.send(writer.new_chain());
                }
                batch = rest;
            }
            retry.extend(writer.commit(batch).await);
            self.jobs.requeue(retry);
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, job: Job) {
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            answer_dead(job);
            return;
        }
        let urgent = matches!(
            job,
            Job::Record(_, Some(_)) | Job::Flush(_) | Job::NewChain(_)
        );
        self.jobs.push(job, urgent);
    }

    /// The writer task ended (a bug made it panic): everything that waits for it, and
    /// everything asked of it from now on, is answered with the failure — refused,
    /// fail closed — instead of waiting forever.
    pub fn writer_died(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared().error = Some(AuditError::WriterStopped);
        let queued = std::mem::take(&mut self.jobs.lock().jobs);
        for job in queued {
            answer_dead(job);
        }
    }

    /// Waits until every record queued so far is written (for readers of the log).
    pub async fn flush(&self) {
        {
            let q = self.jobs.lock();
            if q.jobs.is_empty() && !q.busy {
                return;
            }
        }
        let (tx, rx) = oneshot::channel();
        self.send(Job::Flush(tx));
        let _ = rx.await;
    }

    /// Records `event` and waits until it is on disk. The refusal says the audit log is
    /// unavailable: the decision must not take effect.
    pub async fn record(&self, event: Event) -> Result<(), Refusal> {
        let (tx, rx) = oneshot::channel();
        let kind = event.event;
        self.send(Job::Record(Box::new(event), Some(tx)));
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(
                    event = kind.map_or("", jitc_protocol::kinds::EventKind::as_str),
                    error = %e,
                    "audit record failed"
                );
                Err(unavailable(&e))
            }
            Err(_) => Err(unavailable(&AuditError::WriterStopped)),
        }
    }

    /// Keys the chain with `vault_key` (a vault just opened or created) and records
    /// `event`, the opening itself; if that cannot be written, the key is dropped again
    /// and the opening must not take effect.
    pub async fn record_opening(&self, vault_key: &[u8; 32], event: Event) -> Result<(), Refusal> {
        self.set_key(Some(vault_key));
        let recorded = self.record(event).await;
        if recorded.is_err() {
            self.set_key(None);
        }
        recorded
    }

    /// Records `event` without waiting (for what has already happened).
    pub fn record_later(&self, event: Event) {
        self.send(Job::Record(Box::new(event), None));
    }

    /// Starts the chain over for a new vault: a log with lines keyed by an earlier
    /// vault (nothing the new key could check) is moved, whole, into a directory of its
    /// own beside it, kept, and a new log begins. `None` when there was nothing keyed
    /// to move; the directory otherwise.
    pub async fn new_chain(&self) -> Result<Option<PathBuf>, Refusal> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::NewChain(tx));
        self.jobs.ready.notify_one();
        match rx.await {
            Ok(Ok(moved)) => Ok(moved),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(unavailable(&AuditError::WriterStopped)),
        }
    }

    /// Forgets the last keyed line as a checkpoint (a new vault starts its own).
    pub fn forget_checkpoint(&self) {
        self.shared().last_keyed = None;
    }

    /// Gives the writer the key for the vault now unlocked (`None`: locked).
    pub fn set_key(&self, vault_key: Option<&[u8; 32]>) {
        self.send(Job::Key(vault_key.map(chain::derive_key)));
    }

    pub fn state(&self) -> AuditState {
        let s = self.shared();
        AuditState {
            path: self.path.display().to_string(),
            error: s.error.as_ref().map(AuditError::to_string),
            last_seq: s.last_seq,
            tampered: s.tampered.clone(),
        }
    }

    /// Notes what the check at unlock found wrong with the log (`None`: nothing, or
    /// it was accepted), for `jitc status` and `jitc unlock` to say.
    pub fn set_tampered(&self, problem: Option<String>) {
        self.shared().tampered = problem;
    }

    /// The last keyed line (sequence, tag): the checkpoint a cut-off tail is found by.
    pub fn last_keyed(&self) -> Option<(u64, Tag)> {
        self.shared().last_keyed
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets how much history later rotations keep.
    pub fn set_retention(&self, retention: Retention) {
        self.shared().retention = retention;
    }

    /// The log's files, oldest first, opened together (no rotation in between), so
    /// that what is read from them is one consistent log however long reading takes;
    /// with `newest_only`, only the newest.
    pub fn open_files(&self, newest_only: bool) -> verify::Opened {
        let _renaming = self.renaming.lock().unwrap_or_else(|p| p.into_inner());
        let mut files = files_of(&self.path);
        if newest_only {
            files.drain(..files.len().saturating_sub(1));
        }
        files
            .into_iter()
            .map(|f| {
                let opened = jitc_protocol::audit_files::open_log(&f);
                (f, opened)
            })
            .collect()
    }
}

/// Answers a job no writer will do.
fn answer_dead(job: Job) {
    match job {
        Job::Record(_, Some(w)) | Job::Flush(w) => {
            let _ = w.send(Err(AuditError::WriterStopped));
        }
        Job::NewChain(w) => {
            let _ = w.send(Err(AuditError::WriterStopped));
        }
        Job::Record(_, None) | Job::Key(_) => {}
    }
}

fn unavailable(why: &AuditError) -> Refusal {
    Refusal::audit_unavailable(&why.to_string())
}

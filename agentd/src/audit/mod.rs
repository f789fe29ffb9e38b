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
pub mod verify;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use jitc_protocol::{AuditState, ErrorCode, LeaseRequest, ProcessInfo};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot};

use crate::error::Refusal;
use crate::peer::Peer;
use chain::{Key, Tag};

/// Rotated files kept (`audit.log.1` … `audit.log.9`).
pub const KEEP: usize = 9;

/// Records nobody waits for, kept to try again while the log cannot be written.
const MAX_RETRY: usize = 10_000;

/// Where a batch found the chain, to go back to if it cannot be written.
struct Snapshot {
    state: chain::State,
    give_up: u64,
    size: u64,
    needs_marker: Option<Option<String>>,
}

/// The longest a record nobody waits for stays queued.
const LINGER: Duration = Duration::from_millis(50);

/// The process behind a request, as recorded: serialized once per connection (its
/// ancestry is most of a record) and shared by every event of that connection.
#[derive(Debug, Clone)]
pub struct PeerJson(Arc<RawValue>);

/// The most a peer may take up in a record; a deeper ancestry is cut from the top
/// (init's end) until it fits.
const MAX_PEER_JSON: usize = 64 << 10;

impl PeerJson {
    pub fn new(peer: &Peer, chain: &[ProcessInfo]) -> PeerJson {
        #[derive(Serialize)]
        struct Record<'a> {
            pid: u32,
            uid: u32,
            exe: &'a Option<String>,
            argv: &'a [String],
            chain: &'a [ProcessInfo],
        }
        let mut kept = chain.len();
        let raw = loop {
            let record = Record {
                pid: peer.pid,
                uid: peer.uid,
                exe: &peer.exe,
                argv: &peer.argv,
                chain: &chain[..kept],
            };
            // Serializing strings and numbers cannot fail.
            let json = serde_json::to_string(&record).unwrap_or_default();
            if json.len() <= MAX_PEER_JSON || kept == 0 {
                break json;
            }
            kept = kept.saturating_sub((kept / 4).max(1));
        };
        PeerJson(Arc::from(RawValue::from_string(raw).unwrap_or_default()))
    }

    /// The executable of the requester's parent (the program that ran it), as
    /// recorded.
    pub fn parent_exe(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.0.get()).ok()?;
        let chain = v.get("chain")?.as_array()?;
        let parent = chain.get(1).or(chain.first())?;
        parent.get("exe")?.as_str().map(str::to_owned)
    }

    /// The peer with its executables but none of the command lines (nothing can be
    /// concealed in them when no value is at hand).
    pub fn without_argv(peer: &Peer, chain: &[ProcessInfo]) -> PeerJson {
        PeerJson::rewritten(peer, chain, String::clone, |_| None)
    }

    /// The peer with each executable passed through `exe` and each argument through
    /// `arg` (`None`: left out).
    fn rewritten(
        peer: &Peer,
        chain: &[ProcessInfo],
        exe: impl Fn(&String) -> String,
        arg: impl Fn(&String) -> Option<String>,
    ) -> PeerJson {
        let peer = Peer {
            exe: peer.exe.as_ref().map(&exe),
            argv: peer.argv.iter().filter_map(&arg).collect(),
            ..peer.clone()
        };
        let chain: Vec<ProcessInfo> = chain
            .iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                exe: p.exe.as_ref().map(&exe),
                argv: p.argv.iter().filter_map(&arg).collect(),
            })
            .collect();
        PeerJson::new(&peer, &chain)
    }

    /// The peer with every leased value in its argv (or its ancestors') concealed;
    /// `None` when no value appears there.
    pub fn concealing(
        peer: &Peer,
        chain: &[ProcessInfo],
        haystack: &[u8],
        values: &[Concealed<'_>],
    ) -> Option<PeerJson> {
        let cut_short = || {
            peer.argv
                .iter()
                .chain(chain.iter().flat_map(|p| &p.argv))
                .any(|s| cut_tail(s, values).is_some())
        };
        if !values.iter().any(|(_, v)| occurs(haystack, v)) && !cut_short() {
            return None;
        }
        let fix = |s: &String| conceal(s, values).unwrap_or_else(|| s.clone());
        Some(PeerJson::rewritten(peer, chain, fix, |s| Some(fix(s))))
    }
}

/// A value being leased, kept out of records: its secret's name and its bytes.
pub type Concealed<'a> = (&'a str, &'a [u8]);

/// Every string of a requester and its ancestry (executables and argv), each between
/// NUL bytes: one buffer to look for values in, made once per connection.
pub fn haystack(peer: &Peer, chain: &[ProcessInfo]) -> Vec<u8> {
    nul_joined(
        peer.exe
            .iter()
            .chain(&peer.argv)
            .chain(chain.iter().flat_map(|p| p.exe.iter().chain(&p.argv))),
    )
}

/// `strings`, each between NUL bytes: one buffer that `occurs` looks in at once.
pub fn nul_joined<'a>(strings: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let mut hay = vec![0u8];
    for s in strings {
        hay.extend_from_slice(s.as_bytes());
        hay.push(0);
    }
    hay
}

/// Whether `value` occurs in `haystack`: anywhere, or — too short to mask — as a whole
/// string (as the argv check treats it).
pub fn occurs(haystack: &[u8], value: &[u8]) -> bool {
    if value.is_empty() {
        return false;
    }
    if value.len() < jitc_protocol::names::MIN_MASKED_LEN {
        let mut whole = Vec::with_capacity(value.len() + 2);
        whole.push(0);
        whole.extend_from_slice(value);
        whole.push(0);
        return memchr::memmem::find(haystack, &whole).is_some();
    }
    memchr::memmem::find(haystack, value).is_some()
}

/// For an argument cut short (it ends with `…`, see `peer::process_info`) whose end is
/// the beginning of a value: where that beginning starts, and the value's name. The
/// longest such beginning wins; a character the cut broke in two counts with it.
fn cut_tail<'a>(s: &str, values: &[Concealed<'a>]) -> Option<(usize, &'a str)> {
    let head = s.strip_suffix('…')?.trim_end_matches('\u{FFFD}');
    let head = head.as_bytes();
    let mut best: Option<(usize, &str)> = None;
    for (name, value) in values {
        if value.len() < jitc_protocol::names::MIN_MASKED_LEN {
            continue;
        }
        let longest = (1..value.len().min(head.len() + 1))
            .rev()
            .find(|&k| head.ends_with(&value[..k]));
        if let Some(k) = longest
            && best.is_none_or(|(at, _)| head.len() - k < at)
        {
            best = Some((head.len() - k, name));
        }
    }
    best
}

/// `s` with each occurrence of a value replaced by `<concealed:NAME>` (a value too
/// short to mask only when it is the whole of `s`, as the argv check treats it), and
/// the beginning of one at the end of an argument cut short; `None` when no value
/// occurs in it.
pub fn conceal(s: &str, values: &[Concealed<'_>]) -> Option<String> {
    let whole = conceal_whole(s, values);
    let cur = whole.as_deref().unwrap_or(s);
    match cut_tail(cur, values) {
        Some((mut at, name)) => {
            // From where the character it falls in starts.
            while !cur.is_char_boundary(at) {
                at -= 1;
            }
            Some(format!("{}<concealed:{name}>…", &cur[..at]))
        }
        None => whole,
    }
}

fn conceal_whole(s: &str, values: &[Concealed<'_>]) -> Option<String> {
    let mut out: Option<Vec<u8>> = None;
    for (name, value) in values {
        let cur = out.as_deref().unwrap_or(s.as_bytes());
        if value.is_empty() {
            continue;
        }
        let marker = format!("<concealed:{name}>");
        if value.len() < jitc_protocol::names::MIN_MASKED_LEN {
            if cur == *value {
                out = Some(marker.into_bytes());
            }
            continue;
        }
        let mut next = Vec::new();
        let mut from = 0;
        for at in memchr::memmem::find_iter(cur, value) {
            if at < from {
                continue;
            }
            next.extend_from_slice(&cur[from..at]);
            next.extend_from_slice(marker.as_bytes());
            from = at + value.len();
        }
        if from == 0 {
            continue;
        }
        next.extend_from_slice(&cur[from..]);
        out = Some(next);
    }
    out.map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl Serialize for PeerJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// One event. Never a value or a passphrase: there is no field that could hold one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// Set by the writer: when the line was written, and its place in the chain.
    pub time: String,
    pub seq: u64,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// For `anomaly`: what kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<&'static str>,
    /// For `log_continued`: the chain's tag where the previous file ended, and the
    /// unkeyed lines since that tag (how many, and their digest) that the next keyed
    /// line seals, so that this file can be checked on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_digest: Option<String>,
    /// What a record leaves out, and why (a request whose values were not at hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<&'static str>,
    /// Unkeyed lines just before this one that will never be sealed (see `Writer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsealed_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerJson>,
}

impl Event {
    pub fn new(event: &'static str) -> Event {
        Event {
            event,
            ..Event::default()
        }
    }

    pub fn peer(mut self, peer: PeerJson) -> Event {
        self.peer = Some(peer);
        self
    }

    /// Conceals the leased `values` wherever this event could carry one: the task, the
    /// command and its argv, and the requesting process's argv and ancestry.
    pub fn conceal(
        &mut self,
        peer: &Peer,
        chain: &[ProcessInfo],
        haystack: &[u8],
        values: &[Concealed<'_>],
    ) {
        // One look at the request's own strings first: nearly always nothing is there.
        let hay = nul_joined(
            [&self.task, &self.command]
                .into_iter()
                .flatten()
                .chain(self.argv.iter().flatten()),
        );
        if values.iter().any(|(_, v)| occurs(&hay, v)) {
            for field in [&mut self.task, &mut self.command].into_iter().flatten() {
                if let Some(c) = conceal(field, values) {
                    *field = c;
                }
            }
            for arg in self.argv.iter_mut().flatten() {
                if let Some(c) = conceal(arg, values) {
                    *arg = c;
                }
            }
        }
        if self.peer.is_some()
            && let Some(p) = PeerJson::concealing(peer, chain, haystack, values)
        {
            self.peer = Some(p);
        }
    }

    /// The secrets, task and command of a lease request.
    pub fn request(mut self, req: &LeaseRequest) -> Event {
        self.secrets = req.secrets.clone();
        self.task = req.task.clone();
        self.command = Some(req.command.path.clone());
        self.argv = Some(req.command.argv.clone());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Event {
        self.reason = Some(reason.into());
        self
    }

    /// Fills the fields this event leaves empty from `base` (who asked, for what).
    pub fn merge(mut self, base: &Event) -> Event {
        let b = base.clone();
        self.lease = self.lease.or(b.lease);
        if self.secrets.is_empty() {
            self.secrets = b.secrets;
        }
        self.task = self.task.or(b.task);
        self.command = self.command.or(b.command);
        self.argv = self.argv.or(b.argv);
        self.peer = self.peer.or(b.peer);
        self.profile = self.profile.or(b.profile);
        self.decision = self.decision.or(b.decision);
        self.reason = self.reason.or(b.reason);
        self.approval = self.approval.or(b.approval);
        self.ttl_secs = self.ttl_secs.or(b.ttl_secs);
        self.withheld = self.withheld.or(b.withheld);
        self
    }
}

type Waiter = oneshot::Sender<Result<(), String>>;

enum Job {
    Record(Box<Event>, Option<Waiter>),
    Key(Option<Key>),
    /// Answered once everything queued before it is written.
    Flush(Waiter),
    /// Start a new chain (see `Audit::new_chain`).
    NewChain(oneshot::Sender<Result<Option<PathBuf>, String>>),
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
struct Shared {
    error: Option<String>,
    last_seq: u64,
    last_keyed: Option<(u64, Tag)>,
    tampered: Option<String>,
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
        let writer = Writer::open(config, shared.clone(), renaming.clone());
        Audit {
            jobs: Jobs::default(),
            shared,
            renaming,
            path,
            writer: Mutex::new(Some(writer)),
        }
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
        let urgent = matches!(
            job,
            Job::Record(_, Some(_)) | Job::Flush(_) | Job::NewChain(_)
        );
        self.jobs.push(job, urgent);
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
                tracing::error!(event = kind, error = %e, "audit record failed");
                Err(unavailable(&e))
            }
            Err(_) => Err(unavailable("the audit writer stopped")),
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
            Err(_) => Err(unavailable("the audit writer stopped")),
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
            error: s.error.clone(),
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
                let opened = File::open(&f);
                (f, opened)
            })
            .collect()
    }
}

/// The files of the log at `path`, oldest first (regular files only: `--audit-log
/// /dev/full` is one way to test failing, and nothing must ever move that).
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=KEEP)
        .rev()
        .map(|i| rotated(path, i))
        .filter(|p| p.is_file())
        .collect();
    if path.is_file() {
        out.push(path.to_path_buf());
    }
    out
}

fn unavailable(why: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Refused,
        format!(
            "audit log unavailable: {why}; nothing is granted until it can be written (see 'jitc status')"
        ),
    )
}

/// The last `max` bytes of `path` at most, from the start of a line: all the chain
/// needs to resume (the last keyed line; the unkeyed ones after it are given up), and a
/// file grown far past the rotation size is not read whole into memory.
fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let from = len.saturating_sub(max);
    f.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity((len - from) as usize);
    f.take(max).read_to_end(&mut bytes)?;
    if from > 0 {
        let start = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..start);
    }
    Ok(bytes)
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

#[derive(Debug)]
struct Writer {
    /// Set when the log cannot be continued safely: every batch fails with this.
    broken: Option<String>,
    /// A new file was started: its first line must be a `log_continued` marker (with
    /// this reason, if any).
    needs_marker: Option<Option<String>>,
    /// A file was created or renamed: the next sync covers the directory too.
    dir_dirty: bool,
    /// Unkeyed lines the chain has given up sealing, said on the next line written
    /// (`unsealed_before`): those a previous agent left (sealing them now would vouch
    /// for whatever was put in the file while no agent ran). `jitc audit verify`
    /// reports them as never sealed.
    give_up: u64,
    config: AuditConfig,
    /// Shared with the blocking thread that syncs it.
    file: Option<Arc<File>>,
    /// Bytes in the current file.
    size: u64,
    state: chain::State,
    key: Option<Key>,
    shared: Arc<Mutex<Shared>>,
    renaming: Arc<Mutex<()>>,
}

impl Writer {
    fn open(config: AuditConfig, shared: Arc<Mutex<Shared>>, renaming: Arc<Mutex<()>>) -> Writer {
        let mut w = Writer {
            broken: None,
            needs_marker: None,
            dir_dirty: false,
            give_up: 0,
            config,
            file: None,
            size: 0,
            state: chain::State::default(),
            key: None,
            shared,
            renaming,
        };
        w.resume();
        if let Err(e) = w.ensure_open() {
            w.set_error(Some(e));
        }
        w
    }

    /// Picks the chain up where the log on disk leaves it: the newest file with a
    /// whole line in it. A line cut short by a crash was never acknowledged (the sync
    /// comes first): it is cut off, so the next line starts on a line of its own. A log
    /// that cannot be read leaves the writer broken — refusing — rather than starting
    /// the chain over.
    fn resume(&mut self) {
        let files = std::iter::once(self.config.path.clone())
            .chain((1..=KEEP).map(|i| rotated(&self.config.path, i)));
        for (i, path) in files.enumerate() {
            // Only regular files (`--audit-log /dev/full` is one way to test failing).
            if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let bytes = match read_tail(&path, 2 * self.config.max_bytes + (1 << 20)) {
                Ok(b) => b,
                Err(e) => {
                    self.broken = Some(format!("cannot read {} ({e})", path.display()));
                    return;
                }
            };
            let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if i == 0 && whole < bytes.len() {
                tracing::warn!(path = %path.display(), "dropping a torn last line of the audit log");
                let cut = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(whole as u64));
                if let Err(e) = cut {
                    self.broken = Some(format!(
                        "cannot cut the torn last line off {} ({e})",
                        path.display()
                    ));
                    return;
                }
            }
            if whole == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes[..whole]);
            for line in text.lines().filter(|l| !l.is_empty()) {
                self.state.follow(line);
            }
            // Another file than audit.log holds the newest line: audit.log starts anew.
            if i > 0 {
                self.needs_marker = Some(None);
            }
            break;
        }
        self.give_up_pending();
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.last_seq = self.state.seq;
    }

    /// Opens the log (creating it, 0600, in a 0700 directory), or reopens it when the
    /// file the agent holds was removed or replaced: lines written to an unlinked file
    /// would be lost. A new file opens with a `log_continued` line.
    fn ensure_open(&mut self) -> Result<(), String> {
        let path = self.config.path.clone();
        if let Some(file) = &self.file {
            let held = file.metadata().map(|m| (m.dev(), m.ino(), m.nlink()));
            let there = fs::metadata(&path).map(|m| (m.dev(), m.ino()));
            match (held, there) {
                (Ok((dev, ino, links)), Ok(t)) if links > 0 && (dev, ino) == t => return Ok(()),
                _ => {
                    tracing::warn!(path = %path.display(), "the audit log was removed or replaced; starting a new file");
                    self.file = None;
                    self.needs_marker = Some(Some(
                        "the log file was removed or replaced while the agent ran".into(),
                    ));
                }
            }
        }
        if let Some(dir) = path.parent() {
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot open {} ({e})", path.display()))?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(Arc::new(file));
        if !existed {
            self.dir_dirty = true;
            if self.state.seq > 0 && self.needs_marker.is_none() {
                self.needs_marker = Some(None);
            }
        }
        Ok(())
    }

    fn set_error(&self, error: Option<String>) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).error = error;
    }

    /// Stops carrying the unkeyed lines since the last keyed one: the next line says
    /// how many there were, and the chain goes on without them.
    fn give_up_pending(&mut self) {
        self.give_up += self.state.pending;
        self.state.drop_pending();
    }

    /// The body of the next line: the event with its sequence number and time.
    fn body(&mut self, event: &mut Event) -> String {
        event.unsealed_before = (self.give_up > 0).then(|| std::mem::take(&mut self.give_up));
        self.state.seq += 1;
        event.seq = self.state.seq;
        // A record tried again keeps the time it first had.
        if event.time.is_empty() {
            event.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        }
        // Strings, numbers and raw JSON: serializing cannot fail.
        serde_json::to_string(event).unwrap_or_default()
    }

    /// Starts a new file when this one is full: `audit.log` becomes `audit.log.1` (and
    /// so on; the oldest of `KEEP` is dropped), and the new file opens with a
    /// `log_continued` line carrying the chain's tag.
    fn rotate_if_full(&mut self) -> Result<(), String> {
        if self.size < self.config.max_bytes {
            return Ok(());
        }
        let path = self.config.path.clone();
        {
            let _renaming = self.renaming.lock().unwrap_or_else(|p| p.into_inner());
            let _ = fs::remove_file(rotated(&path, KEEP));
            for i in (1..KEEP).rev() {
                let _ = fs::rename(rotated(&path, i), rotated(&path, i + 1));
            }
            fs::rename(&path, rotated(&path, 1))
                .map_err(|e| format!("cannot rotate {} ({e})", path.display()))?;
        }
        self.file = None;
        self.dir_dirty = true;
        self.needs_marker = Some(None);
        self.ensure_open()
    }

    /// Writes one batch (with a sync, unless turned off) and answers its waiters. What
    /// nobody waits for comes back if the batch could not be written, to be tried again.
    async fn commit(&mut self, batch: Vec<Job>) -> Vec<Job> {
        let mut waiters = Vec::new();
        let mut retry = Vec::new();
        let ready = match &self.broken {
            Some(why) => Err(why.clone()),
            None => self.ensure_open().and_then(|()| self.rotate_if_full()),
        };
        // Where to go back to if the batch cannot be written.
        let snapshot = Snapshot {
            state: self.state,
            give_up: self.give_up,
            size: self.size,
            needs_marker: self.needs_marker.clone(),
        };
        let mut lines = String::new();
        let mut keyed = None;
        let mut decisions = false;
        if let Some(reason) = self.needs_marker.take() {
            // Where the chain stands, unkeyed lines given up now included.
            let pending = self.state.pending + self.give_up;
            let mut marker = Event {
                prev_tag: Some(chain::hex(&self.state.prev)),
                pending: (pending > 0).then_some(pending),
                pending_digest: (self.state.pending > 0).then(|| chain::hex(&self.state.digest)),
                reason,
                ..Event::new("log_continued")
            };
            self.append(&mut marker, &mut lines, &mut keyed);
        }
        for job in batch {
            match job {
                Job::Key(k) => self.key = k,
                Job::Flush(w) => waiters.push(w),
                // `run_writer` takes these out of a batch.
                Job::NewChain(answer) => {
                    let _ = answer.send(Err("a new chain was asked for mid-batch".into()));
                }
                Job::Record(mut event, waiter) => {
                    self.append(&mut event, &mut lines, &mut keyed);
                    match waiter {
                        Some(w) => {
                            decisions = true;
                            waiters.push(w);
                        }
                        None => retry.push(Job::Record(event, None)),
                    }
                }
            }
        }
        if lines.is_empty() {
            // Nothing to write (a key change, a flush): nothing learnt about the log.
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            return Vec::new();
        }
        let result = match ready.and_then(|()| self.write(&lines)) {
            Ok(()) => self.sync().await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => {
                retry.clear();
                // Only a decision written again shows the log is back (a few small
                // leftovers may fit where the next decision will not).
                if decisions {
                    self.set_error(None);
                }
                let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                s.last_seq = self.state.seq;
                if keyed.is_some() {
                    s.last_keyed = keyed;
                }
            }
            Err(e) => {
                // Nothing of this batch counts: the chain goes back to where the file
                // is, and the file loses whatever part of the batch reached it.
                self.restore(snapshot);
                if let Some(f) = &self.file
                    && self.broken.is_none()
                    && f.metadata().is_ok_and(|m| m.is_file())
                    && let Err(cut) = f.set_len(self.size)
                {
                    // Lines the agent disowned stay in the file: write nothing more
                    // after them (a restart cuts them off, see `resume`).
                    self.broken = Some(format!(
                        "a failed write left lines that could not be removed ({cut}); restart the agent"
                    ));
                }
                self.set_error(Some(e.clone()));
            }
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
        retry
    }

    /// See `Audit::new_chain`.
    fn new_chain(&mut self) -> Result<Option<PathBuf>, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        if self.state.prev == chain::GENESIS {
            return Ok(None);
        }
        let path = self.config.path.clone();
        let parent = path.parent().unwrap_or(Path::new("."));
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace(':', "");
        let name = path
            .file_name()
            .map_or("audit.log".into(), |n| n.to_string_lossy());
        let mut dir = parent.join(format!("{name}.earlier-vault-{stamp}"));
        let mut n = 1;
        loop {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                    dir = parent.join(format!("{name}.earlier-vault-{stamp}-{n}"));
                    n += 1;
                }
                Err(e) => return Err(format!("cannot create {} ({e})", dir.display())),
            }
        }
        {
            // All the files or none: a move that fails is undone.
            let _renaming = self.renaming.lock().unwrap_or_else(|p| p.into_inner());
            let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
            for f in files_of(&path) {
                let Some(n) = f.file_name() else { continue };
                let to = dir.join(n);
                if let Err(e) = fs::rename(&f, &to) {
                    for (from, to) in moved.iter().rev() {
                        let _ = fs::rename(to, from);
                    }
                    let _ = fs::remove_dir(&dir);
                    return Err(format!("cannot move {} ({e})", f.display()));
                }
                moved.push((f, to));
            }
        }
        // The moves are done: from here on the new chain is the truth, synced or not.
        for d in [&dir, &parent.to_path_buf()] {
            if let Err(e) = File::open(d).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot sync a directory after moving the log aside");
            }
        }
        self.file = None;
        self.state = chain::State::default();
        self.give_up = 0;
        self.needs_marker = None;
        self.size = 0;
        {
            let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            s.last_seq = 0;
            s.last_keyed = None;
        }
        // The moves stand; if the new file cannot be opened, the next record says so.
        if let Err(e) = self.ensure_open() {
            self.set_error(Some(e));
        }
        tracing::warn!(moved_to = %dir.display(), "a new vault: the log of the earlier one was moved aside");
        Ok(Some(dir))
    }

    /// Adds `event`'s line to `lines`.
    fn append(&mut self, event: &mut Event, lines: &mut String, keyed: &mut Option<(u64, Tag)>) {
        let body = self.body(event);
        let line = self.state.append(body, self.key.as_ref());
        if self.key.is_some() {
            *keyed = Some((self.state.seq, self.state.prev));
        }
        lines.push_str(&line);
        lines.push('\n');
    }

    /// Puts the chain back where `snapshot` found it.
    fn restore(&mut self, snapshot: Snapshot) {
        self.state = snapshot.state;
        self.give_up = snapshot.give_up;
        self.size = snapshot.size;
        self.needs_marker = snapshot.needs_marker;
    }

    /// Appends `lines`: one small write to the page cache, done in place.
    fn write(&mut self, lines: &str) -> Result<(), String> {
        self.ensure_open()?;
        let path = self.config.path.display().to_string();
        let file = self.file.as_deref().ok_or("the log is not open")?;
        let mut file: &File = file;
        file.write_all(lines.as_bytes())
            .map_err(|e| format!("cannot write {path} ({e})"))?;
        self.size += lines.len() as u64;
        Ok(())
    }

    /// `fdatasync`, off the runtime: everything written so far is on disk — and the
    /// directory too when a file was created or renamed in it.
    async fn sync(&mut self) -> Result<(), String> {
        if !self.config.sync {
            return Ok(());
        }
        let Some(file) = self.file.clone() else {
            return Err("the log is not open".into());
        };
        let path = self.config.path.clone();
        let dir = std::mem::take(&mut self.dir_dirty)
            .then(|| path.parent().map(Path::to_path_buf))
            .flatten();
        let shown = path.display().to_string();
        let synced = tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            match dir {
                Some(d) => File::open(d)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(|_| format!("cannot sync {shown} (the sync did not finish)"))?
        .map_err(|e| format!("cannot sync {shown} ({e})"));
        if synced.is_err() {
            self.dir_dirty = true;
        }
        synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &[u8] = "sk-live-0123456789".as_bytes();

    #[test]
    fn values_are_concealed_whole_and_where_an_argument_was_cut_short() {
        let values: &[Concealed<'_>] = &[("api", V)];
        assert_eq!(
            conceal("Bearer sk-live-0123456789!", values).as_deref(),
            Some("Bearer <concealed:api>!")
        );
        assert_eq!(conceal("nothing here", values), None);
        // Cut inside the value: its beginning goes too.
        assert_eq!(
            conceal("xxxx sk-live-01…", values).as_deref(),
            Some("xxxx <concealed:api>…")
        );
        // A cut that broke a character in two (shown as U+FFFD) right after it.
        let multi: &[Concealed<'_>] = &[("m", "ключ-секрет-42".as_bytes())];
        assert_eq!(
            conceal("a=ключ-се\u{FFFD}…", multi).as_deref(),
            Some("a=<concealed:m>…")
        );
        // An argument not cut short keeps a mere look-alike ending.
        assert_eq!(conceal("xxxx sk-live-01", values), None);
    }
}

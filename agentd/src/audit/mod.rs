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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
const KEEP: usize = 9;

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

    /// The peer with every leased value in its argv (or its ancestors') concealed;
    /// `None` when no value appears there.
    pub fn concealing(
        peer: &Peer,
        chain: &[ProcessInfo],
        values: &[Concealed<'_>],
    ) -> Option<PeerJson> {
        let hit = |exe: &Option<String>, argv: &[String]| {
            exe.iter().chain(argv).any(|s| conceal(s, values).is_some())
        };
        if !hit(&peer.exe, &peer.argv) && !chain.iter().any(|p| hit(&p.exe, &p.argv)) {
            return None;
        }
        let fix = |s: &String| conceal(s, values).unwrap_or_else(|| s.clone());
        let peer = Peer {
            exe: peer.exe.as_ref().map(fix),
            argv: peer.argv.iter().map(fix).collect(),
            ..peer.clone()
        };
        let chain: Vec<ProcessInfo> = chain
            .iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                exe: p.exe.as_ref().map(fix),
                argv: p.argv.iter().map(fix).collect(),
            })
            .collect();
        Some(PeerJson::new(&peer, &chain))
    }
}

/// A value being leased, kept out of records: its secret's name and its bytes.
pub type Concealed<'a> = (&'a str, &'a [u8]);

/// `s` with each occurrence of a value replaced by `<concealed:NAME>` (a value too
/// short to mask only when it is the whole of `s`, as the argv check treats it), or
/// `None` when no value occurs in it.
pub fn conceal(s: &str, values: &[Concealed<'_>]) -> Option<String> {
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
        if !cur.windows(value.len()).any(|w| w == *value) {
            continue;
        }
        let mut next = Vec::with_capacity(cur.len());
        let mut i = 0;
        while i < cur.len() {
            if cur[i..].starts_with(value) {
                next.extend_from_slice(marker.as_bytes());
                i += value.len();
            } else {
                next.push(cur[i]);
                i += 1;
            }
        }
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
    /// For `log_continued`: the chain's tag where the previous file ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_tag: Option<String>,
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
    pub fn conceal(&mut self, peer: &Peer, chain: &[ProcessInfo], values: &[Concealed<'_>]) {
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
        if self.peer.is_some()
            && let Some(p) = PeerJson::concealing(peer, chain, values)
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
        self
    }
}

type Waiter = oneshot::Sender<Result<(), String>>;

enum Job {
    Record(Box<Event>, Option<Waiter>),
    Key(Option<Key>),
    /// Answered once everything queued before it is written.
    Flush(Waiter),
}

/// Jobs for the writer. Only `urgent` ones (someone waits) wake it at once.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    urgent: bool,
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
}

/// The handle requests use to record events.
#[derive(Debug)]
pub struct Audit {
    jobs: Jobs,
    shared: Arc<Mutex<Shared>>,
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
        let path = config.path.clone();
        let writer = Writer::open(config, shared.clone());
        Audit {
            jobs: Jobs::default(),
            shared,
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
            let batch = self.jobs.next_batch().await;
            writer.commit(batch).await;
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, job: Job) {
        let urgent = matches!(job, Job::Record(_, Some(_)) | Job::Flush(_));
        self.jobs.push(job, urgent);
    }

    /// Waits until every record queued so far is written (for readers of the log).
    pub async fn flush(&self) {
        if self.jobs.lock().jobs.is_empty() {
            return;
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
        }
    }

    /// The last keyed line (sequence, tag): the checkpoint a cut-off tail is found by.
    pub fn last_keyed(&self) -> Option<(u64, Tag)> {
        self.shared().last_keyed
    }

    /// The log's files, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = (1..=KEEP)
            .rev()
            .map(|i| rotated(&self.path, i))
            .filter(|p| p.is_file())
            .collect();
        if self.path.exists() {
            out.push(self.path.clone());
        }
        out
    }
}

fn unavailable(why: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Refused,
        format!(
            "audit log unavailable: {why}; nothing is granted until it can be written (see 'jitc status')"
        ),
    )
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

#[derive(Debug)]
struct Writer {
    config: AuditConfig,
    /// Shared with the blocking thread that syncs it.
    file: Option<Arc<File>>,
    /// Bytes in the current file.
    size: u64,
    state: chain::State,
    key: Option<Key>,
    shared: Arc<Mutex<Shared>>,
}

impl Writer {
    fn open(config: AuditConfig, shared: Arc<Mutex<Shared>>) -> Writer {
        let mut w = Writer {
            config,
            file: None,
            size: 0,
            state: chain::State::default(),
            key: None,
            shared,
        };
        w.resume();
        if let Err(e) = w.ensure_open() {
            w.set_error(Some(e));
        }
        w
    }

    /// Picks the chain up where the log on disk leaves it.
    fn resume(&mut self) {
        let newest = std::iter::once(self.config.path.clone())
            .chain((1..=KEEP).map(|i| rotated(&self.config.path, i)))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0));
        let Some(path) = newest else { return };
        if let Ok(mut text) = fs::read_to_string(&path) {
            // A line cut short by a crash was never acknowledged (the sync comes
            // first): it goes, so that the next line starts on a line of its own.
            let whole = text.rfind('\n').map_or(0, |i| i + 1);
            if whole < text.len() {
                tracing::warn!(path = %path.display(), "dropping a torn last line of the audit log");
                let torn = OpenOptions::new().write(true).open(&path);
                if torn.and_then(|f| f.set_len(whole as u64)).is_ok() {
                    text.truncate(whole);
                }
            }
            for line in text.lines().filter(|l| !l.is_empty()) {
                self.state.follow(line);
            }
        }
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.last_seq = self.state.seq;
    }

    fn ensure_open(&mut self) -> Result<(), String> {
        if self.file.is_some() {
            return Ok(());
        }
        let path = &self.config.path;
        if let Some(dir) = path.parent() {
            let _ = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open {} ({e})", path.display()))?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(Arc::new(file));
        Ok(())
    }

    fn set_error(&self, error: Option<String>) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).error = error;
    }

    /// The body of the next line: the event with its sequence number and time.
    fn body(&mut self, event: &mut Event) -> String {
        self.state.seq += 1;
        event.seq = self.state.seq;
        event.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // Strings, numbers and raw JSON: serializing cannot fail.
        serde_json::to_string(event).unwrap_or_default()
    }

    /// Starts a new file when this one is full: `audit.log` becomes `audit.log.1`, and
    /// the new file opens with a `log_continued` line carrying the chain's tag.
    fn rotate_if_full(&mut self, out: &mut String) -> Result<(), String> {
        if self.size < self.config.max_bytes {
            return Ok(());
        }
        let path = self.config.path.clone();
        let _ = fs::remove_file(rotated(&path, KEEP));
        for i in (1..KEEP).rev() {
            let _ = fs::rename(rotated(&path, i), rotated(&path, i + 1));
        }
        fs::rename(&path, rotated(&path, 1))
            .map_err(|e| format!("cannot rotate {} ({e})", path.display()))?;
        self.file = None;
        self.ensure_open()?;
        let mut marker = Event {
            prev_tag: Some(chain::hex(&self.state.prev)),
            ..Event::new("log_continued")
        };
        let body = self.body(&mut marker);
        out.push_str(&self.state.append(body, self.key.as_ref()));
        out.push('\n');
        Ok(())
    }

    /// Writes one batch (with a sync, unless turned off) and answers its waiters.
    async fn commit(&mut self, batch: Vec<Job>) {
        let before = (self.state.clone(), self.size);
        let mut lines = String::new();
        let mut waiters = Vec::new();
        let mut keyed = None;
        let rotated = self
            .ensure_open()
            .and_then(|()| self.rotate_if_full(&mut lines));
        for job in batch {
            match job {
                Job::Key(k) => self.key = k,
                Job::Flush(w) => waiters.push(w),
                Job::Record(mut event, waiter) => {
                    let body = self.body(&mut event);
                    let line = self.state.append(body, self.key.as_ref());
                    if self.key.is_some() {
                        keyed = Some((self.state.seq, self.state.prev));
                    }
                    lines.push_str(&line);
                    lines.push('\n');
                    waiters.extend(waiter);
                }
            }
        }
        if lines.is_empty() {
            // Nothing to write (a key change, a flush): nothing learnt about the log.
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            return;
        }
        let result = match rotated.and_then(|()| self.write(&lines)) {
            Ok(()) => self.sync().await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => {
                self.set_error(None);
                let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                s.last_seq = self.state.seq;
                if keyed.is_some() {
                    s.last_keyed = keyed;
                }
            }
            Err(e) => {
                // Nothing of this batch counts: the chain goes back to where the file
                // is, and the file loses any torn tail.
                (self.state, self.size) = before;
                if let Some(f) = &self.file {
                    let _ = f.set_len(self.size);
                }
                self.set_error(Some(e.clone()));
            }
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
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

    /// `fdatasync`, off the runtime: everything written so far is on disk.
    async fn sync(&self) -> Result<(), String> {
        if !self.config.sync {
            return Ok(());
        }
        let Some(file) = self.file.clone() else {
            return Err("the log is not open".into());
        };
        let path = self.config.path.display().to_string();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|_| format!("cannot sync {path} (the sync did not finish)"))?
            .map_err(|e| format!("cannot sync {path} ({e})"))
    }
}

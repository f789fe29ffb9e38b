//! The audit trail: every decision the agent makes, as JSON Lines in
//! `$XDG_STATE_HOME/jitc/audit.log`, on disk before it takes effect.
//!
//! One writer thread owns the file. Requests hand it events and (for decisions) wait
//! until their line is written and `fdatasync`ed; events that arrive while a sync is
//! under way are written and synced together (group commit), so durability costs one
//! sync per batch, not per request. If a line cannot be written, the request it belongs
//! to is refused and `jitc status` shows the audit as failing.

pub mod chain;
pub mod verify;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use jitc_protocol::{AuditState, ErrorCode, LeaseRequest, ProcessInfo};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::Refusal;
use crate::peer::Peer;
use chain::{Key, Tag};

/// Rotated files kept (`audit.log.1` … `audit.log.9`).
const KEEP: usize = 9;

/// The process behind a request, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRecord {
    pub pid: u32,
    pub uid: u32,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    pub chain: Vec<ProcessInfo>,
}

impl PeerRecord {
    pub fn new(peer: &Peer, chain: &[ProcessInfo]) -> PeerRecord {
        PeerRecord {
            pid: peer.pid,
            uid: peer.uid,
            exe: peer.exe.clone(),
            argv: peer.argv.clone(),
            chain: chain.to_vec(),
        }
    }
}

/// One event. Never a value or a passphrase: there is no field that could hold one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
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
    pub peer: Option<PeerRecord>,
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
}

impl Event {
    pub fn new(event: &'static str) -> Event {
        Event {
            event,
            ..Event::default()
        }
    }

    pub fn peer(mut self, peer: &Peer, chain: &[ProcessInfo]) -> Event {
        self.peer = Some(PeerRecord::new(peer, chain));
        self
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

enum Job {
    Record(Box<Event>, Option<oneshot::Sender<Result<(), String>>>),
    Key(Option<Key>),
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
    jobs: Mutex<std_mpsc::Sender<Job>>,
    shared: Arc<Mutex<Shared>>,
    path: PathBuf,
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
    /// Opens (or creates, 0600) the log, resumes its chain, and starts the writer.
    pub fn start(config: AuditConfig) -> Audit {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = std_mpsc::channel();
        let path = config.path.clone();
        let mut writer = Writer::open(config, shared.clone());
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer.run(rx))
            .map(drop)
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the audit writer"));
        Audit {
            jobs: Mutex::new(tx),
            shared,
            path,
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, job: Job) -> bool {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .is_ok()
    }

    /// Records `event` and waits until it is on disk. The refusal says the audit log is
    /// unavailable: the decision must not take effect.
    pub async fn record(&self, event: Event) -> Result<(), Refusal> {
        let (tx, rx) = oneshot::channel();
        let kind = event.event;
        if !self.send(Job::Record(Box::new(event), Some(tx))) {
            return Err(unavailable("the audit writer stopped"));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(event = kind, error = %e, "audit record failed");
                Err(unavailable(&e))
            }
            Err(_) => Err(unavailable("the audit writer stopped")),
        }
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

struct Writer {
    config: AuditConfig,
    file: Option<File>,
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
        self.file = Some(file);
        Ok(())
    }

    fn set_error(&self, error: Option<String>) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).error = error;
    }

    /// The body of the next line: the event with its sequence number and time.
    fn body(&mut self, event: &Event) -> String {
        self.state.seq += 1;
        let mut map = match serde_json::to_value(event) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        map.insert("seq".into(), self.state.seq.into());
        map.insert(
            "time".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        serde_json::Value::Object(map).to_string()
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
        let marker = Event {
            prev_tag: Some(chain::hex(&self.state.prev)),
            ..Event::new("log_continued")
        };
        let body = self.body(&marker);
        out.push_str(&self.state.append(body, self.key.as_ref()));
        out.push('\n');
        Ok(())
    }

    fn run(&mut self, jobs: std_mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            // Everything that queued up while the last sync ran goes in one batch.
            let mut batch = vec![first];
            batch.extend(jobs.try_iter());
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
                    Job::Record(event, waiter) => {
                        let body = self.body(&event);
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
                continue;
            }
            let result = rotated.and_then(|()| self.write(&lines));
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
                    // Nothing of this batch counts: the chain goes back to where the
                    // file is, and the file loses any torn tail.
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
    }

    fn write(&mut self, lines: &str) -> Result<(), String> {
        self.ensure_open()?;
        let path = self.config.path.display().to_string();
        let file = self.file.as_mut().ok_or("the log is not open")?;
        file.write_all(lines.as_bytes())
            .map_err(|e| format!("cannot write {path} ({e})"))?;
        if self.config.sync {
            file.sync_data()
                .map_err(|e| format!("cannot sync {path} ({e})"))?;
        }
        self.size += lines.len() as u64;
        Ok(())
    }
}

//! The writer: the one task that owns the log file. It writes batches (group commit),
//! rotates, starts a new chain for a new vault, and resumes the chain after a restart.

use jitc_protocol::kinds::{AnomalyKind, EventKind};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use super::chain::{self, Key, Tag};
use super::sidecar::Sidecar;
use super::{AuditConfig, AuditError, Event, Job, Retention, Shared, files_of};
use jitc_protocol::audit_files::{self, rotated_at};

/// More rotations than `ROTATIONS_BEFORE_ALERT` within this window is an anomaly: a
/// flood that pushes the history out.
const ROTATION_WINDOW: Duration = Duration::from_secs(600);
const ROTATIONS_BEFORE_ALERT: usize = 2;

/// The largest batch buffer kept between batches (one burst's is given back).
const KEPT_BUFFER: usize = 256 << 10;

/// Debug builds only: while a FIFO is at `JITC_TEST_SYNC_GATE`, each sync of the log
/// first reads a byte from it, so a test can hold a record written but not yet on
/// disk for as long as it needs to look (a lease granted, its values not yet sent).
#[cfg(debug_assertions)]
fn test_sync_gate() {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let Some(path) = std::env::var_os("JITC_TEST_SYNC_GATE") else {
        return;
    };
    if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_fifo())
        && let Ok(mut fifo) = File::open(&path)
    {
        let _ = fifo.read(&mut [0u8]);
    }
}

/// Where a batch found the chain, to go back to if it cannot be written.
struct Snapshot {
    state: chain::State,
    give_up: u64,
    size: u64,
    needs_marker: Option<Option<String>>,
}

/// The last `max` bytes of `path` at most, from the start of a line: all the chain
/// needs to resume (the last keyed line; the unkeyed ones after it are given up), and a
/// file grown far past the rotation size is not read whole into memory.
/// Why the log says the previous agent did not stop cleanly, if it does. A clean stop
/// locks first (a keyed `lock` line) and then writes `stop` last. Anything else — a log
/// that ends otherwise, or a `stop` after keyed lines that are not a `lock` — means the
/// agent crashed or was killed, and what it did last may be all the log shows. (Lines
/// written while locked carry no tag, so anything running as the user could append a
/// `stop`; it cannot append a keyed `lock` that verifies, so a `stop` hides a kill only
/// of an agent that was locked, holding nothing.)
fn unclean(last: Option<&str>, last_keyed: Option<&str>) -> Option<String> {
    let parsed = chain::parse(&chain::unseal(last?).0)?;
    if parsed.event != "stop" {
        return Some(format!(
            "the previous agent did not stop cleanly: the log ends with line {} ({}), not with its 'stop'; it crashed or was killed",
            parsed.seq, parsed.event
        ));
    }
    let keyed = chain::parse(&chain::unseal(last_keyed?).0)?;
    (keyed.event != "lock" && keyed.event != "stop").then(|| {
        format!(
            "the previous agent did not stop cleanly: its last keyed line, {} ({}), is not the 'lock' every stop begins with; the 'stop' after it was not written by an agent that stopped",
            keyed.seq, keyed.event
        )
    })
}

fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    if path.to_string_lossy().ends_with(audit_files::COMPRESSED) {
        // A compressed file is read from its start; only its tail is kept.
        let mut r = audit_files::open_log(path)?;
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        let mut cut = false;
        loop {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
            if bytes.len() as u64 > 2 * max {
                bytes.drain(..bytes.len() - max as usize);
                cut = true;
            }
        }
        if bytes.len() as u64 > max {
            bytes.drain(..bytes.len() - max as usize);
            cut = true;
        }
        if cut {
            let start = bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| i + 1);
            bytes.drain(..start);
        }
        return Ok(bytes);
    }
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

#[derive(Debug)]
pub(super) struct Writer {
    /// Set when the log cannot be continued safely: every batch fails with this.
    broken: Option<AuditError>,
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
    /// `audit.checkpoint`, beside the log.
    sidecar: Sidecar,
    /// When the last rotations happened.
    rotations: VecDeque<Instant>,
    /// Wakes whoever raises the anomalies the writer finds (`Shared::alerts`).
    alerts: Arc<Notify>,
    /// Files retention removes once the marker that says so is on disk.
    prune: Vec<PathBuf>,
    /// The last sequence number in them, for that marker.
    pruned_through: Option<u64>,
    /// Buffers kept for the next line and the next batch (see `body`).
    scratch: Vec<u8>,
    lines: String,
}

impl Writer {
    pub(super) fn open(
        config: AuditConfig,
        shared: Arc<Mutex<Shared>>,
        renaming: Arc<Mutex<()>>,
        alerts: Arc<Notify>,
    ) -> Writer {
        let mut w = Writer {
            sidecar: Sidecar::new(&config.path),
            rotations: VecDeque::new(),
            alerts,
            prune: Vec::new(),
            pruned_through: None,
            scratch: Vec::new(),
            lines: String::new(),
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
        let rotated = audit_files::rotated_files(&self.config.path);
        // What a crash left half done: temp files to drop, and (once the files are
        // read, below) compressions to finish.
        remove_compress_temps(&self.config.path);
        let unpacked: Vec<PathBuf> = rotated
            .iter()
            .filter(|r| r.last_seq.is_some() && !r.compressed)
            .map(|r| r.path.clone())
            .collect();
        let files = std::iter::once(self.config.path.clone())
            .chain(rotated.into_iter().rev().map(|r| r.path));
        for (i, path) in files.enumerate() {
            // Only regular files (`--audit-log /dev/full` is one way to test failing).
            if !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let bytes = match read_tail(&path, 2 * self.config.max_bytes + (1 << 20)) {
                Ok(b) => b,
                Err(e) => {
                    self.broken = Some(AuditError::io("read", &path, e));
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
                    self.broken = Some(AuditError::io("cut the torn last line off", &path, e));
                    return;
                }
            }
            if whole == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes[..whole]);
            let mut last = None;
            let mut last_keyed = None;
            for line in text.lines().filter(|l| !l.is_empty()) {
                self.state.follow(line);
                last = Some(line);
                if chain::unseal(line).1.is_some() {
                    last_keyed = Some(line);
                }
            }
            if let Some(why) = unclean(last, last_keyed) {
                self.alert(AnomalyKind::UncleanShutdown, why);
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
        drop(s);
        for f in unpacked {
            spawn_compress(f, self.renaming.clone());
        }
    }

    /// Opens the log (creating it, 0600, in a 0700 directory), or reopens it when the
    /// file the agent holds was removed or replaced: lines written to an unlinked file
    /// would be lost. A new file opens with a `log_continued` line.
    fn ensure_open(&mut self) -> Result<(), AuditError> {
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
            .map_err(|e| AuditError::io("open", &path, e))?;
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

    fn set_error(&self, error: Option<AuditError>) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).error = error;
    }

    /// An anomaly found by the writer, for the agent to raise.
    fn alert(&self, kind: AnomalyKind, description: String) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .alerts
            .push((kind, description));
        self.alerts.notify_one();
    }

    /// Stops carrying the unkeyed lines since the last keyed one: the next line says
    /// how many there were, and the chain goes on without them.
    fn give_up_pending(&mut self) {
        self.give_up += self.state.pending;
        self.state.drop_pending();
    }

    /// The body of the next line, the event with its sequence number and time, in
    /// `self.scratch` (kept from line to line, as `self.lines` is from batch to batch:
    /// a grant's line is ~1–2 KB, and allocating, growing and freeing buffers that size
    /// cost more instructions per lease than serializing; callgrind, BENCHMARKS.md).
    fn body(&mut self, event: &mut Event) -> &str {
        event.unsealed_before = (self.give_up > 0).then(|| std::mem::take(&mut self.give_up));
        self.state.seq += 1;
        event.seq = self.state.seq;
        event.bound();
        // A record tried again keeps the time it first had.
        if event.time.is_empty() {
            event.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        }
        // Strings, numbers and raw JSON: serializing cannot fail, and makes UTF-8.
        self.scratch.clear();
        if serde_json::to_writer(&mut self.scratch, event).is_err() {
            self.scratch.clear();
        }
        std::str::from_utf8(&self.scratch).unwrap_or_default()
    }

    /// Starts a new file when this one is full: `audit.log` becomes `audit.log.SEQ`
    /// (its last sequence number; compressed to `.zst` in the background), and the new
    /// file opens with a `log_continued` line carrying the chain's tag — and, when
    /// retention removes older files, what it removes (they go once that line is on
    /// disk).
    fn rotate_if_full(&mut self) -> Result<(), AuditError> {
        if self.size < self.config.max_bytes {
            return Ok(());
        }
        let path = self.config.path.clone();
        let to = rotated_at(&path, self.state.seq);
        let retention = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retention;
        {
            let _renaming = self.renaming.lock().unwrap_or_else(|p| p.into_inner());
            fs::rename(&path, &to).map_err(|e| AuditError::io("rotate", &path, e))?;
        }
        spawn_compress(to, self.renaming.clone());
        // Only while keyed: the marker that says what goes must carry a tag, or
        // `verify` could not tell it from one anybody wrote.
        let (prune, through) = if self.key.is_some() {
            plan_pruning(
                &path,
                retention,
                self.state.seq,
                self.config.max_bytes,
                SystemTime::now(),
            )
        } else {
            (Vec::new(), None)
        };
        self.prune = prune;
        let now = Instant::now();
        self.rotations.push_back(now);
        while self
            .rotations
            .front()
            .is_some_and(|t| now.duration_since(*t) > ROTATION_WINDOW)
        {
            self.rotations.pop_front();
        }
        if self.rotations.len() > ROTATIONS_BEFORE_ALERT {
            self.alert(
                AnomalyKind::LogRotation,
                format!(
                    "the audit log rotated {} times within 10 minutes: something may be flooding it to push history out (retention keeps {})",
                    self.rotations.len(),
                    retention.describe()
                ),
            );
        }
        self.file = None;
        self.dir_dirty = true;
        self.needs_marker = Some(through.map(|t| {
            format!(
                "retention removes {} older file{} (through sequence {t}): {}",
                self.prune.len(),
                if self.prune.len() == 1 { "" } else { "s" },
                retention.describe()
            )
        }));
        self.pruned_through = through;
        self.ensure_open()
    }

    /// Writes one batch (with a sync, unless turned off) and answers its waiters. What
    /// nobody waits for comes back if the batch could not be written, to be tried again.
    pub(super) async fn commit(&mut self, batch: Vec<Job>) -> Vec<Job> {
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
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        let mut keyed = None;
        let mut decisions = false;
        if let Some(reason) = self.needs_marker.take() {
            // Where the chain stands, unkeyed lines given up now included.
            let pending = self.state.pending + self.give_up;
            let pruned_through = self.pruned_through.take();
            let mut marker = Event {
                prev_tag: Some(chain::hex(&self.state.prev)),
                pending: (pending > 0).then_some(pending),
                pending_digest: (self.state.pending > 0).then(|| chain::hex(&self.state.digest)),
                pruned_through,
                pruned_files: pruned_through.map(|_| self.prune.len() as u64),
                rotated_by: Some("seq"),
                reason,
                ..Event::new(EventKind::LogContinued)
            };
            self.append(&mut marker, &mut lines, &mut keyed);
        }
        for job in batch {
            match job {
                Job::Key(k) => self.key = k,
                Job::Flush(w) => waiters.push(w),
                // `run_writer` takes these out of a batch.
                Job::NewChain(answer) => {
                    let _ = answer.send(Err(AuditError::NewChainMidBatch));
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
            self.keep_lines(lines);
            for w in waiters {
                let _ = w.send(Ok(()));
            }
            return Vec::new();
        }
        let written = ready.and_then(|()| self.write(&lines));
        self.keep_lines(lines);
        let result = match written {
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
                // The checkpoint beside the log, before anyone hears of the decision.
                if decisions && let (Some((seq, tag)), Some(key)) = (keyed, self.key.as_ref()) {
                    match self.sidecar.write(key, seq, &tag) {
                        Ok(()) => {
                            self.shared
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .sidecar_written = true;
                        }
                        Err(e) => tracing::warn!(
                            path = %self.sidecar.path().display(),
                            error = %e,
                            "cannot write the audit checkpoint"
                        ),
                    }
                }
                let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                s.last_seq = self.state.seq;
                if keyed.is_some() {
                    s.last_keyed = keyed;
                }
                drop(s);
                // The marker that says what retention removes is on disk: remove it.
                if !self.prune.is_empty() {
                    let _renaming = self.renaming.lock().unwrap_or_else(|p| p.into_inner());
                    for f in self.prune.drain(..) {
                        if let Err(e) = fs::remove_file(&f) {
                            tracing::warn!(file = %f.display(), error = %e, "cannot remove an audit file retention let go");
                        }
                    }
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
                    self.broken = Some(AuditError::Unremovable(cut.to_string()));
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
    pub(super) fn new_chain(&mut self) -> Result<Option<PathBuf>, AuditError> {
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
        let dir = crate::fsperm::create_first_free(&format!("{name}.earlier-vault-{stamp}"), |n| {
            fs::DirBuilder::new().mode(0o700).create(parent.join(n))
        })
        .map(|(n, ())| parent.join(n))
        .map_err(|(n, e)| AuditError::io("create", &parent.join(n), e))?;
        {
            // All the files or none: a move that fails is undone.
            let _renaming = self.renaming.lock().unwrap_or_else(|p| p.into_inner());
            let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
            let sidecar = Some(self.sidecar.path().to_path_buf()).filter(|p| p.is_file());
            for f in files_of(&path).into_iter().chain(sidecar) {
                let Some(n) = f.file_name() else { continue };
                let to = dir.join(n);
                if let Err(e) = fs::rename(&f, &to) {
                    for (from, to) in moved.iter().rev() {
                        let _ = fs::rename(to, from);
                    }
                    let _ = fs::remove_dir(&dir);
                    return Err(AuditError::io("move", &f, e));
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
        self.sidecar.reset();
        // Nothing of the earlier vault's records stays in memory either.
        self.lines = String::new();
        self.scratch = Vec::new();
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
        let start = lines.len();
        lines.push_str(self.body(event));
        self.state.append_in_place(lines, start, self.key.as_ref());
        if self.scratch.capacity() > KEPT_BUFFER {
            self.scratch = Vec::new();
        }
        if self.key.is_some() {
            *keyed = Some((self.state.seq, self.state.prev));
        }
        lines.push('\n');
    }

    /// Keeps a batch's buffer for the next batch, unless a burst grew it large.
    fn keep_lines(&mut self, lines: String) {
        if lines.capacity() <= KEPT_BUFFER {
            self.lines = lines;
        }
    }

    /// Puts the chain back where `snapshot` found it.
    fn restore(&mut self, snapshot: Snapshot) {
        self.state = snapshot.state;
        self.give_up = snapshot.give_up;
        self.size = snapshot.size;
        self.needs_marker = snapshot.needs_marker;
    }

    /// Appends `lines`: one small write to the page cache, done in place, to the file
    /// `commit` has just made sure of (`ensure_open`, then `rotate_if_full`).
    fn write(&mut self, lines: &str) -> Result<(), AuditError> {
        let file = self.file.as_deref().ok_or(AuditError::NotOpen)?;
        let mut file: &File = file;
        file.write_all(lines.as_bytes())
            .map_err(|e| AuditError::io("write", &self.config.path, e))?;
        self.size += lines.len() as u64;
        Ok(())
    }

    /// `fdatasync`, off the runtime: everything written so far is on disk — and the
    /// directory too when a file was created or renamed in it.
    async fn sync(&mut self) -> Result<(), AuditError> {
        if !self.config.sync {
            return Ok(());
        }
        let Some(file) = self.file.clone() else {
            return Err(AuditError::NotOpen);
        };
        let path = self.config.path.clone();
        let dir = std::mem::take(&mut self.dir_dirty)
            .then(|| path.parent().map(Path::to_path_buf))
            .flatten();
        // The checkpoint written after the last batch, synced beside this one.
        let sidecar = self.sidecar.take_unsynced().map(|f| {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = f.sync_data() {
                    tracing::warn!(error = %e, "cannot sync the audit checkpoint");
                }
            })
        });
        let synced = tokio::task::spawn_blocking(move || {
            #[cfg(debug_assertions)]
            test_sync_gate();
            file.sync_data()?;
            match dir {
                Some(d) => File::open(d)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the sync did not finish")))
        .map_err(|e| AuditError::io("sync", &self.config.path, e));
        if let Some(s) = sidecar {
            let _ = s.await;
        }
        if synced.is_err() {
            self.dir_dirty = true;
        }
        synced
    }
}

/// The oldest rotated files retention lets go (oldest first, none kept before one that
/// goes, so the log stays one run), and the last sequence number in them.
/// `seq` is the last sequence number written (in the file just rotated); no file the
/// agent wrote goes past it, nor past `max_bytes` (plus a batch) in size.
fn plan_pruning(
    path: &Path,
    retention: Retention,
    seq: u64,
    max_bytes: u64,
    now: SystemTime,
) -> (Vec<PathBuf>, Option<u64>) {
    use std::os::unix::fs::MetadataExt;
    let rotated = audit_files::rotated_files(path);
    // What a file holds on disk (a sparse planted one holds nothing), and never more
    // than a file of the agent's can: planted files cannot push the real ones out.
    let size = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.len().min(m.blocks() * 512).min(max_bytes + (1 << 20)))
            .unwrap_or(0)
    };
    let mut total: u64 = rotated.iter().map(|r| size(&r.path)).sum::<u64>() + size(path);
    let cutoff = retention
        .days
        .and_then(|d| now.checked_sub(Duration::from_secs(u64::from(d) * 86_400)));
    let mut out = Vec::new();
    let mut through = None;
    for r in rotated {
        let over = total > retention.bytes;
        // Within the size and with no age limit, nothing goes: the oldest file is not
        // read (a compressed one would be decompressed whole) at every rotation.
        if !over && cutoff.is_none() {
            break;
        }
        // Its last record as written — sequence number and time — not its name or its
        // mtime, which anybody can set; a file whose end cannot be read, or that
        // claims to be newer than the log, is kept (and so is all after it).
        let Some((last, time)) = last_record_of(&r.path).filter(|(s, _)| *s <= seq) else {
            break;
        };
        if r.last_seq.is_some_and(|named| named != last) {
            break;
        }
        let old = cutoff.is_some_and(|c| time < c);
        if !over && !old {
            break;
        }
        total = total.saturating_sub(size(&r.path));
        through = Some(last);
        out.push(r.path);
    }
    (out, through)
}

/// The sequence number and time of a rotated file's last record.
fn last_record_of(path: &Path) -> Option<(u64, SystemTime)> {
    let bytes = read_tail(path, 1 << 20).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let last = text.lines().rev().find(|l| !l.is_empty())?;
    let (body, _) = chain::unseal(last);
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let time = humantime::parse_rfc3339_weak(v.get("time")?.as_str()?).ok()?;
    Some((v.get("seq")?.as_u64()?, time))
}

/// zstd's level for rotated files. The log is so repetitive that the fastest level
/// packs it best too: on 10 MiB of grants and releases, level 1 makes 448 kB at
/// 2,050 MB/s and level 9 519 kB at 205 MB/s (`zstd -b1 -e9`). At 9, compressing took
/// a tenth of the agent's CPU under a sustained lease load.
const COMPRESSION_LEVEL: i32 = 1;

/// Compresses a rotated file in the background: `FILE.zst.tmp` written and synced,
/// renamed to `FILE.zst` (its time kept: retention goes by it), then `FILE` removed —
/// all under the renaming lock, so a reader sees one or the other. A file removed
/// meanwhile (retention) is not brought back.
fn spawn_compress(file: PathBuf, renaming: Arc<Mutex<()>>) {
    let spawned = std::thread::Builder::new()
        .name("audit-compress".into())
        .spawn(move || {
            if let Err(e) = compress(&file, &renaming) {
                tracing::warn!(file = %file.display(), error = %e, "cannot compress a rotated audit file; it stays as it is");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start compressing a rotated audit file");
    }
}

fn compress(file: &Path, renaming: &Mutex<()>) -> std::io::Result<()> {
    let done = audit_files::compressed(file);
    let tmp = PathBuf::from(format!("{}.tmp", done.display()));
    let src = File::open(file)?;
    let modified = src.metadata()?.modified()?;
    let _ = fs::remove_file(&tmp);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let result = (|| {
        let mut enc = zstd::stream::write::Encoder::new(&out, COMPRESSION_LEVEL)?;
        // A zstd block at a time: BufReader's 8 KiB made ~1,300 reads of a 10 MiB file.
        std::io::copy(
            &mut std::io::BufReader::with_capacity(128 << 10, src),
            &mut enc,
        )?;
        enc.finish()?;
        out.set_modified(modified)?;
        out.sync_all()?;
        let _renaming = renaming.lock().unwrap_or_else(|p| p.into_inner());
        if !file.exists() {
            return Err(std::io::Error::other("removed while being compressed"));
        }
        fs::rename(&tmp, &done)?;
        if let Some(dir) = file.parent() {
            File::open(dir)?.sync_all()?;
        }
        fs::remove_file(file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `.zst.tmp` files a stopped agent left half written.
fn remove_compress_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && n.ends_with(".zst.tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
}

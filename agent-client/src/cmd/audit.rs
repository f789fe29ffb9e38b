//! `jitc audit`: the record of every decision, as a table a person reads (or JSON
//! lines), filtered, optionally followed; `jitc audit verify`: is it intact?

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Subcommand;
use jitc::start::connect_or_start;
use jitc::{Error, Result, prompt};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde_json::Value;

use jitc_protocol::display::visible;
use jitc_protocol::kinds::{AnomalyKind, EventKind};

use clap_complete::engine::ArgValueCandidates;

use super::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print the matching records as JSON lines, as stored
    #[arg(long)]
    json: bool,
    /// Keep printing records as they are written
    #[arg(long, short)]
    follow: bool,
    /// Only records since a time: a duration ago (1h, 30m) or an RFC 3339 time
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Only records about this secret
    #[arg(long, value_name = "NAME", add = ArgValueCandidates::new(super::completions::secret_names))]
    secret: Option<String>,
    /// Only records of this kind (lease_granted, anomaly, …)
    #[arg(long, value_name = "KIND")]
    event: Option<String>,
    /// Only anomalies
    #[arg(long)]
    anomalies: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Check the chain of tags (edits, drops, reorders, insertions, a cut-off tail)
    #[command(after_help = "Examples:
  jitc audit verify
  jitc audit verify || jitc audit --anomalies --since 1d")]
    Verify,
    /// Accept a log that was cut short or started afresh, so that verify goes on from
    /// it as it now is; the break stays on record. Asks for the vault passphrase
    #[command(after_help = "Examples:
  jitc audit accept            # after restoring the log from a backup on purpose
  printf '%s\\n' \"$PASSPHRASE\" | jitc audit accept --passphrase-stdin")]
    Accept {
        /// Read the passphrase from the first line of stdin instead of the terminal
        #[arg(long)]
        passphrase_stdin: bool,
    },
}

struct Filter {
    since: Option<SystemTime>,
    secret: Option<String>,
    event: Option<String>,
}

impl Filter {
    fn keeps(&self, v: &Value) -> bool {
        if let Some(since) = self.since {
            let t = v["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
            if t.is_none_or(|t| t < since) {
                return false;
            }
        }
        if let Some(s) = &self.secret
            && !v["secrets"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == s.as_str()))
        {
            return false;
        }
        if let Some(e) = &self.event {
            let kind = v["anomaly"].as_str();
            let named = v["event"] == e.as_str()
                || kind == Some(e.as_str())
                || kind.is_some_and(|k| e.strip_prefix("anomaly:") == Some(k));
            if !named {
                return false;
            }
        }
        true
    }
}

/// Refuses an `--event` that names no kind of record, rather than list nothing.
fn check_event(e: &str) -> Result<()> {
    let kind = e.strip_prefix("anomaly:").unwrap_or(e);
    if EventKind::parse(e).is_some() || AnomalyKind::parse(kind).is_some() {
        return Ok(());
    }
    let names = |all: &[&str]| all.join(", ");
    Err(Error::bad_input(format!(
        "no kind of record is called '{}'; use one of {}, or an anomaly: {}",
        e.escape_debug(),
        names(
            &EventKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
        ),
        names(
            &AnomalyKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
        )
    )))
}

/// `2026-11-28T15:59:00+01:00` as its local part, whether the offset is ahead of UTC,
/// and the offset.
fn split_offset(s: &str) -> Option<(&str, bool, std::time::Duration)> {
    let (base, off) = s.split_at_checked(s.len().checked_sub(6)?)?;
    let ahead = match off.as_bytes() {
        [b'+', _, _, b':', _, _] => true,
        [b'-', _, _, b':', _, _] => false,
        _ => return None,
    };
    let h: u64 = off.get(1..3)?.parse().ok()?;
    let m: u64 = off.get(4..6)?.parse().ok()?;
    Some((
        base,
        ahead,
        std::time::Duration::from_secs(h * 3600 + m * 60),
    ))
}

fn parse_since(s: &str) -> Result<SystemTime> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now() - d);
    }
    // An RFC 3339 offset (+01:00), which humantime leaves to its caller: the time
    // written is UTC plus the offset.
    if let Some((base, ahead, offset)) = split_offset(s)
        && let Ok(t) = humantime::parse_rfc3339_weak(base)
    {
        return Ok(if ahead { t - offset } else { t + offset });
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        Error::bad_input(format!(
            "bad --since '{}': give a duration (1h, 30m) or a time (2026-11-28T09:00:00Z, 2026-11-28T10:00:00+01:00)",
            s.escape_debug()
        ))
    })
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One record as a table row.
fn row(v: &Value) -> String {
    let time = v["time"].as_str().unwrap_or("");
    let time = time.get(..19).unwrap_or(time).replace('T', " ");
    let secrets = v["secrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let command = v["command"].as_str().map(name_of).unwrap_or("");
    // Who asked: the program that ran `jitc` (every request comes through `jitc`).
    let peer = &v["peer"];
    let asker = match peer["exe"].as_str().map(name_of) {
        Some("jitc") if peer["chain"][1].is_object() => &peer["chain"][1],
        _ => peer,
    };
    let requester = match (asker["exe"].as_str(), asker["pid"].as_u64()) {
        (Some(exe), Some(pid)) => {
            let profile = v["profile"]
                .as_str()
                .map(|p| format!(" [{p}]"))
                .unwrap_or_default();
            format!("{} ({pid}){profile}", name_of(exe))
        }
        _ => String::new(),
    };
    let reason = v["reason"]
        .as_str()
        .map(|r| r.strip_prefix("refused: ").unwrap_or(r));
    let approval = v["approval"].as_u64().map(|a| format!("request {a}"));
    let decision = [
        v["decision"].as_str().map(str::to_owned),
        approval,
        reason.map(str::to_owned),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(": ");
    let lease = v["lease"]
        .as_u64()
        .map(|l| format!("#{l} "))
        .unwrap_or_default();
    let event = v["event"].as_str().unwrap_or("?");
    let event = match v["anomaly"].as_str() {
        Some(kind) => format!("{event}:{kind}"),
        None => event.to_owned(),
    };
    // Anything in a record may be what a requester supplied (or, in a log edited
    // behind the agent's back, anything at all): shown escaped.
    format!(
        "{time}  {:<28} {:<24} {:<14} {:<28} {lease}{}\n",
        fit(&visible(&event), 28),
        fit(&visible(&secrets), 24),
        fit(&visible(command), 14),
        fit(&visible(&requester), 28),
        visible(&decision),
    )
}

/// `s` cut to `width` characters (the cut marked `…`), so the columns line up; the
/// whole record is in `--json`.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut cut: String = s.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

fn show(line: &str, filter: &Filter, json: bool, out: &mut String) {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    if filter.keeps(&v) {
        if json {
            out.push_str(line);
            out.push('\n');
        } else {
            out.push_str(&row(&v));
        }
    }
}

/// Prints a verification report on stderr; the exit code it deserves.
fn report(r: &jitc_protocol::AuditReport) -> u8 {
    match &r.problem {
        None => {
            let unsealed = if r.unsealed > 0 {
                format!(
                    "; the last {} written while the vault was locked {} sealed at the next unlock",
                    r.unsealed,
                    if r.unsealed == 1 { "is" } else { "are" }
                )
            } else {
                String::new()
            };
            let never = match (r.never_sealed, &r.never_sealed_at) {
                (0, _) => String::new(),
                (n, at) => format!(
                    "; {} written while the vault was locked {} never sealed (the agent stopped before an unlock{}): nothing vouches for them",
                    super::plural(n, "line"),
                    if n == 1 { "was" } else { "were" },
                    at.as_deref()
                        .map(|a| format!("; the first run ends before {a}"))
                        .unwrap_or_default()
                ),
            };
            jitc::error::note(&format!(
                "audit log intact: {} in {}{unsealed}{never}",
                super::plural(r.lines, "record"),
                super::plural(r.files.len() as u64, "file")
            ));
            0
        }
        Some(p) => {
            jitc::error::note(&format!("audit log NOT intact: {p}"));
            if p.contains("cut off") {
                jitc::error::note(
                    "if you know why (a lost state directory, a vault copied from another machine), 'jitc audit accept' keeps the break on record and verifies from the log as it now is",
                );
            }
            1
        }
    }
}

pub fn run(args: Args) -> Result<u8> {
    let mut client = connect_or_start()?;
    match args.action {
        Some(Action::Verify) => return Ok(report(&client.audit_verify()?)),
        Some(Action::Accept { passphrase_stdin }) => {
            let before = client.audit_verify()?;
            let Some(problem) = &before.problem else {
                report(&before);
                jitc::error::note("nothing to accept");
                return Ok(0);
            };
            jitc::error::note(&format!("audit log NOT intact: {problem}"));
            jitc::error::note(
                "accepting keeps this on record (audit_accepted) and verifies the log from here on as it now is",
            );
            let passphrase = if passphrase_stdin {
                prompt::read_stdin_line("the passphrase")?
            } else {
                prompt::ask_hidden("Vault passphrase to accept the audit log as it is: ")?
            };
            let after = client.audit_accept(passphrase)?;
            return Ok(report(&after));
        }
        None => {}
    }
    let path = PathBuf::from(client.status()?.audit.path);
    drop(client);
    if let Some(e) = &args.event {
        check_event(e)?;
    }
    let filter = Filter {
        since: args.since.as_deref().map(parse_since).transpose()?,
        secret: args.secret,
        event: if args.anomalies {
            Some("anomaly".into())
        } else {
            args.event
        },
    };
    let mut out = String::new();
    if !args.json {
        out.push_str(&format!(
            "{:<19}  {:<28} {:<24} {:<14} {:<28} DECISION\n",
            "TIME (UTC)", "EVENT", "SECRETS", "COMMAND", "REQUESTER"
        ));
    }
    // Watching starts before the reading, so nothing written in between is missed.
    let watch = args.follow.then(|| Watch::new(&path)).transpose()?;
    let mut tail = Tail::default();
    let mut current = None;
    let present = jitc_protocol::audit_files::files_of(&path);
    if present.is_empty() {
        jitc::error::note(&format!(
            "no audit log at {} yet (see 'jitc status')",
            path.display()
        ));
    }
    for f in present {
        if f == path {
            let mut file = std::fs::File::open(&f).map_err(|e| cannot_read(&f, &e))?;
            tail.ino = file.metadata().ok().map(|m| m.ino());
            emit(&std::mem::take(&mut out))?;
            show_new_lines(&mut tail, &f, &mut file, &filter, args.json)?;
            current = Some(file);
        } else {
            // A rotated file, compressed (`.zst`) or not yet — or since (read from
            // its `.zst`), or removed by retention since (nothing to read). Read a
            // line at a time: a year of history is gigabytes.
            if let Some(r) =
                jitc_protocol::audit_files::open_listed(&f).map_err(|e| cannot_read(&f, &e))?
            {
                each_line(&f, r, |line| {
                    show(line, &filter, args.json, &mut out);
                    if out.len() >= EMIT_AT {
                        emit(&out)?;
                        out.clear();
                    }
                    Ok(())
                })?;
            }
        }
    }
    emit(&out)?;
    if let Some(watch) = watch {
        follow(&path, watch, current, tail, &filter, args.json)?;
    }
    Ok(0)
}

/// Output is written out whenever this much is waiting.
const EMIT_AT: usize = 1 << 20;

/// Hands each line of `r` (the log file `path`) to `each`, one at a time. A line longer
/// than any record is not held: it is skipped, and said, for `jitc audit verify` to
/// judge.
fn each_line(path: &Path, r: impl Read, mut each: impl FnMut(&str) -> Result<()>) -> Result<()> {
    use jitc_protocol::audit_files::{LogLine, next_line};
    let mut r = std::io::BufReader::new(r);
    let mut next = || next_line(&mut r).map_err(|e| cannot_read(path, &e));
    let mut n = 0u64;
    while let Some(line) = next()? {
        n += 1;
        match line {
            LogLine::Line { text, .. } => each(&text)?,
            LogLine::TooLong => {
                jitc::error::note(&format!(
                    "{} line {n}: longer than any record the agent writes, so not shown; run 'jitc audit verify'",
                    path.display()
                ));
                // The rest of that line, a piece at a time.
                while let Some(LogLine::TooLong | LogLine::Line { ended: false, .. }) = next()? {}
            }
        }
    }
    Ok(())
}

fn cannot_read(path: &Path, e: &std::io::Error) -> Error {
    Error::local(
        jitc_protocol::ErrorCode::IoErr,
        format!("cannot read {} ({e})", path.display()),
    )
}

/// Where reading the newest file has got to.
#[derive(Default)]
struct Tail {
    ino: Option<u64>,
    pos: u64,
    /// A line not yet ended (being written right now).
    partial: Vec<u8>,
    /// The line being skipped: longer than any record.
    skipping: bool,
    /// The read buffer, kept: `--follow` reads at every change to the log.
    chunk: Vec<u8>,
}

/// The newest file is read this much at a time, so that it is never held whole.
const CHUNK: usize = 256 << 10;

impl Tail {
    /// Hands `each` the whole lines written to `file` (at `path`) since the last read,
    /// reading a chunk at a time. A line longer than any record is skipped, and said.
    fn read(
        &mut self,
        path: &Path,
        file: &mut std::fs::File,
        each: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        if file.seek(SeekFrom::Start(self.pos)).is_err() {
            return Ok(());
        }
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(CHUNK, 0);
        let read = self.read_through(&mut chunk, path, file, each);
        self.chunk = chunk;
        read
    }

    /// `read`'s loop, with its buffer.
    fn read_through(
        &mut self,
        chunk: &mut [u8],
        path: &Path,
        file: &mut std::fs::File,
        mut each: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        loop {
            let n = match file.read(chunk) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            self.pos += n as u64;
            let mut rest = &chunk[..n];
            while let Some(at) = rest.iter().position(|&b| b == b'\n') {
                if !std::mem::take(&mut self.skipping) {
                    self.partial.extend_from_slice(&rest[..at]);
                    // Whole lines only: a '\n' never falls inside a UTF-8 sequence.
                    each(&String::from_utf8_lossy(&self.partial))?;
                }
                self.partial.clear();
                rest = &rest[at + 1..];
            }
            if !self.skipping {
                self.partial.extend_from_slice(rest);
            }
            if self.partial.len() as u64 > jitc_protocol::audit_files::MAX_LINE {
                jitc::error::note(&format!(
                    "{}: a line longer than any record the agent writes, not shown; run 'jitc audit verify'",
                    path.display()
                ));
                self.partial = Vec::new();
                self.skipping = true;
            }
        }
    }
}

/// Changes in the log's directory: appends, and rotation's renames and creations.
struct Watch(Inotify);

impl Watch {
    fn new(path: &Path) -> Result<Watch> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let fail = |e: nix::Error| {
            Error::local(
                jitc_protocol::ErrorCode::IoErr,
                format!("cannot watch {} for new records ({e})", dir.display()),
            )
        };
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(fail)?;
        inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_MODIFY
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_DELETE,
            )
            .map_err(fail)?;
        Ok(Watch(inotify))
    }
}

/// Prints the lines `tail` has not read yet from `file` (at `path`) that `filter` keeps.
fn show_new_lines(
    tail: &mut Tail,
    path: &Path,
    file: &mut std::fs::File,
    filter: &Filter,
    json: bool,
) -> Result<()> {
    let mut out = String::new();
    tail.read(path, file, |line| {
        show(line, filter, json, &mut out);
        if out.len() >= EMIT_AT {
            emit(&out)?;
            out.clear();
        }
        Ok(())
    })?;
    if out.is_empty() { Ok(()) } else { emit(&out) }
}

/// Prints records as they are appended, across rotation, until interrupted.
/// `file` is the handle the listing read `audit.log` through (so nothing written between
/// the two is missed, even across a rotation in between).
fn follow(
    path: &Path,
    watch: Watch,
    mut file: Option<std::fs::File>,
    mut tail: Tail,
    filter: &Filter,
    json: bool,
) -> Result<()> {
    loop {
        let now = std::fs::metadata(path).ok();
        let rotated = now.as_ref().map(|m| m.ino()) != tail.ino
            || now.as_ref().is_some_and(|m| m.len() < tail.pos);
        // Read after looking: once rotated, the old file gets nothing more, so reading
        // it to the end now leaves nothing behind.
        if let Some(f) = file.as_mut() {
            show_new_lines(&mut tail, path, f, filter, json)?;
        }
        if rotated {
            // The old file's last lines were read above; on to the new one — as it is
            // when opened (its inode taken from the open file: it may have rotated
            // again since the look above).
            let next = std::fs::File::open(path).ok();
            let next_ino = next
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.ino());
            // A file that came and went between the two (rotated away before it could
            // be opened): read it whole, from where rotation put it.
            if let Some(missed) = now.map(|m| m.ino())
                && Some(missed) != next_ino
                && let Some(old) = jitc_protocol::audit_files::rotated_files(path)
                    .into_iter()
                    .rev()
                    .map(|r| r.path)
                    .find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == missed))
                && let Ok(mut f) = std::fs::File::open(&old)
            {
                show_new_lines(&mut Tail::default(), &old, &mut f, filter, json)?;
            }
            file = next;
            tail = Tail {
                ino: next_ino,
                ..Tail::default()
            };
            continue;
        }
        if let Err(e) = watch.0.read_events() {
            return Err(Error::local(
                jitc_protocol::ErrorCode::IoErr,
                format!("cannot watch the audit log ({e})"),
            ));
        }
    }
}

//! `jitc scan`: plaintext credentials lying in a tree (or a file) where a coding agent
//! can read them. Git-ignored files are included on purpose (agents read those too);
//! `.git`, `target` and `node_modules` are skipped, and so is whatever a `.jitcignore`
//! (gitignore syntax) lists and any line marked `jitc:ignore`. Findings name a file, a
//! line and a kind, never the value.
//!
//! The rules are in `lines` (text, line by line), `json` (JSON, parsed) and `values`
//! (what a name or a value looks like, shared with `jitc import`).

mod json;
mod lines;
mod values;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use jitc_protocol::ErrorCode;
use serde::Serialize;

use crate::error::{Error, Result};

pub use values::plain_setting;

/// Files larger than this are not read (credentials live in small files).
pub const MAX_FILE: u64 = 5 << 20;
/// A `.jitcignore` larger than this is refused rather than read.
const MAX_IGNORE_FILE: u64 = 1 << 20;
const SKIP_DIRS: [&str; 3] = [".git", "target", "node_modules"];
/// The per-directory ignore file, in gitignore syntax.
pub const IGNORE_FILE: &str = ".jitcignore";
/// A line holding this is not reported.
pub const IGNORE_MARKER: &str = "jitc:ignore";
/// Bytes looked at to tell a binary file (a NUL among them) from text.
const BINARY_PROBE: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub path: String,
    pub line: usize,
    pub kind: String,
}

/// What a scan found, and what it could not look at.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Files over `MAX_FILE`.
    pub too_large: usize,
    /// Files and directories that could not be read, and the first of them with why.
    pub unreadable: usize,
    pub first_unreadable: Option<(String, String)>,
    /// Files looked at.
    pub files: usize,
    /// The walk stopped at its budget of files (`scan_at_most`): the rest was not read.
    pub stopped: bool,
    budget: usize,
}

impl Report {
    fn note_unreadable(&mut self, shown: &str, e: &io::Error) {
        self.unreadable += 1;
        if self.first_unreadable.is_none() {
            self.first_unreadable = Some((shown.to_owned(), os_reason(e)));
        }
    }
}

/// `e` without its `(os error N)` tail, for one-line messages.
pub fn os_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Text a file supplied (a path, a key), made safe to print: control characters,
/// backslashes and bidirectional overrides escaped, and cut at 200 characters.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == 200 {
            out.push('…');
            break;
        }
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || c == '\\' || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every finding in `path` (a directory, walked, or one file), in path and line order.
pub fn scan(path: &Path) -> Result<Report> {
    scan_at_most(path, usize::MAX)
}

/// `scan`, stopping after `budget` files (`Report::stopped` says so): for a quick look
/// at a directory of unknown size (`jitc doctor`).
pub fn scan_at_most(path: &Path, budget: usize) -> Result<Report> {
    let shown_arg = shown(&path.display().to_string());
    let cannot = |e: &io::Error| {
        let (code, hint) = if e.kind() == io::ErrorKind::NotFound {
            (
                ErrorCode::DataErr,
                "give a file or directory that exists (the default is the current directory)",
            )
        } else {
            (ErrorCode::IoErr, "check its permissions")
        };
        Error::local(
            code,
            format!("cannot scan {shown_arg}: {}; {hint}", os_reason(e)),
        )
    };
    let meta = fs::metadata(path).map_err(|e| cannot(&e))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(Error::bad_input(format!(
            "cannot scan {shown_arg}: it is not a file or a directory; give a file or directory"
        )));
    }
    let real = fs::canonicalize(path).map_err(|e| cannot(&e))?;
    let dir = if meta.is_dir() {
        real.clone()
    } else {
        real.parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_owned)
    };
    let mut ignores = Ignores::above(&dir)?;
    let mut report = Report {
        budget,
        ..Report::default()
    };
    if meta.is_dir() {
        if !ignores.ignored(&real, true) {
            walk(&real, "", &mut ignores, &mut report)?;
        }
    } else if !ignores.ignored(&real, false) {
        // A file is shown as it was named; one that cannot be read is an error, not
        // a pass.
        if let Err(e) = read_capped(&real, 0, true) {
            return Err(cannot(&e));
        }
        scan_file(&real, &path.to_string_lossy(), true, &mut report);
    }
    report.findings.sort();
    report.findings.dedup();
    Ok(report)
}

/// The `.jitcignore` files that apply at one point of the walk, outermost first.
struct Ignores {
    stack: Vec<(PathBuf, Gitignore)>,
    /// The scan starts inside a directory that an outer ignore file ignores.
    everything: bool,
}

impl Ignores {
    /// The ignore files of the directories from the repository's top (the nearest
    /// directory above `dir` that holds `.git`) down to `dir`; outside a repository,
    /// `dir`'s own.
    fn above(dir: &Path) -> Result<Ignores> {
        let top = dir
            .ancestors()
            .find(|d| fs::symlink_metadata(d.join(".git")).is_ok())
            .unwrap_or(dir);
        let mut chain: Vec<&Path> = dir.ancestors().take_while(|d| *d != top).collect();
        chain.push(top);
        chain.reverse();
        let mut ignores = Ignores {
            stack: Vec::new(),
            everything: false,
        };
        for d in chain {
            // A directory on the way that an outer file ignores hides everything in
            // it, as in git.
            if d != top && ignores.ignored(d, true) {
                ignores.everything = true;
                break;
            }
            ignores.push(d)?;
        }
        Ok(ignores)
    }

    /// Reads `dir`'s ignore file, if it has one. Returns whether it did (to pop later).
    fn push(&mut self, dir: &Path) -> Result<bool> {
        let file = dir.join(IGNORE_FILE);
        let text = match read_capped(&file, MAX_IGNORE_FILE, true) {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(None) => {
                return Err(Error::bad_input(format!(
                    "{} is over 1 MiB; keep it to patterns",
                    shown(&file.display().to_string())
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(Error::local(
                    ErrorCode::IoErr,
                    format!(
                        "cannot read {}: {}",
                        shown(&file.display().to_string()),
                        os_reason(&e)
                    ),
                ));
            }
        };
        let mut builder = GitignoreBuilder::new(dir);
        for (i, line) in text.lines().enumerate() {
            builder.add_line(Some(file.clone()), line).map_err(|e| {
                Error::bad_input(format!(
                    "{} line {}: not a gitignore pattern ({}); fix or remove it",
                    shown(&file.display().to_string()),
                    i + 1,
                    shown(&e.to_string())
                ))
            })?;
        }
        let gi = builder.build().map_err(|e| {
            Error::bad_input(format!(
                "{}: {}; fix it",
                shown(&file.display().to_string()),
                shown(&e.to_string())
            ))
        })?;
        self.stack.push((dir.to_owned(), gi));
        Ok(true)
    }

    /// Whether `path` is ignored: the deepest ignore file with a say decides, and a
    /// `!pattern` there takes it back.
    fn ignored(&self, path: &Path, is_dir: bool) -> bool {
        if self.everything {
            return true;
        }
        for (dir, gi) in self.stack.iter().rev() {
            // Only files above `path` speak for it (and `matched` expects a path under
            // its root).
            if !path.starts_with(dir) {
                continue;
            }
            match gi.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

/// Walks `dir` (shown as `prefix`), in name order. Unreadable directories and files
/// are counted, not fatal; a broken `.jitcignore` is (a gate must not pass because its
/// configuration was misread).
fn walk(dir: &Path, prefix: &str, ignores: &mut Ignores, report: &mut Report) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if prefix.is_empty() => {
            return Err(Error::local(
                ErrorCode::IoErr,
                format!(
                    "cannot scan {}: {}; check its permissions",
                    shown(&dir.display().to_string()),
                    os_reason(&e)
                ),
            ));
        }
        Err(e) => {
            report.note_unreadable(prefix.trim_end_matches('/'), &e);
            return Ok(());
        }
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        // Symlinks are not followed: they lead out of the tree or into loops, and
        // what they point to inside it is scanned where it lies.
        if ft.is_dir() {
            if !SKIP_DIRS.contains(&name.as_str()) && !ignores.ignored(&path, true) {
                // A directory's own ignore file speaks for what is inside it.
                let pushed = ignores.push(&path)?;
                let walked = walk(&path, &format!("{rel}/"), ignores, report);
                if pushed {
                    ignores.stack.pop();
                }
                walked?;
            }
        } else if ft.is_file() && !ignores.ignored(&path, false) {
            if report.files >= report.budget {
                report.stopped = true;
                return Ok(());
            }
            report.files += 1;
            scan_file(&path, &rel, false, report);
        }
        if report.stopped {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads a regular file of at most `cap` bytes: `Ok(None)` if it is larger. Opened
/// without blocking (a FIFO swapped in cannot hang the scan) and, unless `follow`,
/// without following a symlink swapped in after the directory was read.
pub fn read_capped(path: &Path, cap: u64, follow: bool) -> io::Result<Option<Vec<u8>>> {
    // O_NOCTTY: a terminal device swapped in must not become our controlling terminal.
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > cap {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The size can change between fstat and read: the cap holds either way.
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Ok(None);
    }
    Ok(Some(bytes))
}

/// Scans one file into `report`: large files are counted, binary ones skipped.
fn scan_file(path: &Path, shown_path: &str, follow: bool, report: &mut Report) {
    let bytes = match read_capped(path, MAX_FILE, follow) {
        Ok(Some(b)) => b,
        Ok(None) => {
            report.too_large += 1;
            return;
        }
        Err(e) => {
            report.note_unreadable(shown_path, &e);
            return;
        }
    };
    if bytes.iter().take(BINARY_PROBE).any(|b| *b == 0) {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (line, kind) in scan_text(&name, &text) {
        report.findings.push(Finding {
            path: shown_path.to_owned(),
            line,
            kind,
        });
    }
}

/// The findings in one file's text, as (line, kind), minus the lines marked
/// `jitc:ignore`.
pub fn scan_text(name: &str, text: &str) -> Vec<(usize, String)> {
    let lower = name.to_ascii_lowercase();
    let json = lower.ends_with(".json") || lower == ".dockercfg";
    let mut found = if json {
        json::scan_json(text, lower == ".dockercfg")
    } else {
        None
    }
    .unwrap_or_else(|| {
        let mut out = Vec::new();
        lines::scan_text(lines::FileKind::of(name), text, &mut out);
        out
    });
    if text.contains(IGNORE_MARKER) {
        let marked: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(IGNORE_MARKER))
            .map(|(i, _)| i + 1)
            .collect();
        found.retain(|(line, _)| !marked.contains(line));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_dispatch() {
        let text = "PASSWORD=Zx8Qw2Er5Ty7Ui9Op1 # jitc:ignore\nTOKEN=Q9wE2rT5yU8iO1pA3s\n";
        assert_eq!(
            scan_text("notes.txt", text),
            [(2, "secret-like assignment to TOKEN".to_owned())]
        );
        // Not JSON after all: read line by line.
        assert_eq!(
            scan_text(
                "config.json",
                "{ // c\n \"password\": \"Zx8Qw2Er5Ty7Ui9Op1\"\n}"
            ),
            [(2, "secret-like assignment to password".to_owned())]
        );
    }

    /// Lines built to make a naive matcher read them once per match: each must be read
    /// in about one pass (a quadratic scan of these would not finish).
    #[test]
    fn adversarial_lines_stay_linear() {
        const N: usize = 300_000;
        let lines = [
            format!("x = \"{}", "\\\"".repeat(N)),
            "sk-".repeat(N),
            "-eyJ".repeat(N),
            "-----BEGIN ".repeat(N),
            "a://".repeat(N),
            format!("\"{}'{}", "'".repeat(N), "`".repeat(N)),
        ];
        for line in &lines {
            assert!(scan_text("x.txt", line).is_empty());
        }
        let json = format!("{{\"k\": \"{}\"}}", "sk-".repeat(N));
        assert!(scan_text("x.json", &json).is_empty());
    }

    #[test]
    fn shown_escapes() {
        assert_eq!(shown("a\nb\\c\u{202e}d"), "a\\nb\\\\c\\u{202e}d");
        assert_eq!(shown(&"x".repeat(300)).chars().count(), 201);
    }
}

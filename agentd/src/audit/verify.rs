//! `jitc audit verify`: the whole log, across rotated files, against the chain and the
//! checkpoint.

use std::io::Read;
use std::path::{Path, PathBuf};

use jitc_protocol::AuditReport;
use jitc_protocol::audit_files::{self, LogLine};

use super::chain::{self, Key, Tag};

/// Log files (oldest first), each opened (a compressed one, decompressing) or not.
pub type Opened = Vec<(PathBuf, std::io::Result<Box<dyn Read + Send>>)>;

/// Checks `files` (oldest first) with `key` against `checkpoints`, keyed lines the
/// agent knows it wrote (in memory, and from the vault). With `whole_log` (the current
/// file, and how many numbered files the old rotation kept), `files` are all there is:
/// a log that goes on from older files must have them all, unless retention removed
/// them — said by a `log_continued` line's `pruned_through`, which the chain vouches
/// for — or (before retention) the old rotation dropped the oldest of a full set of
/// numbered files (files with no line in them do not count).
pub fn verify_files(
    opened: Opened,
    key: &Key,
    checkpoints: &[(u64, Tag)],
    whole_log: Option<(&Path, usize)>,
) -> AuditReport {
    let names: Vec<String> = opened.iter().map(|f| f.0.display().to_string()).collect();
    let mut stats = Stats::default();
    let mut lines = Lines {
        files: opened.into_iter().collect(),
        whole_log: whole_log.map(|(p, _)| p),
        current: None,
        stats: &mut stats,
    };
    let mut check = chain::verify(key, lines.by_ref(), checkpoints);
    // Drain what the chain did not read (it stops at the first problem): the counts
    // below are of the whole log.
    if check.problem.is_none() {
        lines.for_each(drop);
    }
    if let Some(e) = stats.error.take() {
        return AuditReport {
            files: names,
            lines: 0,
            problem: Some(e),
            unsealed: 0,
            never_sealed: 0,
            never_sealed_at: None,
        };
    }
    let (rotated_files, numbered) = (stats.rotated, stats.numbered);
    let first_parsed = stats
        .first
        .as_ref()
        .and_then(|(_, _, l)| chain::parse(&chain::unseal(l).0));
    // The old rotation's rule (it dropped a file only when all nine numbered ones were
    // there) holds only for a log that old rotation wrote: not when the first marker
    // is one a writer with retention wrote (numbered files made of its files).
    if let Some((_, keep)) = whole_log
        && let Some((name, n, _)) = &stats.first
        && let Some(p) = first_parsed
        && (numbered < keep || p.rotated_by_seq)
        && p.event == "log_continued"
        && stats
            .pruned_through
            .is_none_or(|through| through.saturating_add(1) < p.seq)
    {
        check.problem.get_or_insert_with(|| {
            format!(
                "{name} line {n}: the log goes on from older files, but older files were removed, and not by retention (it records what it removes; {rotated_files} rotated file{} here)",
                if rotated_files == 1 { " is" } else { "s are" }
            )
        });
    }
    AuditReport {
        files: names,
        lines: check.lines,
        problem: check.problem,
        unsealed: check.unsealed,
        never_sealed: check.never_sealed,
        never_sealed_at: check.never_sealed_at,
    }
}

/// What reading the files found, besides the chain.
#[derive(Default)]
struct Stats {
    /// Rotated files with a line in them, and how many are numbered ones of the old
    /// rotation (`audit.log.1` … `.9`).
    rotated: usize,
    numbered: usize,
    /// The first line of the log: (file, line number, text).
    first: Option<(String, usize, String)>,
    /// The most that keyed `log_continued` lines say retention removed.
    pruned_through: Option<u64>,
    /// A file that could not be read (then nothing else counts).
    error: Option<String>,
}

/// The file being read.
struct Reading {
    /// Its name, without the directory.
    name: std::rc::Rc<str>,
    reader: std::io::BufReader<Box<dyn Read + Send>>,
    /// The number of the last line read.
    line: usize,
    /// The newest file: its last line may be being written.
    newest: bool,
    /// A rotated file not counted yet (it counts once it shows a line), and whether a
    /// numbered one of the old rotation.
    uncounted: bool,
    numbered: bool,
}

/// Every non-empty line of the files, oldest first, read a line at a time: the log is
/// never held whole (a year of it is gigabytes), and no line or file can make the
/// reader allocate without bound.
struct Lines<'s> {
    files: std::collections::VecDeque<(PathBuf, std::io::Result<Box<dyn Read + Send>>)>,
    whole_log: Option<&'s Path>,
    current: Option<Reading>,
    stats: &'s mut Stats,
}

impl Iterator for Lines<'_> {
    type Item = (std::rc::Rc<str>, usize, String);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.stats.error.is_some() {
                return None;
            }
            if self.current.is_none() {
                let (path, handle) = self.files.pop_front()?;
                let reader = match handle {
                    Ok(r) => r,
                    Err(e) => {
                        self.stats.error = Some(format!("cannot read {} ({e})", path.display()));
                        return None;
                    }
                };
                self.current = Some(Reading {
                    name: path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                        .into(),
                    reader: std::io::BufReader::new(reader),
                    line: 0,
                    newest: self.files.is_empty(),
                    uncounted: self.whole_log.is_some_and(|current| current != path),
                    numbered: self.whole_log.is_some_and(|current| {
                        (1..=audit_files::KEEP).any(|i| path == audit_files::rotated(current, i))
                    }),
                });
            }
            let Reading {
                name,
                reader,
                line: n,
                newest,
                uncounted,
                numbered,
            } = self.current.as_mut()?;
            let (line, ended) = match audit_files::next_line(reader) {
                Err(e) => {
                    self.stats.error = Some(format!("cannot read {name} ({e})"));
                    return None;
                }
                Ok(None) => {
                    self.current = None;
                    continue;
                }
                Ok(Some(LogLine::TooLong)) => {
                    self.stats.error = Some(format!(
                        "{name} line {}: longer than any record the agent writes",
                        *n + 1
                    ));
                    return None;
                }
                Ok(Some(LogLine::Line { text, ended })) => (text, ended),
            };
            *n += 1;
            // The newest file's last line may be being written right now: whole lines
            // only.
            if !ended && *newest {
                self.current = None;
                continue;
            }
            if line.is_empty() {
                continue;
            }
            if *uncounted {
                *uncounted = false;
                self.stats.rotated += 1;
                if *numbered {
                    self.stats.numbered += 1;
                }
            }
            if self.stats.first.is_none() {
                self.stats.first = Some((name.to_string(), *n, line.clone()));
            }
            if line.contains("\"pruned_through\"") {
                let (body, tag) = chain::unseal(&line);
                if tag.is_some()
                    && let Some(p) = chain::parse(&body)
                    && p.event == "log_continued"
                    && let Some(through) = p.pruned_through.filter(|&t| t < p.seq)
                {
                    self.stats.pruned_through = self.stats.pruned_through.max(Some(through));
                }
            }
            return Some((name.clone(), *n, line));
        }
    }
}

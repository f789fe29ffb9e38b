//! `jitc audit verify`: the whole log, across rotated files, against the chain and the
//! checkpoint.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use jitc_protocol::AuditReport;

use super::chain::{self, Key, Tag};

/// Log files (oldest first), each opened or not.
pub type Opened = Vec<(PathBuf, std::io::Result<File>)>;

/// Checks `files` (oldest first) with `key` against `checkpoints`, keyed lines the
/// agent knows it wrote (in memory, and from the vault). With `whole_log` (the current
/// file, and how many rotated ones the agent keeps), `files` are all there is: a log
/// that goes on from older files must have them all, since the agent drops only the
/// oldest of a full set (files with no line in them do not count).
pub fn verify_files(
    opened: Opened,
    key: &Key,
    checkpoints: &[(u64, Tag)],
    whole_log: Option<(&Path, usize)>,
) -> AuditReport {
    let names: Vec<String> = opened.iter().map(|f| f.0.display().to_string()).collect();
    let mut texts = Vec::with_capacity(opened.len());
    let mut files = Vec::with_capacity(opened.len());
    for (f, handle) in opened {
        let read = handle.and_then(|mut h| {
            let mut t = String::new();
            h.read_to_string(&mut t).map(|_| t)
        });
        files.push(f.clone());
        match read {
            Ok(t) => texts.push(t),
            Err(e) => {
                return AuditReport {
                    files: names,
                    lines: 0,
                    problem: Some(format!("cannot read {} ({e})", f.display())),
                    unsealed: 0,
                    never_sealed: 0,
                    never_sealed_at: None,
                };
            }
        }
    }
    let short: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    // The newest file's last line may be being written right now: only whole lines.
    if let Some(last) = texts.last_mut() {
        last.truncate(last.rfind('\n').map_or(0, |i| i + 1));
    }
    let lines = texts.iter().zip(&short).flat_map(|(text, name)| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(move |(i, l)| (name.as_str(), i + 1, l))
    });
    let mut check = chain::verify(key, lines, checkpoints);
    let has_lines = |t: &String| t.lines().any(|l| !l.is_empty());
    let rotated_files = files
        .iter()
        .zip(&texts)
        .filter(|(f, t)| {
            whole_log.is_some_and(|(current, _)| f.as_path() != current) && has_lines(t)
        })
        .count();
    let first = texts.iter().zip(&short).find_map(|(t, name)| {
        t.lines()
            .enumerate()
            .find(|(_, l)| !l.is_empty())
            .map(|(i, l)| (name, i + 1, l))
    });
    if let Some((_, keep)) = whole_log
        && rotated_files < keep
        && let Some((name, n, first)) = first
        && chain::parse(&chain::unseal(first).0).is_some_and(|p| p.event == "log_continued")
    {
        check.problem.get_or_insert_with(|| {
            format!(
                "{name} line {n}: the log goes on from older files, but {rotated_files} of the {keep} the agent keeps are there: older files were removed"
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

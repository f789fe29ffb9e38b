//! `jitc audit verify`: the whole log, across rotated files, against the chain and the
//! checkpoint.

use std::io::Read;
use std::path::{Path, PathBuf};

use jitc_protocol::AuditReport;

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
    // What retention says it removed, from lines the chain vouches for (not the
    // unkeyed tail, which anyone could have appended).
    let total: u64 = texts
        .iter()
        .map(|t| t.lines().filter(|l| !l.is_empty()).count() as u64)
        .sum();
    let vouched = total.saturating_sub(check.unsealed);
    let pruned_through = texts
        .iter()
        .flat_map(|t| t.lines().filter(|l| !l.is_empty()))
        .take(vouched as usize)
        .filter(|l| l.contains("\"pruned_through\""))
        .filter_map(|l| chain::parse(&chain::unseal(l).0)?.pruned_through)
        .max();
    let has_lines = |t: &String| t.lines().any(|l| !l.is_empty());
    let rotated_files = files
        .iter()
        .zip(&texts)
        .filter(|(f, t)| {
            whole_log.is_some_and(|(current, _)| f.as_path() != current) && has_lines(t)
        })
        .count();
    let numbered = files
        .iter()
        .zip(&texts)
        .filter(|(f, t)| {
            whole_log.is_some_and(|(current, _)| {
                (1..=jitc_protocol::audit_files::KEEP)
                    .any(|i| *f == &jitc_protocol::audit_files::rotated(current, i))
            }) && has_lines(t)
        })
        .count();
    let first = texts.iter().zip(&short).find_map(|(t, name)| {
        t.lines()
            .enumerate()
            .find(|(_, l)| !l.is_empty())
            .map(|(i, l)| (name, i + 1, l))
    });
    let first_parsed = first.and_then(|(_, _, l)| chain::parse(&chain::unseal(l).0));
    if let Some((_, keep)) = whole_log
        && numbered < keep
        && let Some((name, n, _)) = first
        && let Some(p) = first_parsed
        && p.event == "log_continued"
        && pruned_through.is_none_or(|through| through.saturating_add(1) < p.seq)
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

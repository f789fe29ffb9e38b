//! `jitc audit verify`: the whole log, across rotated files, against the chain and the
//! checkpoint.

use std::path::PathBuf;

use jitc_protocol::AuditReport;

use super::chain::{self, Key, Tag};

/// Checks `files` (oldest first) with `key` against `checkpoints`, keyed lines the
/// agent knows it wrote (in memory, and from the vault).
pub fn verify_files(files: &[PathBuf], key: &Key, checkpoints: &[(u64, Tag)]) -> AuditReport {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push(t),
            Err(e) => {
                return AuditReport {
                    files: names,
                    lines: 0,
                    problem: Some(format!("cannot read {} ({e})", f.display())),
                    unsealed: 0,
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
    let check = chain::verify(key, lines, checkpoints);
    AuditReport {
        files: names,
        lines: check.lines,
        problem: check.problem,
        unsealed: check.unsealed,
    }
}

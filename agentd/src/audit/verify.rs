//! `jitc audit verify`: the whole log, across rotated files, against the chain and the
//! checkpoint.

use std::path::PathBuf;

use jitc_protocol::AuditReport;

use super::chain::{self, Key, Tag};

/// Checks `files` (oldest first) with `key`; `checkpoint` is the last keyed line the
/// agent knows of (in memory, or from the vault).
pub fn verify_files(files: &[PathBuf], key: &Key, checkpoint: Option<(u64, Tag)>) -> AuditReport {
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
    let lines = texts.iter().zip(&short).flat_map(|(text, name)| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(move |(i, l)| (name.as_str(), i + 1, l))
    });
    let check = chain::verify(key, lines, checkpoint);
    AuditReport {
        files: names,
        lines: check.lines,
        problem: check.problem,
        unsealed: check.unsealed,
    }
}

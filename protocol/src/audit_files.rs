//! Where the audit log's files are. Shared contract, not wire format: the agent writes
//! and rotates them, and `jitc audit` reads them directly, so both must agree on the
//! names and on how many rotated files are kept.

use std::path::{Path, PathBuf};

/// Rotated files kept beside the log (`audit.log.1` … `audit.log.9`).
pub const KEEP: usize = 9;

/// The `i`-th rotated file of the log at `path` (`audit.log.3`; 1 is the newest).
pub fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// The files of the log at `path` that exist, oldest first (regular files only:
/// `--audit-log /dev/full` is one way to test failing, and nothing must ever read or
/// move that).
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=KEEP)
        .rev()
        .map(|i| rotated(path, i))
        .filter(|p| p.is_file())
        .collect();
    if path.is_file() {
        out.push(path.to_path_buf());
    }
    out
}

/// The checkpoint file beside the log (`audit.checkpoint`).
pub fn checkpoint_of(log: &Path) -> PathBuf {
    log.with_extension("checkpoint")
}

//! Where the audit log's files are. Shared contract, not wire format: the agent writes,
//! rotates, compresses and prunes them, and `jitc audit` reads them directly, so both
//! must agree on the names and on how a compressed file is read.
//!
//! - `audit.log`: the file being written.
//! - `audit.log.SEQ` (20 digits: the last sequence number in it): a rotated file, named
//!   once and never renamed, so names sort oldest first.
//! - `audit.log.SEQ.zst`: the same, compressed (zstd) by the agent after rotation.
//! - `audit.log.1` … `audit.log.9`: rotated files of jitc before retention (1 the
//!   newest), read and pruned but no longer written.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

/// The numbered files of the old rotation (`audit.log.1` … `audit.log.9`).
pub const KEEP: usize = 9;

/// Digits of the sequence number in a rotated file's name.
pub const SEQ_DIGITS: usize = 20;

/// The suffix of a compressed rotated file.
pub const COMPRESSED: &str = ".zst";

/// A compressed file never reads as more than this (a planted one cannot exhaust
/// memory or time); the agent rotates below it (`--audit-max-bytes` is at most
/// `MAX_ROTATE`), so a file cut here is one the agent did not write, and `verify`
/// says so.
pub const MAX_DECOMPRESSED: u64 = 64 << 20;

/// The largest `--audit-max-bytes`.
pub const MAX_ROTATE: u64 = 32 << 20;

/// The `i`-th numbered file of the old rotation (`audit.log.3`; 1 is the newest).
pub fn rotated(path: &Path, i: usize) -> PathBuf {
    with_suffix(path, &format!(".{i}"))
}

/// The rotated file whose last line has sequence number `last_seq`.
pub fn rotated_at(path: &Path, last_seq: u64) -> PathBuf {
    with_suffix(path, &format!(".{last_seq:0SEQ_DIGITS$}"))
}

/// `file` compressed (`audit.log.SEQ.zst`).
pub fn compressed(file: &Path) -> PathBuf {
    with_suffix(file, COMPRESSED)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One rotated file, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub path: PathBuf,
    /// The last sequence number in it (`None` for an old numbered file).
    pub last_seq: Option<u64>,
    pub compressed: bool,
}

/// What a name beside the log at `log_name` is: `(order, last_seq, compressed)`.
fn classify(log_name: &str, name: &str) -> Option<((u8, u64), Option<u64>, bool)> {
    let rest = name.strip_prefix(log_name)?.strip_prefix('.')?;
    let (digits, compressed) = match rest.strip_suffix(COMPRESSED) {
        Some(d) => (d, true),
        None => (rest, false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() == SEQ_DIGITS {
        let seq = digits.parse().ok()?;
        return Some(((1, seq), Some(seq), compressed));
    }
    let i: usize = digits.parse().ok()?;
    ((1..=KEEP).contains(&i) && !compressed).then(|| ((0, (KEEP - i) as u64), None, false))
}

/// The rotated files of the log at `path`, oldest first (regular files only). A file
/// both plain and compressed (the agent stopped between writing the one and removing
/// the other) is listed once, plain.
pub fn rotated_files(path: &Path) -> Vec<Rotated> {
    let (Some(dir), Some(log_name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let log_name = log_name.to_string_lossy();
    let mut found: Vec<((u8, u64), bool, Rotated)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (order, last_seq, compressed) = classify(&log_name, &name)?;
            let p = dir.join(&name);
            p.is_file().then_some((
                order,
                compressed,
                Rotated {
                    path: p,
                    last_seq,
                    compressed,
                },
            ))
        })
        .collect();
    found.sort_by_key(|(order, compressed, _)| (*order, *compressed));
    found.dedup_by_key(|(order, _, _)| *order);
    found.into_iter().map(|(_, _, r)| r).collect()
}

/// Every file of the log at `path` that exists, oldest first: the rotated ones, then
/// the log itself (regular files only: `--audit-log /dev/full` is one way to test
/// failing, and nothing must ever read or move that).
pub fn files_of(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = rotated_files(path).into_iter().map(|r| r.path).collect();
    if path.is_file() {
        out.push(path.to_path_buf());
    }
    out
}

/// Opens a file of the log for reading, decompressing a `.zst` one (at most
/// `MAX_DECOMPRESSED` bytes of it).
pub fn open_log(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let file = std::fs::File::open(path)?;
    if path.as_os_str().to_string_lossy().ends_with(COMPRESSED) {
        Ok(Box::new(
            zstd::stream::read::Decoder::new(file)?.take(MAX_DECOMPRESSED),
        ))
    } else {
        Ok(Box::new(file))
    }
}

/// Opens a file `files_of` listed, as a reader that holds no lock over the agent's
/// renames finds it: a plain rotated file compressed since is read from its `.zst`;
/// `Ok(None)` if retention removed it since.
pub fn open_listed(path: &Path) -> io::Result<Option<Box<dyn Read + Send>>> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    match open_log(path) {
        Ok(r) => Ok(Some(r)),
        Err(e) if gone(&e) && !path.as_os_str().to_string_lossy().ends_with(COMPRESSED) => {
            match open_log(&compressed(path)) {
                Ok(r) => Ok(Some(r)),
                Err(e) if gone(&e) => Ok(None),
                Err(e) => Err(e),
            }
        }
        Err(e) if gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A line longer than this is none the agent wrote (its records are bounded far
/// below): a reader holds no more of one.
pub const MAX_LINE: u64 = 4 << 20;

/// One line of a log file, as [`next_line`] reads it.
pub enum LogLine {
    /// Without its `\n`, nor a `\r` before it (as `str::lines` splits). `ended` is false
    /// for a last line with no `\n` (it may be being written).
    Line { text: String, ended: bool },
    /// Longer than [`MAX_LINE`]: that much of it was read; the next call reads on.
    TooLong,
}

/// The next line of a log file, reading at most [`MAX_LINE`] bytes of it; `None` at
/// the end.
pub fn next_line(r: &mut impl BufRead) -> io::Result<Option<LogLine>> {
    let mut buf = Vec::new();
    if r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)? == 0 {
        return Ok(None);
    }
    let ended = buf.last() == Some(&b'\n');
    if !ended && buf.len() as u64 >= MAX_LINE {
        return Ok(Some(LogLine::TooLong));
    }
    let text = String::from_utf8_lossy(&buf);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text).to_owned();
    Ok(Some(LogLine::Line { text, ended }))
}

/// The checkpoint file beside the log (`audit.checkpoint`).
pub fn checkpoint_of(log: &Path) -> PathBuf {
    log.with_extension("checkpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_sort_oldest_first_whatever_their_kind() {
        let t = std::env::temp_dir().join(format!("jitc-audit-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).unwrap();
        let log = t.join("audit.log");
        for name in [
            "audit.log",
            "audit.log.1",
            "audit.log.9",
            "audit.log.00000000000000000900",
            "audit.log.00000000000000000900.zst",
            "audit.log.00000000000000000100.zst",
            "audit.log.00000000000000001000",
            "audit.log.10",
            "audit.log.x",
            "audit.log.1.zst",
            "audit.log.00000000000000000100.zst.tmp",
            "audit.checkpoint",
        ] {
            std::fs::write(t.join(name), b"").unwrap();
        }
        let names: Vec<String> = files_of(&log)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "audit.log.9",
                "audit.log.1",
                "audit.log.00000000000000000100.zst",
                "audit.log.00000000000000000900",
                "audit.log.00000000000000001000",
                "audit.log",
            ]
        );
        assert_eq!(
            rotated_at(&log, 900).file_name().unwrap(),
            "audit.log.00000000000000000900"
        );
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_compressed_file_reads_as_it_was_written() {
        let t = std::env::temp_dir().join(format!("jitc-audit-zst-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).unwrap();
        let text = "{\"seq\":1}\n".repeat(1000);
        let p = t.join("audit.log.00000000000000001000.zst");
        std::fs::write(&p, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        let mut back = String::new();
        open_log(&p).unwrap().read_to_string(&mut back).unwrap();
        assert_eq!(back, text);
        std::fs::remove_dir_all(&t).unwrap();
    }
}

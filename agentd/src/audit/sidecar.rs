//! `audit.checkpoint`: the chain's last keyed line (sequence number and tag), HMAC'd
//! with the chain key and written beside the log after every batch that carries a
//! decision. A crash — or a `kill -9` — cannot hide the last grants: cut the log back
//! to before them while the agent is down, and the next unlock (and `jitc audit
//! verify`) finds the checkpoint pointing past its end.
//!
//! Two fixed slots of one sector each, written in turn; the one with the higher
//! sequence number counts, and a slot that does not verify is tampering (a sector is
//! written whole; an edit must not roll the checkpoint back to the other slot). The
//! write goes to
//! the page cache before the batch is answered (a killed agent cannot lose it); its
//! `fdatasync` runs beside the next batch's, so it adds no wait of its own — and at
//! most once every `SYNC_GAP`: only a power cut can lose what the page cache holds,
//! and a slot on disk, whenever it gets there, only ever names lines already synced
//! (it is written after them), so a late one is older, never wrong. Under a lease load
//! a sync per batch was half of the agent's `fdatasync`s.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::chain::{self, Key, Tag};

/// The least time between two syncs of the checkpoint.
const SYNC_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes per slot.
const SLOT: usize = 256;
const MAGIC: &str = "jitc-audit-checkpoint v1";

/// The sidecar of the log at `log`: `audit.log` → `audit.checkpoint`.
pub fn path_for(log: &Path) -> PathBuf {
    jitc_protocol::audit_files::checkpoint_of(log)
}

fn mac(key: &Key, seq: u64, tag: &Tag) -> Tag {
    let Ok(mut m) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()) else {
        return chain::GENESIS;
    };
    m.update(MAGIC.as_bytes());
    m.update(&seq.to_be_bytes());
    m.update(tag);
    m.finalize().into_bytes().into()
}

fn slot_text(key: &Key, seq: u64, tag: &Tag) -> [u8; SLOT] {
    let line = format!(
        "{MAGIC} seq={seq} tag={} mac={}",
        chain::hex(tag),
        chain::hex(&mac(key, seq, tag))
    );
    let mut out = [b' '; SLOT];
    let n = line.len().min(SLOT - 1);
    out[..n].copy_from_slice(&line.as_bytes()[..n]);
    out[SLOT - 1] = b'\n';
    out
}

fn parse_slot(key: &Key, text: &str) -> Option<(u64, Tag)> {
    let mut seq = None;
    let mut tag = None;
    let mut m = None;
    let rest = text.trim().strip_prefix(MAGIC)?;
    for field in rest.split_whitespace() {
        match field.split_once('=')? {
            ("seq", v) => seq = v.parse().ok(),
            ("tag", v) => tag = chain::parse_hex(v),
            ("mac", v) => m = chain::parse_hex(v),
            _ => return None,
        }
    }
    let (seq, tag, m) = (seq?, tag?, m?);
    // Constant time is not needed here: the reader is the agent, at unlock.
    (mac(key, seq, &tag) == m).then_some((seq, tag))
}

/// What the sidecar says, checked with the chain key.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// There is no sidecar.
    Missing,
    /// The last keyed line the agent wrote before it stopped.
    At(u64, Tag),
    /// Neither slot verifies: edited, or written for another vault.
    Invalid,
}

/// Reads the sidecar at `path` with `key`.
pub fn read(path: &Path, key: &Key) -> Found {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(f) => {
            if f.take(2 * SLOT as u64).read_to_end(&mut bytes).is_err() {
                return Found::Invalid;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
        Err(_) => return Found::Invalid,
    }
    // Each slot on its own. One never written reads as zeros; any other must verify:
    // an edited slot is tampering, not a reason to trust the other one (that would
    // let an edit roll the checkpoint back a batch).
    let mut best: Option<(u64, Tag)> = None;
    for slot in bytes.chunks(SLOT) {
        if slot.iter().all(|b| *b == 0) {
            continue;
        }
        let Some(found) = std::str::from_utf8(slot)
            .ok()
            .and_then(|text| parse_slot(key, text.trim()))
        else {
            return Found::Invalid;
        };
        if best.is_none_or(|(seq, _)| found.0 > seq) {
            best = Some(found);
        }
    }
    best.map_or(Found::Invalid, |(seq, tag)| Found::At(seq, tag))
}

/// The writer's handle on the sidecar.
#[derive(Debug)]
pub struct Sidecar {
    path: PathBuf,
    file: Option<Arc<File>>,
    /// Written since the last sync.
    dirty: bool,
    /// When the last sync was started.
    synced_at: Option<std::time::Instant>,
}

impl Sidecar {
    pub fn new(log: &Path) -> Sidecar {
        Sidecar {
            path: path_for(log),
            file: None,
            dirty: false,
            synced_at: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `(seq, tag)` as the chain's last keyed line (into the page cache: a
    /// killed agent cannot lose it; `take_unsynced` syncs it with the next batch).
    pub fn write(&mut self, key: &Key, seq: u64, tag: &Tag) -> std::io::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.path)?;
            self.file = Some(Arc::new(f));
        }
        let Some(f) = &self.file else {
            return Ok(());
        };
        let at = (seq % 2) * SLOT as u64;
        f.write_all_at(&slot_text(key, seq, tag), at)?;
        self.dirty = true;
        Ok(())
    }

    /// The file to sync, if written since the last sync and that was `SYNC_GAP` ago.
    pub fn take_unsynced(&mut self) -> Option<Arc<File>> {
        let now = std::time::Instant::now();
        if !self.dirty
            || self
                .synced_at
                .is_some_and(|t| now.duration_since(t) < SYNC_GAP)
        {
            return None;
        }
        self.dirty = false;
        self.synced_at = Some(now);
        self.file.clone()
    }

    /// Forgets the file (a new chain: it was moved aside with the log).
    pub fn reset(&mut self) {
        self.file = None;
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("audit.log");
        let key = chain::derive_key(&[7; 32]);
        let other = chain::derive_key(&[8; 32]);
        let mut s = Sidecar::new(&log);
        assert_eq!(s.path(), t.path().join("audit.checkpoint"));
        assert_eq!(read(s.path(), &key), Found::Missing);
        // Only the second slot written: the first reads as zeros.
        s.write(&key, 41, &[1; 32]).unwrap();
        assert_eq!(read(s.path(), &key), Found::At(41, [1; 32]));
        s.write(&key, 42, &[2; 32]).unwrap();
        assert_eq!(read(s.path(), &key), Found::At(42, [2; 32]));
        s.write(&key, 43, &[3; 32]).unwrap();
        assert_eq!(read(s.path(), &key), Found::At(43, [3; 32]));
        assert_eq!(read(s.path(), &other), Found::Invalid);
        // One slot edited: tampering, not a fall back to the other.
        let mut bytes = std::fs::read(s.path()).unwrap();
        bytes[SLOT + 40] ^= 1;
        std::fs::write(s.path(), &bytes).unwrap();
        assert_eq!(read(s.path(), &key), Found::Invalid);
    }
}

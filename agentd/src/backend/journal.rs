//! What outlives a crash: every dynamic secret the agent hands out is written here
//! (a small file, fsynced, before the value leaves) and removed once it is revoked.
//! After a crash or `kill -9`, the next unlock revokes whatever is left.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The most entries read back (a directory flooded by someone else is cut there).
const MAX_ENTRIES: usize = 10_000;
/// The most of one entry read.
const MAX_ENTRY: u64 = 4 << 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub backend: String,
    pub lease_id: String,
    /// The jitc lease it was read for.
    pub lease: u64,
}

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn new(dir: PathBuf) -> Journal {
        Journal { dir }
    }

    fn file(&self, backend: &str, lease_id: &str) -> PathBuf {
        let digest = Sha256::digest(format!("{backend}\0{lease_id}").as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// Keeps `entry`, durably (the file and the directory synced).
    pub fn add(&self, entry: &Entry) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.file(&entry.backend, &entry.lease_id);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Forgets an entry (it was revoked).
    pub fn remove(&self, backend: &str, lease_id: &str) {
        let _ = std::fs::remove_file(self.file(backend, lease_id));
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    /// Every entry kept.
    pub fn entries(&self) -> Vec<Entry> {
        use std::io::Read;
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.flatten()
            .take(MAX_ENTRIES)
            .filter(|e| e.path().extension().is_none())
            .filter_map(|e| {
                let mut text = Vec::new();
                std::fs::File::open(e.path())
                    .ok()?
                    .take(MAX_ENTRY)
                    .read_to_end(&mut text)
                    .ok()?;
                serde_json::from_slice(&text).ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("backend-leases"));
        let e = Entry {
            backend: "team".into(),
            lease_id: "database/creds/ro/abc".into(),
            lease: 7,
        };
        j.add(&e).unwrap();
        assert_eq!(j.entries(), vec![e.clone()]);
        j.remove(&e.backend, &e.lease_id);
        assert!(j.entries().is_empty());
    }
}

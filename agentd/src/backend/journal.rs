//! What outlives a crash: every dynamic secret the agent hands out is written here
//! (a small file, fsynced, before the value leaves) and removed once it is revoked.
//! After a crash or `kill -9`, the next unlock revokes whatever is left. Each entry is
//! sealed with a key derived from the vault key: one planted by another process (to
//! make the agent revoke someone else's lease) is ignored.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use hmac::{KeyInit, Mac};
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
    /// HMAC-SHA256 over the rest, hex, under the journal key.
    #[serde(default)]
    pub mac: String,
}

impl Entry {
    fn tag(&self, key: &[u8; 32]) -> String {
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
            return String::new();
        };
        mac.update(self.backend.as_bytes());
        mac.update(b"\0");
        mac.update(self.lease_id.as_bytes());
        mac.update(b"\0");
        mac.update(&self.lease.to_be_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `self`, sealed under `key`.
    pub fn sealed(mut self, key: &[u8; 32]) -> Entry {
        self.mac = self.tag(key);
        self
    }

    fn verifies(&self, key: &[u8; 32]) -> bool {
        let tag = self.tag(key);
        !tag.is_empty() && subtle_eq::eq(self.mac.as_bytes(), tag.as_bytes())
    }
}

/// The journal's key: derived from the vault key (so only the agent holding the vault
/// can seal an entry).
pub fn key_from(vault_key: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(vault_key) else {
        return [0; 32];
    };
    mac.update(b"jitc backend journal v1");
    mac.finalize().into_bytes().into()
}

mod subtle_eq {
    /// Equal, in time that depends on the length only.
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
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

    /// Every entry kept that `key` sealed (and how many others there were).
    pub fn entries(&self, key: &[u8; 32]) -> (Vec<Entry>, usize) {
        let all = self.all();
        let total = all.len();
        let good: Vec<Entry> = all.into_iter().filter(|e| e.verifies(key)).collect();
        let bad = total - good.len();
        (good, bad)
    }

    fn all(&self) -> Vec<Entry> {
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
        let key = key_from(b"vault key");
        let e = Entry {
            backend: "team".into(),
            lease_id: "database/creds/ro/abc".into(),
            lease: 7,
            mac: String::new(),
        }
        .sealed(&key);
        j.add(&e).unwrap();
        // One planted without the key is not taken.
        let planted = Entry {
            lease_id: "database/creds/ro/someone-elses".into(),
            ..e.clone()
        };
        j.add(&planted).unwrap();
        assert_eq!(j.entries(&key), (vec![e.clone()], 1));
        j.remove(&e.backend, &e.lease_id);
        j.remove(&planted.backend, &planted.lease_id);
        assert_eq!(j.entries(&key), (Vec::new(), 0));
    }
}

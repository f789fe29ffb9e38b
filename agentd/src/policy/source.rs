//! `PolicySource`: `policy.toml` on disk, re-read whenever it changes.
//!
//! The file is checked (a `stat`) each time the policy is consulted, and parsed again
//! when its identity, size or times differ: an edit takes effect on the very next
//! request, whichever way the editor saved it. A file that does not parse, or that
//! others could have written — the file, or a directory on its way from `$HOME` —
//! refuses every lease until it is fixed (fail closed). Each (re)load gets a new
//! generation and the file's SHA-256, so the agent can record it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jitc_protocol::PolicyState;
use sha2::{Digest, Sha256};

use super::Policy;

/// Larger than any hand-written policy.
const MAX_POLICY_FILE: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// Owner and mode of each directory on the way from `$HOME`.
    dirs: Vec<(u32, u32)>,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            dirs: Vec::new(),
        }
    }
}

/// Why the policy file cannot be in force (every lease is refused until it is fixed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the policy at {} ({detail})", .path.display())]
    Read { path: PathBuf, detail: String },
    #[error("the policy at {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("the policy at {} belongs to uid {uid}, not to you; check who put it there", .path.display())]
    FileOwner { path: PathBuf, uid: u32 },
    #[error("the policy at {} is writable by others; run 'chmod 600 {}'", .0.display(), .0.display())]
    FileWritable(PathBuf),
    #[error("the policy's directory {} belongs to uid {uid}, not to you; check who put it there", .dir.display())]
    DirOwner { dir: PathBuf, uid: u32 },
    #[error("the policy's directory {} is writable by others, who could replace the policy; run 'chmod go-w {}'", .0.display(), .0.display())]
    DirWritable(PathBuf),
    #[error("the policy at {} is over 1 MiB", .0.display())]
    TooLarge(PathBuf),
    #[error("the policy at {} is invalid ({error}); fix it", .path.display())]
    Invalid {
        path: PathBuf,
        error: super::PolicyError,
    },
    #[error("the policy could not be loaded")]
    NotLoaded,
    /// A policy was in force, and its file is gone.
    #[error("the policy at {} vanished (a policy was in force, so the defaults do not apply); restore it, or accept the defaults with 'jitc policy reset' (asks the vault passphrase)", .0.display())]
    Vanished(PathBuf),
}

#[derive(Debug)]
struct Loaded {
    /// `None`: no file (the defaults apply).
    stamp: Option<Stamp>,
    policy: Result<Arc<Policy>, LoadError>,
    /// SHA-256 of the file as read (`None`: no file, or it could not be read).
    sha256: Option<[u8; 32]>,
    /// Bumped at every (re)load.
    generation: u64,
}

/// What was loaded last: which load it was, and the file's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadStamp {
    pub generation: u64,
    /// `None`: there is no policy file (or it could not be read).
    pub sha256: Option<[u8; 32]>,
    pub exists: bool,
}

#[derive(Debug)]
pub struct PolicySource {
    path: PathBuf,
    loaded: Mutex<Option<Loaded>>,
    /// Where the directory checks stop (`$HOME`).
    home: Option<PathBuf>,
}

impl PolicySource {
    pub fn new(path: PathBuf) -> PolicySource {
        PolicySource {
            path,
            loaded: Mutex::new(None),
            home: directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()),
        }
    }

    /// Which load is in force and the file's digest.
    pub fn stamp(&self) -> LoadStamp {
        self.current_and_stamp().1
    }

    /// `current` and `stamp` from one look at the file (each request asks for both).
    pub fn current_and_stamp(&self) -> (Result<Arc<Policy>, LoadError>, LoadStamp) {
        match self.refreshed().as_ref() {
            Some(l) => (
                l.policy.clone(),
                LoadStamp {
                    generation: l.generation,
                    sha256: l.sha256,
                    exists: l.stamp.is_some(),
                },
            ),
            None => (
                Err(LoadError::NotLoaded),
                LoadStamp {
                    generation: 0,
                    sha256: None,
                    exists: false,
                },
            ),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The owner and mode of each directory the policy's safety depends on (see
    /// `check_directories`): a change to any of them is a reason to look again.
    fn directory_stamps(&self) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let mut dir = self.path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(m) = fs::metadata(d) {
                out.push((m.uid(), m.mode()));
            }
            if self.home.as_deref() == Some(d) {
                break;
            }
            dir = d.parent();
        }
        out
    }

    /// The policy in force now, or why every lease is refused.
    pub fn current(&self) -> Result<Arc<Policy>, LoadError> {
        self.current_and_stamp().0
    }

    /// The policy as loaded, loaded again first if the file (or a directory it depends
    /// on) changed.
    fn refreshed(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        let mut slot = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let meta = fs::metadata(&self.path);
        let stamp = meta.as_ref().ok().map(|m| Stamp {
            dirs: self.directory_stamps(),
            ..Stamp::of(m)
        });
        let stale = match slot.as_ref() {
            None => true,
            Some(l) => l.stamp != stamp,
        };
        if stale {
            let generation = slot.as_ref().map_or(0, |l| l.generation) + 1;
            let (policy, sha256) = match self.load(meta) {
                Ok((p, digest)) => (Ok(Arc::new(p)), digest),
                Err(e) => (Err(e), None),
            };
            match &policy {
                Ok(_) if slot.is_some() => {
                    tracing::info!(path = %self.path.display(), "policy reloaded")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "policy refused; every lease is refused until it is fixed")
                }
            }
            *slot = Some(Loaded {
                stamp,
                policy,
                sha256,
                generation,
            });
        }
        slot
    }

    /// For `jitc status`.
    pub fn state(&self) -> PolicyState {
        let error = self.current().err().map(|e| e.to_string());
        PolicyState {
            path: self.path.display().to_string(),
            exists: self.path.exists(),
            error,
            approver_error: None,
        }
    }

    /// Refuses a directory on the way to the policy that someone else could write in
    /// (and so replace the policy): from its directory up to `$HOME` (or `/`).
    fn check_directories(&self) -> Result<(), LoadError> {
        use crate::fsperm::{SHARED_DIR, Unsafe, check};
        let mut dir = self.path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            // A directory that is not there yet is no one's to write in.
            if let Ok(m) = fs::metadata(d) {
                match check(&m, SHARED_DIR) {
                    Ok(()) => {}
                    Err(Unsafe::Owner { uid, .. }) => {
                        return Err(LoadError::DirOwner {
                            dir: d.to_path_buf(),
                            uid,
                        });
                    }
                    Err(Unsafe::Mode { .. }) => {
                        return Err(LoadError::DirWritable(d.to_path_buf()));
                    }
                }
            }
            if self.home.as_deref() == Some(d) {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn load(
        &self,
        meta: std::io::Result<fs::Metadata>,
    ) -> Result<(Policy, Option<[u8; 32]>), LoadError> {
        use crate::fsperm::{SHARED_PATH, Unsafe, check};
        let path = || self.path.clone();
        let read = |e: std::io::Error| LoadError::Read {
            path: path(),
            detail: e.to_string(),
        };
        self.check_directories()?;
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Policy::default(), None));
            }
            Err(e) => return Err(read(e)),
        };
        if !meta.is_file() {
            return Err(LoadError::NotAFile(path()));
        }
        match check(&meta, SHARED_PATH) {
            Ok(()) => {}
            Err(Unsafe::Owner { uid, .. }) => {
                return Err(LoadError::FileOwner { path: path(), uid });
            }
            Err(Unsafe::Mode { .. }) => return Err(LoadError::FileWritable(path())),
        }
        if meta.len() > MAX_POLICY_FILE {
            return Err(LoadError::TooLarge(path()));
        }
        let mut text = String::new();
        fs::File::open(&self.path)
            .and_then(|f| f.take(MAX_POLICY_FILE).read_to_string(&mut text))
            .map_err(read)?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        Policy::parse(&text)
            .map(|p| (p, Some(digest)))
            .map_err(|error| LoadError::Invalid {
                path: path(),
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reloads_on_change_and_fails_closed() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("policy.toml");
        let src = PolicySource::new(path.clone());
        assert_eq!(src.current().unwrap().rules.len(), 0, "no file: defaults");
        fs::write(&path, "[[rule]]\nsecrets = [\"a\"]\n").unwrap();
        assert_eq!(src.current().unwrap().rules.len(), 1);
        fs::write(
            &path,
            "[[rule]]\nsecrets = [\"a\"]\n[[rule]]\nsecrets = [\"b\"]\n",
        )
        .unwrap();
        assert_eq!(src.current().unwrap().rules.len(), 2);
        fs::write(&path, "[[rule]\n").unwrap();
        let e = src.current().unwrap_err();
        assert!(matches!(
            &e,
            LoadError::Invalid {
                error: super::super::PolicyError::Syntax { .. },
                ..
            }
        ));
        let e = e.to_string();
        assert!(e.contains("invalid") && e.contains("line 1"), "{e}");
        assert_eq!(src.state().error, Some(e));
        fs::write(&path, "").unwrap();
        assert!(src.current().is_ok());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(src.current(), Err(LoadError::FileWritable(_))));
        assert!(src.current().unwrap_err().to_string().contains("chmod 600"));
    }
}

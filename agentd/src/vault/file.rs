//! The vault on disk: safe reads, atomic saves with one backup generation, and the
//! lock that keeps a second agent off the same vault.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Larger than any vault `jitc` writes (values are capped at 512 KiB each), small enough
/// that a planted file cannot make the agent allocate without bound.
const MAX_VAULT_FILE: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("refusing the vault at {path}: {why}")]
    Insecure { path: PathBuf, why: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the vault at {path} is {len} bytes, more than any vault jitc writes")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("another jitc-agentd{} is using the vault at {path}; stop it or set JITC_VAULT to another vault", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { path: PathBuf, holder: Option<u32> },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// Debug builds only: dies on the spot (as `kill -9` would) when `JITC_TEST_CRASH_AT`
/// names this step of a save, so tests can crash the agent at every step for certain.
#[cfg(debug_assertions)]
fn crash_point(step: &str) {
    if std::env::var("JITC_TEST_CRASH_AT").is_ok_and(|s| s == step) {
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
fn crash_point(_step: &str) {}

/// Holds the vault's lock file for as long as it lives.
#[derive(Debug)]
pub struct VaultLock {
    _file: File,
}

#[derive(Debug, Clone)]
pub struct VaultFile {
    path: PathBuf,
}

/// A file's device, inode, size and change time.
pub type FileStamp = (u64, u64, u64, i64, i64);

impl VaultFile {
    pub fn new(path: PathBuf) -> Self {
        VaultFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".bak")
    }

    /// The journal of changes since the snapshot (see `journal.rs`).
    pub fn journal_path(&self) -> PathBuf {
        with_suffix(&self.path, ".journal")
    }

    fn lock_path(&self) -> PathBuf {
        with_suffix(&self.path, ".lock")
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// Whether a vault file (or something in its place) exists.
    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok()
    }

    /// Which file is there now: to tell whether someone replaced it since the agent
    /// last read or wrote it.
    pub fn stamp(&self) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
    }

    /// Creates the vault's directory (0700) if needed and refuses one that others may
    /// write to: whoever can write there can swap the vault.
    pub fn prepare_dir(&self) -> Result<(), FileError> {
        let dir = self.dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create the directory", dir))?;
        let meta = fs::metadata(dir).map_err(io_err("inspect the directory", dir))?;
        crate::fsperm::check(&meta, crate::fsperm::SHARED_PATH).map_err(|u| FileError::Insecure {
            path: self.path.clone(),
            why: match u {
                crate::fsperm::Unsafe::Owner { uid, .. } => {
                    format!("its directory {} belongs to uid {uid}", dir.display())
                }
                crate::fsperm::Unsafe::Mode { .. } => format!(
                    "its directory is writable by others; run 'chmod 700 {}'",
                    dir.display()
                ),
            },
        })
    }

    /// Takes the exclusive lock beside the vault (not on it: saves replace the file, and
    /// a lock on a replaced inode would protect nothing).
    pub fn lock(&self) -> Result<VaultLock, FileError> {
        self.prepare_dir()?;
        let path = self.lock_path();
        let mut file = open_private(&path).map_err(io_err("open the lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(FileError::Busy {
                    path: self.path.clone(),
                    holder: pid.trim().parse().ok(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        file.set_len(0).map_err(io_err("write", &path))?;
        // The pid is only a hint for the error message another agent shows.
        let _ = write!(file, "{}", std::process::id());
        Ok(VaultLock { _file: file })
    }

    /// Reads the vault, refusing a symlink, another user's file, or one others may write.
    /// `Ok(None)` when there is no vault yet.
    pub fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, FileError> {
        self.read_file(&self.path)
    }

    /// Reads the journal, as safely as the vault; `Ok(None)` when there is none.
    pub fn read_journal(&self) -> Result<Option<Zeroizing<Vec<u8>>>, FileError> {
        self.read_file(&self.journal_path())
    }

    fn read_file(&self, path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, FileError> {
        let path = &path.to_owned();
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(FileError::Insecure {
                    path: path.clone(),
                    why: "it is a symbolic link; put the real file there".into(),
                });
            }
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let meta = file.metadata().map_err(io_err("inspect", path))?;
        check_meta(path, &meta)?;
        if meta.len() > MAX_VAULT_FILE {
            return Err(FileError::TooLarge {
                path: path.clone(),
                len: meta.len(),
            });
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        file.take(MAX_VAULT_FILE)
            .read_to_end(&mut buf)
            .map_err(io_err("read", path))?;
        Ok(Some(buf))
    }

    /// Appends one record to the journal and syncs it; writes `header` first when the
    /// journal is new. Refuses a journal that is not as the agent left it — another
    /// snapshot's, or longer or shorter than `expect` (bytes appended, cut or removed
    /// behind the agent: a record written after them would be unreadable, and every
    /// later change lost at the next unlock); the caller then writes a snapshot.
    /// Returns the journal's new length.
    pub fn append_journal(
        &self,
        header: &[u8],
        record: &[u8],
        expect: u64,
    ) -> Result<u64, FileError> {
        use std::os::unix::fs::FileExt;
        let path = self.journal_path();
        let mut f = open_private(&path).map_err(io_err("open", &path))?;
        let meta = f.metadata().map_err(io_err("inspect", &path))?;
        check_meta(&path, &meta)?;
        let fresh = meta.len() == 0;
        let mut len = meta.len();
        if len != expect {
            return Err(FileError::Insecure {
                path,
                why: format!(
                    "it is {len} bytes, not the {expect} the agent wrote; it was changed behind the agent"
                ),
            });
        }
        if fresh {
            f.write_all(header).map_err(io_err("write", &path))?;
            len = header.len() as u64;
        } else {
            let mut found = vec![0u8; header.len()];
            f.read_exact_at(&mut found, 0)
                .map_err(io_err("read", &path))?;
            if found != header {
                return Err(FileError::Insecure {
                    path,
                    why: "it continues another snapshot of the vault".into(),
                });
            }
        }
        // Debug builds only: a crash halfway through the record, on disk.
        #[cfg(debug_assertions)]
        if std::env::var("JITC_TEST_CRASH_AT").is_ok_and(|s| s == "mid-journal-write") {
            let _ = f.write_all_at(&record[..record.len() / 2], len);
            let _ = f.sync_data();
            std::process::abort();
        }
        f.write_all_at(record, len)
            .map_err(io_err("write", &path))?;
        crash_point("after-journal-write");
        if fresh {
            f.sync_all().map_err(io_err("sync", &path))?;
            let dir = self.dir();
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("sync the directory", dir))?;
        } else {
            f.sync_data().map_err(io_err("sync", &path))?;
        }
        crash_point("after-journal-sync");
        Ok(len + record.len() as u64)
    }

    /// Copies the journal's bytes from `from` on into a new private file beside it
    /// (`vault.jitc.journal.dropped-SECONDS`), synced: bytes the vault opens without
    /// that no crash explains. Its path.
    pub fn keep_journal_tail(&self, from: u64) -> Result<PathBuf, FileError> {
        use std::io::{Seek, SeekFrom};
        let path = self.journal_path();
        let mut src = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("open", &path))?;
        check_meta(&path, &src.metadata().map_err(io_err("inspect", &path))?)?;
        src.seek(SeekFrom::Start(from))
            .map_err(io_err("read", &path))?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (name, mut out) =
            crate::fsperm::create_first_free(&format!(".journal.dropped-{secs}"), |n| {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(with_suffix(&self.path, n))
            })
            .map_err(|(n, e)| io_err("create", &with_suffix(&self.path, &n))(e))?;
        let kept = with_suffix(&self.path, &name);
        io::copy(&mut src, &mut out).map_err(io_err("write", &kept))?;
        out.sync_all().map_err(io_err("sync", &kept))?;
        let dir = self.dir();
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync the directory", dir))?;
        Ok(kept)
    }

    /// Cuts the journal back to its whole records (what a crash cut short goes).
    pub fn truncate_journal(&self, len: u64) -> Result<(), FileError> {
        let path = self.journal_path();
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("open", &path))?;
        check_meta(&path, &f.metadata().map_err(io_err("inspect", &path))?)?;
        f.set_len(len).map_err(io_err("truncate", &path))?;
        f.sync_all().map_err(io_err("sync", &path))
    }

    /// Removes the journal (once a snapshot holds everything it had).
    pub fn remove_journal(&self) {
        let _ = fs::remove_file(self.journal_path());
    }

    /// Refuses to go on if whatever sits at the vault path is unsafe to overwrite.
    pub fn check_existing(&self) -> Result<(), FileError> {
        self.read().map(drop)
    }

    /// Replaces the snapshot atomically: a 0600 temp file in the same directory, fsync,
    /// the old snapshot hard-linked to `.bak`, rename over, fsync the directory; then
    /// the journal is removed. At every instant `vault.jitc` is one complete snapshot.
    pub fn write_atomic(&self, bytes: &[u8]) -> Result<(), FileError> {
        self.prepare_dir()?;
        self.check_existing()?;
        let dir = self.dir();
        let tmp = with_suffix(&self.path, &format!(".tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(bytes).map_err(io_err("write", &tmp))?;
            crash_point("after-temp-write");
            f.sync_all().map_err(io_err("sync", &tmp))?;
            crash_point("after-temp-sync");
            if self.exists() {
                let bak = self.backup_path();
                let bak_tmp = with_suffix(&bak, ".tmp");
                let _ = fs::remove_file(&bak_tmp);
                fs::hard_link(&self.path, &bak_tmp).map_err(io_err("back up", &self.path))?;
                crash_point("after-backup-link");
                fs::rename(&bak_tmp, &bak).map_err(io_err("back up", &bak))?;
                crash_point("after-backup");
            }
            fs::rename(&tmp, &self.path).map_err(io_err("replace", &self.path))?;
            crash_point("after-rename");
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("sync the directory", dir))?;
            crash_point("after-snapshot");
            // The snapshot holds all the journal had, under a new generation: a journal
            // that survives this (a crash now) is stale and is not applied.
            self.remove_journal();
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes temp files a killed agent left behind (we hold the lock, so none is live).
    pub fn remove_stale_temp_files(&self) {
        let Some(name) = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return;
        };
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{name}.tmp-")) || n == format!("{name}.bak.tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Opens `path` for reading and writing, creating it 0600, never through a symlink.
fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Refuses a file that is not a regular file of ours that only we may write.
fn check_meta(path: &Path, meta: &fs::Metadata) -> Result<(), FileError> {
    let insecure = |why: String| {
        Err(FileError::Insecure {
            path: path.to_owned(),
            why,
        })
    };
    if !meta.is_file() {
        return insecure("it is not a regular file".into());
    }
    match crate::fsperm::check(meta, crate::fsperm::VAULT_FILE) {
        Ok(()) => Ok(()),
        Err(crate::fsperm::Unsafe::Owner { uid, me }) => insecure(format!(
            "it belongs to uid {uid}, not to you (uid {me}); check who put it there"
        )),
        Err(crate::fsperm::Unsafe::Mode { .. }) => insecure(format!(
            "it is writable by group or others; run 'chmod 600 {}'",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn vault_in(dir: &Path) -> VaultFile {
        VaultFile::new(dir.join("sub").join("vault.jitc"))
    }

    #[test]
    fn atomic_write_keeps_a_backup() {
        let t = tempfile::tempdir().unwrap();
        let v = vault_in(t.path());
        assert!(v.read().unwrap().is_none());
        v.write_atomic(b"one").unwrap();
        v.write_atomic(b"two").unwrap();
        assert_eq!(&v.read().unwrap().unwrap()[..], b"two");
        assert_eq!(fs::read(v.backup_path()).unwrap(), b"one");
        let mode = fs::metadata(v.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = fs::metadata(v.dir()).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
    }

    #[test]
    fn refuses_symlink_and_writable() {
        let t = tempfile::tempdir().unwrap();
        let v = vault_in(t.path());
        v.write_atomic(b"x").unwrap();
        fs::set_permissions(v.path(), fs::Permissions::from_mode(0o620)).unwrap();
        let e = v.read().unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(v.write_atomic(b"y").is_err());
        fs::remove_file(v.path()).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), v.path()).unwrap();
        let e = v.read().unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn second_lock_is_refused_with_pid() {
        let t = tempfile::tempdir().unwrap();
        let v = vault_in(t.path());
        let _held = v.lock().unwrap();
        match v.lock() {
            Err(FileError::Busy { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
    }
}

//! Ways to hand values to a command besides its environment: `--env-file` (a dotenv
//! file whose `jitc://` values are resolved), `--file VAR=REF` (a sealed in-memory file,
//! `/dev/fd/N`), and `--mount PATH` (a FIFO that serves the values in dotenv form to each
//! reader while the command runs). None of them puts a value on disk.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::memfd::{MFdFlags, memfd_create};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::refs;

/// A line of an env file: a reference to lease, or a plain value to pass through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEntry {
    Secret(String),
    Plain(String),
}

/// Where `line` (as dotenvy reports it) starts in `text`, as a 1-based line number.
fn line_number(text: &str, line: &str) -> Option<usize> {
    let first = line.lines().next().filter(|l| !l.is_empty())?;
    text.lines()
        .position(|l| l == first || l.trim() == first.trim())
        .map(|i| i + 1)
}

/// The 1-based line where `key` is assigned in the dotenv file at `path`.
pub fn line_of_key(path: &Path, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("export ").unwrap_or(l).trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Parses a dotenv file. A malformed line is bad input (65), reported by line number
/// only: the line itself may hold a secret. A file that cannot be read is bad input
/// too, naming the path.
/// The most of an env file read: anything larger is not one.
pub const MAX_ENV_FILE: u64 = 1 << 20;

/// The text of a regular file of at most `max` bytes (a device such as `/dev/zero`, a
/// FIFO or a larger file is an error, never read to its end).
pub fn read_capped(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!("over {} KiB", max >> 10)));
    }
    Ok(text)
}

pub fn read_env_file(path: &Path) -> Result<Vec<(String, EnvEntry)>> {
    let shown = path.display();
    let text = read_capped(path, MAX_ENV_FILE).map_err(|e| {
        Error::bad_input(format!(
            "cannot read the env file {shown} ({e}); check the path given to --env-file"
        ))
    })?;
    let iter = dotenvy::from_read_iter(text.as_bytes());
    let mut out = Vec::new();
    for item in iter {
        match item {
            Ok((key, value)) => {
                let entry = if refs::is_ref(&value) {
                    EnvEntry::Secret(refs::parse_ref(&value).map_err(|e| {
                        let at = line_of_key(path, &key)
                            .map(|n| format!(" line {n}"))
                            .unwrap_or_default();
                        Error::bad_input(format!("{shown}{at}: {e}"))
                    })?)
                } else {
                    EnvEntry::Plain(value)
                };
                if !jitc_protocol::names::is_env_var_name(&key) {
                    return Err(Error::bad_input(format!(
                        "{shown}: '{}' is not a valid variable name",
                        key.escape_debug()
                    )));
                }
                out.push((key, entry));
            }
            Err(dotenvy::Error::LineParse(line, _)) => {
                let at = line_number(&text, &line)
                    .map(|n| format!("line {n}"))
                    .unwrap_or_else(|| "a line".into());
                return Err(Error::bad_input(format!(
                    "{shown}: {at} is malformed; write it as KEY=value (quote values with spaces)"
                )));
            }
            Err(e) => {
                let what = match e {
                    dotenvy::Error::EnvVar(_) => {
                        "it refers to a variable that is not set".to_owned()
                    }
                    dotenvy::Error::Io(io) => io.to_string(),
                    _ => "it cannot be parsed".to_owned(),
                };
                return Err(Error::bad_input(format!("{shown} is malformed ({what})")));
            }
        }
    }
    Ok(out)
}

/// An empty in-memory file for `var`, made before the command is started so that it
/// inherits it (not close-on-exec); `fill` puts the value in.
pub fn memfd_for(var: &str) -> Result<OwnedFd> {
    let name =
        CString::new(format!("jitc:{var}")).map_err(|_| Error::bad_input("bad variable name"))?;
    memfd_create(name.as_c_str(), MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| Error::failure(format!("cannot make the in-memory file for {var} ({e})")))
}

/// Writes `value` into the in-memory file `fd` and seals it: no one, the command
/// included, can change it after.
pub fn fill(fd: &OwnedFd, var: &str, value: &[u8]) -> Result<()> {
    let failed =
        |e: nix::Error| Error::failure(format!("cannot make the in-memory file for {var} ({e})"));
    let io =
        |e: std::io::Error| failed(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
    let mut file: &std::fs::File = &std::fs::File::from(fd.try_clone().map_err(io)?);
    file.write_all(value).map_err(io)?;
    fcntl(
        fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(failed)?;
    Ok(())
}

/// The `/dev/fd/N` path of an inherited descriptor.
pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/dev/fd/{}", fd.as_raw_fd())
}

/// `VAR="value"` lines, escaped for dotenv's double quotes.
pub fn dotenv_text(entries: &[(&str, &[u8])]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for (var, value) in entries {
        out.extend_from_slice(var.as_bytes());
        out.extend_from_slice(b"=\"");
        for &b in *value {
            match b {
                b'\\' | b'"' | b'$' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b => out.push(b),
            }
        }
        out.extend_from_slice(b"\"\n");
    }
    out
}

/// A FIFO at a path, serving a dotenv text to every reader until dropped; then removed.
pub struct Mount {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
    /// Listens (and accepts nobody) while the mount is served: see `stale_fifo`.
    _beacon: std::os::unix::net::UnixListener,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mount({})", self.path.display())
    }
}

impl Mount {
    /// Creates the FIFO (0600). Refuses a path that exists — except a FIFO of ours
    /// that nobody reads, which a killed `jitc` left behind.
    pub fn create(path: &Path, content: Zeroizing<Vec<u8>>) -> Result<Mount> {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !stale_fifo(&m) {
                return Err(Error::bad_input(format!(
                    "--mount {}: something is there already; choose a path that does not exist",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| {
                Error::bad_input(format!(
                    "--mount {}: cannot replace the FIFO left there ({e})",
                    path.display()
                ))
            })?;
        }
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
            |e| {
                Error::bad_input(format!(
                    "--mount {}: cannot create a FIFO there ({}); choose a path in a directory you can write",
                    path.display(),
                    e.desc()
                ))
            },
        )?;
        // Says this FIFO is served, for as long as this process lives.
        let beacon = std::fs::symlink_metadata(path)
            .and_then(|m| beacon_addr(&m))
            .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a));
        let beacon = match beacon {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(Error::failure(format!(
                    "cannot set up the FIFO {} ({e})",
                    path.display()
                )));
            }
        };
        // Tells when a reader closes the FIFO (IN_CLOSE_NOWRITE): only then may it be
        // opened for the next one, or a reader still draining would get the text twice.
        let closes = Inotify::init(InitFlags::IN_CLOEXEC).and_then(|i| {
            i.add_watch(path, AddWatchFlags::IN_CLOSE_NOWRITE)
                .map(|_| i)
        });
        let closes = match closes {
            Ok(i) => i,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(Error::failure(format!(
                    "cannot watch the FIFO {} ({e})",
                    path.display()
                )));
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (path.to_owned(), stop.clone());
        let server = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                // Blocks until a reader opens the FIFO.
                let Ok(mut w) = OpenOptions::new().write(true).open(&p) else {
                    return;
                };
                if s.load(Ordering::SeqCst) {
                    return;
                }
                // A reader that goes away early is its business.
                let _ = w.write_all(&content);
                drop(w);
                wait_for_reader_close(&closes);
            }
        });
        Ok(Mount {
            path: path.to_owned(),
            stop,
            server: Some(server),
            _beacon: beacon,
        })
    }
}

/// The abstract socket a live mount listens on, named after its FIFO's identity: a
/// `jitc` that is killed takes it along, so it tells a FIFO still served from one left
/// behind.
fn beacon_name(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("jitc-mount:{}:{}", m.dev(), m.ino())
}

fn beacon_addr(m: &std::fs::Metadata) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(beacon_name(m).as_bytes())
}

/// Whether `path` is a FIFO of ours that no `jitc` serves any more: the leftover of one
/// that was killed before it could remove it (nobody listens on its beacon).
fn stale_fifo(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !m.file_type().is_fifo() || m.uid() != nix::unistd::geteuid().as_raw() {
        return false;
    }
    match beacon_addr(m) {
        Ok(addr) => matches!(
            std::os::unix::net::UnixStream::connect_addr(&addr),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        ),
        Err(_) => false,
    }
}

/// Waits (at most a few seconds) until a reader of the watched FIFO closes it.
fn wait_for_reader_close(closes: &Inotify) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if ms == 0 {
            return;
        }
        let mut fds = [PollFd::new(closes.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        match closes.read_events() {
            Ok(events)
                if events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_CLOSE_NOWRITE)) =>
            {
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Open it for reading ourselves, so the server's blocking open returns and it
        // sees the stop flag.
        let unblock = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path);
        let _ = std::fs::remove_file(&self.path);
        // Closing it also wakes a server waiting for a reader to close.
        drop(unblock);
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(".env");
        std::fs::write(
            &p,
            "# comment\nDB=jitc://prod/db\nMODE=debug\nQUOTED=\"a b\"\n",
        )
        .unwrap();
        let e = read_env_file(&p).unwrap();
        assert_eq!(
            e,
            vec![
                ("DB".into(), EnvEntry::Secret("prod/db".into())),
                ("MODE".into(), EnvEntry::Plain("debug".into())),
                ("QUOTED".into(), EnvEntry::Plain("a b".into())),
            ]
        );
        std::fs::write(&p, "A=1\nB=2\nthis is not an assignment secretvalue\nC=3\n").unwrap();
        let err = read_env_file(&p).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("secretvalue"), "{err}");
    }

    #[test]
    fn dotenv_text_round_trips_through_dotenvy() {
        let values: [(&str, &[u8]); 2] = [("A", b"plain"), ("B", b"q\"uo$te\\s\nnext")];
        let text = dotenv_text(&values);
        let parsed: Vec<(String, String)> = dotenvy::from_read_iter(&text[..])
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(parsed[0], ("A".into(), "plain".into()));
        assert_eq!(parsed[1], ("B".into(), "q\"uo$te\\s\nnext".into()));
    }

    #[test]
    fn memfd_is_sealed_and_readable() {
        let fd = memfd_for("X").unwrap();
        fill(&fd, "X", b"the value").unwrap();
        assert_eq!(std::fs::read(fd_path(&fd)).unwrap(), b"the value");
        // Writing through a fresh open fails: the file is sealed.
        assert!(
            OpenOptions::new()
                .write(true)
                .open(fd_path(&fd))
                .and_then(|mut f| f.write_all(b"x"))
                .is_err()
        );
    }

    #[test]
    fn mount_serves_every_reader_and_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("secrets.env");
        let m = Mount::create(&p, Zeroizing::new(b"A=\"1\"\n".to_vec())).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"A=\"1\"\n");
        assert_eq!(std::fs::read(&p).unwrap(), b"A=\"1\"\n");
        assert!(
            Mount::create(&p, Zeroizing::new(Vec::new())).is_err(),
            "a live mount is not replaced"
        );
        drop(m);
        assert!(!p.exists());
        // One left by a jitc that was killed: replaced.
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let again = Mount::create(&p, Zeroizing::new(b"B=\"2\"\n".to_vec())).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"B=\"2\"\n");
        drop(again);
    }
}

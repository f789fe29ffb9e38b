//! The listening socket: a private directory, a 0600 socket, stale sockets replaced,
//! live ones never stolen; or a socket handed over by systemd (`LISTEN_FDS`).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another jitc-agentd is already running on {0}")]
    AlreadyRunning(PathBuf),
    #[error("refusing to use {path}: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A bound socket. Dropping it does not unlink the path; `unlink` does, on clean exit.
#[derive(Debug)]
pub struct BoundSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// Held for the agent's life: serialises agents racing for the same path.
    _lock: Option<File>,
    /// Whether we created the path (and so should remove it at exit).
    owned: bool,
}

impl BoundSocket {
    pub fn unlink(&self) {
        if self.owned {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates the socket's directory 0700 if missing, and refuses one that is a symlink,
/// not ours, or open to group or others.
pub fn prepare_dir(dir: &Path) -> Result<(), SocketError> {
    if fs::symlink_metadata(dir).is_err() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create", dir))?;
    }
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    let unsafe_dir = |why: String| {
        Err(SocketError::Unsafe {
            path: dir.to_owned(),
            why,
        })
    };
    if !meta.is_dir() {
        return unsafe_dir("it is not a directory (a symlink is not accepted)".into());
    }
    match crate::fsperm::check(&meta, crate::fsperm::PRIVATE_DIR) {
        Ok(()) => Ok(()),
        Err(crate::fsperm::Unsafe::Owner { uid, me }) => {
            unsafe_dir(format!("it belongs to uid {uid}, not to you (uid {me})"))
        }
        Err(crate::fsperm::Unsafe::Mode { mode }) => unsafe_dir(format!(
            "it is open to group or others (mode {:o}); run 'chmod 700 {}'",
            mode & 0o777,
            dir.display()
        )),
    }
}

/// Binds `path`. A socket left by a dead agent (nothing accepts on it) is replaced; one
/// that answers belongs to a live agent and is left alone.
pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    prepare_dir(dir)?;
    let lock_path = {
        let mut p = path.as_os_str().to_owned();
        p.push(".lock");
        PathBuf::from(p)
    };
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(SocketError::AlreadyRunning(path.to_owned()));
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
    }
    match fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(SocketError::Unsafe {
                    path: path.to_owned(),
                    why: "it exists and is not a socket; move it away".into(),
                });
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::AlreadyRunning(path.to_owned())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale socket");
                    fs::remove_file(path).map_err(io_err("remove the stale socket", path))?;
                }
                Err(e) => return Err(io_err("probe the existing socket", path)(e)),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("bind", path))?;
    // The umask (077) already made it 0600; say so explicitly anyway.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", path))?;
    Ok(BoundSocket {
        listener,
        path: path.to_owned(),
        _lock: Some(lock),
        owned: true,
    })
}

/// What systemd's socket activation sets in our environment: meant for us alone, so
/// every program the agent starts is started without them (see `child_command`).
const SYSTEMD_VARS: [&str; 4] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", NOTIFY_ENV];

/// Where systemd (`Type=notify`) listens for our state changes.
const NOTIFY_ENV: &str = "NOTIFY_SOCKET";

/// Tells systemd our state (`READY=1`, `STOPPING=1`) when it asked to be told
/// (`NOTIFY_SOCKET`, a datagram socket by path or, with a leading `@`, in the abstract
/// namespace) — sd_notify(3)'s protocol. Best effort: without systemd nothing happens,
/// and a failure to tell it is logged, not fatal.
pub fn notify_systemd(state: &str) {
    let Some(target) = std::env::var_os(NOTIFY_ENV).filter(|t| !t.is_empty()) else {
        return;
    };
    if let Err(e) = notify(&target, state) {
        tracing::warn!(state, error = %e, "cannot tell systemd our state");
    }
}

fn notify(target: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let addr = match target.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(Path::new(target))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// A program the agent starts (the approver, the alert command), without the variables
/// socket activation left for the agent.
pub fn child_command(program: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    for v in SYSTEMD_VARS {
        c.env_remove(v);
    }
    c
}

/// The listening socket systemd passed (fd 3), if this process was socket-activated.
#[allow(unsafe_code)]
pub fn from_systemd() -> Result<Option<BoundSocket>, SocketError> {
    use std::os::fd::{FromRawFd, RawFd};
    const SD_LISTEN_FDS_START: RawFd = 3;
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !pid_ok || fds < 1 {
        return Ok(None);
    }
    let fd = SD_LISTEN_FDS_START;
    let kind = nix::sys::socket::getsockopt(
        // SAFETY: fd 3 is open for the duration of this call (systemd's contract).
        &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::sys::socket::sockopt::SockType,
    )
    .map_err(|e| io_err("inspect the socket from systemd", Path::new("fd 3"))(e.into()))?;
    if kind != nix::sys::socket::SockType::Stream {
        return Err(SocketError::Unsafe {
            path: PathBuf::from("fd 3"),
            why: "systemd passed a socket that is not a stream socket".into(),
        });
    }
    // SAFETY: systemd passed ownership of fd 3, a listening stream socket (checked
    // above); nothing else in this process owns or closes it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| io_err("configure the socket from systemd", Path::new("fd 3"))(e.into()))?;
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("(socket from systemd)"));
    Ok(Some(BoundSocket {
        listener,
        path,
        _lock: None,
        owned: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_hears_us_on_an_abstract_socket_too() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let name = format!("jitc-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        notify(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn stale_socket_is_replaced_live_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("run");
        let path = dir.join("agent.sock");
        let first = bind(&path).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Live: the lock is held.
        assert!(matches!(bind(&path), Err(SocketError::AlreadyRunning(_))));
        // Dead: drop the listener and lock, leave the path behind.
        drop(first);
        assert!(path.exists());
        // The tests run on threads of one process, and some start children
        // (`procs`, `peer`): one forked but not yet exec'd holds a copy of the lock
        // and of the listening socket until it execs. Wait for that, not for a time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let second = loop {
            match bind(&path) {
                Err(SocketError::AlreadyRunning(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                other => break other.unwrap(),
            }
        };
        second.unlink();
        assert!(!path.exists());
    }

    #[test]
    fn open_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("run");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let e = bind(&dir.join("agent.sock")).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
    }
}

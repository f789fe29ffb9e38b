//! User namespaces and pidfds: the kernel calls the sandbox identity rests on, each a
//! thin wrapper over one system call or `ioctl` that std, nix and rustix do not cover.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `NS_GET_PARENT` (`_IO(0xb7, 0x2)`, linux/nsfs.h): the owning user namespace's parent.
const NS_GET_PARENT: libc::c_ulong = 0xb702;
/// `PIDFD_GET_USER_NAMESPACE` (`_IO(0xFF, 9)`, linux/pidfd.h, Linux 6.11).
const PIDFD_GET_USER_NAMESPACE: libc::c_ulong = 0xff09;

/// A namespace, as the kernel tells namespaces apart: the device and inode of its
/// `nsfs` file. Unique while the namespace lives — so only while someone holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    pub fn of(fd: &OwnedFd) -> io::Result<NsId> {
        let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
        Ok(NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// The agent's own user namespace.
pub fn own_user_ns() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/proc/self/ns/user")?.into())
}

/// The parent of user namespace `ns`; `None` at the top of what this process can see
/// (`EPERM`: the parent lies outside the caller's namespace).
pub fn parent(ns: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: `ns` is an open descriptor for the call's duration; `NS_GET_PARENT` takes
    // no argument and returns a new descriptor (or -1), which nothing else owns.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EPERM) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a fresh descriptor the kernel just handed to us alone.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A pidfd for `pid` (`pidfd_open`, Linux 5.3).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: plain system call with integer arguments; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: a fresh descriptor the kernel just handed to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends SIGKILL to the process of `pidfd` (best effort: it may be gone).
pub fn kill(pidfd: &OwnedFd) {
    // SAFETY: plain system call on a live descriptor; no memory is passed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Whether the process of `pidfd` has exited (its pidfd polls readable then).
pub fn exited(pidfd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) => n > 0,
        Err(_) => true,
    }
}

/// The user namespace of the process `pidfd` refers to, with `pid` its number here.
///
/// Through the pidfd itself where the kernel can (6.11); else through `/proc/PID`, and
/// then the pidfd proves the number still named that process when the namespace was
/// opened: a pid is not handed out again while its process lives.
pub fn user_ns_of(pidfd: &OwnedFd, pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: `pidfd` is open for the call's duration; the ioctl takes no argument and
    // returns a new descriptor (or -1), which nothing else owns.
    let fd = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_USER_NAMESPACE) };
    if fd >= 0 {
        // SAFETY: a fresh descriptor the kernel just handed to us alone.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let ns: OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/user"))?.into();
    if exited(pidfd) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(ns)
}

/// A pidfd that tokio can wait on: readable once its process has exited.
pub struct PidFd(OwnedFd);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until the process of `pidfd` exits.
pub async fn wait_exit(pidfd: OwnedFd) -> io::Result<()> {
    // SAFETY: `PidFd` owns the descriptor and always returns that same open descriptor;
    // it is closed only when `PidFd` drops, which happens when the `AsyncFd` drops.
    let fd = unsafe { AsyncFd::register_with_interest(PidFd(pidfd), Interest::READABLE) }?;
    let _ready = fd.readable().await?;
    Ok(())
}

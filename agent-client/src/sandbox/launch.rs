//! Starting bubblewrap, registering the sandbox with the agent while its first process
//! waits (`--block-fd`), letting the program run, and staying until it ends — or ending
//! it when the agent goes away, since a sandbox the agent no longer knows would look
//! like the outside to the next agent.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use jitc_protocol::{ErrorCode, SandboxInfo, SandboxRequest};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::client::Client;
use crate::error::{Error, Result};

/// What to launch.
#[derive(Debug)]
pub struct Launch {
    pub bwrap: PathBuf,
    /// bubblewrap's arguments (see `Plan::bwrap_args`).
    pub args: Vec<OsString>,
    /// This `jitc`, which runs `__sandbox-init` inside.
    pub jitc: PathBuf,
    pub command: Vec<OsString>,
    pub profile: String,
    /// `--quiet`: no note about what the kernel cannot enforce.
    pub quiet: bool,
}

/// `close_range`'s flag to mark the range close-on-exec instead of closing it.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Most of bubblewrap's error output read when it fails.
const MAX_BWRAP_ERROR: u64 = 16 << 10;

fn os(e: impl std::fmt::Display, what: &str) -> Error {
    Error::local(
        ErrorCode::Unavailable,
        format!("cannot make the sandbox: {what} ({e}); the program was not run"),
    )
}

/// A pipe whose `inherited` end (0: read, 1: write) survives `exec`.
fn pipe_for_child(inherited: usize) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| os(e, "pipe"))?;
    let child = if inherited == 0 { &r } else { &w };
    fcntl(child, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| os(e, "fcntl"))?;
    Ok((r, w))
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor the kernel just handed to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pidfd_kill(pidfd: &OwnedFd) {
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

/// The sandbox's first process, from bubblewrap's `--info-fd` JSON (`"child-pid": N`);
/// `None` if bubblewrap closed it without one (it failed).
fn read_child_pid(mut info: std::fs::File) -> Option<u32> {
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    while text.len() < 8192 {
        match info.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
        if text.contains(&b'}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&text);
    let after = &text[text.find("\"child-pid\"")? + "\"child-pid\"".len()..];
    let digits: String = after
        .trim_start_matches([':', ' ', '\n', '\t'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// bubblewrap's first line of complaint, and a hint where it means user namespaces are
/// off.
fn bwrap_failure(mut err: std::fs::File) -> Error {
    let mut text = String::new();
    let _ = (&mut err).take(MAX_BWRAP_ERROR).read_to_string(&mut text);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("it exited without saying why");
    let line = jitc_protocol::display::visible(line);
    let userns = [
        "namespace",
        "uid map",
        "uid_map",
        "Permission denied",
        "Operation not permitted",
    ]
    .iter()
    .any(|w| line.contains(w));
    let hint = if userns {
        "; unprivileged user namespaces look disabled here — on Ubuntu 23.10 and later AppArmor restricts them (allow them for /usr/bin/bwrap, see the README's sandbox section), elsewhere check 'sysctl user.max_user_namespaces' and 'kernel.unprivileged_userns_clone'"
    } else {
        ""
    };
    Error::local(
        ErrorCode::Unavailable,
        format!("cannot make the sandbox: bubblewrap says '{line}'{hint}; the program was not run"),
    )
}

/// Runs the sandbox to its end; its program's exit code (128+N if it died of signal N).
pub fn run(client: &mut Client, launch: Launch) -> Result<u8> {
    // Sent to the background (`jitc sandbox … &`), jitc must not be stopped by the
    // terminal — its sandbox would then outlive the agent's end unnoticed.
    // SAFETY: setting two signals' dispositions to ignore; no handler runs.
    unsafe {
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
    let (info_r, info_w) = pipe_for_child(1)?;
    let (block_r, block_w) = pipe_for_child(0)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| os(e, "pipe"))?;
    // The program gets a terminal of its own, never ours (see `relay`).
    let pty = super::relay::Pty::open()?;
    let stderr_copy = match &pty {
        Some(p) if p.stderr => nix::unistd::dup(&p.slave),
        _ => nix::unistd::dup(std::io::stderr()),
    }
    .map_err(|e| os(e, "dup"))?;
    fcntl(&stderr_copy, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| os(e, "fcntl"))?;
    let mut cmd = Command::new(&launch.bwrap);
    cmd.args(&launch.args)
        .arg("--info-fd")
        .arg(info_w.as_raw_fd().to_string())
        .arg("--block-fd")
        .arg(block_r.as_raw_fd().to_string())
        .arg("--")
        .arg(&launch.jitc)
        .arg("__sandbox-init")
        .arg("--stderr-fd")
        .arg(stderr_copy.as_raw_fd().to_string());
    if launch.quiet {
        cmd.arg("--quiet");
    }
    cmd.arg("--")
        .args(&launch.command)
        .stderr(Stdio::from(err_w));
    if let Some(p) = &pty {
        let slave = || p.slave.try_clone().map_err(|e| os(e, "dup"));
        if p.stdin {
            cmd.stdin(Stdio::from(slave()?));
        }
        if p.stdout {
            cmd.stdout(Stdio::from(slave()?));
        }
        super::relay::handled_signals()
            .thread_block()
            .map_err(|e| os(e, "sigprocmask"))?;
    }
    // Only these descriptors (beside 0-2) may reach bubblewrap: whatever else jitc
    // inherited without close-on-exec (a file, a socket, a terminal) must not.
    let mut keep = [
        info_w.as_raw_fd(),
        block_r.as_raw_fd(),
        stderr_copy.as_raw_fd(),
    ];
    keep.sort_unstable();
    // SAFETY: the closure makes async-signal-safe system calls only (prctl,
    // sigemptyset, sigprocmask, signal, close_range) on its own stack, and touches no
    // memory the parent shares (`keep` is a copied array).
    unsafe {
        cmd.pre_exec(move || {
            let mut from: libc::c_uint = 3;
            for fd in keep {
                let fd = fd as libc::c_uint;
                if fd > from {
                    libc::syscall(libc::SYS_close_range, from, fd - 1, CLOSE_RANGE_CLOEXEC);
                }
                from = fd + 1;
            }
            libc::syscall(
                libc::SYS_close_range,
                from,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
            // What jitc ignores (terminal stops) the sandbox gets back.
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            libc::signal(libc::SIGTTIN, libc::SIG_DFL);
            // bubblewrap dies with jitc, and `--die-with-parent` takes the sandbox along.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The signals the relay blocked for itself are not the sandbox's business.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::local(
            ErrorCode::Unavailable,
            format!(
                "cannot start bubblewrap ({}: {e}); install it (Debian, Ubuntu: apt install bubblewrap) — jitc never runs the program unsandboxed",
                launch.bwrap.display()
            ),
        )
    })?;
    drop(cmd);
    drop(info_w);
    drop(block_r);
    drop(stderr_copy);
    let bwrap = pidfd_open(child.id()).map_err(|e| os(e, "pidfd_open"))?;
    let err_r = std::fs::File::from(err_r);
    let Some(pid) = read_child_pid(std::fs::File::from(info_r)) else {
        let _ = child.wait();
        return Err(bwrap_failure(err_r));
    };
    // Alive (it waits on --block-fd), so the number is still its own.
    let sandbox = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            pidfd_kill(&bwrap);
            let _ = child.wait();
            return Err(os(e, "pidfd_open"));
        }
    };
    let registered = client.register_sandbox(SandboxRequest {
        pid,
        profile: launch.profile.clone(),
        command: launch
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    });
    let info: SandboxInfo = match registered {
        Ok(info) => info,
        Err(e) => {
            // Never let it run unregistered: kill it before closing --block-fd.
            pidfd_kill(&sandbox);
            pidfd_kill(&bwrap);
            let _ = child.wait();
            drop(block_w);
            return Err(e);
        }
    };
    tracing_note(&launch, &info);
    let mut block = std::fs::File::from(block_w);
    if let Err(e) = block.write_all(b"1") {
        pidfd_kill(&sandbox);
        let _ = child.wait();
        return Err(os(e, "unblocking bubblewrap"));
    }
    drop(block);
    // bubblewrap's own stderr from now on (rarely anything) goes where it would have.
    let forward = std::thread::spawn(move || {
        let mut err_r = err_r;
        let _ = std::io::copy(&mut err_r, &mut std::io::stderr());
    });
    let ended = match pty {
        Some(p) => super::relay::relay(p, client, &bwrap)?,
        None if wait(client, &bwrap) => super::relay::Ended::AgentGone,
        None => super::relay::Ended::Exited,
    };
    let agent_gone = ended == super::relay::Ended::AgentGone;
    if ended != super::relay::Ended::Exited {
        pidfd_kill(&sandbox);
    }
    let status = child.wait().map_err(|e| os(e, "wait"))?;
    let _ = forward.join();
    if let super::relay::Ended::Signalled(s) = ended {
        return Ok(u8::try_from(128 + s).unwrap_or(255));
    }
    if agent_gone {
        return Err(Error::local(
            ErrorCode::Unavailable,
            format!(
                "the agent stopped, so sandbox {} was ended: no agent would know it for a sandbox; start it again with 'jitc sandbox'",
                info.id
            ),
        ));
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(s)) => u8::try_from(128 + s).unwrap_or(255),
        _ => 1,
    })
}

/// `JITC_SANDBOX_VERBOSE=1`: say which sandbox this is (tests and the curious).
fn tracing_note(launch: &Launch, info: &SandboxInfo) {
    if std::env::var_os("JITC_SANDBOX_VERBOSE").is_some_and(|v| v == "1") && !launch.quiet {
        crate::error::note(&format!(
            "sandbox {} (profile '{}', first process {})",
            info.id, info.profile, info.pid
        ));
    }
}

/// Waits until bubblewrap exits (false) or the agent's connection closes (true).
fn wait(client: &Client, bwrap: &OwnedFd) -> bool {
    loop {
        let mut fds = [
            PollFd::new(bwrap.as_fd(), PollFlags::POLLIN),
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => return false,
        }
        if fds[0].any().unwrap_or(false) {
            return false;
        }
        if fds[1].any().unwrap_or(false) && super::relay::agent_closed(client) {
            return true;
        }
    }
}

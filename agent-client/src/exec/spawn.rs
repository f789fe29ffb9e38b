//! Starting the child: `fork` and `execve` from an environment built in buffers we own
//! and wipe (not `std::process::Command`'s), with what `posix_spawn` cannot do done in
//! between: the child dies with jitc (`PR_SET_PDEATHSIG`), and it leads a process group
//! of its own — a session of its own where there is no terminal to keep — so that
//! ending the lease can stop everything the command started, not just its first process.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use super::command::Program;
use crate::error::{Error, Result};

/// The environment for the child: ours, minus anything the lease overrides, plus the
/// leased variables. Wiped when dropped.
pub struct ChildEnv {
    entries: Zeroizing<Vec<CString>>,
}

impl std::fmt::Debug for ChildEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChildEnv([{} entries, redacted])", self.entries.len())
    }
}

impl ChildEnv {
    /// Starts from this process's environment, without the variables `drop` names.
    pub fn inherit(drop: impl Fn(&[u8]) -> bool) -> ChildEnv {
        let mut entries = Zeroizing::new(Vec::new());
        for (k, v) in std::env::vars_os() {
            if drop(k.as_bytes()) {
                continue;
            }
            let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            if let Ok(c) = CString::new(kv) {
                entries.push(c);
            }
        }
        ChildEnv { entries }
    }

    /// Adds a plain `var=value` (from an env file: not a secret).
    pub fn set_plain(&mut self, var: &str, value: &str) {
        if let Ok(c) = CString::new(format!("{var}={value}")) {
            self.entries.push(c);
        }
    }

    /// Adds `var=value`. A value with a NUL byte cannot live in an environment.
    pub fn set(&mut self, var: &str, secret: &str, value: &[u8]) -> Result<()> {
        if value.contains(&0) {
            return Err(Error::bad_input(format!(
                "secret '{secret}' contains a NUL byte and cannot go into an environment variable"
            )));
        }
        let mut kv = Zeroizing::new(Vec::with_capacity(var.len() + value.len() + 2));
        kv.extend_from_slice(var.as_bytes());
        kv.push(b'=');
        kv.extend_from_slice(value);
        // CString::new reuses the allocation (capacity suffices), so no copy is left.
        let c = CString::new(std::mem::take(&mut *kv))
            .map_err(|_| Error::bad_input("a variable contains a NUL byte"))?;
        self.entries.push(c);
        Ok(())
    }
}

/// The signals `jitc exec` handles itself; the child gets their default dispositions and
/// an empty mask, whatever ours are.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGWINCH,
        Signal::SIGCHLD,
        Signal::SIGCONT,
    ] {
        set.add(s);
    }
    set
}

/// Where the child's standard streams go.
#[derive(Debug, Default)]
pub struct ChildIo {
    /// A pty slave to open as the child's stdout (and controlling terminal: the child
    /// starts a new session first).
    pub tty: Option<PathBuf>,
    /// With `tty`: the child's stdin is the pty too.
    pub tty_stdin: bool,
    /// With `tty`: the child's stderr is the pty too.
    pub tty_stderr: bool,
    /// Descriptors to put at 1 and 2 (pipes' write ends), unless the pty takes them.
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
}

/// How the command's process group stands to a terminal.
#[derive(Debug)]
pub enum Job {
    /// It leads a session of its own: there was no terminal to keep, or it has a pty of
    /// its own.
    Session,
    /// It leads a process group in our session, which has `tty` as its controlling
    /// terminal; `foreground` while it holds the terminal.
    Group { tty: OwnedFd, foreground: bool },
}

/// The command, started: its pid is also its process group's id.
#[derive(Debug)]
pub struct Child {
    pub pid: Pid,
    pub job: Job,
}

/// Everything the forked child needs, prepared before the fork: after it, only
/// async-signal-safe calls may be made (the parent may have other threads).
struct Exec<'a> {
    path: CString,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// For a script without a `#!` line: `/bin/sh PATH ARGS…`, as `execvp` does.
    sh_argv: Vec<*const c_char>,
    tty: Option<CString>,
    io: &'a ChildIo,
    /// The terminal to make the command's group the foreground of.
    foreground: Option<RawFd>,
    own_session: bool,
    parent: libc::pid_t,
    core: Option<libc::rlimit>,
    report: RawFd,
    /// One byte from the parent here lets the command run; end of file stops it.
    go: RawFd,
    /// The parent's end of `go`, closed first thing (so that the parent's death is an
    /// end of file here).
    go_parent: RawFd,
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The soft core-size limit jitc had before `harden` set it to 0; the child gets it
/// back.
static CORE_LIMIT: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Makes this process unfit to leak the values it is about to receive: not dumpable (no
/// core file; no ptrace or `/proc/PID/mem` for other processes of the user) and no core
/// size. The command regains dumpability at `execve` as usual, and its core limit is
/// put back before it runs. Every command does this once connected (the agent has read
/// who it is from `/proc` by then, which a non-dumpable process no longer shows): a
/// passphrase or a value passes through all of them.
pub fn harden() -> Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| {
        Error::failure(format!(
            "cannot make jitc non-dumpable ({e}), so it handles no secret; nothing was done"
        ))
    })?;
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` into a live, aligned value.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut old) } == 0 {
        let _ = CORE_LIMIT.set(old);
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: old.rlim_max,
    };
    // SAFETY: setrlimit reads one `struct rlimit` from a live value.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(Error::failure(format!(
            "cannot turn off core dumps for jitc ({}), so it handles no secret; nothing was done",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Takes descriptor `fd`, inherited from whoever started jitc for jitc to use (it is
/// made close-on-exec, so the command does not inherit it too).
pub fn take_fd(fd: i32) -> Result<OwnedFd> {
    let bad = || Error::bad_input(format!("descriptor {fd} is not open; it is for jitc mcp"));
    if fd < 3 {
        return Err(bad());
    }
    // SAFETY: borrowed only to ask whether `fd` is open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).map_err(|_| bad())?;
    // SAFETY: an inherited descriptor handed to jitc by number; nothing else in this
    // process owns or closes it.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|_| bad())?;
    Ok(owned)
}

/// Our controlling terminal, if we have one.
fn controlling_terminal() -> Option<OwnedFd> {
    let fd = nix::fcntl::open(
        "/dev/tty",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    Some(fd)
}

/// Whether our process group holds the terminal `tty`.
fn in_foreground(tty: &OwnedFd) -> bool {
    // SAFETY: tcgetpgrp only reads a descriptor we own.
    let fg = unsafe { libc::tcgetpgrp(tty.as_raw_fd()) };
    fg > 0 && fg == nix::unistd::getpgrp().as_raw()
}

/// Hands the terminal to process group `pgid`, from a process that may be in the
/// background (SIGTTOU held off meanwhile).
pub fn give_terminal(tty: &OwnedFd, pgid: Pid) {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    let blocked =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old));
    // SAFETY: tcsetpgrp only acts on a descriptor we own.
    unsafe {
        libc::tcsetpgrp(tty.as_raw_fd(), pgid.as_raw());
    }
    if blocked.is_ok() {
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
}

/// Forks the command and, once it is set up but before it runs anything of its own,
/// calls `ready` with its pid: the command execs only if that succeeds (the agent has
/// taken hold of its process group, so there is no moment it runs unguarded).
pub fn spawn(
    program: &Program,
    env: &ChildEnv,
    io: &ChildIo,
    ready: impl FnOnce(Pid) -> Result<()>,
) -> Result<Child> {
    let cannot = |e: nix::Error| {
        Error::failure(format!(
            "cannot run {} ({}); check the command",
            program.path.display(),
            e.desc()
        ))
    };
    let argv: Vec<CString> = program
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::bad_input("an argument contains a NUL byte"))?;
    let path = CString::new(program.path.as_os_str().as_bytes())
        .map_err(|_| Error::bad_input("the command path contains a NUL byte"))?;
    let mut sh: Vec<CString> = vec![c"/bin/sh".to_owned(), path.clone()];
    sh.extend(argv.iter().skip(1).cloned());
    let tty = io
        .tty
        .as_ref()
        .map(|t| CString::new(t.as_os_str().as_bytes()))
        .transpose()
        .map_err(|_| Error::bad_input("the terminal path contains a NUL byte"))?;
    // A command on a pty of its own leads its session there. Otherwise it keeps our
    // terminal if we have one (programs that ask for a password open /dev/tty), in a
    // process group of its own, in the foreground if we are.
    let (job, foreground) = match (&tty, controlling_terminal()) {
        (None, Some(t)) => {
            let fg = in_foreground(&t);
            let raw = t.as_raw_fd();
            (
                Job::Group {
                    tty: t,
                    foreground: fg,
                },
                fg.then_some(raw),
            )
        }
        _ => (Job::Session, None),
    };
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(cannot)?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(cannot)?;
    let exec = Exec {
        argv: null_terminated(&argv),
        envp: null_terminated(&env.entries),
        sh_argv: null_terminated(&sh),
        path,
        tty,
        io,
        foreground,
        own_session: matches!(job, Job::Session),
        parent: nix::unistd::getpid().as_raw(),
        core: CORE_LIMIT.get().copied(),
        report: report_w.as_raw_fd(),
        go: go_r.as_raw_fd(),
        go_parent: go_w.as_raw_fd(),
    };
    // SAFETY: the child runs only `exec_child`, which makes async-signal-safe system
    // calls on data prepared above and never returns (it execs or `_exit`s).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(cannot(nix::Error::last()));
    }
    if pid == 0 {
        // SAFETY: see above; this is the child.
        unsafe { exec_child(&exec) }
    }
    drop(report_w);
    drop(go_r);
    let pid = Pid::from_raw(pid);
    // A group of its own, done on both sides so that neither depends on which runs
    // first (as shells do; it fails harmlessly once the child has exec'd). Not for a
    // session leader to be: a group leader cannot make a session.
    if let Job::Group { tty, foreground } = &job {
        let _ = nix::unistd::setpgid(pid, pid);
        if *foreground {
            give_terminal(tty, pid);
        }
    }
    // The child reports, 4 bytes each: 0 once it is set up (its group or session made)
    // and waits for the go; an errno if that or the exec fails. The pipe closes at a
    // good exec.
    let mut report = std::fs::File::from(report_r);
    let failed = |job: &Job, e: Error| {
        // No go came, or the exec failed: the child exits without running anything.
        let _ = nix::sys::wait::waitpid(pid, None);
        if let Job::Group {
            tty,
            foreground: true,
        } = job
        {
            give_terminal(tty, nix::unistd::getpgrp());
        }
        Err(e)
    };
    match read_report(&mut report) {
        Some(0) => {}
        Some(errno) => return failed(&job, cannot(nix::Error::from_raw(errno))),
        None => return failed(&job, cannot(nix::Error::ECHILD)),
    }
    let readied =
        ready(pid).and_then(|()| nix::unistd::write(&go_w, &[1]).map(drop).map_err(cannot));
    drop(go_w);
    if let Err(e) = readied {
        return failed(&job, e);
    }
    if let Some(errno) = read_report(&mut report) {
        return failed(&job, cannot(nix::Error::from_raw(errno)));
    }
    Ok(Child { pid, job })
}

/// The next 4-byte report of the child; `None` at the end of the pipe.
fn read_report(report: &mut std::fs::File) -> Option<i32> {
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match std::io::Read::read(report, &mut errno[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(i32::from_ne_bytes(errno))
}

/// The child's side of `spawn`: set up and exec, or report why not and exit.
///
/// # Safety
/// Call only in the child of a `fork`, with `exec`'s pointers alive. Everything here is
/// an async-signal-safe system call.
unsafe fn exec_child(exec: &Exec<'_>) -> ! {
    // SAFETY: raw system calls on descriptors and C strings prepared by the parent
    // before the fork (all alive: the parent's memory is ours, copied); nothing here
    // allocates, locks or unwinds.
    unsafe {
        let fail = |errno: i32| -> ! {
            let bytes = errno.to_ne_bytes();
            libc::write(exec.report, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        };
        let errno = || *libc::__errno_location();
        libc::close(exec.go_parent);
        // Dies with jitc, even by SIGKILL; if jitc is gone already, do not start.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != exec.parent {
            libc::_exit(127);
        }
        // Taking the terminal from the background would stop us with SIGTTOU.
        let mut ttou: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut ttou);
        libc::sigaddset(&mut ttou, libc::SIGTTOU);
        libc::sigprocmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
        if exec.own_session {
            libc::setsid();
        } else {
            libc::setpgid(0, 0);
            if let Some(tty) = exec.foreground {
                libc::tcsetpgrp(tty, libc::getpid());
            }
        }
        if let Some(tty) = &exec.tty {
            // A session leader without a terminal acquires the first one it opens.
            let fd = libc::open(tty.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                fail(errno());
            }
            if fd != 1 && libc::dup2(fd, 1) < 0 {
                fail(errno());
            }
            if exec.io.tty_stdin && libc::dup2(1, 0) < 0 {
                fail(errno());
            }
            if exec.io.tty_stderr && libc::dup2(1, 2) < 0 {
                fail(errno());
            }
            if fd > 2 {
                libc::close(fd);
            }
        } else if let Some(out) = exec.io.stdout
            && libc::dup2(out, 1) < 0
        {
            fail(errno());
        }
        if !(exec.tty.is_some() && exec.io.tty_stderr)
            && let Some(err) = exec.io.stderr
            && libc::dup2(err, 2) < 0
        {
            fail(errno());
        }
        if let Some(core) = &exec.core {
            libc::setrlimit(libc::RLIMIT_CORE, core);
        }
        // Default dispositions for what jitc handles, and SIGPIPE (Rust ignores it).
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGWINCH,
            libc::SIGCHLD,
            libc::SIGCONT,
            libc::SIGPIPE,
            libc::SIGTTOU,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        // Set up: nothing of the command runs before jitc says go (see `spawn`).
        let zero = 0i32.to_ne_bytes();
        libc::write(exec.report, zero.as_ptr().cast(), zero.len());
        let mut go = 0u8;
        loop {
            let n = libc::read(exec.go, (&raw mut go).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            libc::_exit(127);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
        if errno() == libc::ENOEXEC {
            libc::execve(
                c"/bin/sh".as_ptr(),
                exec.sh_argv.as_ptr(),
                exec.envp.as_ptr(),
            );
        }
        fail(errno())
    }
}

//! Starting the child: `clone` (`CLONE_VM`, as `posix_spawn` does) and `execve` from an
//! environment built in buffers we own and wipe (not `std::process::Command`'s), with
//! what `posix_spawn` cannot do done in between: the child dies with jitc
//! (`PR_SET_PDEATHSIG`), and it leads a process group of its own — a session of its
//! own where there is no terminal to keep — so that ending the lease can stop
//! everything the command started, not just its first process.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, Ordering};

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

/// Everything the child needs, prepared before it is cloned. The child shares our
/// memory until it execs (`CLONE_VM`, see `fork`) and only reads this; the environment
/// comes last, through `envp`, once the values have arrived.
struct Exec {
    path: CString,
    argv: Vec<*const c_char>,
    /// For a script without a `#!` line: `/bin/sh PATH ARGS…`, as `execvp` does.
    sh_argv: Vec<*const c_char>,
    /// What `argv` and `sh_argv` point into.
    _strings: Vec<CString>,
    tty: Option<CString>,
    tty_stdin: bool,
    tty_stderr: bool,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    own_session: bool,
    parent: libc::pid_t,
    core: Option<libc::rlimit>,
    report: RawFd,
    /// One byte from the parent here lets the command run; end of file stops it.
    go: RawFd,
    /// The parent's end of `go`, closed first thing (so that the parent's death is an
    /// end of file here).
    go_parent: RawFd,
    /// The environment (NULL-terminated), stored by the parent before it writes the go
    /// byte, loaded by the child after it has read it.
    envp: AtomicPtr<*const c_char>,
}

/// The child's stack until it execs: a mapping of its own with a guard page below, so
/// that an overflow faults instead of writing over our memory.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    /// Far more than the child's few frames of system calls need.
    const SIZE: usize = 128 << 10;

    fn new() -> nix::Result<Stack> {
        // SAFETY: sysconf only reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096);
        let len = Stack::SIZE + page;
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(nix::Error::last());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(nix::Error::last());
        }
        Ok(stack)
    }

    /// Where the child's stack starts (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is page-aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used: `Forked` drops its stack
        // only once the child has exec'd or exited.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
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

/// The command, set up but not yet running anything of its own: it waits for
/// `Forked::start`. Started before the values arrive, so that the child's set-up
/// overlaps the agent's work on the lease (its audit record's sync above all); dropped
/// without starting, it exits having run nothing, and is reaped.
pub struct Forked {
    pid: Pid,
    job: Job,
    /// The child's reports (see `fork`).
    report: std::fs::File,
    /// The go byte; closing it unstarted ends the child.
    go: Option<OwnedFd>,
    program: PathBuf,
    started: bool,
    /// Shared with the child until it has exec'd or exited: dropped after `drop` has
    /// reaped it, or once it has exec'd.
    exec: Box<Exec>,
    _stack: Stack,
}

impl std::fmt::Debug for Forked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Forked({})", self.pid)
    }
}

/// The child's first code, on its own stack, in our memory.
extern "C" fn child_main(exec: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `fork` passes its boxed `Exec`, alive until this child has exec'd or
    // exited (see `Forked`).
    unsafe { exec_child(&*exec.cast::<Exec>()) }
}

/// Starts the command's process. It sets itself up — its group or session, its
/// streams — and waits for `Forked::start`; nothing of the command runs before that,
/// and no value is in its reach until then.
///
/// The child is cloned with `CLONE_VM`, as `posix_spawn` does (but without
/// `CLONE_VFORK`: it must wait for the go): it runs in our memory, on a stack of its
/// own, until it execs, so nothing is copied for it and no page of ours is copied on
/// write while it waits. It only makes async-signal-safe system calls on what is
/// prepared here, with every signal blocked until the go and each of our handlers reset
/// first, as `posix_spawn` does: no handler of ours ever runs in it, and nothing
/// interrupts its wait. A failing call writes `errno`, in the thread-local memory of
/// the thread that cloned it: that thread is blocked reading the child's report while
/// the child sets up and once it has said go, and reads no `errno` while the child
/// waits (blocked in `read`, which nothing can interrupt). While another thread of
/// ours runs (`--mount`'s server), glibc's cancellable calls in the child also update
/// the cloning thread's cancellation state; nothing here ever cancels a thread.
pub fn fork(program: &Program, io: &ChildIo) -> Result<Forked> {
    let cannot = |e| cannot_run(&program.path, e);
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
    // process group of its own, in the foreground if we are — from the go on, so that
    // a ^C while the lease waits for approval still reaches jitc.
    let job = match (&tty, controlling_terminal()) {
        (None, Some(t)) => Job::Group {
            tty: t,
            foreground: false,
        },
        _ => Job::Session,
    };
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(cannot)?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(cannot)?;
    let stack = Stack::new().map_err(cannot)?;
    let exec = Box::new(Exec {
        argv: null_terminated(&argv),
        sh_argv: null_terminated(&sh),
        _strings: argv.into_iter().chain(sh).collect(),
        path,
        tty,
        tty_stdin: io.tty_stdin,
        tty_stderr: io.tty_stderr,
        stdout: io.stdout,
        stderr: io.stderr,
        own_session: matches!(job, Job::Session),
        parent: nix::unistd::getpid().as_raw(),
        core: CORE_LIMIT.get().copied(),
        report: report_w.as_raw_fd(),
        go: go_r.as_raw_fd(),
        go_parent: go_w.as_raw_fd(),
        envp: AtomicPtr::new(std::ptr::null_mut()),
    });
    // Every signal blocked across the clone, as posix_spawn does: none of our handlers
    // may run in the child, which shares our memory (it resets them, then waits for the
    // go with all signals still blocked, so nothing interrupts it either).
    let mut old_mask = SigSet::empty();
    let _ = nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old_mask),
    );
    // SAFETY: the child runs `child_main` on `stack`, reading `exec` (both kept alive
    // by `Forked` until it has exec'd or exited), and makes only async-signal-safe
    // system calls; it never returns (it execs or `_exit`s). Not `CLONE_FILES`: the
    // descriptors closed below stay open in the child.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::SIGCHLD,
            (&raw const *exec).cast_mut().cast(),
        )
    };
    let clone_errno = nix::Error::last();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    if pid < 0 {
        return Err(cannot(clone_errno));
    }
    drop(report_w);
    drop(go_r);
    let mut forked = Forked {
        pid: Pid::from_raw(pid),
        job,
        report: std::fs::File::from(report_r),
        go: Some(go_w),
        program: program.path.clone(),
        started: false,
        exec,
        _stack: stack,
    };
    // The child reports, 4 bytes each: 0 once it is set up (its group or session made)
    // and waits for the go; an errno if that or the exec fails. The pipe closes at a
    // good exec. Blocked here meanwhile (see above).
    match read_report(&mut forked.report) {
        Some(0) => Ok(forked),
        Some(errno) => Err(cannot(nix::Error::from_raw(errno))),
        None => Err(cannot(nix::Error::ECHILD)),
    }
}

impl Forked {
    /// Runs the command with `env`, once `ready` (given its pid) succeeds: the agent has
    /// taken hold of its process group, so there is no moment it runs unguarded.
    pub fn start(mut self, env: &ChildEnv, ready: impl FnOnce(Pid) -> Result<()>) -> Result<Child> {
        let program = self.program.clone();
        let cannot = |e| cannot_run(&program, e);
        // Read by the child only after the go byte, and alive until it has exec'd or
        // exited: we return only once it has (an end of file or an errno on `report`,
        // then `drop` reaps it).
        let envp = null_terminated(&env.entries);
        self.exec
            .envp
            .store(envp.as_ptr().cast_mut(), Ordering::Release);
        ready(self.pid)?;
        // Whether we hold the terminal now, not when the child was cloned (job control
        // may have moved us while the lease waited).
        if let Job::Group { tty, foreground } = &mut self.job {
            *foreground = in_foreground(tty);
            if *foreground {
                give_terminal(tty, self.pid);
            }
        }
        let Some(go) = self.go.take() else {
            return Err(Error::Unexpected("a command started twice"));
        };
        let went = nix::unistd::write(&go, &[1]).map(drop).map_err(cannot);
        drop(go);
        if let Err(e) = went {
            self.give_back();
            return Err(e);
        }
        if let Some(errno) = read_report(&mut self.report) {
            self.give_back();
            return Err(cannot(nix::Error::from_raw(errno)));
        }
        // Exec'd: ours to supervise, no longer to reap here.
        self.started = true;
        Ok(Child {
            pid: self.pid,
            job: std::mem::replace(&mut self.job, Job::Session),
        })
    }

    /// The terminal back to us if the child was given it and never ran.
    fn give_back(&self) {
        if let Job::Group {
            tty,
            foreground: true,
        } = &self.job
        {
            give_terminal(tty, nix::unistd::getpgrp());
        }
    }
}

impl Drop for Forked {
    /// Not started (or it failed to): without the go the child exits having run
    /// nothing. It is reaped before its stack and `Exec` are freed.
    fn drop(&mut self) {
        if self.started {
            return;
        }
        drop(self.go.take());
        // It runs nothing of its own yet; a stopped one would never see the end of file.
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        while let Err(nix::Error::EINTR) = nix::sys::wait::waitpid(self.pid, None) {}
    }
}

/// Why `program` could not be started.
fn cannot_run(program: &std::path::Path, e: nix::Error) -> Error {
    Error::failure(format!(
        "cannot run {} ({}); check the command",
        program.display(),
        e.desc()
    ))
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

/// The child's side of `fork`: set up, wait for the go, and exec; or report why not
/// and exit.
///
/// # Safety
/// Call only in the child `fork` clones, with `exec` and what it points to alive.
/// Everything here is an async-signal-safe system call.
unsafe fn exec_child(exec: &Exec) -> ! {
    // SAFETY: raw system calls on descriptors and C strings the parent prepared before
    // the clone (alive: see `Forked`), in its memory; nothing here allocates, locks,
    // unwinds or writes to memory the parent uses, but `errno` (see `fork`).
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
        // Every signal is blocked (see `fork`): no handler of jitc's runs here. Reset them
        // all, as posix_spawn does.
        for sig in 1..=libc::SIGRTMAX() {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) == 0
                && sa.sa_sigaction != libc::SIG_DFL
                && sa.sa_sigaction != libc::SIG_IGN
            {
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        if exec.own_session {
            libc::setsid();
        } else {
            libc::setpgid(0, 0);
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
            if exec.tty_stdin && libc::dup2(1, 0) < 0 {
                fail(errno());
            }
            if exec.tty_stderr && libc::dup2(1, 2) < 0 {
                fail(errno());
            }
            if fd > 2 {
                libc::close(fd);
            }
        } else if let Some(out) = exec.stdout
            && libc::dup2(out, 1) < 0
        {
            fail(errno());
        }
        if !(exec.tty.is_some() && exec.tty_stderr)
            && let Some(err) = exec.stderr
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
        // Set up: nothing of the command runs before jitc says go (see `Forked::start`).
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
        let envp: *const *const c_char = exec.envp.load(Ordering::Acquire);
        if envp.is_null() {
            libc::_exit(127);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(exec.path.as_ptr(), exec.argv.as_ptr(), envp);
        if errno() == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), exec.sh_argv.as_ptr(), envp);
        }
        fail(errno())
    }
}

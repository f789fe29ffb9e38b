//! `jitc __sandbox-init`: the last step inside the sandbox before the program runs.
//! Landlock scopes signals and abstract Unix sockets to the sandbox (where the kernel
//! has Landlock ABI 6), a seccomp filter forbids pushing input into the terminal
//! (`TIOCSTI`, `TIOCLINUX`: keystrokes typed into the user's shell after the program
//! ends would run outside), and then the program replaces this process.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use landlock::{CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus, Scope};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::error::{Error, Result};

/// What Landlock enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoped {
    /// Signals and abstract sockets are scoped to the sandbox.
    Fully,
    /// The kernel's Landlock is older than ABI 6 (or off): the PID namespace alone keeps
    /// processes outside out of reach.
    No,
}

/// Scopes signals and abstract Unix sockets to this process's descendants.
pub fn scope() -> Result<Scoped> {
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| Error::failure(format!("cannot apply Landlock in the sandbox ({e})")))?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Scoped::Fully,
        _ => Scoped::No,
    })
}

/// Makes `ioctl(fd, TIOCSTI | TIOCLINUX, …)` fail with `EPERM` in this process and all
/// it starts. The request number is compared as the 32 bits the kernel reads, so high
/// bits set by the caller cannot slip past.
// The request constants are `c_ulong` or `c_int` depending on the architecture.
#[allow(clippy::unnecessary_cast)]
pub fn forbid_terminal_injection() -> Result<()> {
    let rule = |request: u64| {
        SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
            .and_then(|c| SeccompRule::new(vec![c]))
    };
    let fail = |e: &dyn std::fmt::Display| {
        Error::failure(format!(
            "cannot install the sandbox's terminal filter ({e}); nothing was run"
        ))
    };
    let rules = vec![
        rule(libc::TIOCSTI as u64).map_err(|e| fail(&e))?,
        rule(libc::TIOCLINUX as u64).map_err(|e| fail(&e))?,
    ];
    let arch = std::env::consts::ARCH.try_into().map_err(|e| fail(&e))?;
    let filter = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_ioctl, rules)]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| fail(&e))?;
    let program: BpfProgram = filter.try_into().map_err(|e| fail(&e))?;
    seccompiler::apply_filter(&program).map_err(|e| fail(&e))?;
    Ok(())
}

/// Puts back the stderr that `jitc sandbox` handed over as descriptor `fd`
/// (bubblewrap's own stderr went to jitc, to be read if it fails), and closes `fd`.
fn restore_stderr(fd: i32) -> Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let fail =
        |e: nix::Error| Error::failure(format!("cannot restore stderr in the sandbox ({e})"));
    if fd < 3
        || nix::fcntl::fcntl(
            // SAFETY: only asks whether `fd` is open; nothing is owned or closed.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .is_err()
    {
        return Err(fail(nix::Error::EBADF));
    }
    // SAFETY: `jitc sandbox` made `fd` for this process alone and passed its number on
    // the command line; nothing else here uses or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::unistd::dup2_stderr(&owned).map_err(fail)?;
    Ok(())
}

/// Makes the sandbox's pty (on the first of stdin, stdout, stderr that is a terminal)
/// the controlling terminal of the session bubblewrap began, so the program has job
/// control and window-size changes as on any terminal.
fn take_terminal() {
    for fd in 0..3 {
        // SAFETY: ioctls on descriptors 0-2, open for the life of the process; TIOCSCTTY
        // takes an integer argument and touches no memory.
        unsafe {
            if libc::isatty(fd) == 1 {
                libc::ioctl(fd, libc::TIOCSCTTY, 0);
                return;
            }
        }
    }
}

/// Runs `command` in place of this process, sandboxed as above.
pub fn run(stderr_fd: Option<i32>, command: &[OsString], quiet: bool) -> Result<u8> {
    if let Some(fd) = stderr_fd {
        restore_stderr(fd)?;
    }
    take_terminal();
    let scoped = scope()?;
    if scoped == Scoped::No && !quiet {
        crate::error::note(
            "this kernel's Landlock cannot scope signals and abstract sockets (it needs ABI 6, Linux 6.12): the PID namespace alone keeps the sandbox from signalling processes outside",
        );
    }
    forbid_terminal_injection()?;
    let Some((program, args)) = command.split_first() else {
        return Err(Error::bad_input("the sandbox needs a command to run"));
    };
    let e = std::process::Command::new(program).args(args).exec();
    Err(if e.kind() == std::io::ErrorKind::NotFound {
        Error::failure(format!(
            "command not found in the sandbox: {}; check the path",
            program.to_string_lossy()
        ))
    } else {
        Error::failure(format!(
            "cannot run {} in the sandbox ({e})",
            program.to_string_lossy()
        ))
    })
}

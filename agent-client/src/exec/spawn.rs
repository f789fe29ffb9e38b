//! Starting the child with `posix_spawn`, so that the environment holding the values is
//! built in buffers we own and wipe, not in `std::process::Command`'s.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
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
    /// Starts from this process's environment, without the variables in `overridden`.
    pub fn inherit(overridden: &[&str]) -> ChildEnv {
        let mut entries = Zeroizing::new(Vec::new());
        for (k, v) in std::env::vars_os() {
            if overridden.iter().any(|o| k.as_bytes() == o.as_bytes()) {
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

pub fn spawn(program: &Program, env: &ChildEnv, io: &ChildIo) -> Result<Pid> {
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
    let mut attr = PosixSpawnAttr::init().map_err(cannot)?;
    let mut defaults = handled_signals();
    // Rust ignores SIGPIPE in its own processes; the child must not inherit that.
    defaults.add(Signal::SIGPIPE);
    attr.set_sigdefault(&defaults).map_err(cannot)?;
    attr.set_sigmask(&SigSet::empty()).map_err(cannot)?;
    let mut flags =
        PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK;
    let mut actions = PosixSpawnFileActions::init().map_err(cannot)?;
    if let Some(tty) = &io.tty {
        // A new session, then opening the slave makes it the controlling terminal.
        flags |= PosixSpawnFlags::from_bits_retain(libc::c_int::from(libc::POSIX_SPAWN_SETSID));
        actions
            .add_open(1, tty.as_path(), OFlag::O_RDWR, Mode::empty())
            .map_err(cannot)?;
        if io.tty_stdin {
            actions.add_dup2(1, 0).map_err(cannot)?;
        }
        if io.tty_stderr {
            actions.add_dup2(1, 2).map_err(cannot)?;
        }
    } else if let Some(out) = io.stdout {
        actions.add_dup2(out, 1).map_err(cannot)?;
    }
    if !(io.tty.is_some() && io.tty_stderr)
        && let Some(err) = io.stderr
    {
        actions.add_dup2(err, 2).map_err(cannot)?;
    }
    attr.set_flags(flags).map_err(cannot)?;
    match posix_spawn(
        program.path.as_os_str(),
        &actions,
        &attr,
        &argv,
        &env.entries,
    ) {
        // A script without a `#!` line: run it with sh, as execvp does.
        Err(nix::errno::Errno::ENOEXEC) => {
            let mut sh_argv = vec![c"/bin/sh".to_owned()];
            sh_argv.push(
                CString::new(program.path.as_os_str().as_bytes())
                    .map_err(|_| Error::bad_input("the command path contains a NUL byte"))?,
            );
            sh_argv.extend(argv.into_iter().skip(1));
            posix_spawn(c"/bin/sh", &actions, &attr, &sh_argv, &env.entries).map_err(cannot)
        }
        r => r.map_err(cannot),
    }
}

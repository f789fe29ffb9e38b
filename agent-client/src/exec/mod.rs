//! `jitc exec`: lease the secrets, inject them into the command's environment, run it,
//! forward signals, stop it if the lease ends, and release the lease when it exits.

pub mod command;
pub mod inject;
pub mod output;
pub mod proxy;
pub mod spawn;
pub mod supervise;
pub mod terminal;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use jitc_protocol::{CommandLine, LeaseGrant, LeaseRequest};
use nix::fcntl::OFlag;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::client::{Client, LeaseReply};
use crate::error::{Error, Result};
use crate::mask::Masker;
use crate::refs::Binding;
pub use command::Program;
use output::{Pump, Source, WriteErrors};
use spawn::{ChildEnv, ChildIo};

/// Everything `jitc exec` needs, parsed and checked before the agent is asked.
#[derive(Debug)]
pub struct Plan {
    /// Secrets injected as environment variables (from -s, -e and --env-file).
    pub bindings: Vec<Binding>,
    /// Secrets handed over as in-memory files (`--file VAR=REF`).
    pub files: Vec<Binding>,
    /// Plain variables from --env-file, passed through.
    pub plain: Vec<(String, String)>,
    /// A FIFO serving the values in dotenv form (`--mount PATH`).
    pub mount: Option<PathBuf>,
    pub program: Program,
    pub cwd: PathBuf,
    pub task: Option<String>,
    pub ttl: Option<Duration>,
    pub masking: bool,
    /// `--proxy`: secrets bound by a `[[credential]]` come as placeholders, and the
    /// command's HTTP(S) goes through the agent's gateway, which adds them.
    pub proxy: bool,
    /// Where to say, as JSON lines, that the request waits for approval
    /// (`{"waiting":ID}`) and that it was granted (`{"lease":ID}`): `jitc mcp` reads it.
    pub events: Option<std::fs::File>,
}

impl Plan {
    /// Whether anything is to be leased (without secrets, the command just runs).
    pub fn leases_anything(&self) -> bool {
        !self.bindings.is_empty() || !self.files.is_empty()
    }

    /// One line to `events`, if any (best effort: a reader that went away is no reason
    /// to stop).
    fn event(&self, line: &str) {
        if let Some(mut f) = self.events.as_ref() {
            let _ = std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes());
        }
    }

    pub fn lease_request(&self) -> LeaseRequest {
        let mut secrets: Vec<String> = Vec::new();
        for b in self.bindings.iter().chain(&self.files) {
            if !secrets.contains(&b.secret) {
                secrets.push(b.secret.clone());
            }
        }
        LeaseRequest {
            secrets,
            command: CommandLine {
                path: self.program.path.to_string_lossy().into_owned(),
                argv: self
                    .program
                    .argv
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                cwd: self.cwd.to_string_lossy().into_owned(),
            },
            task: self.task.clone(),
            ttl_ms: self
                .ttl
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            masking: self.masking,
            proxy: self.proxy,
        }
    }
}

fn value<'g>(grant: &'g LeaseGrant, secret: &str) -> Result<&'g [u8]> {
    grant
        .values
        .iter()
        .find(|v| v.name == secret)
        .map(|v| v.value.expose())
        .ok_or(Error::Unexpected("a leased value is missing"))
}

/// A close-on-exec pipe for one of the command's output streams: (read end, made
/// non-blocking for our poll loop; write end, left blocking for the command).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let failed =
        |e: nix::Error| Error::failure(format!("cannot make a pipe for the command ({e})"));
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(failed)?;
    // A bigger pipe means fewer hand-offs between the command and us on a busy stream
    // (best effort: the system's pipe-max-size may be lower).
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    let fl = OFlag::from_bits_truncate(
        nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_GETFL).map_err(failed)?,
    );
    nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map_err(failed)?;
    Ok((r, w))
}

/// Waits for the lease asked for, telling the user while it waits for approval.
/// `Err(code)`: interrupted before anything ran.
fn lease(
    plan: &Plan,
    client: &mut Client,
    signals: &SignalFd,
) -> Result<std::result::Result<LeaseGrant, u8>> {
    loop {
        if let Some(code) = supervise::wait_for_reply(client, signals)? {
            return Ok(Err(code));
        }
        match client.lease_reply()? {
            LeaseReply::Granted(g) => {
                plan.event(&format!("{{\"lease\":{}}}", g.lease));
                return Ok(Ok(g));
            }
            LeaseReply::Waiting(w) => {
                plan.event(&format!("{{\"waiting\":{}}}", w.id));
                crate::error::note(&crate::client::waiting_note(&w));
            }
        }
    }
}

/// Runs the plan under a lease from `client` (or, with nothing to lease, without one);
/// returns the exit code for `jitc` (the child's, or 128+N if it died of signal N).
pub fn run(plan: Plan, mut client: Option<&mut Client>) -> Result<u8> {
    // Block the signals we handle before the child exists, so none is missed; the child
    // gets an empty mask (see spawn).
    let handled = spawn::handled_signals();
    handled
        .thread_block()
        .map_err(|e| Error::failure(format!("cannot set up signal handling ({e})")))?;
    let signals = SignalFd::with_flags(&handled, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::failure(format!("cannot set up signal handling ({e})")))?;

    let leasing = client.is_some();
    if leasing {
        // Nothing that holds a value may be dumped or read by a same-user process; and
        // what the command orphans (a daemon it starts) comes to us, so that the end of
        // the lease can reach it.
        spawn::harden()?;
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    // Output is masked whenever something is leased, unless the plan says not to.
    let masking = leasing && plan.masking;

    // Where the command's output goes: straight to ours without masking; through the
    // masker on a pty when we are on a terminal; through pipes otherwise. Set up, like
    // the in-memory files (filled later), before the command's process is started.
    let mut io = ChildIo::default();
    let mut streams: Vec<(OwnedFd, BorrowedFd<'static>, Source)> = Vec::new();
    let mut write_ends: Vec<OwnedFd> = Vec::new();
    let pty = match masking {
        true if terminal::stdout_is_terminal() => Some(terminal::open_like(terminal::stdout_fd())?),
        _ => None,
    };
    if masking {
        let (stdout, stderr) = (terminal::stdout_fd(), terminal::stderr_fd());
        if let Some(p) = &pty {
            io.tty = Some(p.slave_path.clone());
            io.tty_stdin = terminal::stdin_is_terminal();
            io.tty_stderr = terminal::stderr_is_terminal();
            let master = p.master.try_clone().map_err(|e| {
                Error::failure(format!("cannot set up the command's terminal ({e})"))
            })?;
            let kind = Source::Pty {
                onlcr_by_jitc: p.onlcr_by_jitc,
            };
            streams.push((master, stdout, kind));
        } else {
            let (r, w) = pipe()?;
            io.stdout = Some(std::os::fd::AsRawFd::as_raw_fd(&w));
            write_ends.push(w);
            streams.push((r, stdout, Source::Pipe));
        }
        if !io.tty_stderr {
            let (r, w) = pipe()?;
            io.stderr = Some(std::os::fd::AsRawFd::as_raw_fd(&w));
            write_ends.push(w);
            streams.push((r, stderr, Source::Pipe));
        }
    }
    let memfds = match leasing {
        true => plan
            .files
            .iter()
            .map(|b| inject::memfd_for(&b.var))
            .collect::<Result<Vec<_>>>()?,
        false => Vec::new(),
    };

    // The command's process is started while the agent works on the lease — its audit
    // record's sync above all — and waits, holding no value, for `start`: the values
    // come only once the grant is on disk, and nothing of the command runs before.
    let (grant, forked) = match client.as_deref_mut() {
        Some(c) => {
            c.send(&jitc_protocol::Request::Lease(plan.lease_request()))?;
            let forked = spawn::fork(&plan.program, &io)?;
            match lease(&plan, c, &signals)? {
                Ok(g) => (Some(g), forked),
                Err(code) => return Ok(code),
            }
        }
        None => (None, spawn::fork(&plan.program, &io)?),
    };
    let lease_id = grant.as_ref().map(|g| g.lease);
    // The agent learns which processes are the command's, to stop them itself if we
    // cannot (killed, frozen) when the lease ends — before the command runs at all.
    // Asked now, and answered while the environment is built; the command runs only
    // once it is (see `Forked::start`).
    let guarding = match (client.as_deref_mut(), lease_id) {
        (Some(c), Some(id)) => {
            c.send(&jitc_protocol::Request::Guard { lease: id })?;
            true
        }
        _ => false,
    };
    let strict_env = grant.as_ref().is_some_and(|g| g.strict_env);

    let gateway = grant.as_ref().and_then(|g| g.gateway.as_ref());
    let placeholder =
        |name: &str| gateway.is_some_and(|g| g.placeholders.iter().any(|p| p == name));
    if let (Some(grant), Some(_)) = (&grant, gateway) {
        for v in grant.values.iter().filter(|v| !placeholder(&v.name)) {
            crate::error::note(&format!(
                "'{}' is bound to no host by a [[credential]]: it is passed as its value",
                v.name
            ));
        }
    }
    let masker = match (&grant, masking) {
        // Masking that cannot be set up stops the command (fail closed). Placeholders
        // are nothing to hide.
        (Some(grant), true) => Some(
            Masker::new(
                grant
                    .values
                    .iter()
                    .filter(|v| !placeholder(&v.name))
                    .map(|v| (v.name.as_str(), v.value.expose())),
            )
            .map_err(|e| {
                Error::failure(format!(
                    "cannot set up output masking ({e}); nothing was run"
                ))
            })?,
        ),
        _ => None,
    };
    // The environment, in-memory files and FIFO, built while the values are at hand.
    let overridden: Vec<&str> = plan
        .bindings
        .iter()
        .chain(&plan.files)
        .map(|b| b.var.as_str())
        .chain(plan.plain.iter().map(|(k, _)| k.as_str()))
        .collect();
    // A command the policy pins runs without the loader and interpreter hooks of
    // whoever asked for it.
    let proxied: Vec<&str> = match gateway {
        Some(_) => proxy::overridden().collect(),
        None => Vec::new(),
    };
    let mut env = ChildEnv::inherit(|k| {
        overridden.iter().chain(&proxied).any(|o| k == o.as_bytes())
            || (strict_env && std::str::from_utf8(k).is_ok_and(jitc_protocol::names::is_hook_var))
    });
    for (k, v) in &plan.plain {
        env.set_plain(k, v);
    }
    let mut _mount = None;
    if let Some(g) = gateway {
        proxy::apply(&mut env, g)?;
    }
    if let Some(grant) = &grant {
        for b in &plan.bindings {
            env.set(&b.var, &b.secret, value(grant, &b.secret)?)?;
        }
        for (b, fd) in plan.files.iter().zip(&memfds) {
            inject::fill(fd, &b.var, value(grant, &b.secret)?)?;
            env.set_plain(&b.var, &inject::fd_path(fd));
        }
        if let Some(path) = &plan.mount {
            let mut entries: Vec<(&str, &[u8])> = Vec::new();
            for b in plan.bindings.iter().chain(&plan.files) {
                entries.push((b.var.as_str(), value(grant, &b.secret)?));
            }
            _mount = Some(inject::Mount::create(path, inject::dotenv_text(&entries))?);
        }
    }

    let write_errors = WriteErrors::default();
    let outputs: Vec<Pump<'_>> = streams
        .into_iter()
        .map(|(source, sink, kind)| Pump::new(source, sink, masker.as_ref(), kind, &write_errors))
        .collect();
    if let Some(m) = &masker {
        for name in m.unmasked() {
            crate::error::note(&format!(
                "'{name}' is shorter than {} bytes, so it is not masked in the output",
                crate::mask::MIN_MASKED_LEN
            ));
        }
    }
    let raw = match &pty {
        Some(_) if io.tty_stdin => terminal::RawMode::stdin(),
        _ => None,
    };
    let guard = |_: nix::unistd::Pid| match client.as_deref_mut() {
        Some(c) if guarding => match c.expect_reply()? {
            jitc_protocol::Response::Done => Ok(()),
            _ => Err(Error::Unexpected("an answer to Guard")),
        },
        _ => Ok(()),
    };
    let child = forked.start(&env, guard)?;
    // Our copies would keep the command's streams (and values) alive.
    drop(write_ends);
    drop(memfds);
    drop(env);
    drop(grant);

    let outcome = supervise::Supervisor {
        child,
        signals: &signals,
        client: client.as_deref_mut(),
        outputs,
        pty: pty
            .as_ref()
            .filter(|_| io.tty_stdin)
            .map(|p| p.master.as_fd()),
    }
    .run();
    drop(raw);
    let outcome = outcome?;
    if outcome.lease_held
        && let (Some(c), Some(id)) = (client, lease_id)
    {
        // Best effort: closing the connection releases it too.
        let _ = c.release(id);
    }
    write_errors.check()?;
    Ok(outcome.code)
}

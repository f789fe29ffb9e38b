//! Watching the command while the lease lasts: pump its output through the masker,
//! forward signals (and keystrokes and window sizes, on the terminal path), reap it,
//! and stop it when the agent ends the lease (SIGTERM, then SIGKILL 5 s later) — the
//! whole of it: the command leads a process group, and the group is signalled.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use jitc_protocol::Response;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::output::{CHUNK, Keys, Pump};
use super::spawn::{self, Child, Job};
use super::terminal;
use crate::client::Client;
use crate::error::{Error, Result};
use zeroize::Zeroize;

/// Grace between SIGTERM and SIGKILL when a lease ends under a running command.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// After the command exits, output still arriving (from the pty's buffer, say) is
/// taken until the streams end or stay quiet this long.
const DRAIN_QUIET: Duration = Duration::from_millis(50);

/// The buffer the command's output (and typed keys) pass through: wiped when dropped, as
/// far as any read ever filled it. Most commands print little, and wiping all of its
/// 1 MiB took half a millisecond of every `exec`; its untouched pages were never even
/// mapped.
struct ReadBuf {
    buf: Vec<u8>,
    dirty: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            buf: vec![0; CHUNK],
            dirty: 0,
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // Until told otherwise, a reader may fill all of it.
        &mut self.buf
    }

    /// A reader filled up to `n` bytes.
    fn filled(&mut self, n: usize) {
        self.dirty = self.dirty.max(n);
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.buf[..self.dirty.min(CHUNK)].zeroize();
    }
}

/// `si_code` of a signal the kernel sent itself, e.g. Ctrl-C on the terminal: a child
/// that holds the terminal got its own copy, so forwarding would double it.
const SI_KERNEL: i32 = 0x80;

/// Signals that end `jitc exec` while it is still waiting for the agent.
fn is_terminating(sig: Signal) -> bool {
    matches!(
        sig,
        Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT
    )
}

/// Waits for the agent's answer while watching signals: Ctrl-C (or SIGTERM…) before
/// any child exists ends `jitc` at once, with 128+N. `Ok(None)` when the answer is
/// ready to be read.
pub fn wait_for_reply(client: &Client, signals: &SignalFd) -> Result<Option<u8>> {
    loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
        ];
        // An answer already read ahead is not announced by the socket again.
        let timeout = if client.has_buffered() {
            PollTimeout::ZERO
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::failure(format!("cannot wait for the agent ({e})"))),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            while let Ok(Some(info)) = signals.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32)
                    && is_terminating(sig)
                {
                    crate::error::note("interrupted while waiting for the agent; nothing was run");
                    return Ok(Some(128u8.wrapping_add(sig as u8)));
                }
            }
        }
        if client.has_buffered() || fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Ok(None);
        }
    }
}

/// What happened to the command's process.
enum State {
    /// Stopped by a signal (Ctrl-Z, or reading the terminal from the background).
    Stopped,
    /// Ended, with its status as an exit code (128+N for signal N).
    Exited(u8),
}

pub struct Supervisor<'a, 'm> {
    pub child: Child,
    pub signals: &'a SignalFd,
    /// The lease's connection (`None`: nothing is leased).
    pub client: Option<&'a mut Client>,
    /// The command's output streams.
    pub outputs: Vec<Pump<'m>>,
    /// On the terminal path: the pty master, for keystrokes and window sizes.
    pub pty: Option<BorrowedFd<'a>>,
}

/// How the supervision ended.
pub struct Outcome {
    /// The child's status as an exit code (128+N for signal N).
    pub code: u8,
    /// Whether the lease is still held (and should be released).
    pub lease_held: bool,
}

fn ready(f: &PollFd) -> bool {
    f.revents().is_some_and(|r| !r.is_empty())
}

impl Supervisor<'_, '_> {
    pub fn run(mut self) -> Result<Outcome> {
        let mut lease_held = self.client.is_some();
        let mut kill_at: Option<Instant> = None;
        let mut exited: Option<u8> = None;
        let mut keys = self.pty.map(|_| Keys::new());
        // What the command printed passes through here: wiped when done.
        let mut buf = ReadBuf::new();
        if let Some(client) = self.client.as_deref_mut() {
            for (_, reason) in client.take_ended() {
                lease_held = false;
                stop_group(self.child.pid, &reason, &mut kill_at);
            }
        }
        let result = loop {
            let buffered = lease_held && self.client.as_ref().is_some_and(|c| c.has_buffered());
            let timeout = if buffered {
                // A message already read ahead is not announced by the socket again.
                PollTimeout::ZERO
            } else if exited.is_some() {
                PollTimeout::try_from(DRAIN_QUIET).unwrap_or(PollTimeout::ZERO)
            } else {
                match kill_at {
                    Some(t) => {
                        let ms = t.saturating_duration_since(Instant::now()).as_millis();
                        PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
                    }
                    None => PollTimeout::NONE,
                }
            };
            // Slots: 0 signals, 1 agent, then each open output, then stdin and the pty
            // (for keystrokes).
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let agent_at = fds.len();
            if let Some(c) = self.client.as_deref() {
                fds.push(PollFd::new(
                    c.as_fd(),
                    if lease_held {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    },
                ));
            }
            let outputs_at = fds.len();
            for o in &self.outputs {
                if let Some(src) = o.source() {
                    fds.push(PollFd::new(src, PollFlags::POLLIN));
                }
            }
            let keys_at = fds.len();
            let stdin = std::io::stdin();
            if let (Some(k), Some(master)) = (&keys, self.pty) {
                let want = if k.wants_input() && exited.is_none() {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                };
                fds.push(PollFd::new(stdin.as_fd(), want));
                let out = if k.has_pending() {
                    PollFlags::POLLOUT
                } else {
                    PollFlags::empty()
                };
                fds.push(PollFd::new(master, out));
            }
            let events = match poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 1,
                Err(e) => {
                    break Err(Error::failure(format!("cannot wait for the command ({e})")));
                }
            };
            let sig_ready = ready(&fds[0]);
            let agent_ready = buffered
                || (lease_held
                    && fds
                        .get(agent_at)
                        .is_some_and(|f| outputs_at > agent_at && ready(f)));
            let out_ready: Vec<bool> = fds[outputs_at..keys_at].iter().map(ready).collect();
            let (stdin_ready, master_ready) = match fds.get(keys_at..keys_at + 2) {
                Some([i, o]) => (ready(i), ready(o)),
                _ => (false, false),
            };
            drop(fds);

            // Output first: it was written before whatever else happened.
            for (i, o) in self.outputs.iter_mut().filter(|o| o.is_open()).enumerate() {
                if out_ready.get(i).copied().unwrap_or(false) {
                    let n = o.pump(buf.bytes());
                    buf.filled(n);
                }
            }
            if let (Some(k), Some(master)) = (&mut keys, self.pty) {
                if stdin_ready {
                    k.read_stdin(buf.bytes());
                }
                if master_ready || k.has_pending() {
                    k.write_to(master);
                }
            }
            if sig_ready {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    match sig {
                        Signal::SIGCHLD => match reap(self.child.pid)? {
                            _ if exited.is_some() => {}
                            None => {}
                            Some(State::Stopped) => self.stopped(),
                            Some(State::Exited(code)) => exited = Some(code),
                        },
                        // On a pty the size change reaches the command through the pty.
                        Signal::SIGWINCH if self.pty.is_some() => {
                            if let Some(master) = self.pty {
                                terminal::copy_window_size(terminal::stdout_fd(), master);
                            }
                        }
                        _ if exited.is_some() => {}
                        sig => {
                            // The terminal's own signals reach a command that holds it
                            // without us; forwarding them would double them.
                            let from_terminal = info.ssi_code == SI_KERNEL;
                            if !(from_terminal && self.holds_terminal()) {
                                let _ = killpg(self.child.pid, sig);
                            }
                        }
                    }
                }
            }
            if agent_ready && let Some(client) = self.client.as_deref_mut() {
                let reason = match client.recv() {
                    Ok(Some(Response::LeaseEnded { reason, .. })) => Some(reason),
                    Ok(Some(_)) => None,
                    Ok(None) | Err(_) => Some("the agent went away".to_owned()),
                };
                if let Some(reason) = reason {
                    lease_held = false;
                    if exited.is_none() {
                        stop_group(self.child.pid, &reason, &mut kill_at);
                    }
                }
            }
            if exited.is_none() && kill_at.is_some_and(|t| Instant::now() >= t) {
                if let Some(State::Exited(code)) = kill_everything(self.child.pid) {
                    exited = Some(code);
                }
                kill_at = None;
            }
            if let Some(code) = exited {
                // Done once every stream has ended, or gone quiet after the exit.
                let quiet = events == 0;
                if quiet || self.outputs.iter().all(|o| !o.is_open()) {
                    for o in &mut self.outputs {
                        let n = o.pump(buf.bytes());
                        buf.filled(n);
                        o.finish();
                    }
                    break Ok(Outcome { code, lease_held });
                }
            }
        };
        // A lease the agent ended ends the whole command: what the command left
        // running (its background jobs) goes too.
        if !lease_held && self.client.is_some() {
            kill_everything(self.child.pid);
        }
        self.take_terminal_back();
        result
    }

    /// Whether the command's group holds our terminal (so the terminal signals it
    /// directly).
    fn holds_terminal(&self) -> bool {
        matches!(
            self.child.job,
            Job::Group {
                foreground: true,
                ..
            }
        )
    }

    /// The command stopped (Ctrl-Z at the terminal it holds, or it read the terminal
    /// from the background): stop with it, as a shell's job would, so the shell gets the
    /// terminal back; when we are continued, hand the terminal back and continue it.
    fn stopped(&mut self) {
        let Job::Group { tty, foreground } = &mut self.child.job else {
            // On a terminal of its own (or none), whoever stopped it will continue it.
            return;
        };
        if *foreground {
            spawn::give_terminal(tty, nix::unistd::getpgrp());
            *foreground = false;
        }
        // Returns once we are continued (`fg`, `bg`).
        let _ = nix::sys::signal::raise(Signal::SIGTSTP);
        // Whether `fg` gave our group the terminal again.
        // SAFETY: tcgetpgrp only reads a descriptor we own.
        let fg = unsafe { libc::tcgetpgrp(std::os::fd::AsRawFd::as_raw_fd(tty)) };
        if fg > 0 && fg == nix::unistd::getpgrp().as_raw() {
            spawn::give_terminal(tty, self.child.pid);
            *foreground = true;
        }
        let _ = killpg(self.child.pid, Signal::SIGCONT);
    }

    /// Takes the terminal back from the command's group, if it held it.
    fn take_terminal_back(&mut self) {
        if let Job::Group {
            tty,
            foreground: foreground @ true,
        } = &mut self.child.job
        {
            spawn::give_terminal(tty, nix::unistd::getpgrp());
            *foreground = false;
        }
    }
}

/// Sends `sig` to the command's process group (the command leads it).
fn killpg(leader: Pid, sig: Signal) -> nix::Result<()> {
    nix::sys::signal::killpg(leader, sig)
}

/// The lease ended under a running command: SIGTERM to everything it started, SIGKILL
/// after the grace.
fn stop_group(leader: Pid, reason: &str, kill_at: &mut Option<Instant>) {
    crate::error::note(&format!("{reason}; stopped the command"));
    let _ = killpg(leader, Signal::SIGTERM);
    kill_at.get_or_insert_with(|| Instant::now() + KILL_GRACE);
}

/// Reaps every child that has ended — the command, and whatever it left behind that
/// was handed to us (we are a subreaper) — and says how the command stands.
fn reap(child: Pid) -> Result<Option<State>> {
    let mut state = None;
    loop {
        match waitpid(
            Pid::from_raw(-1),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED),
        ) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                state = Some(State::Exited(code as u8));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                state = Some(State::Exited(128u8.wrapping_add(sig as u8)));
            }
            Ok(WaitStatus::Stopped(pid, _)) if pid == child => state = Some(State::Stopped),
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(state),
            // An orphan of the command, reaped; or a stop of one (its own business).
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::failure(format!("lost track of the command ({e})"))),
        }
    }
}

/// `(pid, parent pid)` of every process `/proc` shows now.
pub(crate) fn parent_links() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|at| stat[at + 1..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                out.push((pid, ppid));
            }
        }
    }
    out
}

/// Every process below `root` (by parent links in /proc), deepest last.
fn descendants(root: Pid) -> Vec<Pid> {
    let parent_of = parent_links();
    let mut found = vec![root.as_raw()];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == p)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found.into_iter().map(Pid::from_raw).collect()
}

/// SIGKILL to the command's group and to everything below us that left it (a `setsid`
/// daemon, a double fork: as a subreaper, we inherit what they orphan), until nothing
/// is left or nothing more can be done. What became of the command itself, if it was
/// reaped meanwhile.
fn kill_everything(leader: Pid) -> Option<State> {
    let _ = killpg(leader, Signal::SIGKILL);
    let mut leader_state = None;
    for _ in 0..16 {
        let left: Vec<Pid> = descendants(nix::unistd::getpid())
            .into_iter()
            .filter(|p| !is_zombie(*p))
            .collect();
        if left.is_empty() {
            break;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        // Reap what died, so the next look does not see it again.
        if let Ok(Some(s)) = reap(leader) {
            leader_state = Some(s);
        }
    }
    leader_state
}

/// Whether `pid` has ended and only waits to be reaped.
fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().next())
            == Some("Z")
    })
}

//! Watching the command while the lease lasts: pump its output through the masker,
//! forward signals (and keystrokes and window sizes, on the terminal path), reap it,
//! and stop it when the agent ends the lease (SIGTERM, then SIGKILL 5 s later).

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use jitc_protocol::Response;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::output::{CHUNK, Keys, Pump};
use super::terminal;
use crate::client::Client;
use crate::error::{Error, Result};

/// Grace between SIGTERM and SIGKILL when a lease ends under a running command.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// After the command exits, output still arriving (from the pty's buffer, say) is
/// taken until the streams end or stay quiet this long.
const DRAIN_QUIET: Duration = Duration::from_millis(50);

/// `si_code` of a signal the kernel sent itself, e.g. Ctrl-C on the terminal: the
/// child, in our process group, got its own copy, so forwarding would double it.
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

/// Whether `child` is in our process group, and so gets the terminal's signals itself.
fn shares_our_group(child: Pid) -> bool {
    nix::unistd::getpgid(Some(child)).is_ok_and(|g| g == nix::unistd::getpgrp())
}

pub struct Supervisor<'a, 'm> {
    pub child: Pid,
    pub signals: &'a SignalFd,
    pub client: &'a mut Client,
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
        let mut lease_held = true;
        let mut kill_at: Option<Instant> = None;
        let mut exited: Option<u8> = None;
        let mut keys = self.pty.map(|_| Keys::new());
        let mut buf = vec![0u8; CHUNK];
        for (_, reason) in self.client.take_ended() {
            self.stop_child(&reason, &mut kill_at);
            lease_held = false;
        }
        loop {
            let buffered = lease_held && self.client.has_buffered();
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
            fds.push(PollFd::new(
                self.client.as_fd(),
                if lease_held {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                },
            ));
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
                    return Err(Error::failure(format!("cannot wait for the command ({e})")));
                }
            };
            let sig_ready = ready(&fds[0]);
            let agent_ready = buffered || (lease_held && ready(&fds[1]));
            let out_ready: Vec<bool> = fds[outputs_at..keys_at].iter().map(ready).collect();
            let (stdin_ready, master_ready) = match fds.get(keys_at..keys_at + 2) {
                Some([i, o]) => (ready(i), ready(o)),
                _ => (false, false),
            };
            drop(fds);

            // Output first: it was written before whatever else happened.
            for (i, o) in self.outputs.iter_mut().filter(|o| o.is_open()).enumerate() {
                if out_ready.get(i).copied().unwrap_or(false) {
                    o.pump(&mut buf);
                }
            }
            if let (Some(k), Some(master)) = (&mut keys, self.pty) {
                if stdin_ready {
                    k.read_stdin(&mut buf);
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
                        Signal::SIGCHLD => {
                            if exited.is_none() {
                                exited = reap(self.child)?;
                            }
                        }
                        // On a pty the size change reaches the command through the pty.
                        Signal::SIGWINCH if self.pty.is_some() => {
                            if let Some(master) = self.pty {
                                terminal::copy_window_size(terminal::stdout_fd(), master);
                            }
                        }
                        _ if exited.is_some() => {}
                        sig => {
                            let from_terminal = info.ssi_code == SI_KERNEL;
                            if !(from_terminal && shares_our_group(self.child)) {
                                let _ = kill(self.child, sig);
                            }
                        }
                    }
                }
            }
            if agent_ready {
                let reason = match self.client.recv() {
                    Ok(Some(Response::LeaseEnded { reason, .. })) => Some(reason),
                    Ok(Some(_)) => None,
                    Ok(None) | Err(_) => Some("the agent went away".to_owned()),
                };
                if let Some(reason) = reason {
                    lease_held = false;
                    if exited.is_none() {
                        self.stop_child(&reason, &mut kill_at);
                    }
                }
            }
            if exited.is_none() && kill_at.is_some_and(|t| Instant::now() >= t) {
                let _ = kill(self.child, Signal::SIGKILL);
                kill_at = None;
            }
            if let Some(code) = exited {
                // Done once every stream has ended, or gone quiet after the exit.
                let quiet = events == 0;
                if quiet || self.outputs.iter().all(|o| !o.is_open()) {
                    for o in &mut self.outputs {
                        o.pump(&mut buf);
                        o.finish();
                    }
                    return Ok(Outcome { code, lease_held });
                }
            }
        }
    }

    fn stop_child(&self, reason: &str, kill_at: &mut Option<Instant>) {
        crate::error::note(&format!("{reason}; stopped the command"));
        let _ = kill(self.child, Signal::SIGTERM);
        kill_at.get_or_insert_with(|| Instant::now() + KILL_GRACE);
    }
}

/// The child's exit code if it has ended.
fn reap(child: Pid) -> Result<Option<u8>> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code as u8)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(128u8.wrapping_add(sig as u8))),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::failure(format!("lost track of the command ({e})"))),
        }
    }
}

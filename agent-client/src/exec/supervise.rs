//! Watching the child while the lease lasts: forward signals, reap it, and stop it when
//! the agent ends the lease (SIGTERM, then SIGKILL 5 s later).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use jitc_protocol::Response;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::client::Client;
use crate::error::{Error, Result};

/// Grace between SIGTERM and SIGKILL when a lease ends under a running command.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// `si_code` of a signal the kernel sent itself, e.g. Ctrl-C on the terminal: the
/// child, in our process group, got its own copy, so forwarding would double it.
const SI_KERNEL: i32 = 0x80;

pub struct Supervisor<'a> {
    pub child: Pid,
    pub signals: &'a SignalFd,
    pub client: &'a mut Client,
}

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

/// How the supervision ended.
pub struct Outcome {
    /// The child's status as an exit code (128+N for signal N).
    pub code: u8,
    /// Whether the lease is still held (and should be released).
    pub lease_held: bool,
}

impl Supervisor<'_> {
    pub fn run(self) -> Result<Outcome> {
        let mut lease_held = true;
        let mut kill_at: Option<Instant> = None;
        for (_, reason) in self.client.take_ended() {
            self.stop_child(&reason, &mut kill_at);
            lease_held = false;
        }
        loop {
            let buffered = lease_held && self.client.has_buffered();
            let timeout = match kill_at {
                // A message already read ahead is not announced by the socket again.
                _ if buffered => PollTimeout::ZERO,
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis();
                    PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::NONE,
            };
            let (sig_ready, agent_ready) = {
                let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
                if lease_held {
                    fds.push(PollFd::new(self.client.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        return Err(Error::failure(format!("cannot wait for the command ({e})")));
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), buffered || fds.get(1).is_some_and(ready))
            };
            if sig_ready {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    if sig == Signal::SIGCHLD {
                        if let Some(code) = reap(self.child)? {
                            return Ok(Outcome { code, lease_held });
                        }
                        continue;
                    }
                    let from_terminal = info.ssi_code == SI_KERNEL;
                    if !(from_terminal && shares_our_group(self.child)) {
                        let _ = kill(self.child, sig);
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
                    self.stop_child(&reason, &mut kill_at);
                }
            }
            if kill_at.is_some_and(|t| Instant::now() >= t) {
                let _ = kill(self.child, Signal::SIGKILL);
                kill_at = None;
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

//! Commands that `jitc mcp` runs for the model: each is a `jitc exec` of this very
//! binary, so the lease, the policy, approval, masking, containment and the audit
//! trail are exactly those of `jitc exec` from a shell. `jitc exec` says on a pipe of
//! its own (`--events-fd`) when the request waits for approval and when it is granted.
//!
//! `jitc mcp` is a subreaper: whatever a command leaves behind (a daemon that made its
//! own session, a child that ignores SIGTERM) comes to it when `jitc exec` ends, and is
//! killed (`reap_strays`) — every command the model started ends with its call or its
//! session, leased or not.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};

/// What the model asked to run.
#[derive(Debug, Default, Clone)]
pub struct ExecArgs {
    pub command: Vec<String>,
    pub secrets: Vec<String>,
    /// `VAR=REF` pairs.
    pub env: Vec<(String, String)>,
    pub env_file: Option<String>,
    pub cwd: Option<String>,
    pub ttl: Option<String>,
    pub task: String,
    /// `jitc exec --proxy`.
    pub proxy: bool,
}

/// What `jitc exec` reported about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    Waiting(u64),
    Granted(u64),
}

/// A started `jitc exec`.
pub struct Spawned {
    pub child: Child,
    pub events: mpsc::UnboundedReceiver<LeaseEvent>,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned").finish_non_exhaustive()
    }
}

/// Held while a child is started: the events pipe's write end is inheritable only
/// then, so no other child started meanwhile can inherit it.
static SPAWNING: Mutex<()> = Mutex::new(());

/// Starts `jitc exec` for `args`, its stdin from `stdin` (or nothing), its output piped.
pub fn spawn(args: &ExecArgs, with_stdin: bool) -> std::io::Result<Spawned> {
    let jitc = std::env::current_exe()?;
    let (events_r, events_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = Command::new(jitc);
    cmd.arg("exec");
    for s in &args.secrets {
        cmd.arg("-s").arg(s);
    }
    for (var, reference) in &args.env {
        cmd.arg("-e").arg(format!("{var}={reference}"));
    }
    if let Some(f) = &args.env_file {
        cmd.arg("--env-file").arg(f);
    }
    if let Some(t) = &args.ttl {
        cmd.arg("--ttl").arg(t);
    }
    cmd.arg("--task").arg(&args.task);
    if args.proxy {
        cmd.arg("--proxy");
    }
    if let Some(dir) = &args.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(if with_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    // SAFETY: one async-signal-safe system call (prctl) in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            // If jitc mcp dies, jitc exec ends its command and hands the lease back.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = {
        let _only_us = SPAWNING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // `dup` clears close-on-exec: this copy is the one `jitc exec` inherits.
        let inherited: OwnedFd = nix::unistd::dup(&events_w)?;
        cmd.arg("--events-fd")
            .arg(inherited.as_raw_fd().to_string())
            .arg("--")
            .args(&args.command);
        let child = cmd.spawn();
        drop(inherited);
        child?
    };
    drop(events_w);
    let (tx, rx) = mpsc::unbounded_channel();
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(events_r)?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let number = |key: &str| {
                line.strip_prefix(&format!("{{\"{key}\":"))
                    .and_then(|r| r.strip_suffix('}'))
                    .and_then(|n| n.parse::<u64>().ok())
            };
            let event = match (number("waiting"), number("lease")) {
                (Some(id), _) => LeaseEvent::Waiting(id),
                (_, Some(id)) => LeaseEvent::Granted(id),
                _ => continue,
            };
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    Ok(Spawned { child, events: rx })
}

/// Kills every child of this process that is not one of the `jitc exec` in `keep`:
/// what a command left behind and the subreaper took in (they are our children, so
/// their pids cannot be reused until we reap them here).
pub fn reap_strays(keep: &[u32]) {
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    for (raw, ppid) in crate::exec::supervise::parent_links() {
        if ppid != me || u32::try_from(raw).is_ok_and(|p| keep.contains(&p)) {
            continue;
        }
        let pid = nix::unistd::Pid::from_raw(raw);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// Asks `jitc exec` (pid `pid`) to end: it stops its command's process group and hands
/// the lease back; SIGKILL after `grace` if it has not.
pub async fn terminate(child: &mut Child, grace: std::time::Duration) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// One output stream kept whole up to a cap: the first and the last half of it, and how
/// many bytes fell between.
#[derive(Debug, Default)]
pub struct Capped {
    pub head: Vec<u8>,
    pub tail: VecDeque<u8>,
    pub dropped: u64,
    cap: usize,
}

impl Capped {
    pub fn new(cap: usize) -> Capped {
        Capped {
            cap,
            ..Capped::default()
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        let half = self.cap / 2;
        if self.head.len() < half {
            let n = (half - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        self.tail.extend(data);
        let over = self.tail.len().saturating_sub(self.cap - half);
        if over > 0 {
            self.tail.drain(..over);
            self.dropped += over as u64;
        }
    }

    /// The text kept, with a marker where bytes were dropped.
    pub fn text(&self) -> String {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if self.dropped == 0 {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        format!(
            "{}\n[… {} bytes dropped …]\n{}",
            String::from_utf8_lossy(&self.head),
            self.dropped,
            String::from_utf8_lossy(&tail)
        )
    }
}

/// Reads `r` into `into` until its end.
pub async fn capture(mut r: impl AsyncRead + Unpin, into: Arc<Mutex<Capped>>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => into
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(&buf[..n]),
        }
    }
}

/// Output of a process that keeps running, read incrementally by offset. The newest
/// `MAX_KEPT` bytes are kept; offsets count every byte ever written.
#[derive(Debug, Default)]
pub struct Stream {
    pub data: VecDeque<u8>,
    /// Offset of `data[0]`.
    pub start: u64,
    pub closed: bool,
}

/// Most of a running process's output kept per stream.
pub const MAX_KEPT: usize = 1 << 20;

/// A stream and the notice that it grew.
pub type Shared = Arc<(Mutex<Stream>, Notify)>;

/// Copies `r` into `shared` until its end.
pub fn follow(mut r: impl AsyncRead + Unpin + Send + 'static, shared: Shared) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = r.read(&mut buf).await.unwrap_or(0);
            {
                let mut s = shared
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if n == 0 {
                    s.closed = true;
                } else {
                    s.data.extend(&buf[..n]);
                    let over = s.data.len().saturating_sub(MAX_KEPT);
                    if over > 0 {
                        s.data.drain(..over);
                        s.start += over as u64;
                    }
                }
            }
            shared.1.notify_waiters();
            if n == 0 {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_keeps_head_and_tail_and_counts_the_rest() {
        let mut c = Capped::new(8);
        c.push(b"0123");
        c.push(b"456789abcdef");
        assert_eq!(c.head, b"0123");
        assert_eq!(c.tail.iter().copied().collect::<Vec<_>>(), b"cdef");
        assert_eq!(c.dropped, 8);
        assert!(c.text().contains("[… 8 bytes dropped …]"));
        let mut small = Capped::new(8);
        small.push(b"abc");
        assert_eq!(small.text(), "abc");
    }
}

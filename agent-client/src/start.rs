//! Finding the agent, and starting it when none answers (as gpg and rbw do). The agent
//! reports on its stdout once its socket accepts connections, so no polling is needed.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jitc_protocol::ErrorCode;
use jitc_protocol::paths::{SOCKET_ENV, socket_path};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::client::Client;
use crate::error::{Error, Result};

/// How long a starting agent may take to bind its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the agent, starting one at the default path if none answers. When
/// `JITC_SOCK` names a socket nobody answers on, that is an error (exit 69): the user
/// pointed us somewhere specific.
pub fn connect_or_start() -> Result<Client> {
    let path = socket_path();
    match Client::connect(&path) {
        Err(Error::NotRunning { source, .. }) if explicit_socket() => Err(Error::NotRunning {
            path,
            source,
            hint: "start one there with 'jitc agent', or unset JITC_SOCK",
        }),
        Err(Error::NotRunning { .. }) => {
            start_agent(&path)?;
            Client::connect(&path)
        }
        other => other,
    }
}

/// Whether the user chose the socket with `JITC_SOCK`.
pub fn explicit_socket() -> bool {
    std::env::var_os(SOCKET_ENV).is_some_and(|v| !v.is_empty())
}

/// `jitc-agentd` beside this executable, else on `PATH`.
pub fn agentd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("JITC_AGENTD").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("jitc-agentd");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("jitc-agentd")
}

/// Starts a detached agent on `path` and returns once it accepts connections (or another
/// agent that won the race does).
pub fn start_agent(path: &Path) -> Result<()> {
    let bin = agentd_binary();
    let mut agent = Command::new(&bin);
    // The agent holds the unlocked vault: nothing in the environment of whoever ran this
    // `jitc` may load code into it (`LD_PRELOAD`, `LD_AUDIT`, `GCONV_PATH`, …).
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(jitc_protocol::names::is_hook_var) {
            agent.env_remove(&k);
        }
    }
    let mut child = agent
        .arg("--socket")
        .arg(path)
        .arg("--detach")
        // systemd's readiness socket is for the service it started, not for an agent
        // some program under it starts: that agent must not say READY=1 for it.
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::local(
                ErrorCode::Unavailable,
                format!(
                    "cannot start the agent {} ({e}); install jitc-agentd next to jitc or on PATH",
                    bin.display()
                ),
            )
        })?;
    let mut out = child
        .stdout
        .take()
        .ok_or(Error::Unexpected("no agent stdout"))?;
    let line = read_line(&mut out, START_TIMEOUT);
    // The agent keeps running detached; we never wait for it (it is reparented when we exit).
    drop(child);
    let line = line.trim();
    if line == "ready" {
        return Ok(());
    }
    if line.starts_with("running") {
        // Another agent won the race to start; it may not have bound the socket yet.
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if UnixStream::connect(path).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let why = line.strip_prefix("error: ").unwrap_or(if line.is_empty() {
        "it exited without saying why"
    } else {
        line
    });
    Err(Error::local(
        ErrorCode::Unavailable,
        format!(
            "the agent did not start: {why}; see {}",
            agent_log_path().display()
        ),
    ))
}

/// Where an agent started by `jitc` logs: `$XDG_STATE_HOME/jitc/agentd.log` (as the
/// agent finds it: an absolute `XDG_STATE_HOME`, else `~/.local/state`, your home from
/// `$HOME` or the password database).
pub fn agent_log_path() -> PathBuf {
    let absolute = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| {
            absolute("HOME")
                .or_else(|| crate::home::password_home(nix::unistd::geteuid().as_raw()))
                .map(|h| h.join(".local/state"))
        })
        .unwrap_or_else(|| PathBuf::from("~/.local/state"));
    state.join("jitc").join("agentd.log")
}

/// The first line the agent prints, or what it printed before going quiet or exiting.
fn read_line(out: &mut std::process::ChildStdout, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if ms == 0 {
            break;
        }
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(out),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        match out.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).into_owned()
}

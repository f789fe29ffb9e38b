//! Where the agent's socket lives. Both sides must agree on it, so it is part of the
//! protocol's contract rather than of either binary.

use std::path::{Path, PathBuf};

/// The environment variable naming the agent's socket.
pub const SOCKET_ENV: &str = "JITC_SOCK";

/// `$JITC_SOCK` if set (and non-empty), else the default path; always absolute, so it
/// can be handed to an agent that changes directory, or exported to another shell.
pub fn socket_path() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => std::path::absolute(&p).unwrap_or_else(|_| PathBuf::from(p)),
        _ => default_socket_path(),
    }
}

/// `$XDG_RUNTIME_DIR/jitc/agent.sock`; without `XDG_RUNTIME_DIR` (MCP hosts clear the
/// environment) `/run/user/$UID/jitc/agent.sock` if that directory exists, else
/// `/tmp/jitc-$UID/agent.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("jitc").join("agent.sock");
    }
    let uid = nix::unistd::getuid();
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        return run_user.join("jitc").join("agent.sock");
    }
    PathBuf::from(format!("/tmp/jitc-{uid}")).join("agent.sock")
}

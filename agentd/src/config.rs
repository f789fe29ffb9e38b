//! The agent's settings, resolved once at start from flags, environment and XDG paths.

use std::path::PathBuf;
use std::time::Duration;

use directories::BaseDirs;

/// `JITC_VAULT`, honoured by the agent (and shown by `jitc status`).
pub const VAULT_ENV: &str = "JITC_VAULT";

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub vault: PathBuf,
    pub policy: PathBuf,
    pub audit: crate::audit::AuditConfig,
    /// Lock the vault after this long without use (and no active lease). `None`: the
    /// policy's `idle_lock` (default 15m).
    pub idle_lock: Option<Duration>,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A peer that starts a frame must finish it (and read our replies) within this.
    pub frame_timeout: Duration,
    /// A connection idle this long between requests, holding no lease, is dropped.
    pub connection_timeout: Duration,
}

impl Config {
    pub const DEFAULT_IDLE_LOCK: Duration = Duration::from_secs(15 * 60);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
    /// The audit log is rotated past this size.
    pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 10 << 20;

    pub fn new(socket: PathBuf, vault: PathBuf, policy: PathBuf, audit: PathBuf) -> Config {
        Config {
            socket,
            vault,
            policy,
            audit: crate::audit::AuditConfig {
                path: audit,
                sync: true,
                max_bytes: Self::DEFAULT_AUDIT_MAX_BYTES,
            },
            idle_lock: None,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            frame_timeout: Self::DEFAULT_FRAME_TIMEOUT,
            connection_timeout: Self::DEFAULT_CONNECTION_TIMEOUT,
        }
    }
}

fn base_dirs() -> anyhow::Result<BaseDirs> {
    BaseDirs::new().ok_or_else(|| anyhow::anyhow!("cannot find your home directory; set HOME"))
}

/// `$JITC_VAULT`, else `$XDG_DATA_HOME/jitc/vault.jitc`.
pub fn default_vault_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(VAULT_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(base_dirs()?.data_dir().join("jitc").join("vault.jitc"))
}

/// `$XDG_CONFIG_HOME/jitc/policy.toml`.
pub fn default_policy_path() -> anyhow::Result<PathBuf> {
    Ok(base_dirs()?.config_dir().join("jitc").join("policy.toml"))
}

/// `$XDG_STATE_HOME/jitc`: the agent's log (and, later, the audit log).
pub fn state_dir() -> anyhow::Result<PathBuf> {
    let dirs = base_dirs()?;
    let state = dirs
        .state_dir()
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs.home_dir().join(".local/state"));
    Ok(state.join("jitc"))
}

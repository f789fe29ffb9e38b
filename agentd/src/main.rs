//! `jitc-agentd`: resolve settings, harden the process, bind the socket, and serve until
//! SIGTERM/SIGINT/SIGHUP. Prints `ready` on stdout once it accepts connections (and, when
//! started by `jitc agent` with `--detach`, `error: …` if it cannot start).

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jitc_agentd::socket::{self, BoundSocket, SocketError};
use jitc_agentd::vault::VaultFile;
use jitc_agentd::{Agent, Config, config, hardening};

#[derive(Debug, Parser)]
#[command(
    name = "jitc-agentd",
    version,
    about = "The jitc credential agent (usually started by 'jitc agent')",
    long_about = "The jitc credential agent: holds the unlocked vault in locked memory behind a \
peer-checked Unix socket, and leases secrets to the commands 'jitc' runs. It is started by \
'jitc agent' (detached, logging to $XDG_STATE_HOME/jitc/agentd.log) or by systemd through \
the jitc-agentd.socket user unit (socket activation; it tells systemd READY=1 when \
NOTIFY_SOCKET is set). SIGTERM, SIGINT and SIGHUP stop it: every lease ends, the vault is \
locked.",
    after_long_help = closing_help()
)]
struct Args {
    /// Socket to listen on [default: $XDG_RUNTIME_DIR/jitc/agent.sock]
    #[arg(long, env = "JITC_SOCK", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Vault file [default: $XDG_DATA_HOME/jitc/vault.jitc]
    #[arg(long, env = "JITC_VAULT", value_name = "PATH")]
    vault: Option<PathBuf>,
    /// Audit log [default: $XDG_STATE_HOME/jitc/audit.log]
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Rotate the audit log past this many bytes (at most 32 MiB)
    #[arg(long, value_name = "BYTES", hide = true,
          value_parser = clap::value_parser!(u64).range(1..=jitc_protocol::audit_files::MAX_ROTATE))]
    audit_max_bytes: Option<u64>,
    /// Do not fdatasync audit records (only to measure what durability costs)
    #[arg(long, hide = true)]
    no_audit_sync: bool,
    /// Policy file [default: $XDG_CONFIG_HOME/jitc/policy.toml]
    #[arg(long, value_name = "PATH")]
    policy: Option<PathBuf>,
    /// Lock the vault after this long unused, e.g. 15m, 90s [default: the policy's idle_lock]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_lock: Option<Duration>,
    /// Most connections served at once
    #[arg(long, value_name = "N", default_value_t = Config::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// How long a peer may take to finish a frame it started (tests shorten it)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, hide = true)]
    frame_timeout: Option<Duration>,
    /// Drop a connection idle this long between requests while it holds no lease
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, hide = true)]
    connection_timeout: Option<Duration>,
    /// Run as a background agent: new session, log to $XDG_STATE_HOME/jitc/agentd.log
    #[arg(long)]
    detach: bool,
    /// Print the manual page (roff) and exit
    #[arg(long, hide = true)]
    man_page: bool,
}

/// What `--help` ends with and the manual page's closing sections hold: (heading,
/// lines).
const CLOSING: [(&str, &[&str]); 3] = [
    (
        "Files",
        &[
            "$XDG_RUNTIME_DIR/jitc/agent.sock   the socket (JITC_SOCK overrides)",
            "$XDG_DATA_HOME/jitc/vault.jitc     the vault (JITC_VAULT overrides)",
            "$XDG_CONFIG_HOME/jitc/policy.toml  the policy",
            "$XDG_STATE_HOME/jitc/audit.log     the audit trail",
        ],
    ),
    (
        "Examples",
        &[
            "jitc agent                                   # start it detached",
            "systemctl --user enable --now jitc-agentd.socket",
            "RUST_LOG=debug jitc-agentd --socket /tmp/j.sock   # in the foreground, to debug",
        ],
    ),
    ("See also", &["jitc(1), jitc-doctor(1)"]),
];

fn closing_help() -> String {
    CLOSING
        .iter()
        .map(|(heading, lines)| format!("{heading}:\n  {}", lines.join("\n  ")))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// jitc-agentd(1): clap's sections, then `CLOSING` with its lines kept as written.
fn man_page() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    use clap_mangen::roff::{Roff, roman};
    let man = clap_mangen::Man::new(Args::command());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut roff = Roff::new();
    for (heading, lines) in CLOSING {
        roff.control("SH", [heading.to_uppercase().as_str()])
            .control("nf", []);
        for line in lines {
            roff.text([roman(*line)]);
        }
        roff.control("fi", []);
    }
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

enum Started {
    Served,
    AlreadyRunning(PathBuf),
}

fn main() -> ExitCode {
    // A bug is logged with where it happened, never with its payload (which could,
    // in principle, be built from request data).
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            at,
            "internal error (panic); the connection it happened on is dropped"
        );
        let _ = writeln!(
            std::io::stderr(),
            "jitc-agentd: internal error (panic) at {at}"
        );
    }));
    // Before anything else exists: nothing this process ever holds may be dumped.
    if let Err(e) = hardening::harden() {
        eprintln!("jitc-agentd: {e:#}");
        return ExitCode::FAILURE;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    if args.man_page {
        return match man_page().and_then(|page| std::io::stdout().write_all(&page)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("jitc-agentd: cannot write the manual page ({e})");
                ExitCode::FAILURE
            }
        };
    }
    let detach = args.detach;
    match start(args) {
        Ok(Started::Served) => ExitCode::SUCCESS,
        Ok(Started::AlreadyRunning(path)) => {
            // Not a failure for `jitc agent`: someone else won the race to start one.
            println!("running {}", path.display());
            eprintln!(
                "jitc-agentd: another agent is already running on {}",
                path.display()
            );
            ExitCode::from(3)
        }
        Err(e) => {
            tracing::error!("{e:#}");
            if detach {
                println!("error: {e:#}");
            }
            eprintln!("jitc-agentd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(mut args: Args) -> anyhow::Result<Started> {
    // Detaching changes to /: relative paths must be resolved against where we started.
    for p in [
        &mut args.socket,
        &mut args.vault,
        &mut args.policy,
        &mut args.audit_log,
    ]
    .into_iter()
    .flatten()
    {
        *p = std::path::absolute(&*p).with_context(|| format!("cannot resolve {}", p.display()))?;
    }
    if args.detach {
        detach()?;
    }
    init_logging();
    let listener = match socket::from_systemd()? {
        Some(l) => l,
        None => {
            let path = match &args.socket {
                Some(p) => p.clone(),
                None => jitc_protocol::paths::default_socket_path(),
            };
            match socket::bind(&path) {
                Ok(l) => l,
                Err(SocketError::AlreadyRunning(p)) => return Ok(Started::AlreadyRunning(p)),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let result = serve(&args, &listener);
    listener.unlink();
    result.map(|()| Started::Served)
}

fn serve(args: &Args, bound: &BoundSocket) -> anyhow::Result<()> {
    let vault = match &args.vault {
        Some(v) => v.clone(),
        None => config::default_vault_path()?,
    };
    let vault_file = VaultFile::new(vault.clone());
    let lock = vault_file.lock()?;
    vault_file.remove_stale_temp_files();
    let policy = match &args.policy {
        Some(p) => p.clone(),
        None => config::default_policy_path()?,
    };
    let audit = match &args.audit_log {
        Some(p) => p.clone(),
        None => config::state_dir()?.join("audit.log"),
    };
    let mut config = Config::new(bound.path.clone(), vault, policy, audit);
    config.audit.sync = !args.no_audit_sync;
    if let Some(max) = args.audit_max_bytes {
        config.audit.max_bytes = max;
    }
    config.idle_lock = args.idle_lock;
    config.max_connections = args.max_connections.max(1);
    config.frame_timeout = args.frame_timeout.unwrap_or(Config::DEFAULT_FRAME_TIMEOUT);
    config.connection_timeout = args
        .connection_timeout
        .unwrap_or(Config::DEFAULT_CONNECTION_TIMEOUT);
    let agent = Arc::new(Agent::new(config, lock));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let std_listener = bound
            .listener
            .try_clone()
            .context("cannot use the socket")?;
        std_listener
            .set_nonblocking(true)
            .context("cannot use the socket")?;
        let listener =
            tokio::net::UnixListener::from_std(std_listener).context("cannot use the socket")?;
        let shutdown = shutdown_signal()?;
        tracing::info!(
            socket = %bound.path.display(),
            vault = %agent.vault_file().path().display(),
            pid = std::process::id(),
            "listening"
        );
        announce_ready(args.detach);
        // Detached, we are nobody's service (and `jitc` dropped the variable anyway).
        let service = !args.detach;
        if service {
            socket::notify_systemd("READY=1");
        }
        jitc_agentd::run(listener, agent, shutdown).await;
        if service {
            socket::notify_systemd("STOPPING=1");
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Tells whoever started us that connections are accepted now. Detached, stdout is a
/// pipe `jitc agent` stops reading after this line, so it is pointed at /dev/null.
fn announce_ready(detach: bool) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    if detach && let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

/// Leaves the caller's session and terminal, and sends our stderr to the log file.
fn detach() -> anyhow::Result<()> {
    let _ = nix::unistd::setsid();
    nix::unistd::chdir("/").context("cannot change to /")?;
    let dir = config::state_dir()?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let log = dir.join("agentd.log");
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    nix::unistd::dup2_stderr(&file).with_context(|| format!("cannot log to {}", log.display()))?;
    Ok(())
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

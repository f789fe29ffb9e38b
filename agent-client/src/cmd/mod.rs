//! One module per `jitc` command; `run` is the single dispatcher.

mod add;
mod agent;
mod approve;
mod audit;
mod deny;
mod exec;
mod import;
mod init;
mod leases;
mod list;
mod lock;
mod pending;
mod policy;
mod remove;
mod request;
mod revoke;
mod scan;
mod status;
mod unlock;

use clap::Subcommand;
use jitc::Result;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the agent if none answers, and print the shell line that points jitc at it
    Agent(agent::Args),
    /// Create a new vault
    Init(init::Args),
    /// Unlock the vault
    Unlock(unlock::Args),
    /// Lock the vault: wipe keys and values from the agent's memory, end every lease
    Lock,
    /// Show the agent and the vault
    Status(status::Args),
    /// Store a secret (value from stdin, or typed without echo)
    Add(add::Args),
    /// Remove a secret
    Rm(remove::Args),
    /// List secrets: names and metadata, never values
    Ls(list::Args),
    /// Run a command with secrets in its environment, under a lease
    Exec(request::RequestArgs),
    /// List active leases: secrets, command, requester, expiry; never values
    Leases(leases::Args),
    /// End a lease (or all) now; its command is stopped
    Revoke(revoke::Args),
    /// List requests waiting for approval
    Pending(pending::Args),
    /// Approve a waiting request (asks for the vault passphrase)
    Approve(approve::Args),
    /// Deny a waiting request
    Deny(deny::Args),
    /// Inspect the policy
    #[command(subcommand)]
    Policy(policy::Command),
    /// Move a plaintext .env file into the vault; prints the reference file to commit
    Import(import::Args),
    /// Find plaintext credentials an agent could read; exit 1 if any
    Scan(scan::Args),
    /// Read the audit trail (or check it: 'jitc audit verify')
    Audit(audit::Args),
}

/// Runs one command; the `u8` is the exit code on success (`exec`: the child's).
pub fn run(command: Command) -> Result<u8> {
    match command {
        Command::Agent(a) => agent::run(a),
        Command::Init(a) => init::run(a),
        Command::Unlock(a) => unlock::run(a),
        Command::Lock => lock::run(),
        Command::Status(a) => status::run(a),
        Command::Add(a) => add::run(a),
        Command::Rm(a) => remove::run(a),
        Command::Ls(a) => list::run(a),
        Command::Exec(a) => exec::run(a),
        Command::Leases(a) => leases::run(a),
        Command::Revoke(a) => revoke::run(a),
        Command::Pending(a) => pending::run(a),
        Command::Approve(a) => approve::run(a),
        Command::Deny(a) => deny::run(a),
        Command::Policy(c) => policy::run(c),
        Command::Import(a) => import::run(a),
        Command::Scan(a) => scan::run(a),
        Command::Audit(a) => audit::run(a),
    }
}

/// A Unix time as RFC 3339, to the second.
fn date(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// The last component of a path.
fn program_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A lease's scope for a human, in one line.
fn scope_text(s: &jitc_protocol::Scope) -> String {
    format!(
        "{} with {} (task: {}), asked by {}{}",
        s.argv.join(" "),
        s.secrets.join(", "),
        s.task.as_deref().unwrap_or("none given"),
        chain_text(&s.chain),
        s.profile
            .as_deref()
            .map(|p| format!(" [profile {p}]"))
            .unwrap_or_default()
    )
}

/// A process chain as `jitc (4242) ← sh (4240) ← codex (4100) …`.
fn chain_text(chain: &[jitc_protocol::ProcessInfo]) -> String {
    let names: Vec<String> = chain
        .iter()
        .take(8)
        .map(|p| {
            let name = p
                .argv
                .first()
                .or(p.exe.as_ref())
                .map(|a| program_name(a).to_owned())
                .unwrap_or_else(|| "?".into());
            format!("{name} ({})", p.pid)
        })
        .collect();
    let more = if chain.len() > 8 { " ← …" } else { "" };
    format!("{}{more}", names.join(" ← "))
}

/// Writes `text` to stdout. A full disk or closed pipe is an error (74), not a panic.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => jitc::Error::OutputClosed,
            _ => jitc::Error::local(
                jitc_protocol::ErrorCode::IoErr,
                format!("cannot write the output ({e})"),
            ),
        })
}

/// Prints a JSON value on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| jitc::Error::failure(format!("cannot format JSON ({e})")))?;
    emit(&format!("{text}\n"))
}

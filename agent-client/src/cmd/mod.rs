//! One module per `jitc` command; `run` is the single dispatcher.

mod add;
mod agent;
mod approve;
mod audit;
pub mod completions;
mod deny;
mod doctor;
mod exec;
mod import;
mod init;
mod leases;
mod list;
mod lock;
mod man;
mod passwd;
mod pending;
mod policy;
mod remove;
mod rename;
mod request;
mod revoke;
mod sandbox;
mod scan;
mod status;
mod stop;
mod unlock;

use clap::Subcommand;
use jitc::{Client, Error, Result, Written};
use jitc_protocol::SecretBytes;
use jitc_protocol::display::{MAX_SHOWN_ARGV, command_line, visible};

#[derive(Debug, Subcommand)]
// Each command's arguments are defined only when it is the one run: defining all of
// them took a tenth of a millisecond at every start (BENCHMARKS.md).
#[command(defer = true)]
pub enum Command {
    /// Start the agent if none answers, and print the shell line that points jitc at it
    Agent(agent::Args),
    /// Create a new vault
    #[command(after_help = "Examples:
  jitc init                                   # asks for a new passphrase, twice
  jitc init --kdf-memory 1024 --kdf-iterations 4   # a slower, stronger key derivation
  printf '%s\\n' \"$PASSPHRASE\" | jitc init --passphrase-stdin")]
    Init(init::Args),
    /// Unlock the vault
    #[command(after_help = "Examples:
  jitc unlock                                  # asks for the passphrase without echo
  printf '%s\\n' \"$PASSPHRASE\" | jitc unlock --passphrase-stdin")]
    Unlock(unlock::Args),
    /// Lock the vault: wipe keys and values from the agent's memory, end every lease
    #[command(after_help = "Examples:
  jitc lock                    # wipe keys and values, end every lease
  jitc lock && jitc status     # the vault shows as locked")]
    Lock,
    /// Show the agent and the vault
    #[command(after_help = "Examples:
  jitc status
  jitc status --json | jq .locked")]
    Status(status::Args),
    /// Store a secret (value from stdin, or typed without echo)
    Add(add::Args),
    /// Remove a secret (asks for the vault passphrase)
    Rm(remove::Args),
    /// Rename a secret, keeping its value (asks for the vault passphrase)
    Mv(rename::Args),
    /// Change the vault passphrase
    Passwd(passwd::Args),
    /// Stop the agent: every lease ends, the vault is locked (as 'ssh-agent -k')
    #[command(after_help = "Examples:
  jitc stop                    # as 'ssh-agent -k'
  jitc stop; jitc agent        # restart it (after an upgrade)")]
    Stop,
    /// List secrets: names and metadata, never values
    #[command(after_help = "Examples:
  jitc ls
  jitc ls --json | jq -r '.[].name'
  jitc ls --backend team secret/ci/      # what an OpenBao backend holds there")]
    Ls(list::Args),
    /// Run a command with secrets in its environment, under a lease
    #[command(after_help = "Examples:
  jitc exec -s GITHUB_TOKEN -- gh pr list
  jitc exec -e DATABASE_URL=prod/db --ttl 10m --task 'run migrations' -- ./migrate.sh
  jitc exec --env-file .env.jitc --proxy -- npm publish")]
    Exec(request::RequestArgs),
    /// List active leases: secrets, command, requester, expiry; never values
    #[command(after_help = "Examples:
  jitc leases
  jitc leases --json | jq '.[].scope.secrets'")]
    Leases(leases::Args),
    /// End a lease (or all) now; its command is stopped
    #[command(after_help = "Examples:
  jitc revoke 12               # the lease's command is stopped
  jitc revoke --all")]
    Revoke(revoke::Args),
    /// List requests waiting for approval
    #[command(after_help = "Examples:
  jitc pending
  jitc pending --json")]
    Pending(pending::Args),
    /// Approve a waiting request (asks for the vault passphrase)
    #[command(after_help = "Examples:
  jitc approve 7               # asks for the vault passphrase
  printf '%s\\n' \"$PASSPHRASE\" | jitc approve 7 --passphrase-stdin")]
    Approve(approve::Args),
    /// Deny a waiting request
    #[command(after_help = "Examples:
  jitc deny 7
  jitc pending && jitc deny 8")]
    Deny(deny::Args),
    /// Inspect the policy
    #[command(subcommand)]
    #[command(after_help = "Examples:
  jitc policy explain -s prod/db -- psql
  jitc policy reset")]
    Policy(policy::Command),
    /// Move a plaintext .env file into the vault; prints the reference file to commit
    #[command(after_help = "Examples:
  jitc import .env > .env.jitc          # commit .env.jitc, delete .env
  jitc import --prefix myapp/ .env.production > .env.jitc
  jitc exec --env-file .env.jitc -- npm start")]
    Import(import::Args),
    /// Find plaintext credentials an agent could read; exit 1 if any
    #[command(after_help = "Examples:
  jitc scan                     # this directory
  jitc scan ~/src/app --json")]
    Scan(scan::Args),
    /// Read the audit trail (or check it: 'jitc audit verify')
    #[command(after_help = "Examples:
  jitc audit --since 1h
  jitc audit --follow --anomalies
  jitc audit verify")]
    Audit(audit::Args),
    /// Run a program (a coding agent) in a sandbox whose identity it cannot shed
    #[command(after_help = "Examples:
  jitc sandbox -- codex
  jitc sandbox --writable ~/.claude -- claude
  jitc sandbox --profile ci --read-only .git/hooks -- ./agent.sh")]
    Sandbox(sandbox::Args),
    /// Serve MCP on stdin/stdout: coding agents use secrets through it without seeing them
    #[command(after_help = "Examples:
  codex mcp add jitc -- jitc mcp
  claude mcp add jitc -- jitc mcp
  jitc mcp --max-runs 8          # as the MCP host starts it")]
    Mcp(McpArgs),
    /// Check the set-up: agent, socket, vault, policy, audit, sandbox, MCP entries; exit 1
    /// on any problem, each with the command that fixes it
    #[command(after_help = "Examples:
  jitc doctor
  jitc doctor --json | jq '.[] | select(.ok | not)'")]
    Doctor(doctor::Args),
    /// Print the shell code that completes jitc's commands and secret names
    Completions(completions::Args),
    /// Write the manual pages (jitc.1 and one per subcommand) into DIR
    #[command(name = "__man", hide = true)]
    Man { dir: std::path::PathBuf },
    /// Inside a sandbox: scope signals, forbid terminal injection, run the program
    #[command(name = "__sandbox-init", hide = true)]
    SandboxInit(sandbox::InitArgs),
}

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The most commands run at once for the client
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_runs: usize,
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
        Command::Mv(a) => rename::run(a),
        Command::Passwd(a) => passwd::run(a),
        Command::Stop => stop::run(),
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
        Command::Sandbox(a) => sandbox::run(a),
        Command::Mcp(a) => jitc::mcp::run(a.max_runs),
        Command::Doctor(a) => doctor::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Man { dir } => man::write_pages(&dir),
        Command::SandboxInit(a) => sandbox::init(a),
    }
}

/// A Unix time as RFC 3339, to the second.
fn date(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// `n` and `word`, plural unless `n` is 1 (`1 record`, `3 records`).
fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The last component of a path.
fn program_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// What a waiting request or a lease is, for a human: the program that runs (its
/// resolved path), its command line quoted and cut, warnings about it, the secrets, the
/// task and who asked — every string a requester supplied escaped, so none can hide or
/// forge a line.
fn scope_text(action: &str, s: &jitc_protocol::Scope) -> String {
    let mut text = if action == "lease" {
        format!(
            "  program:  {}\n  command:  {}\n",
            visible(&s.command),
            command_line(&s.argv, MAX_SHOWN_ARGV)
        )
    } else {
        format!("  change:   {}\n", visible(action))
    };
    for w in &s.warnings {
        text.push_str(&format!("  WARNING:  {}\n", visible(w)));
    }
    text.push_str(&format!(
        "  secrets:  {}\n  task:     {}\n  asked by: {}{}\n",
        s.secrets.join(", "),
        s.task.as_deref().map_or("(none given)".into(), visible),
        chain_text(&s.chain),
        match (s.sandbox, s.profile.as_deref()) {
            (Some(id), Some(p)) => format!(" [sandbox {id}, profile {}]", visible(p)),
            (_, Some(p)) => format!(" [profile {}]", visible(p)),
            _ => String::new(),
        }
    ));
    text
}

/// A process chain as the approver's prompt shows it, names escaped.
fn chain_text(chain: &[jitc_protocol::ProcessInfo]) -> String {
    use jitc_protocol::display::{MAX_SHOWN_CHAIN, process_chain};
    process_chain(chain, MAX_SHOWN_CHAIN)
}

/// The vault passphrase from stdin's first line, when `--passphrase-stdin` says so.
fn passphrase_from_stdin(wanted: bool) -> Result<Option<SecretBytes>> {
    wanted
        .then(|| jitc::prompt::read_stdin_line("the passphrase"))
        .transpose()
}

/// Runs a write that may need a human: as given (with the passphrase, if one came on
/// stdin); if the agent asks for the vault passphrase, asks for it at the terminal and
/// sends the write again.
fn write_with_passphrase(
    client: &mut Client,
    passphrase: Option<SecretBytes>,
    mut send: impl FnMut(&mut Client, Option<SecretBytes>) -> Result<Written>,
) -> Result<()> {
    let from_stdin = passphrase.is_some();
    let what = match send(client, passphrase)? {
        Written::Done => return Ok(()),
        Written::NeedsPassphrase(what) => what,
    };
    let refused = || {
        Error::local(
            jitc_protocol::ErrorCode::Refused,
            format!(
                "{what}; run this at your terminal, or give the passphrase on the first line of stdin with --passphrase-stdin"
            ),
        )
    };
    // No terminal to ask on (a script, an agent's tool call): say how to give it.
    if from_stdin || std::fs::File::open("/dev/tty").is_err() {
        return Err(refused());
    }
    let passphrase = jitc::prompt::ask_hidden(&format!("Vault passphrase ({what}): "))?;
    match send(client, Some(passphrase))? {
        Written::Done => Ok(()),
        Written::NeedsPassphrase(_) => Err(refused()),
    }
}

/// Writes `text` to stdout. A full disk or closed pipe is an error (74), not a panic.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::OutputClosed,
            _ => Error::local(
                jitc_protocol::ErrorCode::IoErr,
                format!("cannot write the output ({e})"),
            ),
        })
}

/// Prints a JSON value on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::failure(format!("cannot format JSON ({e})")))?;
    emit(&format!("{text}\n"))
}

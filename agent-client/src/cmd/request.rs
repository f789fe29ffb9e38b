//! The options shared by `jitc exec` and `jitc policy explain`: which secrets, for which
//! command, for how long; parsed and checked into a `Plan` before the agent is asked.

use std::ffi::OsString;
use std::time::Duration;

use clap_complete::engine::{ArgValueCandidates, ArgValueCompleter};
use jitc::exec::inject::{self, EnvEntry};
use jitc::exec::{Plan, command};
use jitc::refs::{self, Binding};
use jitc::{Error, Result};

use super::completions;

#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// Inject secret NAME as variable NAME ('/' and '-' become '_', upper-cased)
    #[arg(short = 's', long = "secret", value_name = "NAME",
          add = ArgValueCandidates::new(completions::secret_names))]
    secrets: Vec<String>,
    /// Inject a secret as VAR (REF is NAME or jitc://NAME)
    #[arg(short = 'e', long = "env", value_name = "VAR=REF",
          add = ArgValueCompleter::new(completions::env_bindings))]
    env: Vec<String>,
    /// Read variables from a dotenv file; values that are jitc://NAME are leased
    #[arg(long, value_name = "FILE")]
    env_file: Option<std::path::PathBuf>,
    /// Put a secret in an in-memory file; VAR holds its /dev/fd/N path
    #[arg(long = "file", value_name = "VAR=REF",
          add = ArgValueCompleter::new(completions::env_bindings))]
    files: Vec<String>,
    /// Serve the leased values in dotenv form from a FIFO at PATH while the command runs
    #[arg(long, value_name = "PATH")]
    mount: Option<std::path::PathBuf>,
    /// How long the lease may last, e.g. 90s, 15m
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// What this is for (shown in approval prompts and the audit trail)
    #[arg(long, value_name = "TEXT")]
    task: Option<String>,
    /// Do not mask leased values in the command's output
    #[arg(long)]
    no_masking: bool,
    /// Give secrets bound to hosts by a [[credential]] as placeholders; the agent's
    /// gateway adds them to the command's HTTPS requests for those hosts
    #[arg(long)]
    proxy: bool,
    /// Write what happens to the lease as JSON lines to descriptor FD (for `jitc mcp`)
    #[arg(long, value_name = "FD", hide = true)]
    events_fd: Option<i32>,
    /// The command and its arguments (after '--'; a mistyped option before it is an
    /// error, never the command)
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// A lease duration; a bad one is bad input (65), as the contract has it.
fn parse_duration(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        Error::bad_input(format!(
            "bad duration '{}' for --ttl ({e}); try 90s, 15m or 1h",
            s.escape_debug()
        ))
    })?;
    if d.is_zero() {
        return Err(Error::bad_input(
            "a lease cannot last 0s; give --ttl a positive duration",
        ));
    }
    Ok(d)
}

/// Checks the options and resolves the command.
pub fn plan(args: RequestArgs) -> Result<Plan> {
    let mut bindings: Vec<Binding> = Vec::new();
    for s in &args.secrets {
        bindings.push(refs::binding_for_secret(s)?);
    }
    for e in &args.env {
        bindings.push(refs::binding_for_assignment(e)?);
    }
    let mut plain = Vec::new();
    if let Some(file) = &args.env_file {
        let entries = inject::read_env_file(file)?;
        // A repository's .env is not the user's to trust: nothing in it may make the
        // command load code.
        if let Some((hook, _)) = entries
            .iter()
            .find(|(k, _)| jitc_protocol::names::is_hook_var(k))
        {
            let line = inject::line_of_key(file, hook)
                .map(|n| format!(" (line {n})"))
                .unwrap_or_default();
            return Err(Error::bad_input(format!(
                "{}{line} sets {hook}, which makes programs run code they did not ask for; jitc takes no loader or interpreter hook from an env file (set it in your own environment if you mean it)",
                file.display()
            )));
        }
        for (key, entry) in entries {
            match entry {
                EnvEntry::Secret(secret) => bindings.push(Binding { var: key, secret }),
                EnvEntry::Plain(value) => plain.push((key, value)),
            }
        }
    }
    let bindings = refs::dedup(bindings)?;
    let files = refs::dedup(
        args.files
            .iter()
            .map(|f| refs::binding_for_assignment(f))
            .collect::<Result<Vec<_>>>()?,
    )?;
    if let Some(clash) = files
        .iter()
        .find(|f| bindings.iter().any(|b| b.var == f.var))
    {
        return Err(Error::bad_input(format!(
            "{} is given both as a variable and as a --file; keep one",
            clash.var
        )));
    }
    // No secret may become a loader or interpreter hook of the command: a value the
    // requester stored itself (a library's path, a library in a --file memfd) would run
    // inside it, beside the secrets it leases.
    if let Some(hook) = bindings
        .iter()
        .chain(&files)
        .find(|b| jitc_protocol::names::is_hook_var(&b.var))
    {
        return Err(Error::bad_input(format!(
            "{} is a loader or interpreter hook (it makes programs run code they did not ask for); jitc does not set it from a secret",
            hook.var
        )));
    }
    let ttl = args.ttl.as_deref().map(parse_duration).transpose()?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::failure(format!("cannot read the current directory ({e})")))?;
    let path_var = std::env::var_os("PATH");
    let program = command::resolve(args.command, path_var.as_deref(), &cwd)?;
    let plan = Plan {
        bindings,
        files,
        plain,
        mount: args.mount.map(|m| cwd.join(m)),
        program,
        cwd,
        task: args.task,
        ttl,
        masking: !args.no_masking,
        proxy: args.proxy,
        events: args
            .events_fd
            .map(jitc::exec::spawn::take_fd)
            .transpose()?
            .map(std::fs::File::from),
    };
    Ok(plan)
}

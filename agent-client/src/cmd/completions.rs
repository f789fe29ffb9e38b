//! `jitc completions SHELL`: the shell code that completes `jitc`'s commands, options and
//! — from a running, unlocked agent — secret names, lease ids and waiting request ids.
//!
//! The code is clap_complete's dynamic registration: on each TAB the shell runs
//! `JITC_COMPLETE=SHELL jitc -- WORDS…`, and `main` answers before parsing anything
//! else. Names come from the agent only if one already answers on the socket: completing
//! never starts an agent, never prompts, and says nothing when there is none.

use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use jitc::{Client, Result};

/// The variable the registration code sets to ask for completions (not clap's generic
/// `COMPLETE`: a stray `COMPLETE=1` in someone's environment must not change what `jitc`
/// does).
pub const VAR: &str = "JITC_COMPLETE";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  jitc completions bash > ~/.local/share/bash-completion/completions/jitc
  jitc completions zsh > ~/.zfunc/_jitc     # a directory in your fpath
  jitc completions fish > ~/.config/fish/completions/jitc.fish")]
pub struct Args {
    /// The shell to print completions for
    shell: Shell,
}

pub fn run(args: Args) -> Result<u8> {
    let completer: &dyn EnvCompleter = match args.shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
    };
    let mut code = Vec::new();
    // `jitc` as found on PATH when completing: the completions always come from the
    // jitc that the command line will run.
    completer
        .write_registration(VAR, "jitc", "jitc", "jitc", &mut code)
        .map_err(|e| jitc::Error::failure(format!("cannot write the completions ({e})")))?;
    if let Shell::Zsh = args.shell {
        // Autoloaded from a directory in `fpath` as `_jitc`, the file's body runs as that
        // function on the first TAB: it defines the completer and binds it — and must
        // then also complete, or the first TAB of every shell would offer nothing.
        code.extend_from_slice(
            b"if [[ ${funcstack[1]-} == _jitc ]]; then\n    _clap_dynamic_completer_jitc \"$@\"\nfi\n",
        );
    }
    super::emit(&String::from_utf8_lossy(&code))?;
    Ok(0)
}

/// An agent that answers already — within a second, or a TAB would hang — or none
/// (completion must not start one).
fn agent() -> Option<Client> {
    Client::connect_within(
        &jitc_protocol::paths::socket_path(),
        std::time::Duration::from_secs(1),
    )
    .ok()
}

/// The vault's secret names, for `-s NAME`, `rm NAME`, …: empty when no agent answers
/// or the vault is locked.
pub fn secret_names() -> Vec<CompletionCandidate> {
    let Some(secrets) = agent().and_then(|mut c| c.list().ok()) else {
        return Vec::new();
    };
    secrets
        .into_iter()
        .map(|s| {
            let c = CompletionCandidate::new(&s.name);
            match s.description {
                Some(d) => c.help(Some(one_line(&d).into())),
                None => c,
            }
        })
        .collect()
}

/// `VAR=NAME` for `-e`/`--file`: completes the part after `=` with secret names.
pub fn env_bindings(current: &std::ffi::OsStr) -> Vec<CompletionCandidate> {
    let Some(current) = current.to_str() else {
        return Vec::new();
    };
    let Some((var, prefix)) = current.split_once('=') else {
        return Vec::new();
    };
    secret_names()
        .into_iter()
        .filter_map(|c| {
            let name = c.get_value().to_str()?.to_owned();
            name.starts_with(prefix)
                .then(|| CompletionCandidate::new(format!("{var}={name}")))
        })
        .collect()
}

/// Active lease ids, for `jitc revoke ID`.
pub fn lease_ids() -> Vec<CompletionCandidate> {
    let leases = agent()
        .and_then(|mut c| c.leases().ok())
        .unwrap_or_default();
    ids(leases.iter().map(|l| (l.id, &l.scope)))
}

/// Waiting request ids, for `jitc approve ID` / `jitc deny ID`.
pub fn pending_ids() -> Vec<CompletionCandidate> {
    let pending = agent()
        .and_then(|mut c| c.pending().ok())
        .unwrap_or_default();
    ids(pending.iter().map(|p| (p.id, &p.scope)))
}

/// Ids, each with the secrets it is about beside it.
fn ids<'a>(
    items: impl Iterator<Item = (u64, &'a jitc_protocol::Scope)>,
) -> Vec<CompletionCandidate> {
    items
        .map(|(id, scope)| {
            CompletionCandidate::new(id.to_string())
                .help(Some(one_line(&scope.secrets.join(", ")).into()))
        })
        .collect()
}

/// A requester-supplied text as one short, escaped line (a description could hold
/// newlines or terminal escapes; the shell prints it beside the name).
fn one_line(text: &str) -> String {
    let shown = jitc_protocol::display::visible(text);
    match shown.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &shown[..i]),
        None => shown.into_owned(),
    }
}

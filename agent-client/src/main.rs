//! `jitc`: the command line. Parses arguments, runs one command module, and turns any
//! error into one line on stderr and its exit code.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

use cmd::Command;

#[derive(Debug, Parser)]
#[command(
    name = "jitc",
    version,
    about = "Just-in-time credentials for coding agents: lease secrets to one command, never to a file",
    long_about = "jitc leases secrets — scoped to one task and one command, time-bound, approved \
by you where the policy says so, audited always — into the process that needs them. The \
agent, jitc-agentd, holds the unlocked vault; coding agents use it through 'jitc exec', \
'jitc sandbox' and 'jitc mcp' without ever seeing a value.",
    after_long_help = "Environment:
  JITC_SOCK    the agent's socket [default: $XDG_RUNTIME_DIR/jitc/agent.sock]
  JITC_VAULT   the vault file [default: $XDG_DATA_HOME/jitc/vault.jitc]

Files:
  $XDG_CONFIG_HOME/jitc/policy.toml   who may lease what, and how
  $XDG_STATE_HOME/jitc/audit.log      the audit trail ('jitc audit')

Exit status:
  0 success; 1 a failure or a failed check (doctor, scan, verify); 2 usage;
  65 bad input; 69 no agent; 74 I/O error; 75 locked; 77 refused by the policy or
  the human; 'jitc exec' and 'jitc sandbox' exit as their command does

Examples:
  eval \"$(jitc agent)\" && jitc init
  jitc add GITHUB_TOKEN && jitc exec -s GITHUB_TOKEN -- gh pr list
  jitc doctor

See also: jitc-agentd(1)",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The whole command line's definition: for completions and the manual pages.
fn cli() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// Usage errors as one line, like every other error (exit 2); help and version as clap
/// prints them.
fn parse() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Err(ExitCode::from(2))
        }
        Err(e) => {
            jitc::error::note(&usage_error(&e));
            Err(ExitCode::from(2))
        }
    }
}

/// A usage error as one line that keeps clap's facts (which argument, which command)
/// and points at the help of the command it is about: `'add' needs NAME; see 'jitc add
/// --help'`.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    // "Usage: jitc add [OPTIONS] <NAME>" names the (sub)command.
    let usage = match e.get(ContextKind::Usage) {
        Some(ContextValue::StyledStr(s)) => s.to_string(),
        _ => String::new(),
    };
    let command: Vec<&str> = usage
        .split_whitespace()
        .skip_while(|w| *w != "jitc")
        .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    let command = if command.is_empty() {
        named_subcommand(std::env::args_os().skip(1))
    } else {
        command.join(" ")
    };
    let help = format!("see '{command} --help'");
    if e.kind() == ErrorKind::MissingRequiredArgument
        && let Some(ContextValue::Strings(missing)) = e.get(ContextKind::InvalidArg)
    {
        let names: Vec<String> = missing
            .iter()
            .map(|m| {
                // "<NAME>", "<CMD>...", "--secret <NAME>": the name.
                let m = m.rsplit(' ').next().unwrap_or(m);
                m.trim_matches(|c| c == '<' || c == '>' || c == '.')
                    .to_owned()
            })
            .collect();
        let sub = command.strip_prefix("jitc ").unwrap_or(&command);
        return format!("'{sub}' needs {}; {help}", names.join(" and "));
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first}; {help}")
}

/// `jitc` and the subcommands the arguments name, as far as they name one (for errors
/// that carry no usage line, such as a value that does not parse).
fn named_subcommand(args: impl Iterator<Item = std::ffi::OsString>) -> String {
    use clap::CommandFactory;
    // Built whole: the commands' own subcommands are defined only when built
    // (`#[command(defer = true)]`), and this runs only on the way out with an error.
    let mut cmd = Cli::command();
    cmd.build();
    let mut path = vec!["jitc".to_owned()];
    for arg in args {
        let Some(arg) = arg.to_str() else { break };
        let Some(sub) = cmd.find_subcommand(arg).cloned() else {
            break;
        };
        path.push(sub.get_name().to_owned());
        cmd = sub;
    }
    path.join(" ")
}

fn main() -> ExitCode {
    // A bug must still end in one line, and never print more than where it happened.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        jitc::error::note(&format!("internal error{at}; please report it"));
    }));
    // A shell asking for completions (`JITC_COMPLETE=bash jitc -- jitc exec -s …`) gets
    // them and nothing else.
    // The registration code always passes `--` first; a stray variable alone never turns
    // a command into a completion.
    if std::env::args_os().nth(1).is_some_and(|a| a == "--") {
        clap_complete::CompleteEnv::with_factory(cli)
            .var(cmd::completions::VAR)
            .complete();
    }
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cmd::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(jitc::Error::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            jitc::error::note(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every command a person can type ends its `--help` with two or three examples.
    #[test]
    fn every_command_ends_its_help_with_examples() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            // `help` is clap's own (`jitc help exec` prints `jitc exec --help`).
            for sub in cmd
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                let examples = help
                    .split_once("Examples:\n")
                    .map(|(_, rest)| rest.lines().take_while(|l| l.starts_with("  ")).count())
                    .unwrap_or(0);
                if !(2..=3).contains(&examples) {
                    missing.push(format!("{path} ({examples} examples)"));
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        let mut cli = super::cli();
        cli.build();
        walk(&cli, "jitc", &mut missing);
        assert!(missing.is_empty(), "without examples: {missing:?}");
    }

    /// A usage error that carries no usage line (a value that does not parse) points at
    /// the help of the command typed, however deep: `jitc audit accept`, not `jitc audit`.
    #[test]
    fn a_usage_error_names_every_nested_command() {
        fn walk(cmd: &clap::Command, path: &mut Vec<String>, wrong: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                path.push(sub.get_name().to_owned());
                let named = super::named_subcommand(path.iter().map(std::ffi::OsString::from));
                let want = format!("jitc {}", path.join(" "));
                if named != want {
                    wrong.push(format!("{want} named as {named}"));
                }
                walk(sub, path, wrong);
                path.pop();
            }
        }
        let mut cli = super::cli();
        cli.build();
        let mut wrong = Vec::new();
        walk(&cli, &mut Vec::new(), &mut wrong);
        assert!(wrong.is_empty(), "{wrong:?}");
    }
}

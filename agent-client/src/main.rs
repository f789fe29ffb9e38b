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
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    let mut cmd = Cli::command();
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

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
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            jitc::error::note(&format!("{first}; see 'jitc --help'"));
            Err(ExitCode::from(2))
        }
    }
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

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cmd::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("jitc: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

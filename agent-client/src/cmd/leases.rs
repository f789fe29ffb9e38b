//! `jitc leases`: what is leased right now, to whom, until when. Never values.

use jitc::Result;
use jitc::start::connect_or_start;

use jitc_protocol::display::visible;

use super::{date, emit, print_json, program_name};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let leases = connect_or_start()?.leases()?;
    if args.json {
        print_json(&leases)?;
        return Ok(0);
    }
    if leases.is_empty() {
        jitc::error::note("no active leases");
        return Ok(0);
    }
    let mut text = format!(
        "{:>4}  {:24}  {:20}  {:>7}  {:8}  {:20}  {:20}  TASK\n",
        "ID", "SECRETS", "COMMAND", "PID", "PROFILE", "STARTED", "EXPIRES"
    );
    for l in &leases {
        text.push_str(&format!(
            "{:>4}  {:24}  {:20}  {:>7}  {:8}  {:20}  {:20}  {}\n",
            l.id,
            l.scope.secrets.join(","),
            format!(
                "{}{}",
                visible(program_name(&l.scope.command)),
                if l.scope.warnings.is_empty() {
                    ""
                } else {
                    " (!)"
                }
            ),
            l.scope.pid,
            visible(l.scope.profile.as_deref().unwrap_or("-")),
            date(l.started),
            date(l.expires),
            visible(l.scope.task.as_deref().unwrap_or(""))
        ));
    }
    emit(&text)?;
    Ok(0)
}

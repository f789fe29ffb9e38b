//! `jitc pending`: requests waiting for a human's approval, with who asked and why.

use jitc::Result;
use jitc::start::connect_or_start;

use super::{emit, print_json, scope_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let pending = connect_or_start()?.pending()?;
    if args.json {
        print_json(&pending)?;
        return Ok(0);
    }
    if pending.is_empty() {
        jitc::error::note("no requests are waiting for approval");
        return Ok(0);
    }
    let mut text = String::new();
    for p in &pending {
        text.push_str(&format!(
            "request {}  (denied in {}s unless approved: jitc approve {} / jitc deny {})\n{}",
            p.id,
            p.expires_in_secs,
            p.id,
            p.id,
            scope_text(&p.action, &p.scope)
        ));
    }
    emit(&text)?;
    Ok(0)
}

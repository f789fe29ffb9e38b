//! `jitc rm NAME`: remove a secret.

use jitc::Result;
use jitc::error::note;
use jitc::start::connect_or_start;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The secret to remove
    name: String,
}

pub fn run(args: Args) -> Result<u8> {
    connect_or_start()?.remove(&args.name)?;
    note(&format!("removed '{}'", args.name));
    Ok(0)
}

//! `jitc deny ID`: refuse a waiting request (the requester gets exit 77).

use jitc::Result;
use jitc::start::connect_or_start;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The request to deny (see 'jitc pending')
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::completions::pending_ids))]
    id: u64,
}

pub fn run(args: Args) -> Result<u8> {
    connect_or_start()?.deny(args.id)?;
    jitc::error::note(&format!("denied request {}", args.id));
    Ok(0)
}

//! `jitc revoke ID | --all`: end leases now; their commands are stopped.

use jitc::Result;
use jitc::start::connect_or_start;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true))]
pub struct Args {
    /// The lease to end (see 'jitc leases')
    #[arg(group = "which", add = clap_complete::engine::ArgValueCandidates::new(super::completions::lease_ids))]
    id: Option<u64>,
    /// End every lease
    #[arg(long, group = "which")]
    all: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let count = connect_or_start()?.revoke(if args.all { None } else { args.id })?;
    jitc::error::note(&format!(
        "revoked {count} lease{}",
        if count == 1 { "" } else { "s" }
    ));
    Ok(0)
}

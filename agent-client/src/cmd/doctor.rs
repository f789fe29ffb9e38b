//! `jitc doctor`: placeholder while it is written.
use jitc::Result;
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}
pub fn run(_args: Args) -> Result<u8> {
    Ok(0)
}

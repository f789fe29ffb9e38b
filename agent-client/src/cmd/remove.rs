//! `jitc rm NAME`: remove a secret (needs the vault passphrase, or an approval where
//! the policy asks for one).

use jitc::Result;
use jitc::error::note;
use jitc::start::connect_or_start;

use super::{passphrase_from_stdin, write_with_passphrase};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  jitc rm old/token                          # asks for the vault passphrase
  echo \"$PASSPHRASE\" | jitc rm old/token --passphrase-stdin")]
pub struct Args {
    /// The secret to remove
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::completions::secret_names))]
    name: String,
    /// Read the vault passphrase from the first line of stdin
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let passphrase = passphrase_from_stdin(args.passphrase_stdin)?;
    let mut client = connect_or_start()?;
    write_with_passphrase(&mut client, passphrase, |c, p| c.remove(&args.name, p))?;
    note(&format!("removed '{}'", args.name));
    Ok(0)
}

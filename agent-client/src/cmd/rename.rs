//! `jitc mv OLD NEW`: rename a secret, its value kept (needs the vault passphrase).

use jitc::Result;
use jitc::error::note;
use jitc::start::connect_or_start;

use super::{passphrase_from_stdin, write_with_passphrase};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  jitc mv GITHUB_TOKEN github/token
  echo \"$PASSPHRASE\" | jitc mv a b --passphrase-stdin")]
pub struct Args {
    /// The secret's name now
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::completions::secret_names))]
    from: String,
    /// Its new name
    to: String,
    /// Read the vault passphrase from the first line of stdin
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let passphrase = passphrase_from_stdin(args.passphrase_stdin)?;
    let mut client = connect_or_start()?;
    write_with_passphrase(&mut client, passphrase, |c, p| {
        c.rename(&args.from, &args.to, p)
    })?;
    note(&format!("renamed '{}' to '{}'", args.from, args.to));
    Ok(0)
}

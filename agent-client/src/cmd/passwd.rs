//! `jitc passwd`: change the vault passphrase (the old one stops working at once).

use jitc::error::note;
use jitc::start::connect_or_start;
use jitc::{Result, prompt};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  jitc passwd                                # asks the old passphrase, then the new twice
  printf '%s\\n%s\\n' \"$OLD\" \"$NEW\" | jitc passwd --passphrase-stdin")]
pub struct Args {
    /// Read the old and the new passphrase from the first two lines of stdin
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let mut client = connect_or_start()?;
    let (old, new) = if args.passphrase_stdin {
        (
            prompt::read_stdin_line("the old passphrase")?,
            prompt::read_stdin_line("the new passphrase")?,
        )
    } else {
        (
            prompt::ask_hidden("Current vault passphrase: ")?,
            prompt::ask_new_passphrase()?,
        )
    };
    super::init::warn_if_weak(new.expose());
    client.passwd(old, new)?;
    note("changed the vault passphrase; the old one no longer opens the vault");
    Ok(0)
}

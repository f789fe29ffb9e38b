//! `jitc init`: create a new vault (refusing to touch an existing one).

use jitc::error::note;
use jitc::prompt;
use jitc::start::connect_or_start;
use jitc::{Error, Result};
use jitc_protocol::{ErrorCode, KdfParams};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the passphrase from the first line of stdin instead of the terminal
    #[arg(long)]
    passphrase_stdin: bool,
    /// Argon2id memory cost in MiB (at least 8)
    #[arg(long, value_name = "MIB", default_value_t = KdfParams::DEFAULT.memory_mib)]
    kdf_memory: u32,
    /// Argon2id iterations (at least 1)
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.iterations)]
    kdf_iterations: u32,
}

pub fn run(args: Args) -> Result<u8> {
    let kdf = KdfParams {
        memory_mib: args.kdf_memory,
        iterations: args.kdf_iterations,
    };
    if let Some(why) = kdf.check() {
        return Err(Error::bad_input(why));
    }
    let mut client = connect_or_start()?;
    let status = client.status()?;
    if status.vault_exists {
        return Err(Error::local(
            ErrorCode::Failure,
            format!(
                "a vault already exists at {}; unlock it with 'jitc unlock', or move it away to start over",
                status.vault
            ),
        ));
    }
    let passphrase = if args.passphrase_stdin {
        prompt::read_stdin_line("the passphrase")?
    } else {
        prompt::ask_new_passphrase()?
    };
    client.init(passphrase, kdf)?;
    note(&format!(
        "created the vault at {} (unlocked); store a secret with 'jitc add NAME'",
        status.vault
    ));
    Ok(0)
}

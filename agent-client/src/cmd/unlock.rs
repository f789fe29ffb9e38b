//! `jitc unlock`: open the vault in the agent.

use jitc::error::note;
use jitc::prompt;
use jitc::start::connect_or_start;
use jitc::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the passphrase from the first line of stdin instead of the terminal
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let mut client = connect_or_start()?;
    let status = client.status()?;
    if !status.vault_exists {
        return Err(Error::failure(format!(
            "there is no vault at {} yet; create one with 'jitc init'",
            status.vault
        )));
    }
    if !status.locked {
        note("the vault is already unlocked");
        return Ok(0);
    }
    let passphrase = if args.passphrase_stdin {
        prompt::read_stdin_line("the passphrase")?
    } else {
        prompt::ask_hidden(&format!("Passphrase for {}: ", status.vault))?
    };
    client.unlock(passphrase)?;
    let status = client.status()?;
    let secrets = status.secrets.unwrap_or(0);
    note(&format!(
        "unlocked ({secrets} secret{})",
        if secrets == 1 { "" } else { "s" }
    ));
    if let Some(problem) = status.audit.tampered {
        note(&format!(
            "WARNING: the audit log does not verify ({problem}); see 'jitc audit --anomalies' and 'jitc audit verify'"
        ));
    }
    Ok(0)
}

//! `jitc approve ID`: let a waiting request through, after showing what it is and
//! proving with the vault passphrase that a human is at the keyboard.

use jitc::start::connect_or_start;
use jitc::{Error, Result, prompt};

use super::scope_text;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The request to approve (see 'jitc pending')
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::completions::pending_ids))]
    id: u64,
    /// Read the passphrase from the first line of stdin instead of the terminal
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(args: Args) -> Result<u8> {
    let mut client = connect_or_start()?;
    let pending = match client.pending() {
        Ok(p) => p,
        // Inside a sandbox nothing may see what waits; the approval itself is sent on,
        // without a passphrase, for the agent to refuse on record (`self_approval`).
        Err(e) if e.code() == jitc_protocol::ErrorCode::Refused => {
            client.approve(args.id, jitc_protocol::SecretBytes::new(Vec::new()))?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let Some(p) = pending.into_iter().find(|p| p.id == args.id) else {
        return Err(Error::failure(format!(
            "no request {} is waiting for approval; see 'jitc pending'",
            args.id
        )));
    };
    // Show what is being approved before asking, on stderr (stdout may be a pipe).
    let text = format!(
        "approving request {}:\n{}",
        p.id,
        scope_text(&p.action, &p.scope)
    );
    // Several lines, on stderr: stdout may be a pipe.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    let passphrase = if args.passphrase_stdin {
        prompt::read_stdin_line("the passphrase")?
    } else {
        prompt::ask_hidden(&format!("Vault passphrase to approve request {}: ", p.id))?
    };
    client.approve(args.id, passphrase)?;
    jitc::error::note(&format!("approved request {}", args.id));
    Ok(0)
}

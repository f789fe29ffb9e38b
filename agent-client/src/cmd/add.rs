//! `jitc add NAME`: store a secret. The value comes from stdin, or is typed without echo.

use jitc::error::note;
use jitc::prompt;
use jitc::start::connect_or_start;
use jitc::{Error, Result};
use jitc_protocol::AddSecret;
use jitc_protocol::names::{MAX_VALUE_LEN, check_secret_name};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The secret's name, e.g. GITHUB_TOKEN or prod/db-password
    name: String,
    /// Overwrite the secret if it exists
    #[arg(long)]
    replace: bool,
    /// What the secret is for (shown by 'jitc ls')
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// A decoy: every lease that names it is refused and recorded as an anomaly
    #[arg(long)]
    canary: bool,
}

pub fn run(args: Args) -> Result<u8> {
    check_secret_name(&args.name).map_err(|why| {
        Error::bad_input(format!(
            "invalid secret name '{}': it {why}",
            args.name.escape_debug()
        ))
    })?;
    let mut client = connect_or_start()?;
    let interactive = prompt::stdin_is_tty();
    if interactive {
        // Ask before making someone type a value we would refuse anyway.
        let s = client.status()?;
        if !s.vault_exists {
            return Err(Error::failure(format!(
                "there is no vault at {} yet; create one with 'jitc init'",
                s.vault
            )));
        }
        if s.locked {
            return Err(Error::Agent {
                code: jitc_protocol::ErrorCode::Locked,
                message: "the vault is locked; run 'jitc unlock'".into(),
            });
        }
    }
    let value = if interactive {
        prompt::ask_hidden(&format!("Value for {}: ", args.name))?
    } else {
        prompt::read_stdin(MAX_VALUE_LEN, "the value")?
    };
    if value.is_empty() {
        return Err(Error::bad_input("the value is empty; nothing was stored"));
    }
    client.add(AddSecret {
        name: args.name.clone(),
        value,
        description: args.description,
        replace: args.replace,
        canary: args.canary,
    })?;
    note(&format!("stored '{}'", args.name));
    Ok(0)
}

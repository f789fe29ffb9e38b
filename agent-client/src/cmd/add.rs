//! `jitc add NAME`: store a secret. The value comes from stdin, or is typed without echo.
//! Replacing one (or adding one a policy rule guards) needs the vault passphrase;
//! `--description` alone changes an existing secret's description, its value kept.

use jitc::error::note;
use jitc::prompt;
use jitc::start::connect_or_start;
use jitc::{Error, Result};
use jitc_protocol::AddSecret;
use jitc_protocol::names::{MAX_VALUE_LEN, check_secret_name};

use super::{passphrase_from_stdin, write_with_passphrase};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  jitc add GITHUB_TOKEN                      # asks for the value without echo
  op read op://vault/db/password | jitc add prod/db-password
  printf '%s\\n%s' \"$PASSPHRASE\" \"$NEW\" | jitc add --replace X --passphrase-stdin")]
pub struct Args {
    /// The secret's name, e.g. GITHUB_TOKEN or prod/db-password
    #[arg(add = clap_complete::engine::ArgValueCandidates::new(super::completions::secret_names))]
    name: String,
    /// Overwrite the secret if it exists (needs the vault passphrase)
    #[arg(long)]
    replace: bool,
    /// What the secret is for (shown by 'jitc ls'); for an existing secret, without
    /// --replace, only the description changes
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// A decoy (honeytoken): leased like any secret — its value a fake you choose — and
    /// every request for it is recorded as an anomaly
    #[arg(long)]
    canary: bool,
    /// Read the vault passphrase from the first line of stdin (the value follows it)
    #[arg(long)]
    passphrase_stdin: bool,
}

pub fn run(args: Args) -> Result<u8> {
    check_secret_name(&args.name).map_err(|why| {
        Error::bad_input(format!(
            "invalid secret name '{}': it {why}",
            args.name.escape_debug()
        ))
    })?;
    let mut client = connect_or_start()?;
    if let Some(d) = &args.description
        && !args.replace
        && !args.canary
        && client.list()?.iter().any(|s| s.name == args.name)
    {
        client.describe(&args.name, Some(d.clone()))?;
        note(&format!("updated the description of '{}'", args.name));
        return Ok(0);
    }
    let passphrase = passphrase_from_stdin(args.passphrase_stdin)?;
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
    write_with_passphrase(&mut client, passphrase, |c, passphrase| {
        c.add(AddSecret {
            name: args.name.clone(),
            value: jitc_protocol::SecretBytes::from_slice(value.expose()),
            description: args.description.clone(),
            replace: args.replace,
            canary: args.canary,
            passphrase,
        })
    })?;
    note(&format!("stored '{}'", args.name));
    Ok(0)
}

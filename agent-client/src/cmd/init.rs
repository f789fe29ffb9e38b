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
    warn_if_weak(passphrase.expose());
    client.init(passphrase, kdf)?;
    note(&format!(
        "created the vault at {} (unlocked); store a secret with 'jitc add NAME'",
        status.vault
    ));
    Ok(0)
}

/// Passphrases anyone would try first (a short list: the point is the warning, not a
/// dictionary attack of our own).
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "password1",
    "password123",
    "123456789012",
    "qwertyuiop",
    "letmein",
    "iloveyou",
    "admin",
    "welcome",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "trustno1",
    "changeme",
    "secret",
    "master",
    "qwerty123",
    "1q2w3e4r5t",
    "abc123456789",
    "correcthorse",
];

/// The least a passphrase should be, to stand up to offline guessing of a stolen vault.
const MIN_PASSPHRASE: usize = 12;

/// Warns (on stderr; the choice stays the user's) about a short or common passphrase.
pub fn warn_if_weak(passphrase: &[u8]) {
    let lower = String::from_utf8_lossy(passphrase).to_lowercase();
    if COMMON.iter().any(|c| *c == lower) {
        note(
            "WARNING: that passphrase is on every list of common passphrases; a stolen vault would open in seconds. Change it with 'jitc passwd'",
        );
    } else if passphrase.len() < MIN_PASSPHRASE {
        note(&format!(
            "WARNING: a passphrase under {MIN_PASSPHRASE} characters can be guessed offline from a stolen vault; consider a longer one ('jitc passwd')"
        ));
    }
}

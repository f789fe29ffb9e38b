//! One module per request kind, each with an `apply` that turns a request into a reply.

pub mod add;
pub mod approve;
pub mod audit;
pub mod explain;
pub mod init;
pub mod lease;
pub mod leases;
pub mod list;
pub mod lock;
pub mod remove;
pub mod status;
pub mod unlock;

use jitc_protocol::SecretBytes;

use crate::error::Refusal;

/// Longest passphrase accepted; Argon2 would take more, but nobody types more.
const MAX_PASSPHRASE_LEN: usize = 4096;

/// Refuses an empty or absurd passphrase before any expensive work.
fn check_passphrase(passphrase: &SecretBytes) -> Result<(), Refusal> {
    if passphrase.is_empty() {
        return Err(Refusal::bad_input("the passphrase is empty; type one"));
    }
    if passphrase.len() > MAX_PASSPHRASE_LEN {
        return Err(Refusal::bad_input(format!(
            "the passphrase is longer than {MAX_PASSPHRASE_LEN} bytes; choose a shorter one"
        )));
    }
    Ok(())
}

/// Refuses a secret name that breaks the naming rules, saying which.
fn check_name(name: &str) -> Result<(), Refusal> {
    jitc_protocol::names::check_secret_name(name).map_err(|why| {
        Refusal::bad_input(format!(
            "invalid secret name '{}': it {why}",
            name.escape_debug()
        ))
    })
}

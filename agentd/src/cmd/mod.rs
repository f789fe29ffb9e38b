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

use crate::agent::{Agent, Session, backoff};
use crate::audit::Event;
use crate::error::Refusal;
use crate::vault::VaultError;

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

/// Proves a human is at the keyboard for an act an agent must not do on its own
/// (approving a request, accepting the audit log as it is): the vault passphrase,
/// checked against the unlocked vault. A wrong one is slowed down like `unlock`,
/// recorded as `failed` (with the reason added) and counted toward the
/// `wrong_passphrases` anomaly.
async fn confirm_passphrase(
    agent: &Agent,
    session: &mut Session,
    passphrase: SecretBytes,
    failed: Event,
) -> Result<(), Refusal> {
    check_passphrase(&passphrase)?;
    let _gate = agent.passphrase_gate.lock().await;
    let check = {
        let slot = agent.unlocked().await?;
        slot.as_ref()
            .ok_or_else(Refusal::locked)?
            .passphrase_check()
    };
    let unwrapped = tokio::task::spawn_blocking(move || check.unwrap_key(passphrase.expose()))
        .await
        .map_err(|_| Refusal::internal("checking the passphrase"))?;
    let key = match unwrapped {
        Ok(k) => k,
        Err(VaultError::WrongPassphrase) => {
            let failures = agent.record_failure();
            tracing::warn!(event = failed.event, failures, "refused: wrong passphrase");
            agent.audit.record_later(failed.reason("wrong passphrase"));
            agent.wrong_passphrase(session.peer_json(), failures);
            tokio::time::sleep(backoff(failures)).await;
            return Err(Refusal::from_vault(
                &agent.vault_file,
                VaultError::WrongPassphrase,
            ));
        }
        Err(e) => return Err(Refusal::from_vault(&agent.vault_file, e)),
    };
    let same_vault = agent
        .vault_slot()
        .await
        .as_ref()
        .is_some_and(|v| v.has_key(&key));
    if !same_vault {
        return Err(agent.locked_refusal());
    }
    agent.reset_failures();
    Ok(())
}

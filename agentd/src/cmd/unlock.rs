//! `Unlock`: derive the key from the passphrase and open the vault. Wrong passphrases
//! are answered slowly (see `agent::backoff`), one attempt at a time.

use jitc_protocol::{AuditReport, Response, SecretBytes};

use crate::agent::{Agent, Session, backoff};
use crate::audit::Event;
use crate::audit::chain::{Tag, derive_key};
use crate::audit::verify::verify_files;
use crate::error::{Refusal, Reply};
use crate::vault::{Vault, VaultError};

pub async fn apply(agent: &Agent, session: &mut Session, passphrase: SecretBytes) -> Reply {
    super::check_passphrase(&passphrase)?;
    let _gate = agent.passphrase_gate.lock().await;
    if agent.vault_slot().await.is_some() {
        agent.idle.touch();
        return Ok(Response::Done);
    }
    let file = agent.vault_file.clone();
    let stamp = agent.vault_file.stamp();
    let bytes = tokio::task::spawn_blocking(move || file.read())
        .await
        .map_err(|_| Refusal::internal("reading the vault"))?
        .map_err(Refusal::from_file)?
        .ok_or_else(|| Refusal::no_vault(&agent.vault_file))?;
    let opened = tokio::task::spawn_blocking(move || Vault::open(&bytes, passphrase.expose()))
        .await
        .map_err(|_| Refusal::internal("opening the vault"))?;
    match opened {
        Ok(vault) => {
            tracing::info!(
                secrets = vault.len(),
                memory_locked = vault.memory_locked(),
                "vault unlocked"
            );
            // The log as the agent found it, against the checkpoint the vault kept —
            // before anything new is appended to it.
            let problem = match vault.audit_checkpoint() {
                Some(cp) => check_log(agent, vault.key(), (cp.seq, cp.tag)).await,
                None => None,
            };
            // Held from the record to the install, so a `lock` cannot slip in between
            // and leave the chain keyed for a vault that is not there (or the reverse).
            let mut slot = agent.vault_slot().await;
            if slot.is_some() {
                return Ok(Response::Done);
            }
            // On record before it takes effect: no audit, no unlock.
            agent
                .audit
                .record_opening(vault.key(), Event::new("unlock").peer(session.peer_json()))
                .await?;
            if let Err(e) = agent.install(&mut slot, vault) {
                agent.audit.set_key(None);
                return Err(e);
            }
            *agent.vault_stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
            drop(slot);
            agent.audit.set_tampered(problem.clone());
            if let Some(problem) = problem {
                agent.anomaly(
                    "audit_log_tampered",
                    format!("the audit log does not verify: {problem}"),
                    Event::new("anomaly").peer(session.peer_json()),
                );
            }
            Ok(Response::Done)
        }
        Err(VaultError::WrongPassphrase) => {
            let failures = agent.record_failure();
            tracing::warn!(failures, "unlock refused: wrong passphrase");
            agent.audit.record_later(
                Event::new("unlock_failed")
                    .peer(session.peer_json())
                    .reason("wrong passphrase"),
            );
            agent.wrong_passphrase(session.peer_json(), failures);
            tokio::time::sleep(backoff(failures)).await;
            Err(Refusal::from_vault(
                &agent.vault_file,
                VaultError::WrongPassphrase,
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "unlock failed");
            Err(Refusal::from_vault(&agent.vault_file, e))
        }
    }
}

/// Checks the newest audit file against the checkpoint the vault kept, so a log cut
/// short or rewritten while the agent was down is reported at the next unlock, not
/// only when someone runs `jitc audit verify`. The problem, if any.
async fn check_log(agent: &Agent, vault_key: &[u8; 32], checkpoint: (u64, Tag)) -> Option<String> {
    let key = derive_key(vault_key);
    let newest = agent.audit.open_files(true);
    let report =
        tokio::task::spawn_blocking(move || verify_files(newest, &key, &[checkpoint], None));
    match report.await {
        Ok(AuditReport { problem, .. }) => problem,
        Err(_) => None,
    }
}

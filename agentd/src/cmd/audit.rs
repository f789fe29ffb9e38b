//! `AuditVerify`: check the audit trail's chain with the unlocked vault's key, and its
//! tail against the checkpoint (the agent's own, or the one saved in the vault).

use jitc_protocol::Response;

use crate::agent::Agent;
use crate::audit::chain;
use crate::audit::verify::verify_files;
use crate::error::{Refusal, Reply};

pub async fn verify(agent: &Agent) -> Reply {
    agent.audit.flush().await;
    let (key, stored) = {
        let slot = agent.unlocked().await?;
        let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
        (
            chain::derive_key(vault.key()),
            vault.audit_checkpoint().map(|c| (c.seq, c.tag)),
        )
    };
    let checkpoints: Vec<_> = agent.audit.last_keyed().into_iter().chain(stored).collect();
    let files = agent.audit.files();
    let rotated = files
        .iter()
        .filter(|f| f.as_path() != agent.audit.path())
        .count();
    let report = tokio::task::spawn_blocking(move || {
        verify_files(
            &files,
            &key,
            &checkpoints,
            Some((rotated, crate::audit::KEEP)),
        )
    })
    .await
    .map_err(|_| Refusal::internal("verifying the audit log"))?;
    Ok(Response::AuditReport(report))
}

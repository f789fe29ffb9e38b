//! `AuditVerify`: check the audit trail's chain with the unlocked vault's key, and its
//! tail against the checkpoint (the agent's own, or the one saved in the vault).
//! `AuditAccept`: a human accepts a log that was cut short or started afresh, so that
//! verification goes on from the log as it now is, with the break on record.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{AuditReport, ErrorCode, Response, SecretBytes};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::audit::chain;
use crate::audit::verify::verify_files;
use crate::error::{Refusal, Reply};

pub async fn verify(agent: &Agent) -> Reply {
    Ok(Response::AuditReport(check(agent, Checkpoints::All).await?))
}

/// Which checkpoints the log is checked against.
enum Checkpoints {
    /// The running agent's latest keyed line, and the vault's.
    All,
    /// The running agent's only.
    Running,
    /// None: the chain alone.
    None,
}

/// The whole log checked with the unlocked vault's key, and against `which`
/// checkpoints.
async fn check(agent: &Agent, which: Checkpoints) -> Result<AuditReport, Refusal> {
    agent.audit().flush().await;
    let (key, stored, sidecar_problem) = {
        let slot = agent.unlocked().await?;
        let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
        let (stored, problem) = super::unlock::checkpoints(agent, vault);
        (chain::derive_key(vault.key()), stored, problem)
    };
    let running = agent.audit().last_keyed();
    let checkpoints: Vec<_> = match which {
        Checkpoints::All => running.into_iter().chain(stored).collect(),
        Checkpoints::Running => running.into_iter().collect(),
        Checkpoints::None => Vec::new(),
    };
    let sidecar_problem = match which {
        Checkpoints::All => sidecar_problem,
        _ => None,
    };
    let current = agent.audit().path().to_path_buf();
    let files = agent.audit().open_files(false);
    let mut report = tokio::task::spawn_blocking(move || {
        verify_files(
            files,
            &key,
            &checkpoints,
            Some((&current, crate::audit::KEEP)),
        )
    })
    .await
    .map_err(|_| Refusal::internal("verifying the audit log"))?;
    if report.problem.is_none() {
        report.problem = sidecar_problem;
    }
    Ok(report)
}

/// Accepts the log as it is when its only fault is against the checkpoint: its tail
/// was cut off, or it was started afresh (the state directory lost, the vault copied
/// to another machine). The `audit_accepted` record, keyed and on disk before anything
/// changes, says what was wrong; then the vault's checkpoint moves to that record. A log
/// whose chain itself is broken is not accepted: that evidence stays until it rotates
/// away or is moved aside. The answer is the log verified again.
pub async fn accept(agent: &Agent, session: &mut Session, passphrase: SecretBytes) -> Reply {
    let failed = Event::new(EventKind::AcceptFailed);
    let peer = super::confirm_passphrase(agent, session, passphrase, failed).await?;
    let report = check(agent, Checkpoints::All).await?;
    let Some(problem) = report.problem else {
        return Ok(Response::AuditReport(report));
    };
    let dir = agent
        .audit()
        .path()
        .parent()
        .unwrap_or(agent.audit().path());
    if let Some(damage) = check(agent, Checkpoints::None).await?.problem {
        return Err(Refusal::new(
            ErrorCode::Failure,
            format!(
                "not accepted: the chain itself is broken ({damage}); only a log cut short or started afresh can be accepted. Keep the files as evidence: stop the agent, move {}/audit.log* aside, start it, unlock, and accept again",
                dir.display()
            ),
        ));
    }
    if let Some(cut) = check(agent, Checkpoints::Running).await?.problem {
        // This agent's own record was cut while it runs: it would write on from where
        // it thinks the log ends, past the cut, and break the chain.
        return Err(Refusal::new(
            ErrorCode::Failure,
            format!(
                "not accepted: the log was cut while this agent was running ({cut}), and the next line it writes will show the gap for good. Keep the files as evidence: stop the agent, move {}/audit.log* aside, start it, unlock, and accept the fresh log",
                dir.display()
            ),
        ));
    }
    {
        // Held from the record to the save, so a `lock` cannot come in between.
        let mut slot = agent.unlocked().await?;
        let vault = slot.as_mut().ok_or_else(Refusal::locked)?;
        if !agent.vault_file_is_ours() {
            return Err(Refusal::new(
                ErrorCode::Failure,
                "not accepted: the vault file changed behind the agent (restored or replaced?); run 'jitc lock', 'jitc unlock', then accept again",
            ));
        }
        agent
            .audit()
            .record(
                Event::new(EventKind::AuditAccepted)
                    .peer(peer)
                    .reason(format!("accepted with the vault passphrase: {problem}")),
            )
            .await?;
        vault.set_audit_checkpoint(None);
        agent.save_checkpoint(vault).await?;
    }
    agent.audit().set_tampered(None);
    tracing::warn!("audit log accepted as it is; the break is on record");
    Ok(Response::AuditReport(check(agent, Checkpoints::All).await?))
}

//! `ListPending`, `Approve` and `Deny`: the human's side of approval at the moment of
//! use. Approving takes the vault passphrase (slowed down when wrong, like `unlock`)
//! and is refused to the requesting process and everything it started.

use jitc_protocol::{ErrorCode, Response, SecretBytes};

use crate::agent::{Agent, Session, backoff};
use crate::approval::Verdict;
use crate::audit::Event;
use crate::clock::boot_now;
use crate::error::{Refusal, Reply};
use crate::vault::VaultError;

pub fn pending(agent: &Agent) -> Reply {
    Ok(Response::Pending(agent.approvals_mut().list(boot_now())))
}

fn not_waiting(id: u64) -> Refusal {
    Refusal::new(
        ErrorCode::Failure,
        format!("no request {id} is waiting for approval; see 'jitc pending'"),
    )
}

pub async fn approve(
    agent: &Agent,
    session: &mut Session,
    id: u64,
    passphrase: SecretBytes,
) -> Reply {
    super::check_passphrase(&passphrase)?;
    let requesters = agent
        .approvals_mut()
        .requesters(id)
        .map(<[u32]>::to_vec)
        .ok_or_else(|| not_waiting(id))?;
    // The requester (or the agent it runs under) must not approve itself.
    let approver_pid = session.peer.pid;
    if let Some(p) = session.chain().iter().find(|p| requesters.contains(&p.pid)) {
        tracing::warn!(
            approval = id,
            pid = approver_pid,
            via = p.pid,
            "self-approval refused"
        );
        agent.anomaly(
            "self_approval",
            format!(
                "request {id} was approved from inside the process tree that made it (pid {approver_pid}, under pid {}); refused",
                p.pid
            ),
            Event {
                approval: Some(id),
                ..Event::default().peer(session.peer_json())
            },
        );
        return Err(Refusal::new(
            ErrorCode::Refused,
            format!(
                "request {id} cannot be approved by the process that asked for it or anything it started (pid {} is in both); approve it from your own terminal",
                p.pid
            ),
        ));
    }
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
            tracing::warn!(
                approval = id,
                failures,
                "approval refused: wrong passphrase"
            );
            agent.audit.record_later(Event {
                approval: Some(id),
                ..Event::new("approve_failed")
                    .peer(session.peer_json())
                    .reason("wrong passphrase")
            });
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
    let by = format!(
        "approved with 'jitc approve' by {} (pid {})",
        session.peer.exe.as_deref().unwrap_or("?"),
        session.peer.pid
    );
    if !agent.approvals_mut().answer(id, Verdict::Approved(by)) {
        return Err(not_waiting(id));
    }
    tracing::info!(
        approval = id,
        pid = session.peer.pid,
        "approved with 'jitc approve'"
    );
    Ok(Response::Done)
}

pub fn deny(agent: &Agent, session: &Session, id: u64) -> Reply {
    let by = format!(
        "by {} (pid {})",
        session.peer.exe.as_deref().unwrap_or("?"),
        session.peer.pid
    );
    let verdict = Verdict::Denied("denied with 'jitc deny'".into(), Some(by));
    if !agent.approvals_mut().answer(id, verdict) {
        return Err(not_waiting(id));
    }
    Ok(Response::Done)
}

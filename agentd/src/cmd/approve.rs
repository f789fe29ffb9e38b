//! `ListPending`, `Approve` and `Deny`: the human's side of approval at the moment of
//! use. Approving takes the vault passphrase (slowed down when wrong, like `unlock`)
//! and is refused to the requesting process and everything it started.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{ErrorCode, Response, SecretBytes};

use crate::agent::{Agent, Session};
use crate::approval::Verdict;
use crate::audit::Event;
use crate::clock::boot_now;
use crate::error::{Refusal, Reply};

pub fn pending(agent: &Agent, after: u64) -> Reply {
    let (items, more) = agent
        .approvals_mut()
        .page(after, super::leases::PAGE_BYTES, boot_now());
    Ok(Response::Pending { items, more })
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
        agent.raise(
            agent.detector().self_approval(id, approver_pid, p.pid),
            Event {
                approval: Some(id),
                ..Event::default().peer(agent.hiding_passphrases(session, &[passphrase.expose()]))
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
    let failed = Event {
        approval: Some(id),
        ..Event::new(EventKind::ApproveFailed)
    };
    super::confirm_passphrase(agent, session, passphrase, failed).await?;
    let by = format!(
        "approved with 'jitc approve' by {}",
        session.shown_requester()
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
    let by = format!("by {}", session.shown_requester());
    let verdict = Verdict::Denied("denied with 'jitc deny'".into(), Some(by));
    if !agent.approvals_mut().answer(id, verdict) {
        return Err(not_waiting(id));
    }
    Ok(Response::Done)
}

//! `Lease` and `Release`: open the named values for one command, and record who holds
//! them until the command ends.

use std::time::{Duration, Instant, SystemTime};

use jitc_protocol::{ErrorCode, LeaseGrant, LeaseRequest, LeasedValue, Response};

use crate::agent::{Agent, Session};
use crate::error::{Refusal, Reply};
use crate::leases::Lease;

/// Until policy sets one, a lease is granted for this long.
const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);

pub async fn apply(agent: &Agent, session: &mut Session, req: LeaseRequest) -> Reply {
    if req.secrets.is_empty() {
        return Err(Refusal::bad_input(
            "a lease needs at least one secret; name one with -s NAME or -e VAR=NAME",
        ));
    }
    for name in &req.secrets {
        super::check_name(name)?;
    }
    let slot = agent.unlocked().await?;
    let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
    let mut values = Vec::with_capacity(req.secrets.len());
    for name in &req.secrets {
        let value = vault
            .open_value(name)
            .map_err(|e| Refusal::from_vault(&agent.vault_file, e))?;
        values.push(LeasedValue {
            name: name.clone(),
            value,
        });
    }
    let ttl = req.ttl_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TTL);
    let mut leases = agent.leases_mut();
    let id = leases.next_id();
    tracing::info!(
        lease = id,
        secrets = ?req.secrets,
        command = %req.command.path,
        pid = session.peer.pid,
        "lease granted"
    );
    leases.insert(Lease {
        id,
        secrets: req.secrets,
        command: req.command,
        task: req.task,
        peer: session.peer.clone(),
        started: Instant::now(),
        started_at: SystemTime::now(),
        holder: session.pushes.clone(),
    });
    drop(leases);
    // Held until the lease is in the table, so a concurrent lock ends it too.
    drop(slot);
    session.leases.push(id);
    Ok(Response::Leased(LeaseGrant {
        lease: id,
        values,
        expires_in_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    }))
}

pub fn release(agent: &Agent, session: &mut Session, id: u64) -> Reply {
    let Some(at) = session.leases.iter().position(|l| *l == id) else {
        return Err(Refusal::new(
            ErrorCode::Failure,
            format!("this connection holds no lease {id}"),
        ));
    };
    session.leases.swap_remove(at);
    if agent.leases_mut().remove(id).is_some() {
        tracing::info!(lease = id, "lease released");
    }
    agent.idle.touch();
    Ok(Response::Done)
}

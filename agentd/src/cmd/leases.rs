//! `ListLeases` and `Revoke`: what is leased now, and ending it early.

use jitc_protocol::{ErrorCode, Response};

use crate::agent::Agent;
use crate::error::{Refusal, Reply};

pub fn list(agent: &Agent) -> Reply {
    Ok(Response::Leases(agent.leases_mut().infos()))
}

/// Ends one lease (or all); each holder is told and stops its command.
pub fn revoke(agent: &Agent, lease: Option<u64>) -> Reply {
    const REASON: &str = "the lease was revoked with 'jitc revoke'";
    let count = match lease {
        Some(id) => {
            if !agent.leases_mut().end(id, REASON) {
                return Err(Refusal::new(
                    ErrorCode::Failure,
                    format!("no active lease {id}; see 'jitc leases'"),
                ));
            }
            1
        }
        None => agent.leases_mut().end_all(REASON),
    };
    agent.leases_changed.notify_one();
    tracing::info!(lease = ?lease, count, "leases revoked");
    Ok(Response::Revoked {
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

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
            let Some(lease) = agent.leases_mut().end(id, REASON) else {
                return Err(Refusal::new(
                    ErrorCode::Failure,
                    format!("no active lease {id}; see 'jitc leases'"),
                ));
            };
            agent.record_ended(&lease, REASON);
            1
        }
        None => {
            let ended = agent.leases_mut().end_all(REASON);
            for lease in &ended {
                agent.record_ended(lease, REASON);
            }
            ended.len()
        }
    };
    agent.leases_changed.notify_one();
    tracing::info!(lease = ?lease, count, "leases revoked");
    Ok(Response::Revoked {
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

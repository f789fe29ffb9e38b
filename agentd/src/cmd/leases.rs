//! `ListLeases` and `Revoke`: what is leased now, and ending it early.

use jitc_protocol::{ErrorCode, Response};

use crate::agent::Agent;
use crate::error::{Refusal, Reply};

/// Most bytes of listing per reply, well inside a frame: a longer listing comes in
/// pages.
pub const PAGE_BYTES: usize = 512 << 10;

pub fn list(agent: &Agent, after: u64) -> Reply {
    let (items, more) = agent.leases_mut().page(after, PAGE_BYTES);
    Ok(Response::Leases { items, more })
}

/// Ends one lease (or all); each holder is told and stops its command — or the agent
/// stops it, if the holder does not.
pub fn revoke(agent: &Agent, lease: Option<u64>) -> Reply {
    const REASON: &str = "the lease was revoked with 'jitc revoke'";
    let ended = match lease {
        Some(id) => match agent.leases_mut().end(id, REASON) {
            Some(l) => vec![l],
            None => {
                return Err(Refusal::new(
                    ErrorCode::Failure,
                    format!("no active lease {id}; see 'jitc leases'"),
                ));
            }
        },
        None => agent.leases_mut().end_all(REASON),
    };
    let count = ended.len();
    agent.ended_by_agent(ended, REASON);
    agent.leases_changed().notify_one();
    tracing::info!(lease = ?lease, count, "leases revoked");
    Ok(Response::Revoked {
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

//! `ListLeases` and `Revoke`: what is leased now, and ending it early.

use jitc_protocol::{ErrorCode, Response};

use crate::agent::{Agent, Session};
use crate::error::{Refusal, Reply};
use crate::leases::Lease;

/// Most bytes of listing per reply, well inside a frame: a longer listing comes in
/// pages.
pub const PAGE_BYTES: usize = 512 << 10;

/// The leases `session` may see and end: every lease from outside a sandbox; from
/// inside one, only that sandbox's own.
fn visible_to(session: &Session) -> impl Fn(&Lease) -> bool + use<> {
    let mine = session.sandbox_id();
    move |l: &Lease| mine.is_none() || l.sandbox == mine
}

pub fn list(agent: &Agent, session: &Session, after: u64) -> Reply {
    let (items, more) = agent
        .leases_mut()
        .page(after, PAGE_BYTES, visible_to(session));
    Ok(Response::Leases { items, more })
}

/// Ends one lease (or all that `session` may end); each holder is told and stops its
/// command — or the agent stops it, if the holder does not.
pub fn revoke(agent: &Agent, session: &Session, lease: Option<u64>) -> Reply {
    const REASON: &str = "the lease was revoked with 'jitc revoke'";
    let visible = visible_to(session);
    let ended = match lease {
        Some(id) => {
            let mut leases = agent.leases_mut();
            match leases
                .has(id, &visible)
                .then(|| leases.end(id, REASON))
                .flatten()
            {
                Some(l) => vec![l],
                None => {
                    return Err(Refusal::new(
                        ErrorCode::Failure,
                        format!("no active lease {id}; see 'jitc leases'"),
                    ));
                }
            }
        }
        None if session.sandbox.is_none() => agent.leases_mut().end_all(REASON),
        None => {
            let mut leases = agent.leases_mut();
            let ids = leases.ids(&visible);
            ids.into_iter()
                .filter_map(|id| leases.end(id, REASON))
                .collect()
        }
    };
    let count = ended.len();
    agent.ended_by_agent(ended, REASON);
    agent.leases_changed().notify_one();
    tracing::info!(lease = ?lease, count, "leases revoked");
    Ok(Response::Revoked {
        count: u32::try_from(count).unwrap_or(u32::MAX),
    })
}

//! `Lock`: wipe the key and every value from memory and end every lease. `Stop`: shut
//! the agent down (as `ssh-agent -k`).

use jitc_protocol::Response;

use crate::agent::{Agent, Session};
use crate::error::Reply;

pub async fn apply(agent: &Agent) -> Reply {
    agent.lock("the vault was locked").await;
    Ok(Response::Done)
}

/// Answers, then the server shuts down cleanly: leases end (their holders told), the
/// vault locks, the socket goes away, and the `stop` record says who asked.
pub fn stop(agent: &Agent, session: &Session) -> Reply {
    tracing::info!(pid = session.peer.pid, "stop requested");
    agent.request_stop(format!(
        "stopped with 'jitc stop' by {}",
        session.shown_requester()
    ));
    Ok(Response::Done)
}

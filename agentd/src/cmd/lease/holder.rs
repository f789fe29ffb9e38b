//! What the holder of a lease says afterwards: `Release` and `Guard`.

use crate::agent::{Agent, Session};

/// Releases a lease this connection holds. One-way: there is no answer (the holder is
/// done with it either way, and closing the connection releases it too), which keeps a
/// lease to one round trip.
pub fn release(agent: &Agent, session: &mut Session, id: u64) {
    let Some(at) = session.leases.iter().position(|l| *l == id) else {
        tracing::debug!(
            lease = id,
            "release of a lease this connection does not hold"
        );
        return;
    };
    session.leases.swap_remove(at);
    let ended = agent.leases_mut().remove(id);
    if let Some(lease) = ended {
        tracing::debug!(lease = id, "lease released");
        agent.record_ended(&lease, "released by its holder");
    }
    agent.idle().touch();
}

/// The holder of lease `id` started its command: the process groups its children lead
/// are the command's, for the agent to stop if the holder cannot. One-way, like
/// `release`.
pub fn guard(agent: &Agent, session: &mut Session, id: u64) {
    if !session.leases.contains(&id) {
        tracing::debug!(lease = id, "guard of a lease this connection does not hold");
        return;
    }
    let groups = crate::procs::command_groups(session.peer.pid);
    tracing::debug!(
        lease = id,
        groups = groups.len(),
        "the lease's command started"
    );
    if let Some(lease) = agent.leases_mut().get_mut(id) {
        lease.guards = groups;
    }
}

//! `Status`: what `jitc status` shows.

use jitc_protocol::{AgentStatus, Response};

use crate::agent::{Agent, Session};
use crate::error::Reply;

pub async fn apply(agent: &Agent, session: &Session) -> Reply {
    // A sandbox that has ended is not listed, even when the task that notices ends has
    // not been woken for it yet: its end is recorded now, before the flush.
    for id in agent.sandboxes().exited() {
        agent.sandbox_ended(id);
    }
    // `jitc audit` reads the log after asking this: everything so far is in it.
    agent.audit().flush().await;
    let slot = agent.vault_slot().await;
    let unlocked = slot.as_ref();
    let leases = agent.leases_mut().len();
    let locks_in_secs = unlocked.map(|_| agent.idle().remaining().as_secs());
    Ok(Response::Status(AgentStatus {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        socket: agent.config().socket.display().to_string(),
        vault: agent.vault_file().path().display().to_string(),
        vault_exists: agent.vault_file().exists(),
        locked: unlocked.is_none(),
        secrets: unlocked.map(|v| u32::try_from(v.len()).unwrap_or(u32::MAX)),
        leases: u32::try_from(leases).unwrap_or(u32::MAX),
        idle_lock_secs: agent.idle().timeout().as_secs(),
        locks_in_secs,
        memory_locked: unlocked.is_some_and(|v| v.memory_locked()),
        unlock_failures: agent.failures(),
        pending: u32::try_from(agent.approvals_mut().len()).unwrap_or(u32::MAX),
        policy: agent.policy_state(),
        audit: agent.audit().state(),
        exe: std::env::current_exe()
            .ok()
            .map(|p| p.display().to_string()),
        sandboxes: agent.sandboxes().list(),
        caller_sandbox: session.sandbox_id(),
        gateway: agent.gateway().listening().map(|a| a.to_string()),
        backend_recovered: agent.backends().recovery().0,
        backend_unrevoked: agent.backends().recovery().1,
        backends: agent
            .policy()
            .map(|p| p.backends.iter().map(|b| b.name.clone()).collect())
            .unwrap_or_default(),
        process: crate::hardening::state(),
    }))
}

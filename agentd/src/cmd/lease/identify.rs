//! Stage 2, `identify`: who asks — the process chain, and the profile the policy gives
//! it. The place a sandbox identity and backends plug in.

use std::sync::Arc;

use jitc_protocol::ProcessInfo;

use crate::agent::{Agent, Session};
use crate::error::Refusal;
use crate::policy::Policy;

/// Who asks, as the policy sees it.
pub struct Identity {
    pub policy: Result<Arc<Policy>, Refusal>,
    pub chain: Arc<[ProcessInfo]>,
    pub profile: Option<String>,
    /// Index in the chain of the process that gave the profile.
    pub anchor: Option<usize>,
}

/// The requester's chain and the profile it runs under.
pub fn identify(agent: &Agent, session: &mut Session) -> Identity {
    let chain = session.chain();
    let policy = agent.policy();
    let (profile, anchor) = match policy.as_ref().ok().and_then(|p| p.profile_for(&chain)) {
        Some((p, i)) => (Some(p), Some(i)),
        None => (None, None),
    };
    Identity {
        policy,
        chain,
        profile,
        anchor,
    }
}

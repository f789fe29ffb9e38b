//! Stage 2, `identify`: who asks — the process chain, and the profile it runs under:
//! its sandbox's, whatever its ancestry, else the one the policy gives its ancestry (a
//! convenience, not a boundary: a process can leave its ancestry behind).

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
    /// The sandbox that gave the profile.
    pub sandbox: Option<u64>,
}

impl Identity {
    /// Which identity decided the profile, in words (`jitc policy explain`).
    pub fn describe(&self) -> String {
        if let Some(id) = self.sandbox {
            return format!("sandbox {id} (registered by 'jitc sandbox'; it cannot be shed)");
        }
        match (&self.profile, self.anchor.and_then(|i| self.chain.get(i))) {
            (Some(profile), Some(p)) => {
                format!(
                    "ancestry: {} ({}) matches profile '{profile}' (a convenience, not a boundary)",
                    jitc_protocol::display::visible(jitc_protocol::display::program_name(p)),
                    p.pid
                )
            }
            _ => "none: no sandbox, and no ancestor matches a profile".to_owned(),
        }
    }
}

/// The requester's chain and the profile it runs under.
pub fn identify(agent: &Agent, session: &mut Session) -> Identity {
    let chain = session.chain();
    let policy = agent.policy();
    if let Some(sandbox) = &session.sandbox {
        return Identity {
            policy,
            chain,
            profile: Some(sandbox.profile().to_owned()),
            anchor: None,
            sandbox: Some(sandbox.id()),
        };
    }
    let (profile, anchor) = match policy.as_ref().ok().and_then(|p| p.profile_for(&chain)) {
        Some((p, i)) => (Some(p), Some(i)),
        None => (None, None),
    };
    Identity {
        policy,
        chain,
        profile,
        anchor,
        sandbox: None,
    }
}

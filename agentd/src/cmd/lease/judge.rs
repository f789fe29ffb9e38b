//! Stage 4, `judge`: the policy's verdict, the argv check, the masking floor, the cap.

use std::sync::Arc;

use jitc_protocol::{ErrorCode, LeaseRequest};

use super::*;
use crate::agent::{Agent, Session};
use crate::approval::MemoryKey;
use crate::audit::Event;
use crate::clock::boot_now;
use crate::error::Refusal;
use crate::policy::{Approval, Decision, Policy};

/// What the policy decided.
pub struct Judged {
    pub policy: Arc<Policy>,
    pub decision: Decision,
    pub remembered: bool,
}

/// The policy's decision for `req` from `who` (without leasing anything; `jitc policy
/// explain` asks this too).
pub fn decide(agent: &Agent, req: &LeaseRequest, who: &Identity) -> Result<Judged, Refusal> {
    let policy = match &who.policy {
        Ok(p) => p.clone(),
        Err(r) => return Err(Refusal::new(r.code, r.message.clone())),
    };
    let decision = policy.decide(req, who.profile.as_deref());
    let remembered = decision.approval == Approval::OncePerTask
        && agent.approvals_mut().is_remembered(
            &MemoryKey::new(
                req.task.as_deref(),
                &req.secrets,
                who.profile.as_deref(),
                &req.command.path,
            ),
            boot_now(),
        );
    Ok(Judged {
        policy,
        decision,
        remembered,
    })
}

/// The policy's verdict (a broken policy refuses everything), then the request's
/// strings against every value, the masking floor, and the lease cap.
pub(super) fn judge(
    agent: &Agent,
    session: &Session,
    req: &LeaseRequest,
    who: &Identity,
    screened: &Screened,
) -> Result<Judged, Denial> {
    let base = &screened.base;
    let judged = decide(agent, req, who).map_err(|r| Denial::plain(r, base))?;
    working_hours(agent, &judged.policy, base);
    if let Some(why) = &judged.decision.refusal {
        // It may quote the command path: recorded concealed, or not at all where a
        // value was found in the request (its position would answer a guess).
        let refusal = Refusal::new(ErrorCode::Refused, format!("refused: {why}"));
        let reason = if screened.withheld {
            "refused by the policy (its reason quotes a command line that held a value of a secret, so it is withheld)".to_owned()
        } else {
            screened.needles.conceal(why)
        };
        return Err(Denial::new(refusal, base, reason));
    }
    if let Err(r) = &screened.strings {
        return Err(Denial::plain(Refusal::new(r.code, r.message.clone()), base));
    }
    check_masking(&screened.values, judged.decision.masking_required)
        .map_err(|r| Denial::plain(r, base))?;
    check_lease_cap(agent, session.peer.uid, &judged.policy).map_err(|r| Denial::plain(r, base))?;
    Ok(judged)
}

/// Refuses a lease past the policy's `max_leases` for this user (75: try later).
pub(super) fn check_lease_cap(agent: &Agent, uid: u32, policy: &Policy) -> Result<(), Refusal> {
    let max = policy.defaults.max_leases as usize;
    if agent.leases_mut().count_for(uid) >= max {
        return Err(Refusal::busy(format!(
            "{max} leases are active already (the policy's max_leases); let some end, or revoke them with 'jitc revoke', then try again"
        )));
    }
    Ok(())
}

/// A request outside the policy's working hours is an anomaly (once in a while).
pub(super) fn working_hours(agent: &Agent, policy: &Policy, base: &Event) {
    let Some((text, hours)) = &policy.defaults.working_hours else {
        return;
    };
    let now = crate::policy::hours::local_now();
    // The secrets as recorded (names the vault does not hold left out).
    let found = agent
        .detector()
        .outside_hours(&base.secrets, (text, hours), now);
    agent.raise_if(found, base);
}

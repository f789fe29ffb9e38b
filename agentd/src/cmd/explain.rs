//! `Explain`: what the policy would decide for a request from this process, and why,
//! without leasing anything or asking anyone. `PolicyReset`: accept that the policy
//! that was in force is gone.

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{ErrorCode, Explanation, LeaseRequest, Response, SecretBytes};

use super::lease::{decide, identify};
use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};
use crate::policy::Approval;

pub async fn apply(agent: &Agent, session: &mut Session, req: LeaseRequest) -> Reply {
    for name in &req.secrets {
        super::check_lease_name(name)?;
    }
    // Which names the vault does not hold (a policy would grant a lease that then
    // fails): known only while it is unlocked.
    let (unknown, locked) = match agent.unlocked().await {
        Ok(slot) => match slot.as_ref() {
            Some(v) => (
                req.secrets
                    .iter()
                    .filter(|n| !v.contains(n) && !jitc_protocol::names::is_backend_ref(n))
                    .cloned()
                    .collect(),
                false,
            ),
            None => (Vec::new(), true),
        },
        Err(_) => (Vec::new(), true),
    };
    let who = identify(agent, session);
    // The chain as records show it: a passphrase an ancestor carried stays concealed.
    agent.screen_passphrases(session);
    let shown = session.shown_chain().to_vec();
    let policy = agent.policy_state();
    let judged = match decide(agent, &req, &who) {
        Ok(j) => j,
        Err(refusal) => {
            // A broken (or vanished) policy refuses everything; say so rather than
            // fail the explanation.
            return Ok(Response::Explanation(Explanation {
                refusal: Some(refusal.message.trim_start_matches("refused: ").to_owned()),
                policy,
                profile: None,
                identity: who.describe(),
                chain: shown,
                command: req.command.path.clone(),
                verdicts: Vec::new(),
                approval: Approval::Never.as_str().into(),
                ttl_secs: 0,
                max_ttl_secs: 0,
                masking_required: false,
                unknown,
                locked,
            }));
        }
    };
    let d = &judged.decision;
    let approval = if judged.remembered {
        "remembered".to_owned()
    } else {
        d.approval.as_str().to_owned()
    };
    Ok(Response::Explanation(Explanation {
        policy,
        profile: who.profile.clone(),
        identity: who.describe(),
        chain: shown,
        command: req.command.path.clone(),
        verdicts: d.verdicts.clone(),
        refusal: d.refusal.clone(),
        approval,
        ttl_secs: d.ttl.as_secs(),
        max_ttl_secs: d.max_ttl.as_secs(),
        masking_required: d.masking_required,
        unknown,
        locked,
    }))
}

/// The policy that was in force is gone, and a human accepts that: the defaults apply
/// again (until a policy file is there once more). Needs the vault passphrase.
pub async fn reset(agent: &Agent, session: &mut Session, passphrase: SecretBytes) -> Reply {
    let failed = Event::new(EventKind::PolicyResetFailed);
    let peer = super::confirm_passphrase(agent, session, passphrase, failed).await?;
    if agent.policy_path().exists() {
        return Err(Refusal::new(
            ErrorCode::Failure,
            format!(
                "the policy at {} is there: nothing to reset (edit or remove it; removing it then needs 'jitc policy reset')",
                agent.policy_path().display()
            ),
        ));
    }
    let mut slot = agent.unlocked().await?;
    let vault = slot.as_mut().ok_or_else(Refusal::locked)?;
    agent
        .audit()
        .record(
            Event::new(EventKind::PolicyReset)
                .peer(peer)
                .reason("the policy that was in force is gone; the defaults apply (accepted with the vault passphrase)"),
        )
        .await?;
    agent.forget_policy();
    agent.save_checkpoint(vault).await?;
    tracing::warn!("policy reset: the defaults apply");
    Ok(Response::Done)
}

//! `Explain`: what the policy would decide for a request from this process, and why,
//! without leasing anything or asking anyone.

use jitc_protocol::{Explanation, LeaseRequest, Response};

use super::lease::judge;
use crate::agent::{Agent, Session};
use crate::error::Reply;
use crate::policy::Approval;

pub fn apply(agent: &Agent, session: &mut Session, req: LeaseRequest) -> Reply {
    let policy = agent.policy.state();
    if policy.error.is_some() {
        // A broken policy refuses everything; say so rather than fail the explanation.
        return Ok(Response::Explanation(Explanation {
            refusal: policy.error.clone(),
            policy,
            profile: None,
            chain: session.chain().to_vec(),
            command: req.command.path,
            verdicts: Vec::new(),
            approval: Approval::Never.as_str().into(),
            ttl_secs: 0,
            max_ttl_secs: 0,
            masking_required: false,
        }));
    }
    let judged = judge(agent, session, &req)?;
    let d = &judged.decision;
    let approval = if judged.remembered {
        "remembered".to_owned()
    } else {
        d.approval.as_str().to_owned()
    };
    Ok(Response::Explanation(Explanation {
        policy,
        profile: judged.profile.clone(),
        chain: judged.chain.to_vec(),
        command: req.command.path,
        verdicts: d.verdicts.clone(),
        refusal: d.refusal.clone(),
        approval,
        ttl_secs: d.ttl.as_secs(),
        max_ttl_secs: d.max_ttl.as_secs(),
        masking_required: d.masking_required,
    }))
}

//! `Lease`, `Release` and `Guard`. A lease request goes through stages, each of which
//! may refuse it:
//!
//! 1. `intake` — its form: names, task, size (a malformed request is refused, but
//!    recorded only once its values can be concealed);
//! 2. `identify` — who asks: the process chain, and the profile the policy gives it;
//! 3. `screen` — the vault opened: names it does not hold, canaries (a honeytoken is
//!    served like any secret, and the request is an anomaly), and the request's strings
//!    checked against every value in the vault; the record every later stage writes is
//!    made here, with values concealed;
//! 4. `judge` — the policy's verdict, the argv check, the masking floor, the lease cap;
//! 5. `approve` — a human, where the policy asks for one;
//! 6. `open` — the values (again, if a human was asked: they may have changed);
//! 7. `grant` — on record first, then in the lease table, then to the requester.
//!
//! Every refusal is a `Denial`: recorded and answered in one place, `deny`.

mod approve;
mod fetch;
mod grant;
mod holder;
mod identify;
mod intake;
mod judge;
mod open;
mod screen;
#[cfg(test)]
mod tests;

use approve::*;
use fetch::*;
use grant::*;
pub use holder::{guard, release};
pub use identify::{Identity, identify};
use intake::*;
use jitc_protocol::kinds::EventKind;
use judge::*;
pub use judge::{Judged, decide};
use open::*;
use screen::*;

use jitc_protocol::{LeaseRequest, Response};

use crate::agent::{Agent, Session};
use crate::audit::{Event, Needles};
use crate::error::{Refusal, Reply};
/// Longest task text kept (it is shown in prompts and listings).
const MAX_TASK_LEN: usize = 512;
/// Most bytes of command line (path, arguments, directory, task) a request may carry.
pub const MAX_COMMAND_BYTES: usize = 256 << 10;
/// Most secrets one lease may name.
const MAX_SECRETS: usize = 256;

/// How a malformed request's refusal is recorded (what it sent may be anything).
const MALFORMED: &str = "malformed request: a secret name that breaks the naming rules, or a task that is not one line of at most 512 bytes";
/// How a refusal for a name the vault does not hold is recorded.
const UNKNOWN_NAME: &str = "no secret by a name given (names not in the vault are not recorded: one could be a value given by mistake)";

/// A refused request: what the requester is told, and how it is recorded.
pub struct Denial {
    pub(super) refusal: Refusal,
    /// Boxed: an event is large, and every stage returns `Result<_, Denial>`.
    pub(super) record: Option<Box<(Event, String)>>,
}

impl Denial {
    /// Refused with `refusal`, recorded as `base` with `reason`.
    fn new(refusal: Refusal, base: &Event, reason: impl Into<String>) -> Denial {
        Denial {
            refusal,
            record: Some(Box::new((base.clone(), reason.into()))),
        }
    }

    /// Refused with `refusal`, recorded with its own message as the reason.
    fn plain(refusal: Refusal, base: &Event) -> Denial {
        let reason = refusal.message.clone();
        Denial::new(refusal, base, reason)
    }

    /// Refused, and nothing more can be recorded (the audit log is failing).
    fn unrecorded(refusal: Refusal) -> Denial {
        Denial {
            refusal,
            record: None,
        }
    }
}

pub async fn apply(agent: &Agent, session: &mut Session, req: LeaseRequest) -> Reply {
    match lease(agent, session, &req).await {
        Ok(r) => Ok(r),
        Err(denial) => Err(deny(agent, session, denial).await),
    }
}

async fn lease(
    agent: &Agent,
    session: &mut Session,
    req: &LeaseRequest,
) -> Result<Response, Denial> {
    let malformed = intake(req).err();
    let who = identify(agent, session);
    let mut screened = screen(agent, session, req, &who, malformed).await?;
    let judged = judge(agent, session, req, &who, &screened)?;
    let values = std::mem::take(&mut screened.values);
    let mut values =
        match approve(agent, session, req, &who, &screened.base, &judged, values).await? {
            Some(v) => v,
            None => open(agent, req, &screened.base, &judged).await?,
        };
    let fetched = fetch(agent, req, &screened.base, &judged, &mut values).await?;
    // The masking floor holds for what the backends gave too (a refusal here drops
    // `fetched`: its dynamic secrets are revoked).
    check_masking(&values, judged.decision.masking_required)
        .map_err(|r| Denial::plain(r, &screened.base))?;
    let leased = Leased { values, fetched };
    grant(agent, session, req, &who, &screened.base, &judged, leased).await
}

/// Records a refusal (waiting for it to be on disk: if it cannot be, that is the
/// answer) and counts it towards the repeated-denials anomaly.
async fn deny(agent: &Agent, session: &mut Session, denial: Denial) -> Refusal {
    let Some(record) = denial.record else {
        return denial.refusal;
    };
    let (base, reason) = *record;
    tracing::warn!(pid = session.peer.pid, reason, "lease refused");
    let recorded = agent
        .audit()
        .record(
            Event {
                decision: Some("denied"),
                ..Event::new(EventKind::LeaseDenied).reason(reason)
            }
            .merge(&base),
        )
        .await;
    if denial.refusal.kind != crate::error::RefusalKind::Busy {
        agent.denied(base);
    }
    match recorded {
        Ok(()) => denial.refusal,
        Err(audit) => audit,
    }
}

//! `RegisterSandbox`, and what a peer inside a sandbox may not ask.
//!
//! Inside a sandbox a peer may query (`status`, `ls`, its own `leases`, `policy
//! explain`), lease, and revoke its own leases. Everything that changes the vault, the
//! policy or the agent, every approval, and registering a sandbox needs a peer outside.

use std::sync::Arc;

use jitc_protocol::kinds::EventKind;
use jitc_protocol::{ErrorCode, Request, Response, SandboxRequest};

use crate::agent::{Agent, Session};
use crate::audit::Event;
use crate::error::{Refusal, Reply};
use crate::sandbox::{RefusalRecord, Registration};

/// The profile a sandbox gets when `jitc sandbox` names none.
pub const DEFAULT_PROFILE: &str = "agent";

/// Most bytes of a sandbox's command line kept (for records and `jitc status`).
const MAX_COMMAND: usize = 4096;

/// What `request` would do, in words, if a sandboxed peer may not ask it; `None` if it
/// may.
pub fn forbidden(request: &Request) -> Option<&'static str> {
    Some(match request {
        Request::Hello(_)
        | Request::Status
        | Request::ListSecrets { .. }
        | Request::Lease(_)
        | Request::Release { .. }
        | Request::Guard { .. }
        | Request::ListLeases { .. }
        | Request::Revoke { .. }
        | Request::Explain(_)
        | Request::RequestSecret(_)
        | Request::ListRequested
        | Request::ListBackend { .. }
        // Always asks a human first.
        | Request::ImportSecrets(_) => return None,
        Request::Init { .. } => "create a vault",
        Request::Unlock { .. } => "unlock the vault",
        Request::Lock => "lock the vault",
        Request::AddSecret(_) => "add or replace a secret",
        Request::AddSecrets(_) => "add or replace secrets",
        Request::RemoveSecret { .. } => "remove a secret",
        Request::Rename { .. } => "rename a secret",
        Request::Describe { .. } => "change a secret's description",
        Request::Passwd { .. } => "change the vault passphrase",
        Request::ListPending { .. } => "list the requests waiting for approval",
        Request::Approve { .. } => "approve a request",
        Request::Deny { .. } => "deny a request",
        Request::AuditVerify => "check the audit log",
        Request::AuditAccept { .. } => "accept the audit log",
        Request::Stop => "stop the agent",
        Request::PolicyReset { .. } => "reset the policy",
        Request::RegisterSandbox(_) => "register a sandbox",
    })
}

/// Refuses `request` (`what` it would do) from a peer inside `sandbox`, on record; an
/// approval from inside is also a `self_approval` anomaly.
pub fn refuse_inside(
    agent: &Agent,
    session: &mut Session,
    sandbox: &Arc<Registration>,
    request: &Request,
    what: &str,
) -> Refusal {
    let id = sandbox.id();
    let profile = sandbox.profile().to_owned();
    let refusal = Refusal::new(
        ErrorCode::Refused,
        format!(
            "refused: a program inside sandbox {id} (profile '{profile}') cannot {what}; do it from outside the sandbox"
        ),
    );
    // A program that floods refusals must not push the log's history out.
    let unrecorded_before = match sandbox.refused() {
        RefusalRecord::Record { unrecorded_before } => unrecorded_before,
        RefusalRecord::Count => return refusal,
    };
    let base = Event {
        profile: Some(profile),
        ..Event::default().peer(session.peer_json())
    };
    let more = if unrecorded_before > 0 {
        format!(
            " ({unrecorded_before} more refusals from inside it in the minute before were counted, not recorded one by one)"
        )
    } else {
        String::new()
    };
    agent.audit().record_later(
        Event {
            reason: Some(format!(
                "a program inside sandbox {id} asked to {what}; refused{more}"
            )),
            ..Event::new(EventKind::SandboxRefused)
        }
        .merge(&base),
    );
    if let Request::Approve { id: request_id, .. } = request {
        agent.raise(
            agent
                .detector()
                .approval_from_sandbox(*request_id, session.peer.pid, id),
            base,
        );
    }
    tracing::info!(
        sandbox = id,
        pid = session.peer.pid,
        what,
        "refused a request from inside a sandbox"
    );
    refusal
}

/// Registers the sandbox `jitc sandbox` just made, on record before the answer (the
/// program inside starts only after it).
pub async fn register(agent: &Agent, session: &mut Session, mut req: SandboxRequest) -> Reply {
    check_profile(agent, &req.profile)?;
    req.command = bounded(&req.command);
    let reg = agent.sandboxes().register(&session.peer, req)?;
    let info = reg.info.clone();
    let recorded = agent
        .audit()
        .record(Event {
            profile: Some(info.profile.clone()),
            argv: Some(info.command.clone()),
            reason: Some(format!(
                "sandbox {} started (its first process is pid {})",
                info.id, info.pid
            )),
            ..Event::new(EventKind::SandboxStarted).peer(session.peer_json())
        })
        .await;
    if let Err(refusal) = recorded {
        agent.sandboxes().end(info.id);
        return Err(refusal);
    }
    session.registered_sandbox = true;
    tracing::info!(sandbox = info.id, pid = info.pid, profile = %info.profile, "sandbox registered");
    Ok(Response::SandboxRegistered(info))
}

/// A sandbox's profile must be one the policy knows (a typo would fall back to the
/// defaults, which are meant for the human): `agent`, or one under `[profiles]`.
fn check_profile(agent: &Agent, profile: &str) -> Result<(), Refusal> {
    let valid = !profile.is_empty()
        && profile.len() <= 64
        && profile
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(Refusal::bad_input(format!(
            "bad profile name '{}'; use letters, digits, '-' and '_'",
            jitc_protocol::display::visible(profile)
        )));
    }
    if profile == DEFAULT_PROFILE {
        return Ok(());
    }
    let policy = agent.policy()?;
    if policy.profiles.iter().any(|p| p.name == profile) {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::Failure,
            format!(
                "no profile '{profile}' in the policy; define [profiles.{profile}] in {}",
                agent.policy_path().display()
            ),
        ))
    }
}

/// `argv` cut to `MAX_COMMAND` bytes, the cut marked.
fn bounded(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for (i, a) in argv.iter().enumerate() {
        if total + a.len() > MAX_COMMAND {
            out.push(format!("… ({} more arguments)", argv.len() - i));
            break;
        }
        total += a.len();
        out.push(a.clone());
    }
    out
}

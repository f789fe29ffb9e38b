//! Stage 5, `approve`: a human, where the policy asks for one (the waiting itself is
//! `approval::ask`).

use std::path::Path;

use jitc_protocol::{LeaseRequest, LeasedValue, Scope};

use super::*;
use crate::agent::{Agent, Session};
use crate::approval::{self, Ask, MemoryKey};
use crate::audit::Event;
use crate::clock::boot_now;
use crate::policy::Approval;

/// What a human approving this request should know about its command: an argv[0]
/// that names another program than the one that runs, a program in a directory the
/// requester can write (outside the usual places for programs).
pub fn warnings(req: &LeaseRequest, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let path = Path::new(&req.command.path);
    fn base(p: &str) -> &str {
        p.rsplit('/').next().unwrap_or(p)
    }
    if let Some(first) = req.command.argv.first()
        && base(first) != base(&req.command.path)
    {
        out.push(format!(
            "argv[0] says '{}', but the program that runs is {}",
            base(first),
            req.command.path
        ));
    }
    if let Some(dir) = path.parent() {
        const SYSTEM: [&str; 6] = [
            "/usr/bin",
            "/bin",
            "/usr/sbin",
            "/sbin",
            "/usr/local/bin",
            "/usr/local/sbin",
        ];
        const IN_HOME: [&str; 4] = [".local/bin", "bin", ".cargo/bin", "go/bin"];
        let usual = SYSTEM.iter().any(|u| dir == Path::new(u))
            || home().is_some_and(|home| {
                dir.strip_prefix(home)
                    .is_ok_and(|rel| IN_HOME.iter().any(|u| rel == Path::new(u)))
            });
        // The usual directories first: they need no look at the disk.
        let writable = || {
            std::fs::metadata(dir)
                .is_ok_and(|m| (m.uid() == uid && m.mode() & 0o200 != 0) || m.mode() & 0o002 != 0)
        };
        if !usual && writable() {
            out.push(format!(
                "the program is in {}, a directory the requester can write: it runs whatever was put there",
                dir.display()
            ));
        }
    }
    out
}

/// The agent's home directory, looked up once (every grant asks).
fn home() -> Option<&'static Path> {
    static HOME: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    HOME.get_or_init(|| directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()))
        .as_deref()
}

/// Asks a human where the policy says so. The values are not held while anyone waits:
/// `None` then, and `open` opens them again; otherwise the values as screened.
pub(super) async fn approve(
    agent: &Agent,
    session: &mut Session,
    req: &LeaseRequest,
    who: &Identity,
    base: &Event,
    judged: &Judged,
    values: Vec<LeasedValue>,
) -> Result<Option<Vec<LeasedValue>>, Denial> {
    let needs = match judged.decision.approval {
        Approval::Never => false,
        Approval::OncePerTask => !judged.remembered,
        Approval::Always => true,
    };
    if !needs {
        return Ok(Some(values));
    }
    drop(values);
    let mut requesters = vec![session.peer.pid];
    if let Some(anchor) = who.anchor.and_then(|i| who.chain.get(i)) {
        requesters.push(anchor.pid);
    }
    let scope = Scope {
        warnings: warnings(req, session.peer.uid),
        ..Scope::new(
            req,
            session.peer.pid,
            &session.shown_chain(),
            who.profile.as_deref(),
        )
    };
    let asked = approval::ask(
        agent,
        session,
        Ask {
            action: "lease".into(),
            scope,
            requesters,
            defaults: &judged.policy.defaults,
            base,
        },
    )
    .await;
    if let Err(refusal) = asked {
        return Err(if refusal.is_audit_unavailable() {
            Denial::unrecorded(refusal)
        } else {
            Denial::plain(refusal, base)
        });
    }
    if judged.decision.approval == Approval::OncePerTask {
        agent.approvals_mut().remember(
            MemoryKey::new(
                req.task.as_deref(),
                &req.secrets,
                who.profile.as_deref(),
                &req.command.path,
            ),
            boot_now() + judged.policy.defaults.approval_memory,
        );
    }
    Ok(None)
}

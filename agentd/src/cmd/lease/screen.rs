//! Stage 3, `screen`: the vault opened — names it does not hold, canaries, and the
//! request's strings and the requester's chain checked against every value in the
//! vault; the record every later stage writes is made here. A value found anywhere
//! refuses the request, and its record then carries no command line at all: concealing
//! the value where it stood would tell which of a requester's strings was one.

use std::sync::Arc;

use jitc_protocol::{ErrorCode, LeaseRequest, LeasedValue};
use zeroize::Zeroizing;

use super::*;
use crate::agent::{Agent, Session};
use crate::audit::{Event, Reach, nul_joined};
use crate::error::Refusal;
use crate::vault::Vault;

/// What the screen found, and the record every later stage writes.
pub(super) struct Screened {
    /// Who asked, for what: the request's strings and the requester's chain with every
    /// value found in them concealed.
    pub(super) base: Event,
    /// The requested values, opened (they are dropped before anything waits).
    pub(super) values: Vec<LeasedValue>,
    /// Unknown names, to conceal a refusal's text with.
    pub(super) needles: Needles,
    /// A value was found: the record carries no command line, and no refusal's text
    /// that could quote one.
    pub(super) withheld: bool,
    /// The refusal the request's strings earn (a value in argv, task or path), decided
    /// after the policy's.
    pub(super) strings: Result<(), Refusal>,
}

/// The request's own strings (command path, argv, task), each between NUL bytes.
pub(super) fn request_hay(req: &LeaseRequest) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(nul_joined(
        std::iter::once(&req.command.path)
            .chain(&req.command.argv)
            .chain(req.task.as_ref()),
    ))
}

/// A record of a request whose values could not be opened (the vault is locked): who
/// asked (executables and pids), without the names, command, argv and task (or the
/// requester's command lines) that could hold a value nobody can conceal.
pub(super) fn withheld_event(session: &mut Session, profile: Option<String>) -> Event {
    let chain = session.chain();
    Event {
        profile,
        withheld: Some(crate::audit::LOCKED_WITHHELD),
        ..Event::default().peer(crate::audit::PeerJson::without_argv(&session.peer, &chain))
    }
}

/// Opens the requested values and looks for every value of the vault in what the
/// requester supplied; makes the record. Refuses a malformed request, a locked vault,
/// and a name the vault does not hold — in that order, and before anything looks at
/// the names (the policy, the anomalies), so none of them quotes one. A canary is
/// noticed here (an anomaly) and then served like any secret.
pub(super) async fn screen(
    agent: &Agent,
    session: &mut Session,
    req: &LeaseRequest,
    who: &Identity,
    malformed: Option<(Refusal, String)>,
) -> Result<Screened, Denial> {
    let mut slot = match agent.unlocked().await {
        Ok(s) => s,
        Err(locked) => {
            // No value is at hand to conceal, so nothing that could hold one is recorded.
            let base = withheld_event(session, who.profile.clone());
            let (refusal, reason) = match malformed {
                Some(m) => m,
                None => {
                    let reason = locked.message.clone();
                    (locked, reason)
                }
            };
            return Err(Denial::new(refusal, &base, reason));
        }
    };
    let Some(vault) = slot.as_mut() else {
        let base = withheld_event(session, who.profile.clone());
        return Err(Denial::plain(agent.locked_refusal(), &base));
    };
    agent.persist_bookkeeping(vault).await;
    let mut values = Vec::with_capacity(req.secrets.len());
    let mut canaries = Vec::new();
    let mut unknown = Vec::new();
    let mut missing: Option<(Refusal, String)> = None;
    // Backend references are read later (`fetch`), once the policy has let them through.
    for name in req
        .secrets
        .iter()
        .filter(|n| !jitc_protocol::names::is_backend_ref(n))
    {
        if vault.is_canary(name) {
            canaries.push(name.clone());
        }
        match vault.open_value(name) {
            Ok(value) => values.push(LeasedValue {
                name: name.clone(),
                value,
            }),
            Err(e) => {
                let is_unknown = matches!(e, crate::vault::VaultError::NoSuchSecret(_));
                let refusal = Refusal::from_vault(agent.vault_file(), e);
                let recorded = if is_unknown {
                    unknown.push(name.clone());
                    UNKNOWN_NAME.to_owned()
                } else {
                    refusal.message.clone()
                };
                missing.get_or_insert((refusal, recorded));
            }
        }
    }
    // Every value of the vault that occurs in the request's strings or in the
    // requester's chain (a shell that ran `jitc` with one in its own command line).
    let req_hay = request_hay(req);
    let needles = Needles::new(unknown);
    let in_request = vault.screen(&req_hay);
    let mut strings = check_request_strings(vault, req, &in_request);
    let in_chain = session.found_by(vault.fingerprints());
    let in_chain = confirmed(vault, &session.haystack(), &in_chain);
    drop(slot);
    if strings.is_ok() && in_chain {
        strings = Err(Refusal::new(
            ErrorCode::Refused,
            "refused: the command line of this process or of one of its ancestors holds the value of a secret in the vault (or an encoding of it); a value on a command line shows in ps and shell history — start the command from a shell that does not carry one",
        ));
    }
    let withheld = strings.is_err();
    agent.screen_passphrases(session);
    if withheld {
        session.withhold();
    } else {
        session.conceal(&needles.list(), Reach::Whole);
    }
    // The request as recorded: names the vault does not hold (those that break the rules
    // among them) are left out, and so is a task that is not one line — and, where a
    // value was found, every command line.
    let mut base = Event {
        profile: who.profile.clone(),
        ..Event::default().peer(session.peer_json()).request(req)
    };
    base.secrets.retain(|n| !needles.unknown.contains(n));
    if req.task.as_deref().is_some_and(bad_task) {
        base.task = None;
    }
    if withheld {
        base.withhold_request();
    } else if !needles.unknown.is_empty() {
        base.conceal(&needles.list(), Reach::Whole);
    }
    // A canary is noticed whatever refuses the request (asking for it is the tell), and
    // a request that goes on is served like any (the decoy like a real secret).
    if !canaries.is_empty() {
        let who_asked = session
            .peer
            .exe
            .as_deref()
            .filter(|_| !withheld)
            .map(|exe| needles.conceal(exe))
            .unwrap_or_else(|| format!("pid {}", session.peer.pid));
        let found = agent
            .detector()
            .canary(&canaries, &who_asked, session.peer.pid);
        agent.raise(found, base.clone());
    }
    if let Some((refusal, reason)) = malformed {
        return Err(Denial::new(refusal, &base, reason));
    }
    if let Some((refusal, reason)) = missing {
        return Err(Denial::new(refusal, &base, reason));
    }
    Ok(Screened {
        base,
        values,
        needles,
        withheld,
        strings,
    })
}

/// Whether one of the `candidates` the screen found in `hay` really is there: the value,
/// or a form of it, opened to check.
fn confirmed(vault: &Vault, hay: &[u8], candidates: &[Arc<str>]) -> bool {
    candidates.iter().any(|name| {
        vault.open_value(name).is_ok_and(|value| {
            crate::vault::screen::forms(value.expose())
                .iter()
                .any(|f| memchr::memmem::find(hay, f).is_some())
        })
    })
}

/// Refuses a request whose strings hold a value of the vault — any secret's, leased
/// or not — or one of the forms its output is masked in: a value typed on a command
/// line lands in shell history, `ps` and the agent's transcript; in `--task` it would be
/// shown in prompts and listings. `found` are the vault screen's candidates in the
/// request's strings, each confirmed here by opening that value.
pub(super) fn check_request_strings(
    vault: &Vault,
    req: &LeaseRequest,
    found: &[Arc<str>],
) -> Result<(), Refusal> {
    for name in found {
        let Ok(value) = vault.open_value(name) else {
            continue;
        };
        // Named only if the request names it: otherwise the refusal would tell the
        // requester which secret its string is the value of.
        let name = if req.secrets.iter().any(|n| **n == **name) {
            format!("'{name}'")
        } else {
            "a secret in the vault".to_owned()
        };
        let forms = crate::vault::screen::forms(value.expose());
        let holds = |text: &str| {
            forms
                .iter()
                .any(|f| memchr::memmem::find(text.as_bytes(), f).is_some())
        };
        if holds(&req.command.path) {
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: the command's path contains the value of {name} (or an encoding of it); rename it"
                ),
            ));
        }
        if req.task.as_deref().is_some_and(holds) {
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: the --task text contains the value of {name} (or an encoding of it); it would be shown in prompts, listings and the audit log — describe the task instead"
                ),
            ));
        }
        // Not which argument: with a guess in each, that would say which was right.
        if req.command.argv.iter().any(|a| holds(a)) {
            tracing::warn!("lease refused: a value is on the command line");
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: an argument of the command contains the value of {name} (or an encoding of it); a value on a command line lands in shell history, in ps and in the agent's transcript, so pass it with -s, -e, --file or --env-file instead"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a value too short to mask where the policy requires masking.
pub(super) fn check_masking(values: &[LeasedValue], masking_required: bool) -> Result<(), Refusal> {
    use jitc_protocol::names::MIN_MASKED_LEN;
    match values.iter().find(|v| v.value.len() < MIN_MASKED_LEN) {
        Some(v) if masking_required => Err(Refusal::new(
            ErrorCode::Refused,
            format!(
                "refused: the policy requires masking, but '{}' is shorter than {MIN_MASKED_LEN} bytes and cannot be masked",
                v.name
            ),
        )),
        _ => Ok(()),
    }
}

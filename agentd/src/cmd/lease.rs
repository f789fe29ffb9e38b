//! `Lease` and `Release`: judge a request by the policy, wait for a human where the
//! policy says so, then open the named values for one command and record who holds
//! them until the command ends or the lease expires.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jitc_protocol::{
    ErrorCode, LeaseGrant, LeaseRequest, LeasedValue, PendingInfo, ProcessInfo, Response, Scope,
    Waiting,
};

use crate::agent::{Agent, Session};
use crate::approval::{MemoryKey, Verdict};
use crate::audit::{Concealed, Event};
use crate::clock::boot_now;
use crate::error::{Refusal, Reply};
use crate::leases::Lease;
use crate::policy::{Approval, Decision, Policy};
use zeroize::Zeroizing;

/// Longest task text kept (it is shown in prompts and listings).
const MAX_TASK_LEN: usize = 512;

/// Everything the policy needs to know about a request and who made it.
pub struct Judged {
    pub policy: Arc<Policy>,
    pub decision: Decision,
    pub profile: Option<String>,
    /// Index in the chain of the process that gave the profile.
    pub anchor: Option<usize>,
    pub chain: Arc<[ProcessInfo]>,
    pub remembered: bool,
}

/// Checks a request's form, then judges it by the policy (without leasing anything).
pub fn judge(agent: &Agent, session: &mut Session, req: &LeaseRequest) -> Result<Judged, Refusal> {
    if req.secrets.is_empty() {
        return Err(Refusal::bad_input(
            "a lease needs at least one secret; name one with -s NAME or -e VAR=NAME",
        ));
    }
    for name in &req.secrets {
        super::check_name(name)?;
    }
    if req.task.as_deref().is_some_and(bad_task) {
        return Err(Refusal::bad_input(format!(
            "--task must be one line of at most {MAX_TASK_LEN} bytes"
        )));
    }
    let policy = agent.policy()?;
    let chain = session.chain();
    let (profile, anchor) = match policy.profile_for(&chain) {
        Some((p, i)) => (Some(p), Some(i)),
        None => (None, None),
    };
    let decision = policy.decide(req, profile.as_deref());
    let remembered = decision.approval == Approval::OncePerTask
        && agent.approvals_mut().is_remembered(
            &MemoryKey::new(req.task.as_deref(), &req.secrets, profile.as_deref()),
            boot_now(),
        );
    Ok(Judged {
        policy,
        decision,
        profile,
        anchor,
        chain,
        remembered,
    })
}

/// The values a request names, opened to check it and to keep them out of every record
/// about it; dropped again before anything waits.
struct Opened {
    values: Vec<LeasedValue>,
    canaries: Vec<String>,
    /// The first name the vault does not hold (or cannot open), refused, and how the
    /// refusal is recorded; the others are opened all the same, to be concealed and to
    /// find every canary.
    missing: Option<(Refusal, String)>,
    /// Names the vault does not hold: not recorded, since one could be a value given
    /// where a name goes (recording it, or hiding only a name that is some value, would
    /// leak it or tell a reader of the log that it is one).
    unknown: Vec<String>,
}

/// How a refusal for a name the vault does not hold is recorded.
const UNKNOWN_NAME: &str = "no secret by a name given (names not in the vault are not recorded: one could be a value given by mistake)";

async fn open_values(agent: &Agent, req: &LeaseRequest) -> Result<Opened, Refusal> {
    let mut slot = agent.unlocked().await?;
    let vault = slot.as_mut().ok_or_else(Refusal::locked)?;
    let mut opened = Opened {
        values: Vec::with_capacity(req.secrets.len()),
        canaries: Vec::new(),
        missing: None,
        unknown: Vec::new(),
    };
    for name in &req.secrets {
        if vault.is_canary(name) {
            opened.canaries.push(name.clone());
        }
        match vault.open_value(name) {
            Ok(value) => opened.values.push(LeasedValue {
                name: name.clone(),
                value,
            }),
            Err(e) => {
                let unknown = matches!(e, crate::vault::VaultError::NoSuchSecret(_));
                let refusal = Refusal::from_vault(&agent.vault_file, e);
                let recorded = if unknown {
                    opened.unknown.push(name.clone());
                    UNKNOWN_NAME.to_owned()
                } else {
                    refusal.message.clone()
                };
                opened.missing.get_or_insert((refusal, recorded));
            }
        }
    }
    Ok(opened)
}

/// The values as a record could show them: their bytes, their encodings (base64, hex,
/// percent, JSON: the forms output is masked in), and for a value that is not UTF-8,
/// the form a command line read from `/proc` takes (invalid bytes replaced).
/// Names the vault does not hold are concealed too (as `<concealed:unknown name>`):
/// one could be a value given where a name goes, and concealing every one of them
/// tells a reader of the log nothing about which.
struct Needles<'a> {
    values: &'a [LeasedValue],
    forms: Vec<(&'a str, Zeroizing<Vec<u8>>)>,
    unknown: &'a [String],
}

/// The encodings of a value long enough to mask (the forms output is masked in), the
/// value itself left out; wiped when dropped.
fn encoded_forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    if value.len() < jitc_protocol::names::MIN_MASKED_LEN {
        return Vec::new();
    }
    jitc_protocol::encodings::encodings(value)
        .into_iter()
        .map(Zeroizing::new)
        .filter(|f| f.as_slice() != value)
        .collect()
}

/// The label unknown names are concealed under.
const UNKNOWN_LABEL: &str = "unknown name";

impl<'a> Needles<'a> {
    fn new(values: &'a [LeasedValue], unknown: &'a [String]) -> Needles<'a> {
        let mut forms = Vec::new();
        for v in values {
            let value = v.value.expose();
            if std::str::from_utf8(value).is_err() {
                let shown = String::from_utf8_lossy(value).into_owned().into_bytes();
                forms.push((v.name.as_str(), Zeroizing::new(shown)));
            }
            forms.extend(
                encoded_forms(value)
                    .into_iter()
                    .map(|f| (v.name.as_str(), f)),
            );
        }
        Needles {
            values,
            forms,
            unknown,
        }
    }

    fn list(&self) -> Vec<Concealed<'_>> {
        self.values
            .iter()
            .map(|v| (v.name.as_str(), v.value.expose()))
            .chain(self.forms.iter().map(|(n, f)| (*n, f.as_slice())))
            .chain(self.unknown.iter().map(|n| (UNKNOWN_LABEL, n.as_bytes())))
            .collect()
    }

    /// `text` with every needle concealed.
    fn conceal(&self, text: &str) -> String {
        crate::audit::conceal(text, &self.list()).unwrap_or_else(|| text.to_owned())
    }
}

/// What every record about this request carries: who asked, for what, under which
/// profile — with the leased values concealed wherever the request or the requester's
/// command lines could hold one.
fn base_event(
    session: &mut Session,
    req: &LeaseRequest,
    profile: Option<String>,
    needles: &Needles<'_>,
) -> Event {
    let mut base = Event {
        profile,
        ..Event::default().peer(session.peer_json()).request(req)
    };
    let chain = session.chain();
    let haystack = session.haystack();
    base.conceal(&session.peer, &chain, &haystack, &needles.list());
    base
}

/// How a malformed request's refusal is recorded.
const MALFORMED: &str = "malformed request: a secret name that breaks the naming rules, or a task that is not one line of at most 512 bytes";

/// A task text that is not one line of at most `MAX_TASK_LEN` bytes.
fn bad_task(t: &str) -> bool {
    t.len() > MAX_TASK_LEN || t.chars().any(char::is_control)
}

/// A record of a request whose values could not be opened (the vault is locked): who
/// asked (executables and pids), without the names, command, argv and task (or the
/// requester's command lines) that could hold a value nobody can conceal — a name
/// cannot even be checked against the vault's.
fn withheld_event(session: &mut Session, profile: Option<String>) -> Event {
    let chain = session.chain();
    Event {
        profile,
        withheld: Some(
            "secret names, command, argv and task: the vault was locked, so values could not be concealed",
        ),
        ..Event::default().peer(crate::audit::PeerJson::without_argv(&session.peer, &chain))
    }
}

pub async fn apply(agent: &Agent, session: &mut Session, req: LeaseRequest) -> Reply {
    // A malformed request or a broken policy refuses the request, but only after it
    // is recorded like any other, values concealed and canaries noticed.
    let judged = judge(agent, session, &req);
    let malformed = matches!(&judged, Err(r) if r.code == ErrorCode::DataErr);
    // What a refusal of the request as a whole is recorded as: the reply to a
    // malformed one quotes what was sent, which may be anything.
    let recorded_reason = |refusal: &Refusal| {
        if malformed {
            MALFORMED.to_owned()
        } else {
            refusal.message.clone()
        }
    };
    let profile = judged.as_ref().ok().and_then(|j| j.profile.clone());
    let mut opened = match open_values(agent, &req).await {
        Ok(o) => o,
        Err(refusal) => {
            // Locked: no value is at hand to conceal, so nothing that could hold one
            // is recorded.
            let base = withheld_event(session, profile);
            let refusal = judged.err().unwrap_or(refusal);
            let reason = recorded_reason(&refusal);
            return Err(deny(agent, session, &base, &reason, refusal).await);
        }
    };
    // The request as recorded: names the vault does not hold (those that break the
    // rules among them) are left out, and so is a task that is not one line.
    let recorded;
    let shown = if opened.unknown.is_empty() && !malformed {
        &req
    } else {
        let mut r = req.clone();
        r.secrets.retain(|n| !opened.unknown.contains(n));
        if r.task.as_deref().is_some_and(bad_task) {
            r.task = None;
        }
        recorded = r;
        &recorded
    };
    let needles = Needles::new(&opened.values, &opened.unknown);
    let base = base_event(session, shown, profile, &needles);
    let canaries = std::mem::take(&mut opened.canaries);
    if !canaries.is_empty() {
        let who = session
            .peer
            .exe
            .as_deref()
            .map(|exe| needles.conceal(exe))
            .unwrap_or_else(|| format!("pid {}", session.peer.pid));
        agent.anomaly(
            "canary",
            format!(
                "canary secret {} requested by {who} (pid {})",
                canaries.join(", "),
                session.peer.pid
            ),
            base.clone(),
        );
    }
    // A policy refusal may quote the command or a name: recorded concealed.
    let policy_refusal = judged
        .as_ref()
        .ok()
        .and_then(|j| j.decision.refusal.as_deref())
        .map(|why| (why.to_owned(), needles.conceal(why)));
    let masking_required = judged.as_ref().is_ok_and(|j| j.decision.masking_required);
    let checked = check_values(&req, &opened.values, &needles, masking_required);
    drop(needles);
    let judged = match judged {
        Ok(j) => j,
        Err(refusal) => {
            drop(opened.values);
            let reason = recorded_reason(&refusal);
            return Err(deny(agent, session, &base, &reason, refusal).await);
        }
    };
    // A name the vault does not hold is refused before anything else looks at the
    // names (the policy, the anomalies), so none of them quotes it.
    if let Some((refusal, reason)) = opened.missing.take() {
        drop(opened.values);
        return Err(deny(agent, session, &base, &reason, refusal).await);
    }
    let mut values = Some(opened.values);
    if let Some((text, hours)) = &judged.policy.defaults.working_hours {
        let (day, minute) = crate::anomaly::local_now();
        if !hours.contains(day, minute)
            && agent.first_in_a_while("outside_working_hours", &req.secrets.join(","))
        {
            agent.anomaly(
                "outside_working_hours",
                format!(
                    "{} requested at {:02}:{:02} on {}, outside working hours ({text})",
                    req.secrets.join(", "),
                    minute / 60,
                    minute % 60,
                    [
                        "Sunday",
                        "Monday",
                        "Tuesday",
                        "Wednesday",
                        "Thursday",
                        "Friday",
                        "Saturday"
                    ][usize::from(day % 7)]
                ),
                base.clone(),
            );
        }
    }
    if let Some((why, recorded)) = policy_refusal {
        let refusal = Refusal::new(ErrorCode::Refused, format!("refused: {why}"));
        return Err(deny(agent, session, &base, &recorded, refusal).await);
    }
    if !canaries.is_empty() {
        // A decoy (on record above): refused like any refusal, revealing nothing —
        // after the policy's refusal and with the value check's, as another secret
        // would be.
        if let Err(refusal) = checked {
            return Err(deny(agent, session, &base, &refusal.message.clone(), refusal).await);
        }
        return Err(deny(
            agent,
            session,
            &base,
            "canary",
            Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: '{}' is not available to this command",
                    canaries[0]
                ),
            ),
        )
        .await);
    }
    // A value on the command line is refused before anyone is asked to approve it.
    if let Err(refusal) = checked {
        return Err(deny(agent, session, &base, &refusal.message.clone(), refusal).await);
    }
    let needs_approval = match judged.decision.approval {
        Approval::Never => false,
        Approval::OncePerTask => !judged.remembered,
        Approval::Always => true,
    };
    if needs_approval {
        // Nothing waits for a human with a value open: the grant opens them again.
        values = None;
        if let Err(refusal) = await_approval(agent, session, &req, &judged, &base).await {
            if refusal.message.starts_with("audit log unavailable") {
                return Err(refusal);
            }
            return Err(deny(agent, session, &base, &refusal.message.clone(), refusal).await);
        }
        if judged.decision.approval == Approval::OncePerTask {
            agent.approvals_mut().remember(
                MemoryKey::new(req.task.as_deref(), &req.secrets, judged.profile.as_deref()),
                boot_now() + judged.policy.defaults.approval_memory,
            );
        }
    }
    grant(agent, session, req, &judged, base, values).await
}

/// Records a refused lease (waiting for it to be on disk: if it cannot be, that is the
/// answer) and counts it towards the repeated-denials anomaly.
async fn deny(
    agent: &Agent,
    session: &mut Session,
    base: &Event,
    reason: &str,
    refusal: Refusal,
) -> Refusal {
    tracing::warn!(pid = session.peer.pid, reason, "lease refused");
    let recorded = agent
        .audit
        .record(
            Event {
                decision: Some("denied"),
                ..Event::new("lease_denied").reason(reason)
            }
            .merge(base),
        )
        .await;
    agent.denied(base.clone());
    match recorded {
        Ok(()) => refusal,
        Err(audit) => audit,
    }
}

/// Records the grant (on disk before the values leave) and enters the lease in the
/// table — unless the vault was locked meanwhile (the epoch moved). `checked_values`
/// are the values already opened and checked, if nothing waited since; otherwise they
/// are opened and checked again. Its refusals are recorded here.
async fn grant(
    agent: &Agent,
    session: &mut Session,
    req: LeaseRequest,
    judged: &Judged,
    mut base: Event,
    checked_values: Option<Vec<LeasedValue>>,
) -> Reply {
    let values = match checked_values {
        Some(v) => v,
        None => {
            let opened = match open_values(agent, &req).await {
                Ok(o) => o,
                Err(refusal) => {
                    return Err(
                        deny(agent, session, &base, &refusal.message.clone(), refusal).await,
                    );
                }
            };
            // The values may have been replaced while a human was asked: check them
            // again, and conceal the ones that are leased now.
            let chain = session.chain();
            let haystack = session.haystack();
            let needles = Needles::new(&opened.values, &opened.unknown);
            base.conceal(&session.peer, &chain, &haystack, &needles.list());
            let checked = match opened.missing {
                Some(m) => Err(m),
                None => check_values(
                    &req,
                    &opened.values,
                    &needles,
                    judged.decision.masking_required,
                )
                .map_err(|r| {
                    let m = r.message.clone();
                    (r, m)
                }),
            };
            drop(needles);
            if let Err((refusal, reason)) = checked {
                drop(opened.values);
                return Err(deny(agent, session, &base, &reason, refusal).await);
            }
            opened.values
        }
    };
    let (new_uses, id, epoch) = {
        let slot = agent.unlocked().await?;
        let vault = slot.as_ref().ok_or_else(Refusal::locked)?;
        let new_uses: Vec<String> = req
            .secrets
            .iter()
            .filter(|s| vault.is_new_use(s, &req.command.path))
            .cloned()
            .collect();
        let mut leases = agent.leases_mut();
        (new_uses, leases.next_id(), leases.epoch)
    };
    let ttl = judged.decision.ttl;
    let granted = Event {
        lease: Some(id),
        ttl_secs: Some(ttl.as_secs()),
        decision: Some("granted"),
        ..Event::new("lease_granted").merge(&base)
    };
    agent.audit.record(granted).await?;
    let earliest = {
        let mut leases = agent.leases_mut();
        if leases.epoch != epoch {
            drop(leases);
            // On record as granted, so on record as ended, too.
            agent.audit.record_later(Event {
                lease: Some(id),
                ..Event::new("lease_ended")
                    .reason("the vault was locked before the lease began")
                    .merge(&base)
            });
            return Err(agent.locked_refusal());
        }
        tracing::debug!(lease = id, secrets = ?req.secrets, command = %req.command.path, "lease granted");
        leases.insert(Lease {
            id,
            request: req.clone(),
            pid: session.peer.pid,
            chain: judged.chain.clone(),
            profile: judged.profile.clone(),
            ttl,
            started_at: SystemTime::now(),
            expires: boot_now() + ttl,
            holder: session.pushes.clone(),
        })
    };
    if earliest {
        agent.leases_changed.notify_one();
    }
    session.leases.push(id);
    for secret in &note_uses(agent, &new_uses, &req.command.path).await {
        agent.anomaly(
            "new_executable",
            format!("first use of '{secret}' by {}", req.command.path),
            base.clone(),
        );
    }
    let limit = judged.policy.defaults.burst_per_minute;
    for secret in &req.secrets {
        let burst = agent
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .grant(secret, limit, std::time::Instant::now());
        if burst {
            agent.anomaly(
                "burst",
                format!("more than {limit} leases of '{secret}' within a minute"),
                base.clone(),
            );
        }
    }
    Ok(Response::Leased(LeaseGrant {
        lease: id,
        values,
        expires_in_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    }))
}

/// Remembers (in the vault, across restarts) that these secrets went to `exe`, once
/// the grant is on record: those that had never gone there before.
async fn note_uses(agent: &Agent, secrets: &[String], exe: &str) -> Vec<String> {
    if secrets.is_empty() {
        return Vec::new();
    }
    // Locked since the grant: the values went out all the same, so say so (it is
    // remembered next time).
    let Ok(mut slot) = agent.unlocked().await else {
        return secrets.to_vec();
    };
    let Some(vault) = slot.as_mut() else {
        return secrets.to_vec();
    };
    let fresh: Vec<String> = secrets
        .iter()
        .filter(|s| vault.first_use(s, exe))
        .cloned()
        .collect();
    // A failed save only means the anomaly may be raised once more.
    if !fresh.is_empty()
        && let Err(e) = agent.save_checkpoint(vault).await
    {
        tracing::warn!(error = %e.message, "cannot save the first-use record");
    }
    fresh
}

/// Refuses a lease whose values would leak by the way they are used: one typed on the
/// command line (argv lands in shell history, `ps` and the agent's transcript), or
/// one too short to mask when the policy requires masking.
fn check_values(
    req: &LeaseRequest,
    values: &[LeasedValue],
    needles: &Needles<'_>,
    masking_required: bool,
) -> Result<(), Refusal> {
    use jitc_protocol::names::MIN_MASKED_LEN;
    // One look at all of the request's strings first: nearly always nothing is there.
    let hay = crate::audit::nul_joined(
        std::iter::once(&req.command.path)
            .chain(&req.command.argv)
            .chain(req.task.as_ref()),
    );
    let needles = needles.list();
    let suspect = |name: &str| {
        needles
            .iter()
            .filter(|(n, _)| *n == name)
            .any(|(_, f)| crate::audit::occurs(&hay, f))
    };
    for v in values {
        let value = v.value.expose();
        if masking_required && value.len() < MIN_MASKED_LEN {
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: the policy requires masking, but '{}' is shorter than {MIN_MASKED_LEN} bytes and cannot be masked",
                    v.name
                ),
            ));
        }
        if !suspect(&v.name) {
            continue;
        }
        // The value, or one of the encodings its output is masked in: where?
        let forms: Vec<&[u8]> = needles
            .iter()
            .filter(|(n, _)| *n == v.name)
            .map(|(_, f)| *f)
            .collect();
        let holds = |text: &str| {
            value.len() >= MIN_MASKED_LEN
                && forms
                    .iter()
                    .any(|f| memchr::memmem::find(text.as_bytes(), f).is_some())
        };
        let found = req
            .command
            .argv
            .iter()
            .enumerate()
            .find(|(_, arg)| holds(arg) || arg.as_bytes() == value);
        if holds(&req.command.path) {
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: the command's path contains the value of '{}' (or an encoding of it); rename it",
                    v.name
                ),
            ));
        }
        if req.task.as_deref().is_some_and(holds) {
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: the --task text contains the value of '{}' (or an encoding of it); it would be shown in prompts, listings and the audit log — describe the task instead",
                    v.name
                ),
            ));
        }
        if let Some((i, _)) = found {
            tracing::warn!(secret = %v.name, argument = i, "lease refused: the value is on the command line");
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: argument {i} of the command contains the value of '{}' (or an encoding of it); a value on a command line lands in shell history, in ps and in the agent's transcript, so pass it with -s, -e, --file or --env-file instead",
                    v.name
                ),
            ));
        }
    }
    Ok(())
}

/// Removes a waiting request from `jitc pending` however the wait ends (answered,
/// timed out, or the requester hung up and this future was dropped).
struct Registered<'a> {
    agent: &'a Agent,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.agent.approvals_mut().remove(self.id);
    }
}

/// The approver's prompt: who asks, for what, to do what.
fn prompt(id: u64, req: &LeaseRequest, judged: &Judged) -> String {
    let chain: Vec<String> = judged
        .chain
        .iter()
        .take(6)
        .map(|p| {
            let name = p
                .argv
                .first()
                .or(p.exe.as_ref())
                .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
                .unwrap_or_else(|| "?".into());
            format!("{name} ({})", p.pid)
        })
        .collect();
    format!(
        "jitc: allow this command to use secrets?\n\ncommand:  {}\nsecrets:  {}\ntask:     {}\nasked by: {}\nprofile:  {}\n\n(request {id}; or run 'jitc approve {id}' / 'jitc deny {id}')",
        req.command.argv.join(" "),
        req.secrets.join(", "),
        req.task.as_deref().unwrap_or("(none given)"),
        chain.join(" ← "),
        judged.profile.as_deref().unwrap_or("(none)"),
    )
}

/// Puts the request in `jitc pending`, tells the requester it waits, asks the approver
/// program if there is one, and waits for the first answer or the timeout.
async fn await_approval(
    agent: &Agent,
    session: &mut Session,
    req: &LeaseRequest,
    judged: &Judged,
    base: &Event,
) -> Result<(), Refusal> {
    let defaults = &judged.policy.defaults;
    let timeout = defaults.approval_timeout;
    let mut requesters = vec![session.peer.pid];
    if let Some(anchor) = judged.anchor.and_then(|i| judged.chain.get(i)) {
        requesters.push(anchor.pid);
    }
    let info = PendingInfo {
        id: 0,
        scope: Scope::new(
            req,
            session.peer.pid,
            &judged.chain,
            judged.profile.as_deref(),
        ),
        requested: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        expires_in_secs: timeout.as_secs(),
    };
    let (id, answer) = agent
        .approvals_mut()
        .register(info, requesters, boot_now() + timeout);
    let _registered = Registered { agent, id };
    let approver = defaults.approver.clone();
    let _ = session.pushes.send(Response::Waiting(Waiting {
        id,
        approver: approver.as_ref().and_then(|a| a.first().cloned()),
        timeout_secs: timeout.as_secs(),
    }));
    tracing::info!(
        approval = id,
        secrets = ?req.secrets,
        command = %req.command.path,
        pid = session.peer.pid,
        profile = ?judged.profile,
        "approval requested"
    );
    let approval_event = |kind: &'static str, reason: Option<String>| Event {
        approval: Some(id),
        reason,
        ..Event::new(kind).merge(base)
    };
    agent
        .audit
        .record_later(approval_event("approval_requested", None));
    let mut asked = approver.as_ref().and_then(|argv| {
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .arg(prompt(id, req, judged))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        c.spawn()
            .inspect_err(
                |e| tracing::warn!(approver = %argv[0], error = %e, "cannot run the approver"),
            )
            .ok()
    });
    let approver_answer = async {
        match asked.as_mut() {
            Some(child) => child.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    let verdict = tokio::select! {
        v = answer => v.unwrap_or_else(|_| Verdict::Denied("the request was withdrawn".into(), None)),
        status = approver_answer => match status {
            Some(s) if s.success() => Verdict::Approved(format!(
                "approved by {}",
                approver.as_ref().map_or("the approver", |a| a[0].as_str())
            )),
            _ => Verdict::Denied(
                format!(
                    "{} said no",
                    approver.as_ref().map_or("the approver", |a| a[0].as_str())
                ),
                None,
            ),
        },
        () = tokio::time::sleep(timeout) => {
            tracing::warn!(approval = id, "approval timed out");
            agent.audit.record_later(approval_event("approval_timed_out", None));
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "approval timed out after {}; while a command waits, list requests with 'jitc pending' and approve with 'jitc approve ID'",
                    humantime::format_duration(timeout)
                ),
            ));
        }
    };
    // The approver, if still running, is killed as `asked` drops.
    match verdict {
        Verdict::Approved(by) => {
            tracing::info!(approval = id, "approval granted");
            // On record before it counts (and before once-per-task remembers it).
            agent
                .audit
                .record(approval_event("approval_granted", Some(by)))
                .await
        }
        Verdict::Denied(why, by) => {
            tracing::warn!(approval = id, reason = %why, "approval denied");
            let recorded = match by {
                Some(by) => format!("{why} {by}"),
                None => why.clone(),
            };
            agent
                .audit
                .record_later(approval_event("approval_denied", Some(recorded)));
            Err(Refusal::new(
                ErrorCode::Refused,
                format!("approval denied: {why}"),
            ))
        }
    }
}

/// Releases a lease this connection holds. One-way: there is no answer (the holder is
/// done with it either way, and closing the connection releases it too), which keeps a
/// lease to one round trip.
pub fn release(agent: &Agent, session: &mut Session, id: u64) {
    let Some(at) = session.leases.iter().position(|l| *l == id) else {
        tracing::debug!(
            lease = id,
            "release of a lease this connection does not hold"
        );
        return;
    };
    session.leases.swap_remove(at);
    let ended = agent.leases_mut().remove(id);
    if let Some(lease) = ended {
        tracing::debug!(lease = id, "lease released");
        agent.record_ended(&lease, "released by its holder");
    }
    agent.idle.touch();
}

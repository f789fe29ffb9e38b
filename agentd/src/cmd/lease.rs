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

use std::sync::Arc;
use std::time::SystemTime;

use jitc_protocol::{
    ErrorCode, LeaseGrant, LeaseRequest, LeasedValue, ProcessInfo, Response, Scope,
};
use zeroize::Zeroizing;

use crate::agent::{Agent, Session};
use crate::approval::{self, Ask, MemoryKey};
use crate::audit::{Concealed, Event, Reach, nul_joined};
use crate::clock::boot_now;
use crate::error::{Refusal, Reply};
use crate::leases::Lease;
use crate::policy::{Approval, Decision, Policy};
use crate::vault::Vault;

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
/// The label unknown names are concealed under.
const UNKNOWN_LABEL: &str = "unknown name";
/// The label the value of a secret the request does not name is concealed under: the
/// log (which anything running as the user can read) must not tell which secret's value
/// a requester's string was — that would answer guesses about secrets it cannot lease.
const OTHER_LABEL: &str = crate::vault::OTHER_SECRET;

/// A refused request: what the requester is told, and how it is recorded.
pub struct Denial {
    refusal: Refusal,
    /// Boxed: an event is large, and every stage returns `Result<_, Denial>`.
    record: Option<Box<(Event, String)>>,
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
    let values = match approve(agent, session, req, &who, &screened.base, &judged, values).await? {
        Some(v) => v,
        None => open(agent, req, &screened.base, &judged).await?,
    };
    grant(agent, session, req, &who, &screened.base, &judged, values).await
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
        .audit
        .record(
            Event {
                decision: Some("denied"),
                ..Event::new("lease_denied").reason(reason)
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

// ---------------------------------------------------------------------------------
// 1. intake

/// A task text that is not one line of at most `MAX_TASK_LEN` bytes.
fn bad_task(t: &str) -> bool {
    t.len() > MAX_TASK_LEN || t.chars().any(char::is_control)
}

/// The request's form: at least one well-formed name, a one-line task, a command line
/// of bounded size.
/// The request's form: at least one and at most `MAX_SECRETS` well-formed names, a
/// one-line task, a command line of bounded size. The refusal, and how it is recorded:
/// a malformed name or task may be anything (a value), so its record says only what
/// kind of fault it was.
fn intake(req: &LeaseRequest) -> Result<(), (Refusal, String)> {
    let recorded = |r: Refusal, how: &str| (r, how.to_owned());
    if req.secrets.is_empty() {
        return Err(recorded(
            Refusal::bad_input(
                "a lease needs at least one secret; name one with -s NAME or -e VAR=NAME",
            ),
            "malformed request: no secret named",
        ));
    }
    if req.secrets.len() > MAX_SECRETS {
        let why = format!(
            "a lease names at most {MAX_SECRETS} secrets, this one {}; split the command's needs",
            req.secrets.len()
        );
        return Err((Refusal::bad_input(why.clone()), why));
    }
    for name in &req.secrets {
        super::check_name(name).map_err(|r| recorded(r, MALFORMED))?;
    }
    if req.task.as_deref().is_some_and(bad_task) {
        return Err(recorded(
            Refusal::bad_input(format!(
                "--task must be one line of at most {MAX_TASK_LEN} bytes"
            )),
            MALFORMED,
        ));
    }
    let size = req.command.path.len()
        + req.command.cwd.len()
        + req.task.as_ref().map_or(0, String::len)
        + req.command.argv.iter().map(|a| a.len() + 1).sum::<usize>();
    if size > MAX_COMMAND_BYTES {
        let why = format!(
            "the command line is {size} bytes; jitc takes at most {} KiB (pass large input on stdin or in a file)",
            MAX_COMMAND_BYTES >> 10
        );
        return Err((Refusal::bad_input(why.clone()), why));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// 2. identify

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

// ---------------------------------------------------------------------------------
// 3. screen

/// What the screen found, and the record every later stage writes.
struct Screened {
    /// Who asked, for what: the request's strings and the requester's chain with every
    /// value found in them concealed.
    base: Event,
    /// The requested values, opened (they are dropped before anything waits).
    values: Vec<LeasedValue>,
    /// The values found in the record, to conceal a refusal's text with.
    needles: Needles,
    /// The refusal the request's strings earn (a value in argv, task or path), decided
    /// after the policy's.
    strings: Result<(), Refusal>,
}

/// Values to conceal in a record: each with the forms its output is masked in.
struct Needles {
    forms: Vec<(String, Zeroizing<Vec<u8>>)>,
    unknown: Vec<String>,
}

impl Needles {
    fn new(unknown: Vec<String>) -> Needles {
        Needles {
            forms: Vec::new(),
            unknown,
        }
    }

    /// Adds `name`'s value: each of its forms, or — too short to mask — the value
    /// itself, concealed only where it is a whole string.
    fn add(&mut self, name: &str, value: &[u8]) {
        if name != OTHER_LABEL && self.forms.iter().any(|(n, _)| n == name) {
            return;
        }
        let forms = crate::vault::screen::forms(value);
        if forms.is_empty() {
            self.forms
                .push((name.to_owned(), Zeroizing::new(value.to_vec())));
        }
        self.forms
            .extend(forms.into_iter().map(|f| (name.to_owned(), f)));
    }

    /// Unknown names first: a string given where a name goes is concealed as one,
    /// whatever else it is.
    fn list(&self) -> Vec<Concealed<'_>> {
        self.unknown
            .iter()
            .map(|n| (UNKNOWN_LABEL, n.as_bytes()))
            .chain(self.forms.iter().map(|(n, f)| (n.as_str(), f.as_slice())))
            .collect()
    }

    fn conceal(&self, text: &str) -> String {
        crate::audit::conceal(text, &self.list(), Reach::Whole).unwrap_or_else(|| text.to_owned())
    }
}

/// The request's own strings (command path, argv, task), each between NUL bytes.
fn request_hay(req: &LeaseRequest) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(nul_joined(
        std::iter::once(&req.command.path)
            .chain(&req.command.argv)
            .chain(req.task.as_ref()),
    ))
}

/// A record of a request whose values could not be opened (the vault is locked): who
/// asked (executables and pids), without the names, command, argv and task (or the
/// requester's command lines) that could hold a value nobody can conceal.
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

/// Opens the requested values and looks for every value of the vault in what the
/// requester supplied; makes the record. Refuses a malformed request, a locked vault,
/// and a name the vault does not hold — in that order, and before anything looks at
/// the names (the policy, the anomalies), so none of them quotes one. A canary is
/// noticed here (an anomaly) and then served like any secret.
async fn screen(
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
    for name in &req.secrets {
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
                let refusal = Refusal::from_vault(&agent.vault_file, e);
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
    // Every value of the vault that occurs in the request or the requester's chain, and
    // the leased ones (an ancestor's argument cut short may end in one's beginning).
    let req_hay = request_hay(req);
    let mut needles = Needles::new(unknown);
    let in_request = vault.screen(&req_hay);
    let strings = check_request_strings(vault, req, &in_request);
    let found: Vec<Arc<str>> = {
        let mut f = in_request;
        for n in session.found_by(vault.fingerprints()) {
            if !f.contains(&n) {
                f.push(n);
            }
        }
        f
    };
    for name in &found {
        if let Ok(value) = vault.open_value(name) {
            let requested = req.secrets.iter().any(|n| **n == **name);
            needles.add(if requested { name } else { OTHER_LABEL }, value.expose());
        }
    }
    drop(slot);
    // Whole occurrences only: this record is written whatever the policy decides. The
    // chain stays concealed for every later record, listing and prompt of the request.
    let list = needles.list();
    agent.screen_passphrases(session);
    session.conceal(&list, Reach::Whole);
    // The request as recorded: names the vault does not hold (those that break the rules
    // among them) are left out, and so is a task that is not one line.
    let mut base = Event {
        profile: who.profile.clone(),
        ..Event::default().peer(session.peer_json()).request(req)
    };
    base.secrets.retain(|n| !needles.unknown.contains(n));
    if req.task.as_deref().is_some_and(bad_task) {
        base.task = None;
    }
    if !list.is_empty() {
        base.conceal(&list, Reach::Whole);
    }
    if !canaries.is_empty() {
        let who_asked = session
            .peer
            .exe
            .as_deref()
            .map(|exe| needles.conceal(exe))
            .unwrap_or_else(|| format!("pid {}", session.peer.pid));
        agent.anomaly(
            "canary",
            format!(
                "canary secret {} requested by {who_asked} (pid {})",
                canaries.join(", "),
                session.peer.pid
            ),
            base.clone(),
        );
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
        strings,
    })
}

/// Refuses a request whose strings hold a value of the vault — any secret's, leased
/// or not — or one of the forms its output is masked in: a value typed on a command
/// line lands in shell history, `ps` and the agent's transcript; in `--task` it would be
/// shown in prompts and listings. `found` are the vault screen's candidates in the
/// request's strings, each confirmed here by opening that value.
fn check_request_strings(
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
        if let Some(i) = req.command.argv.iter().position(|a| holds(a)) {
            tracing::warn!(secret = %name, argument = i, "lease refused: a value is on the command line");
            return Err(Refusal::new(
                ErrorCode::Refused,
                format!(
                    "refused: argument {i} of the command contains the value of {name} (or an encoding of it); a value on a command line lands in shell history, in ps and in the agent's transcript, so pass it with -s, -e, --file or --env-file instead"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a value too short to mask where the policy requires masking.
fn check_masking(values: &[LeasedValue], masking_required: bool) -> Result<(), Refusal> {
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

// ---------------------------------------------------------------------------------
// 4. judge

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
fn judge(
    agent: &Agent,
    session: &Session,
    req: &LeaseRequest,
    who: &Identity,
    screened: &Screened,
) -> Result<Judged, Denial> {
    let base = &screened.base;
    let judged = decide(agent, req, who).map_err(|r| Denial::plain(r, base))?;
    working_hours(agent, req, &judged.policy, base);
    if let Some(why) = &judged.decision.refusal {
        // It may quote the command path: recorded concealed.
        let refusal = Refusal::new(ErrorCode::Refused, format!("refused: {why}"));
        return Err(Denial::new(refusal, base, screened.needles.conceal(why)));
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
fn check_lease_cap(agent: &Agent, uid: u32, policy: &Policy) -> Result<(), Refusal> {
    let max = policy.defaults.max_leases as usize;
    if agent.leases_mut().count_for(uid) >= max {
        return Err(Refusal::busy(format!(
            "{max} leases are active already (the policy's max_leases); let some end, or revoke them with 'jitc revoke', then try again"
        )));
    }
    Ok(())
}

/// A request outside the policy's working hours is an anomaly (once in a while).
fn working_hours(agent: &Agent, req: &LeaseRequest, policy: &Policy, base: &Event) {
    let Some((text, hours)) = &policy.defaults.working_hours else {
        return;
    };
    let (day, minute) = crate::anomaly::local_now();
    if hours.contains(day, minute)
        || !agent.first_in_a_while("outside_working_hours", &req.secrets.join(","))
    {
        return;
    }
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    agent.anomaly(
        "outside_working_hours",
        format!(
            "{} requested at {:02}:{:02} on {}, outside working hours ({text})",
            base.secrets.join(", "),
            minute / 60,
            minute % 60,
            DAYS[usize::from(day % 7)]
        ),
        base.clone(),
    );
}

// ---------------------------------------------------------------------------------
// 5. approve

/// What a human approving this request should know about its command: an argv[0]
/// that names another program than the one that runs, a program in a directory the
/// requester can write (outside the usual places for programs).
pub fn warnings(req: &LeaseRequest, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let path = std::path::Path::new(&req.command.path);
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_owned();
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
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
        let usual: Vec<std::path::PathBuf> = [
            "/usr/bin",
            "/bin",
            "/usr/sbin",
            "/sbin",
            "/usr/local/bin",
            "/usr/local/sbin",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .chain(home.iter().flat_map(|h| {
            [".local/bin", "bin", ".cargo/bin", "go/bin"]
                .iter()
                .map(move |d| h.join(d))
        }))
        .collect();
        let writable = std::fs::metadata(dir)
            .is_ok_and(|m| (m.uid() == uid && m.mode() & 0o200 != 0) || m.mode() & 0o002 != 0);
        if writable && !usual.iter().any(|u| u == dir) {
            out.push(format!(
                "the program is in {}, a directory the requester can write: it runs whatever was put there",
                dir.display()
            ));
        }
    }
    out
}

/// Asks a human where the policy says so. The values are not held while anyone waits:
/// `None` then, and `open` opens them again; otherwise the values as screened.
async fn approve(
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

// ---------------------------------------------------------------------------------
// 6. open

/// Opens the values after a human was asked, and checks the request again: a value
/// may have been replaced (or a secret removed) meanwhile.
async fn open(
    agent: &Agent,
    req: &LeaseRequest,
    base: &Event,
    judged: &Judged,
) -> Result<Vec<LeasedValue>, Denial> {
    let slot = agent.unlocked().await.map_err(|r| Denial::plain(r, base))?;
    let vault = slot
        .as_ref()
        .ok_or_else(|| Denial::plain(agent.locked_refusal(), base))?;
    let mut values = Vec::with_capacity(req.secrets.len());
    for name in &req.secrets {
        match vault.open_value(name) {
            Ok(value) => values.push(LeasedValue {
                name: name.clone(),
                value,
            }),
            Err(e) => {
                let unknown = matches!(e, crate::vault::VaultError::NoSuchSecret(_));
                let refusal = Refusal::from_vault(&agent.vault_file, e);
                return Err(if unknown {
                    Denial::new(refusal, base, UNKNOWN_NAME)
                } else {
                    Denial::plain(refusal, base)
                });
            }
        }
    }
    let found = vault.screen(&request_hay(req));
    check_request_strings(vault, req, &found).map_err(|r| Denial::plain(r, base))?;
    check_masking(&values, judged.decision.masking_required).map_err(|r| Denial::plain(r, base))?;
    drop(slot);
    Ok(values)
}

// ---------------------------------------------------------------------------------
// 7. grant

/// Records the grant (on disk before the values leave) and enters the lease in the
/// table — unless the vault was locked meanwhile (the epoch moved).
async fn grant(
    agent: &Agent,
    session: &mut Session,
    req: &LeaseRequest,
    who: &Identity,
    base: &Event,
    judged: &Judged,
    values: Vec<LeasedValue>,
) -> Result<Response, Denial> {
    let (new_uses, id, epoch) = {
        let slot = agent.unlocked().await.map_err(|r| Denial::plain(r, base))?;
        let vault = slot
            .as_ref()
            .ok_or_else(|| Denial::plain(agent.locked_refusal(), base))?;
        let new_uses: Vec<String> = req
            .secrets
            .iter()
            .filter(|s| vault.is_new_use(s, &req.command.path))
            .cloned()
            .collect();
        check_lease_cap(agent, session.peer.uid, &judged.policy)
            .map_err(|r| Denial::plain(r, base))?;
        let mut leases = agent.leases_mut();
        (new_uses, leases.next_id(), leases.epoch)
    };
    let ttl = judged.decision.ttl;
    let base = &known_concealed(session, base, &values);
    let shown_chain = session.shown_chain();
    let granted = Event {
        lease: Some(id),
        ttl_secs: Some(ttl.as_secs()),
        decision: Some("granted"),
        ..Event::new("lease_granted").merge(base)
    };
    agent
        .audit
        .record(granted)
        .await
        .map_err(Denial::unrecorded)?;
    let earliest = {
        let mut leases = agent.leases_mut();
        if leases.epoch != epoch {
            drop(leases);
            // On record as granted, so on record as ended, too.
            agent.audit.record_later(Event {
                lease: Some(id),
                ..Event::new("lease_ended")
                    .reason("the vault was locked before the lease began")
                    .merge(base)
            });
            return Err(Denial::unrecorded(agent.locked_refusal()));
        }
        tracing::debug!(lease = id, secrets = ?req.secrets, command = %req.command.path, "lease granted");
        leases.insert(Lease {
            id,
            request: crate::leases::bounded(req),
            pid: session.peer.pid,
            uid: session.peer.uid,
            chain: shown_chain,
            profile: who.profile.clone(),
            ttl,
            started_at: SystemTime::now(),
            expires: boot_now() + ttl,
            holder: session.pushes.clone(),
            warnings: warnings(req, session.peer.uid),
            guards: Vec::new(),
        })
    };
    if earliest {
        agent.leases_changed.notify_one();
    }
    session.leases.push(id);
    for secret in &note_uses(agent, &new_uses, &req.command.path).await {
        agent.anomaly(
            "new_executable",
            format!(
                "first use of '{secret}' by {}",
                base.command.as_deref().unwrap_or("?")
            ),
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
        strict_env: judged.decision.strict_env,
    }))
}

/// The record of a grant: the requester receives these values, so there is nothing to
/// learn from concealing them further — a value too short to mask where it is a whole
/// argument, a value's beginning where an argument of the requester's chain was cut.
fn known_concealed(session: &mut Session, base: &Event, values: &[LeasedValue]) -> Event {
    // Whole occurrences of values long enough to mask are concealed already (the
    // screen found them): only a short value or an argument cut short can add anything.
    let hay = session.haystack();
    let asked = nul_joined(
        [&base.task, &base.command]
            .into_iter()
            .flatten()
            .chain(base.argv.iter().flatten()),
    );
    let short = values.iter().any(|v| {
        v.value.len() < jitc_protocol::names::MIN_MASKED_LEN
            && (crate::audit::occurs(&hay, v.value.expose(), Reach::Known)
                || crate::audit::occurs(&asked, v.value.expose(), Reach::Known))
    });
    let cut = memchr::memmem::find(&hay, "…\0".as_bytes()).is_some();
    if !short && !cut {
        return base.clone();
    }
    let mut needles = Needles::new(Vec::new());
    for v in values {
        needles.add(&v.name, v.value.expose());
    }
    let list = needles.list();
    let mut event = base.clone();
    event.conceal(&list, Reach::Known);
    if session.conceal(&list, Reach::Known) {
        event.peer = Some(session.peer_json());
    }
    event
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

/// The holder of lease `id` started its command: the process groups its children lead
/// are the command's, for the agent to stop if the holder cannot. One-way, like
/// `release`.
pub fn guard(agent: &Agent, session: &mut Session, id: u64) {
    if !session.leases.contains(&id) {
        tracing::debug!(lease = id, "guard of a lease this connection does not hold");
        return;
    }
    let groups = crate::procs::command_groups(session.peer.pid);
    tracing::debug!(
        lease = id,
        groups = groups.len(),
        "the lease's command started"
    );
    if let Some(lease) = agent.leases_mut().get_mut(id) {
        lease.guards = groups;
    }
}

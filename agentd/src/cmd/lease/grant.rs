//! Stage 7, `grant`: on record first, then in the lease table, then to the requester.

use jitc_protocol::kinds::EventKind;
use std::time::SystemTime;

use jitc_protocol::{LeaseGrant, LeaseRequest, LeasedValue, Response};

use super::*;
use crate::agent::{Agent, Session};
use crate::audit::{Event, Reach, nul_joined};
use crate::clock::boot_now;
use crate::leases::Lease;

/// Records the grant (on disk before the values leave) and enters the lease in the
/// table — unless the vault was locked meanwhile (the epoch moved).
pub(super) async fn grant(
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
        ..Event::new(EventKind::LeaseGranted).merge(base)
    };
    agent
        .audit()
        .record(granted)
        .await
        .map_err(Denial::unrecorded)?;
    let earliest = {
        let mut leases = agent.leases_mut();
        if leases.epoch != epoch {
            drop(leases);
            // On record as granted, so on record as ended, too.
            agent.audit().record_later(Event {
                lease: Some(id),
                ..Event::new(EventKind::LeaseEnded)
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
            sandbox: session.sandbox_id(),
            ttl,
            started_at: SystemTime::now(),
            expires: boot_now() + ttl,
            holder: session.pushes.clone(),
            warnings: warnings(req, session.peer.uid),
            guards: Vec::new(),
        })
    };
    if earliest {
        agent.leases_changed().notify_one();
    }
    session.leases.push(id);
    let exe = base.command.as_deref().unwrap_or("?");
    for secret in &note_uses(agent, &new_uses, &req.command.path).await {
        agent.raise(agent.detector().first_use(secret, exe), base.clone());
    }
    let limit = judged.policy.defaults.burst_per_minute;
    for secret in &req.secrets {
        agent.raise_if(agent.detector().granted(secret, limit), base.clone());
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
pub(super) fn known_concealed(
    session: &mut Session,
    base: &Event,
    values: &[LeasedValue],
) -> Event {
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
pub(super) async fn note_uses(agent: &Agent, secrets: &[String], exe: &str) -> Vec<String> {
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

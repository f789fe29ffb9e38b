//! Stage 7, `grant`: on record first, then in the lease table, then to the requester.

use jitc_protocol::kinds::EventKind;
use std::borrow::Cow;
use std::time::SystemTime;

use jitc_protocol::{
    ErrorCode, GatewayGrant, LeaseGrant, LeaseRequest, LeasedValue, Response, SecretBytes,
};

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
    leased: Leased,
) -> Result<Response, Denial> {
    let Leased {
        values,
        mut fetched,
    } = leased;
    let gateway_addr = match req.proxy {
        true => Some(
            start_gateway(agent)
                .await
                .map_err(|r| Denial::plain(r, base))?,
        ),
        false => None,
    };
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
    let concealed = known_concealed(session, base, &values);
    let base: &Event = &concealed;
    let shown_chain = session.shown_chain();
    let (values, bound) = match gateway_addr {
        Some(_) => split_bound(&judged.policy, values).map_err(|r| Denial::plain(r, base))?,
        None => (values, Vec::new()),
    };
    let granted = Event {
        lease: Some(id),
        ttl_secs: Some(ttl.as_secs()),
        decision: Some("granted"),
        reason: (!bound.is_empty()).then(|| {
            let names: Vec<&str> = bound.iter().map(|b| b.credential.secret.as_str()).collect();
            format!(
                "through the gateway: {} as placeholders, added to requests for their hosts",
                names.join(", ")
            )
        }),
        backend: fetched
            .as_ref()
            .map(|f| f.records.clone())
            .unwrap_or_default(),
        ..Event::new(EventKind::LeaseGranted).merge(base)
    };
    agent
        .audit()
        .record(granted)
        .await
        .map_err(Denial::unrecorded)?;
    let gateway = match gateway_addr {
        Some(addr) => Some(
            register(
                agent,
                &judged.policy,
                id,
                session.peer.uid,
                bound,
                base,
                addr,
            )
            .map_err(Denial::unrecorded)?,
        ),
        None => None,
    };
    let (registration, gateway) = match gateway {
        Some((r, g)) => (Some(r), Some(g)),
        None => (None, None),
    };
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
            gateway: registration,
            backend: hold(agent, id, &mut fetched),
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
        agent.raise_if(agent.detector().granted(secret, limit), base);
    }
    Ok(Response::Leased(LeaseGrant {
        lease: id,
        values,
        expires_in_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        strict_env: judged.decision.strict_env,
        gateway,
    }))
}

/// The gateway's address, listening, with jitc's CA at hand (taken from the vault —
/// or, for a vault from before the gateway, made now and saved in it).
async fn start_gateway(agent: &Agent) -> Result<std::net::SocketAddr, Refusal> {
    let gateway = agent.gateway();
    if !gateway.has_ca() {
        let mut slot = agent.unlocked().await?;
        let vault = slot.as_mut().ok_or_else(|| agent.locked_refusal())?;
        let failed = |e: String| Refusal::new(ErrorCode::Failure, e);
        let (cert, key) = match vault.gateway_ca() {
            Some(ca) => ca,
            None => {
                let (cert, key) = crate::gateway::ca::generate().map_err(failed)?;
                vault
                    .set_gateway_ca(cert.clone(), &key)
                    .map_err(|e| Refusal::from_vault(agent.vault_file(), e))?;
                agent.save_checkpoint(vault).await?;
                (cert, SecretBytes::from_zeroizing(key))
            }
        };
        gateway.set_ca(crate::gateway::ca::Authority::new(cert, key.expose()).map_err(failed)?);
    }
    gateway
        .addr(agent.me())
        .await
        .map_err(|e| Refusal::new(ErrorCode::Failure, e))
}

/// Takes the values of the secrets a `[[credential]]` binds out of `values`, leaving
/// placeholders in their place.
fn split_bound(
    policy: &crate::policy::Policy,
    values: Vec<LeasedValue>,
) -> Result<(Vec<LeasedValue>, Vec<crate::gateway::Bound>), Refusal> {
    let mut shown = Vec::with_capacity(values.len());
    let mut bound = Vec::new();
    for v in values {
        match policy.credential(&v.name) {
            Some(c) => {
                let placeholder = crate::gateway::new_placeholder()
                    .map_err(|e| Refusal::new(ErrorCode::Failure, e))?;
                shown.push(LeasedValue {
                    name: v.name,
                    value: SecretBytes::from_slice(placeholder.as_bytes()),
                });
                bound.push(crate::gateway::Bound {
                    credential: c.clone(),
                    value: v.value,
                    placeholder,
                });
            }
            None => shown.push(v),
        }
    }
    Ok((shown, bound))
}

/// Enters the lease in the gateway: its registration (dropped with the lease) and what
/// the requester is told.
fn register(
    agent: &Agent,
    policy: &crate::policy::Policy,
    id: u64,
    uid: u32,
    bound: Vec<crate::gateway::Bound>,
    base: &Event,
    addr: std::net::SocketAddr,
) -> Result<(crate::gateway::Registration, GatewayGrant), Refusal> {
    let gateway = agent.gateway();
    let ca_pem = gateway.ca_pem().ok_or_else(|| agent.locked_refusal())?;
    let placeholders = bound.iter().map(|b| b.credential.secret.clone()).collect();
    let mut hosts: Vec<String> = Vec::new();
    for b in &bound {
        for h in &b.credential.hosts {
            if !hosts.contains(h) {
                hosts.push(h.clone());
            }
        }
    }
    let entry = crate::gateway::LeaseEntry::new(
        id,
        uid,
        bound,
        policy.gateway.clone(),
        Event {
            lease: Some(id),
            ..base.clone()
        },
    );
    let (registration, token) = gateway
        .register(entry)
        .map_err(|e| Refusal::new(ErrorCode::Failure, e))?;
    let url = zeroize::Zeroizing::new(format!("http://lease:{}@{addr}", token.as_str()));
    Ok((
        registration,
        GatewayGrant {
            proxy_url: SecretBytes::from_slice(url.as_bytes()),
            ca_pem,
            placeholders,
            hosts,
        },
    ))
}

/// The record of a grant: the requester receives these values, so there is nothing to
/// learn from concealing them further — a value too short to mask where it is a whole
/// argument, a value's beginning where an argument of the requester's chain was cut.
/// Most grants change nothing: `base` itself then, not a copy.
pub(super) fn known_concealed<'a>(
    session: &mut Session,
    base: &'a Event,
    values: &[LeasedValue],
) -> Cow<'a, Event> {
    // Whole occurrences of values long enough to mask are concealed already (the
    // screen found them): only a short value or an argument cut short can add anything.
    let hay = session.haystack();
    // What the request itself says, joined only if a value is short enough to look.
    let joined = || {
        nul_joined(
            [&base.task, &base.command]
                .into_iter()
                .flatten()
                .chain(base.argv.iter().flatten()),
        )
    };
    let mut asked = None;
    let short = values.iter().any(|v| {
        v.value.len() < jitc_protocol::names::MIN_MASKED_LEN
            && (crate::audit::occurs(&hay, v.value.expose(), Reach::Known)
                || crate::audit::occurs(
                    asked.get_or_insert_with(joined),
                    v.value.expose(),
                    Reach::Known,
                ))
    });
    let cut = memchr::memmem::find(&hay, "…\0".as_bytes()).is_some();
    if !short && !cut {
        return Cow::Borrowed(base);
    }
    // Only the chain's cut arguments to conceal: the chain does not change, and `base`
    // shows it as the session does — concealed already if these values were before.
    let key = (!short)
        .then(|| session.known_key(values.iter().map(|v| (v.name.as_str(), v.value.expose()))));
    if key.is_some_and(|k| session.known_done(k)) {
        return Cow::Borrowed(base);
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
    if let Some(k) = key {
        session.remember_known(k);
    }
    Cow::Owned(event)
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

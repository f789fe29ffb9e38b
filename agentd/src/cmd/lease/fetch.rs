//! Stage 6b, `fetch`: the values of backend references (`bao://BACKEND/PATH#FIELD`),
//! read once per backend, path and version; a dynamic secret's lease held (renewed,
//! and revoked with the jitc lease — or at once, if anything below refuses).

use std::collections::BTreeMap;
use std::sync::Arc;

use jitc_protocol::names::{BackendRef, is_backend_ref, parse_backend_ref};
use jitc_protocol::{ErrorCode, LeaseRequest, LeasedValue};

use super::*;
use crate::agent::Agent;
use crate::audit::{BackendRecord, Event};
use crate::backend::Field;
use crate::backend::held::{Held, HeldLease};
use crate::error::Refusal;

/// What the backends gave besides values. Dropped before the grant takes its dynamic
/// secrets (a refusal after the read), it revokes them.
pub struct Fetched {
    pub held: Vec<HeldLease>,
    pub records: Vec<BackendRecord>,
    agent: std::sync::Weak<Agent>,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        if !self.held.is_empty() {
            drop(Held::start(
                std::mem::take(&mut self.held),
                0,
                self.agent.clone(),
            ));
        }
    }
}

/// What a lease hands over: the values (a vault's and a backend's), and what the
/// backends gave besides.
pub struct Leased {
    pub values: Vec<LeasedValue>,
    pub fetched: Option<Fetched>,
}

/// The backend references of `req`, parsed.
fn refs(req: &LeaseRequest) -> Vec<BackendRef> {
    req.secrets
        .iter()
        .filter(|s| is_backend_ref(s))
        .filter_map(|s| parse_backend_ref(s).ok())
        .collect()
}

/// Reads the backend references' values into `values`.
pub(super) async fn fetch(
    agent: &Agent,
    req: &LeaseRequest,
    base: &Event,
    judged: &Judged,
    values: &mut Vec<LeasedValue>,
) -> Result<Option<Fetched>, Denial> {
    let refs = refs(req);
    if refs.is_empty() {
        return Ok(None);
    }
    let deny = |r: Refusal| Denial::plain(r, base);
    let mut by_source: BTreeMap<(String, String, Option<u64>), Vec<&BackendRef>> = BTreeMap::new();
    for r in &refs {
        by_source.entry(r.source()).or_default().push(r);
    }
    // Anything that refuses below drops what was read: its leases are revoked.
    let mut fetched = Fetched {
        held: Vec::new(),
        records: Vec::new(),
        agent: agent.me(),
    };
    for ((backend, path, version), wanted) in by_source {
        let Some(config) = judged.policy.backends.iter().find(|b| b.name == backend) else {
            return Err(deny(Refusal::new(
                ErrorCode::Failure,
                format!(
                    "no backend '{backend}' in policy.toml; add [backend.{backend}] (see the README's Teams section)"
                ),
            )));
        };
        let creds = Arc::new(
            crate::backend::credentials(agent, config)
                .await
                .map_err(deny)?,
        );
        let session = agent.backends().session(config).map_err(deny)?;
        let read = session
            .read(&creds, &path, version)
            .await
            .map_err(|e| deny(e.refusal(&backend)))?;
        if let Some(lease) = &read.lease {
            // On record before anything else: a crash from here on leaves it to be
            // revoked at the next unlock.
            let key = {
                let slot = agent.unlocked().await.map_err(deny)?;
                let vault = slot.as_ref().ok_or_else(|| deny(agent.locked_refusal()))?;
                crate::backend::journal::key_from(vault.key())
            };
            let entry = crate::backend::journal::Entry {
                backend: backend.clone(),
                lease_id: lease.id.clone(),
                lease: 0,
                mac: String::new(),
            }
            .sealed(&key);
            let journal = agent.backends().journal().clone();
            let kept = tokio::task::spawn_blocking(move || journal.add(&entry)).await;
            let ttl = judged.decision.ttl;
            let held = HeldLease {
                session: session.clone(),
                creds: creds.clone(),
                lease: lease.clone(),
            };
            fetched.held.push(held);
            if !matches!(kept, Ok(Ok(()))) {
                return Err(deny(Refusal::new(
                    ErrorCode::IoErr,
                    format!(
                        "cannot keep a record of the lease backend '{backend}' gave (in the state directory); check its permissions and free space"
                    ),
                )));
            }
            // How long the backend will let it live: as given, or — renewable — as
            // far as a renewal for the whole jitc lease reaches (its max TTL caps it).
            let reach = if lease.duration >= ttl || !lease.renewable {
                lease.duration
            } else {
                session
                    .renew(&creds, &lease.id, ttl)
                    .await
                    .map_err(|e| deny(e.refusal(&backend)))?
            };
            if let Some(h) = fetched.held.last_mut() {
                h.lease.duration = reach;
            }
            if reach < ttl {
                let secs = |d: std::time::Duration| {
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                };
                return Err(deny(Refusal::new(
                    ErrorCode::Refused,
                    format!(
                        "the lease asked for lasts {} but backend '{backend}' lets {path} live {} at most; ask for --ttl {} or less",
                        secs(ttl),
                        secs(reach),
                        secs(reach)
                    ),
                )));
            }
        }
        fetched.records.push(BackendRecord {
            backend: backend.clone(),
            path: Some(path.clone()),
            lease_id: read.lease.as_ref().map(|l| l.id.clone()),
            request_id: (!read.request_id.is_empty()).then(|| read.request_id.clone()),
        });
        for r in wanted {
            let value = match read.data.get(&r.field) {
                Some(Field::Value(v)) => jitc_protocol::SecretBytes::from_slice(v.expose()),
                _ => {
                    return Err(deny(Refusal::new(
                        ErrorCode::Failure,
                        format!("backend '{backend}' has no field '{}' at {path}", r.field),
                    )));
                }
            };
            if session.holds_token(value.expose()).await {
                return Err(deny(Refusal::new(
                    ErrorCode::Refused,
                    format!(
                        "refused: {} holds the token jitc logs in to backend '{backend}' with; that is never handed out",
                        r.canonical()
                    ),
                )));
            }
            values.push(LeasedValue {
                name: r.canonical(),
                value,
            });
        }
    }
    // A value the requester wrote on its command line (or task) is refused, as a
    // vault value is.
    let hay = request_hay(req);
    if values
        .iter()
        .filter(|v| is_backend_ref(&v.name))
        .any(|v| v.value.len() >= 4 && memchr::memmem::find(&hay, v.value.expose()).is_some())
    {
        return Err(deny(Refusal::new(
            ErrorCode::Refused,
            "refused: the command line or task holds a value read from a backend; pass it with -e instead",
        )));
    }
    Ok(Some(fetched))
}

/// Starts holding what `fetch` read, for lease `id`.
pub(super) fn hold(agent: &Agent, id: u64, fetched: &mut Option<Fetched>) -> Option<Held> {
    let f = fetched.as_mut()?;
    if f.held.is_empty() {
        return None;
    }
    Some(Held::start(std::mem::take(&mut f.held), id, agent.me()))
}

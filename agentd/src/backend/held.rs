//! The dynamic secrets of one jitc lease: renewed while it lives, revoked when it ends
//! — however it ends (the command exits, its TTL, `jitc revoke`, `jitc lock`, shutdown):
//! dropping `Held` (with the lease) starts the revocation, which is recorded.

use std::sync::{Arc, Weak};
use std::time::Duration;

use jitc_protocol::kinds::EventKind;
use tokio_util::sync::CancellationToken;

use super::{BackendLease, Credentials, Session};
use crate::agent::Agent;
use crate::audit::Event;

/// One backend lease of a jitc lease.
pub struct HeldLease {
    pub session: Arc<Session>,
    pub creds: Arc<Credentials>,
    pub lease: BackendLease,
}

/// A jitc lease's backend leases, until dropped.
pub struct Held {
    cancel: CancellationToken,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Held {
    /// Renews `leases` (at half their duration) until dropped, then revokes them,
    /// recording each revocation (or failure) for jitc lease `id`.
    pub fn start(leases: Vec<HeldLease>, id: u64, agent: Weak<Agent>) -> Held {
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let tracker = agent
            .upgrade()
            .map(|a| a.backends().revocations().clone())
            .unwrap_or_default();
        tracker.spawn(async move {
            let mut leases = leases;
            loop {
                let next = leases
                    .iter()
                    .filter(|l| l.lease.renewable)
                    .map(|l| l.lease.duration / 2)
                    .min()
                    .unwrap_or(Duration::from_secs(3600))
                    .max(Duration::from_secs(1));
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(next) => {
                        for l in leases.iter_mut().filter(|l| l.lease.renewable) {
                            if let Ok(d) = l.session.renew(&l.creds, &l.lease.id, l.lease.duration).await {
                                l.lease.duration = d.max(Duration::from_secs(2));
                            }
                        }
                    }
                }
            }
            for l in &leases {
                let result = l.session.revoke(&l.creds, &l.lease.id).await;
                let Some(agent) = agent.upgrade() else {
                    continue;
                };
                let (kind, reason) = match &result {
                    Ok(()) => {
                        agent
                            .backends()
                            .journal()
                            .remove(&l.session.config.name, &l.lease.id);
                        (EventKind::BackendRevoked, None)
                    }
                    Err(e) => (
                        EventKind::BackendRevokeFailed,
                        Some(e.refusal(&l.session.config.name).message),
                    ),
                };
                if let Some(why) = &reason {
                    tracing::warn!(lease = id, "{why}");
                }
                agent.audit().record_later(Event {
                    lease: Some(id),
                    reason,
                    backend: vec![crate::audit::BackendRecord {
                        backend: l.session.config.name.clone(),
                        path: None,
                        lease_id: Some(l.lease.id.clone()),
                        request_id: None,
                    }],
                    ..Event::new(kind)
                });
            }
        });
        Held { cancel }
    }
}

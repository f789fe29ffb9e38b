//! The lease table: which connection holds which secrets, for which command and task,
//! on behalf of which process chain, until when.
//!
//! A lease lives as long as the connection that asked for it. Ending one from the
//! agent's side (expiry, revoke, lock, shutdown) pushes `LeaseEnded` to its holder,
//! which stops the command. Expiry instants are on `CLOCK_BOOTTIME` (see `clock`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jitc_protocol::{LeaseInfo, LeaseRequest, ProcessInfo, Response, Scope};
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct Lease {
    pub id: u64,
    /// The request as granted (secrets, command, task), its command line cut to what
    /// listings show (see `bounded`).
    pub request: LeaseRequest,
    pub pid: u32,
    /// The requester's uid (leases are counted per uid).
    pub uid: u32,
    pub chain: std::sync::Arc<[ProcessInfo]>,
    pub profile: Option<String>,
    /// The sandbox the requester lives in (see `sandbox`).
    pub sandbox: Option<u64>,
    pub ttl: Duration,
    pub started_at: SystemTime,
    /// Boot-time instant at which it ends.
    pub expires: Duration,
    /// Where `LeaseEnded` goes: the holder's connection.
    pub holder: mpsc::UnboundedSender<Response>,
    /// What the command was warned about (see `Scope::warnings`).
    pub warnings: Vec<String>,
    /// The command's process groups, once its holder said it started (`Guard`): the
    /// agent stops them itself if the holder cannot.
    pub guards: Vec<crate::procs::Guard>,
    /// Its place in the gateway (a `--proxy` lease): dropped with the lease, which
    /// ends its proxy credential and closes its tunnels.
    pub gateway: Option<crate::gateway::Registration>,
    /// Its dynamic secrets in a backend: dropped with the lease, which revokes them.
    pub backend: Option<crate::backend::held::Held>,
}

/// The most of a granted request's command line a lease keeps (for listings and the
/// record of its end): the whole request was checked and recorded at the grant.
const KEPT_ARGV: usize = 4096;

/// `req` with its command line cut to `KEPT_ARGV` bytes (the cut marked `…`).
pub fn bounded(req: &LeaseRequest) -> LeaseRequest {
    let mut kept = req.clone();
    let mut total = 0;
    let mut cut = None;
    for (i, a) in kept.command.argv.iter_mut().enumerate() {
        if total + a.len() > KEPT_ARGV {
            let mut at = KEPT_ARGV.saturating_sub(total);
            while !a.is_char_boundary(at) {
                at -= 1;
            }
            a.truncate(at);
            a.push('…');
            cut = Some(i + 1);
            break;
        }
        total += a.len();
    }
    if let Some(n) = cut {
        kept.command.argv.truncate(n);
    }
    kept
}

/// As many of `items` as fit in about `budget` bytes of reply (at least one), and
/// whether more follow: one page of a listing that may not fit in a frame.
pub fn page<T: serde::Serialize>(items: impl Iterator<Item = T>, budget: usize) -> (Vec<T>, bool) {
    // Room for a thousand items at once, rather than growing from one (and copying)
    // a dozen times.
    let mut out = Vec::with_capacity(items.size_hint().1.unwrap_or(1024).min(1024));
    let mut used = 0usize;
    for item in items {
        let size = postcard::experimental::serialized_size(&item).unwrap_or(usize::MAX);
        if !out.is_empty() && used.saturating_add(size) > budget {
            return (out, true);
        }
        used = used.saturating_add(size);
        out.push(item);
    }
    (out, false)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Lease {
    pub fn info(&self) -> LeaseInfo {
        LeaseInfo {
            id: self.id,
            scope: Scope {
                warnings: self.warnings.clone(),
                sandbox: self.sandbox,
                ..Scope::new(
                    &self.request,
                    self.pid,
                    &self.chain,
                    self.profile.as_deref(),
                )
            },
            started: unix(self.started_at),
            expires: unix(self.started_at + self.ttl),
            ttl_secs: self.ttl.as_secs(),
        }
    }

    pub fn expiry_reason(&self) -> String {
        format!(
            "lease expired after {}",
            humantime::format_duration(self.ttl)
        )
    }

    fn end(&self, reason: &str) {
        // A holder that already went away needs no telling.
        let _ = self.holder.send(Response::LeaseEnded {
            lease: self.id,
            reason: reason.to_owned(),
        });
    }
}

#[derive(Debug, Default)]
pub struct Leases {
    /// Bumped by every `end_all` (lock, shutdown): a grant prepared before one must not
    /// be inserted after it.
    pub epoch: u64,
    next_id: u64,
    /// Boxed: a lease is several hundred bytes, and a B-tree node holds eleven of them
    /// inline, moved about at every insert and remove.
    active: BTreeMap<u64, Box<Lease>>,
    /// (expiry, id) of every active lease, earliest first.
    by_expiry: BTreeSet<(Duration, u64)>,
}

impl Leases {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Adds a lease; true if it is now the first to expire (the timer must be re-armed).
    pub fn insert(&mut self, lease: Lease) -> bool {
        let key = (lease.expires, lease.id);
        self.by_expiry.insert(key);
        self.active.insert(lease.id, Box::new(lease));
        self.by_expiry.first() == Some(&key)
    }

    /// Removes a lease its holder released (nobody needs telling). The timer may stay
    /// armed for it: firing early only finds nothing due.
    pub fn remove(&mut self, id: u64) -> Option<Lease> {
        let lease = self.active.remove(&id)?;
        self.by_expiry.remove(&(lease.expires, id));
        Some(*lease)
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Leases with ids above `after`, as many as fit in about `budget` bytes of reply
    /// (at least one); and whether more follow.
    /// Active leases above `after` that `keep` keeps, a page of `budget` bytes.
    pub fn page(
        &self,
        after: u64,
        budget: usize,
        keep: impl Fn(&Lease) -> bool,
    ) -> (Vec<LeaseInfo>, bool) {
        page(
            self.active
                .range(after.saturating_add(1)..)
                .filter(|(_, l)| keep(l))
                .map(|(_, l)| l.info()),
            budget,
        )
    }

    /// Whether lease `id` is active and `keep` keeps it.
    pub fn has(&self, id: u64, keep: impl Fn(&Lease) -> bool) -> bool {
        self.active.get(&id).is_some_and(|l| keep(l))
    }

    /// The ids of the active leases `keep` keeps.
    pub fn ids(&self, keep: impl Fn(&Lease) -> bool) -> Vec<u64> {
        self.active
            .values()
            .filter(|l| keep(l))
            .map(|l| l.id)
            .collect()
    }

    /// Active leases held by `uid`.
    pub fn count_for(&self, uid: u32) -> usize {
        self.active.values().filter(|l| l.uid == uid).count()
    }

    /// The lease `id`, if active.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Lease> {
        self.active.get_mut(&id).map(|l| &mut **l)
    }

    /// Ends one lease, telling its holder why.
    pub fn end(&mut self, id: u64, reason: &str) -> Option<Lease> {
        self.remove(id).inspect(|l| l.end(reason))
    }

    /// Ends every lease, telling each holder why.
    pub fn end_all(&mut self, reason: &str) -> Vec<Lease> {
        self.epoch += 1;
        self.by_expiry.clear();
        let ended = std::mem::take(&mut self.active);
        for lease in ended.values() {
            lease.end(reason);
        }
        ended.into_values().map(|l| *l).collect()
    }

    /// The earliest boot-time expiry, if any lease is active.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.by_expiry.first().map(|(at, _)| *at)
    }

    /// Ends the leases whose time is up at boot-time `now`; returns them.
    pub fn expire(&mut self, now: Duration) -> Vec<Lease> {
        let due: Vec<u64> = self
            .by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        let mut ended = Vec::with_capacity(due.len());
        for id in &due {
            if let Some(l) = self.remove(*id) {
                l.end(&l.expiry_reason());
                ended.push(l);
            }
        }
        ended
    }
}

//! The lease table: which connection holds which secrets for which command.
//!
//! A lease lives as long as the connection that asked for it; ending one from the agent's
//! side (lock, shutdown) pushes `LeaseEnded` to its holder, which stops the command.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use jitc_protocol::{CommandLine, Response};
use tokio::sync::mpsc;

use crate::peer::Peer;

#[derive(Debug)]
pub struct Lease {
    pub id: u64,
    pub secrets: Vec<String>,
    pub command: CommandLine,
    pub task: Option<String>,
    pub peer: Peer,
    pub started: Instant,
    pub started_at: SystemTime,
    /// Where `LeaseEnded` goes: the holder's connection.
    pub holder: mpsc::UnboundedSender<Response>,
}

#[derive(Debug, Default)]
pub struct Leases {
    next_id: u64,
    active: BTreeMap<u64, Lease>,
}

impl Leases {
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn insert(&mut self, lease: Lease) {
        self.active.insert(lease.id, lease);
    }

    pub fn remove(&mut self, id: u64) -> Option<Lease> {
        self.active.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Ends every lease, telling each holder why.
    pub fn end_all(&mut self, reason: &str) -> usize {
        let ended = std::mem::take(&mut self.active);
        for lease in ended.values() {
            // A holder that already went away needs no telling.
            let _ = lease.holder.send(Response::LeaseEnded {
                lease: lease.id,
                reason: reason.to_owned(),
            });
        }
        ended.len()
    }
}

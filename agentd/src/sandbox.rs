//! Sandboxes `jitc sandbox` registered: the identity a process cannot shed.
//!
//! A sandbox is a user namespace. Its registration holds that namespace open (a
//! descriptor on its `nsfs` file), so the device and inode it is known by can never
//! name another namespace while the registration lives. A peer is in a sandbox when
//! its own user namespace is the registered one or lies below it — walked upwards with
//! `NS_GET_PARENT`, so a nested `unshare -U` changes nothing — whatever its ancestry,
//! argv or session. The peer's namespace is read through the pidfd the kernel gives
//! for the connection (`SO_PEERPIDFD`), so a peer that exits and whose pid is handed
//! out again cannot be mistaken for the new process.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jitc_protocol::{ErrorCode, SandboxInfo, SandboxRequest};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::error::Refusal;
use crate::ns::{self, NsId};

/// One registered sandbox.
#[derive(Debug)]
pub struct Registration {
    pub info: SandboxInfo,
    /// The namespace's id, valid because `_held` keeps the namespace alive.
    ns: NsId,
    _held: OwnedFd,
    /// The sandbox's first process (the init of its PID namespace): killing it ends
    /// every process in the sandbox.
    first: OwnedFd,
    /// Refusals of requests from inside in the current minute, for records that cannot
    /// be flooded (see `refused`).
    refusals: Mutex<Refusals>,
}

#[derive(Debug)]
struct Refusals {
    since: std::time::Instant,
    count: u32,
}

/// Refusals from inside one sandbox recorded one by one per minute; past it they are
/// counted, and said once in the next minute's first record.
pub const REFUSALS_RECORDED_PER_MINUTE: u32 = 10;

/// Whether a refusal is recorded on its own, and how many went unrecorded before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalRecord {
    Record { unrecorded_before: u32 },
    Count,
}

impl Registration {
    pub fn id(&self) -> u64 {
        self.info.id
    }

    pub fn profile(&self) -> &str {
        &self.info.profile
    }

    /// Notes one more refused request from inside: whether to record it.
    pub fn refused(&self) -> RefusalRecord {
        let mut r = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let mut before = 0;
        if now.duration_since(r.since) >= std::time::Duration::from_secs(60) {
            before = r.count.saturating_sub(REFUSALS_RECORDED_PER_MINUTE);
            r.since = now;
            r.count = 0;
        }
        r.count = r.count.saturating_add(1);
        if r.count <= REFUSALS_RECORDED_PER_MINUTE {
            RefusalRecord::Record {
                unrecorded_before: before,
            }
        } else {
            RefusalRecord::Count
        }
    }
}

/// Most sandboxes registered at once.
const MAX_SANDBOXES: usize = 64;
/// Deepest nesting walked: the kernel allows 32 levels of user namespaces.
const MAX_DEPTH: usize = 34;
/// How far above a sandbox's first process its registrant may be (bubblewrap, then
/// its child).
const MAX_REGISTRANT_DISTANCE: usize = 4;

/// Every registered sandbox, and the agent's own namespace they all lie below.
#[derive(Debug)]
pub struct Sandboxes {
    own: Option<NsId>,
    regs: Mutex<Vec<Arc<Registration>>>,
    next_id: AtomicU64,
    /// Each new sandbox's pidfd, for the task that notices its end.
    started: mpsc::UnboundedSender<(u64, OwnedFd)>,
    watcher: Mutex<Option<mpsc::UnboundedReceiver<(u64, OwnedFd)>>>,
}

impl Default for Sandboxes {
    fn default() -> Self {
        Sandboxes::new()
    }
}

/// Where a peer lives.
#[derive(Debug, Clone)]
pub enum Place {
    /// Outside every sandbox (ancestry profiles apply).
    Outside,
    Inside(Arc<Registration>),
}

impl Sandboxes {
    pub fn new() -> Sandboxes {
        let own = ns::own_user_ns()
            .and_then(|fd| NsId::of(&fd))
            .inspect_err(|e| tracing::warn!(error = %e, "cannot read the agent's own user namespace; sandboxes cannot be registered"))
            .ok();
        let (started, watcher) = mpsc::unbounded_channel();
        Sandboxes {
            own,
            regs: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            started,
            watcher: Mutex::new(Some(watcher)),
        }
    }

    fn regs(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Registration>>> {
        self.regs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registered sandboxes, oldest first.
    pub fn list(&self) -> Vec<SandboxInfo> {
        self.regs().iter().map(|r| r.info.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.regs().is_empty()
    }

    /// The sandbox the peer of `pidfd` (pid `pid`) lives in. An error where it cannot
    /// be told while sandboxes exist: such a peer is not served.
    pub fn place_of(&self, pidfd: Option<&OwnedFd>, pid: u32) -> std::io::Result<Place> {
        if self.is_empty() {
            return Ok(Place::Outside);
        }
        let Some(pidfd) = pidfd else {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        };
        self.place_of_ns(ns::user_ns_of(pidfd, pid)?)
    }

    /// The sandbox user namespace `ns` lies in (it, or one of its ancestors).
    fn place_of_ns(&self, ns: OwnedFd) -> std::io::Result<Place> {
        let regs: Vec<Arc<Registration>> = self.regs().clone();
        let mut cur = ns;
        for _ in 0..MAX_DEPTH {
            let id = NsId::of(&cur)?;
            if Some(id) == self.own {
                return Ok(Place::Outside);
            }
            if let Some(r) = regs.iter().find(|r| r.ns == id) {
                return Ok(Place::Inside(r.clone()));
            }
            match ns::parent(&cur)? {
                Some(p) => cur = p,
                None => return Ok(Place::Outside),
            }
        }
        Ok(Place::Outside)
    }

    /// Registers the sandbox whose first process is `req.pid`, for `registrant`: a peer
    /// outside every sandbox (its connection was placed so when accepted; the caller
    /// checks). The process must be the registrant's own (a descendant), of its uid, in
    /// a user namespace below the agent's that is in no sandbox yet. (The registrant's
    /// own namespace cannot be read now: every `jitc` is undumpable once connected.)
    pub fn register(
        &self,
        registrant: &crate::peer::Peer,
        req: SandboxRequest,
    ) -> Result<Arc<Registration>, Refusal> {
        let refuse = |what: String| Refusal::new(ErrorCode::Refused, format!("refused: {what}"));
        let own = self
            .own
            .ok_or_else(|| refuse("the agent cannot read its own user namespace".into()))?;
        if self.regs().len() >= MAX_SANDBOXES {
            return Err(Refusal::busy(format!(
                "the agent holds {MAX_SANDBOXES} sandboxes already; end one first"
            )));
        }
        let pid = req.pid;
        let pidfd = ns::pidfd_open(pid)
            .map_err(|e| Refusal::new(ErrorCode::Failure, format!("no process {pid} ({e})")))?;
        if !descends_from(pid, registrant.pid) {
            return Err(refuse(format!(
                "process {pid} was not started by the registering process ({})",
                registrant.pid
            )));
        }
        if crate::peer::uid_of(pid) != Some(registrant.uid) {
            return Err(refuse(format!("process {pid} is not yours")));
        }
        let held = ns::user_ns_of(&pidfd, pid).map_err(|e| {
            refuse(format!(
                "cannot read the user namespace of process {pid} ({e})"
            ))
        })?;
        let id = NsId::of(&held).map_err(|e| refuse(format!("cannot read a namespace ({e})")))?;
        if id == own {
            return Err(refuse(format!(
                "process {pid} runs in the agent's own user namespace, not in a sandbox"
            )));
        }
        // Below the agent's namespace, and in no sandbox yet.
        let mut below_own = false;
        let mut cur = held.try_clone().map_err(|e| refuse(format!("{e}")))?;
        for _ in 0..MAX_DEPTH {
            let at = NsId::of(&cur).map_err(|e| refuse(format!("{e}")))?;
            if at == own {
                below_own = true;
                break;
            }
            if let Some(r) = self.regs().iter().find(|r| r.ns == at) {
                return Err(refuse(format!(
                    "process {pid} is inside sandbox {} already",
                    r.id()
                )));
            }
            match ns::parent(&cur).map_err(|e| refuse(format!("{e}")))? {
                Some(p) => cur = p,
                None => break,
            }
        }
        if !below_own {
            return Err(refuse(format!(
                "process {pid} is in a user namespace outside the agent's"
            )));
        }
        let reg = Arc::new(Registration {
            info: SandboxInfo {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                profile: req.profile,
                command: req.command,
                pid,
                started: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            },
            ns: id,
            _held: held,
            first: pidfd
                .try_clone()
                .map_err(|e| refuse(format!("cannot keep process {pid} ({e})")))?,
            refusals: Mutex::new(Refusals {
                since: std::time::Instant::now(),
                count: 0,
            }),
        });
        self.regs().push(reg.clone());
        let _ = self.started.send((reg.id(), pidfd));
        Ok(reg)
    }

    /// Ends every registered sandbox (the agent is stopping).
    pub fn end_all(&self) {
        for r in self.regs().iter() {
            ns::kill(&r.first);
        }
    }

    /// The sandboxes whose first process has exited, whether or not the task that
    /// waits for their ends has been woken for them yet.
    pub fn exited(&self) -> Vec<u64> {
        self.regs()
            .iter()
            .filter(|r| ns::exited(&r.first))
            .map(|r| r.id())
            .collect()
    }

    /// Drops registration `id` (its sandbox ended); what it was.
    pub fn end(&self, id: u64) -> Option<Arc<Registration>> {
        let mut regs = self.regs();
        let at = regs.iter().position(|r| r.id() == id)?;
        Some(regs.remove(at))
    }

    /// The stream of new sandboxes' pidfds, for the one task that waits for their ends.
    pub fn take_watcher(&self) -> Option<mpsc::UnboundedReceiver<(u64, OwnedFd)>> {
        self.watcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Whether `pid` descends from `ancestor`, within a few generations.
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut cur = pid;
    for _ in 0..MAX_REGISTRANT_DISTANCE {
        match crate::peer::parent_of(cur) {
            Some(p) if p == ancestor => return true,
            Some(p) if p > 1 => cur = p,
            _ => return false,
        }
    }
    false
}

/// A pidfd for the peer on `stream`: the kernel's own for the connection
/// (`SO_PEERPIDFD`, Linux 6.5), else one opened by its pid — and before 6.5 that pid
/// could name a newer process by now.
pub fn peer_pidfd(stream: &UnixStream, pid: u32) -> std::io::Result<OwnedFd> {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerPidfd) {
        Ok(fd) => Ok(fd),
        Err(_) => ns::pidfd_open(pid),
    }
}

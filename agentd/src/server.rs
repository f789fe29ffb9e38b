//! `Listener` accepts connections; one `Handler` task serves each, once `Admission`
//! lets it in under the connection cap. No error of a single connection can end the
//! daemon. Beside them run the idle lock, the lease-expiry timer, and the task that
//! raises the anomalies the audit writer finds.

use jitc_protocol::kinds::EventKind;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use jitc_protocol::{ErrorCode, PROTOCOL_VERSION, Request, Response, Welcome};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::agent::{Agent, Session};
use crate::clock::{BootTimer, boot_now};
use crate::connection::{ConnError, FrameReader, FrameWriter, split};
use crate::peer::Peer;

/// Serves `listener` until `shutdown` completes, then stops accepting, ends every lease
/// (telling its holder), waits for the handlers to finish, and returns with the vault
/// locked and the keys wiped.
pub async fn run(listener: UnixListener, agent: Arc<Agent>, shutdown: impl Future) {
    agent.set_me();
    let (notify_shutdown, _) = broadcast::channel(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut server = Listener {
        listener,
        agent: agent.clone(),
        admission: Arc::new(Admission::new(agent.config().max_connections)),
        notify_shutdown,
        done_tx,
    };
    let writer = {
        let agent = agent.clone();
        let task = tokio::spawn({
            let agent = agent.clone();
            async move { agent.audit().run_writer().await }
        });
        let abort = task.abort_handle();
        // Should the writer ever die (a bug), nothing may wait for it forever: every
        // record is refused from then on (fail closed), and shutdown still completes.
        tokio::spawn(async move {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(
                    "the audit writer died; every request that must be recorded is refused"
                );
                agent.audit().writer_died();
            }
        });
        abort
    };
    agent.audit().record_later(crate::audit::Event {
        reason: Some(format!(
            "jitc-agentd {} (pid {})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        )),
        ..crate::audit::Event::new(EventKind::Start)
    });
    let idle = tokio::spawn(idle_lock(agent.clone()));
    let expiry = tokio::spawn(expire_leases(agent.clone()));
    let alerts = tokio::spawn(audit_alerts(agent.clone()));
    let sandboxes = tokio::spawn(watch_sandboxes(agent.clone()));
    let stopped_by = tokio::select! {
        () = server.accept_loop() => None,
        _ = shutdown => {
            tracing::info!("shutting down");
            None
        }
        by = agent.stop_requested() => {
            tracing::info!(by = %by, "shutting down");
            Some(by)
        }
    };
    idle.abort();
    expiry.abort();
    alerts.abort();
    sandboxes.abort();
    // Lock first: every lease holder is told why its lease ended before handlers stop.
    agent.shut_down().await;
    let Listener {
        notify_shutdown,
        done_tx,
        ..
    } = server;
    drop(notify_shutdown);
    drop(done_tx);
    // Every handler holds a clone of done_tx; recv returns None once all have finished.
    let _ = done_rx.recv().await;
    // Whatever finished in the meantime (a lease granted just before) is ended too.
    agent.shut_down().await;
    // The leases' dynamic secrets are revoked before the agent goes (what cannot be in
    // time stays in the journal, for the next unlock).
    agent.backends().wait_for_revocations().await;
    let mut stop = crate::audit::Event::new(EventKind::Stop);
    stop.reason = stopped_by;
    let _ = agent.audit().record(stop).await;
    writer.abort();
}

/// Raises the anomalies the audit writer finds: an unclean shutdown of the agent
/// before this one, a flood of rotations.
async fn audit_alerts(agent: Arc<Agent>) {
    loop {
        for (kind, description) in agent.audit().take_alerts().await {
            agent.raise(
                crate::anomaly::Anomaly::new(kind, description),
                crate::audit::Event::default(),
            );
        }
    }
}

/// Ends each sandbox's registration when its first process — the init of its PID
/// namespace — exits: the kernel has killed every other process in it by then.
async fn watch_sandboxes(agent: Arc<Agent>) {
    let Some(mut started) = agent.sandboxes().take_watcher() else {
        return;
    };
    let mut ends = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            new = started.recv() => match new {
                Some((id, pidfd)) => {
                    ends.spawn(async move {
                        if let Err(e) = crate::ns::wait_exit(pidfd).await {
                            // Without a way to see it end, the registration stays: a
                            // sandbox must never be taken for the outside.
                            tracing::error!(sandbox = id, error = %e, "cannot watch a sandbox's end; it stays registered");
                            std::future::pending::<()>().await;
                        }
                        id
                    });
                }
                None => return,
            },
            Some(done) = ends.join_next(), if !ends.is_empty() => {
                if let Ok(id) = done {
                    agent.sandbox_ended(id);
                }
            }
        }
    }
}

/// Locks the vault once it has gone unused for the idle period with no lease active.
async fn idle_lock(agent: Arc<Agent>) {
    loop {
        agent.idle().expired().await;
        if agent.leases_mut().is_empty() {
            agent.lock("the vault locked itself after being idle").await;
        }
        agent.idle().touch();
    }
}

/// Ends leases when their time is up, on a boot-time timer armed at the earliest expiry.
async fn expire_leases(agent: Arc<Agent>) {
    let timer = match BootTimer::new() {
        Ok(t) => t,
        Err(e) => {
            // Without it no lease could expire: refuse to pretend otherwise.
            tracing::error!(error = %e, "cannot create the lease timer; leases will not expire");
            return;
        }
    };
    loop {
        let next = agent.leases_mut().next_expiry();
        if let Err(e) = timer.arm(next) {
            tracing::error!(error = %e, "cannot arm the lease timer");
        }
        tokio::select! {
            fired = timer.fired() => {
                if let Err(e) = fired {
                    tracing::error!(error = %e, "the lease timer failed");
                }
                let ended = agent.leases_mut().expire(boot_now());
                for lease in ended {
                    tracing::info!(lease = lease.id, "lease expired");
                    let reason = lease.expiry_reason();
                    agent.ended_by_agent(vec![lease], &reason);
                }
            }
            () = agent.leases_changed().notified() => {}
        }
    }
}

/// Who gets served when connections run short. At most `max` are served at once; the
/// last `reserve` of those go only to connections from outside the process session
/// that holds the most — so a flood of silent connections from one place (an agent gone
/// wrong) cannot keep `jitc status` from a human's shell out. A connection not admitted
/// yet waits its turn, unanswered; at most `max` wait, beyond that the listen backlog
/// holds the rest.
pub struct Admission {
    max: usize,
    reserve: usize,
    state: Mutex<AdmissionState>,
    freed: Notify,
}

#[derive(Default)]
struct AdmissionState {
    served: usize,
    waiting: usize,
    /// Served connections per session id.
    by_session: HashMap<u32, usize>,
}

/// A served connection's place; given back when dropped.
pub struct Admitted {
    admission: Arc<Admission>,
    session: u32,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        s.served -= 1;
        if let Some(n) = s.by_session.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                s.by_session.remove(&self.session);
            }
        }
        drop(s);
        self.admission.freed.notify_waiters();
    }
}

impl Admission {
    pub fn new(max: usize) -> Admission {
        Admission {
            max,
            reserve: (max / 8).min(16),
            state: Mutex::new(AdmissionState::default()),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AdmissionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a connection from `session` may be served now.
    fn fits(&self, s: &AdmissionState, session: u32) -> bool {
        if s.served < self.max - self.reserve {
            return true;
        }
        if s.served >= self.max {
            return false;
        }
        // The reserve: not for the session holding the most connections.
        let mine = s.by_session.get(&session).copied().unwrap_or(0);
        let top = s.by_session.values().copied().max().unwrap_or(0);
        mine < top
    }

    /// Waits until a connection from `session` may be served.
    pub async fn admit(self: &Arc<Self>, session: u32) -> Admitted {
        let mut counted = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.lock();
                if self.fits(&s, session) {
                    if counted {
                        s.waiting -= 1;
                    }
                    s.served += 1;
                    *s.by_session.entry(session).or_default() += 1;
                    return Admitted {
                        admission: self.clone(),
                        session,
                    };
                }
                if !counted {
                    s.waiting += 1;
                    counted = true;
                }
            }
            freed.await;
        }
    }

    /// Whether as many connections wait as may (the accept loop then waits too).
    fn full(&self) -> bool {
        self.lock().waiting >= self.max
    }
}

/// The session id of `pid` (field 6 of `/proc/PID/stat`), or 0.
fn session_of(pid: u32) -> u32 {
    crate::peer::read_proc(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat[stat.rfind(')')? + 1..].to_owned();
            after.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(0)
}

struct Listener {
    listener: UnixListener,
    agent: Arc<Agent>,
    admission: Arc<Admission>,
    notify_shutdown: broadcast::Sender<()>,
    done_tx: mpsc::Sender<()>,
}

impl Listener {
    async fn accept_loop(&mut self) {
        loop {
            while self.admission.full() {
                self.admission.freed.notified().await;
            }
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = Handler {
                agent: self.agent.clone(),
                shutdown: self.notify_shutdown.subscribe(),
                _done: self.done_tx.clone(),
            };
            let admission = self.admission.clone();
            tokio::spawn(async move {
                let pid = stream
                    .peer_cred()
                    .ok()
                    .and_then(|c| c.pid())
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0);
                let mut shutdown = handler.shutdown.resubscribe();
                let admitted = tokio::select! {
                    a = admission.admit(session_of(pid)) => a,
                    _ = shutdown.recv() => return,
                };
                handler.run(stream).await;
                drop(admitted);
            });
        }
    }
}

struct Handler {
    agent: Arc<Agent>,
    shutdown: broadcast::Receiver<()>,
    _done: mpsc::Sender<()>,
}

impl Handler {
    async fn run(mut self, stream: UnixStream) {
        let peer = match Peer::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot identify the peer; dropping the connection");
                return;
            }
        };
        // Where the peer lives: decided now, from the kernel's pidfd for the connection
        // (taken only while sandboxes exist; closed once used).
        // Root is never inside a user's sandbox (a sandboxed uid 0 is the user's uid to
        // us), and its namespace is not ours to read.
        let place = if self.agent.sandboxes().is_empty() || peer.uid == 0 {
            Ok(crate::sandbox::Place::Outside)
        } else {
            crate::sandbox::peer_pidfd(&stream, peer.pid)
                .and_then(|fd| self.agent.sandboxes().place_of(Some(&fd), peer.pid))
        };
        let (mut reader, mut writer) = split(stream, self.agent.config().frame_timeout);
        let place = match place {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pid = peer.pid, error = %e, "cannot tell whether a peer is in a sandbox; dropping it");
                let _ = writer
                    .write(&Response::Error {
                        code: ErrorCode::Refused,
                        message: format!(
                            "refused: the agent cannot tell whether this process is inside a sandbox ({e})"
                        ),
                    })
                    .await;
                return;
            }
        };
        let me = nix::unistd::geteuid().as_raw();
        if peer.uid != me && peer.uid != 0 {
            tracing::warn!(pid = peer.pid, uid = peer.uid, exe = ?peer.exe, "refused a peer of another user");
            self.agent.audit().record_later(
                crate::audit::Event::new(EventKind::PeerRefused)
                    .peer(crate::audit::PeerJson::new(
                        &peer,
                        &crate::peer::chain(peer.pid),
                    ))
                    .reason(format!("uid {} is not the agent's", peer.uid)),
            );
            let _ = writer
                .write(&Response::Error {
                    code: ErrorCode::Refused,
                    message: format!(
                        "this agent belongs to uid {me}, not to you (uid {}); start your own with 'jitc agent'",
                        peer.uid
                    ),
                })
                .await;
            return;
        }
        let (pushes, mut pushed) = mpsc::unbounded_channel();
        let mut session = Session::new(peer, pushes);
        session.place(match place {
            crate::sandbox::Place::Outside => None,
            crate::sandbox::Place::Inside(r) => Some(r),
        });
        if let Err(e) = self
            .serve(&mut reader, &mut writer, &mut session, &mut pushed)
            .await
        {
            tracing::debug!(pid = session.peer.pid, error = %e, "connection ended with an error");
        }
        self.agent.release_session(&mut session);
    }

    /// Answers the Hello; `false` if the connection should end there.
    async fn greet(
        &mut self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
    ) -> Result<bool, ConnError> {
        // The first frame must be a Hello, and arrive promptly.
        let first = tokio::time::timeout(self.agent.config().frame_timeout, reader.read_request())
            .await
            .map_err(|_| ConnError::Stalled)??;
        let (reply, go_on) = match first {
            None => return Ok(false),
            Some(Request::Hello(hello)) if hello.protocol_version == PROTOCOL_VERSION => (
                Response::Welcome(Welcome {
                    protocol_version: PROTOCOL_VERSION,
                    agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                    pid: std::process::id(),
                }),
                true,
            ),
            Some(Request::Hello(hello)) => {
                let pid = std::process::id();
                (
                    Response::Error {
                        code: ErrorCode::Unavailable,
                        message: format!(
                            "the agent (pid {pid}) speaks protocol {PROTOCOL_VERSION} but this jitc speaks {}; restart the agent ('kill {pid}', then 'jitc agent')",
                            hello.protocol_version
                        ),
                    },
                    false,
                )
            }
            Some(_) => (
                Response::Error {
                    code: ErrorCode::DataErr,
                    message: "protocol error: the first message must be Hello; upgrade jitc".into(),
                },
                false,
            ),
        };
        writer.write(&reply).await?;
        Ok(go_on)
    }

    async fn serve(
        &mut self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        session: &mut Session,
        pushed: &mut mpsc::UnboundedReceiver<Response>,
    ) -> Result<(), ConnError> {
        if !self.greet(reader, writer).await? {
            return Ok(());
        }
        let idle_limit = self.agent.config().connection_timeout;
        // One future each for the connection's life, not one per request: a new
        // shutdown receiver queues and unlinks its waiter under a lock, a new timer
        // takes and gives back a timer-wheel entry.
        let shutdown = self.shutdown.recv();
        tokio::pin!(shutdown);
        // A connection that holds nothing and says nothing is let go: silent ones must
        // not use up the connections others need. Silent since `last`: the timer is
        // moved on only when it fires early.
        let idle = tokio::time::sleep(idle_limit);
        tokio::pin!(idle);
        let mut last = tokio::time::Instant::now();
        loop {
            let request = tokio::select! {
                // Pushes first, so a lease holder hears why before shutdown closes it.
                biased;
                Some(push) = pushed.recv() => {
                    writer.write(&push).await?;
                    if let Response::LeaseEnded { lease, .. } = push {
                        session.leases.retain(|l| *l != lease);
                    }
                    last = tokio::time::Instant::now();
                    continue;
                }
                _ = &mut shutdown => return Ok(()),
                request = reader.read_request() => match request? {
                    Some(r) => r,
                    None => return Ok(()),
                },
                // A connection that holds a lease, or that registered a sandbox (its
                // launcher waits on it for the agent's end), is not idle.
                () = &mut idle, if session.leases.is_empty() && !session.registered_sandbox => {
                    let due = last + idle_limit;
                    if due > tokio::time::Instant::now() {
                        idle.as_mut().reset(due);
                        continue;
                    }
                    tracing::debug!(pid = session.peer.pid, "idle connection dropped");
                    return Ok(());
                }
            };
            // While a request is handled (an approval can take a minute), pushes still go
            // out, and the request is dropped (cancelled) if the peer hangs up or the
            // agent shuts down.
            let handling = self.agent.handle(session, request);
            tokio::pin!(handling);
            let response = loop {
                tokio::select! {
                    biased;
                    Some(push) = pushed.recv() => writer.write(&push).await?,
                    _ = &mut shutdown => return Ok(()),
                    // Most requests finish at once: try that before touching the socket.
                    response = &mut handling => break response,
                    // Our client never sends while it waits: a frame or EOF here means it
                    // gave up (or misbehaves); either way the request is abandoned.
                    _ = reader.read_request() => return Ok(()),
                }
            };
            if let Some(response) = response {
                writer.send(&response).await?;
            }
            last = tokio::time::Instant::now();
        }
    }
}

//! `Listener` accepts under a connection cap; one `Handler` task serves each connection.
//! No error of a single connection can end the daemon.

use std::future::Future;
use std::sync::Arc;

use jitc_protocol::{ErrorCode, PROTOCOL_VERSION, Request, Response, Welcome};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc};

use crate::agent::{Agent, Session};
use crate::connection::{ConnError, Connection};
use crate::peer::Peer;

/// Serves `listener` until `shutdown` completes, then stops accepting, lets every handler
/// finish its current request, locks the vault (wiping keys) and returns.
pub async fn run(listener: UnixListener, agent: Arc<Agent>, shutdown: impl Future) {
    let (notify_shutdown, _) = broadcast::channel(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut server = Listener {
        listener,
        agent: agent.clone(),
        limit: Arc::new(Semaphore::new(agent.config.max_connections)),
        notify_shutdown,
        done_tx,
    };
    let idle_agent = agent.clone();
    let idle = tokio::spawn(async move {
        loop {
            idle_agent.idle.expired().await;
            if idle_agent.leases_mut().is_empty() {
                idle_agent
                    .lock("the vault locked itself after being idle")
                    .await;
            }
            idle_agent.idle.touch();
        }
    });
    tokio::select! {
        () = server.accept_loop() => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    idle.abort();
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
}

struct Listener {
    listener: UnixListener,
    agent: Arc<Agent>,
    limit: Arc<Semaphore>,
    notify_shutdown: broadcast::Sender<()>,
    done_tx: mpsc::Sender<()>,
}

impl Listener {
    async fn accept_loop(&mut self) {
        loop {
            let Ok(permit) = self.limit.clone().acquire_owned().await else {
                return;
            };
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
            tokio::spawn(async move {
                handler.run(stream).await;
                drop(permit);
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
        let mut conn = Connection::new(stream, self.agent.config.frame_timeout);
        let me = nix::unistd::geteuid().as_raw();
        if peer.uid != me && peer.uid != 0 {
            tracing::warn!(pid = peer.pid, uid = peer.uid, exe = ?peer.exe, "refused a peer of another user");
            let _ = conn
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
        let mut session = Session {
            peer,
            pushes,
            leases: Vec::new(),
        };
        if let Err(e) = self.serve(&mut conn, &mut session, &mut pushed).await {
            tracing::debug!(pid = session.peer.pid, error = %e, "connection ended with an error");
        }
        self.agent.release_session(&mut session);
    }

    async fn serve(
        &mut self,
        conn: &mut Connection,
        session: &mut Session,
        pushed: &mut mpsc::UnboundedReceiver<Response>,
    ) -> Result<(), ConnError> {
        // The first frame must be a Hello, and arrive promptly.
        let first = tokio::time::timeout(self.agent.config.frame_timeout, conn.read_request())
            .await
            .map_err(|_| ConnError::Stalled)??;
        match first {
            None => return Ok(()),
            Some(Request::Hello(hello)) if hello.protocol_version == PROTOCOL_VERSION => {
                conn.write(&Response::Welcome(Welcome {
                    protocol_version: PROTOCOL_VERSION,
                    agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                    pid: std::process::id(),
                }))
                .await?;
            }
            Some(Request::Hello(hello)) => {
                let message = format!(
                    "the agent (pid {}) speaks protocol {PROTOCOL_VERSION} but this jitc speaks {}; restart the agent ('kill {}', then 'jitc agent')",
                    std::process::id(),
                    hello.protocol_version,
                    std::process::id()
                );
                conn.write(&Response::Error {
                    code: ErrorCode::Unavailable,
                    message,
                })
                .await?;
                return Ok(());
            }
            Some(_) => {
                conn.write(&Response::Error {
                    code: ErrorCode::DataErr,
                    message: "protocol error: the first message must be Hello; upgrade jitc".into(),
                })
                .await?;
                return Ok(());
            }
        }
        loop {
            tokio::select! {
                // Pushes first, so a lease holder hears why before shutdown closes it.
                biased;
                Some(push) = pushed.recv() => {
                    conn.write(&push).await?;
                    if let Response::LeaseEnded { lease, .. } = push {
                        session.leases.retain(|l| *l != lease);
                    }
                }
                _ = self.shutdown.recv() => return Ok(()),
                request = conn.read_request() => {
                    let Some(request) = request? else { return Ok(()) };
                    let response = self.agent.handle(session, request).await;
                    conn.write(&response).await?;
                }
            }
        }
    }
}

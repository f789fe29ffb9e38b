//! The gateway's listener: every connection is checked for its owner (the agent's user,
//! or the lease's), every request for its proxy credential (`407` without one that
//! belongs to an active lease); then `CONNECT` opens a tunnel — intercepted (bound
//! hosts, and by default every other host), tunnelled untouched (`passthrough_hosts`),
//! or refused (`gateway_only`) — and a plain-HTTP request is forwarded unless it is
//! for a bound host (a credential never crosses the wire in clear).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use jitc_protocol::kinds::{AnomalyKind, EventKind};
use tokio::net::{TcpListener, TcpStream};

use super::upstream::{Body, BoxError};
use super::{LeaseEntry, Shared};
use crate::agent::Agent;
use crate::anomaly::Anomaly;
use crate::audit::Event;

/// The gateway's own answer: a status and one line saying what to do.
pub fn answer(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("jitc gateway: {message}\n")))
            .map_err(|e: Infallible| -> BoxError { match e {} })
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        r.headers_mut().insert(
            http::header::PROXY_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"jitc\""),
        );
    }
    r
}

/// How long a request's head may take to arrive.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// HTTP/2 streams at once in one tunnel.
const MAX_STREAMS: u32 = 32;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, agent: Weak<Agent>) {
    let own_uid = nix::unistd::getuid().as_raw();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "gateway: cannot accept a connection");
                // Out of descriptors: give the others a moment to close theirs.
                tokio::task::yield_now().await;
                continue;
            }
        };
        let Some(agent) = agent.upgrade() else {
            return;
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            tracing::warn!("gateway: too many connections; one closed");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(tcp, peer, own_uid, shared, agent).await;
        });
    }
}

/// Context of one connection to the gateway.
#[derive(Clone)]
pub struct Conn {
    pub shared: Arc<Shared>,
    pub agent: Arc<Agent>,
    /// Who owns the connecting socket.
    pub uid: u32,
    pub own_uid: u32,
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    own_uid: u32,
    shared: Arc<Shared>,
    agent: Arc<Agent>,
) {
    let Ok(local) = tcp.local_addr() else {
        return;
    };
    let uid = tokio::task::spawn_blocking(move || super::peer::uid_of(&peer, &local))
        .await
        .ok()
        .flatten();
    let uid = match uid {
        Some(u) if u == own_uid || u == 0 => u,
        Some(u) => {
            if shared.first_refusal_this_minute(u) {
                refused_uid(&agent, u);
            }
            return;
        }
        None => {
            tracing::warn!(%peer, "gateway: a connection whose owner cannot be found; closed");
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let conn = Conn {
        shared,
        agent,
        uid,
        own_uid,
    };
    let service = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(conn, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades()
        .await;
}

/// Another uid's connection: closed, recorded, and raised as an anomaly (it may hold a
/// stolen proxy credential).
fn refused_uid(agent: &Agent, uid: u32) {
    let why = format!("a connection to the gateway from uid {uid}, not the agent's user: closed");
    agent.audit().record_later(Event {
        reason: Some(why.clone()),
        ..Event::new(EventKind::GatewayRefused)
    });
    tracing::warn!(uid, "gateway: connection from another user refused");
}

/// The lease whose proxy credential `req` carries (`lease:TOKEN`, Basic).
fn authenticate(conn: &Conn, req: &Request<Incoming>) -> Option<Arc<LeaseEntry>> {
    let h = req
        .headers()
        .get(http::header::PROXY_AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 512 {
        return None;
    }
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?,
    );
    let token = decoded.strip_prefix(b"lease:")?;
    let lease = conn.shared.lease(token)?;
    (!lease.cancel.is_cancelled() && (conn.uid == lease.uid || conn.uid == conn.own_uid))
        .then_some(lease)
}

async fn handle(conn: Conn, req: Request<Incoming>) -> Response<Body> {
    let Some(lease) = authenticate(&conn, &req) else {
        return answer(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            "no valid proxy credential: this proxy serves the commands of active jitc leases (jitc exec --proxy); the lease may have ended",
        );
    };
    if req.method() == Method::CONNECT {
        connect(conn, lease, req).await
    } else if req.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
        super::forward::plain(conn, lease, req).await
    } else {
        answer(
            StatusCode::BAD_REQUEST,
            "send CONNECT host:port, or an absolute http:// URL",
        )
    }
}

/// Raises `exfiltration_attempt` for lease `lease`: a placeholder went where it is not
/// bound.
pub fn exfiltration(conn: &Conn, lease: &LeaseEntry, host: &str, where_: &str) {
    let description = format!(
        "a jitc placeholder was sent to {} ({where_}), a host it is not bound to: refused (lease {})",
        host.escape_debug(),
        lease.id
    );
    conn.agent.raise(
        Anomaly::new(AnomalyKind::ExfiltrationAttempt, description),
        lease.base.clone(),
    );
}

/// Whether `s` holds a placeholder.
pub fn has_placeholder(s: &[u8]) -> bool {
    memchr::memmem::find(s, super::PLACEHOLDER_PREFIX.as_bytes()).is_some()
}

/// What to do with a tunnel to `host`.
enum Tunnel {
    Intercept,
    Untouched,
}

async fn connect(conn: Conn, lease: Arc<LeaseEntry>, req: Request<Incoming>) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let Some(host) = super::upstream::host_of(req.uri()) else {
        return answer(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let port = authority.port_u16().unwrap_or(443);
    if has_placeholder(authority.as_str().as_bytes()) {
        exfiltration(&conn, &lease, &host, "in the host name");
        return answer(
            StatusCode::FORBIDDEN,
            "a jitc placeholder is not a host name; refused",
        );
    }
    let bound = !lease.bound_to(&host, port).is_empty();
    let mode = if bound {
        Tunnel::Intercept
    } else if lease.settings.passthrough(&host) {
        Tunnel::Untouched
    } else if lease.settings.gateway_only {
        return answer(
            StatusCode::FORBIDDEN,
            &format!(
                "{} is not a host a credential of this lease is bound to, and the policy says gateway_only",
                host.escape_debug()
            ),
        );
    } else {
        Tunnel::Intercept
    };
    let ca = match mode {
        Tunnel::Intercept => match conn.shared.ca() {
            Some(ca) => Some(ca),
            None => {
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the vault is locked; unlock it with 'jitc unlock'",
                );
            }
        },
        Tunnel::Untouched => None,
    };
    // The connection's own slot ends with the upgrade: a tunnel takes one of its own.
    let Ok(slot) = conn.shared.tunnels.clone().try_acquire_owned() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many tunnels are open through the gateway; close some and try again",
        );
    };
    let cancel = lease.cancel.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let tunnel = async {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => TokioIo::new(u),
                Err(_) => return,
            };
            match ca {
                None => {
                    let target = if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    };
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let mut down = upgraded;
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                }
                Some(ca) => intercept(conn, lease, ca, host, port, upgraded).await,
            }
        };
        tokio::select! {
            () = tunnel => {}
            () = cancel.cancelled() => {}
        }
    });
    Response::new(
        http_body_util::Empty::new()
            .map_err(|e: Infallible| -> BoxError { match e {} })
            .boxed_unsync(),
    )
}

/// Terminates the command's TLS with a certificate for `host` from jitc's CA, and
/// serves what it sends (HTTP/1.1 or HTTP/2) through `forward`.
async fn intercept(
    conn: Conn,
    lease: Arc<LeaseEntry>,
    ca: Arc<super::ca::Authority>,
    host: String,
    port: u16,
    io: TokioIo<hyper::upgrade::Upgraded>,
) {
    let config = match ca.server_config(&host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("gateway: {e}");
            return;
        }
    };
    let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(io).await else {
        return;
    };
    let target = Arc::new(super::forward::Target { host, port });
    let service = service_fn(move |req| {
        let (conn, lease, target) = (conn.clone(), lease.clone(), target.clone());
        async move { Ok::<_, Infallible>(super::forward::forward(conn, lease, target, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS);
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await;
}

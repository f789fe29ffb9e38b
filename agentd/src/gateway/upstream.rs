//! Connections to the real hosts: each lease has its own client (and pool), so that its
//! connections close with it; a binding's `connect_to` and `upstream_ca` (and the
//! `[gateway]`'s `upstream_ca`) apply here. TLS is always verified; HTTP/2 where the
//! host offers it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::LeaseEntry;
use crate::policy::credential::TrustRoots;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type Client = hyper_util::client::legacy::Client<Connector, Body>;

/// How long connecting to a host (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a host's connections go, and whom they trust.
struct Route {
    hosts: Vec<String>,
    connect_to: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

#[derive(Clone)]
pub struct Connector {
    routes: Arc<Vec<Route>>,
    default_tls: Arc<rustls::ClientConfig>,
}

fn tls_config(
    roots: &rustls::RootCertStore,
    extra: &[&TrustRoots],
    h1_only: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut store = roots.clone();
    for roots in extra {
        for c in roots.certs.iter() {
            store
                .add(c.clone())
                .map_err(|e| format!("upstream_ca {}: {e}", roots.path))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = if h1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// The lease's client: its bindings' routes, over the system roots (HTTP/1.1 only for
/// upgrades, which HTTP/2 does not carry). A binding's `upstream_ca` is trusted for
/// its own hosts only.
pub fn client(
    lease: &LeaseEntry,
    roots: &rustls::RootCertStore,
    h1_only: bool,
) -> Result<Client, String> {
    let global: Vec<&TrustRoots> = lease.settings.upstream_ca.iter().collect();
    let default_tls = tls_config(roots, &global, h1_only)?;
    let mut routes = Vec::new();
    for b in &lease.bound {
        let c = &b.credential;
        let tls = match &c.upstream_ca {
            Some(ca) => {
                let mut extra = global.clone();
                extra.push(ca);
                tls_config(roots, &extra, h1_only)?
            }
            None => default_tls.clone(),
        };
        routes.push(Route {
            hosts: c.hosts.clone(),
            connect_to: c.connect_to.clone(),
            tls,
        });
    }
    let connector = Connector {
        routes: Arc::new(routes),
        default_tls,
    };
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector),
    )
}

/// A client for a backend's API: the system roots plus `ca`, HTTP/1.1 or HTTP/2.
pub fn plain_client(ca: Option<&TrustRoots>) -> Result<Client, String> {
    let roots = super::system_roots();
    let extra: Vec<&TrustRoots> = ca.into_iter().collect();
    let connector = Connector {
        routes: Arc::new(Vec::new()),
        default_tls: tls_config(&roots, &extra, false)?,
    };
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector),
    )
}

/// A connection to a host: plain, or TLS.
pub enum Upstream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        match self {
            Upstream::Plain(_) => Connected::new(),
            Upstream::Tls(t) => {
                if t.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_flush(cx),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The host of `uri`, without brackets around an IPv6 address.
pub fn host_of(uri: &Uri) -> Option<String> {
    let h = uri.host()?;
    Some(
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

impl Connector {
    fn route(&self, host: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| crate::policy::credential::host_matches(&r.hosts, host))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Upstream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = host_of(&uri).ok_or("a request without a host")?;
            let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let route = this.route(&host);
            let target = match route.and_then(|r| r.connect_to.clone()) {
                Some(t) => t,
                None if host.contains(':') => format!("[{host}]:{port}"),
                None => format!("{host}:{port}"),
            };
            let connect = async {
                let tcp = TcpStream::connect(&target).await?;
                let _ = tcp.set_nodelay(true);
                if !tls {
                    return Ok::<_, BoxError>(Upstream::Plain(tcp));
                }
                let config = route.map_or_else(|| this.default_tls.clone(), |r| r.tls.clone());
                let name = ServerName::try_from(host.clone())?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok(Upstream::Tls(Box::new(stream)))
            };
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| format!("connecting to {target} timed out"))??;
            Ok(TokioIo::new(conn))
        })
    }
}

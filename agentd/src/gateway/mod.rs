//! The custody-free gateway: an HTTP(S) proxy on loopback, inside the agent. A command
//! run with `jitc exec --proxy` gets placeholders instead of the values of the secrets a
//! `[[credential]]` binds to hosts, and proxy variables naming this gateway with a
//! per-lease proxy credential; the gateway terminates its TLS (with a certificate from
//! jitc's own CA, which the command is told to trust), adds the credential to requests
//! bound for those hosts only, and forwards them over verified TLS. A placeholder seen
//! anywhere else is refused and raises `exfiltration_attempt`.
//!
//! - `ca` — the CA (sealed in the vault) and the leaf certificates it signs;
//! - `peer` — the uid behind a loopback TCP connection;
//! - `proxy` — the listener: who asks (uid, proxy credential), `CONNECT` and plain HTTP;
//! - `forward` — one request inside an intercepted tunnel: screened, given its
//!   credential, forwarded, its response masked and recorded;
//! - `upstream` — connections to the real hosts (`connect_to`, extra roots);
//! - `body` — streaming bodies that mask, count, and scan.

mod body;
pub mod ca;
mod forward;
mod peer;
mod proxy;
pub mod upstream;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use jitc_protocol::SecretBytes;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::audit::Event;
use crate::policy::credential::Credential;

/// Every placeholder starts so: the gateway looks for this prefix in every request.
pub const PLACEHOLDER_PREFIX: &str = "jitc-placeholder-";
/// Random hex digits after the prefix.
const PLACEHOLDER_RANDOM: usize = 32;
/// Where the system's roots are (Debian/Ubuntu, Fedora/RHEL, Alpine/macOS, SUSE).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];
/// The most connections (and, apart, tunnels) the gateway serves at once; more are
/// closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// The most bytes of request bodies held for screening at once, over all requests.
const MAX_SCREENING: usize = 64 << 20;

/// The TLS implementation, on both sides.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|_| "the system random generator failed".to_owned())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A fresh placeholder: `jitc-placeholder-` and 128 random bits in hex.
pub fn new_placeholder() -> Result<String, String> {
    Ok(format!(
        "{PLACEHOLDER_PREFIX}{}",
        random_hex(PLACEHOLDER_RANDOM / 2)?
    ))
}

/// One secret of a lease, as the gateway adds it.
pub struct Bound {
    pub credential: Credential,
    pub value: SecretBytes,
    pub placeholder: String,
}

/// What the gateway knows of one lease.
pub struct LeaseEntry {
    pub id: u64,
    /// The requester's uid: connections from it (or the agent's own) may use the lease.
    pub uid: u32,
    pub bound: Vec<Bound>,
    /// `[gateway]` as the policy said at the grant.
    pub settings: crate::policy::credential::GatewaySettings,
    /// Cancelled when the lease ends: its tunnels close.
    pub cancel: CancellationToken,
    /// The record every request of this lease is written from (lease, command, peer).
    pub base: Event,
    /// Its clients: [any version, HTTP/1.1 only (for upgrades)].
    clients: [OnceLock<Result<upstream::Client, String>>; 2],
}

impl LeaseEntry {
    pub fn new(
        id: u64,
        uid: u32,
        bound: Vec<Bound>,
        settings: crate::policy::credential::GatewaySettings,
        base: Event,
    ) -> LeaseEntry {
        LeaseEntry {
            id,
            uid,
            bound,
            settings,
            cancel: CancellationToken::new(),
            base,
            clients: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The secrets bound to `host` — on port 443 only (a credential goes to the HTTPS
    /// service it was made for, not to whatever else listens on that host).
    fn bound_to(&self, host: &str, port: u16) -> Vec<&Bound> {
        if port != 443 {
            return Vec::new();
        }
        self.bound
            .iter()
            .filter(|b| b.credential.binds(host))
            .collect()
    }

    fn client(
        &self,
        roots: &rustls::RootCertStore,
        h1_only: bool,
    ) -> Result<upstream::Client, String> {
        self.clients[usize::from(h1_only)]
            .get_or_init(|| upstream::client(self, roots, h1_only))
            .clone()
    }
}

/// The system's roots, from the distribution's bundle (at a fixed path: never from the
/// environment the agent was started with).
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for path in SYSTEM_BUNDLES {
        if let Ok(roots) = crate::policy::credential::load_roots(path) {
            for cert in roots.certs.iter() {
                let _ = store.add(cert.clone());
            }
            break;
        }
    }
    Arc::new(store)
}

/// State shared by the listener's tasks and the agent.
struct Shared {
    /// Active leases by the SHA-256 of their proxy credential.
    leases: Mutex<HashMap<[u8; 32], Arc<LeaseEntry>>>,
    /// Requests per binding in the last minute (for `rate`).
    rates: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// The CA, while the vault is unlocked.
    ca: Mutex<Option<Arc<ca::Authority>>>,
    /// The system's trust roots, loaded once.
    roots: OnceLock<Arc<rustls::RootCertStore>>,
    connections: Arc<tokio::sync::Semaphore>,
    /// Tunnels open at once (they outlive the connection's slot).
    tunnels: Arc<tokio::sync::Semaphore>,
    /// Bytes of request bodies held for screening at once.
    screening: Arc<tokio::sync::Semaphore>,
    /// When a connection from each other uid was last recorded as refused.
    refused: Mutex<HashMap<u32, Instant>>,
}

impl Shared {
    fn lease(&self, token: &[u8]) -> Option<Arc<LeaseEntry>> {
        let key: [u8; 32] = Sha256::digest(token).into();
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }

    fn ca(&self) -> Option<Arc<ca::Authority>> {
        self.ca.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The system's roots, from the distribution's bundle (at a fixed path: never
    /// from the environment the agent was started with).
    fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.get_or_init(system_roots).clone()
    }

    /// Whether a refused connection from `uid` is the first this minute (only that one
    /// is recorded: another user cannot flood the log).
    fn first_refusal_this_minute(&self, uid: u32) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if refused.len() > 1024 {
            refused.clear();
        }
        match refused.get(&uid) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
            _ => {
                refused.insert(uid, now);
                true
            }
        }
    }

    /// Counts a request against `c`'s rate; false if it is over.
    fn within_rate(&self, c: &Credential) -> bool {
        let Some(limit) = c.per_minute else {
            return true;
        };
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let seen = rates.entry(c.secret.clone()).or_default();
        while seen
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            seen.pop_front();
        }
        if seen.len() >= limit as usize {
            return false;
        }
        seen.push_back(now);
        true
    }
}

/// The gateway: not listening until the first lease that needs it.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: tokio::sync::OnceCell<SocketAddr>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            shared: Arc::new(Shared {
                leases: Mutex::new(HashMap::new()),
                rates: Mutex::new(HashMap::new()),
                ca: Mutex::new(None),
                roots: OnceLock::new(),
                connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
                tunnels: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
                screening: Arc::new(tokio::sync::Semaphore::new(MAX_SCREENING)),
                refused: Mutex::new(HashMap::new()),
            }),
            addr: tokio::sync::OnceCell::new(),
        }
    }
}

/// A lease's place in the gateway: while it lives, the proxy credential works; dropped
/// (with the lease, however it ends), the credential is gone and the tunnels close.
pub struct Registration {
    shared: Weak<Shared>,
    key: [u8; 32],
    cancel: CancellationToken,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registration")
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(shared) = self.shared.upgrade() {
            shared
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.key);
        }
    }
}

impl Gateway {
    /// Whether the CA is at hand (the vault was unlocked since it was last locked).
    pub fn has_ca(&self) -> bool {
        self.shared.ca().is_some()
    }

    pub fn ca_pem(&self) -> Option<String> {
        self.shared.ca().map(|c| c.pem().to_owned())
    }

    pub fn set_ca(&self, ca: ca::Authority) {
        *self.shared.ca.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(ca));
    }

    /// At lock: the CA key (and every certificate it made) is forgotten.
    pub fn forget(&self) {
        *self.shared.ca.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Where the gateway listens, if it was started.
    pub fn listening(&self) -> Option<SocketAddr> {
        self.addr.get().copied()
    }

    /// The gateway's address, listening from the first call on.
    pub async fn addr(&self, agent: Weak<Agent>) -> Result<SocketAddr, String> {
        let shared = self.shared.clone();
        self.addr
            .get_or_try_init(|| async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("the gateway cannot listen on 127.0.0.1 ({e})"))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| format!("the gateway has no address ({e})"))?;
                tracing::info!(%addr, "gateway listening");
                tokio::spawn(proxy::serve(listener, shared, agent));
                Ok(addr)
            })
            .await
            .copied()
    }

    /// Enters a lease; the returned token is its proxy credential.
    pub fn register(
        &self,
        entry: LeaseEntry,
    ) -> Result<(Registration, zeroize::Zeroizing<String>), String> {
        let token = zeroize::Zeroizing::new(random_hex(32)?);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cancel = entry.cancel.clone();
        self.shared
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Arc::new(entry));
        Ok((
            Registration {
                shared: Arc::downgrade(&self.shared),
                key,
                cancel,
            },
            token,
        ))
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.addr.get())
            .finish_non_exhaustive()
    }
}

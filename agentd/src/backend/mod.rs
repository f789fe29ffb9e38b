//! Backends: a team's OpenBao (or Vault) cluster behind `bao://BACKEND/PATH#FIELD`
//! references. The agent logs in with credentials that are ordinary jitc secrets (at
//! first use), renews its token in the background, logs in again when it has expired,
//! and forgets it at lock. A KV v2 path reads its current (or pinned) version; any other
//! path is an engine's endpoint, and a reply with a `lease_id` is a dynamic secret —
//! read once per path per lease, renewed while the jitc lease lives, revoked when it
//! ends (see `held`). Every call has a timeout; the next address is tried when one
//! cannot be reached or is sealed or on standby.

pub mod held;
pub mod journal;
mod reply;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use jitc_protocol::{ErrorCode, SecretBytes};
use zeroize::Zeroizing;

pub use reply::Field;
use reply::{Errors, Reply};

use crate::error::Refusal;
use crate::policy::backend::{Auth, Backend};

/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a reply read.
const MAX_REPLY: usize = 4 << 20;
/// Whether a 500's errors say the cluster has no active node (between leaders).
fn no_active_node(body: &[u8]) -> bool {
    serde_json::from_slice::<Errors>(body)
        .is_ok_and(|e| e.errors.iter().any(|m| m.contains("active")))
}

/// How long a cluster may take to elect a new active node before a call fails.
const FAILOVER: Duration = Duration::from_secs(20);
/// A token is renewed (or replaced) when it has less than this left.
const RENEW_MARGIN: Duration = Duration::from_secs(30);

/// Why a call failed, as the requester is told (never a value).
#[derive(Debug)]
pub enum BackendError {
    Unreachable(String),
    Sealed,
    Denied(String),
    NotFound(String),
    Other(String),
}

impl BackendError {
    pub fn refusal(&self, backend: &str) -> Refusal {
        match self {
            BackendError::Unreachable(why) => Refusal::new(
                ErrorCode::Unavailable,
                format!(
                    "backend '{backend}' cannot be reached ({why}); check the cluster and [backend.{backend}] addresses in policy.toml"
                ),
            ),
            BackendError::Sealed => Refusal::new(
                ErrorCode::Unavailable,
                format!(
                    "backend '{backend}' is sealed (or has no active node); unseal it, then try again"
                ),
            ),
            BackendError::Denied(what) => Refusal::new(
                ErrorCode::Refused,
                format!(
                    "backend '{backend}' denies {what}; check the policies of jitc's role there"
                ),
            ),
            BackendError::NotFound(what) => Refusal::new(
                ErrorCode::Failure,
                format!("backend '{backend}' has nothing at {what}"),
            ),
            BackendError::Other(why) => {
                Refusal::new(ErrorCode::Failure, format!("backend '{backend}': {why}"))
            }
        }
    }
}

/// The token the agent holds for one backend.
struct Token {
    value: Zeroizing<String>,
    /// `None`: it does not expire (a root or periodic token as given).
    expires: Option<Instant>,
    renewable: bool,
}

/// One backend as the agent talks to it.
pub struct Session {
    pub config: Backend,
    client: crate::gateway::upstream::Client,
    token: tokio::sync::Mutex<Option<Token>>,
    /// KV v2 mounts found (`secret/`), by the path asked about.
    mounts: Mutex<HashMap<String, Option<String>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.config.name)
    }
}

/// What a read gave.
#[derive(Debug)]
pub struct Read {
    pub data: Field,
    pub request_id: String,
    /// A dynamic secret's lease.
    pub lease: Option<BackendLease>,
}

#[derive(Debug, Clone)]
pub struct BackendLease {
    pub id: String,
    pub duration: Duration,
    pub renewable: bool,
}

/// The agent's backends, by name (made from the policy at first use).
#[derive(Debug)]
pub struct Backends {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    journal: journal::Journal,
    /// Dynamic secrets a previous run left unrevoked, revoked since this one started.
    recovered: std::sync::atomic::AtomicU32,
    /// Those it could not revoke yet (their backend lease ids).
    unrevoked: Mutex<Vec<String>>,
    /// Revocations under way (shutdown waits for them).
    revocations: tokio_util::task::TaskTracker,
}

impl Backends {
    /// Backends whose dynamic secrets are journaled in `dir`.
    pub fn new(dir: std::path::PathBuf) -> Backends {
        Backends {
            sessions: Mutex::new(HashMap::new()),
            journal: journal::Journal::new(dir),
            recovered: std::sync::atomic::AtomicU32::new(0),
            unrevoked: Mutex::new(Vec::new()),
            revocations: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Where the tasks that hold (and at the end revoke) dynamic secrets run.
    pub fn revocations(&self) -> &tokio_util::task::TaskTracker {
        &self.revocations
    }

    /// At shutdown: waits (at most 15 s) for the revocations under way.
    pub async fn wait_for_revocations(&self) {
        self.revocations.close();
        if tokio::time::timeout(Duration::from_secs(15), self.revocations.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "some backend leases were not revoked in time; the next unlock revokes them"
            );
        }
    }

    pub fn journal(&self) -> &journal::Journal {
        &self.journal
    }

    /// (revoked since start, still unrevoked) of what a previous run left behind.
    pub fn recovery(&self) -> (u32, Vec<String>) {
        (
            self.recovered.load(std::sync::atomic::Ordering::Relaxed),
            self.unrevoked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
    /// The session for `config` (a new one when the policy changed it).
    pub fn session(&self, config: &Backend) -> Result<Arc<Session>, Refusal> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sessions.get(&config.name)
            && s.config == *config
        {
            return Ok(s.clone());
        }
        let client = crate::gateway::upstream::plain_client(config.ca.as_ref()).map_err(|e| {
            Refusal::new(
                ErrorCode::Failure,
                format!("backend '{}': {e}", config.name),
            )
        })?;
        let s = Arc::new(Session {
            config: config.clone(),
            client,
            token: tokio::sync::Mutex::new(None),
            mounts: Mutex::new(HashMap::new()),
        });
        sessions.insert(config.name.clone(), s.clone());
        tokio::spawn(keep_alive(Arc::downgrade(&s)));
        Ok(s)
    }

    /// At lock: every token is forgotten.
    pub fn forget(&self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// The credentials a login needs, opened from the vault.
pub struct Credentials(Vec<SecretBytes>);

impl Credentials {
    pub fn new(values: Vec<SecretBytes>) -> Credentials {
        Credentials(values)
    }
}

impl Session {
    /// One call to each address in turn until one answers (not sealed, not standby).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        token: Option<&str>,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), BackendError> {
        // A cluster between leaders (its active node gone, a standby not yet elected)
        // answers 5xx for a few seconds: the round is tried again, a while. A cluster
        // none of whose addresses answers at all is unreachable at once.
        let deadline = Instant::now() + FAILOVER;
        let mut pause = Duration::from_millis(100);
        loop {
            let (result, answered) = self.round(&method, path, &body, token).await;
            match result {
                Err(e) if answered && Instant::now() + pause < deadline => {
                    tracing::debug!(backend = %self.config.name, "no active node yet ({e:?}); trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// One call to each address in turn; and whether any of them answered at all.
    async fn round(
        &self,
        method: &Method,
        path: &str,
        body: &Option<Zeroizing<Vec<u8>>>,
        token: Option<&str>,
    ) -> (Result<(StatusCode, Zeroizing<Vec<u8>>), BackendError>, bool) {
        let mut last = BackendError::Unreachable("no address".into());
        let mut answered = false;
        for base in &self.config.addresses {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(format!("{base}/v1/{path}"));
            if let Some(ns) = &self.config.namespace {
                req = req.header("X-Vault-Namespace", ns);
            }
            if let Some(t) = token {
                let Ok(mut v) = http::HeaderValue::from_str(t) else {
                    return (
                        Err(BackendError::Other("a token that is not text".into())),
                        false,
                    );
                };
                v.set_sensitive(true);
                req = req.header("X-Vault-Token", v);
            }
            let bytes = body
                .as_ref()
                .map_or_else(Bytes::new, |b| Bytes::copy_from_slice(b));
            let req = match req.header("Content-Type", "application/json").body(
                Full::new(bytes)
                    .map_err(|e: std::convert::Infallible| match e {})
                    .boxed_unsync(),
            ) {
                Ok(r) => r,
                Err(e) => {
                    return (
                        Err(BackendError::Other(format!("a bad request ({e})"))),
                        false,
                    );
                }
            };
            let sent = tokio::time::timeout(CALL_TIMEOUT, async {
                let resp = self.client.request(req).await?;
                let status = resp.status();
                let body = http_body_util::Limited::new(resp.into_body(), MAX_REPLY)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
            })
            .await;
            match sent {
                Err(_) => last = BackendError::Unreachable(format!("{base} timed out")),
                Ok(Err(e)) => {
                    let why = std::error::Error::source(&*e)
                        .map_or_else(|| e.to_string(), |s| s.to_string());
                    last = BackendError::Unreachable(format!("{base}: {why}"));
                }
                // Sealed: the next one (a sealed cluster is not waited for).
                Ok(Ok((s, _))) if s == StatusCode::SERVICE_UNAVAILABLE => {
                    last = BackendError::Sealed;
                }
                // A standby that does not forward (it redirects to the active node:
                // only configured addresses are followed, in turn), or no active node
                // yet: the next one, and the round again while the cluster elects.
                Ok(Ok((s, ref body)))
                    if s == StatusCode::TEMPORARY_REDIRECT
                        || s == StatusCode::PERMANENT_REDIRECT
                        || (s == StatusCode::INTERNAL_SERVER_ERROR && no_active_node(body))
                        || s.as_u16() == 429
                        || s.as_u16() == 472
                        || s.as_u16() == 473 =>
                {
                    answered = true;
                    last = BackendError::Sealed;
                }
                // Moved, not copied (the buffer is the reply's own): wiped when dropped.
                Ok(Ok((s, body))) => return (Ok((s, Zeroizing::new(Vec::from(body)))), true),
            }
        }
        (Err(last), answered)
    }

    /// A reply, or the error its status means.
    fn reply(status: StatusCode, body: &[u8], what: &str) -> Result<Reply, BackendError> {
        if status.is_success() {
            if body.is_empty() {
                return Ok(Reply {
                    request_id: String::new(),
                    lease_id: String::new(),
                    renewable: false,
                    lease_duration: 0,
                    data: None,
                    auth: None,
                });
            }
            return serde_json::from_slice(body).map_err(|e| {
                BackendError::Other(format!(
                    "an answer jitc cannot read (at line {}, column {})",
                    e.line(),
                    e.column()
                ))
            });
        }
        // The backend's own error text is not passed on: it could quote what it was
        // sent, or what it holds.
        Err(match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                BackendError::Denied(what.to_owned())
            }
            StatusCode::NOT_FOUND => BackendError::NotFound(what.to_owned()),
            _ => BackendError::Other(format!("{what}: status {status} (its log says more)")),
        })
    }

    /// Logs in with `creds` (the `auth` secrets' values, in `Auth::secrets` order).
    async fn login(&self, creds: &Credentials) -> Result<Token, BackendError> {
        match &self.config.auth {
            Auth::Token { .. } => {
                let value = Zeroizing::new(
                    String::from_utf8(
                        creds
                            .0
                            .first()
                            .map(|v| v.expose().to_vec())
                            .unwrap_or_default(),
                    )
                    .map_err(|_| BackendError::Other("the token secret is not text".into()))?,
                );
                // What it is worth: its TTL and whether it renews.
                let (status, body) = self
                    .call(Method::GET, "auth/token/lookup-self", None, Some(&value))
                    .await?;
                let reply = Self::reply(status, &body, "the token (lookup-self)")?;
                let data = reply.data.unwrap_or(Field::Other);
                let num = |k: &str| {
                    data.get(k)
                        .and_then(Field::text)
                        .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok())
                };
                let ttl = num("ttl").unwrap_or(0);
                let renewable = data.get("renewable").and_then(Field::text) == Some(b"true");
                Ok(Token {
                    value,
                    expires: (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl)),
                    renewable,
                })
            }
            Auth::AppRole { .. } => {
                let text = |i: usize| {
                    std::str::from_utf8(creds.0.get(i).map(|v| v.expose()).unwrap_or_default())
                        .map(str::to_owned)
                        .map_err(|_| {
                            BackendError::Other("an AppRole credential that is not text".into())
                        })
                };
                let (role_id, secret_id) = (Zeroizing::new(text(0)?), Zeroizing::new(text(1)?));
                // Written straight into a buffer that is wiped (no intermediate copies).
                #[derive(serde::Serialize)]
                struct Login<'a> {
                    role_id: &'a str,
                    secret_id: &'a str,
                }
                let mut body = Zeroizing::new(Vec::new());
                serde_json::to_writer(
                    &mut *body,
                    &Login {
                        role_id: &role_id,
                        secret_id: &secret_id,
                    },
                )
                .map_err(|e| BackendError::Other(format!("cannot write the login ({e})")))?;
                let (status, reply) = self
                    .call(Method::POST, "auth/approle/login", Some(body), None)
                    .await?;
                let reply = Self::reply(status, &reply, "the AppRole login")?;
                let auth = reply
                    .auth
                    .ok_or_else(|| BackendError::Other("a login without a token".into()))?;
                let value = Zeroizing::new(
                    String::from_utf8(auth.client_token.text().unwrap_or_default().to_vec())
                        .map_err(|_| BackendError::Other("a token that is not text".into()))?,
                );
                Ok(Token {
                    value,
                    expires: (auth.lease_duration > 0)
                        .then(|| Instant::now() + Duration::from_secs(auth.lease_duration)),
                    renewable: auth.renewable,
                })
            }
        }
    }

    /// The token to use now: renewed when it is about to expire, or a new login.
    async fn token(&self, creds: &Credentials) -> Result<Zeroizing<String>, BackendError> {
        let mut slot = self.token.lock().await;
        let soon = |t: &Token| {
            t.expires
                .is_some_and(|e| e.saturating_duration_since(Instant::now()) < RENEW_MARGIN)
        };
        if let Some(t) = slot.as_mut()
            && soon(t)
            && t.renewable
        {
            let (status, body) = self
                .call(
                    Method::POST,
                    "auth/token/renew-self",
                    Some(Zeroizing::new(b"{}".to_vec())),
                    Some(&t.value),
                )
                .await?;
            match Self::reply(status, &body, "the token's renewal") {
                Ok(Reply { auth: Some(a), .. }) if a.lease_duration > 0 => {
                    t.expires = Some(Instant::now() + Duration::from_secs(a.lease_duration));
                }
                _ => *slot = None,
            }
        }
        if slot
            .as_ref()
            .is_some_and(|t| soon(t) || t.expires.is_some_and(|e| e <= Instant::now()))
        {
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(self.login(creds).await?);
        }
        Ok(slot.as_ref().map(|t| t.value.clone()).unwrap_or_default())
    }

    /// When the token should next be renewed (at two thirds of what is left).
    async fn next_renewal(&self) -> Duration {
        match self.token.lock().await.as_ref() {
            Some(Token {
                expires: Some(e),
                renewable: true,
                ..
            }) => (e.saturating_duration_since(Instant::now()) * 2 / 3).max(Duration::from_secs(1)),
            _ => Duration::from_secs(30),
        }
    }

    /// Renews the token now, if it is renewable; forgets it if the renewal fails (the
    /// next use logs in again).
    async fn renew_now(&self) {
        let mut slot = self.token.lock().await;
        let Some(t) = slot.as_mut().filter(|t| t.renewable && t.expires.is_some()) else {
            return;
        };
        let renewed = match self
            .call(
                Method::POST,
                "auth/token/renew-self",
                Some(Zeroizing::new(b"{}".to_vec())),
                Some(&t.value),
            )
            .await
        {
            Ok((status, body)) => Self::reply(status, &body, "the token's renewal").ok(),
            Err(_) => None,
        };
        match renewed.and_then(|r| r.auth) {
            Some(a) if a.lease_duration > 0 => {
                t.expires = Some(Instant::now() + Duration::from_secs(a.lease_duration));
            }
            _ => *slot = None,
        }
    }

    /// Whether `value` holds the token the agent logs in with (never handed out).
    pub async fn holds_token(&self, value: &[u8]) -> bool {
        self.token.lock().await.as_ref().is_some_and(|t| {
            !t.value.is_empty() && memchr::memmem::find(value, t.value.as_bytes()).is_some()
        })
    }

    /// Forgets the token (it was refused: expired or revoked).
    async fn drop_token(&self) {
        *self.token.lock().await = None;
    }

    /// A call with the token, logging in again once if the token was refused.
    async fn authed(
        &self,
        creds: &Credentials,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        what: &str,
    ) -> Result<Reply, BackendError> {
        for attempt in 0..2 {
            let token = self.token(creds).await?;
            let (status, reply) = self
                .call(method.clone(), path, body.clone(), Some(&token))
                .await?;
            if status == StatusCode::FORBIDDEN && attempt == 0 {
                // A token that still works was simply denied this: no new login (each
                // would mint a token, and use up a secret_id). One that stopped working
                // (expired, revoked) is replaced once.
                let alive = matches!(
                    self.call(Method::GET, "auth/token/lookup-self", None, Some(&token)).await,
                    Ok((s, _)) if s.is_success()
                );
                if alive {
                    return Err(BackendError::Denied(what.to_owned()));
                }
                self.drop_token().await;
                continue;
            }
            return Self::reply(status, &reply, what);
        }
        Err(BackendError::Denied(what.to_owned()))
    }

    /// The KV v2 mount `path` lies under (`secret/`), if it does.
    async fn kv2_mount(
        &self,
        creds: &Credentials,
        path: &str,
    ) -> Result<Option<String>, BackendError> {
        if let Some(m) = self
            .mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return Ok(m.clone());
        }
        let found = match self
            .authed(
                creds,
                Method::GET,
                &format!("sys/internal/ui/mounts/{path}"),
                None,
                "the mount lookup",
            )
            .await
        {
            Ok(r) => {
                let data = r.data.unwrap_or(Field::Other);
                let kind = data.get("type").and_then(Field::text);
                let version = data
                    .get("options")
                    .and_then(|o| o.get("version"))
                    .and_then(Field::text);
                let mount = data
                    .get("path")
                    .and_then(Field::text)
                    .and_then(|p| std::str::from_utf8(p).ok());
                (kind == Some(b"kv") && version == Some(b"2"))
                    .then(|| mount.map(str::to_owned))
                    .flatten()
            }
            Err(BackendError::Denied(_) | BackendError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        self.mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_owned(), found.clone());
        Ok(found)
    }

    /// Reads `path` (`version` for KV v2).
    pub async fn read(
        &self,
        creds: &Credentials,
        path: &str,
        version: Option<u64>,
    ) -> Result<Read, BackendError> {
        let shown = path.to_owned();
        match self.kv2_mount(creds, path).await? {
            Some(mount) => {
                // Fail closed: a mount that does not prefix the path would read another
                // key than the one the rules judged.
                let Some(rest) = path.strip_prefix(mount.as_str()) else {
                    return Err(BackendError::Other(format!(
                        "{path} is not under its mount {mount}"
                    )));
                };
                let q = version.map(|v| format!("?version={v}")).unwrap_or_default();
                let r = self
                    .authed(
                        creds,
                        Method::GET,
                        &format!("{mount}data/{rest}{q}"),
                        None,
                        &shown,
                    )
                    .await?;
                let data = match r.data {
                    Some(Field::Map(mut m)) => m.remove("data").unwrap_or(Field::Other),
                    _ => Field::Other,
                };
                Ok(Read {
                    data,
                    request_id: r.request_id,
                    lease: None,
                })
            }
            None => {
                if version.is_some() {
                    return Err(BackendError::Other(format!(
                        "{path} is not under a KV v2 mount: ?version does not apply"
                    )));
                }
                let r = self.authed(creds, Method::GET, path, None, &shown).await?;
                let lease = (!r.lease_id.is_empty()).then(|| BackendLease {
                    id: r.lease_id.clone(),
                    duration: Duration::from_secs(r.lease_duration),
                    renewable: r.renewable,
                });
                Ok(Read {
                    data: r.data.unwrap_or(Field::Other),
                    request_id: r.request_id,
                    lease,
                })
            }
        }
    }

    /// The keys under `path` (a KV v2 mount's metadata, else the path itself listed).
    pub async fn keys(&self, creds: &Credentials, path: &str) -> Result<Vec<String>, BackendError> {
        let path = path.trim_matches('/');
        // Only a KV v2 mount's keys: other engines' listings (roles, leases) are not
        // secrets' names.
        let Some(mount) = self.kv2_mount(creds, &format!("{path}/")).await? else {
            return Err(BackendError::Other(format!(
                "{path} is not under a KV v2 mount; only KV keys are listed"
            )));
        };
        let Some(rest) = format!("{path}/")
            .strip_prefix(mount.as_str())
            .map(str::to_owned)
        else {
            return Err(BackendError::Other(format!(
                "{path} is not under its mount {mount}"
            )));
        };
        let target = format!("{mount}metadata/{rest}");
        let r = self
            .authed(
                creds,
                Method::GET,
                &format!("{target}?list=true"),
                None,
                path,
            )
            .await?;
        let keys = match r.data.as_ref().and_then(|d| d.get("keys")) {
            Some(Field::List(l)) => l
                .iter()
                .filter_map(Field::text)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect(),
            _ => Vec::new(),
        };
        Ok(keys)
    }

    /// Renews a dynamic secret's lease by `increment`.
    pub async fn renew(
        &self,
        creds: &Credentials,
        lease: &str,
        increment: Duration,
    ) -> Result<Duration, BackendError> {
        let body = Zeroizing::new(
            serde_json::to_vec(
                &serde_json::json!({"lease_id": lease, "increment": increment.as_secs()}),
            )
            .unwrap_or_default(),
        );
        let r = self
            .authed(
                creds,
                Method::PUT,
                &format!("sys/leases/renew/{lease}"),
                Some(body),
                "the renewal of a lease",
            )
            .await?;
        Ok(Duration::from_secs(r.lease_duration))
    }

    /// Revokes a dynamic secret's lease.
    pub async fn revoke(&self, creds: &Credentials, lease: &str) -> Result<(), BackendError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({"lease_id": lease})).unwrap_or_default(),
        );
        // The lease in the path, so that the backend's policy can bound which leases
        // jitc's role may revoke (`sys/leases/revoke/database/creds/*`).
        self.authed(
            creds,
            Method::PUT,
            &format!("sys/leases/revoke/{lease}"),
            Some(body),
            "the revocation of a lease",
        )
        .await?;
        Ok(())
    }
}

/// At unlock: revokes every dynamic secret the journal still holds — left by an agent
/// that stopped without revoking it (a crash, `kill -9`) — recording each.
pub fn recover(agent: &crate::agent::Agent, key: &[u8; 32]) {
    let (entries, planted) = agent.backends().journal().entries(key);
    if planted > 0 {
        tracing::warn!(
            planted,
            "entries in the backend journal the agent did not seal: ignored"
        );
        agent.audit().record_later(crate::audit::Event {
            reason: Some(format!(
                "{planted} entries in the backend-leases journal were not sealed by this vault's agent (planted, or from another vault): not revoked"
            )),
            ..crate::audit::Event::new(jitc_protocol::kinds::EventKind::BackendRevokeFailed)
        });
    }
    if entries.is_empty() {
        return;
    }
    tracing::warn!(
        count = entries.len(),
        "backend leases left unrevoked by an earlier run: revoking them"
    );
    *agent
        .backends()
        .unrevoked
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = entries.iter().map(|e| e.lease_id.clone()).collect();
    let me = agent.me();
    tokio::spawn(async move {
        for e in entries {
            let Some(agent) = me.upgrade() else {
                return;
            };
            let result = recover_one(&agent, &e).await;
            let (kind, reason) = match &result {
                Ok(()) => {
                    agent.backends().journal().remove(&e.backend, &e.lease_id);
                    agent
                        .backends()
                        .recovered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    agent
                        .backends()
                        .unrevoked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|l| *l != e.lease_id);
                    (
                        jitc_protocol::kinds::EventKind::BackendRevoked,
                        "left unrevoked by an agent that stopped without revoking it (a crash?); revoked at unlock".to_owned(),
                    )
                }
                Err(r) => (
                    jitc_protocol::kinds::EventKind::BackendRevokeFailed,
                    format!(
                        "left unrevoked by an earlier run, and still not revoked: {}",
                        r.message
                    ),
                ),
            };
            tracing::warn!(lease_id = %e.lease_id, "{reason}");
            agent.audit().record_later(crate::audit::Event {
                lease: (e.lease != 0).then_some(e.lease),
                reason: Some(reason),
                backend: vec![crate::audit::BackendRecord {
                    backend: e.backend.clone(),
                    path: None,
                    lease_id: Some(e.lease_id.clone()),
                    request_id: None,
                }],
                ..crate::audit::Event::new(kind)
            });
        }
    });
}

async fn recover_one(agent: &crate::agent::Agent, e: &journal::Entry) -> Result<(), Refusal> {
    let policy = agent.policy()?;
    let config = policy
        .backends
        .iter()
        .find(|b| b.name == e.backend)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::Failure,
                format!("no [backend.{}] in policy.toml any more", e.backend),
            )
        })?
        .clone();
    let creds = credentials(agent, &config).await?;
    let session = agent.backends().session(&config)?;
    session
        .revoke(&creds, &e.lease_id)
        .await
        .map_err(|err| err.refusal(&e.backend))
}

/// `jitc ls --backend NAME PATH`: the keys, never values.
pub async fn list(
    agent: &crate::agent::Agent,
    backend: &str,
    path: &str,
) -> Result<jitc_protocol::Response, Refusal> {
    // The grammar of a reference's path (and none of the cluster's own machinery).
    let probe = format!("bao://{backend}/{}#x", path.trim_matches('/'));
    if let Err(why) = jitc_protocol::names::parse_backend_ref(&probe) {
        return Err(Refusal::bad_input(format!(
            "cannot list '{}': it {why}",
            path.escape_debug()
        )));
    }
    let policy = agent.policy()?;
    let config = policy
        .backends
        .iter()
        .find(|b| b.name == backend)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::Failure,
                format!("no backend '{backend}' in policy.toml; add [backend.{backend}]"),
            )
        })?
        .clone();
    let creds = credentials(agent, &config).await?;
    let session = agent.backends().session(&config)?;
    let keys = session
        .keys(&creds, path)
        .await
        .map_err(|e| e.refusal(backend))?;
    agent.audit().record_later(crate::audit::Event {
        backend: vec![crate::audit::BackendRecord {
            backend: backend.to_owned(),
            path: Some(path.to_owned()),
            lease_id: None,
            request_id: None,
        }],
        ..crate::audit::Event::new(jitc_protocol::kinds::EventKind::BackendListed)
    });
    Ok(jitc_protocol::Response::BackendKeys(keys))
}

/// The credentials `config` logs in with, opened from the vault.
pub async fn credentials(
    agent: &crate::agent::Agent,
    config: &Backend,
) -> Result<Credentials, Refusal> {
    let slot = agent.unlocked().await?;
    let vault = slot.as_ref().ok_or_else(|| agent.locked_refusal())?;
    let mut out = Vec::new();
    for name in config.auth.secrets() {
        out.push(vault.open_value(name).map_err(|_| {
            Refusal::new(
                ErrorCode::Failure,
                format!(
                    "backend '{}' logs in with the jitc secret '{name}', which the vault does not hold; add it with 'jitc add {name}'",
                    config.name
                ),
            )
        })?);
    }
    Ok(Credentials::new(out))
}

/// Keeps a session's token alive in the background while the session exists (the
/// policy names the backend and the vault is unlocked).
async fn keep_alive(session: std::sync::Weak<Session>) {
    loop {
        let wait = match session.upgrade() {
            Some(s) => s.next_renewal().await,
            None => return,
        };
        tokio::time::sleep(wait).await;
        match session.upgrade() {
            Some(s) => s.renew_now().await,
            None => return,
        }
    }
}

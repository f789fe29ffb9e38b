//! `Client`: a blocking connection to the agent. No async runtime: `jitc` has to start
//! and finish in about a millisecond.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jitc_protocol::{
    AddSecret, AgentStatus, Explanation, FrameBuf, Hello, KdfParams, LeaseGrant, LeaseInfo,
    LeaseRequest, PROTOCOL_VERSION, PendingInfo, Request, Response, SecretBytes, SecretInfo,
    Welcome, write_frame,
};

use crate::error::{Error, Result};

/// How long to wait for any one answer. Generous: unlocking may include Argon2 and the
/// wrong-passphrase backoff; a hung agent still cannot hang `jitc` forever.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// One answer to a lease request.
#[derive(Debug)]
pub enum LeaseReply {
    Granted(LeaseGrant),
    /// The request waits for a human; the grant (or a refusal) comes later.
    Waiting(jitc_protocol::Waiting),
}

#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    welcome: Welcome,
    ended: Vec<(u64, String)>,
    /// Frames read ahead (one read usually brings a whole answer).
    buf: FrameBuf,
}

impl Client {
    /// Connects and says hello. A socket nobody answers on is `Error::NotRunning`; an
    /// agent run by another user is refused before a single byte is sent to it.
    pub fn connect(path: &Path) -> Result<Client> {
        let stream = UnixStream::connect(path).map_err(|source| Error::NotRunning {
            path: path.to_owned(),
            source,
            hint: "start one with 'jitc agent'",
        })?;
        check_agent_owner(&stream, path)?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(|e| Error::Transport(e.into()))?;
        let mut client = Client {
            stream,
            path: path.to_owned(),
            welcome: Welcome {
                protocol_version: 0,
                agent_version: String::new(),
                pid: 0,
            },
            ended: Vec::new(),
            buf: FrameBuf::default(),
        };
        match client.call(&Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }))? {
            Response::Welcome(w) if w.protocol_version == PROTOCOL_VERSION => {
                client.welcome = w;
                Ok(client)
            }
            Response::Welcome(w) => Err(Error::local(
                jitc_protocol::ErrorCode::Unavailable,
                format!(
                    "the agent (pid {}) speaks protocol {} but this jitc speaks {PROTOCOL_VERSION}; restart it ('kill {}', then 'jitc agent')",
                    w.pid, w.protocol_version, w.pid
                ),
            )),
            _ => Err(Error::Unexpected("no welcome")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends one request and returns its answer; `Response::Error` becomes `Error::Agent`.
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        self.send(request)?;
        self.expect_reply()
    }

    /// Sends a request without waiting for its answer (read it with `recv`).
    pub fn send(&mut self, request: &Request) -> Result<()> {
        if let Err(e) = write_frame(&mut self.stream, request) {
            // The agent may have refused us and closed before reading (another uid):
            // its refusal is still waiting to be read, and says more than EPIPE.
            return match self.recv() {
                Err(refusal @ Error::Agent { .. }) => Err(refusal),
                _ => Err(e.into()),
            };
        }
        Ok(())
    }

    /// Reads the next message from the agent (a reply, or a push such as `LeaseEnded`).
    /// `Ok(None)` when the agent closed the connection.
    pub fn recv(&mut self) -> Result<Option<Response>> {
        match self.buf.read(&mut &self.stream)? {
            None => Ok(None),
            Some(Response::Error { code, message }) => Err(Error::Agent { code, message }),
            Some(r) => Ok(Some(r)),
        }
    }

    /// Whether bytes from the agent are already buffered here: then `recv` may return
    /// without the socket ever polling readable again, so check this before polling.
    pub fn has_buffered(&self) -> bool {
        self.buf.has_data()
    }

    /// The reply to the request just sent. A `LeaseEnded` pushed in between is kept for
    /// `take_ended` rather than mistaken for the reply.
    fn expect_reply(&mut self) -> Result<Response> {
        loop {
            match self.recv()? {
                Some(Response::LeaseEnded { lease, reason }) => self.ended.push((lease, reason)),
                Some(r) => return Ok(r),
                None => {
                    return Err(Error::Transport(
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the agent closed the connection",
                        )
                        .into(),
                    ));
                }
            }
        }
    }

    /// Lease endings that arrived while waiting for a reply.
    pub fn take_ended(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.ended)
    }

    fn expect_done(&mut self, request: &Request) -> Result<()> {
        match self.call(request)? {
            Response::Done => Ok(()),
            _ => Err(Error::Unexpected("not done")),
        }
    }

    pub fn status(&mut self) -> Result<AgentStatus> {
        match self.call(&Request::Status)? {
            Response::Status(s) => Ok(s),
            _ => Err(Error::Unexpected("no status")),
        }
    }

    pub fn init(&mut self, passphrase: SecretBytes, kdf: KdfParams) -> Result<()> {
        self.expect_done(&Request::Init { passphrase, kdf })
    }

    pub fn unlock(&mut self, passphrase: SecretBytes) -> Result<()> {
        self.expect_done(&Request::Unlock { passphrase })
    }

    pub fn lock(&mut self) -> Result<()> {
        self.expect_done(&Request::Lock)
    }

    pub fn add(&mut self, add: AddSecret) -> Result<()> {
        self.expect_done(&Request::AddSecret(add))
    }

    pub fn remove(&mut self, name: &str) -> Result<()> {
        self.expect_done(&Request::RemoveSecret {
            name: name.to_owned(),
        })
    }

    pub fn list(&mut self) -> Result<Vec<SecretInfo>> {
        match self.call(&Request::ListSecrets)? {
            Response::Secrets(s) => Ok(s),
            _ => Err(Error::Unexpected("no list")),
        }
    }

    /// Asks for a lease. It lasts until `release`, the agent ends it (a `LeaseEnded`
    /// arrives on this connection), or this client goes away.
    pub fn lease(&mut self, request: LeaseRequest) -> Result<LeaseGrant> {
        self.send(&Request::Lease(request))?;
        loop {
            if let LeaseReply::Granted(g) = self.lease_reply()? {
                return Ok(g);
            }
        }
    }

    /// The next answer to a `Lease` request already sent: the grant, or a notice that
    /// it waits for approval (more will follow).
    pub fn lease_reply(&mut self) -> Result<LeaseReply> {
        match self.expect_reply()? {
            Response::Leased(grant) => Ok(LeaseReply::Granted(grant)),
            Response::Waiting(w) => Ok(LeaseReply::Waiting(w)),
            _ => Err(Error::Unexpected("no lease")),
        }
    }

    /// Hands a lease back. One-way (the agent does not answer), so a lease costs one
    /// round trip; closing the connection releases it too.
    pub fn release(&mut self, lease: u64) -> Result<()> {
        self.send(&Request::Release { lease })
    }

    pub fn leases(&mut self) -> Result<Vec<LeaseInfo>> {
        match self.call(&Request::ListLeases)? {
            Response::Leases(l) => Ok(l),
            _ => Err(Error::Unexpected("no leases")),
        }
    }

    /// Ends lease `lease`, or every lease; returns how many ended.
    pub fn revoke(&mut self, lease: Option<u64>) -> Result<u32> {
        match self.call(&Request::Revoke { lease })? {
            Response::Revoked { count } => Ok(count),
            _ => Err(Error::Unexpected("no revoke count")),
        }
    }

    pub fn pending(&mut self) -> Result<Vec<PendingInfo>> {
        match self.call(&Request::ListPending)? {
            Response::Pending(p) => Ok(p),
            _ => Err(Error::Unexpected("no pending list")),
        }
    }

    pub fn approve(&mut self, id: u64, passphrase: SecretBytes) -> Result<()> {
        self.expect_done(&Request::Approve { id, passphrase })
    }

    pub fn deny(&mut self, id: u64) -> Result<()> {
        self.expect_done(&Request::Deny { id })
    }

    pub fn audit_verify(&mut self) -> Result<jitc_protocol::AuditReport> {
        match self.call(&Request::AuditVerify)? {
            Response::AuditReport(r) => Ok(r),
            _ => Err(Error::Unexpected("no audit report")),
        }
    }

    pub fn audit_accept(&mut self, passphrase: SecretBytes) -> Result<jitc_protocol::AuditReport> {
        match self.call(&Request::AuditAccept { passphrase })? {
            Response::AuditReport(r) => Ok(r),
            _ => Err(Error::Unexpected("no audit report")),
        }
    }

    pub fn explain(&mut self, request: LeaseRequest) -> Result<Explanation> {
        match self.call(&Request::Explain(request))? {
            Response::Explanation(e) => Ok(e),
            _ => Err(Error::Unexpected("no explanation")),
        }
    }
}

/// The agent must run as us: whoever else listens on a path we were pointed at (a
/// squatted `/tmp/jitc-$UID`, say) would receive passphrases and values. Only root may
/// talk to another user's agent, and only on a socket it named itself in `JITC_SOCK`.
fn check_agent_owner(stream: &UnixStream, path: &Path) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Error::Transport(io::Error::from(e).into()))?;
    let agent = cred.uid();
    let chosen_by_root = me == 0
        && std::env::var_os(jitc_protocol::paths::SOCKET_ENV)
            .is_some_and(|p| Path::new(&p) == path);
    if agent == me || chosen_by_root {
        return Ok(());
    }
    Err(Error::local(
        jitc_protocol::ErrorCode::Refused,
        format!(
            "refusing the agent at {}: it runs as uid {agent}, not as you (uid {me}); remove that socket or set JITC_SOCK to your own agent's",
            path.display()
        ),
    ))
}

impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

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
    /// How long the agent may take to answer (the socket's read timeout).
    timeout: Duration,
}

impl Client {
    /// Connects and says hello. A socket nobody answers on is `Error::NotRunning`; an
    /// agent run by another user is refused before a single byte is sent to it.
    pub fn connect(path: &Path) -> Result<Client> {
        Self::connect_within(path, REPLY_TIMEOUT)
    }

    /// `connect`, where the agent must answer each request within `timeout` (a TAB, or
    /// `jitc doctor`, must not wait minutes on an agent that hangs).
    pub fn connect_within(path: &Path, timeout: Duration) -> Result<Client> {
        let stream = UnixStream::connect(path).map_err(|source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                return permission_denied(path);
            }
            Error::NotRunning {
                path: path.to_owned(),
                source,
                hint: "start one with 'jitc agent'",
            }
        })?;
        check_agent_owner(&stream, path)?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
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
            timeout,
        };
        let hello = client.call(&Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }));
        // An agent that dies (`kill -9`) with connections still in its backlog resets
        // them: before any welcome, that is no agent at all.
        let hello = match hello {
            Err(Error::Transport(e)) if gone_before_welcome(&e) => {
                return Err(Error::NotRunning {
                    path: path.to_owned(),
                    source: io::Error::new(io::ErrorKind::ConnectionReset, e.to_string()),
                    hint: "start one with 'jitc agent'",
                });
            }
            other => other?,
        };
        match hello {
            Response::Welcome(w) if w.protocol_version == PROTOCOL_VERSION => {
                client.welcome = w;
                crate::exec::spawn::harden()?;
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
        let mut from = Readable {
            stream: &self.stream,
            timeout: self.timeout,
        };
        match self.buf.read(&mut from)? {
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

    /// The reply to the request sent last. A `LeaseEnded` pushed in between is kept for
    /// `take_ended` rather than mistaken for the reply.
    pub fn expect_reply(&mut self) -> Result<Response> {
        loop {
            match self.recv()? {
                Some(Response::LeaseEnded { lease, reason }) => self.ended.push((lease, reason)),
                Some(r) => return Ok(r),
                None => return Err(closed()),
            }
        }
    }

    /// Lease endings that arrived while waiting for a reply.
    pub fn take_ended(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.ended)
    }

    /// Sends `request` and takes the answer `pick` accepts; anything else is
    /// `Unexpected(what)`.
    fn call_for<T>(
        &mut self,
        request: &Request,
        what: &'static str,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T> {
        pick(self.call(request)?).ok_or(Error::Unexpected(what))
    }

    fn expect_done(&mut self, request: &Request) -> Result<()> {
        self.call_for(request, "not done", |r| {
            matches!(r, Response::Done).then_some(())
        })
    }

    /// A write that may need the vault passphrase: done, or the agent's word on what
    /// needs it.
    fn write(&mut self, request: &Request) -> Result<Written> {
        self.send(request)?;
        loop {
            match self.expect_reply()? {
                Response::Done => return Ok(Written::Done),
                Response::NeedsPassphrase(what) => return Ok(Written::NeedsPassphrase(what)),
                // The policy asks a human to approve it: say how, and wait.
                Response::Waiting(w) => crate::error::note(&waiting_note(&w)),
                _ => return Err(Error::Unexpected("not done")),
            }
        }
    }

    pub fn status(&mut self) -> Result<AgentStatus> {
        self.call_for(&Request::Status, "no status", |r| match r {
            Response::Status(s) => Some(s),
            _ => None,
        })
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

    /// Stops the agent (`jitc stop`).
    pub fn stop(&mut self) -> Result<()> {
        self.expect_done(&Request::Stop)
    }

    pub fn add(&mut self, add: AddSecret) -> Result<Written> {
        self.write(&Request::AddSecret(add))
    }

    /// Stores several secrets as one write (all or none, one save).
    pub fn add_batch(&mut self, batch: jitc_protocol::AddSecrets) -> Result<Written> {
        self.write(&Request::AddSecrets(batch))
    }

    pub fn remove(&mut self, name: &str, passphrase: Option<SecretBytes>) -> Result<Written> {
        self.write(&Request::RemoveSecret {
            name: name.to_owned(),
            passphrase,
        })
    }

    pub fn rename(
        &mut self,
        from: &str,
        to: &str,
        passphrase: Option<SecretBytes>,
    ) -> Result<Written> {
        self.write(&Request::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            passphrase,
        })
    }

    pub fn describe(&mut self, name: &str, description: Option<String>) -> Result<()> {
        self.expect_done(&Request::Describe {
            name: name.to_owned(),
            description,
        })
    }

    pub fn passwd(&mut self, old: SecretBytes, new: SecretBytes) -> Result<()> {
        self.expect_done(&Request::Passwd { old, new })
    }

    pub fn policy_reset(&mut self, passphrase: SecretBytes) -> Result<()> {
        self.expect_done(&Request::PolicyReset { passphrase })
    }

    /// Registers the sandbox whose first process is `req.pid` (see `jitc sandbox`).
    pub fn register_sandbox(
        &mut self,
        req: jitc_protocol::SandboxRequest,
    ) -> Result<jitc_protocol::SandboxInfo> {
        self.call_for(&Request::RegisterSandbox(req), "no sandbox", |r| match r {
            Response::SandboxRegistered(s) => Some(s),
            _ => None,
        })
    }

    /// Stores new secrets from `file` after a human approves; `waiting` hears the id of
    /// the approval request while it waits.
    pub fn import_secrets(
        &mut self,
        file: &str,
        entries: Vec<jitc_protocol::LeasedValue>,
        mut waiting: impl FnMut(u64),
    ) -> Result<()> {
        self.send(&Request::ImportSecrets(jitc_protocol::ImportSecrets {
            file: file.to_owned(),
            entries,
        }))?;
        loop {
            match self.expect_reply()? {
                Response::Done => return Ok(()),
                Response::Waiting(w) => waiting(w.id),
                _ => return Err(Error::Unexpected("not done")),
            }
        }
    }

    /// Asks the user, through the agent, for a secret the vault does not hold.
    pub fn request_secret(&mut self, name: &str, description: Option<String>) -> Result<()> {
        self.expect_done(&Request::RequestSecret(jitc_protocol::SecretWanted {
            name: name.to_owned(),
            description,
            requested: 0,
        }))
    }

    /// Secrets asked for and not yet added.
    pub fn requested(&mut self) -> Result<Vec<jitc_protocol::SecretWanted>> {
        self.call_for(&Request::ListRequested, "no requested list", |r| match r {
            Response::Requested(w) => Some(w),
            _ => None,
        })
    }

    /// The keys under `path` in backend `backend`.
    pub fn list_backend(&mut self, backend: &str, path: &str) -> Result<Vec<String>> {
        let req = Request::ListBackend {
            backend: backend.to_owned(),
            path: path.to_owned(),
        };
        self.call_for(&req, "no key list", |r| match r {
            Response::BackendKeys(k) => Some(k),
            _ => None,
        })
    }

    pub fn list(&mut self) -> Result<Vec<SecretInfo>> {
        let mut all = Vec::new();
        self.list_pages(|page| {
            all.extend(page);
            Ok(())
        })?;
        Ok(all)
    }

    /// Every secret's metadata, handed to `each` a page at a time as it arrives (a
    /// listing of any length, printed as it comes); `list_pages_ref`'s pages, owned.
    pub fn list_pages(
        &mut self,
        mut each: impl FnMut(Vec<SecretInfo>) -> Result<()>,
    ) -> Result<()> {
        self.list_pages_ref(|items| each(items.iter().map(|&i| i.into()).collect()))
    }

    /// Every secret's metadata, a page at a time, each page borrowed from the frame it
    /// came in (no name is copied: what `jitc ls` prints of 100,000 secrets).
    pub fn list_pages_ref(
        &mut self,
        mut each: impl FnMut(&[jitc_protocol::SecretInfoRef<'_>]) -> Result<()>,
    ) -> Result<()> {
        /// What came: a page (handed to `each`), or another answer.
        enum Got {
            Page { more: bool },
            Other(Box<Response>),
        }
        let mut after = String::new();
        loop {
            self.send(&Request::ListSecrets { after })?;
            let mut next = String::new();
            // The page, past any lease ending pushed in between (kept, as
            // `expect_reply` keeps it).
            let more = loop {
                let got = self
                    .buf
                    .read_with(&mut &self.stream, |payload| -> Result<Got> {
                        match jitc_protocol::borrow_secrets_page(payload)? {
                            Some((items, more)) => {
                                let Some(last) = items.last() else {
                                    return Ok(Got::Page { more: false });
                                };
                                next = last.name.to_owned();
                                each(&items)?;
                                Ok(Got::Page { more })
                            }
                            None => Ok(Got::Other(Box::new(jitc_protocol::decode(payload)?))),
                        }
                    })?;
                match got.ok_or_else(closed)?? {
                    Got::Page { more } => break more,
                    Got::Other(other) => match *other {
                        Response::LeaseEnded { lease, reason } => self.ended.push((lease, reason)),
                        Response::Error { code, message } => {
                            return Err(Error::Agent { code, message });
                        }
                        _ => return Err(Error::Unexpected("no list")),
                    },
                }
            };
            if !more {
                return Ok(());
            }
            after = next;
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

    /// Every active lease, page after page.
    pub fn leases(&mut self) -> Result<Vec<LeaseInfo>> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |l: &LeaseInfo| l.id);
            let (items, more) =
                self.call_for(&Request::ListLeases { after }, "no leases", |r| match r {
                    Response::Leases { items, more } => Some((items, more)),
                    _ => None,
                })?;
            let empty = items.is_empty();
            all.extend(items);
            if !more || empty {
                return Ok(all);
            }
        }
    }

    /// Ends lease `lease`, or every lease; returns how many ended.
    pub fn revoke(&mut self, lease: Option<u64>) -> Result<u32> {
        self.call_for(&Request::Revoke { lease }, "no revoke count", |r| match r {
            Response::Revoked { count } => Some(count),
            _ => None,
        })
    }

    /// Every request waiting for approval, page after page.
    pub fn pending(&mut self) -> Result<Vec<PendingInfo>> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |p: &PendingInfo| p.id);
            let (items, more) = self.call_for(
                &Request::ListPending { after },
                "no pending list",
                |r| match r {
                    Response::Pending { items, more } => Some((items, more)),
                    _ => None,
                },
            )?;
            let empty = items.is_empty();
            all.extend(items);
            if !more || empty {
                return Ok(all);
            }
        }
    }

    pub fn approve(&mut self, id: u64, passphrase: SecretBytes) -> Result<()> {
        self.expect_done(&Request::Approve { id, passphrase })
    }

    pub fn deny(&mut self, id: u64) -> Result<()> {
        self.expect_done(&Request::Deny { id })
    }

    pub fn audit_verify(&mut self) -> Result<jitc_protocol::AuditReport> {
        self.call_for(&Request::AuditVerify, "no audit report", |r| match r {
            Response::AuditReport(r) => Some(r),
            _ => None,
        })
    }

    pub fn audit_accept(&mut self, passphrase: SecretBytes) -> Result<jitc_protocol::AuditReport> {
        self.call_for(
            &Request::AuditAccept { passphrase },
            "no audit report",
            |r| match r {
                Response::AuditReport(r) => Some(r),
                _ => None,
            },
        )
    }

    pub fn explain(&mut self, request: LeaseRequest) -> Result<Explanation> {
        self.call_for(&Request::Explain(request), "no explanation", |r| match r {
            Response::Explanation(e) => Some(e),
            _ => None,
        })
    }
}

/// What `jitc` says while a request waits for approval.
pub fn waiting_note(w: &jitc_protocol::Waiting) -> String {
    match (&w.approver, &w.approver_failed) {
        (_, Some(failed)) => format!(
            "the approver {failed}; waiting for approval — run 'jitc approve {}' in your terminal",
            w.id
        ),
        (Some(a), None) => format!(
            "waiting for approval from {} — or run 'jitc approve {}' in your terminal",
            jitc_protocol::display::visible(a),
            w.id
        ),
        (None, None) => format!(
            "waiting for approval — run 'jitc approve {}' in your terminal",
            w.id
        ),
    }
}

/// The outcome of a write that may need a human.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// Send it again with the vault passphrase; says what needs it.
    NeedsPassphrase(String),
}

/// "Permission denied" at a socket: say whose it is (or whose directory), which is
/// what decides what to do next.
fn permission_denied(path: &Path) -> Error {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    // The socket, or the nearest directory above it that can be looked at.
    let owner = path
        .ancestors()
        .find_map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (p.to_path_buf(), m.uid()))
        })
        .ok_or(());
    let whose = match owner {
        Ok((p, uid)) if uid != me => format!(
            "{} belongs to uid {uid}, not to you (uid {me}); set JITC_SOCK to your own agent's socket, or start one with 'jitc agent'",
            p.display()
        ),
        Ok((p, _)) => format!(
            "{} is yours but not open to you; check its permissions (the directory 0700, the socket 0600)",
            p.display()
        ),
        Err(_) => "check the permissions of its directory".to_owned(),
    };
    Error::local(
        jitc_protocol::ErrorCode::Refused,
        format!("permission denied at {}: {whose}", path.display()),
    )
}

/// Whether a failed hello means the agent went away (rather than misbehaved).
fn gone_before_welcome(e: &jitc_protocol::FrameError) -> bool {
    use jitc_protocol::FrameError;
    match e {
        FrameError::Truncated => true,
        FrameError::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionAborted
        ),
        _ => false,
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

/// The error for an agent that closed the connection before answering.
fn closed() -> Error {
    Error::Transport(
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the agent closed the connection",
        )
        .into(),
    )
}

/// The socket, read only once it polls readable.
///
/// A reader blocked in `read` sleeps on the socket's one wait queue, where the kernel
/// also wakes waiters for room to write: each time the agent takes in one of our
/// requests, it would wake us for nothing, and pay for that wakeup (an IPI to another
/// CPU) on its own time. `poll` for `POLLIN` is woken for data only.
struct Readable<'a> {
    stream: &'a UnixStream,
    timeout: Duration,
}

impl io::Read for Readable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let timeout = PollTimeout::try_from(self.timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            // As the socket's own read timeout would say it.
            Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        io::Read::read(&mut &*self.stream, buf)
    }
}

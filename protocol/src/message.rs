//! `Request` and `Response`: every message on the agent socket.
//!
//! Compatibility rule: `Request::Hello` and `Response::Error`/`Response::Welcome` keep
//! their positions and shapes forever, so that any two versions can at least tell each
//! other that they do not match. Everything else may change with `PROTOCOL_VERSION`.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, SecretBytes};

/// A message from `jitc` to the agent.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Request {
    /// Always the first message on a connection.
    Hello(Hello),
    Status,
    Init {
        passphrase: SecretBytes,
        kdf: KdfParams,
    },
    Unlock {
        passphrase: SecretBytes,
    },
    Lock,
    AddSecret(AddSecret),
    /// Remove a secret; needs `passphrase` (a human) unless the policy's approval flow
    /// stands in for it.
    RemoveSecret {
        name: String,
        passphrase: Option<SecretBytes>,
    },
    /// Rename a secret (a write to an existing secret: the passphrase, as for removal).
    Rename {
        from: String,
        to: String,
        passphrase: Option<SecretBytes>,
    },
    /// Change (or, with `None`, clear) a secret's description; its value stays.
    Describe {
        name: String,
        description: Option<String>,
    },
    /// Change the vault passphrase: the vault key is wrapped anew; `old` stops working.
    Passwd {
        old: SecretBytes,
        new: SecretBytes,
    },
    /// Secrets with names after `after` (in byte order; `""`: from the first), a page
    /// at a time.
    ListSecrets {
        after: String,
    },
    /// Ask for a lease; it lasts until `Release`, expiry, or the connection closes.
    Lease(LeaseRequest),
    /// Hand a lease back. The only request without an answer.
    Release {
        lease: u64,
    },
    /// The command of this lease is about to run: it leads a process group, a child of
    /// the requester, that the agent stops itself if the requester cannot (it died, or
    /// does not end the command when the lease ends). Answered `Done` once the agent
    /// holds the group; the command runs only then.
    Guard {
        lease: u64,
    },
    /// Active leases with ids above `after`, a page at a time.
    ListLeases {
        after: u64,
    },
    /// End one lease, or every lease (`None`).
    Revoke {
        lease: Option<u64>,
    },
    /// Requests waiting for approval with ids above `after`, a page at a time.
    ListPending {
        after: u64,
    },
    /// Approve a waiting request; the vault passphrase proves a human is there.
    Approve {
        id: u64,
        passphrase: SecretBytes,
    },
    Deny {
        id: u64,
    },
    /// What the policy would decide for this lease request; nothing is leased.
    Explain(LeaseRequest),
    /// Check the audit trail's chain of tags (needs the unlocked vault's key).
    AuditVerify,
    /// Accept the audit log as it now is, after it was cut short or started afresh
    /// (the break stays on record); the vault passphrase proves a human is there.
    AuditAccept {
        passphrase: SecretBytes,
    },
    /// Stop the agent (as `ssh-agent -k`): every lease ends, the vault is locked, the
    /// socket removed. Answered `Done` before it goes.
    Stop,
    /// Accept that the policy file the agent had seen is gone: the defaults apply again.
    /// The passphrase proves a human is there.
    PolicyReset {
        passphrase: SecretBytes,
    },
    /// Register a sandbox `jitc sandbox` just made: `pid` is its first process, already
    /// in the sandbox's user namespace and held before the program starts. Every request
    /// from that namespace, or one nested below it, gets `profile` from then on.
    /// Refused from inside any sandbox.
    RegisterSandbox(SandboxRequest),
    /// A secret the requester needs that the vault does not hold: kept (in memory) for
    /// the user to add, and listed until they do. No value ever comes this way.
    RequestSecret(SecretWanted),
    /// The secrets requested and not yet added.
    ListRequested,
    /// The keys under `path` in a backend (`jitc ls --backend NAME PATH`): names, never
    /// values.
    ListBackend {
        backend: String,
        path: String,
    },
    /// Store new secrets read from a plaintext file (`import_env_file`), all or none,
    /// after a human approves — always, whoever asks. Never replaces a name.
    ImportSecrets(ImportSecrets),
    /// Store several secrets (`jitc import`) as one write: all or none, one save, one
    /// human check where any of them needs one (as `AddSecret` would).
    AddSecrets(AddSecrets),
}

/// What `AddSecrets` stores.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddSecrets {
    pub entries: Vec<NewSecret>,
    /// Overwrite secrets that exist instead of refusing the whole batch.
    pub replace: bool,
    /// The vault passphrase, where the batch needs a human.
    pub passphrase: Option<SecretBytes>,
}

/// One secret of an `AddSecrets` batch.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NewSecret {
    pub name: String,
    pub value: SecretBytes,
    pub description: Option<String>,
}

/// What `ImportSecrets` stores.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportSecrets {
    /// The file they come from, as the human approving is shown it.
    pub file: String,
    pub entries: Vec<LeasedValue>,
}

/// A secret asked for (`RequestSecret`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretWanted {
    pub name: String,
    /// What it is for, one line.
    pub description: Option<String>,
    /// Unix seconds (set by the agent).
    pub requested: u64,
}

/// What `jitc sandbox` registers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxRequest {
    pub pid: u32,
    pub profile: String,
    /// The program the sandbox runs, for records and `jitc status`.
    pub command: Vec<String>,
}

/// A registered sandbox, as `jitc status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: u64,
    pub profile: String,
    pub command: Vec<String>,
    /// Its first process (the init of its PID namespace), as the agent sees it.
    pub pid: u32,
    /// Unix seconds.
    pub started: u64,
}

/// A message from the agent to `jitc`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Response {
    /// The request failed; `code` decides the exit code, `message` is one line for humans.
    Error {
        code: ErrorCode,
        message: String,
    },
    Welcome(Welcome),
    /// The request succeeded and has nothing to report.
    Done,
    Status(AgentStatus),
    /// A page of secrets, by name; `more`: ask again after the last name.
    Secrets {
        items: Vec<SecretInfo>,
        more: bool,
    },
    Leased(LeaseGrant),
    /// Pushed, unasked, when a lease ends before its holder released it.
    LeaseEnded {
        lease: u64,
        reason: String,
    },
    /// A page of active leases; `more`: ask again after the last id.
    Leases {
        items: Vec<LeaseInfo>,
        more: bool,
    },
    Revoked {
        count: u32,
    },
    /// A page of waiting requests; `more`: ask again after the last id.
    Pending {
        items: Vec<PendingInfo>,
        more: bool,
    },
    /// Sent before the final answer to a `Lease` that waits for a human's approval.
    Waiting(Waiting),
    Explanation(Explanation),
    AuditReport(AuditReport),
    /// A write that needs a human (it changes or removes an existing or guarded
    /// secret): send it again with the vault passphrase. Says what needs it.
    NeedsPassphrase(String),
    /// A sandbox is registered (`RegisterSandbox`).
    SandboxRegistered(SandboxInfo),
    /// The secrets requested and not yet added (`ListRequested`).
    Requested(Vec<SecretWanted>),
    /// The keys under a backend path (`ListBackend`); a key ending in `/` holds more.
    BackendKeys(Vec<String>),
}

/// The result of `jitc audit verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditReport {
    /// Files checked, oldest first.
    pub files: Vec<String>,
    pub lines: u64,
    /// The first problem found (file, line number, what is wrong); `None`: intact.
    pub problem: Option<String>,
    /// Lines at the end written while the vault was locked: sealed by the next line
    /// written after an unlock, not checkable yet.
    pub unsealed: u64,
    /// Lines written while the vault was locked that were never sealed (the agent
    /// stopped, or too many piled up, before an unlock): nothing vouches for them.
    pub never_sealed: u64,
    /// Where the first run of such lines ends (file and line).
    pub never_sealed_at: Option<String>,
}

/// Whether events can be recorded (if not, leases are refused).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditState {
    pub path: String,
    pub error: Option<String>,
    pub last_seq: u64,
    /// What the check at the last unlock found wrong with the log (an
    /// `audit_log_tampered` anomaly); `None` once it verifies or is accepted.
    pub tampered: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Welcome {
    pub protocol_version: u32,
    pub agent_version: String,
    pub pid: u32,
}

/// Argon2id cost parameters chosen at `jitc init`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_mib: u32,
    pub iterations: u32,
}

impl KdfParams {
    pub const DEFAULT: KdfParams = KdfParams {
        memory_mib: 64,
        iterations: 3,
    };
    /// The floor, low enough for fast tests; nobody should choose it for a real vault.
    pub const MIN: KdfParams = KdfParams {
        memory_mib: 8,
        iterations: 1,
    };
    /// The ceiling, so a corrupted or hostile header cannot ask for absurd work.
    pub const MAX: KdfParams = KdfParams {
        memory_mib: 4096,
        iterations: 64,
    };

    /// `None` when within bounds, else a one-line explanation.
    pub fn check(&self) -> Option<String> {
        let (lo, hi) = (Self::MIN, Self::MAX);
        if !(lo.memory_mib..=hi.memory_mib).contains(&self.memory_mib) {
            return Some(format!(
                "--kdf-memory must be between {} and {} MiB",
                lo.memory_mib, hi.memory_mib
            ));
        }
        if !(lo.iterations..=hi.iterations).contains(&self.iterations) {
            return Some(format!(
                "--kdf-iterations must be between {} and {}",
                lo.iterations, hi.iterations
            ));
        }
        None
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddSecret {
    pub name: String,
    pub value: SecretBytes,
    pub description: Option<String>,
    /// Overwrite an existing secret of that name instead of refusing.
    pub replace: bool,
    /// A decoy (a honeytoken): leased like any secret, and every request for it is
    /// recorded as an anomaly.
    pub canary: bool,
    /// The vault passphrase, where the write needs a human (replacing a secret, or
    /// adding one that a policy rule guards).
    pub passphrase: Option<SecretBytes>,
}

/// What `jitc status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentStatus {
    pub agent_version: String,
    pub pid: u32,
    pub socket: String,
    pub vault: String,
    pub vault_exists: bool,
    pub locked: bool,
    /// Known only while unlocked: the count lives inside the sealed body.
    pub secrets: Option<u32>,
    pub leases: u32,
    pub idle_lock_secs: u64,
    /// Seconds until the idle lock fires, while unlocked.
    pub locks_in_secs: Option<u64>,
    /// Whether the vault key sits in `mlock`ed memory.
    pub memory_locked: bool,
    pub unlock_failures: u32,
    /// Requests waiting for approval.
    pub pending: u32,
    pub policy: PolicyState,
    pub audit: AuditState,
    /// The agent's own executable.
    pub exe: Option<String>,
    /// Registered sandboxes, oldest first.
    pub sandboxes: Vec<SandboxInfo>,
    /// The sandbox the asker lives in, if any.
    pub caller_sandbox: Option<u64>,
    /// Where the custody-free gateway listens, once a `--proxy` lease started it.
    pub gateway: Option<String>,
    /// Dynamic secrets an earlier run left unrevoked (a crash): how many were revoked
    /// since this one started, and the backend lease ids still not revoked.
    pub backend_recovered: u32,
    pub backend_unrevoked: Vec<String>,
    /// The policy's backends (`[backend.NAME]`), by name.
    pub backends: Vec<String>,
    /// How the agent's own process is protected (for `jitc doctor`).
    pub process: ProcessState,
}

/// The agent process's protections, as the kernel sees them now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessState {
    /// The uid the agent runs as.
    pub uid: u32,
    /// `PR_GET_DUMPABLE`: must be false (no core, no ptrace, no /proc/PID/mem).
    pub dumpable: bool,
    /// `RLIMIT_CORE` (soft); `None`: unlimited.
    pub core_limit: Option<u64>,
    /// `RLIMIT_MEMLOCK` (soft); `None`: unlimited.
    pub memlock_limit: Option<u64>,
    /// Bytes the agent needs to lock for its keys.
    pub memlock_needed: u64,
}

/// Whether `policy.toml` is in force, and if not, why every lease is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyState {
    pub path: String,
    /// Whether the file exists (without it, the defaults apply).
    pub exists: bool,
    /// The parse or permission error that makes the agent refuse every lease.
    pub error: Option<String>,
    /// The approver program could not be started the last time it was asked (requests
    /// then wait for `jitc approve`).
    pub approver_error: Option<String>,
}

/// `SecretInfo` borrowed from where it is kept: encodes byte for byte as `SecretInfo`,
/// and decodes from its bytes without copying them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SecretInfoRef<'a> {
    pub name: &'a str,
    #[serde(borrow)]
    pub description: Option<&'a str>,
    pub created: u64,
    pub updated: u64,
    pub canary: bool,
}

/// `Response::Secrets`'s place among `Response`'s variants (a test holds it to that:
/// `frame::tests::a_borrowed_page_encodes_as_the_owned_one`).
pub(crate) const SECRETS_VARIANT: u32 = 4;

/// A secret's metadata; never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub description: Option<String>,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
    /// A decoy (`jitc add --canary`): shown to the owner only.
    pub canary: bool,
}

impl From<SecretInfoRef<'_>> for SecretInfo {
    fn from(r: SecretInfoRef<'_>) -> SecretInfo {
        SecretInfo {
            name: r.name.to_owned(),
            description: r.description.map(str::to_owned),
            created: r.created,
            updated: r.updated,
            canary: r.canary,
        }
    }
}

/// The command a lease is for, as the client will run it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandLine {
    /// The resolved executable path the client will exec.
    pub path: String,
    pub argv: Vec<String>,
    pub cwd: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Secret names (no `jitc://`), deduplicated by the client.
    pub secrets: Vec<String>,
    pub command: CommandLine,
    pub task: Option<String>,
    pub ttl_ms: Option<u64>,
    pub masking: bool,
    /// `jitc exec --proxy`: the secrets bound by a `[[credential]]` come as
    /// placeholders, and the agent's gateway adds them to requests for their hosts.
    pub proxy: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeasedValue {
    pub name: String,
    pub value: SecretBytes,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseGrant {
    pub lease: u64,
    pub values: Vec<LeasedValue>,
    pub expires_in_ms: u64,
    /// The policy pins the command (a rule with `commands`): the client must not let
    /// dynamic-loader or interpreter hook variables (`LD_PRELOAD`, `PYTHONPATH`, …) from
    /// its own environment reach it.
    pub strict_env: bool,
    /// For a `proxy` lease: how to reach the gateway. The values of the secrets it
    /// names (`GatewayGrant::placeholders`) are placeholders, not the secrets.
    pub gateway: Option<GatewayGrant>,
}

/// How a command reaches the agent's gateway for one lease.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayGrant {
    /// `http://lease:TOKEN@127.0.0.1:PORT`: the proxy credential dies with the lease.
    pub proxy_url: SecretBytes,
    /// jitc's CA certificate (PEM), which the command must trust: public.
    pub ca_pem: String,
    /// The secrets whose leased "values" are placeholders.
    pub placeholders: Vec<String>,
    /// Every host a placeholder of this lease is bound to (`*.example.com` too), to
    /// take out of `NO_PROXY`.
    pub hosts: Vec<String>,
}

/// One process in a requester's ancestry, from the requester up to init.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub exe: Option<String>,
    pub argv: Vec<String>,
}

/// What a lease is for and who asked for it: these secrets, this command, this task,
/// this process chain. Shared by active leases and requests waiting for approval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scope {
    pub secrets: Vec<String>,
    pub task: Option<String>,
    /// The resolved executable.
    pub command: String,
    pub argv: Vec<String>,
    /// The requesting process, and it and its ancestors up to init.
    pub pid: u32,
    pub chain: Vec<ProcessInfo>,
    pub profile: Option<String>,
    /// The sandbox the requester lives in (which gave it `profile`), if any.
    pub sandbox: Option<u64>,
    /// What a human approving this should know about the command: `argv[0]` that names
    /// another program than the one that runs, a program in a directory the requester
    /// can write.
    pub warnings: Vec<String>,
}

impl Scope {
    pub fn new(
        req: &LeaseRequest,
        pid: u32,
        chain: &[ProcessInfo],
        profile: Option<&str>,
    ) -> Scope {
        Scope {
            secrets: req.secrets.clone(),
            task: req.task.clone(),
            command: req.command.path.clone(),
            argv: req.command.argv.clone(),
            pid,
            chain: chain.to_vec(),
            profile: profile.map(str::to_owned),
            sandbox: None,
            warnings: Vec::new(),
        }
    }
}

/// An active lease, as `jitc leases` shows it: never a value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: u64,
    pub scope: Scope,
    /// Unix seconds.
    pub started: u64,
    pub expires: u64,
    pub ttl_secs: u64,
}

/// A request waiting for approval, as `jitc pending` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingInfo {
    pub id: u64,
    /// What is asked: `lease` for a lease of `scope`'s secrets to its command, else a
    /// change to the vault in words ("replace the value of 'X'").
    pub action: String,
    pub scope: Scope,
    /// Unix seconds.
    pub requested: u64,
    /// Seconds until it is denied for want of an answer.
    pub expires_in_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Waiting {
    pub id: u64,
    /// The approver program asked, if one is configured.
    pub approver: Option<String>,
    pub timeout_secs: u64,
    /// The approver could not be started, and why: only `jitc approve` can answer.
    pub approver_failed: Option<String>,
}

/// How the policy judges one secret of a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretVerdict {
    pub secret: String,
    /// 1-based index of the `[[rule]]` that decides it; `None`: the defaults.
    pub rule: Option<u32>,
    /// That rule as written, in one line.
    pub rule_text: String,
}

/// `jitc policy explain`: what would happen, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Explanation {
    pub policy: PolicyState,
    pub profile: Option<String>,
    /// Which identity decided the profile, in words: a sandbox, an ancestor, or none.
    pub identity: String,
    pub chain: Vec<ProcessInfo>,
    pub command: String,
    pub verdicts: Vec<SecretVerdict>,
    /// `None` when the lease would be granted (possibly after approval).
    pub refusal: Option<String>,
    /// "never", "once-per-task", "always", or "remembered" when a recent approval of
    /// the same task covers it.
    pub approval: String,
    pub ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub masking_required: bool,
    /// Names the vault does not hold (known only while it is unlocked).
    pub unknown: Vec<String>,
    /// Whether the vault was locked, so names could not be checked.
    pub locked: bool,
}

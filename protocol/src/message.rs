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
    RemoveSecret {
        name: String,
    },
    ListSecrets,
    /// Ask for a lease; it lasts until `Release`, expiry, or the connection closes.
    Lease(LeaseRequest),
    /// Hand a lease back. The only request without an answer.
    Release {
        lease: u64,
    },
    ListLeases,
    /// End one lease, or every lease (`None`).
    Revoke {
        lease: Option<u64>,
    },
    ListPending,
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
    Secrets(Vec<SecretInfo>),
    Leased(LeaseGrant),
    /// Pushed, unasked, when a lease ends before its holder released it.
    LeaseEnded {
        lease: u64,
        reason: String,
    },
    Leases(Vec<LeaseInfo>),
    Revoked {
        count: u32,
    },
    Pending(Vec<PendingInfo>),
    /// Sent before the final answer to a `Lease` that waits for a human's approval.
    Waiting(Waiting),
    Explanation(Explanation),
    AuditReport(AuditReport),
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
    /// A decoy: every lease that names it is refused and recorded as an anomaly.
    pub canary: bool,
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
}

/// Whether `policy.toml` is in force, and if not, why every lease is refused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyState {
    pub path: String,
    /// Whether the file exists (without it, the defaults apply).
    pub exists: bool,
    /// The parse or permission error that makes the agent refuse every lease.
    pub error: Option<String>,
}

/// A secret's metadata; never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub description: Option<String>,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
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
}

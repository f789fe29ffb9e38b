//! `Refusal`: a request's failure as the client will see it, and the one place where
//! internal errors become an exit code and a one-line message saying what to do next.

use jitc_protocol::{ErrorCode, Response};

use crate::vault::{FileError, VaultError, VaultFile};

#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub kind: RefusalKind,
}

/// What kind of refusal, where the agent itself must tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request's own answer.
    Plain,
    /// The audit log could not be written: nothing more may be recorded about it.
    AuditUnavailable,
    /// Too many leases or waiting requests already: try later.
    Busy,
}

pub type Reply = Result<Response, Refusal>;

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            kind: RefusalKind::Plain,
        }
    }

    /// The audit log cannot be written (`why`): nothing is granted until it can.
    pub fn audit_unavailable(why: &str) -> Refusal {
        Refusal {
            kind: RefusalKind::AuditUnavailable,
            ..Refusal::new(
                ErrorCode::Refused,
                format!(
                    "audit log unavailable: {why}; nothing is granted until it can be written (see 'jitc status')"
                ),
            )
        }
    }

    /// The agent holds as many leases or waiting requests as it takes (exit 75: later).
    pub fn busy(message: impl Into<String>) -> Refusal {
        Refusal {
            kind: RefusalKind::Busy,
            ..Refusal::new(ErrorCode::Locked, message)
        }
    }

    pub fn is_audit_unavailable(&self) -> bool {
        self.kind == RefusalKind::AuditUnavailable
    }

    pub fn locked() -> Refusal {
        Refusal::new(ErrorCode::Locked, "the vault is locked; run 'jitc unlock'")
    }

    pub fn bad_input(message: impl Into<String>) -> Refusal {
        Refusal::new(ErrorCode::DataErr, message)
    }

    pub fn no_vault(file: &VaultFile) -> Refusal {
        Refusal::new(
            ErrorCode::Failure,
            format!(
                "there is no vault at {} yet; create one with 'jitc init'",
                file.path().display()
            ),
        )
    }

    pub fn internal(what: &str) -> Refusal {
        Refusal::new(
            ErrorCode::Failure,
            format!("internal error while {what}; see the agent's log"),
        )
    }

    /// Maps a vault error for `file` to what the user should hear.
    pub fn from_vault(file: &VaultFile, e: VaultError) -> Refusal {
        let path = file.path().display();
        let bak = file.backup_path();
        let damaged = |what: &dyn std::fmt::Display| {
            let next = if bak.exists() {
                format!(
                    "restore the previous generation with 'cp {} {path}'",
                    bak.display()
                )
            } else {
                format!(
                    "there is no {} to fall back on; restore it from your own backup",
                    bak.file_name().unwrap_or_default().to_string_lossy()
                )
            };
            Refusal::new(
                ErrorCode::DataErr,
                format!("the vault at {path} is damaged ({what}); {next}"),
            )
        };
        match e {
            VaultError::WrongPassphrase => Refusal::new(
                ErrorCode::Refused,
                "wrong passphrase; try again (each failure slows the next attempt)",
            ),
            VaultError::Header(crate::vault::HeaderError::NewerFormat(v)) => Refusal::new(
                ErrorCode::DataErr,
                format!(
                    "the vault at {path} was written by a newer jitc (format {v}); upgrade jitc"
                ),
            ),
            VaultError::Header(crate::vault::HeaderError::NotAVault) => Refusal::new(
                ErrorCode::DataErr,
                format!(
                    "{path} is not a jitc vault; move it away, or restore {}",
                    bak.display()
                ),
            ),
            e @ (VaultError::Header(_) | VaultError::BodyAuth | VaultError::BodyDecode) => {
                damaged(&e)
            }
            e @ VaultError::ValueAuth(_) => damaged(&e),
            VaultError::NoSuchSecret(n) => Refusal::new(
                ErrorCode::Failure,
                format!("no secret named '{n}'; see 'jitc ls'"),
            ),
            e @ VaultError::TooLarge => Refusal::new(ErrorCode::Failure, e.to_string()),
            e @ VaultError::JournalDamaged => Refusal::new(
                ErrorCode::DataErr,
                format!(
                    "the vault at {path} is damaged ({e}); to open it as of its last snapshot, losing the changes since, move {} aside",
                    file.journal_path().display()
                ),
            ),
            VaultError::Exists(n) => Refusal::new(
                ErrorCode::Failure,
                format!("a secret named '{n}' exists already; add --replace to overwrite it"),
            ),
            e @ (VaultError::Memory(_) | VaultError::Kdf(_) | VaultError::Random) => {
                tracing::error!(error = %e, "vault operation failed");
                Refusal::new(ErrorCode::Failure, format!("{e}; see the agent's log"))
            }
        }
    }

    pub fn from_file(e: FileError) -> Refusal {
        let code = match &e {
            FileError::Insecure { .. } => ErrorCode::Refused,
            FileError::Io { .. } | FileError::TooLarge { .. } => ErrorCode::IoErr,
            FileError::Busy { .. } => ErrorCode::Unavailable,
        };
        let mut message = e.to_string();
        if let FileError::Io { .. } = e {
            message.push_str("; fix the file or its directory and retry");
        }
        Refusal::new(code, message)
    }
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Response {
        Response::Error {
            code: r.code,
            message: r.message,
        }
    }
}

//! `Error`: every failure of the client library and the CLI, each with exactly one exit
//! code, each one line that says what to do next, none carrying a value.

use std::io;
use std::path::PathBuf;

use jitc_protocol::{ErrorCode, FrameError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent refused or failed the request.
    #[error("{message}")]
    Agent { code: ErrorCode, message: String },
    /// Nothing accepts connections at the socket.
    #[error("no agent answers on {} ({source}); {hint}", path.display())]
    NotRunning {
        path: PathBuf,
        source: io::Error,
        hint: &'static str,
    },
    /// The conversation with the agent broke down.
    #[error("lost the connection to the agent ({0}); check it with 'jitc status'")]
    Transport(#[from] FrameError),
    /// The agent answered something this client did not expect.
    #[error(
        "the agent answered unexpectedly ({0}); make sure jitc and jitc-agentd are the same version"
    )]
    Unexpected(&'static str),
    /// A failure found on this side, with its exit code.
    #[error("{message}")]
    Local { code: ErrorCode, message: String },
    /// Whatever read a listing went away (`jitc audit | head`): the listing ends,
    /// quietly and successfully, as it would for `cat`.
    #[error("the output was closed")]
    OutputClosed,
}

impl Error {
    pub fn local(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::Local {
            code,
            message: message.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Error {
        Error::local(ErrorCode::DataErr, message)
    }

    pub fn failure(message: impl Into<String>) -> Error {
        Error::local(ErrorCode::Failure, message)
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Agent { code, .. } | Error::Local { code, .. } => *code,
            Error::NotRunning { .. } | Error::Transport(_) => ErrorCode::Unavailable,
            Error::Unexpected(_) => ErrorCode::Failure,
            Error::OutputClosed => ErrorCode::IoErr,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.code().exit_code()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A one-line note for the human on stderr (`jitc: …`). Best effort: a closed or full
/// stderr is no reason to fail (or panic, as `eprintln!` would).
pub fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr().lock(), "jitc: {text}");
}

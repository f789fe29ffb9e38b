//! `ErrorCode`: the kinds of refusal the agent can answer with, one per CLI exit code.

use serde::{Deserialize, Serialize};

/// Why a request failed. Each variant is exactly one exit code of `jitc` (sysexits), so
/// the CLI never has to guess from message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Anything else, e.g. an unknown secret name. Exit 1.
    Failure,
    /// Malformed input: a bad reference, bad duration, a corrupted vault. Exit 65.
    DataErr,
    /// No usable agent (e.g. it speaks another protocol version). Exit 69.
    Unavailable,
    /// The vault file could not be read or written. Exit 74.
    IoErr,
    /// Try again later: the vault is locked, or the agent holds as many leases or
    /// waiting requests as it takes. Exit 75.
    Locked,
    /// Refused: unknown peer, policy, approval, wrong passphrase. Exit 77.
    Refused,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::Failure,
        ErrorCode::DataErr,
        ErrorCode::Unavailable,
        ErrorCode::IoErr,
        ErrorCode::Locked,
        ErrorCode::Refused,
    ];

    /// The process exit code `jitc` uses for this error.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorCode::Failure => 1,
            ErrorCode::DataErr => 65,
            ErrorCode::Unavailable => 69,
            ErrorCode::IoErr => 74,
            ErrorCode::Locked => 75,
            ErrorCode::Refused => 77,
        }
    }

    pub fn from_exit_code(code: u8) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.exit_code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_map_one_to_one() {
        let codes: HashSet<u8> = ErrorCode::ALL.iter().map(|c| c.exit_code()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_exit_code(c.exit_code()), Some(c));
        }
        assert_eq!(ErrorCode::from_exit_code(0), None);
        assert_eq!(ErrorCode::from_exit_code(2), None);
    }
}

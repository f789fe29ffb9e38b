//! The kinds of audit record and of anomaly, by the names they have on disk. Shared
//! contract: the agent writes these names, `jitc audit --event` accepts them, and the
//! names never change (old logs must still read).

use serde::{Deserialize, Serialize};

/// An enum of kinds, each with its name on disk: `as_str`, `parse`, `ALL`.
macro_rules! kinds {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every kind, in the order listed.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name on disk.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The kind of a name on disk.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

kinds! {
    /// Every kind of record the agent writes.
    EventKind {
        Start = "start",
        Stop = "stop",
        Init = "init",
        Unlock = "unlock",
        UnlockFailed = "unlock_failed",
        Lock = "lock",
        LeaseGranted = "lease_granted",
        LeaseDenied = "lease_denied",
        LeaseEnded = "lease_ended",
        SecretAdded = "secret_added",
        SecretReplaced = "secret_replaced",
        SecretRemoved = "secret_removed",
        SecretRenamed = "secret_renamed",
        SecretDescribed = "secret_described",
        PassphraseChanged = "passphrase_changed",
        PasswdFailed = "passwd_failed",
        ApprovalRequested = "approval_requested",
        ApprovalGranted = "approval_granted",
        ApprovalDenied = "approval_denied",
        ApprovalTimedOut = "approval_timed_out",
        ApproveFailed = "approve_failed",
        AuditAccepted = "audit_accepted",
        AcceptFailed = "accept_failed",
        PeerRefused = "peer_refused",
        PolicyLoaded = "policy_loaded",
        PolicyError = "policy_error",
        PolicyReset = "policy_reset",
        PolicyResetFailed = "policy_reset_failed",
        Anomaly = "anomaly",
        LogContinued = "log_continued",
        SandboxStarted = "sandbox_started",
        SandboxEnded = "sandbox_ended",
        SandboxRefused = "sandbox_refused",
        SecretRequested = "secret_requested",
        GatewayRequest = "gateway_request",
        GatewayResponse = "gateway_response",
        GatewayRefused = "gateway_refused",
        BackendRevoked = "backend_revoked",
        BackendRevokeFailed = "backend_revoke_failed",
        BackendListed = "backend_listed",
    }
}

kinds! {
    /// Every kind of anomaly (`--event canary` or `--event anomaly:canary`).
    AnomalyKind {
        Canary = "canary",
        OutsideWorkingHours = "outside_working_hours",
        NewExecutable = "new_executable",
        Burst = "burst",
        RepeatedDenials = "repeated_denials",
        WrongPassphrases = "wrong_passphrases",
        SelfApproval = "self_approval",
        AuditLogTampered = "audit_log_tampered",
        UncleanShutdown = "unclean_shutdown",
        LogRotation = "log_rotation",
        VaultReplaced = "vault_replaced",
        ExfiltrationAttempt = "exfiltration_attempt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_on_disk_and_through_serde() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
            assert_eq!(
                serde_json::to_string(k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        for k in AnomalyKind::ALL {
            assert_eq!(AnomalyKind::parse(k.as_str()), Some(*k));
            let back: AnomalyKind = serde_json::from_str(&format!("\"{k}\"")).unwrap();
            assert_eq!(back, *k);
        }
        assert_eq!(EventKind::parse("nonsense"), None);
    }
}

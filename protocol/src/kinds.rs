//! The kinds of audit record and of anomaly, by the names they have on disk. Shared
//! contract: the agent writes these names, `jitc audit --event` accepts them.

/// Every kind of record the agent writes.
pub const EVENTS: &[&str] = &[
    "start",
    "stop",
    "init",
    "unlock",
    "unlock_failed",
    "lock",
    "lease_granted",
    "lease_denied",
    "lease_ended",
    "secret_added",
    "secret_replaced",
    "secret_removed",
    "secret_renamed",
    "secret_described",
    "passphrase_changed",
    "passwd_failed",
    "approval_requested",
    "approval_granted",
    "approval_denied",
    "approval_timed_out",
    "approve_failed",
    "audit_accepted",
    "accept_failed",
    "peer_refused",
    "policy_loaded",
    "policy_error",
    "policy_reset",
    "policy_reset_failed",
    "anomaly",
    "log_continued",
];

/// Every kind of anomaly (`--event canary` or `--event anomaly:canary`).
pub const ANOMALIES: &[&str] = &[
    "canary",
    "outside_working_hours",
    "new_executable",
    "burst",
    "repeated_denials",
    "wrong_passphrases",
    "self_approval",
    "audit_log_tampered",
    "unclean_shutdown",
    "log_rotation",
    "vault_replaced",
];

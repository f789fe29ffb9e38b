//! Process hardening done before anything secret exists: no core dumps, no ptrace or
//! /proc/PID/mem access by other processes of the same user, and enough descriptors.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

#[derive(Debug, Default)]
pub struct Report {
    pub nofile: u64,
}

/// The pages the agent locks for keys: the vault key and the audit key (one page each,
/// as memsec maps them), and one spare for a key being replaced (`passwd`).
pub const MEMLOCK_NEEDED: u64 = 3 * 4096;

/// What the kernel says about this process now.
pub fn state() -> jitc_protocol::ProcessState {
    let soft = |r| {
        getrlimit(r)
            .ok()
            .map(|(soft, _)| soft)
            .filter(|&l| l != nix::sys::resource::RLIM_INFINITY)
    };
    jitc_protocol::ProcessState {
        uid: nix::unistd::getuid().as_raw(),
        // An error reads as dumpable: the check must fail closed.
        dumpable: nix::sys::prctl::get_dumpable().unwrap_or(true),
        core_limit: soft(Resource::RLIMIT_CORE),
        memlock_limit: soft(Resource::RLIMIT_MEMLOCK),
        memlock_needed: MEMLOCK_NEEDED,
    }
}

/// Applies every setting; any failure is fatal to the caller (an agent that cannot stop
/// core dumps must not hold keys).
pub fn harden() -> anyhow::Result<Report> {
    // Not dumpable: no core file, no ptrace attach by same-uid processes, and
    // /proc/PID/{environ,mem,maps} become root-owned.
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| anyhow::anyhow!("cannot make the agent non-dumpable: {e}"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| anyhow::anyhow!("cannot disable core dumps: {e}"))?;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| anyhow::anyhow!("cannot read the descriptor limit: {e}"))?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| anyhow::anyhow!("cannot raise the descriptor limit: {e}"))?;
    Ok(Report { nofile: hard })
}

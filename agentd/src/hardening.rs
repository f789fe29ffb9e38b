//! Process hardening done before anything secret exists: no core dumps, no ptrace or
//! /proc/PID/mem access by other processes of the same user, and enough descriptors.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

#[derive(Debug, Default)]
pub struct Report {
    pub nofile: u64,
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

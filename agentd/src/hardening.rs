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

/// Hands the heap's free memory back to the kernel (glibc's `malloc_trim`). After a
/// lock has dropped every value and the vault's maps, the freed chunks otherwise stay
/// in the process — scattered among live ones, so ordinary trimming at the top of the
/// heap rarely frees them — and resident memory grows with each unlock/lock cycle.
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks; it touches
    // no memory of ours and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps the heap in one arena: the agent runs one async thread and a few short-lived
/// blocking ones (key derivation, file writes), and glibc's per-thread arenas would
/// each keep their own freed memory that `malloc_trim` cannot gather back. Blocks of
/// 128 KiB and more (a listing's pages, a batch's buffers) are always mapped on their
/// own and unmapped when freed: left to itself, glibc raises that threshold to the
/// largest block freed so far and serves such blocks from the heap, where they stay
/// resident after use (3 MB after one `jitc ls` of 100,000 secrets).
#[allow(unsafe_code)]
pub fn one_heap_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets glibc allocator parameters; called at start, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Applies every setting; any failure is fatal to the caller (an agent that cannot stop
/// core dumps must not hold keys).
pub fn harden() -> anyhow::Result<Report> {
    one_heap_arena();
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

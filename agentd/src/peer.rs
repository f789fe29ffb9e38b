//! Who is on the other end of a connection: `SO_PEERCRED`, then `/proc` for the rest.

use std::fs;

use tokio::net::UnixStream;

/// The connecting process, as the kernel vouches for it (pid, uid, gid) and as `/proc`
/// describes it at accept time (executable, argv).
#[derive(Debug, Clone)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe: Option<String>,
    pub argv: Vec<String>,
    /// The sandbox it lives in (see `sandbox`), set once the connection is placed.
    pub sandbox: Option<u64>,
}

impl Peer {
    pub fn of(stream: &UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        let (exe, argv) = if pid > 0 {
            process_info(pid)
        } else {
            (None, Vec::new())
        };
        Ok(Peer {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            exe,
            argv,
            sandbox: None,
        })
    }
}

/// Longest argument kept of another process's argv.
const MAX_ARG: usize = 256;
/// Most of a process's argv kept in all (the rest is cut, marked `…`).
const MAX_ARGV_BYTES: usize = 4096;
/// Most of `/proc/PID/cmdline` read.
const MAX_CMDLINE: u64 = 64 << 10;

/// Executable path and argv of `pid`, as far as `/proc` will tell (another user's
/// process, or one that already exited, tells nothing).
pub fn process_info(pid: u32) -> (Option<String>, Vec<String>) {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let mut raw = Vec::new();
    let read = fs::File::open(format!("/proc/{pid}/cmdline")).and_then(|f| {
        std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_CMDLINE), &mut raw)
    });
    let mut argv: Vec<String> = Vec::new();
    if read.is_ok() {
        // The read stopped inside an argument: it is cut short like a long one.
        let cut_last = raw.len() as u64 == MAX_CMDLINE && raw.last() != Some(&0);
        let pieces = raw.split(|b| *b == 0).count();
        let mut total = 0;
        for (i, a) in raw
            .split(|b| *b == 0)
            .enumerate()
            .filter(|(_, a)| !a.is_empty())
            .take(64)
        {
            // Enough to recognise a process; a huge argument would bloat every audit
            // record and prompt. An argument cut short ends with `…` (the audit trail
            // conceals a value's beginning there).
            let mut s = String::from_utf8_lossy(&a[..a.len().min(MAX_ARG)]).into_owned();
            if a.len() > MAX_ARG || (cut_last && i + 1 == pieces) {
                s.push('…');
            }
            total += s.len();
            if total > MAX_ARGV_BYTES {
                argv.push("…".into());
                break;
            }
            argv.push(s);
        }
    }
    (exe, argv)
}

/// A `/proc` file, read whole. Not `fs::read_to_string`, whose size hint costs a
/// `statx` per file (and `/proc` says 0 bytes anyway): a lease reads a dozen of these.
pub fn read_proc(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    let mut text = String::with_capacity(512);
    std::io::Read::read_to_string(&mut fs::File::open(path)?, &mut text)?;
    Ok(text)
}

/// The parent of `pid`, from `/proc/PID/stat` (the field after the parenthesised
/// command name, which may itself contain spaces and parentheses).
/// When `pid` started (clock ticks since boot): with the pid, it names one process for
/// good — a pid the kernel hands out again belongs to a process that started later.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = read_proc(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = read_proc(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The real uid of `pid`, from `/proc/PID/status`.
pub fn uid_of(pid: u32) -> Option<u32> {
    let status = read_proc(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Longest ancestry walked; deeper trees are cut (and the cut is harmless: profiles
/// are matched nearest first).
const MAX_CHAIN: usize = 64;

/// `pid` and its ancestors up to init, each with its executable and argv as `/proc`
/// shows them now.
pub fn chain(pid: u32) -> Vec<jitc_protocol::ProcessInfo> {
    let mut out = Vec::new();
    let mut next = Some(pid);
    while let Some(p) = next.filter(|p| *p > 0) {
        if out.len() >= MAX_CHAIN {
            break;
        }
        let (exe, argv) = process_info(p);
        out.push(jitc_protocol::ProcessInfo { pid: p, exe, argv });
        if p == 1 {
            break;
        }
        next = parent_of(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_chain_reaches_init() {
        let c = chain(std::process::id());
        assert_eq!(c[0].pid, std::process::id());
        assert!(c[0].exe.is_some());
        assert!(c.len() >= 2);
        assert!(
            c.last().unwrap().pid == 1
                || c.len() == MAX_CHAIN
                || parent_of(c.last().unwrap().pid) == Some(0)
        );
    }
}

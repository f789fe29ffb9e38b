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
const MAX_CMDLINE: usize = 64 << 10;
/// How much of `/proc/PID/cmdline` the first read asks for (most argvs fit).
const FIRST_CMDLINE_READ: usize = 4096;

/// Executable path and argv of `pid`, as far as `/proc` will tell (another user's
/// process, or one that already exited, tells nothing).
pub fn process_info(pid: u32) -> (Option<String>, Vec<String>) {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let read = read_small(
        format!("/proc/{pid}/cmdline"),
        FIRST_CMDLINE_READ,
        MAX_CMDLINE,
    );
    let mut argv: Vec<String> = Vec::new();
    if let Ok(raw) = read {
        // The read stopped inside an argument: it is cut short like a long one. The
        // kernel ends an argv with its NUL; past the first read, one without it was cut
        // (the process exited between reads) — a title a process set itself over 4 KiB
        // is taken as cut too.
        let cut_last = raw.last() != Some(&0) && raw.len() >= FIRST_CMDLINE_READ;
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

/// A one-record `/proc` file (`stat`, `status`), read whole. A lease reads a dozen of
/// these, walking the requester's ancestry: std's `read_to_string` would spend a
/// `statx` and an `lseek` on a size hint (`/proc` says 0 bytes anyway) and a last
/// `read` to see the end. Not for a file of many records (`children`): see
/// `read_small`. Bytes that are not UTF-8 (a process may name itself anything with
/// `PR_SET_NAME`, and `stat` shows that name raw) are replaced, not an error: the fields
/// read after the name are numbers, and a name must not stop the ancestry walk there.
pub fn read_proc(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    let raw = read_small(path, 1024, 64 << 10)?;
    Ok(match String::from_utf8(raw) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// At most `max` bytes of a `/proc` file, in one `read` when it fits in `first`, for
/// the files the kernel makes whole at the first read and hands out all that fits of:
/// a one-record `seq_file` (`stat`, `status`) and `cmdline` (its argv pages, a page at
/// a time until the read is filled). There a read that leaves room is the end, and no
/// last read is spent to see it. A `seq_file` of many records (`children`) hands out at
/// most a page of records per read, and must be read to its end.
fn read_small(
    path: impl AsRef<std::path::Path>,
    first: usize,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; first.min(max)];
    let mut len = 0;
    loop {
        match std::io::Read::read(&mut file, &mut buf[len..]) {
            Ok(n) => {
                len += n;
                if len < buf.len() || len == max {
                    break;
                }
                buf.resize((buf.len() * 2).min(max), 0);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
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
    if pid == 0 {
        return Vec::new();
    }
    let (exe, argv) = process_info(pid);
    chain_from(jitc_protocol::ProcessInfo { pid, exe, argv })
}

/// `first` (a process already looked at) and its ancestors up to init, each of those
/// as `/proc` shows them now.
pub fn chain_from(first: jitc_protocol::ProcessInfo) -> Vec<jitc_protocol::ProcessInfo> {
    let mut next = (first.pid != 1).then(|| parent_of(first.pid)).flatten();
    let mut out = vec![first];
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
    fn a_small_read_grows_to_the_whole_file_and_stops_at_its_cap() {
        let dir = std::env::temp_dir().join(format!("jitc-peer-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &data).unwrap();
        assert_eq!(read_small(&path, 16, 1 << 20).unwrap(), data);
        assert_eq!(read_small(&path, 16, 100).unwrap(), &data[..100]);
        assert_eq!(read_small(&path, 10_000, 1 << 20).unwrap(), data);
        fs::write(&path, b"").unwrap();
        assert!(read_small(&path, 16, 100).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
        // A long argv comes whole, past the first read's 4 KiB: `cat` reads its stdin
        // (left open) before it would look at the file the long argument names. A
        // line echoed back says it runs (a spawn returns before the exec has set up
        // the argv that `/proc` reads).
        use std::io::{BufRead, Write};
        let long = "x".repeat(10_000);
        let mut child = std::process::Command::new("cat")
            .arg("-")
            .arg(&long)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.as_mut().unwrap().write_all(b"up\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "up\n");
        let (_, argv) = process_info(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(argv.len(), 3, "{argv:?}");
        assert_eq!(argv[2], format!("{}…", "x".repeat(MAX_ARG)));
    }

    /// A process whose name is not UTF-8 (`stat` shows it raw) still has a parent and a
    /// start time: the ancestry walk does not stop at it.
    #[test]
    fn a_name_that_is_not_utf8_does_not_end_the_walk() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("jitc-peer-name-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let exe = dir.join(std::ffi::OsStr::from_bytes(b"sl\xff\xfeep"));
        fs::copy("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        // The exec is done once its stat names the new program.
        let pid = child.id();
        while !fs::read(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.windows(2).any(|w| w == b"\xff\xfe"))
        {
            std::thread::yield_now();
        }
        let parent = parent_of(pid);
        let started = start_time(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(parent, Some(std::process::id()));
        assert!(started.is_some());
    }

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

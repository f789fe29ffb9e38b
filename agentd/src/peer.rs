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
        })
    }
}

/// Executable path and argv of `pid`, as far as `/proc` will tell (another user's
/// process, or one that already exited, tells nothing).
pub fn process_info(pid: u32) -> (Option<String>, Vec<String>) {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let argv = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .take(64)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    (exe, argv)
}

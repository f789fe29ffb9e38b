//! The processes a lease's command runs as, so the agent can stop them itself when the
//! requester cannot: it died (`kill -9` of `jitc`), or it was frozen and ignores the
//! end of the lease. They are found among the requester's own children (never a pid it
//! names: in a sandbox its pids are not ours), and held by pidfd, so a pid the kernel
//! hands out again later is never taken for them.
#![allow(unsafe_code)]

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How long a holder told that its lease ended has to stop the command (it sends
/// SIGTERM, and SIGKILL 5 s later) before the agent kills it itself.
pub const HOLDER_GRACE: Duration = Duration::from_secs(7);

/// A command's process group, led by a child of the requester.
#[derive(Debug)]
pub struct Guard {
    leader: i32,
    pidfd: OwnedFd,
}

/// The parent and the process group of `pid`, from `/proc/PID/stat` (the fields after
/// the parenthesised command name, which may itself hold spaces and parentheses).
fn parent_and_group(pid: u32) -> Option<(u32, u32)> {
    let stat = crate::peer::read_proc(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let ppid = fields.nth(1)?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((ppid, pgid))
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The process groups led by children of `parent` (a requester that has just started
/// its command).
pub fn command_groups(parent: u32) -> Vec<Guard> {
    let mut children: Vec<u32> = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) {
        for t in tasks.flatten() {
            // Read to its end: one record per child, at most a page of them per read.
            let listed = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            children.extend(
                listed
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    children
        .into_iter()
        .filter_map(|pid| {
            // Opened first, checked after: the pidfd pins the process the check saw.
            let pidfd = pidfd_open(pid)?;
            let (ppid, pgid) = parent_and_group(pid)?;
            let leader = i32::try_from(pid).ok()?;
            (ppid == parent && pgid == pid).then_some(Guard { leader, pidfd })
        })
        .collect()
}

/// Whether any process is in process group `pgid` but does not lead it (a leader is
/// there under its own pid, which the pidfd check covers).
fn group_has_members(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            return false;
        };
        i32::try_from(pid).ok() != Some(pgid)
            && parent_and_group(pid).is_some_and(|(_, g)| i32::try_from(g).ok() == Some(pgid))
    })
}

impl Guard {
    /// Whether the leader is still there (running, or not yet reaped).
    pub fn leader_alive(&self) -> bool {
        // SAFETY: signal 0 only checks; the pidfd is ours and open.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }

    /// SIGKILL to the whole group. While the leader lives (or is a zombie) its group id
    /// is its own; once it is reaped, the id stays taken as long as any member is left —
    /// but with no member left the kernel may hand the number out again, to another
    /// process that leads a group of its own. So after the leader is gone, the group is
    /// killed only if members are left and no other process holds the leader's pid.
    pub fn kill(&self) -> &'static str {
        if !self.leader_alive() {
            let reused = u32::try_from(self.leader)
                .ok()
                .is_some_and(|pid| fs::metadata(format!("/proc/{pid}")).is_ok());
            if reused {
                return "its number now belongs to another process; nothing sent";
            }
            if !group_has_members(self.leader) {
                return "already gone";
            }
        }
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.leader),
            nix::sys::signal::Signal::SIGKILL,
        );
        "killed"
    }

    /// Kills the group after `grace`, unless it is gone by then: the requester was told
    /// the lease ended and should have stopped it.
    pub fn kill_after(self, grace: Duration) {
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if self.leader_alive() {
                tracing::warn!(
                    leader = self.leader,
                    "a lease's command outlived its end; the agent stopped it"
                );
            }
            let outcome = self.kill();
            tracing::info!(
                group = self.leader,
                outcome,
                "a lease's command group, after the grace"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_and_kills_the_groups_a_process_leads() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let guards = command_groups(std::process::id());
        let g = guards
            .iter()
            .find(|g| g.leader == child.id() as i32)
            .expect("the child's group");
        assert!(g.leader_alive());
        g.kill();
        let status = child.wait().unwrap();
        assert!(!status.success());
    }

    /// `children` is a seq_file of one record per child, handed out at most a page
    /// per read: a read that leaves room is not its end. A requester with many
    /// children still has its command's group found.
    #[tokio::test]
    async fn finds_a_group_past_the_first_pages_of_children() {
        use std::os::unix::process::CommandExt;
        let mut others: Vec<std::process::Child> = (0..1500)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let found = command_groups(std::process::id())
            .iter()
            .any(|g| g.leader == child.id() as i32);
        for c in others.iter_mut().chain(std::iter::once(&mut child)) {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(
            found,
            "the command's group, listed after 1500 other children"
        );
    }
}

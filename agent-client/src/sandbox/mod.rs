//! `jitc sandbox`: runs a program (a coding agent) in a sandbox it cannot leave, whose
//! identity the agent knows from the kernel rather than from ancestry.
//!
//! bubblewrap makes the sandbox: a user namespace (the user's own uid and gid mapped,
//! no capabilities, `no_new_privs`), a mount namespace and a PID namespace. In it the
//! vault's directory is an empty tmpfs; jitc's config and state directories, the
//! socket's directory, and jitc's own programs are read-only; `$XDG_RUNTIME_DIR` is
//! emptied but for the socket's directory and `SSH_AUTH_SOCK` (the user's systemd and
//! D-Bus sockets there would run commands outside); every directory above a protected
//! path is a mount point of its own, so it cannot be renamed away and rebuilt. The rest
//! of the filesystem, and the network, are as they were. bubblewrap's `--info-fd` and
//! `--block-fd` let `jitc` register the sandbox's first process with the agent before
//! the program starts; inside, `jitc __sandbox-init` scopes signals and abstract
//! sockets with Landlock and forbids typing into the terminal (`TIOCSTI`) before it
//! runs the program.

pub mod inner;
pub mod launch;
pub mod relay;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// What the sandbox is made around.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The agent's socket (its directory stays reachable, read-only).
    pub socket: PathBuf,
    /// The vault file (its directory is hidden).
    pub vault: PathBuf,
    /// The policy file and the audit log (their directories are read-only).
    pub policy: PathBuf,
    pub audit: PathBuf,
    /// Programs that must not be replaced from inside: `jitc`, `jitc-agentd`.
    pub programs: Vec<PathBuf>,
    /// Further paths the user asked to make read-only (`--read-only`).
    pub read_only: Vec<PathBuf>,
    /// `$XDG_RUNTIME_DIR`, emptied inside but for the socket's directory.
    pub runtime_dir: Option<PathBuf>,
    /// `$SSH_AUTH_SOCK`, kept reachable when it lies in the runtime directory.
    pub ssh_auth_sock: Option<PathBuf>,
    /// Directories of sockets whose servers outside run commands or type for you (tmux,
    /// screen, X11, emacs): an empty tmpfs over each that exists.
    pub hidden: Vec<PathBuf>,
    /// Where the program works (must stay writable): the current directory and home.
    pub workdirs: Vec<PathBuf>,
    /// Your home, read-only inside but for `writable`: a writable home lets a program
    /// leave behind what your own sessions run later (start-up files, a `jitc` early on
    /// `PATH`, completions, user units).
    pub home: Option<PathBuf>,
    /// What stays writable under `home`: where the program works and what `--writable`
    /// adds.
    pub writable: Vec<PathBuf>,
    /// Other homes of this user (`$HOME` and the password database's may differ): as
    /// read-only as `home`.
    pub other_homes: Vec<PathBuf>,
    /// The sandbox's own cache (`src`), shown at the cache's place (`dst`): code in the
    /// real cache runs outside later (shell prompts' instant caches, shared virtualenvs),
    /// so the real one is not reachable.
    pub cache: Option<(PathBuf, PathBuf)>,
    /// Socket files whose servers act with more than the user's rights (docker's):
    /// covered by an empty file.
    pub masked: Vec<PathBuf>,
}

/// Why a sandbox cannot be made as asked.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{what} lies in {dir}, which the sandbox would {how} as a whole, and {dir} holds {work}; give jitc a directory of its own for it ({hint})"
    )]
    TooWide {
        what: &'static str,
        dir: String,
        how: &'static str,
        work: String,
        hint: &'static str,
    },
    #[error(
        "{path} is reached through the symlink {link}, which a program in the sandbox could replace; point jitc at the real path"
    )]
    Symlink { path: String, link: String },
    #[error("{0} has no directory above it")]
    NoParent(String),
}

fn dir_of(p: &Path) -> Result<PathBuf, PlanError> {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .ok_or_else(|| PlanError::NoParent(p.display().to_string()))
}

/// `p` without `.` and `..` (lexically; paths here are absolute).
fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every directory above `p`, from the top, without `/`.
fn ancestors(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = p
        .ancestors()
        .skip(1)
        .filter(|a| a.parent().is_some())
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

impl Plan {
    /// Whether a program in the sandbox could write in directory `d`: one this user
    /// can write that is outside the read-only home, or in a writable part of it.
    fn writable_inside(&self, d: &Path) -> bool {
        let ours = nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok();
        let frozen = self.home.as_ref().is_some_and(|h| d.starts_with(h))
            && !self.writable.iter().any(|w| d.starts_with(w));
        ours && !frozen
    }

    /// A symlink on the way to `p` that a program in the sandbox could swap (it sits in
    /// a directory writable inside), if any.
    fn swappable_symlink(&self, p: &Path) -> Option<PathBuf> {
        let mut cur = PathBuf::new();
        for c in p.components() {
            cur.push(c);
            let Ok(meta) = std::fs::symlink_metadata(&cur) else {
                return None;
            };
            if meta.file_type().is_symlink()
                && cur.parent().is_some_and(|d| self.writable_inside(d))
            {
                return Some(cur);
            }
        }
        None
    }
}

impl Plan {
    /// The directories to hide, to make read-only, and to pin, checked.
    fn dirs(&self) -> Result<Dirs, PlanError> {
        let vault = normal(&dir_of(&self.vault)?);
        let mut read_only = vec![
            (
                "the policy",
                normal(&dir_of(&self.policy)?),
                "JITC_POLICY or --policy",
            ),
            (
                "the audit log",
                normal(&dir_of(&self.audit)?),
                "--audit-log",
            ),
        ];
        let socket_dir = normal(&dir_of(&self.socket)?);
        read_only.push(("the agent's socket", socket_dir.clone(), "JITC_SOCK"));
        let work: Vec<PathBuf> = self.workdirs.iter().map(|w| normal(w)).collect();
        let too_wide = |what, dir: &Path, how, hint| -> Result<(), PlanError> {
            if let Some(w) = work.iter().find(|w| w.starts_with(dir)) {
                return Err(PlanError::TooWide {
                    what,
                    dir: dir.display().to_string(),
                    how,
                    work: w.display().to_string(),
                    hint,
                });
            }
            Ok(())
        };
        too_wide("the vault", &vault, "hide", "JITC_VAULT")?;
        for (what, dir, hint) in &read_only {
            too_wide(what, dir, "make read-only", hint)?;
        }
        // Always emptied: the systemd user manager's and the session bus's sockets live
        // there, wherever jitc's socket is.
        let runtime = self
            .runtime_dir
            .as_ref()
            .map(|r| normal(r))
            .filter(|r| r.is_dir() && r.parent().is_some());
        // The socket's directory comes back read-only — or, where it is the runtime
        // directory itself, the socket alone.
        let socket_alone = runtime.as_ref() == Some(&socket_dir);
        if socket_alone {
            read_only.retain(|(_, d, _)| *d != socket_dir);
        }
        let mut protected: Vec<PathBuf> = vec![vault.clone(), self.socket.clone()];
        protected.extend(read_only.iter().map(|(_, d, _)| d.clone()));
        protected.extend(self.programs.iter().map(|p| normal(p)));
        protected.extend(self.read_only.iter().map(|p| normal(p)));
        protected.extend(runtime.iter().cloned());
        for p in &protected {
            if let Some(link) = self.swappable_symlink(p) {
                return Err(PlanError::Symlink {
                    path: p.display().to_string(),
                    link: link.display().to_string(),
                });
            }
        }
        let mut pinned: Vec<PathBuf> = Vec::new();
        for p in &protected {
            for a in ancestors(p) {
                if !pinned.contains(&a) {
                    pinned.push(a);
                }
            }
        }
        // Top down, so that a deeper mount is not copied over by a shallower one.
        pinned.sort_by_key(|p| p.components().count());
        let mut ro_dirs: Vec<PathBuf> = Vec::new();
        for (_, d, _) in read_only {
            if !ro_dirs.contains(&d) {
                ro_dirs.push(d);
            }
        }
        Ok(Dirs {
            vault,
            ro_dirs,
            runtime,
            socket_alone,
            pinned,
        })
    }

    /// Creates what must exist before the sandbox hides or protects it (a missing
    /// policy directory would let the program inside create a policy).
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let dirs = self.dirs().map_err(std::io::Error::other)?;
        for d in std::iter::once(&dirs.vault).chain(&dirs.ro_dirs) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)?;
        }
        Ok(())
    }

    /// bubblewrap's arguments up to the program (`--info-fd`, `--block-fd` and what it
    /// runs come after).
    pub fn bwrap_args(&self) -> Result<Vec<OsString>, PlanError> {
        let dirs = self.dirs()?;
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |xs: &[&std::ffi::OsStr]| a.extend(xs.iter().map(|x| x.to_os_string()));
        push(&[
            "--unshare-user".as_ref(),
            "--unshare-pid".as_ref(),
            "--unshare-ipc".as_ref(),
            // A session of its own: the program never shares a terminal with you.
            "--new-session".as_ref(),
            "--die-with-parent".as_ref(),
            "--cap-drop".as_ref(),
            "ALL".as_ref(),
            "--dev-bind".as_ref(),
            "/".as_ref(),
            "/".as_ref(),
            "--proc".as_ref(),
            "/proc".as_ref(),
            // A /dev of its own: your other terminals' /dev/pts entries are not there.
            "--dev".as_ref(),
            "/dev".as_ref(),
            "--tmpfs".as_ref(),
            "/dev/shm".as_ref(),
        ]);
        for p in &dirs.pinned {
            if p.exists() {
                push(&["--bind".as_ref(), p.as_os_str(), p.as_os_str()]);
            }
        }
        if let Some(h) = self.home.as_ref().filter(|h| h.is_dir()) {
            push(&["--ro-bind".as_ref(), h.as_os_str(), h.as_os_str()]);
            for o in self.other_homes.iter().filter(|o| o.is_dir()) {
                push(&["--ro-bind".as_ref(), o.as_os_str(), o.as_os_str()]);
            }
            for w in self
                .writable
                .iter()
                .filter(|w| w.starts_with(h) && w.exists())
            {
                push(&["--bind".as_ref(), w.as_os_str(), w.as_os_str()]);
            }
            if let Some((src, dst)) = self.cache.as_ref().filter(|(s, _)| s.is_dir()) {
                push(&["--bind".as_ref(), src.as_os_str(), dst.as_os_str()]);
                push(&[
                    "--setenv".as_ref(),
                    "XDG_CACHE_HOME".as_ref(),
                    dst.as_os_str(),
                ]);
            }
        }
        for m in self.masked.iter().filter(|m| m.exists()) {
            push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), m.as_os_str()]);
        }
        if let Some(r) = &dirs.runtime {
            push(&[
                "--perms".as_ref(),
                "0700".as_ref(),
                "--tmpfs".as_ref(),
                r.as_os_str(),
            ]);
            if let Some(s) = self
                .ssh_auth_sock
                .as_ref()
                .filter(|s| s.starts_with(r) && s.exists())
            {
                push(&["--bind".as_ref(), s.as_os_str(), s.as_os_str()]);
            }
            if dirs.socket_alone {
                push(&[
                    "--bind".as_ref(),
                    self.socket.as_os_str(),
                    self.socket.as_os_str(),
                ]);
            }
        }
        // Never over where the program works (a tmux socket put in a repository stays).
        let hidden = self
            .hidden
            .iter()
            .filter(|h| h.is_dir() && !self.workdirs.iter().any(|w| w.starts_with(h)));
        for h in hidden {
            push(&[
                "--perms".as_ref(),
                "0700".as_ref(),
                "--tmpfs".as_ref(),
                h.as_os_str(),
            ]);
        }
        for var in [
            "TMUX",
            "TMUX_PANE",
            "STY",
            "DISPLAY",
            "XAUTHORITY",
            "DBUS_SESSION_BUS_ADDRESS",
        ] {
            push(&["--unsetenv".as_ref(), var.as_ref()]);
        }
        push(&[
            "--perms".as_ref(),
            "0700".as_ref(),
            "--tmpfs".as_ref(),
            dirs.vault.as_os_str(),
        ]);
        for d in &dirs.ro_dirs {
            push(&["--ro-bind".as_ref(), d.as_os_str(), d.as_os_str()]);
        }
        for p in self.programs.iter().chain(&self.read_only) {
            if p.exists() {
                push(&["--ro-bind".as_ref(), p.as_os_str(), p.as_os_str()]);
            }
        }
        push(&[
            "--setenv".as_ref(),
            jitc_protocol::paths::SOCKET_ENV.as_ref(),
            self.socket.as_os_str(),
        ]);
        Ok(a)
    }
}

struct Dirs {
    vault: PathBuf,
    ro_dirs: Vec<PathBuf>,
    runtime: Option<PathBuf>,
    /// The socket lies right in the runtime directory: only it comes back.
    socket_alone: bool,
    pinned: Vec<PathBuf>,
}

/// Whether `path` is owned by this user (for what `jitc sandbox` protects).
pub fn owned_by_me(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(root: &Path) -> Plan {
        Plan {
            socket: root.join("run/jitc/agent.sock"),
            vault: root.join("home/.local/share/jitc/vault.jitc"),
            policy: root.join("home/.config/jitc/policy.toml"),
            audit: root.join("home/.local/state/jitc/audit.log"),
            programs: vec![root.join("bin/jitc")],
            read_only: vec![],
            runtime_dir: Some(root.join("run")),
            ssh_auth_sock: None,
            hidden: vec![],
            workdirs: vec![root.join("home/repo"), root.join("home")],
            home: Some(root.join("home")),
            writable: vec![root.join("home/repo")],
            other_homes: vec![],
            cache: None,
            masked: vec![],
        }
    }

    fn text(args: &[OsString]) -> String {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn hides_the_vault_protects_jitcs_dirs_and_pins_what_is_above() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "run/jitc",
            "home/.local/share/jitc",
            "home/.config/jitc",
            "home/.local/state/jitc",
            "bin",
            "home/repo",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("bin/jitc"), b"").unwrap();
        let args = text(&plan(r).bwrap_args().unwrap());
        let r = r.display();
        assert!(
            args.contains(&format!("--tmpfs {r}/home/.local/share/jitc")),
            "{args}"
        );
        assert!(
            args.contains(&format!(
                "--ro-bind {r}/home/.config/jitc {r}/home/.config/jitc"
            )),
            "{args}"
        );
        assert!(
            args.contains(&format!("--ro-bind {r}/run/jitc {r}/run/jitc")),
            "{args}"
        );
        assert!(
            args.contains(&format!("--tmpfs {r}/run --ro-bind").replace(" --ro-bind", "")),
            "{args}"
        );
        assert!(
            args.contains(&format!("--ro-bind {r}/bin/jitc {r}/bin/jitc")),
            "{args}"
        );
        // The directories above, each a mount point: none can be renamed away.
        assert!(
            args.contains(&format!("--bind {r}/home/.config {r}/home/.config")),
            "{args}"
        );
        assert!(
            args.contains(&format!("--bind {r}/home {r}/home")),
            "{args}"
        );
        // Pinned before anything is hidden or protected below them.
        let pin = args.find(&format!("--bind {r}/home/.config ")).unwrap();
        let ro = args.find("--ro-bind").unwrap();
        assert!(pin < ro, "{args}");
    }

    #[test]
    fn refuses_to_hide_or_freeze_where_the_program_works() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut p = plan(r);
        p.vault = r.join("home/vault.jitc");
        let e = p.bwrap_args().unwrap_err().to_string();
        assert!(
            e.contains("the vault lies in") && e.contains("JITC_VAULT"),
            "{e}"
        );
        let mut p = plan(r);
        p.policy = r.join("home/repo/policy.toml");
        let e = p.bwrap_args().unwrap_err().to_string();
        assert!(e.contains("make read-only"), "{e}");
    }

    #[test]
    fn a_symlink_the_sandbox_could_swap_is_refused_one_in_the_frozen_home_is_not() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("real/jitc")).unwrap();
        std::fs::create_dir_all(r.join("home/repo")).unwrap();
        // Dotfiles managed by stow: a symlink in the home, which is read-only inside.
        std::os::unix::fs::symlink(r.join("real"), r.join("home/.config")).unwrap();
        plan(r).bwrap_args().unwrap();
        // In the writable part: the program could point it elsewhere.
        std::os::unix::fs::symlink(r.join("real/jitc"), r.join("home/repo/cfg")).unwrap();
        let mut p = plan(r);
        p.policy = r.join("home/repo/cfg/policy.toml");
        let e = p.bwrap_args().unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
    }

    #[test]
    fn the_home_is_read_only_but_for_where_the_program_works() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("home/repo")).unwrap();
        let args = text(&plan(r).bwrap_args().unwrap());
        let r = r.display();
        let ro = args.find(&format!("--ro-bind {r}/home {r}/home ")).unwrap();
        let rw = args
            .find(&format!("--bind {r}/home/repo {r}/home/repo"))
            .unwrap();
        assert!(ro < rw, "{args}");
    }
}

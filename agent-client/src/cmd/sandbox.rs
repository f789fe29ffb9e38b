//! `jitc sandbox`: run a program (a coding agent) in a sandbox the agent knows it by,
//! and `jitc __sandbox-init`, its last step inside.

use std::ffi::OsString;
use std::path::PathBuf;

use jitc::sandbox::{Plan, inner, launch};
use jitc::start::{agentd_binary, connect_or_start};
use jitc::{Error, Result};
use jitc_protocol::ErrorCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy profile every request from inside gets, whatever its ancestry
    #[arg(long, value_name = "NAME", default_value = "agent")]
    profile: String,
    /// Also make PATH read-only inside (repeatable), e.g. ~/.bashrc or .git/hooks
    #[arg(long = "read-only", value_name = "PATH")]
    read_only: Vec<PathBuf>,
    /// Say nothing about what this kernel cannot enforce
    #[arg(long, short)]
    quiet: bool,
    /// The program and its arguments (after '--')
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The stderr to give the program (bubblewrap's own went to jitc)
    #[arg(long, value_name = "FD")]
    stderr_fd: Option<i32>,
    #[arg(long)]
    quiet: bool,
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Where bubblewrap is looked for: never on `PATH`, which the program in an earlier
/// sandbox may have been able to write.
const BWRAP_PLACES: [&str; 3] = ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"];

/// `bwrap`: `JITC_BWRAP`, else the first of `BWRAP_PLACES` — and only one that root
/// alone can change (it and every directory above it root's, writable by no one
/// else): a `bwrap` the user can replace could report a decoy and run the program
/// unsandboxed.
fn bwrap() -> Result<PathBuf> {
    let path = match std::env::var_os("JITC_BWRAP").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => BWRAP_PLACES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::local(
                    ErrorCode::Unavailable,
                    "bubblewrap is not installed (no /usr/bin/bwrap); install it (Debian, Ubuntu: apt install bubblewrap) — jitc never runs the program unsandboxed",
                )
            })?,
    };
    let real = std::fs::canonicalize(&path).map_err(|e| {
        Error::local(
            ErrorCode::Unavailable,
            format!("cannot find bubblewrap at {} ({e})", path.display()),
        )
    })?;
    if let Some(weak) = replaceable(&real) {
        return Err(Error::local(
            ErrorCode::Unavailable,
            format!(
                "refused to use bubblewrap at {}: {} is yours or writable by others, so a program you ran could have replaced it; install bubblewrap from your distribution",
                real.display(),
                weak.display()
            ),
        ));
    }
    Ok(real)
}

/// The first of `path` and the directories above it that this user owns or that a
/// group or anyone may write, if any. (Root's files show as owned by `nobody` inside
/// a user namespace; either way they are not ours.)
fn replaceable(path: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    for p in path.ancestors() {
        let Ok(m) = std::fs::metadata(p) else {
            return Some(p.to_path_buf());
        };
        // (Root owns everything it could use; for root only the mode bits can tell.)
        if (m.uid() == me && me != 0) || m.mode() & 0o022 != 0 {
            return Some(p.to_path_buf());
        }
    }
    None
}

pub fn run(args: Args) -> Result<u8> {
    let mut client = connect_or_start()?;
    let s = client.status()?;
    if let Some(id) = s.caller_sandbox {
        return Err(Error::local(
            ErrorCode::Refused,
            format!(
                "refused: this shell is inside sandbox {id}; a sandbox is made from outside any sandbox"
            ),
        ));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::failure(format!("cannot read the current directory ({e})")))?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut programs: Vec<PathBuf> = Vec::new();
    programs.extend(std::env::current_exe().ok());
    let agentd = agentd_binary();
    if agentd.is_absolute() {
        programs.push(agentd);
    }
    programs.extend(s.exe.as_ref().map(PathBuf::from));
    programs.dedup();
    let mut read_only: Vec<PathBuf> = args
        .read_only
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let cwd_now = std::env::current_dir().unwrap_or_default();
    let later = run_later(home.as_deref());
    read_only.extend(
        later
            .frozen
            .iter()
            // Never where the program works.
            .filter(|p| !cwd_now.starts_with(p) && home.as_deref() != Some(p.as_path()))
            .cloned(),
    );
    let uid = nix::unistd::geteuid().as_raw();
    let plan = Plan {
        socket: PathBuf::from(&s.socket),
        vault: PathBuf::from(&s.vault),
        policy: PathBuf::from(&s.policy.path),
        audit: PathBuf::from(&s.audit.path),
        programs,
        read_only,
        runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        ssh_auth_sock: std::env::var_os("SSH_AUTH_SOCK")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        hidden: command_servers(uid),
        workdirs: std::iter::once(cwd).chain(home).collect(),
    };
    let bwrap_args = plan
        .bwrap_args()
        .map_err(|e| Error::bad_input(e.to_string()))?;
    plan.prepare()
        .map_err(|e| Error::failure(format!("cannot prepare the sandbox's directories ({e})")))?;
    let jitc = std::env::current_exe()
        .map_err(|e| Error::failure(format!("cannot find this jitc ({e})")))?;
    let ran = launch::run(
        &mut client,
        launch::Launch {
            bwrap: bwrap()?,
            args: bwrap_args,
            jitc,
            command: args.command,
            profile: args.profile,
            quiet: args.quiet,
        },
    );
    quarantine(&later.watched);
    ran
}

/// Socket directories of servers outside that run commands or type for whoever
/// connects: tmux (`$TMUX_TMPDIR`, the socket named in `$TMUX`), screen, X11, emacs.
fn command_servers(uid: u32) -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let tmux_tmp = var("TMUX_TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
    let user = std::env::var("USER").unwrap_or_default();
    let mut out = vec![
        tmux_tmp.join(format!("tmux-{uid}")),
        PathBuf::from(format!("/tmp/tmux-{uid}")),
        PathBuf::from(format!("/run/screen/S-{user}")),
        PathBuf::from(format!("/var/run/screen/S-{user}")),
        PathBuf::from("/tmp/.X11-unix"),
        PathBuf::from(format!("/tmp/emacs{uid}")),
    ];
    out.extend(var("SCREENDIR"));
    if let Some(socket) = std::env::var("TMUX")
        .ok()
        .and_then(|t| t.split(',').next().map(PathBuf::from))
    {
        out.extend(socket.parent().map(std::path::Path::to_path_buf));
    }
    out.sort();
    out.dedup();
    out
}

/// What the user's own sessions run later, outside any sandbox: shell start-up files,
/// systemd user units, autostart entries, and the user-writable directories on `PATH`
/// (a `jitc` or `jitc-agentd` planted there would be the one that runs, and would get
/// the vault passphrase).
#[derive(Debug, Default)]
struct RunLater {
    /// Made read-only in the sandbox.
    frozen: Vec<PathBuf>,
    /// Missing, and not creatable empty without changing what runs (bash reads the
    /// first of `.bash_profile`, `.bash_login`, `.profile`): if the sandbox makes one,
    /// it is moved aside when the sandbox ends.
    watched: Vec<PathBuf>,
}

/// Start-up files whose empty form means the same as their absence, and directories.
const START_UP_EMPTY_OK: [&str; 10] = [
    ".bashrc",
    ".bash_logout",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".config/fish",
    ".config/systemd",
    ".config/autostart",
    ".config/environment.d",
];
/// Start-up files whose mere existence changes what runs.
const START_UP_PRESENCE_MATTERS: [&str; 3] = [".bash_profile", ".bash_login", ".profile"];

fn run_later(home: Option<&std::path::Path>) -> RunLater {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut out = RunLater::default();
    if let Some(home) = home {
        for f in START_UP_EMPTY_OK {
            let p = home.join(f);
            if !p.exists() {
                // An empty one in its place, so the sandbox cannot make it.
                let made = if f.starts_with(".config/") {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&p)
                        .is_ok()
                } else {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&p)
                        .is_ok()
                };
                if !made {
                    out.watched.push(p);
                    continue;
                }
            }
            out.frozen.push(p);
        }
        for f in START_UP_PRESENCE_MATTERS {
            let p = home.join(f);
            if p.exists() {
                out.frozen.push(p);
            } else {
                out.watched.push(p);
            }
        }
    }
    for dir in std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
    {
        if dir.is_absolute()
            && dir.is_dir()
            && nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok()
            && !out.frozen.contains(&dir)
        {
            out.frozen.push(dir);
        }
    }
    out
}

/// Moves aside each watched start-up file the sandbox made, and says so.
fn quarantine(watched: &[PathBuf]) {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for p in watched.iter().filter(|p| p.symlink_metadata().is_ok()) {
        let mut aside = p.clone().into_os_string();
        aside.push(format!(".jitc-sandbox-{stamp}"));
        let aside = PathBuf::from(aside);
        match std::fs::rename(p, &aside) {
            Ok(()) => jitc::error::note(&format!(
                "WARNING: the sandbox created {}, which your next login would run outside it; moved to {} — read it before you keep it",
                p.display(),
                aside.display()
            )),
            Err(e) => jitc::error::note(&format!(
                "WARNING: the sandbox created {}, which your next login would run outside it, and it could not be moved aside ({e}); read it before you log in again",
                p.display()
            )),
        }
    }
}

pub fn init(args: InitArgs) -> Result<u8> {
    inner::run(args.stderr_fd, &args.command, args.quiet)
}

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
    /// Also make PATH read-only inside (repeatable), e.g. .git/hooks
    #[arg(long = "read-only", value_name = "PATH")]
    read_only: Vec<PathBuf>,
    /// Let the program write PATH in your home, which is read-only inside but for the
    /// current directory and ~/.cache (repeatable), e.g. ~/.codex or ~/.cargo
    #[arg(long, value_name = "PATH")]
    writable: Vec<PathBuf>,
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
    // $HOME and the password database's home: both are read-only inside (a $HOME
    // pointed elsewhere must not leave the real one open).
    let canonical = |h: PathBuf| std::fs::canonicalize(&h).unwrap_or(h);
    let env_home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| canonical(PathBuf::from(h)));
    let pw_home = jitc::home::password_home(nix::unistd::geteuid().as_raw())
        .map(canonical)
        .filter(|d| d.is_dir() && d.parent().is_some());
    let home = env_home.clone().or_else(|| pw_home.clone());
    let Some(home_dir) = home.clone().filter(|h| h.parent().is_some()) else {
        return Err(Error::bad_input(
            "no home to protect ($HOME is unset or /, and the password database has none); set HOME",
        ));
    };
    let other_homes: Vec<PathBuf> = pw_home.into_iter().filter(|p| *p != home_dir).collect();
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
    read_only.extend(
        run_later(home.as_deref())
            .into_iter()
            // Never where the program works.
            .filter(|p| !cwd_now.starts_with(p) && home.as_deref() != Some(p.as_path())),
    );
    let writable = writable_parts(&args.writable, &cwd_now, home.as_deref())?;
    // What the freeze list names but does not exist yet, under a --writable path: made
    // now (empty directories), so that it is frozen rather than creatable.
    for dir in [
        ".config/systemd",
        ".config/autostart",
        ".config/environment.d",
        ".config/fish",
        ".config/git",
        ".local/bin",
        ".local/share/systemd",
        ".local/share/bash-completion",
    ] {
        let p = home_dir.join(dir);
        if !p.exists() && writable.iter().any(|w| p.starts_with(w)) {
            use std::os::unix::fs::DirBuilderExt;
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p);
            read_only.push(p);
        }
    }
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
        workdirs: std::iter::once(cwd).chain(home.clone()).collect(),
        home: home.clone(),
        writable,
        other_homes,
        cache: private_cache(&home_dir),
        masked: vec![
            PathBuf::from("/run/docker.sock"),
            PathBuf::from("/var/run/docker.sock"),
        ],
    };
    let bwrap_args = plan
        .bwrap_args()
        .map_err(|e| Error::bad_input(e.to_string()))?;
    plan.prepare()
        .map_err(|e| Error::failure(format!("cannot prepare the sandbox's directories ({e})")))?;
    let jitc = std::env::current_exe()
        .map_err(|e| Error::failure(format!("cannot find this jitc ({e})")))?;
    launch::run(
        &mut client,
        launch::Launch {
            bwrap: bwrap()?,
            args: bwrap_args,
            jitc,
            command: args.command,
            profile: args.profile,
            quiet: args.quiet,
        },
    )
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
    // Made if missing (as tmux and emacs make them: 0700, ours), so that a server the
    // program starts there is not the one your next `tmux` connects to.
    for d in [
        tmux_tmp.join(format!("tmux-{uid}")),
        PathBuf::from(format!("/tmp/tmux-{uid}")),
        PathBuf::from(format!("/tmp/emacs{uid}")),
    ] {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&d);
    }
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

/// What the user's own sessions run later, outside any sandbox, that must stay
/// read-only even where `--writable` opens its directory: shell start-up files,
/// `~/.config`'s user units, autostart and environment, and every directory on `PATH`
/// this user can write (a `jitc` or `jitc-agentd` planted there would be the one that
/// runs next, and would get the vault passphrase).
fn run_later(home: Option<&std::path::Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(home) = home {
        for f in [
            ".bashrc",
            ".bash_profile",
            ".bash_login",
            ".bash_logout",
            ".bash_aliases",
            ".profile",
            ".zshrc",
            ".zshenv",
            ".zprofile",
            ".zlogin",
            ".inputrc",
            ".config/fish",
            ".config/systemd",
            ".config/autostart",
            ".config/environment.d",
            ".local/share/systemd",
            ".local/share/bash-completion",
            ".ssh",
            ".gitconfig",
            ".config/git",
            ".local/bin",
        ] {
            let p = home.join(f);
            if p.exists() {
                out.push(p);
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
            && !out.contains(&dir)
        {
            out.push(dir);
        }
    }
    out
}

/// What stays writable under the home: the current directory (unless it is the home
/// itself), the cache directory (made if missing), and each `--writable` path.
fn writable_parts(
    asked: &[PathBuf],
    cwd: &std::path::Path,
    home: Option<&std::path::Path>,
) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = asked
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let Some(home) = home else {
        return Ok(out);
    };
    if out.iter().any(|p| p == home) {
        return Err(Error::bad_input(format!(
            "--writable {} would let the program write your whole home, and with it what your own sessions run later; name the directories it needs instead (e.g. --writable ~/.codex)",
            home.display()
        )));
    }
    if cwd == home {
        return Err(Error::bad_input(format!(
            "the current directory is your home ({}), which the sandbox makes read-only; run it from your project's directory",
            home.display()
        )));
    }
    if cwd.starts_with(home) {
        out.push(cwd.to_path_buf());
    }
    Ok(out)
}

/// The sandbox's own cache, made if missing (`~/.cache/jitc-sandbox`), to show at
/// `~/.cache` inside.
fn private_cache(home: &std::path::Path) -> Option<(PathBuf, PathBuf)> {
    use std::os::unix::fs::DirBuilderExt;
    let dst = home.join(".cache");
    let src = dst.join("jitc-sandbox");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&src)
        .ok()?;
    Some((src, dst))
}

pub fn init(args: InitArgs) -> Result<u8> {
    inner::run(args.stderr_fd, &args.command, args.quiet)
}

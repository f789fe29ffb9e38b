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

/// `bwrap`: `JITC_BWRAP`, else the first on `PATH`.
fn bwrap() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("JITC_BWRAP").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::local(
                ErrorCode::Unavailable,
                "bubblewrap is not installed ('bwrap' is not on PATH); install it (Debian, Ubuntu: apt install bubblewrap) — jitc never runs the program unsandboxed",
            )
        })
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
    read_only.extend(
        run_later(home.as_deref())
            .into_iter()
            // Never where the program works.
            .filter(|p| !cwd_now.starts_with(p) && home.as_deref() != Some(p.as_path())),
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
        tmux_dir: Some(PathBuf::from(format!("/tmp/tmux-{uid}"))),
        workdirs: std::iter::once(cwd).chain(home).collect(),
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

/// What the user's own sessions run later, outside any sandbox, that the sandbox could
/// otherwise rewrite to act outside or to catch the vault passphrase: shell start-up
/// files and the systemd user units and autostart entries that exist, and every
/// directory on `PATH` before the one `jitc` is found in that this user can write (a
/// program named `jitc` put there would be the one you type).
fn run_later(home: Option<&std::path::Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(home) = home {
        for f in [
            ".bashrc",
            ".bash_profile",
            ".bash_login",
            ".bash_logout",
            ".profile",
            ".zshrc",
            ".zshenv",
            ".zprofile",
            ".zlogin",
            ".config/fish",
            ".config/systemd",
            ".config/autostart",
            ".config/environment.d",
        ] {
            let p = home.join(f);
            if p.exists() {
                out.push(p);
            }
        }
    }
    let jitc_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf));
    for dir in std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
    {
        if Some(&dir) == jitc_dir.as_ref() {
            break;
        }
        if dir.join("jitc").is_file() {
            // Another jitc, found first: the one you type.
            out.push(dir.join("jitc"));
            break;
        }
        if dir.is_absolute()
            && dir.is_dir()
            && nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok()
        {
            out.push(dir);
        }
    }
    out
}

pub fn init(args: InitArgs) -> Result<u8> {
    inner::run(args.stderr_fd, &args.command, args.quiet)
}

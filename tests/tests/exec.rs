//! `jitc exec`: injection, exit codes, stdin, signals, and the lease around the command.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jitc_tests::*;
use nix::sys::signal::Signal;

fn env_with_secrets() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db-password", "pw-1111");
    env.add("GITHUB_TOKEN", "ghp-2222");
    (env, agent)
}

/// `sh -c SCRIPT` under `jitc exec ARGS --`.
fn exec_sh(env: &TestEnv, args: &[&str], script: &str) -> Run {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "sh", "-c", script]);
    env.run(&all, None)
}

fn leases(env: &TestEnv) -> u64 {
    env.status()["leases"].as_u64().unwrap()
}

#[test]
fn injects_under_the_naming_rule_and_references() {
    let (env, _agent) = env_with_secrets();
    let out = exec_sh(
        &env,
        &["-s", "prod/db-password", "-e", "TOKEN=jitc://GITHUB_TOKEN", "-e", "ALSO=GITHUB_TOKEN"],
        "printf %s \"$PROD_DB_PASSWORD\" | sha256sum; printf %s \"$TOKEN\" | sha256sum; printf %s \"$ALSO\" | sha256sum",
    )
    .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with(&sha256_hex(b"pw-1111")));
    assert!(lines[1].starts_with(&sha256_hex(b"ghp-2222")));
    assert!(lines[2].starts_with(&sha256_hex(b"ghp-2222")));
}

#[test]
fn child_gets_our_environment_with_leased_variables_on_top() {
    let (env, _agent) = env_with_secrets();
    let mut c = env.jitc(&[
        "exec",
        "-e",
        "OVERRIDE=GITHUB_TOKEN",
        "--",
        "sh",
        "-c",
        "echo \"marker=$MARKER\"; printf %s \"$OVERRIDE\" | sha256sum",
    ]);
    c.env("MARKER", "kept").env("OVERRIDE", "plain-value");
    let out = run_with_stdin(c, None).ok();
    assert!(out.stdout.contains("marker=kept"));
    assert!(out.stdout.contains(&sha256_hex(b"ghp-2222")));
}

#[test]
fn exit_codes_pass_through() {
    let (env, _agent) = env_with_secrets();
    exec_sh(&env, &["-s", "GITHUB_TOKEN"], "exit 3").code(3);
    exec_sh(&env, &["-s", "GITHUB_TOKEN"], "exit 0").ok();
    // Death by signal N is 128+N.
    exec_sh(&env, &["-s", "GITHUB_TOKEN"], "kill -KILL $$").code(137);
    exec_sh(&env, &["-s", "GITHUB_TOKEN"], "kill -TERM $$").code(143);
    assert_eq!(leases(&env), 0, "every lease is released");
}

#[test]
fn stdin_passes_through() {
    let (env, _agent) = env_with_secrets();
    let out = env
        .run(
            &["exec", "-s", "GITHUB_TOKEN", "--", "cat"],
            Some(b"line one\nline two\n"),
        )
        .ok();
    assert_eq!(out.stdout, "line one\nline two\n");
}

#[test]
fn failures_are_one_line_with_their_codes() {
    let (env, _agent) = env_with_secrets();
    env.run(&["exec", "-s", "NOPE", "--", "true"], None)
        .code(1)
        .one_line_error()
        .says("no secret named 'NOPE'");
    env.run(&["exec", "-e", "X=jitc://bad name", "--", "true"], None)
        .code(65)
        .one_line_error()
        .says("bad reference");
    env.run(&["exec", "-e", "1X=GITHUB_TOKEN", "--", "true"], None)
        .code(65)
        .one_line_error();
    env.run(&["exec", "-e", "NOEQUALS", "--", "true"], None)
        .code(65)
        .one_line_error();
    env.add("9lives", "v");
    env.run(&["exec", "-s", "9lives", "--", "true"], None)
        .code(65)
        .one_line_error()
        .says("-e VAR=9lives");
    // No secrets: nothing to lease, the command just runs (as `op run` does).
    env.run(&["exec", "--", "true"], None).ok();
    env.run(
        &[
            "exec",
            "-e",
            "X=GITHUB_TOKEN",
            "-e",
            "X=prod/db-password",
            "--",
            "true",
        ],
        None,
    )
    .code(65)
    .one_line_error();
    env.run(
        &["exec", "-s", "GITHUB_TOKEN", "--", "no-such-command-jitc"],
        None,
    )
    .code(1)
    .one_line_error()
    .says("command not found");
    env.run(
        &["exec", "-s", "GITHUB_TOKEN", "--ttl", "soon", "--", "true"],
        None,
    )
    .code(65)
    .one_line_error()
    .says("bad duration");
    env.run(
        &["exec", "-s", "GITHUB_TOKEN", "--ttl", "0s", "--", "true"],
        None,
    )
    .code(65)
    .one_line_error();
    // Usage errors are clap's (2), and one line too.
    env.run(&["exec", "-s", "GITHUB_TOKEN"], None)
        .code(2)
        .one_line_error()
        .says("'exec' needs CMD; see 'jitc exec --help'");
    env.run(&["frobnicate"], None)
        .code(2)
        .one_line_error()
        .says("see 'jitc --help'");
    // Keeps clap's facts and points at the command's help.
    env.run(&["add"], None)
        .code(2)
        .one_line_error()
        .says("'add' needs NAME; see 'jitc add --help'");
    // A mistyped option before '--' is a usage error, never the command.
    env.run(&["exec", "--tll", "5m", "--", "env"], None)
        .code(2)
        .one_line_error()
        .says("unexpected argument '--tll'")
        .says("see 'jitc exec --help'");
    env.run(&["add", "WITHNUL"], Some(b"a\0b")).ok();
    env.run(&["exec", "-s", "WITHNUL", "--", "true"], None)
        .code(65)
        .one_line_error()
        .says("NUL");
    assert_eq!(leases(&env), 0);
}

type Started = (std::process::Child, BufReader<std::process::ChildStdout>);

/// Starts `jitc exec -s GITHUB_TOKEN -- sh -c SCRIPT` and waits for the script's
/// `ready` line.
fn start_script(env: &TestEnv, script: &str) -> Started {
    let mut c = env.jitc(&["exec", "-s", "GITHUB_TOKEN", "--", "sh", "-c", script]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

/// A script that reports which signal reached it.
fn start_trapping(env: &TestEnv) -> Started {
    start_script(
        env,
        "trap 'echo got-term; exit 42' TERM; trap 'echo got-hup; exit 43' HUP; trap 'echo got-int; exit 44' INT; trap 'echo got-quit; exit 45' QUIT; trap 'echo got-winch; exit 46' WINCH; echo ready; while :; do sleep 0.05; done",
    )
}

#[test]
fn signals_are_forwarded() {
    let (env, _agent) = env_with_secrets();
    for (sig, word, code) in [
        (Signal::SIGTERM, "got-term", 42),
        (Signal::SIGHUP, "got-hup", 43),
        (Signal::SIGINT, "got-int", 44),
        (Signal::SIGQUIT, "got-quit", 45),
        (Signal::SIGWINCH, "got-winch", 46),
    ] {
        let (mut child, mut out) = start_trapping(&env);
        assert_eq!(leases(&env), 1, "the lease is held while the command runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), word);
        assert_eq!(child.wait().unwrap().code(), Some(code));
    }
    assert_eq!(leases(&env), 0);
}

#[test]
fn locking_the_vault_stops_the_command() {
    let (env, _agent) = env_with_secrets();
    let (mut child, mut out) = start_trapping(&env);
    env.run(&["lock"], None).ok();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "got-term", "the command gets SIGTERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    // The group gets SIGTERM: the shell may also say its `sleep` was terminated.
    assert_eq!(
        err.lines().next(),
        Some("jitc: the vault was locked; stopped the command")
    );
}

#[test]
fn a_command_that_ignores_sigterm_is_killed() {
    let (env, _agent) = env_with_secrets();
    let (mut child, _out) = start_script(
        &env,
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
    );
    env.run(&["lock"], None).ok();
    let started = Instant::now();
    let status = child.wait().unwrap();
    // SIGKILL comes 5 s after SIGTERM: 128 + 9.
    assert_eq!(status.code(), Some(137));
    assert!(started.elapsed() >= Duration::from_secs(4));
}

#[test]
fn agent_shutdown_ends_the_lease_and_stops_the_command() {
    let (env, agent) = env_with_secrets();
    let (mut child, mut out) = start_trapping(&env);
    assert!(agent.stop().unwrap().success(), "clean exit on SIGTERM");
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "got-term");
    assert_eq!(child.wait().unwrap().code(), Some(42));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(
        err.lines().next(),
        Some("jitc: the agent shut down; stopped the command")
    );
    assert!(
        !env.socket().exists(),
        "the socket is unlinked on a clean exit"
    );
}

#[test]
fn a_script_without_a_shebang_runs_under_sh() {
    let (env, _agent) = env_with_secrets();
    let script = env.root().join("noshebang");
    std::fs::write(&script, "printf %s \"$GITHUB_TOKEN\" | sha256sum\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = env
        .run(
            &["exec", "-s", "GITHUB_TOKEN", "--", script.to_str().unwrap()],
            None,
        )
        .ok();
    assert!(out.stdout.starts_with(&sha256_hex(b"ghp-2222")));
}

#[test]
fn ctrl_c_at_the_terminal_reaches_the_command_once() {
    let (env, _agent) = env_with_secrets();
    // The child counts SIGINTs; jitc must not forward the terminal's own.
    let script = "n=0; trap 'n=$((n+1))' INT; echo ready; \
        while [ $n -eq 0 ]; do sleep 0.05; done; sleep 0.5; echo count=$n";
    let mut t = PtySession::spawn(
        &env,
        &jitc_bin(),
        &["exec", "-s", "GITHUB_TOKEN", "--", "sh", "-c", script],
    );
    t.expect("ready");
    t.send(b"\x03");
    t.expect("count=");
    assert_eq!(t.wait(), 0);
    assert!(t.output.text().contains("count=1"), "{:?}", t.output.text());
}

/// The agent's audit sync, held (a debug build) while a FIFO is at
/// `JITC_TEST_SYNC_GATE`: `SyncGate::new` names it before the agent starts, `hold` makes
/// the FIFO, and the sync is let go when what `hold` returns is dropped — also when an
/// assertion fails, or the agent would never stop.
struct SyncGate(std::path::PathBuf);

impl SyncGate {
    fn new(env: &TestEnv) -> SyncGate {
        let gate = env.root().join("sync-gate");
        env.set_env("JITC_TEST_SYNC_GATE", &gate);
        SyncGate(gate)
    }

    fn hold(&self, env: &TestEnv) -> HeldSync<'_> {
        nix::unistd::mkfifo(&self.0, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        env.give(&self.0);
        HeldSync(&self.0)
    }
}

struct HeldSync<'a>(&'a std::path::Path);

impl Drop for HeldSync<'_> {
    /// The agent is waiting to read, so the FIFO opens at once; the next syncs find no
    /// FIFO and do not wait.
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let fifo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.0);
        let _ = std::fs::remove_file(self.0);
        if let Ok(mut f) = fifo {
            let _ = std::io::Write::write_all(&mut f, b"x");
        }
    }
}

/// How many grants the audit log at `log` holds.
fn grants_in(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .matches("\"lease_granted\"")
        .count()
}

/// Waits until the log holds more than `before` grants (`jitc` is the one asking).
fn wait_for_a_grant(log: &std::path::Path, before: usize, jitc: &Background) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while grants_in(log) == before {
        assert!(
            Instant::now() < deadline,
            "the grant was never written to the log; jitc said: {}",
            jitc.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The command runs only once the grant's audit record is on disk. The agent (a debug
/// build) holds the sync of the log while a FIFO is at `JITC_TEST_SYNC_GATE`; meanwhile
/// the grant is written to the log but not synced, and nothing of the command has run:
/// jitc has started the command's process, which is still jitc, and which another
/// process of the user cannot read. Once the sync is let go, the command runs.
/// Everything runs as uid 1000.
#[test]
fn the_command_runs_only_once_the_grant_is_on_disk() {
    let env = TestEnv::new_as(USER);
    let gate = SyncGate::new(&env);
    let _agent = env.start_agent();
    env.init();
    env.add("X", "the-value-of-x");
    let log = audit::audit_path(&env);
    let granted_before = grants_in(&log);
    let release = gate.hold(&env);
    let marker = env.root().join("ran");
    let bg = env.spawn(&[
        "exec",
        "-s",
        "X",
        "--",
        "sh",
        "-c",
        "touch \"$0\"",
        marker.to_str().unwrap(),
    ]);
    wait_for_a_grant(&log, granted_before, &bg);
    // The command's process is started while the agent syncs, and waits: jitc's child
    // is still jitc, nothing was exec'd.
    let children = format!("/proc/{0}/task/{0}/children", bg.pid());
    let deadline = Instant::now() + Duration::from_secs(30);
    let child = loop {
        let listed = std::fs::read_to_string(&children).unwrap();
        if let Some(pid) = listed.split_whitespace().next() {
            break pid.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "jitc started no process for the command while the agent synced"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let exe = std::fs::read_link(format!("/proc/{child}/exe")).unwrap();
    assert_eq!(
        exe,
        jitc_bin(),
        "the command ran before the grant was on disk"
    );
    // It runs in jitc's memory until it execs, where the values will arrive: another
    // process of the user can read neither that memory nor its environment.
    let mut py = env.command("/usr/bin/python3");
    py.arg("-c").arg(format!(
        "for f in ('mem', 'environ'):\n    try:\n        open('/proc/{child}/' + f, 'rb').read(1)\n        print(f, 'readable')\n    except OSError as e:\n        print(f, 'denied', e.errno)\n"
    ));
    let out = run_with_stdin(py, None).ok();
    assert!(
        out.stdout.contains("mem denied 13") && out.stdout.contains("environ denied 13"),
        "{}",
        out.stdout
    );
    assert!(
        !marker.exists(),
        "the command ran before the grant was on disk"
    );
    // Let the sync go.
    drop(release);
    assert!(!gate.0.exists());
    let out = bg
        .wait_at_most(Duration::from_secs(60))
        .expect("jitc exec finished");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        marker.exists(),
        "the command ran once the grant was on disk"
    );
}

/// Review of cec9956. An early return after the command's process is started: a value with a NUL byte (env error) fails
/// cleanly, without running anything, with and without masking (pipes), and jitc exits
/// (the waiting child is reaped before its stack and Exec are freed).
#[test]
fn a_nul_byte_value_after_the_clone_runs_nothing() {
    let env = TestEnv::new_as(USER);
    let _agent = env.start_agent();
    env.init();
    env.run(&["add", "nul"], Some(b"a\0b")).ok();
    for masking in [true, false] {
        let marker = env.root().join(format!("ran-{masking}"));
        let mut args = vec!["exec", "-s", "nul"];
        if !masking {
            args.push("--no-masking");
        }
        args.extend(["--", "touch", marker.to_str().unwrap()]);
        let out = env.run(&args, None);
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains("NUL byte"), "{out:?}");
        assert!(!marker.exists());
    }
    // --file takes it (a memfd made before the clone, filled after).
    let out = env
        .run(
            &[
                "exec",
                "--file",
                "F=nul",
                "--",
                "sh",
                "-c",
                "wc -c < \"$F\"",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout.trim(), "3");
}

/// Review of 590582c (since reverted), finding F1. A sync that does not end must not stop
/// the agent: the debug sync gate stands for a slow fdatasync (a busy or failing disk,
/// NFS, FUSE) under a lone `jitc exec`, and a new connection is still welcomed. With
/// that sync on the runtime's own thread, it was not, for as long as the sync lasted.
#[test]
fn a_sync_that_does_not_end_does_not_stop_the_agent() {
    // The test's own uid: it speaks to the agent itself.
    let env = TestEnv::new();
    let gate = SyncGate::new(&env);
    let _agent = env.start_agent();
    env.init();
    env.add("X", "the-value-of-x");
    let log = audit::audit_path(&env);
    let before = grants_in(&log);
    let release = gate.hold(&env);
    let lease = env.spawn(&["exec", "-s", "X", "--", "true"]);
    wait_for_a_grant(&log, before, &lease);
    // A new connection's Hello: nothing but the runtime is needed to answer it. The
    // wait is the suite's usual limit for an event, not a speed bound: an agent held
    // by the sync would never answer.
    let t0 = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(env.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    jitc_protocol::write_frame(
        &mut s,
        &jitc_protocol::Request::Hello(jitc_protocol::Hello {
            protocol_version: jitc_protocol::PROTOCOL_VERSION,
        }),
    )
    .unwrap();
    let answered = jitc_protocol::read_frame(&mut s).is_ok_and(|f| f.is_some());
    let waited = t0.elapsed();
    drop(release);
    let out = lease
        .wait_at_most(Duration::from_secs(60))
        .expect("exec ends");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        answered,
        "the agent answered nothing for {waited:?} while one record's sync was held"
    );
}

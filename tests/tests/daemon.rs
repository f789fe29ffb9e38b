//! The daemon under hostile or careless peers, and its timers: frame caps, garbage,
//! stalls, version mismatch, the connection cap, idle lock, passphrase backoff, clean
//! shutdown, and systemd socket activation.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jitc_protocol::{ErrorCode, Hello, Request, Response, encode_frame, write_frame};
use jitc_tests::*;
use nix::sys::signal::Signal;

/// Reads until the agent closes the connection; true if it did.
fn closed_by_agent(s: &mut std::os::unix::net::UnixStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn oversized_and_garbage_frames_drop_only_that_connection() {
    let env = TestEnv::new();
    // A long stall timeout, so only the checks under test can close these connections
    // within the read timeout.
    let agent = env.start_agent_with(&["--frame-timeout", "60s"]);
    // A length prefix over 1 MiB: refused from the prefix alone.
    let mut s = raw_connect(&env.socket());
    s.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
    assert!(closed_by_agent(&mut s));
    // A well-framed payload that is not a message.
    let mut s = raw_connect(&env.socket());
    raw_hello(&mut s);
    s.write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb])
        .unwrap();
    assert!(closed_by_agent(&mut s));
    // Random bytes straight away.
    let mut s = raw_connect(&env.socket());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_by_agent(&mut s));
    // A request before Hello.
    let mut s = raw_connect(&env.socket());
    write_frame(&mut s, &Request::Status).unwrap();
    match raw_read(&mut s) {
        Some(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::DataErr);
            assert!(message.contains("Hello"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The agent is still there for everyone else.
    env.run(&["status"], None).ok();
    assert_eq!(env.agent_pid(), Some(agent.pid));
}

#[test]
fn a_peer_stalling_mid_frame_is_dropped() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--frame-timeout", "1s"]);
    let mut s = raw_connect(&env.socket());
    raw_hello(&mut s);
    let frame = encode_frame(&Request::Status).unwrap();
    s.write_all(&frame[..3]).unwrap();
    let started = Instant::now();
    assert!(closed_by_agent(&mut s), "the stalled connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // An idle connection between frames is fine: it is not dropped.
    let mut idle = raw_connect(&env.socket());
    raw_hello(&mut idle);
    env.run(&["status"], None).ok();
    write_frame(&mut idle, &Request::Status).unwrap();
    assert!(matches!(raw_read(&mut idle), Some(Response::Status(_))));
}

#[test]
fn a_protocol_mismatch_is_explained() {
    let env = TestEnv::new();
    let agent = env.start_agent();
    let mut s = raw_connect(&env.socket());
    write_frame(
        &mut s,
        &Request::Hello(Hello {
            protocol_version: 999,
        }),
    )
    .unwrap();
    match raw_read(&mut s) {
        Some(Response::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(message.contains("protocol"), "{message}");
            assert!(
                message.contains(&format!("kill {}", agent.pid)),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(closed_by_agent(&mut s));
}

#[test]
fn connections_over_the_cap_wait_their_turn() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--max-connections", "2"]);
    let mut a = raw_connect(&env.socket());
    raw_hello(&mut a);
    let mut b = raw_connect(&env.socket());
    raw_hello(&mut b);
    let mut c = raw_connect(&env.socket());
    write_frame(
        &mut c,
        &Request::Hello(Hello {
            protocol_version: jitc_protocol::PROTOCOL_VERSION,
        }),
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = c.read(&mut byte);
    assert!(
        waited.is_err(),
        "a third connection is not served while two are open"
    );
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert!(matches!(raw_read(&mut c), Some(Response::Welcome(_))));
    drop(b);
}

#[test]
fn the_vault_locks_itself_when_idle_but_not_under_a_lease() {
    let env = TestEnv::new();
    let agent = env.start_agent_with(&["--idle-lock", "1s"]);
    env.init();
    env.add("A", "value-a");
    // A command holding a lease for longer than the idle period is not cut short.
    env.run(&["exec", "-s", "A", "--", "sleep", "2"], None).ok();
    // Once nothing is using it, it locks.
    assert!(
        agent
            .stderr
            .wait_for("locked itself after being idle", Duration::from_secs(20))
    );
    let s = env.status();
    assert_eq!(s["locked"], true);
}

#[test]
fn wrong_passphrases_are_slowed_down_and_reset_by_success() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.run(&["lock"], None).ok();
    let mut last = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        env.run(&["unlock", "--passphrase-stdin"], Some(b"nope\n"))
            .code(77);
        last = started.elapsed();
    }
    // The third failure is answered after at least 0.3 s.
    assert!(last >= Duration::from_millis(300), "{last:?}");
    let s = env.status();
    assert_eq!(s["unlock_failures"], 3);
    env.unlock().ok();
    let s = env.status();
    assert_eq!(s["unlock_failures"], 0);
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let env = TestEnv::new();
        let mut agent = env.start_agent();
        env.init();
        agent.signal(sig);
        let status = agent.wait().unwrap();
        assert!(status.success(), "{sig}: {status:?}");
        assert!(!env.socket().exists(), "{sig}: socket removed");
        // Its stderr is read by another thread: wait for the line, do not race it.
        assert!(agent.stderr.wait_for("stopped", Duration::from_secs(30)));
    }
}

#[test]
fn socket_activation_by_systemd() {
    let env = TestEnv::new();
    let dir = env.runtime.join("activated");
    std::fs::create_dir(&dir).unwrap();
    let sock = dir.join("agent.sock");
    // Type=notify: systemd hears READY=1 once the agent serves, STOPPING=1 as it stops.
    let notify_path = env.runtime.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut c = env.command("systemd-socket-activate");
    c.arg("-l").arg(&sock);
    for (k, _) in env.envs() {
        c.arg("-E").arg(k);
    }
    c.arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()));
    c.arg(agentd_bin());
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut activator = c.spawn().unwrap();
    let log = Log::collect(activator.stderr.take().unwrap());
    assert!(
        log.wait_for("Listening on", Duration::from_secs(20)),
        "{}",
        log.text()
    );
    let status = |args: &[&str]| {
        let mut j = env.jitc(args);
        j.env("JITC_SOCK", &sock);
        run_with_stdin(j, None)
    };
    let out = status(&["status", "--json"]).ok();
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["socket"], sock.display().to_string());
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("the agent tells systemd it is ready");
    assert_eq!(&buf[..n], b"READY=1");
    assert_eq!(s["vault"], env.vault().display().to_string());
    let mut init = env.jitc(&INIT_ARGS);
    init.env("JITC_SOCK", &sock);
    run_with_stdin(init, Some(format!("{PASSPHRASE}\n").as_bytes())).ok();
    // What the programs the agent starts see: not the variables systemd left for it.
    let mut add = env.jitc(&["add", "X"]);
    add.env("JITC_SOCK", &sock);
    run_with_stdin(add, Some(b"value-of-x-1234")).ok();
    let seen = env.root().join("approver-env");
    env.write_policy(&format!(
        "[defaults]\napprover = [\"/bin/sh\", \"-c\", \"env > {}; exit 1\"]\n[[rule]]\nsecrets = [\"X\"]\napproval = \"always\"\n",
        seen.display()
    ));
    let mut exec = env.jitc(&["exec", "-s", "X", "--", "true"]);
    exec.env("JITC_SOCK", &sock);
    run_with_stdin(exec, None).code(77);
    let approver_env = std::fs::read_to_string(&seen).unwrap();
    assert!(approver_env.contains("HOME="), "{approver_env}");
    assert!(!approver_env.contains("LISTEN_"), "{approver_env}");
    assert!(!approver_env.contains("NOTIFY_SOCKET"), "{approver_env}");
    let agent_pid = s["pid"].as_u64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent_pid), Signal::SIGTERM).unwrap();
    // systemd-socket-activate execs the agent in its own place.
    assert_eq!(agent_pid as u32, activator.id());
    let n = notify
        .recv(&mut buf)
        .expect("the agent tells systemd it stops");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(activator.wait().unwrap().success());
    // The socket belongs to systemd: the activated agent does not remove it.
    assert!(sock.exists());
}

/// An agent `jitc` starts for a program that systemd runs as a `Type=notify` service is
/// not that service: it must not tell systemd `READY=1` (nor `STOPPING=1`) for it.
#[test]
fn an_agent_jitc_starts_never_speaks_for_the_service_it_runs_under() {
    let env = TestEnv::new();
    let notify_path = env.runtime.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    env.set_env("NOTIFY_SOCKET", notify_path.clone());
    // The agent is started by this command and answers it only once it serves: had it
    // said READY=1, the datagram would be waiting by then.
    env.run(&["status"], None).ok();
    let mut buf = [0u8; 64];
    let heard = notify.recv(&mut buf);
    assert!(
        heard
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "{:?}",
        heard.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
}

//! Every `jitc` command's happy path and its documented failures, through the real
//! binaries in a private HOME.
#![allow(clippy::unwrap_used)]

use jitc_tests::*;

#[test]
fn agent_starts_once_and_prints_the_socket() {
    let env = TestEnv::new();
    let first = env.run(&["agent"], None).ok();
    let sock = env.socket();
    assert_eq!(
        first.stdout,
        format!("export JITC_SOCK={};\n", sock.display())
    );
    assert!(
        first.stderr.contains("started the agent"),
        "{}",
        first.stderr
    );
    let pid = env.agent_pid().expect("an agent answers");
    // A second call finds the running one and starts nothing.
    let second = env.run(&["agent"], None).ok();
    assert_eq!(second.stdout, first.stdout);
    assert!(second.stderr.is_empty(), "{}", second.stderr);
    assert_eq!(env.agent_pid(), Some(pid));
    let csh = env.run(&["agent", "--csh"], None).ok();
    assert_eq!(
        csh.stdout,
        format!("setenv JITC_SOCK {};\n", sock.display())
    );
    let fish = env.run(&["agent", "--fish"], None).ok();
    assert_eq!(
        fish.stdout,
        format!("set -gx JITC_SOCK {};\n", sock.display())
    );
    // Detached, it logs to $XDG_STATE_HOME/jitc/agentd.log.
    let log = std::fs::read_to_string(env.state.join("jitc/agentd.log")).unwrap();
    assert!(log.contains("listening"), "{log}");
}

#[test]
fn commands_start_the_agent_at_the_default_socket() {
    let env = TestEnv::new();
    assert!(env.agent_pid().is_none());
    let out = env.run(&["status", "--json"], None).ok();
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["socket"], env.socket().display().to_string());
    assert_eq!(s["vault_exists"], false);
    assert!(env.agent_pid().is_some());
}

#[test]
fn explicit_socket_with_no_agent_is_69() {
    let env = TestEnv::new();
    let sock = env.root().join("nobody.sock");
    let out = run_with_stdin(
        {
            let mut c = env.jitc(&["status"]);
            c.env("JITC_SOCK", &sock);
            c
        },
        None,
    );
    out.code(69).one_line_error().says("no agent answers");
    assert!(
        !sock.exists(),
        "nothing may be started on an explicit socket"
    );
}

#[test]
fn init_unlock_lock_status() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    let s = env.run(&["status"], None).ok();
    assert!(s.stdout.contains("no vault yet"), "{}", s.stdout);
    env.run(&["unlock", "--passphrase-stdin"], Some(b"x\n"))
        .code(1)
        .says("jitc init");
    env.init();
    assert!(env.vault().is_file());
    let s = env.status();
    assert_eq!(s["locked"], false);
    assert_eq!(s["secrets"], 0);
    assert_eq!(s["vault"], env.vault().display().to_string());
    // A second init is refused and leaves the vault alone.
    let before = std::fs::read(env.vault()).unwrap();
    env.run(&INIT_ARGS, Some(b"other passphrase\n"))
        .code(1)
        .one_line_error()
        .says("already exists");
    assert_eq!(std::fs::read(env.vault()).unwrap(), before);

    env.run(&["lock"], None).ok();
    assert_eq!(env.status()["locked"], true);
    assert_eq!(env.status()["secrets"], serde_json::Value::Null);
    env.run(&["ls"], None)
        .code(75)
        .one_line_error()
        .says("jitc unlock");
    env.run(&["unlock", "--passphrase-stdin"], Some(b"wrong\n"))
        .code(77)
        .one_line_error()
        .says("wrong passphrase");
    env.unlock().ok();
    let s = env.status();
    assert_eq!(s["locked"], false);
    assert_eq!(s["memory_locked"], true);
    // Unlocking an unlocked vault is fine and asks nothing.
    env.run(&["unlock", "--passphrase-stdin"], None).ok();
}

#[test]
fn init_checks_its_input() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.run(
        &[
            "init",
            "--passphrase-stdin",
            "--kdf-memory",
            "4",
            "--kdf-iterations",
            "1",
        ],
        Some(b"pass\n"),
    )
    .code(65)
    .one_line_error()
    .says("--kdf-memory");
    env.run(
        &[
            "init",
            "--passphrase-stdin",
            "--kdf-memory",
            "8",
            "--kdf-iterations",
            "0",
        ],
        Some(b"pass\n"),
    )
    .code(65)
    .says("--kdf-iterations");
    env.run(&["init", "--passphrase-stdin"], Some(b"\n"))
        .code(65)
        .one_line_error()
        .says("empty");
    env.run(&["init", "--kdf-memory", "nope"], None).code(2);
    assert!(!env.vault().exists());
    // With no terminal (setsid: no controlling tty) and no --passphrase-stdin there is
    // nobody to ask.
    let out = run_with_stdin(
        {
            let mut c = env.command("setsid");
            c.arg("-w").arg(jitc_bin()).args([
                "init",
                "--kdf-memory",
                "8",
                "--kdf-iterations",
                "1",
            ]);
            c
        },
        None,
    );
    out.code(1).one_line_error().says("--passphrase-stdin");
    assert!(!env.vault().exists());
}

#[test]
fn add_ls_rm() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.run(
        &["add", "GITHUB_TOKEN", "--description", "CI token"],
        Some(b"ghp_value1\n"),
    )
    .ok()
    .says("stored");
    env.add("prod/db-password", "pw-value-2");
    env.run(&["add", "GITHUB_TOKEN"], Some(b"other"))
        .code(1)
        .one_line_error()
        .says("--replace");
    env.run(&["add", "bad name"], Some(b"x"))
        .code(65)
        .one_line_error()
        .says("invalid secret name");
    env.run(&["add", "EMPTY"], Some(b""))
        .code(65)
        .one_line_error()
        .says("empty");
    env.run(&["add", "EMPTY"], Some(b"\n"))
        .code(65)
        .says("empty");
    let big = vec![b'x'; 600 * 1024];
    env.run(&["add", "BIG"], Some(&big))
        .code(65)
        .one_line_error();

    let ls = env.run(&["ls"], None).ok();
    assert!(ls.stdout.contains("GITHUB_TOKEN"));
    assert!(ls.stdout.contains("CI token"));
    assert!(ls.stdout.contains("prod/db-password"));
    assert!(!ls.stdout.contains("ghp_value1") && !ls.stdout.contains("pw-value-2"));
    let json = env.json(&["ls"]);
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GITHUB_TOKEN", "prod/db-password"]);
    assert_eq!(json[0]["description"], "CI token");
    assert!(json[0]["created"].as_u64().unwrap() > 1_600_000_000);

    // --replace overwrites and keeps the description.
    env.run_as_human(&["add", "GITHUB_TOKEN", "--replace"], b"ghp_value3")
        .ok();
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "GITHUB_TOKEN",
                "--",
                "sh",
                "-c",
                "printf %s \"$GITHUB_TOKEN\" | sha256sum",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.starts_with(&sha256_hex(b"ghp_value3")));
    let json = env.json(&["ls"]);
    assert_eq!(json[0]["description"], "CI token");

    env.run_as_human(&["rm", "GITHUB_TOKEN"], b"")
        .ok()
        .says("removed");
    env.run_as_human(&["rm", "GITHUB_TOKEN"], b"")
        .code(1)
        .one_line_error()
        .says("no secret named");
    let json = env.json(&["ls"]);
    assert_eq!(json.as_array().unwrap().len(), 1);
}

#[test]
fn commands_on_a_locked_vault_say_75() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.add("A", "value-a");
    env.run(&["lock"], None).ok();
    env.run(&["add", "B"], Some(b"v")).code(75).one_line_error();
    env.run_as_human(&["rm", "A"], b"")
        .code(75)
        .one_line_error();
    env.run(&["ls"], None).code(75).one_line_error();
    env.run(&["exec", "-s", "A", "--", "true"], None)
        .code(75)
        .one_line_error()
        .says("jitc unlock");
}

#[test]
fn a_full_disk_is_an_io_error_and_loses_nothing() {
    let env = TestEnv::new();
    // The vault lives on a 128 KiB tmpfs, mounted in a private mount namespace that
    // only the agent sees.
    let small = env.root().join("small");
    std::fs::create_dir(&small).unwrap();
    let vault = small.join("vault.jitc");
    let mut c = env.command("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=128k,mode=0700 tmpfs {} && exec {}",
            small.display(),
            agentd_bin().display()
        ))
        .env("JITC_VAULT", &vault);
    let _agent = Agent::spawn(c).unwrap();
    env.init();
    env.add("KEPT", "kept-value");
    let big = vec![b'x'; 200 * 1024];
    env.run(&["add", "BIG"], Some(&big))
        .code(74)
        .one_line_error()
        .says("No space left on device");
    assert_eq!(env.secret_names(), ["KEPT"], "the failed add is undone");
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    assert_eq!(env.secret_names(), ["KEPT"], "the vault on disk is whole");
}

#[test]
fn an_agent_that_cannot_start_is_69() {
    let env = TestEnv::new();
    env.set_env("JITC_AGENTD", "/nonexistent/jitc-agentd");
    env.run(&["status"], None)
        .code(69)
        .one_line_error()
        .says("cannot start the agent");
    // An agent that starts but fails says why.
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data.join("jitc")).unwrap();
    std::fs::set_permissions(
        env.data.join("jitc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    env.run(&["status"], None)
        .code(69)
        .one_line_error()
        .says("writable by others");
}

/// A stand-in agent on `sock`: welcomes with `version`, then answers nothing.
fn fake_agent(sock: &std::path::Path, version: u32) -> std::thread::JoinHandle<()> {
    use jitc_protocol::{Response, Welcome, read_frame, write_frame};
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let _hello = read_frame(&mut conn).unwrap();
        write_frame(
            &mut conn,
            &Response::Welcome(Welcome {
                protocol_version: version,
                agent_version: "9.9.9".into(),
                pid: 4242,
            }),
        )
        .unwrap();
        // Swallow whatever comes next until the client hangs up.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut conn, &mut sink);
    })
}

#[test]
fn an_agent_speaking_another_protocol_is_explained() {
    let env = TestEnv::new();
    let sock = env.runtime.join("fake.sock");
    let fake = fake_agent(&sock, 99);
    env.set_env("JITC_SOCK", &sock);
    env.run(&["status"], None)
        .code(69)
        .one_line_error()
        .says(&format!(
            "speaks protocol 99 but this jitc speaks {}",
            jitc_protocol::PROTOCOL_VERSION
        ));
    fake.join().unwrap();
}

#[test]
fn ctrl_c_while_waiting_for_a_lease_runs_nothing() {
    let env = TestEnv::new();
    let sock = env.runtime.join("slow.sock");
    let fake = fake_agent(&sock, jitc_protocol::PROTOCOL_VERSION);
    let marker = env.root().join("ran");
    let mut c = env.jitc(&["exec", "-s", "X", "--", "touch"]);
    c.arg(&marker)
        .env("JITC_SOCK", &sock)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    // jitc blocks SIGINT (into its signalfd) just before it asks for the lease; watch
    // its signal mask in /proc for that moment, since it announces nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while proc_status_field(child.id(), "SigBlk")
        .is_none_or(|m| u64::from_str_radix(&m, 16).unwrap_or(0) & (1 << 1) == 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "jitc never blocked SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted while waiting"), "{err}");
    assert!(!marker.exists(), "the command never ran");
    fake.join().unwrap();
}

#[test]
fn agent_recovers_from_a_crash_and_stops_on_request() {
    let env = TestEnv::new();
    // A socket whose agent is dying resets the connection before any welcome: that is
    // "no agent", and a new one is started.
    std::fs::create_dir_all(env.socket().parent().unwrap()).unwrap();
    std::fs::set_permissions(
        env.socket().parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let listener = std::os::unix::net::UnixListener::bind(env.socket()).unwrap();
    let dying = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        // A reset, as a process killed with connections in its backlog gives them.
        nix::sys::socket::setsockopt(
            &conn,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(conn);
        drop(listener);
    });
    let out = env.run(&["agent"], None).ok();
    dying.join().unwrap();
    assert!(out.stdout.starts_with("export JITC_SOCK="), "{out:?}");
    let pid = env.agent_pid().expect("a new agent answers");
    // `jitc stop` (as `ssh-agent -k`): gone, socket removed, on record as asked.
    env.init();
    env.run(&["stop"], None)
        .ok()
        .says(&format!("stopped the agent (pid {pid})"));
    assert!(!env.socket().exists());
    let log = std::fs::read_to_string(env.state.join("jitc/audit.log")).unwrap();
    let stop = log.lines().last().unwrap();
    assert!(
        stop.contains("\"event\":\"stop\"") && stop.contains("stopped with 'jitc stop'"),
        "{stop}"
    );
    // `jitc agent --kill` does the same; with none running it says so (69).
    env.run(&["agent"], None).ok();
    env.run(&["agent", "--kill"], None)
        .ok()
        .says("stopped the agent");
    env.run(&["agent", "--kill"], None)
        .code(69)
        .one_line_error();
}

#[test]
fn exec_without_secrets_just_runs_and_init_warns_about_weak_passphrases() {
    let env = TestEnv::new();
    let out = env
        .run(&["exec", "--", "sh", "-c", "echo plain; exit 3"], None)
        .code(3);
    assert_eq!(out.stdout, "plain\n");
    assert!(
        env.agent_pid().is_none(),
        "nothing to lease: no agent needed"
    );
    let _agent = env.start_agent();
    env.run(
        &[
            "init",
            "--passphrase-stdin",
            "--kdf-memory",
            "8",
            "--kdf-iterations",
            "1",
        ],
        Some(b"password\n"),
    )
    .ok()
    .says("WARNING: that passphrase is on every list of common passphrases");
}

#[test]
fn errors_name_the_paths_they_mean() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.add("T", "value-errors-000001");
    // --mount: a path where nothing can be made is bad input, named.
    env.run(
        &[
            "exec",
            "-s",
            "T",
            "--mount",
            "/nonexistent/dir/.env",
            "--",
            "true",
        ],
        None,
    )
    .code(65)
    .one_line_error()
    .says("/nonexistent/dir/.env");
    // A FIFO left by a jitc that was killed is replaced.
    let fifo = env.root().join("left.env");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    env.run(
        &[
            "exec",
            "-s",
            "T",
            "--mount",
            fifo.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "cat \"$0\" | sha256sum",
            fifo.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    assert!(!fifo.exists());
    // A bad reference in an env file: file and line, never the line itself.
    let file = env.root().join("refs.env");
    std::fs::write(&file, "A=1\nB=\"jitc://not a name\"\n").unwrap();
    env.run(
        &["exec", "--env-file", file.to_str().unwrap(), "--", "true"],
        None,
    )
    .code(65)
    .one_line_error()
    .says(&format!("{} line 2", file.display()));
    // A socket that is not ours: whose it is (uid 1000 cannot reach root's).
    let other = TestEnv::new_as(USER);
    let out = run_with_stdin(
        {
            let mut c = other.command(jitc_bin());
            c.arg("status").env("JITC_SOCK", env.socket());
            c
        },
        None,
    );
    assert_eq!(out.code, 77, "{out:?}");
    assert!(out.stderr.contains("belongs to uid 0"), "{}", out.stderr);
}

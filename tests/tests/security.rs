//! The agent's defences: other users refused, private socket, not dumpable, keys in
//! locked memory, no plaintext anywhere on disk or in logs, unsafe vault files refused.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use jitc_tests::*;

/// Runs a raw protocol exchange as uid 65534 (python, since `jitc` itself would refuse
/// a root-owned agent before sending anything): sends Hello, returns the reply frame.
fn hello_as_nobody(env: &TestEnv) -> Vec<u8> {
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        try: s.sendall(bytes([0,0,0,2,0,1]))\n\
        except OSError: pass\n\
        d=b''\n\
        while True:\n\
        \x20   try: c=s.recv(4096)\n\
        \x20   except OSError: break\n\
        \x20   if not c: break\n\
        \x20   d+=c\n\
        sys.stdout.write(d.hex())\n";
    let mut c = as_nobody(env, "/usr/bin/python3");
    c.args(["-c", script]).arg(env.socket());
    let out = run_with_stdin(c, None).ok();
    (0..out.stdout.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&out.stdout[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn another_uid_is_refused_by_the_agent() {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    // The agent answers a foreign uid with one error frame (77) and hangs up.
    let reply = hello_as_nobody(&env);
    let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    assert_eq!(
        reply.len(),
        4 + len,
        "exactly one frame, then the connection closes"
    );
    match jitc_protocol::decode::<jitc_protocol::Response>(&reply[4..]).unwrap() {
        jitc_protocol::Response::Error { code, message } => {
            assert_eq!(code.exit_code(), 77);
            assert!(message.contains("not to you (uid 65534)"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(agent.stderr.wait_for(
        "refused a peer of another user",
        std::time::Duration::from_secs(10)
    ));
    // The agent goes on serving its owner.
    env.run(&["ls"], None).ok();
}

#[test]
fn the_client_refuses_an_agent_run_by_someone_else() {
    let env = TestEnv::new();
    // A stand-in "agent" owned by root that records whatever it is sent.
    let dir = env.runtime.join("squatted");
    fs::create_dir(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let received = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
        got
    });
    // uid 65534, pointed at it, refuses before sending a byte of the value.
    let mut c = as_nobody(&env, jitc_bin());
    c.args(["add", "STOLEN"]).env("JITC_SOCK", &sock);
    run_with_stdin(c, Some(b"victim-value"))
        .code(77)
        .one_line_error()
        .says("runs as uid 0, not as you (uid 65534)");
    assert!(
        received.join().unwrap().is_empty(),
        "nothing was sent to it"
    );
}

#[test]
fn socket_is_0600_in_a_0700_directory() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    let sock = env.socket();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(sock.parent().unwrap()), 0o700);
}

#[test]
fn a_socket_directory_open_to_others_is_refused() {
    let env = TestEnv::new();
    let dir = env.runtime.join("jitc");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = env.command(agentd_bin());
    c.stdout(std::process::Stdio::null());
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("chmod 700"), "{}", out.stderr);
    assert!(!env.socket().exists());
}

#[test]
fn agent_run_as_a_user_is_not_dumpable_and_locks_its_key_in_memory() {
    let env = TestEnv::new();
    // Hand the whole tree to uid 1000 so the agent can use it.
    let status = std::process::Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(env.root())
        .status()
        .unwrap();
    assert!(status.success());
    let mut c = env.command("setpriv");
    c.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
        .arg(agentd_bin());
    let agent = Agent::spawn(c).unwrap();
    let pid = agent.pid;
    // Root may drive another user's agent, but only on a socket it names explicitly.
    env.set_env("JITC_SOCK", env.socket());
    assert_eq!(
        proc_status_field(pid, "Uid")
            .unwrap()
            .split_whitespace()
            .next(),
        Some("1000")
    );
    // Not dumpable: the kernel hands /proc/PID/environ to root.
    let environ = fs::metadata(format!("/proc/{pid}/environ")).unwrap();
    assert_eq!(
        environ.uid(),
        0,
        "/proc/PID/environ of a non-dumpable process is root's"
    );
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n: Vec<&str> = nofile.split_whitespace().collect();
    assert_eq!(
        n[3], n[4],
        "soft descriptor limit raised to the hard one: {nofile}"
    );

    // The files the agent creates are uid 1000's.
    env.init();
    assert_eq!(fs::metadata(env.vault()).unwrap().uid(), 1000);
    let locked_kib: u64 = proc_status_field(pid, "VmLck")
        .unwrap()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    assert!(locked_kib > 0, "the vault key sits in mlocked memory");
    let s = env.status();
    assert_eq!(s["memory_locked"], true);
    env.run(&["lock"], None).ok();
    let vm_lck = || -> u64 {
        proc_status_field(pid, "VmLck")
            .unwrap()
            .trim_end_matches(" kB")
            .parse()
            .unwrap()
    };
    assert!(vm_lck() < locked_kib, "locking frees the key's locked page");
    // Unlocking (not only init) puts the key in locked memory.
    env.unlock().ok();
    assert!(
        vm_lck() > 0,
        "the unlocked vault key sits in mlocked memory"
    );
    drop(agent);
}

#[test]
fn no_value_or_passphrase_anywhere_on_disk_or_in_output() {
    let env = TestEnv::new();
    let value = "zq-UNIQUE-secret-7781";
    let mut outputs = String::new();
    let mut record = |r: Run| {
        outputs.push_str(&r.stdout);
        outputs.push_str(&r.stderr);
        r
    };
    // The agent is started detached by the first command, logging at the most verbose
    // level into the tree.
    let trace = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = env.jitc(args);
        c.env("RUST_LOG", "trace");
        run_with_stdin(c, stdin)
    };
    record(trace(
        &INIT_ARGS,
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    ))
    .ok();
    record(trace(&["add", "TOKEN"], Some(value.as_bytes()))).ok();
    record(trace(
        &["add", "TOKEN", "--replace", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n{value}").as_bytes()),
    ))
    .ok();
    record(trace(
        &[
            "exec",
            "-s",
            "TOKEN",
            "--",
            "sh",
            "-c",
            "test -n \"$TOKEN\"",
        ],
        None,
    ))
    .ok();
    record(trace(
        &["exec", "-s", "TOKEN", "--", "sh", "-c", "exit 9"],
        None,
    ))
    .code(9);
    record(trace(&["ls", "--json"], None)).ok();
    record(trace(&["status", "--json"], None)).ok();
    record(trace(&["lock"], None)).ok();
    record(trace(
        &["unlock", "--passphrase-stdin"],
        Some(b"a wrong one\n"),
    ))
    .code(77);
    record(trace(
        &["unlock", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    ))
    .ok();
    record(trace(
        &["rm", "TOKEN", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    ))
    .ok();
    let log = fs::read_to_string(env.state.join("jitc/agentd.log")).unwrap();
    assert!(log.contains("TRACE") || log.contains("DEBUG") || log.contains("INFO"));
    for needle in [value, PASSPHRASE, "a wrong one"] {
        let found = env.files_containing(needle.as_bytes());
        assert!(
            found.is_empty(),
            "a secret is stored in plaintext in {found:?}"
        );
        assert!(!outputs.contains(needle), "a secret was printed");
    }
}

#[test]
fn unsafe_vault_files_are_refused() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.run(&["lock"], None).ok();
    let vault = env.vault();

    fs::set_permissions(&vault, fs::Permissions::from_mode(0o666)).unwrap();
    env.unlock().code(77).one_line_error().says("chmod 600");
    fs::set_permissions(&vault, fs::Permissions::from_mode(0o600)).unwrap();

    std::os::unix::fs::chown(&vault, Some(65534), Some(65534)).unwrap();
    env.unlock()
        .code(77)
        .one_line_error()
        .says("belongs to uid 65534");
    std::os::unix::fs::chown(&vault, Some(0), Some(0)).unwrap();

    let real = env.root().join("real.jitc");
    fs::rename(&vault, &real).unwrap();
    std::os::unix::fs::symlink(&real, &vault).unwrap();
    env.unlock().code(77).one_line_error().says("symbolic link");
    fs::remove_file(&vault).unwrap();
    fs::rename(&real, &vault).unwrap();

    env.unlock().ok();
}

//! The audit trail: every event kind with its fields and never a value; verification
//! against edits, drops, reorders, insertions and a cut-off tail; rotation; fail-closed
//! when the log cannot be written; the reader's filters; and the anomalies.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use jitc_tests::*;
use serde_json::Value;

const VALUE: &str = "audit-secret-value-7713";

fn audit_path(env: &TestEnv) -> PathBuf {
    env.state.join("jitc").join("audit.log")
}

fn records(env: &TestEnv) -> Vec<Value> {
    fs::read_to_string(audit_path(env))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(recs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["event"] == kind).collect()
}

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", VALUE);
    (env, agent)
}

/// `setup`, with the agent's local clock reading `clock` (a debug-build hook).
fn setup_at(clock: &str) -> (TestEnv, Agent) {
    let env = TestEnv::new();
    env.set_env("JITC_TEST_LOCAL_TIME", clock.to_owned());
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", VALUE);
    (env, agent)
}

/// An agent (started with `args`) whose state directory, the audit log's, is a tmpfs
/// of its own, mounted with `options` in a private mount namespace.
fn agent_on_tmpfs(env: &TestEnv, options: &str, args: &[&str]) -> Agent {
    let dir = env.state.join("jitc");
    fs::create_dir_all(&dir).unwrap();
    let mut c = env.command("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o {options},mode=0700 tmpfs {} && exec {} {}",
            dir.display(),
            agentd_bin().display(),
            args.join(" ")
        ));
    Agent::spawn(c).unwrap()
}

/// Waits (following the log with `jitc audit --follow`) for a record of `kind` whose
/// JSON holds `needle`; records of events that have already happened are written
/// without the request waiting for them.
fn wait_for_record(env: &TestEnv, kind: &str, needle: &str) -> Value {
    let bg = env.spawn(&["audit", "--follow", "--json", "--event", kind]);
    bg.expect_stdout(needle);
    let text = bg.stdout.text();
    let line = text.lines().find(|l| l.contains(needle)).unwrap();
    serde_json::from_str(line).unwrap()
}

#[test]
fn every_event_kind_is_recorded_with_its_fields_and_no_value() {
    let env = TestEnv::new();
    let agent = env.start_agent_with(&["--frame-timeout", "2s"]);
    env.init();
    env.add("prod/db", VALUE);
    env.run_as_human(&["add", "prod/db", "--replace"], VALUE.as_bytes())
        .ok();
    env.add("tmp", "temporary-value-1");
    env.run_as_human(&["rm", "tmp"], b"").ok();
    env.run(
        &["exec", "-s", "prod/db", "--task", "nightly", "--", "true"],
        None,
    )
    .ok();
    env.run(
        &["exec", "-s", "prod/db", "--ttl", "1s", "--", "sleep", "5"],
        None,
    )
    .code(143);
    env.write_policy("[defaults]\napproval_timeout = \"1s\"\n[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"true\"]\napproval = \"always\"\n");
    env.run(&["exec", "-s", "prod/db", "--", "sh", "-c", "true"], None)
        .code(77);
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77);
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    let id = bg.approval_id();
    env.approve(id).ok();
    assert_eq!(bg.wait().code, 0);
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    let id = bg.approval_id();
    env.run(&["deny", &id.to_string()], None).ok();
    assert_eq!(bg.wait().code, 77);
    env.write_policy("[defaults\n");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77);
    fs::remove_file(env.policy_path()).unwrap();
    env.run(&["lock"], None).ok();
    env.run(
        &["unlock", "--passphrase-stdin"],
        Some(b"not-the-passphrase-42\n"),
    )
    .code(77);
    env.unlock().ok();
    let mut c = as_nobody(&env, "/usr/bin/python3");
    c.arg("-c").arg("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.recv(100)")
    .arg(env.socket());
    run_with_stdin(c, None);
    wait_for_record(&env, "peer_refused", "\"uid\":65534");
    agent.stop();

    let recs = records(&env);
    for kind in [
        "start",
        "init",
        "unlock",
        "unlock_failed",
        "lock",
        "lease_granted",
        "lease_denied",
        "lease_ended",
        "secret_added",
        "secret_replaced",
        "secret_removed",
        "approval_requested",
        "approval_granted",
        "approval_denied",
        "approval_timed_out",
        "peer_refused",
        "policy_error",
        "anomaly",
        "stop",
    ] {
        assert!(!of_kind(&recs, kind).is_empty(), "no {kind} record");
    }
    // Sequence numbers run 1, 2, 3… and every record has a time.
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["seq"], (i + 1) as u64);
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
    }
    let g = of_kind(&recs, "lease_granted")[0];
    assert_eq!(g["secrets"], serde_json::json!(["prod/db"]));
    assert_eq!(g["task"], "nightly");
    assert_eq!(g["command"], "/usr/bin/true");
    assert!(g["lease"].as_u64().is_some());
    assert_eq!(g["peer"]["uid"], 0);
    assert!(g["peer"]["pid"].as_u64().is_some());
    assert!(g["peer"]["exe"].as_str().unwrap().ends_with("/jitc"));
    assert_eq!(g["peer"]["argv"][1], "exec");
    assert!(g["peer"]["chain"].as_array().unwrap().len() >= 2);
    assert!(g["tag"].as_str().unwrap().len() == 64);
    let reasons: Vec<&str> = of_kind(&recs, "lease_ended")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("expired after 1s")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("closed") || r.contains("released")),
        "{reasons:?}"
    );
    let denied: Vec<&str> = of_kind(&recs, "lease_denied")
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        denied.iter().any(|r| r.contains("only to true")),
        "{denied:?}"
    );
    assert!(denied.iter().any(|r| r.contains("timed out")), "{denied:?}");
    assert!(
        denied.iter().any(|r| r.contains("denied with 'jitc deny'")),
        "{denied:?}"
    );
    assert!(
        of_kind(&recs, "policy_error")[0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid")
    );
    // Never a value or a passphrase.
    let text = fs::read_to_string(audit_path(&env)).unwrap();
    for secret in [
        VALUE,
        "temporary-value-1",
        PASSPHRASE,
        "not-the-passphrase-42",
    ] {
        assert!(!text.contains(secret), "{secret} is in the audit log");
    }
}

#[test]
fn verify_passes_untouched_and_names_the_first_bad_line() {
    let (env, _agent) = setup();
    for _ in 0..3 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
    let path = audit_path(&env);
    let good = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let write = |ls: &[&str]| fs::write(&path, ls.join("\n") + "\n").unwrap();
    let check = |what: &str, needle: &str| {
        let out = env.run(&["audit", "verify"], None);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{what}: {}", out.stderr);
    };

    let mut edited = lines.clone();
    let changed = edited[4].replace("/usr/bin/true", "/usr/bin/tru3");
    edited[4] = &changed;
    write(&edited);
    check("edit", "audit.log line 5");

    let mut dropped = lines.clone();
    dropped.remove(3);
    write(&dropped);
    check("drop", "audit.log line 4");

    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    write(&swapped);
    check("reorder", "audit.log line 3");

    let mut inserted = lines.clone();
    inserted.insert(5, lines[2]);
    write(&inserted);
    check("insert", "audit.log line 6");

    write(&lines[..lines.len() - 2]);
    check("truncation", "cut off");

    fs::write(&path, &good).unwrap();
    env.run(&["audit", "verify"], None).ok();
}

#[test]
fn a_cut_off_tail_is_caught_after_a_restart_by_the_vault_checkpoint() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // The vault is saved (with the checkpoint) by this add.
    env.add("other", "other-value-99");
    agent.stop();
    let path = audit_path(&env);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Cut back to before the add (which the checkpoint covers).
    let cut = lines
        .iter()
        .position(|l| l.contains("\"secret_added\"") && l.contains("\"other\""))
        .unwrap();
    fs::write(&path, lines[..cut].join("\n") + "\n").unwrap();
    let _agent = env.start_agent();
    // The person unlocking is told at once, and `jitc status` keeps saying it.
    env.unlock()
        .ok()
        .says("WARNING: the audit log does not verify");
    assert!(env.status()["audit"]["tampered"].is_string());
    // The unlock itself notices, and says so where a person will see it.
    let a = wait_for_record(&env, "anomaly", "audit_log_tampered");
    assert!(a["reason"].as_str().unwrap().contains("cut off"), "{a}");
    assert!(
        env.run(&["audit", "--anomalies"], None)
            .ok()
            .stdout
            .contains("audit_log_tampered")
    );
    let out = env.run(&["audit", "verify"], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cut off"), "{}", out.stderr);
}

#[test]
fn a_line_torn_by_a_crash_is_dropped_not_taken_for_tampering() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    agent.kill9();
    let path = audit_path(&env);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    // Torn inside a character, too: the cut is made on bytes.
    std::io::Write::write_all(&mut f, b"{\"event\":\"lease_granted\",\"task\":\"caf\xc3").unwrap();
    drop(f);
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
    let recs = records(&env);
    assert!(
        of_kind(&recs, "anomaly")
            .iter()
            .all(|r| r["anomaly"] != "audit_log_tampered")
    );
    assert_eq!(of_kind(&recs, "start").len(), 2);
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-max-bytes", "3000"]);
    env.init();
    env.add("prod/db", VALUE);
    env.run(
        &["exec", "-s", "prod/db", "--task", "lease-0", "--", "true"],
        None,
    )
    .ok();
    // A follower that has listed the first lease is watching: it sees the rest,
    // across the rotations.
    let follower = env.spawn(&["audit", "--follow", "--json", "--event", "lease_granted"]);
    follower.expect_stdout("lease-0");
    for i in 1..12 {
        env.run(
            &[
                "exec",
                "-s",
                "prod/db",
                "--task",
                &format!("lease-{i}"),
                "--",
                "true",
            ],
            None,
        )
        .ok();
    }
    follower.expect_stdout("lease-11");
    let followed = follower.stdout.text();
    let tasks: Vec<String> = followed
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["task"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        tasks,
        (0..12).map(|i| format!("lease-{i}")).collect::<Vec<_>>()
    );
    let rotated = env.state.join("jitc").join("audit.log.1");
    assert!(rotated.is_file(), "the log was rotated");
    let current = fs::read_to_string(audit_path(&env)).unwrap();
    assert!(
        current
            .lines()
            .next()
            .unwrap()
            .contains("\"log_continued\"")
    );
    let out = env.run(&["audit", "verify"], None).ok();
    assert!(
        out.stderr.contains(" files") && !out.stderr.contains("in 1 file"),
        "{}",
        out.stderr
    );
    // The reader spans the files too.
    let json = env
        .run(&["audit", "--json", "--event", "lease_granted"], None)
        .ok();
    assert_eq!(json.stdout.lines().count(), 12);
}

#[test]
fn an_unwritable_log_refuses_and_shows_in_status() {
    // /dev/full: every write fails with ENOSPC.
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-log", "/dev/full"]);
    env.run(&INIT_ARGS, Some(format!("{PASSPHRASE}\n").as_bytes()))
        .code(77)
        .one_line_error()
        .says("audit log unavailable");
    let s = env.status();
    assert!(
        s["audit"]["error"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{s}"
    );
    let text = env.run(&["status"], None).ok().stdout;
    assert!(text.contains("audit    FAILING"), "{text}");
}

#[test]
fn a_read_only_log_directory_refuses() {
    let env = TestEnv::new();
    let _agent = agent_on_tmpfs(&env, "ro", &[]);
    env.run(&INIT_ARGS, Some(format!("{PASSPHRASE}\n").as_bytes()))
        .code(77)
        .says("audit log unavailable");
    assert!(
        env.status()["audit"]["error"]
            .as_str()
            .unwrap()
            .contains("Read-only")
    );
}

#[test]
fn a_full_disk_mid_run_refuses_leases() {
    let env = TestEnv::new();
    let _agent = agent_on_tmpfs(&env, "size=48k", &[]);
    env.init();
    env.add("prod/db", VALUE);
    // Leases are granted until the log's filesystem is full, then refused.
    let mut refused = None;
    for i in 0..200 {
        let out = env.run(&["exec", "-s", "prod/db", "--", "true"], None);
        if out.code != 0 {
            refused = Some((i, out));
            break;
        }
    }
    let (i, out) = refused.expect("the log filled up");
    assert!(i > 0, "some leases were granted first");
    out.code(77).one_line_error().says("audit log unavailable");
    let s = env.status();
    assert!(s["audit"]["error"].is_string(), "{s}");
    // A first use refused for want of a record is not remembered as a use...
    env.run(&["exec", "-s", "prod/db", "--", "echo"], None)
        .code(77);
    // ...so once there is room again, the real first use is an anomaly.
    let pid = env.agent_pid().unwrap().to_string();
    let dir = env.state.join("jitc");
    let grown = env
        .command("nsenter")
        .args(["-t", &pid, "-m", "mount", "-o", "remount,size=4m"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(grown.success());
    env.run(&["exec", "-s", "prod/db", "--", "echo"], None).ok();
    env.run(&["status"], None).ok();
    let log = format!("/proc/{pid}/root{}", dir.join("audit.log").display());
    let text = fs::read_to_string(log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"new_executable\"") && l.contains("/echo")),
        "{text}"
    );
}

#[test]
fn the_reader_filters_and_follows() {
    let (env, _agent) = setup();
    env.add("other", "other-value-1234");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["exec", "-s", "other", "--", "true"], None).ok();
    let table = env.run(&["audit"], None).ok().stdout;
    assert!(table.starts_with("TIME (UTC)"), "{table}");
    assert!(
        table.contains("lease_granted") && table.contains("true") && table.contains("#1 granted"),
        "{table}"
    );
    // The requester is the program that ran jitc (here the test binary), not jitc.
    let row = table.lines().find(|l| l.contains("#1 granted")).unwrap();
    assert!(row.contains("audit-") && !row.contains(" jitc ("), "{row}");
    let only = env
        .run(&["audit", "--json", "--secret", "other"], None)
        .ok()
        .stdout;
    let kinds: Vec<String> = only
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        kinds.contains(&"secret_added".to_owned()) && kinds.contains(&"lease_granted".to_owned()),
        "{kinds:?}"
    );
    assert!(!only.contains("prod/db"));
    let granted = env
        .run(&["audit", "--json", "--event", "lease_granted"], None)
        .ok()
        .stdout;
    assert_eq!(granted.lines().count(), 2);
    assert_eq!(
        env.run(&["audit", "--json", "--since", "1h"], None)
            .ok()
            .stdout
            .lines()
            .count(),
        records(&env).len()
    );
    assert_eq!(
        env.run(
            &["audit", "--json", "--since", "2999-01-01T00:00:00Z"],
            None
        )
        .ok()
        .stdout,
        ""
    );
    env.run(&["audit", "--since", "yesterday-ish"], None)
        .code(65)
        .one_line_error();
    // An offset is part of RFC 3339: the last record's time, written an hour ahead of
    // UTC, lists it; written an hour behind, it is two hours in the future.
    let last = records(&env).last().unwrap()["time"]
        .as_str()
        .unwrap()
        .to_owned();
    // The record's time (to the second) an hour later, as a wall clock an hour ahead
    // of UTC would show it — across midnight too.
    let at = humantime::parse_rfc3339(&format!("{}Z", &last[..19])).unwrap();
    let ahead = humantime::format_rfc3339_seconds(at + Duration::from_secs(3600)).to_string();
    let local = ahead.trim_end_matches('Z');
    let listed = |offset: &str| {
        env.run(
            &["audit", "--json", "--since", &format!("{local}{offset}")],
            None,
        )
        .ok()
        .stdout
    };
    assert!(listed("+01:00").contains(&last), "{local}+01:00");
    assert_eq!(listed("-01:00"), "");
    // A kind of record that does not exist is an error, not an empty listing.
    env.run(&["audit", "--event", "lease_grantd"], None)
        .code(65)
        .one_line_error()
        .says("lease_granted");
    // A reader that goes away ends the listing quietly.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = env
        .jitc(&["audit"])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    // --follow prints records as they are written.
    let bg = env.spawn(&["audit", "--follow", "--json", "--event", "lease_granted"]);
    bg.expect_stdout("\"lease\":2");
    env.run(
        &["exec", "-s", "prod/db", "--task", "followed", "--", "true"],
        None,
    )
    .ok();
    bg.expect_stdout("followed");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bg.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    bg.wait();
}

#[test]
fn a_canary_is_served_like_a_real_secret_and_raises_an_anomaly() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    let alerts = env.root().join("alerts");
    env.write_policy(&format!(
        "[defaults]\nalert_command = [\"/bin/sh\", \"-c\", \"echo \\\"$0\\\" >> {}\"]\n",
        alerts.display()
    ));
    env.run(
        &["add", "aws/root-key", "--canary"],
        Some(b"AKIA-decoy-value-000"),
    )
    .ok();
    // A honeytoken: the requester gets the fake it asked for, exactly as a real secret
    // would be served (and masked), so it goes on to use it.
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "aws/root-key",
                "--",
                "sh",
                "-c",
                "printf %s \"$AWS_ROOT_KEY\" | sha256sum; echo \"$AWS_ROOT_KEY\"",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.starts_with(&sha256_hex(b"AKIA-decoy-value-000")));
    assert!(out.stdout.contains("<concealed:aws/root-key>"));
    assert!(
        !out.stderr.to_lowercase().contains("canary") && !out.stderr.contains("decoy"),
        "{}",
        out.stderr
    );
    // The owner sees which are decoys; the anomaly and the alert came with the request.
    let listed = env.json(&["ls"]);
    let decoy = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "aws/root-key")
        .unwrap();
    assert_eq!(decoy["canary"], true);
    assert!(env.run(&["ls"], None).ok().stdout.contains("yes"));
    let a = wait_for_record(&env, "anomaly", "\"anomaly\":\"canary\"");
    assert!(a["reason"].as_str().unwrap().contains("aws/root-key"));
    assert!(
        of_kind(&records(&env), "lease_granted")
            .iter()
            .any(|g| g["secrets"] == serde_json::json!(["aws/root-key"]))
    );
    let listed = env.run(&["audit", "--anomalies"], None).ok().stdout;
    assert!(
        listed.contains("canary secret aws/root-key requested"),
        "{listed}"
    );
    // The alert ran (it may run after the answer: wait for its line).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&alerts).is_ok_and(|t| t.contains("canary secret aws/root-key")) {
        assert!(std::time::Instant::now() < deadline, "no alert");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Where a real secret would wait for a human, so does the decoy.
    env.write_policy(
        "[defaults]\napproval_timeout = \"30s\"\n[[rule]]\nsecrets = [\"aws/*\"]\napproval = \"always\"\n",
    );
    let bg = env.spawn(&["exec", "-s", "aws/root-key", "--", "true"]);
    let id = bg.approval_id();
    env.approve(id).ok();
    assert_eq!(bg.wait().code, 0);
    env.write_policy("");
    // Named after an unknown secret, or under a broken policy: still noticed.
    env.run(
        &["exec", "-s", "no/such", "-s", "aws/root-key", "--", "true"],
        None,
    )
    .code(1)
    .says("no secret named 'no/such'");
    env.write_policy("this is not toml [");
    env.run(&["exec", "-s", "aws/root-key", "--", "true"], None)
        .code(77)
        .says("policy");
    // Beside a malformed name (jitc itself would not send one): refused as malformed,
    // recorded, and noticed.
    env.write_policy("");
    let mut s = raw_connect(&env.socket());
    raw_hello(&mut s);
    let request = jitc_protocol::LeaseRequest {
        secrets: vec!["aws/root-key".into(), "sk+live+LEAKED0123456789".into()],
        command: jitc_protocol::CommandLine {
            path: "/usr/bin/true".into(),
            argv: vec!["true".into()],
            cwd: "/".into(),
        },
        task: None,
        ttl_ms: None,
        masking: true,
    };
    jitc_protocol::write_frame(&mut s, &jitc_protocol::Request::Lease(request)).unwrap();
    match raw_read(&mut s) {
        Some(jitc_protocol::Response::Error { code, .. }) => {
            assert_eq!(code, jitc_protocol::ErrorCode::DataErr)
        }
        other => panic!("{other:?}"),
    }
    env.run(&["status"], None);
    let recs = records(&env);
    let canaries = of_kind(&recs, "anomaly")
        .into_iter()
        .filter(|a| a["anomaly"] == "canary")
        .count();
    assert_eq!(canaries, 5);
    let last = *of_kind(&recs, "lease_denied").last().unwrap();
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed request"),
        "{last}"
    );
    assert_eq!(last["secrets"], serde_json::json!(["aws/root-key"]));
    let text = fs::read_to_string(audit_path(&env)).unwrap();
    assert!(
        !text.contains("LEAKED"),
        "what a malformed request sent is in the log"
    );
    // Where the policy refuses, a decoy gets the policy's refusal, as a real one does.
    env.add("aws/deploy-key", "AKIA-real-value-0000001");
    env.write_policy("[[rule]]\ncommands = [\"env\"]\n");
    for name in ["aws/root-key", "aws/deploy-key"] {
        env.run(&["exec", "-s", name, "--", "true"], None)
            .code(77)
            .says(&format!("policy rule 1 lets '{name}' go only to env"));
    }
    // Listed by their kind, with or without the table's "anomaly:" prefix.
    let by_kind = env
        .run(&["audit", "--json", "--event", "canary"], None)
        .ok()
        .stdout;
    assert_eq!(by_kind.lines().count(), 6, "{by_kind}");
    assert_eq!(
        env.run(&["audit", "--json", "--event", "anomaly:canary"], None)
            .ok()
            .stdout,
        by_kind
    );
}

#[test]
fn an_alert_command_that_cannot_run_is_on_record() {
    let (env, _agent) = setup();
    env.write_policy("[defaults]\nalert_command = [\"/nonexistent/notify\"]\n");
    env.run(&["add", "decoy", "--canary"], Some(b"decoy-value-0000000"))
        .ok();
    env.run(&["exec", "-s", "decoy", "--", "true"], None).ok();
    let e = wait_for_record(&env, "policy_error", "alert_command");
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/notify cannot run"),
        "{e}"
    );
}

#[test]
fn requests_outside_working_hours_are_anomalies() {
    let (env, _agent) = setup_at("Sat 03:00");
    env.write_policy("[defaults]\nworking_hours = \"08:00-19:00 Mon-Fri\"\n");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    let a = wait_for_record(&env, "anomaly", "\"anomaly\":\"outside_working_hours\"");
    assert!(
        a["reason"].as_str().unwrap().contains("03:00 on Saturday"),
        "{a}"
    );
    // Inside the window: none.
    env.write_policy("[defaults]\nworking_hours = \"00:00-23:59\"\n");
    let before = of_kind(&records(&env), "anomaly")
        .iter()
        .filter(|r| r["anomaly"] == "outside_working_hours")
        .count();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    let after = of_kind(&records(&env), "anomaly")
        .iter()
        .filter(|r| r["anomaly"] == "outside_working_hours")
        .count();
    assert_eq!(before, after);
}

#[test]
fn bursts_new_executables_denials_and_wrong_passphrases_are_anomalies() {
    let (env, _agent) = setup();
    // The alert command writes to a FIFO this test holds open at both ends (so it
    // never sees end-of-file) and reads as the alerts come.
    let alerts = env.root().join("alerts.fifo");
    nix::unistd::mkfifo(&alerts, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&alerts)
        .unwrap();
    let seen = Log::collect(fifo);
    let alert = env.root().join("alert.sh");
    fs::write(
        &alert,
        format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\n", alerts.display()),
    )
    .unwrap();
    fs::set_permissions(&alert, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.write_policy(&format!(
        "[defaults]\nburst_per_minute = 3\nalert_command = [\"{}\", \"--urgency=critical\"]\n[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"true\", \"env\"]\n",
        alert.display()
    ));
    for _ in 0..5 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    env.run(&["exec", "-s", "prod/db", "--", "env", "true"], None)
        .ok();
    for _ in 0..3 {
        env.run(&["exec", "-s", "prod/db", "--", "sh", "-c", "true"], None)
            .code(77);
    }
    env.run(&["lock"], None).ok();
    for _ in 0..3 {
        env.run(&["unlock", "--passphrase-stdin"], Some(b"nope\n"))
            .code(77);
    }
    let kinds = |recs: &[Value]| -> Vec<String> {
        of_kind(recs, "anomaly")
            .iter()
            .map(|r| r["anomaly"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_for_record(&env, "anomaly", "\"anomaly\":\"wrong_passphrases\"");
    let k = kinds(&records(&env));
    assert_eq!(k.iter().filter(|k| *k == "burst").count(), 1, "{k:?}");
    assert_eq!(
        k.iter().filter(|k| *k == "new_executable").count(),
        2,
        "true, then env: {k:?}"
    );
    assert!(k.contains(&"repeated_denials".to_owned()), "{k:?}");
    let recs = records(&env);
    let burst = recs.iter().find(|r| r["anomaly"] == "burst").unwrap();
    assert!(
        burst["reason"]
            .as_str()
            .unwrap()
            .contains("within a minute")
    );
    // The alert command got each description, after its own arguments.
    assert!(
        seen.wait_for("wrong passphrases", Duration::from_secs(30)),
        "alerts: {}",
        seen.text()
    );
    assert!(
        seen.wait_for("within a minute", Duration::from_secs(30)),
        "alerts: {}",
        seen.text()
    );
    let text = seen.text();
    assert!(
        text.lines()
            .all(|l| l.starts_with("--urgency=critical jitc: ")),
        "{text}"
    );
    assert!(
        text.contains("leases of 'prod/db' within a minute"),
        "{text}"
    );
}

#[test]
fn values_on_command_lines_never_reach_the_log() {
    let (env, _agent) = setup();
    // On the command's own argv: refused, and recorded without it (concealed where it
    // stood, it would tell which string was a value).
    env.run(
        &[
            "exec",
            "-s",
            "prod/db",
            "--",
            "echo",
            &format!("Bearer {VALUE}"),
        ],
        None,
    )
    .code(77)
    .says("an argument of the command");
    // In the task text: refused too.
    env.run(
        &["exec", "-s", "prod/db", "--task", VALUE, "--", "true"],
        None,
    )
    .code(77)
    .says("--task");
    // On an ancestor's command line (a shell that stays the parent): refused too.
    let text = lease_from_a_shell_holding(&env, &format!("'{VALUE}'"));
    assert!(!text.contains(VALUE), "the value is in the audit log");
    let recs = records(&env);
    let denied = of_kind(&recs, "lease_denied");
    assert_eq!(denied.len(), 3);
    for d in &denied {
        assert!(
            d["withheld"]
                .as_str()
                .unwrap()
                .starts_with("command, argv, task"),
            "{d}"
        );
        assert!(d.get("argv").is_none() && d.get("task").is_none(), "{d}");
        assert!(d["peer"].get("argv").is_none(), "{d}");
        assert_eq!(d["secrets"], serde_json::json!(["prod/db"]));
    }
    // Cut short where an ancestor's long argument is (256 bytes kept): the part of
    // the value before the cut is concealed too.
    let mut c = env.command("sh");
    c.arg("-c").arg(format!(
        "true {}{VALUE}; {} exec -s prod/db -- true; true",
        "x".repeat(240),
        jitc_bin().display()
    ));
    run_with_stdin(c, None).ok();
    // While locked, no value is at hand to conceal: argv and task are withheld.
    env.run(&["lock"], None).ok();
    env.run(
        &[
            "exec",
            "-s",
            "prod/db",
            "--task",
            &format!("deploy {VALUE}"),
            "--",
            "echo",
            &format!("Bearer {VALUE}"),
        ],
        None,
    )
    .code(75);
    env.run(&["status"], None).ok();
    let text = fs::read_to_string(audit_path(&env)).unwrap();
    assert!(
        !text.contains(&VALUE[..10]),
        "part of the value is in the log"
    );
    let recs = records(&env);
    let granted = *of_kind(&recs, "lease_granted").last().unwrap();
    let shell = granted["peer"]["chain"][1]["argv"][2].as_str().unwrap();
    assert!(shell.ends_with("<concealed:prod/db>…"), "{shell}");
    let locked = *of_kind(&recs, "lease_denied").last().unwrap();
    assert!(
        locked["withheld"]
            .as_str()
            .unwrap()
            .contains("argv and task")
    );
    assert!(
        locked.get("argv").is_none()
            && locked.get("task").is_none()
            && locked.get("command").is_none()
    );
    assert!(locked.get("secrets").is_none(), "{locked}");
    // A value in the command's path: refused when unlocked, not recorded when locked.
    let dir = env.root().join(VALUE);
    fs::create_dir_all(&dir).unwrap();
    fs::copy("/usr/bin/true", dir.join("t")).unwrap();
    let t = dir.join("t").display().to_string();
    env.run(&["exec", "-s", "prod/db", "--", &t], None).code(75);
    env.unlock().ok();
    env.run(&["exec", "-s", "prod/db", "--", &t], None)
        .code(77)
        .says("path contains the value");
    env.run(&["status"], None).ok();
    let text = fs::read_to_string(audit_path(&env)).unwrap();
    assert!(!text.contains(VALUE), "the value is in the audit log");
}

/// Leases `prod/db` to `true` from a shell whose own command line (it stays the
/// parent) also holds `word`; the log's text afterwards.
fn lease_from_a_shell_holding(env: &TestEnv, word: &str) -> String {
    let mut c = env.command("sh");
    c.arg("-c").arg(format!(
        "{} exec -s prod/db -- true; true {word}",
        jitc_bin().display()
    ));
    run_with_stdin(c, None).ok();
    env.run(&["status"], None).ok();
    fs::read_to_string(audit_path(env)).unwrap()
}

/// Cuts the log back to just before its first `lease_granted` line, in place.
fn cut_before_the_first_grant(env: &TestEnv) {
    let (lines, _) = lines_and_last_seq(env);
    let first_grant = lines
        .iter()
        .position(|l| l.contains("\"lease_granted\""))
        .unwrap();
    fs::write(audit_path(env), lines[..first_grant].join("\n") + "\n").unwrap();
}

/// The log's lines, and the sequence number of the last.
fn lines_and_last_seq(env: &TestEnv) -> (Vec<String>, u64) {
    let recs = records(env);
    let text = fs::read_to_string(audit_path(env)).unwrap();
    (
        text.lines().map(str::to_owned).collect(),
        recs.last().unwrap()["seq"].as_u64().unwrap(),
    )
}

#[test]
fn lines_forged_while_the_agent_was_down_are_never_vouched_for() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["lock"], None).ok();
    agent.stop();
    // While no agent runs, someone appends a line of their own (it has no tag: only a
    // keyed line could have one).
    let (_, last) = lines_and_last_seq(&env);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(audit_path(&env))
        .unwrap();
    let forged = format!(
        "{{\"time\":\"2026-01-01T00:00:00.000Z\",\"seq\":{},\"event\":\"lease_denied\",\"reason\":\"nothing happened here\"}}\n",
        last + 1
    );
    std::io::Write::write_all(&mut f, forged.as_bytes()).unwrap();
    drop(f);
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // The chain goes on, but does not vouch for the `stop` and the forged line: they
    // were never sealed, and verify says so.
    let out = env.run(&["audit", "verify"], None).ok();
    assert!(
        out.stderr
            .contains("2 lines written while the vault was locked were never sealed"),
        "{}",
        out.stderr
    );
    let start = records(&env)
        .into_iter()
        .filter(|r| r["event"] == "start")
        .nth(1)
        .unwrap();
    assert_eq!(start["unsealed_before"], 2);
}

#[test]
fn a_tail_cut_while_locked_is_caught_by_the_checkpoint_saved_at_lock() {
    let (env, agent) = setup();
    for _ in 0..3 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    // No save since the add: only the lock saves the checkpoint that covers the grants.
    env.run(&["lock"], None).ok();
    agent.stop();
    cut_before_the_first_grant(&env);
    let _agent = env.start_agent();
    env.unlock().ok();
    wait_for_record(&env, "anomaly", "audit_log_tampered");
    env.run(&["audit", "verify"], None).code(1).says("cut off");
}

#[test]
fn removing_older_files_is_caught() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-max-bytes", "2000"]);
    env.init();
    env.add("prod/db", VALUE);
    for _ in 0..12 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    let dir = env.state.join("jitc");
    assert!(
        dir.join("audit.log.3").is_file(),
        "rotated at least three times"
    );
    env.run(&["audit", "verify"], None).ok();
    // Keep audit.log.1 (which begins with a log_continued line) and remove the older
    // ones: every line that is left still chains, but the beginning is gone.
    for i in 2..=9 {
        let _ = fs::remove_file(dir.join(format!("audit.log.{i}")));
    }
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("older files were removed");
    // Empty files in their place, or a blank line on top, do not hide it.
    for i in 2..=9 {
        fs::write(dir.join(format!("audit.log.{i}")), "").unwrap();
    }
    let one = dir.join("audit.log.1");
    let text = fs::read_to_string(&one).unwrap();
    fs::write(&one, format!("\n{text}")).unwrap();
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("older files were removed");
}

#[test]
fn a_write_that_fails_leaves_the_log_whole() {
    let env = TestEnv::new();
    let _agent = agent_on_tmpfs(&env, "size=64k", &["--audit-max-bytes", "6000"]);
    env.init();
    env.add("prod/db", VALUE);
    let refused =
        (0..300).any(|_| env.run(&["exec", "-s", "prod/db", "--", "true"], None).code != 0);
    assert!(refused, "the log filled its filesystem");
    // The files as the agent sees them, in its own mount namespace.
    let seen = PathBuf::from(format!("/proc/{}/root", env.agent_pid().unwrap()))
        .join(env.state.join("jitc").strip_prefix("/").unwrap());
    assert!(seen.join("audit.log.1").is_file(), "rotated on the way");
    // What is on disk is whole: no hole left by a failed write, the chain intact.
    for f in fs::read_dir(&seen).unwrap() {
        let text = fs::read(f.unwrap().path()).unwrap();
        assert!(!text.contains(&0), "a hole in the log");
    }
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
}

#[test]
fn approvals_record_who_answered_and_the_attempts_that_failed() {
    let (env, _agent) = setup();
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n");
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    let id = bg.approval_id().to_string();
    env.run(
        &["approve", &id, "--passphrase-stdin"],
        Some(b"guessing-passphrase-1\n"),
    )
    .code(77);
    env.approve(id.parse().unwrap()).ok();
    assert_eq!(bg.wait().code, 0);
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    let denied_id = bg.approval_id().to_string();
    env.run(&["deny", &denied_id], None).ok();
    let out = bg.wait();
    assert_eq!(out.code, 77);
    assert!(
        !out.stderr.contains(" by "),
        "who denied is for the record, not for the requester: {}",
        out.stderr
    );
    env.run(&["status"], None).ok();
    let recs = records(&env);
    let failed = of_kind(&recs, "approve_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["approval"].to_string(), id);
    assert_eq!(failed[0]["reason"], "wrong passphrase");
    let granted = of_kind(&recs, "approval_granted")[0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        granted.starts_with("approved with 'jitc approve' by ") && granted.contains("/jitc (pid "),
        "{granted}"
    );
    let denied = of_kind(&recs, "approval_denied")[0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        denied.starts_with("denied with 'jitc deny' by "),
        "{denied}"
    );
    assert!(
        !fs::read_to_string(audit_path(&env))
            .unwrap()
            .contains("guessing-passphrase-1")
    );
}

#[test]
fn a_log_started_afresh_is_accepted_only_by_a_human_and_stays_on_record() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // Saved with the vault: the checkpoint a fresh log falls short of.
    env.add("other", "other-value-99");
    // Nothing to accept while the log is whole.
    env.run(&["audit", "accept", "--passphrase-stdin"], None)
        .ok()
        .says("nothing to accept");
    agent.stop();
    // The state directory is lost (or the vault was copied to another machine).
    let dir = env.state.join("jitc");
    let aside = env.root().join("old-audit");
    fs::rename(&dir, &aside).unwrap();
    let agent = env.start_agent();
    env.unlock().ok();
    wait_for_record(&env, "anomaly", "audit_log_tampered");
    env.run(&["audit", "verify"], None).code(1).says("cut off");
    // A process without the passphrase (an agent in the repository) cannot hide it.
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(b"guessing-passphrase-2\n"),
    )
    .code(77)
    .says("wrong passphrase");
    env.run(&["audit", "verify"], None).code(1).says("cut off");
    let run = env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    );
    run.ok().says("cut off").says("audit log intact");
    env.run(&["audit", "verify"], None).ok();
    assert!(env.status()["audit"]["tampered"].is_null());
    let recs = records(&env);
    assert_eq!(of_kind(&recs, "accept_failed").len(), 1);
    let accepted = of_kind(&recs, "audit_accepted");
    assert_eq!(accepted.len(), 1);
    let reason = accepted[0]["reason"].as_str().unwrap();
    assert!(reason.contains("cut off"), "{reason}");
    assert!(accepted[0]["peer"]["pid"].is_u64(), "{}", accepted[0]);
    // The new checkpoint is the vault's: a restart and an unlock find nothing wrong.
    agent.stop();
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(&["audit", "verify"], None).ok();
    env.run(&["status"], None).ok();
    let tampered = of_kind(&records(&env), "anomaly")
        .into_iter()
        .filter(|a| a["anomaly"] == "audit_log_tampered")
        .count();
    assert_eq!(tampered, 1, "the accepted log is not reported again");
    // A chain broken in the middle is evidence, not a fresh start: not accepted.
    let path = audit_path(&env);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("\"unlock\"", "\"unlock \"", 1)).unwrap();
    env.run(&["audit", "verify"], None).code(1);
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    )
    .code(1)
    .says("not accepted: the chain itself is broken");
    assert_eq!(of_kind(&records(&env), "audit_accepted").len(), 1);
    assert!(
        !fs::read_to_string(&path)
            .unwrap()
            .contains("guessing-passphrase-2")
    );
}

fn inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.ino())
}

fn no_tampering_reported(env: &TestEnv) {
    env.run(&["status"], None).ok();
    let dir = env.state.join("jitc");
    for f in fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.is_file() {
            let text = fs::read_to_string(path).unwrap();
            assert!(!text.contains("audit_log_tampered"), "{text}");
        }
    }
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
}

#[test]
fn a_rotation_while_locked_keeps_each_file_checkable() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-max-bytes", "4000"]);
    env.init();
    env.add("prod/db", VALUE);
    env.run(&["lock"], None).ok();
    let dir = env.state.join("jitc");
    let log = dir.join("audit.log");
    // Refusals while locked are written unkeyed until the log rotates, and one more
    // after: the run the next unlock seals spans two files.
    let first = inode(&log);
    for _ in 0..200 {
        if inode(&log) != first {
            break;
        }
        env.run(&["exec", "-s", "prod/db", "--", "true"], None)
            .code(75);
    }
    assert_ne!(inode(&log), first, "rotated");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(75);
    // The unlock checks the newest file on its own: it must not cry wolf.
    env.unlock().ok();
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    no_tampering_reported(&env);
    // Nor once the file where that run began has rotated away.
    let began = inode(&dir.join("audit.log.1")).unwrap();
    for _ in 0..2000 {
        let present = (1..=9).any(|i| inode(&dir.join(format!("audit.log.{i}"))) == Some(began));
        if !present {
            break;
        }
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    assert!(dir.join("audit.log.9").is_file());
    no_tampering_reported(&env);
}

#[test]
fn a_restart_that_rotates_at_once_keeps_the_new_file_checkable() {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", VALUE);
    env.run(&["lock"], None).ok();
    // Unkeyed lines fill the log past the size a restarted agent rotates at.
    let log = audit_path(&env);
    for _ in 0..200 {
        if fs::metadata(&log).unwrap().len() >= 4000 {
            break;
        }
        env.run(&["exec", "-s", "prod/db", "--", "true"], None)
            .code(75);
    }
    agent.stop();
    // The new agent gives those lines up (unsealed_before) on the first line of a new file.
    let _agent = env.start_agent_with(&["--audit-max-bytes", "4000"]);
    env.unlock().ok();
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    let first = fs::read_to_string(&log).unwrap();
    let marker = first.lines().next().unwrap();
    assert!(
        marker.contains("log_continued") && marker.contains("\"unsealed_before\""),
        "{first}"
    );

    no_tampering_reported(&env);
}

#[test]
fn a_failed_init_leaves_nothing_keyed_for_a_vault_that_never_was() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let dir = env.root().join("vaultdir");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    env.set_env("JITC_VAULT", dir.join("vault.jitc"));
    let _agent = env.start_agent();
    // The vault's temporary file cannot be created: the save fails.
    let blocker = dir.join(format!("vault.jitc.tmp-{}", env.agent_pid().unwrap()));
    fs::create_dir_all(blocker.join("x")).unwrap();
    let failed = env.run(&INIT_ARGS, Some(format!("{PASSPHRASE}\n").as_bytes()));
    assert_ne!(failed.code, 0, "{failed:?}");
    fs::remove_dir_all(&blocker).unwrap();
    env.init();
    env.add("prod/db", VALUE);
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
    let recs = records(&env);
    let inits = of_kind(&recs, "init");
    assert_eq!(inits.len(), 3, "tried, failed, done: {inits:?}");
    assert_eq!(inits[1]["decision"], "failed");
    assert!(inits.iter().all(|r| r.get("tag").is_none()));
}

#[test]
fn a_tail_cut_under_a_running_agent_is_not_accepted_but_a_fresh_log_is() {
    let (env, agent) = setup();
    for _ in 0..3 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    env.run(&["status"], None).ok();
    // Cut in place: the agent keeps writing to the same file.
    cut_before_the_first_grant(&env);
    env.run(&["audit", "verify"], None).code(1).says("cut off");
    let pass = format!("{PASSPHRASE}\n");
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(pass.as_bytes()),
    )
    .code(1)
    .says("cut while this agent was running");
    assert!(of_kind(&records(&env), "audit_accepted").is_empty());
    // What the agent writes next shows the gap for good; the way to a fresh start is
    // to keep the files aside.
    agent.stop();
    let dir = env.state.join("jitc");
    fs::rename(&dir, env.root().join("evidence")).unwrap();
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(pass.as_bytes()),
    )
    .ok()
    .says("audit log intact");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["audit", "verify"], None).ok();
}

#[test]
fn a_new_vault_moves_the_log_of_the_earlier_one_aside() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["lock"], None).ok();
    // The passphrase is forgotten: the vault is moved away and a new one made.
    fs::rename(env.vault(), env.root().join("forgotten.jitc")).unwrap();
    env.init();
    env.add("prod/db", "another-value-5521");
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    no_tampering_reported(&env);
    let recs = records(&env);
    assert_eq!(recs[0]["seq"], 1);
    let init = of_kind(&recs, "init")[0];
    let moved = init["reason"].as_str().unwrap();
    assert!(moved.contains("was moved to"), "{init}");
    let dir = PathBuf::from(moved.rsplit(" moved to ").next().unwrap());
    let old = fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(old.contains("\"lease_granted\""), "kept whole: {old}");
    // It survives a restart too.
    agent.stop();
    let _agent = env.start_agent();
    env.unlock().ok();
    no_tampering_reported(&env);
}

#[test]
fn verify_is_not_fooled_by_rotations_while_it_reads() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-max-bytes", "1500"]);
    env.init();
    env.add("prod/db", VALUE);
    let mut load: Vec<_> = (0..2)
        .map(|_| {
            let mut c = env.command("sh");
            c.arg("-c").arg(format!(
                "for i in $(seq 60); do {} exec -s prod/db -- true || exit 1; done",
                jitc_bin().display()
            ));
            c.stdout(std::process::Stdio::null()).spawn().unwrap()
        })
        .collect();
    let mut checks = 0;
    while load.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        env.run(&["audit", "verify"], None).ok();
        checks += 1;
    }
    for mut c in load {
        assert!(c.wait().unwrap().success());
    }
    assert!(checks > 5, "verify ran while the log rotated ({checks})");
    no_tampering_reported(&env);
}

#[test]
fn a_new_vault_that_fails_leaves_the_earlier_log_where_it_was() {
    let (env, _agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["lock"], None).ok();
    let old = env.root().join("old.jitc");
    fs::rename(env.vault(), &old).unwrap();
    // The new vault's temporary file cannot be created: the save fails.
    let blocker = env
        .vault()
        .with_file_name(format!("vault.jitc.tmp-{}", env.agent_pid().unwrap()));
    fs::create_dir_all(blocker.join("x")).unwrap();
    let failed = env.run(&INIT_ARGS, Some(format!("{PASSPHRASE}\n").as_bytes()));
    assert_ne!(failed.code, 0, "{failed:?}");
    fs::remove_dir_all(&blocker).unwrap();
    // The old vault comes back: its log is as it left it.
    fs::rename(&old, env.vault()).unwrap();
    env.unlock().ok();
    no_tampering_reported(&env);
    let moved_aside = fs::read_dir(env.state.join("jitc"))
        .unwrap()
        .any(|e| e.unwrap().path().is_dir());
    assert!(!moved_aside);
}

#[test]
fn a_value_given_where_a_name_goes_is_not_recorded() {
    let (env, _agent) = setup();
    // "-s $TOKEN" instead of "-s NAME": the value looks like a name.
    env.run(&["exec", "-s", VALUE, "-s", "prod/db", "--", "true"], None)
        .code(1)
        .says("no secret named");
    env.run(&["status"], None).ok();
    let text = fs::read_to_string(audit_path(&env)).unwrap();
    assert!(!text.contains(VALUE), "the value is in the audit log");
    let recs = records(&env);
    let denied = *of_kind(&recs, "lease_denied").last().unwrap();
    assert_eq!(denied["secrets"], serde_json::json!(["prod/db"]));
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .contains("names not in the vault are not recorded"),
        "{denied}"
    );
}

#[test]
fn strings_a_requester_supplies_never_bring_a_value_into_the_log() {
    let (env, _agent) = setup_at("Sat 03:00");
    env.add("other", "other-value-0000000000");
    // A value given where a name goes, beside a real name: its own command line too.
    env.run(&["exec", "-s", VALUE, "-s", "other", "--", "true"], None)
        .code(1);
    // The same under a policy that would refuse the command, outside working hours.
    env.write_policy(
        "[defaults]\nworking_hours = \"08:00-19:00 Mon-Fri\"\n\n[[rule]]\ncommands = [\"env\"]\n",
    );
    env.run(&["exec", "-s", VALUE, "-s", "prod/db", "--", "true"], None)
        .code(1);
    // A command whose path holds the value, refused by a policy that quotes the path.
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"env\"]\n");
    let dir = env.root().join("bin");
    fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(VALUE);
    fs::copy("/usr/bin/true", &exe).unwrap();
    env.run(
        &["exec", "-s", "prod/db", "--", exe.to_str().unwrap()],
        None,
    )
    .code(77);
    // Locked, no name can be checked: none is recorded.
    env.run(&["lock"], None).ok();
    env.run(&["exec", "-s", VALUE, "--", "true"], None).code(75);
    env.run(&["status"], None).ok();
    let text = fs::read_to_string(audit_path(&env)).unwrap();
    let leaks: Vec<&str> = text.lines().filter(|l| l.contains(VALUE)).collect();
    assert!(leaks.is_empty(), "{leaks:#?}");
    // The value is one of the vault's, on `jitc`'s own command line: those records
    // withhold every command line rather than conceal it as an unknown name.
    assert!(text.contains("\"withheld\":\"command, argv"), "{text}");
}

#[test]
fn encoded_values_are_kept_off_command_lines_and_out_of_the_log() {
    let (env, _agent) = setup();
    let encoded =
        jitc_protocol::encodings::base64(VALUE.as_bytes(), jitc_protocol::encodings::B64_STD);
    let encoded = String::from_utf8(encoded).unwrap();
    let hex = VALUE
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    // On the command's own argv: refused like the value itself.
    env.run(
        &[
            "exec",
            "-s",
            "prod/db",
            "--",
            "echo",
            &format!("x{encoded}"),
        ],
        None,
    )
    .code(77)
    .says("an encoding of it");
    // On an ancestor's command line: refused, and not recorded.
    let text = lease_from_a_shell_holding(&env, &hex);
    for form in [VALUE, encoded.as_str(), &encoded[4..20], hex.as_str()] {
        assert!(!text.contains(form), "{form} is in the log");
    }
}

//! What the audit trail records — every event kind with its fields, who approved,
//! the reader's filters — and what it never records: a value, wherever a requester
//! put one.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::time::Duration;

use jitc_tests::audit::*;
use jitc_tests::*;
use serde_json::Value;

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
    assert!(
        row.contains("audit_records-") && !row.contains(" jitc ("),
        "{row}"
    );
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

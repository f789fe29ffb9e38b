//! Anomalies on record: a canary served like a real secret, requests outside working
//! hours, bursts, new executables, repeated denials and wrong passphrases, and an alert
//! command that cannot run.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::time::Duration;

use jitc_tests::audit::*;
use jitc_tests::*;
use serde_json::Value;

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
        proxy: false,
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

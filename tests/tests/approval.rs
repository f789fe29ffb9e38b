//! Approval at the moment of use: approver programs, `jitc pending`/`approve`/`deny`,
//! timeouts, once-per-task memory, and the rule that a requester cannot approve itself.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use jitc_tests::*;

fn setup(policy: &str) -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-1");
    env.add("dev/x", "dev-value-2");
    env.write_policy(policy);
    (env, agent)
}

/// An approver script: records its prompt (argv[1]) and pid, then runs `then`.
fn approver(env: &TestEnv, then: &str) -> PathBuf {
    let path = env.root().join("approver");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {dir}/prompt\necho $$ > {dir}/approver.pid\n{then}\n",
            dir = env.root().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn policy_with_approver(approver: &std::path::Path, timeout: &str) -> String {
    format!(
        "[defaults]\napproval_timeout = \"{timeout}\"\napprover = [\"{}\"]\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n",
        approver.display()
    )
}

#[test]
fn an_approver_that_says_yes_lets_the_command_run() {
    let env = TestEnv::new();
    let yes = approver(&env, "exit 0");
    let _agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-1");
    env.write_policy(&policy_with_approver(&yes, "30s"));
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "prod/db",
                "--task",
                "nightly backup",
                "--",
                "sh",
                "-c",
                "echo ran",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout, "ran\n");
    assert!(
        out.stderr.contains("waiting for approval from"),
        "{}",
        out.stderr
    );
    let prompt = std::fs::read_to_string(env.root().join("prompt")).unwrap();
    for needle in [
        "sh -c 'echo ran'",
        "program:  /",
        "prod/db",
        "nightly backup",
        "jitc (",
        "asked by",
    ] {
        assert!(prompt.contains(needle), "prompt lacks {needle:?}: {prompt}");
    }
    assert!(!prompt.contains("pw-prod-1"));
}

#[test]
fn an_approver_that_says_no_refuses() {
    let env = TestEnv::new();
    let no = approver(&env, "exit 1");
    let _agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-1");
    env.write_policy(&policy_with_approver(&no, "30s"));
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .says("approval denied: ")
        .says("said no");
}

#[test]
fn an_approver_that_never_answers_is_killed_at_the_timeout() {
    let env = TestEnv::new();
    let slow = approver(&env, "exec sleep 60");
    let _agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-1");
    env.write_policy(&policy_with_approver(&slow, "1s"));
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .says("approval timed out after 1s")
        .says("jitc pending");
    let pid: i32 = std::fs::read_to_string(env.root().join("approver.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Killed (and reaped by the agent): gone within moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let zombie = proc_status_field(pid as u32, "State").is_some_and(|s| s.starts_with('Z'));
        if zombie {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the approver still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(env.status()["pending"], 0);
}

const ALWAYS: &str = "[defaults]\napproval_timeout = \"30s\"\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n";

#[test]
fn pending_then_approve_with_the_passphrase() {
    let (env, _agent) = setup(ALWAYS);
    let bg = env.spawn(&[
        "exec", "-s", "prod/db", "--task", "t1", "--", "sh", "-c", "echo ran",
    ]);
    let id = bg.approval_id();
    bg.expect_stderr(&format!(
        "jitc: waiting for approval — run 'jitc approve {id}' in your terminal\n"
    ));
    let pending = env.json(&["pending"]);
    let p = &pending[0];
    assert_eq!(p["id"], id);
    assert_eq!(p["scope"]["secrets"], serde_json::json!(["prod/db"]));
    assert_eq!(p["scope"]["task"], "t1");
    assert_eq!(p["scope"]["pid"], bg.pid());
    assert!(p["expires_in_secs"].as_u64().unwrap() <= 30);
    let text = env.run(&["pending"], None).ok().stdout;
    assert!(
        text.contains(&format!("request {id}")) && text.contains("sh -c 'echo ran'"),
        "{text}"
    );
    assert_eq!(env.status()["pending"], 1);
    // A wrong passphrase is refused (and counted); the request keeps waiting.
    env.run(
        &["approve", &id.to_string(), "--passphrase-stdin"],
        Some(b"wrong\n"),
    )
    .code(77)
    .says("wrong passphrase");
    assert_eq!(env.status()["unlock_failures"], 1);
    assert_eq!(env.status()["pending"], 1);
    env.approve(id).ok().says(&format!("approved request {id}"));
    let out = bg.wait();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "ran\n");
    assert_eq!(
        env.status()["unlock_failures"],
        0,
        "a success resets the count"
    );
    env.run(
        &["approve", &id.to_string(), "--passphrase-stdin"],
        Some(b"x\n"),
    )
    .code(1)
    .says("jitc pending");
}

#[test]
fn deny_refuses_with_77() {
    let (env, _agent) = setup(ALWAYS);
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    let id = bg.approval_id();
    env.run(&["deny", &id.to_string()], None).ok();
    let out = bg.wait();
    assert_eq!(out.code, 77);
    assert!(
        out.stderr
            .ends_with("jitc: approval denied: denied with 'jitc deny'\n"),
        "{}",
        out.stderr
    );
    assert_eq!(env.status()["pending"], 0);
}

#[test]
fn without_an_answer_the_request_times_out_naming_jitc_pending() {
    let (env, _agent) = setup(
        "[defaults]\napproval_timeout = \"1s\"\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n",
    );
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .says(
            "approval timed out after 1s; while a request waits, list requests with 'jitc pending'",
        );
    assert_eq!(env.status()["pending"], 0);
}

#[test]
fn a_requester_that_gives_up_leaves_no_pending_request() {
    let (env, _agent) = setup(ALWAYS);
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    bg.approval_id();
    assert_eq!(env.status()["pending"], 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bg.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = bg.wait();
    assert_eq!(out.code, 130);
    // The agent notices the hang-up and withdraws the request.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.status()["pending"] != 0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn once_per_task_is_remembered_for_the_same_task_until_it_expires() {
    let (env, _agent) = setup(
        "[defaults]\napproval_timeout = \"30s\"\napproval_memory = \"2s\"\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"once-per-task\"\n",
    );
    let ask = |task: &str| env.spawn(&["exec", "-s", "prod/db", "--task", task, "--", "true"]);
    let first = ask("deploy");
    env.approve(first.approval_id()).ok();
    assert_eq!(first.wait().code, 0);
    // Same task, secrets, profile: no question this time.
    let again = env
        .run(
            &["exec", "-s", "prod/db", "--task", "deploy", "--", "true"],
            None,
        )
        .ok();
    assert!(
        !again.stderr.contains("waiting for approval"),
        "{}",
        again.stderr
    );
    let e = env.json(&[
        "policy", "explain", "--task", "deploy", "-s", "prod/db", "--", "true",
    ]);
    assert_eq!(e["approval"], "remembered");
    // Another task, another command, or more secrets, asks again.
    let elsewhere = env.spawn(&[
        "exec", "-s", "prod/db", "--task", "deploy", "--", "echo", "hi",
    ]);
    env.run(&["deny", &elsewhere.approval_id().to_string()], None)
        .ok();
    assert_eq!(elsewhere.wait().code, 77);
    let other = ask("other");
    env.run(&["deny", &other.approval_id().to_string()], None)
        .ok();
    assert_eq!(other.wait().code, 77);
    let more = env.spawn(&[
        "exec", "-s", "prod/db", "-s", "dev/x", "--task", "deploy", "--", "true",
    ]);
    env.run(&["deny", &more.approval_id().to_string()], None)
        .ok();
    assert_eq!(more.wait().code, 77);
    // After approval_memory (2s) it asks again.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let later = ask("deploy");
    env.run(&["deny", &later.approval_id().to_string()], None)
        .ok();
    assert_eq!(later.wait().code, 77);
}

#[test]
fn a_request_cannot_be_approved_from_inside_the_agent_that_made_it() {
    let (env, _agent) = setup(
        "[defaults]\napproval_timeout = \"3s\"\n[profiles.agent]\nancestors = [\"codex\"]\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n",
    );
    let dir = env.root().join("agentbin");
    std::fs::create_dir_all(&dir).unwrap();
    let codex = dir.join("codex");
    std::fs::copy("/bin/sh", &codex).unwrap();
    // "codex" asks for a lease, waits until it is pending, then tries to approve it.
    let j = jitc_bin();
    let pass = env.root().join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let script = format!(
        "{j} exec -s prod/db -- true & \
         until {j} pending --json | grep -q '\"id\"'; do sleep 0.05; done; \
         id=$({j} pending --json | sed -n 's/.*\"id\": \\([0-9]*\\).*/\\1/p' | head -n1); \
         {j} approve $id --passphrase-stdin < {pass}; echo approve-exit=$?; wait $!; echo exec-exit=$?",
        j = j.display(),
        pass = pass.display()
    );
    let mut c = env.command(&codex);
    c.arg("-c").arg(script);
    let out = run_with_stdin(c, None);
    assert!(out.stdout.contains("approve-exit=77"), "{out:?}");
    assert!(out.stdout.contains("exec-exit=77"), "{out:?}");
    assert!(
        out.stderr
            .contains("cannot be approved by the process that asked for it or anything it started"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("approval timed out"), "{}", out.stderr);
    // And the attempt is an anomaly a person will see.
    let anomalies = env
        .run(&["audit", "--anomalies", "--json"], None)
        .ok()
        .stdout;
    assert!(
        anomalies.contains("\"anomaly\":\"self_approval\""),
        "{anomalies}"
    );
}

#[test]
fn approve_asks_for_the_passphrase_at_the_terminal() {
    let (env, _agent) = setup(ALWAYS);
    let bg = env.spawn(&["exec", "-s", "prod/db", "--task", "ship it", "--", "true"]);
    let id = bg.approval_id().to_string();
    let mut t = PtySession::spawn(&env, &jitc_bin(), &["approve", &id]);
    // What is being approved is shown before the question.
    t.expect("ship it");
    t.expect(&format!("Vault passphrase to approve request {id}: "));
    t.send(format!("{PASSPHRASE}\r").as_bytes());
    assert_eq!(t.wait(), 0);
    assert!(!t.output.text().contains(PASSPHRASE));
    assert_eq!(bg.wait().code, 0);
}

#[test]
fn an_approver_that_cannot_start_falls_back_to_jitc_approve_at_once() {
    let (env, _agent) = setup("");
    env.write_policy(&policy_with_approver(
        std::path::Path::new("/nonexistent/askpass"),
        "60s",
    ));
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    // Said at once (not after the timeout), with what to do.
    bg.expect_stderr("could not be started");
    let id = bg.approval_id();
    let status = env.run(&["status"], None).ok().stdout;
    assert!(
        status.contains("approver FAILING") && status.contains("/nonexistent/askpass"),
        "{status}"
    );
    let log = std::fs::read_to_string(env.state.join("jitc/audit.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"policy_error\"") && l.contains("/nonexistent/askpass")),
        "not on record"
    );
    env.approve(id).ok();
    assert_eq!(bg.wait().code, 0);
}

/// A ^C typed at the terminal while the lease waits for approval reaches jitc, which
/// stops, and nothing of the command runs — with masking (the command would have a pty
/// of its own) and without (it would share ours in a group of its own). Kept from the
/// experiment of forking the command before the lease is answered (4cf6eb1), where the
/// command's group had to take the terminal only at the go for this to hold.
#[test]
fn ctrl_c_at_the_terminal_while_waiting_for_approval_runs_nothing() {
    let (env, _agent) = setup("[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n");
    for masking in [true, false] {
        let marker = env.root().join(format!("ran-{masking}"));
        let marker_arg = marker.to_str().unwrap();
        let mut args = vec!["exec", "-s", "prod/db"];
        if !masking {
            args.push("--no-masking");
        }
        args.extend(["--", "touch", marker_arg]);
        let mut t = PtySession::spawn(&env, &jitc_bin(), &args);
        t.expect("in your terminal");
        t.send(b"\x03");
        t.expect("interrupted while waiting");
        assert_eq!(t.wait(), 130, "masking {masking}");
        assert!(!marker.exists(), "masking {masking}: the command ran");
    }
}

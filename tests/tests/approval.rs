//! Approval at the moment of use: approver programs, `jitc pending`/`approve`/`deny`,
//! timeouts, once-per-task memory, and the rule that a requester cannot approve itself.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use std::time::{Duration, Instant};

use jitc_tests::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let zombie = proc_status_field(pid as u32, "State").is_some_and(|s| s.starts_with('Z'));
        if zombie {
            break;
        }
        assert!(Instant::now() < deadline, "the approver still runs");
        std::thread::sleep(Duration::from_millis(20));
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
    kill(Pid::from_raw(bg.pid() as i32), Signal::SIGINT).unwrap();
    let out = bg.wait();
    assert_eq!(out.code, 130);
    // The agent notices the hang-up and withdraws the request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.status()["pending"] != 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
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
    std::thread::sleep(Duration::from_millis(2100));
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

const ALWAYS_60: &str = "[defaults]\napproval_timeout = \"60s\"\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n";

fn approval_env(uid: Option<u32>) -> (TestEnv, Agent) {
    let env = match uid {
        Some(u) => TestEnv::new_as(u),
        None => TestEnv::new(),
    };
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-1");
    env.write_policy(ALWAYS_60);
    (env, agent)
}

/// The first child of `pid` (jitc's waiting command process), waiting for it.
fn first_child(pid: u32) -> u32 {
    let mut child = None;
    wait_until(&format!("jitc {pid} has a child"), || {
        let listed =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        child = listed.split_whitespace().next().map(|c| c.parse().unwrap());
        child.is_some()
    });
    child.unwrap()
}

fn sig_mask(pid: u32, field: &str) -> u64 {
    u64::from_str_radix(&proc_status_field(pid, field).unwrap(), 16).unwrap()
}

fn bit(sig: Signal) -> u64 {
    1u64 << (sig as i32 - 1)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Review of cec9956, finding F2. The command's process waits for the go in jitc's
/// memory (`CLONE_VM`); none of jitc's signal handlers (Rust's SIGSEGV/SIGBUS handler)
/// may run there, in memory and thread-local state it shares with jitc. It resets them
/// all and keeps every signal blocked until the go, as `posix_spawn` does: a same-uid
/// `kill` can neither run jitc's code in it nor interrupt its wait. Runs as uid 1000.
#[test]
fn the_waiting_command_process_has_none_of_jitcs_signal_handlers() {
    let (env, _agent) = approval_env(Some(USER));
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    // Waiting for approval: the command's process was set up before that was said.
    let id = bg.approval_id();
    let child = first_child(bg.pid());
    assert_eq!(
        std::fs::read_link(format!("/proc/{child}/exe")).unwrap(),
        jitc_bin()
    );
    let caught = sig_mask(child, "SigCgt");
    let blocked = sig_mask(child, "SigBlk");
    env.approve(id).ok();
    assert_eq!(bg.wait().code, 0);
    assert_eq!(
        caught, 0,
        "jitc's handlers in its waiting child: SigCgt {caught:#x}"
    );
    for sig in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGTERM,
        Signal::SIGUSR1,
    ] {
        assert_ne!(
            blocked & bit(sig),
            0,
            "{sig} not blocked in the waiting child"
        );
    }
}

/// Review of cec9956, finding F3. Job control while the lease waits: jitc is in the foreground when the command's
/// process is cloned (before the lease is even answered), then put in the background
/// (^Z + bg: the shell takes the terminal back). At the go, a stale `foreground` flag
/// handed the terminal to the command anyway (tcsetpgrp with SIGTTOU blocked), stealing
/// it from the shell; and at the end jitc took it "back" to its own group.
/// Now whether jitc holds the terminal is read at the go, and only jitc hands it over.
#[test]
fn a_terminal_given_back_while_the_lease_waits_stays_with_the_shell() {
    let (env, _agent) = approval_env(None);
    let out = env.root().join("fg-state");
    let ctl = env.root().join("ctl");
    nix::unistd::mkfifo(&ctl, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A tiny job-control shell: runs jitc in a group of its own in the foreground, and
    // takes the terminal back when told (as `bg` leaves it).
    let helper = r#"
import os, sys, signal
jitc, out, ctl = sys.argv[1], sys.argv[2], sys.argv[3]
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w); os.read(r, 1)
    cmd = "import os,sys\nfd=os.open('/dev/tty',os.O_RDWR)\nopen(sys.argv[1],'w').write('fg' if os.tcgetpgrp(fd)==os.getpgrp() else 'bg')\n"
    os.execv(jitc, [jitc, 'exec', '-s', 'prod/db', '--no-masking', '--', '/usr/bin/python3', '-c', cmd, out])
os.setpgid(pid, pid)
os.tcsetpgrp(0, pid)
os.write(w, b'x')
open(ctl).read()
os.tcsetpgrp(0, os.getpgrp())
print('helper: took the terminal back', flush=True)
os.waitpid(pid, 0)
print('helper: after jitc the terminal is ' + ('mine' if os.tcgetpgrp(0) == os.getpgrp() else 'NOT mine'), flush=True)
"#;
    let mut t = PtySession::spawn(
        &env,
        std::path::Path::new("/usr/bin/python3"),
        &[
            "-c",
            helper,
            jitc_bin().to_str().unwrap(),
            out.to_str().unwrap(),
            ctl.to_str().unwrap(),
        ],
    );
    t.expect("in your terminal");
    let text = t.output.text();
    let at = text.find("jitc approve ").unwrap() + "jitc approve ".len();
    let id: u64 = text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(&ctl, b"bg\n").unwrap();
    t.expect("helper: took the terminal back");
    env.approve(id).ok();
    t.expect("helper: after jitc");
    t.wait();
    let state = std::fs::read_to_string(&out).unwrap();
    let text = t.output.text();
    assert!(
        state == "bg" && text.contains("the terminal is mine"),
        "command saw the terminal as {state:?}; {text:?}"
    );
}

/// Review of cec9956, finding F4. A waiting command process stopped (SIGSTOP: same uid, a debugger) makes jitc hang when the
/// user gives up (^C / SIGINT while waiting for approval) unless jitc kills it: closing
/// the go pipe is not enough, a stopped process never reads it.
#[test]
fn a_stopped_waiting_command_process_does_not_hang_jitc() {
    let (env, _agent) = approval_env(None);
    let bg = env.spawn(&["exec", "-s", "prod/db", "--", "true"]);
    bg.approval_id();
    let jitc = bg.pid();
    let child = first_child(jitc);
    kill(Pid::from_raw(child as i32), Signal::SIGSTOP).unwrap();
    wait_until("the child is stopped", || {
        proc_status_field(child, "State").is_some_and(|s| s.starts_with('T'))
    });
    kill(Pid::from_raw(jitc as i32), Signal::SIGINT).unwrap();
    // jitc has read the SIGINT and waits for the stopped child (do_wait), or has exited.
    let mut hung = false;
    wait_until("jitc exits or waits for its stopped child", || {
        let wchan = std::fs::read_to_string(format!("/proc/{jitc}/wchan")).unwrap_or_default();
        let state = proc_status_field(jitc, "State").unwrap_or_default();
        let child_stopped = proc_status_field(child, "State").is_some_and(|s| s.starts_with('T'));
        hung = wchan == "do_wait" && child_stopped;
        hung || state.starts_with('Z') || state.is_empty()
    });
    let _ = kill(Pid::from_raw(child as i32), Signal::SIGCONT);
    let out = bg.wait();
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        !hung,
        "jitc hung in waitpid on its stopped, never-started child after ^C"
    );
}

//! What a requester can make the agent hold and write is bounded (issue 9, items 6, 11
//! and 12): records, request size, leases and waiting requests per user, listings that
//! page, rotation floods on record; the wrong-passphrase backoff holds whoever hangs up;
//! silent connections cannot lock anyone out.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use jitc_protocol::{CommandLine, LeaseRequest, Request, Response, SecretBytes, write_frame};
use jitc_tests::*;
use serde_json::Value;

fn setup_with(args: &[&str]) -> (TestEnv, Agent) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent_with(args);
    env.init();
    env.add("T", "value-limits-000000");
    (env, agent)
}

fn records(env: &TestEnv) -> Vec<Value> {
    env.run(&["status"], None).ok();
    fs::read_to_string(env.state.join("jitc/audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn lease_request(argv: Vec<String>) -> Request {
    Request::Lease(LeaseRequest {
        secrets: vec!["T".into()],
        command: CommandLine {
            path: "/usr/bin/true".into(),
            argv,
            cwd: "/".into(),
        },
        task: None,
        ttl_ms: None,
        masking: true,
        proxy: false,
    })
}

/// A raw connection (as the test, root: the agent takes its own uid and root's) that
/// has said hello.
fn connection(env: &TestEnv) -> std::os::unix::net::UnixStream {
    let mut s = raw_connect(&env.socket());
    raw_hello(&mut s);
    s
}

#[test]
fn what_a_request_brings_into_a_record_is_bounded() {
    let (env, _agent) = setup_with(&[]);
    // 200 KiB of control characters: under the cap for a command line, but six bytes
    // each once escaped in JSON.
    let mut argv = vec!["true".to_owned()];
    argv.extend((0..50).map(|_| "\u{1}".repeat(4096)));
    let mut s = connection(&env);
    write_frame(&mut s, &lease_request(argv.clone())).unwrap();
    assert!(matches!(raw_read(&mut s), Some(Response::Leased(_))));
    let recs = records(&env);
    let line = fs::read_to_string(env.state.join("jitc/audit.log")).unwrap();
    let longest = line.lines().map(str::len).max().unwrap();
    assert!(longest < 80 << 10, "a record of {longest} bytes");
    let granted = recs.iter().find(|r| r["event"] == "lease_granted").unwrap();
    // What was cut is counted and hashed: command, then argv, each NUL-terminated.
    let mut all = b"/usr/bin/true\0".to_vec();
    for a in &argv {
        all.extend_from_slice(a.as_bytes());
        all.push(0);
    }
    assert_eq!(granted["cut"]["bytes"], (all.len() - argv.len() - 1) as u64);
    assert_eq!(granted["cut"]["sha256"], sha256_hex(&all));
    // Over the cap: refused as bad input, in one line that says what to do.
    let mut big = vec!["true".to_owned()];
    big.extend((0..70).map(|_| "x".repeat(4096)));
    let mut s = connection(&env);
    write_frame(&mut s, &lease_request(big)).unwrap();
    match raw_read(&mut s) {
        Some(Response::Error { code, message }) => {
            assert_eq!(code, jitc_protocol::ErrorCode::DataErr);
            assert!(message.contains("at most 256 KiB"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    env.run(&["audit", "verify"], None).ok();
}

#[test]
fn leases_and_waiting_requests_are_capped_per_user() {
    let (env, _agent) = setup_with(&[]);
    env.write_policy("[defaults]\nmax_leases = 2\nmax_pending = 1\n");
    let a = env.spawn(&[
        "exec",
        "-s",
        "T",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 300",
    ]);
    let b = env.spawn(&[
        "exec",
        "-s",
        "T",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 300",
    ]);
    a.expect_stdout("ready");
    b.expect_stdout("ready");
    env.run(&["exec", "-s", "T", "--", "true"], None)
        .code(75)
        .one_line_error()
        .says("max_leases");
    env.run(&["revoke", "--all"], None).ok();
    a.wait();
    b.wait();
    env.write_policy(
        "[defaults]\nmax_pending = 1\n[[rule]]\nsecrets = [\"T\"]\napproval = \"always\"\n",
    );
    let waiting = env.spawn(&["exec", "-s", "T", "--", "true"]);
    let id = waiting.approval_id();
    env.run(&["exec", "-s", "T", "--", "true"], None)
        .code(75)
        .says("max_pending");
    env.run(&["deny", &id.to_string()], None).ok();
    assert_eq!(waiting.wait().code, 77);
}

#[test]
fn listings_too_large_for_one_reply_come_in_pages() {
    let (env, _agent) = setup_with(&[]);
    env.write_policy("[defaults]\nmax_leases = 400\n");
    // 300 leases, each keeping ~4 KiB of command line: well over a 1 MiB frame.
    let held: Vec<_> = (0..300)
        .map(|i| {
            let mut s = connection(&env);
            let argv = vec!["true".to_owned(), format!("{i:04}{}", "y".repeat(4000))];
            write_frame(&mut s, &lease_request(argv)).unwrap();
            assert!(matches!(raw_read(&mut s), Some(Response::Leased(_))));
            s
        })
        .collect();
    let leases = env.json(&["leases"]);
    assert_eq!(leases.as_array().unwrap().len(), 300);
    let table = env.run(&["leases"], None).ok().stdout;
    assert_eq!(table.lines().count(), 301);
    drop(held);
}

#[test]
fn a_flood_of_rotations_is_an_anomaly() {
    let (env, _agent) = setup_with(&["--audit-max-bytes", "8192"]);
    for _ in 0..40 {
        env.run(&["exec", "-s", "T", "--", "true"], None).ok();
    }
    // Wherever it landed: the log rotates on, and rotated files are compressed in the
    // background (`jitc audit --since` reads them all, compressed or not).
    env.run(&["status"], None).ok();
    let flood = env
        .run(
            &["audit", "--json", "--since", "1h", "--event", "anomaly"],
            None,
        )
        .ok()
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .any(|r| r["anomaly"] == "log_rotation");
    assert!(flood, "no log_rotation anomaly");
}

#[test]
fn hanging_up_does_not_skip_the_wrong_passphrase_backoff() {
    let (env, _agent) = setup_with(&[]);
    env.run(&["lock"], None).ok();
    let failures = |env: &TestEnv| {
        fs::read_to_string(env.state.join("jitc/audit.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"unlock_failed\""))
            .count()
    };
    // Five wrong passphrases, each requester hanging up as soon as its failure is on
    // record (inside its backoff).
    for n in 1..=5 {
        let mut s = connection(&env);
        write_frame(
            &mut s,
            &Request::Unlock {
                passphrase: SecretBytes::from_slice(b"wrong-passphrase"),
            },
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while failures(&env) < n {
            assert!(Instant::now() < deadline, "attempt {n} not on record");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(s);
    }
    env.unlock().ok();
    // Each attempt waited out the backoff of the one before, hang-up or not: the
    // unlock came at least 0.1 + 0.2 + 0.3 + 0.4 + 0.5 s after the first failure.
    let recs = records(&env);
    let at = |kind: &str| -> std::time::SystemTime {
        let r = recs.iter().find(|r| r["event"] == kind).unwrap();
        humantime::parse_rfc3339(r["time"].as_str().unwrap()).unwrap()
    };
    let gap = at("unlock").duration_since(at("unlock_failed")).unwrap();
    assert!(gap >= Duration::from_millis(1400), "only {gap:?}");
}

#[test]
fn a_connection_that_keeps_talking_outlives_the_idle_limit_then_goes_once_silent() {
    // The agent's idle timer is moved on only when it fires: it must count from the
    // last request, not from the connection's start, nor run for ever.
    let (env, _agent) = setup_with(&["--connection-timeout", "6s"]);
    let mut s = connection(&env);
    let began = Instant::now();
    // Requests about a second apart, for half as long again as the limit.
    let mut answered = began;
    while began.elapsed() < Duration::from_secs(9) {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            still_answers(&mut s),
            "a talking connection was dropped after {:?}",
            began.elapsed()
        );
        answered = Instant::now();
    }
    expect_let_go(&mut s, answered, Duration::from_secs(6));
}

#[test]
fn idle_time_counts_from_the_push_that_ends_a_lease() {
    // The lease outlives the idle limit: the connection is not idle while it holds it,
    // and from its end (a push, not a request) it has the whole limit again.
    let (env, _agent) = setup_with(&["--connection-timeout", "4s"]);
    let mut s = connection(&env);
    let Request::Lease(mut req) = lease_request(vec!["true".into()]) else {
        unreachable!()
    };
    req.ttl_ms = Some(5_000);
    write_frame(&mut s, &Request::Lease(req)).unwrap();
    assert!(matches!(raw_read(&mut s), Some(Response::Leased(_))));
    let pushed = raw_read(&mut s);
    assert!(
        matches!(pushed, Some(Response::LeaseEnded { .. })),
        "{pushed:?}"
    );
    let ended = Instant::now();
    // Counted from the lease's start instead, the limit is long past: the agent lets
    // go at once. Counted from its end, 3.5 s are left, for a busy machine.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        still_answers(&mut s),
        "dropped {:?} after its lease ended",
        ended.elapsed()
    );
    expect_let_go(&mut s, Instant::now(), Duration::from_secs(4));
}

/// Whether the agent still answers on `s`: a listing asked for and given.
fn still_answers(s: &mut std::os::unix::net::UnixStream) -> bool {
    write_frame(s, &Request::ListLeases { after: 0 }).is_ok()
        && matches!(raw_read(s), Some(Response::Leases { .. }))
}

/// Waits for the agent to let a silent connection go (end of stream): not long before
/// `limit` from `since`, and long before this read would give up.
fn expect_let_go(s: &mut std::os::unix::net::UnixStream, since: Instant, limit: Duration) {
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut buf = Vec::new();
    let ended = s.read_to_end(&mut buf);
    assert!(ended.is_ok(), "a silent connection was kept: {ended:?}");
    // Our clock started after the agent's (it answered, then we read), by as much as
    // this machine kept us waiting: half the limit is the bound, to catch a drop that
    // does not wait for it at all.
    let after = since.elapsed();
    assert!(
        after >= limit / 2,
        "let go {after:?} after the last word, within the {limit:?} limit"
    );
}

#[test]
fn silent_connections_cannot_lock_out_a_human_and_are_let_go() {
    let (env, _agent) = setup_with(&["--max-connections", "64", "--connection-timeout", "3s"]);
    // A lease holder, idle between requests: it is not let go.
    let mut holder = connection(&env);
    write_frame(&mut holder, &lease_request(vec!["true".into()])).unwrap();
    assert!(matches!(raw_read(&mut holder), Some(Response::Leased(_))));
    // Every connection the agent serves, taken by silent peers of this session.
    let mut flood: Vec<_> = (0..64)
        .map(|_| {
            let mut s = raw_connect(&env.socket());
            write_frame(
                &mut s,
                &Request::Hello(jitc_protocol::Hello {
                    protocol_version: jitc_protocol::PROTOCOL_VERSION,
                }),
            )
            .unwrap();
            s
        })
        .collect();
    // A human's `jitc status`, from a session of its own, is still answered.
    let status = env.spawn(&["status"]);
    let out = status
        .wait_at_most(Duration::from_secs(30))
        .expect("jitc status was not answered while silent connections took every slot");
    assert_eq!(out.code, 0, "{out:?}");
    // The silent ones are dropped once idle (end of stream on their side).
    let first = &mut flood[0];
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = first.read_to_end(&mut buf);
    // The holder was not dropped: it still gets answers.
    write_frame(&mut holder, &Request::ListLeases { after: 0 }).unwrap();
    assert!(matches!(
        raw_read(&mut holder),
        Some(Response::Leases { .. })
    ));
}

//! The audit trail fails closed: a log that cannot be written — unwritable, read-only,
//! a disk that fills mid-run — refuses leases and says so, and a failed write leaves
//! the log whole.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;

use jitc_tests::audit::*;
use jitc_tests::*;

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
    let rotated = jitc_protocol::audit_files::rotated_files(&seen.join("audit.log"));
    assert!(!rotated.is_empty(), "rotated on the way");
    // What is on disk is whole: no hole left by a failed write, the chain intact.
    for f in jitc_protocol::audit_files::files_of(&seen.join("audit.log")) {
        let mut text = Vec::new();
        if let Some(mut r) = jitc_protocol::audit_files::open_listed(&f).unwrap() {
            std::io::Read::read_to_end(&mut r, &mut text).unwrap();
        }
        assert!(!text.contains(&0), "a hole in the log");
    }
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
}

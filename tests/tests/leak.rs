//! Leak prevention in `jitc exec`: masking (every encoding, across writes and pauses,
//! large streams), the terminal path, env files, in-memory files, the FIFO mount, the
//! argv tripwire, descriptor hygiene; and `jitc import` / `jitc scan`.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::Stdio;

use jitc_tests::*;
use nix::sys::termios::LocalFlags;

const TOKEN: &str = "tok_9fQ2xLm7Rt4Vb8Nc1Kd6+/=?&";

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("TOKEN", TOKEN);
    env.add("other/key", "ok-2222-other-value");
    (env, agent)
}

/// `sh -c SCRIPT` under `jitc exec -s TOKEN`, everything captured.
fn exec_sh(env: &TestEnv, extra: &[&str], script: &str) -> Run {
    let mut args = vec!["exec", "-s", "TOKEN"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    env.run(&args, None)
}

fn assert_clean(out: &str) {
    assert!(!out.contains(TOKEN), "the value leaked: {out}");
    assert!(
        !out.contains("9fQ2xLm7Rt4Vb8Nc1Kd6"),
        "part of the value leaked: {out}"
    );
}

#[test]
fn every_encoding_is_masked_on_stdout_and_stderr() {
    let (env, _agent) = setup();
    let py = |code: &str| {
        format!(
            "/usr/bin/python3 -c \"import os,sys,json,urllib.parse,base64; v=os.environ['TOKEN']; {code}\""
        )
    };
    let script = [
        "printf 'raw %s\\n' \"$TOKEN\"".to_owned(),
        "printf 'b64 '; printf '%s' \"$TOKEN\" | base64 -w0; echo".to_owned(),
        "printf 'b64-1 '; printf 'x%s' \"$TOKEN\" | base64 -w0; echo".to_owned(),
        "printf 'b64-2 '; printf 'xy%sTAIL' \"$TOKEN\" | base64 -w0; echo".to_owned(),
        "printf 'hex '; printf '%s' \"$TOKEN\" | od -An -tx1 | tr -d ' \\n'; echo".to_owned(),
        py("print('HEX', v.encode().hex().upper())"),
        py("print('url', urllib.parse.quote(v, safe=''))"),
        py("print('json', json.dumps({'t': v}))"),
        py("print('b64url', base64.urlsafe_b64encode(b'..'+v.encode()).decode())"),
        "printf 'stderr %s\\n' \"$TOKEN\" >&2".to_owned(),
    ]
    .join("; ");
    let out = exec_sh(&env, &[], &script).ok();
    assert_clean(&out.stdout);
    assert_clean(&out.stderr);
    for line in out.stdout.lines() {
        assert!(line.contains("<concealed:TOKEN>"), "not masked: {line}");
    }
    assert_eq!(out.stdout.lines().count(), 9);
    assert_eq!(
        out.stderr, "stderr <concealed:TOKEN>\n",
        "stderr is masked on its own"
    );
}

#[test]
fn a_value_split_across_a_pause_is_still_masked() {
    let (env, _agent) = setup();
    let out = exec_sh(
        &env,
        &[],
        "printf 'a:%s' \"$(printf %s \"$TOKEN\" | cut -c1-6)\"; sleep 0.4; printf '%s:b\\n' \"$(printf %s \"$TOKEN\" | cut -c7-)\"",
    )
    .ok();
    assert_eq!(out.stdout, "a:<concealed:TOKEN>:b\n");
}

#[test]
fn output_that_cannot_match_is_not_delayed() {
    let (env, _agent) = setup();
    let bg = env.spawn(&[
        "exec",
        "-s",
        "TOKEN",
        "--",
        "sh",
        "-c",
        "printf 'no secret here\\n'; printf 'tok_9'; exec sleep 30",
    ]);
    // Arrives while the command is still running (and holding "tok_9" back).
    bg.expect_stdout("no secret here\n");
    assert!(
        !bg.stdout.text().contains("tok_9"),
        "a possible prefix is held back"
    );
    env.run(&["revoke", "--all"], None).ok();
    let out = bg.wait();
    // At the end, the held-back bytes that never became a value are released.
    assert_eq!(out.stdout, "no secret here\ntok_9");
}

#[test]
fn overlapping_values_are_both_concealed() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.add("A", "abcd1234");
    env.add("B", "1234wxyz");
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "A",
                "-s",
                "B",
                "--",
                "sh",
                "-c",
                "printf '[%s%s]\\n' \"$A\" \"$(printf %s \"$B\" | cut -c5-)\"",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout, "[<concealed:A><concealed:B>]\n");
}

#[test]
fn a_large_stream_is_masked_throughout() {
    let (env, _agent) = setup();
    // 256 MiB of filler with the value embedded every 32 MiB.
    let script = "i=0; while [ $i -lt 8 ]; do head -c 33554432 /dev/zero | tr '\\0' 'a'; printf '%s' \"$TOKEN\"; i=$((i+1)); done";
    let mut c = env.jitc(&["exec", "-s", "TOKEN", "--", "sh", "-c", script]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (mut total, mut markers) = (0usize, 0usize);
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        // Look across read boundaries: keep a tail as long as a marker.
        let mut window = std::mem::take(&mut tail);
        window.extend_from_slice(&buf[..n]);
        let needle = b"<concealed:TOKEN>";
        markers += window.windows(needle.len()).filter(|w| w == needle).count();
        assert!(
            !window.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "value leaked"
        );
        let keep = window.len().min(needle.len() - 1);
        tail = window[window.len() - keep..].to_vec();
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(markers, 8);
    assert_eq!(total, 8 * 33_554_432 + 8 * "<concealed:TOKEN>".len());
}

#[test]
fn no_masking_passes_output_through() {
    let (env, _agent) = setup();
    let out = exec_sh(&env, &["--no-masking"], "printf %s \"$TOKEN\" | sha256sum").ok();
    assert!(out.stdout.starts_with(&sha256_hex(TOKEN.as_bytes())));
}

#[test]
fn short_values_are_reported_and_refused_when_masking_is_required() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.add("PIN", "123");
    let out = env.run(&["exec", "-s", "PIN", "--", "true"], None).ok();
    assert_eq!(
        out.stderr,
        "jitc: 'PIN' is shorter than 4 bytes, so it is not masked in the output\n"
    );
    env.write_policy("[[rule]]\nsecrets = [\"PIN\"]\nmasking = \"required\"\n");
    env.run(&["exec", "-s", "PIN", "--", "true"], None)
        .code(77)
        .one_line_error()
        .says("shorter than 4 bytes and cannot be masked");
}

#[test]
fn the_terminal_path_masks_keeps_isatty_and_restores_the_terminal() {
    let (env, _agent) = setup();
    let script = "[ -t 0 ] && [ -t 1 ] && echo tty-yes; printf 'v=%s\\n' \"$TOKEN\"; \
                  read line; echo \"got:$line\"; exit 7";
    let mut t = PtySession::spawn(
        &env,
        &jitc_bin(),
        &["exec", "-s", "TOKEN", "--", "sh", "-c", script],
    );
    t.expect("tty-yes");
    t.expect("v=<concealed:TOKEN>");
    // Keys reach the command as typed (our terminal is raw; its pty echoes).
    t.send(b"typed\r");
    t.expect("got:typed");
    assert_eq!(t.wait(), 7, "the command's exit code");
    assert_clean(&t.output.text());
    let flags = t.termios().local_flags;
    assert!(
        flags.contains(LocalFlags::ECHO) && flags.contains(LocalFlags::ICANON),
        "restored"
    );
}

#[test]
fn the_terminal_is_restored_when_jitc_is_signalled() {
    let (env, _agent) = setup();
    let mut t = PtySession::spawn(
        &env,
        &jitc_bin(),
        &[
            "exec",
            "-s",
            "TOKEN",
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    t.expect("ready");
    let raw = t.termios().local_flags;
    assert!(
        !raw.contains(LocalFlags::ECHO),
        "raw while the command runs"
    );
    // jitc is the session leader setsid started; signal it, not the command.
    let jitc_pid = find_child_named(t.pid(), "jitc");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(jitc_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(t.wait(), 42);
    let flags = t.termios().local_flags;
    assert!(flags.contains(LocalFlags::ECHO) && flags.contains(LocalFlags::ICANON));
}

#[test]
fn the_window_size_follows_sigwinch() {
    let (env, _agent) = setup();
    let mut t = PtySession::spawn(
        &env,
        &jitc_bin(),
        &[
            "exec",
            "-s",
            "TOKEN",
            "--",
            "sh",
            "-c",
            "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done",
        ],
    );
    t.expect("ready");
    let status = std::process::Command::new("stty")
        .arg("-F")
        .arg(&t.tty)
        .args(["rows", "42", "cols", "123"])
        .status()
        .unwrap();
    assert!(status.success());
    t.expect("42 123");
    assert_eq!(t.wait(), 0);
}

#[test]
fn under_script_the_exit_code_and_masking_hold() {
    let (env, _agent) = setup();
    let cmd = format!(
        "{} exec -s TOKEN -- sh -c 'test -t 1 && echo on-a-tty; echo \"$TOKEN\"; exit 3'",
        jitc_bin().display()
    );
    let mut c = env.command("script");
    c.args(["-qec", &cmd, "/dev/null"]);
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 3);
    assert!(out.stdout.contains("on-a-tty"), "{}", out.stdout);
    assert!(out.stdout.contains("<concealed:TOKEN>"), "{}", out.stdout);
    assert_clean(&out.stdout);
}

#[test]
fn env_files_resolve_references_and_pass_the_rest() {
    let (env, _agent) = setup();
    let file = env.root().join("app.env");
    std::fs::write(
        &file,
        "# app\nAPI=jitc://TOKEN\nOTHER=jitc://other/key\nMODE=\"debug mode\"\n",
    )
    .unwrap();
    let out = env
        .run(
            &["exec", "--env-file", file.to_str().unwrap(), "--", "sh", "-c",
              "printf %s \"$API\" | sha256sum; printf %s \"$OTHER\" | sha256sum; echo \"mode=$MODE\""],
            None,
        )
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with(&sha256_hex(TOKEN.as_bytes())));
    assert!(lines[1].starts_with(&sha256_hex(b"ok-2222-other-value")));
    assert_eq!(lines[2], "mode=debug mode");
    std::fs::write(&file, "A=1\nB=2\nnot an assignment at all\n").unwrap();
    env.run(
        &["exec", "--env-file", file.to_str().unwrap(), "--", "true"],
        None,
    )
    .code(65)
    .one_line_error()
    .says("line 3 is malformed");
    // A path that is not there is bad input (65), named.
    env.run(
        &["exec", "--env-file", "/nonexistent.env", "--", "true"],
        None,
    )
    .code(65)
    .one_line_error()
    .says("/nonexistent.env");
}

#[test]
fn a_file_secret_lives_in_memory_only() {
    let (env, _agent) = setup();
    let out = env
        .run(
            &["exec", "--file", "CERT=TOKEN", "--", "sh", "-c",
              "echo \"$CERT\"; cat \"$CERT\" | sha256sum; cat \"$CERT\" | sha256sum; readlink \"$CERT\"; echo x >> \"$CERT\" 2>/dev/null || echo sealed"],
            None,
        )
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("/dev/fd/"), "{}", lines[0]);
    assert!(lines[1].starts_with(&sha256_hex(TOKEN.as_bytes())));
    assert_eq!(lines[1], lines[2], "readable twice");
    assert!(lines[3].starts_with("/memfd:jitc:CERT"), "{}", lines[3]);
    assert_eq!(lines[4], "sealed");
    assert!(
        env.files_containing(TOKEN.as_bytes()).is_empty(),
        "nothing on disk"
    );
}

#[test]
fn a_mount_serves_every_reader_and_is_removed() {
    let (env, _agent) = setup();
    let mount = env.root().join("secrets.env");
    let m = mount.to_str().unwrap();
    let expected = format!(
        "TOKEN=\"{}\"\nOTHER=\"ok-2222-other-value\"\n",
        TOKEN.replace('$', "\\$")
    );
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "TOKEN",
                "-e",
                "OTHER=other/key",
                "--mount",
                m,
                "--",
                "sh",
                "-c",
                &format!("test -p {m} && echo fifo; sha256sum < {m}; sha256sum < {m}"),
            ],
            None,
        )
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "fifo");
    assert!(
        lines[1].starts_with(&sha256_hex(expected.as_bytes())),
        "{}",
        lines[1]
    );
    assert_eq!(lines[1], lines[2], "each reader gets it all");
    assert!(!mount.exists(), "removed afterwards");
    // Refused if something is there.
    std::fs::write(&mount, "keep me").unwrap();
    env.run(&["exec", "-s", "TOKEN", "--mount", m, "--", "true"], None)
        .code(65)
        .one_line_error()
        .says("does not exist");
    assert_eq!(std::fs::read(&mount).unwrap(), b"keep me");
    std::fs::remove_file(&mount).unwrap();
    // Removed too when jitc is stopped by a signal.
    let bg = env.spawn(&[
        "exec",
        "-s",
        "TOKEN",
        "--mount",
        m,
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 30",
    ]);
    bg.expect_stdout("ready");
    assert!(mount.exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bg.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = bg.wait();
    assert_eq!(out.code, 143);
    assert!(!mount.exists(), "removed after SIGTERM");
}

#[test]
fn a_value_on_the_command_line_is_refused() {
    let (env, _agent) = setup();
    let marker = env.root().join("ran");
    env.run(
        &[
            "exec",
            "-s",
            "TOKEN",
            "--",
            "sh",
            "-c",
            &format!("touch {}; echo {TOKEN}", marker.display()),
        ],
        None,
    )
    .code(77)
    .one_line_error()
    .says("an argument of the command contains the value of 'TOKEN'");
    assert!(!marker.exists(), "nothing ran");
}

#[test]
fn the_command_inherits_no_agent_descriptor() {
    let (env, _agent) = setup();
    // Sockets (the agent connection) and jitc's own signalfd, inotify or pty master
    // would show here; the test's own descriptors (pipes) may.
    let out = exec_sh(&env, &["--file", "F=other/key"], "ls -l /proc/self/fd/").ok();
    for bad in ["socket:", "anon_inode:", "ptmx"] {
        assert!(
            !out.stdout.contains(bad),
            "the command inherited {bad}: {}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("/memfd:jitc:F"),
        "the --file descriptor is inherited"
    );
}

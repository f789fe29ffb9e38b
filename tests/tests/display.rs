//! What a human approves is what runs, shown so that a requester cannot forge it
//! (issue 9, item 3): `jitc pending`, `jitc approve`, the approver's prompt, `jitc
//! leases` and the `jitc audit` table show the resolved program, quote every argument,
//! escape every control and bidirectional character, cut long command lines with a
//! count, and warn about a program the requester could have put there.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use jitc_tests::*;

/// Characters a requester could use to hide or forge what a person reads.
const DISGUISES: [char; 6] = ['\x1b', '\r', '\u{202e}', '\u{2066}', '\u{7f}', '\u{9b}'];

#[track_caller]
fn assert_undisguised(text: &str) {
    for c in DISGUISES {
        assert!(!text.contains(c), "{c:?} shown raw in:\n{text}");
    }
}

/// A command line meant to fool a reader: it hides the secrets behind "conceal" and
/// overwrites the start of its line, turns text around, and forges a line of its own.
fn hostile_args() -> Vec<String> {
    vec![
        "\x1b[8mhidden\x1b[0m".into(),
        "\rprogram:  /usr/bin/true".into(),
        "x\nsecrets:  none".into(),
        "txt.\u{202e}hs.evil".into(),
        "\u{9b}31m".into(),
        "a".repeat(2000),
    ]
}

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-display-1");
    (env, agent)
}

#[test]
fn pending_approve_and_leases_show_what_runs_without_disguise() {
    let (env, _agent) = setup();
    env.write_policy(
        "[defaults]\napproval_timeout = \"60s\"\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n",
    );
    // A program in a directory the requester can write, called by another name.
    let bin = env.root().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/sh", bin.join("psql")).unwrap();
    fs::set_permissions(bin.join("psql"), fs::Permissions::from_mode(0o755)).unwrap();
    env.give(&bin);
    let psql = bin.join("psql");
    let mut args: Vec<String> = vec![
        "exec".into(),
        "-s".into(),
        "prod/db".into(),
        "--task".into(),
        "backup \u{202e}gnissim".into(),
        "--".into(),
        psql.to_str().unwrap().into(),
        "-c".into(),
        "echo ready; exec sleep 300".into(),
    ];
    args.extend(hostile_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let bg = env.spawn(&refs);
    let id = bg.approval_id();
    let pending = env.run(&["pending"], None).ok().stdout;
    assert_undisguised(&pending);
    assert!(
        pending.contains(&format!("program:  {}", psql.display())),
        "{pending}"
    );
    assert!(pending.contains(r"$'\x1b[8mhidden\x1b[0m'"), "{pending}");
    assert!(
        pending.contains(r"$'\rprogram:  /usr/bin/true'"),
        "{pending}"
    );
    assert!(pending.contains(r"$'x\nsecrets:  none'"), "{pending}");
    assert!(pending.contains(r"txt.\u202ehs.evil"), "{pending}");
    assert!(
        pending.contains("more bytes)"),
        "long argv is cut: {pending}"
    );
    assert!(pending.contains(r"backup \u202egnissim"), "{pending}");
    assert!(
        pending.contains("a directory the requester can write"),
        "{pending}"
    );
    // Each line a reader sees is one the agent wrote: the forged ones are inside
    // quotes, on the command's line.
    assert_eq!(
        pending
            .lines()
            .filter(|l| l.trim_start().starts_with("secrets:"))
            .count(),
        1,
        "{pending}"
    );
    let approved = env.approve(id).ok();
    assert_undisguised(&approved.stderr);
    assert!(
        approved.stderr.contains(r"$'\x1b[8mhidden\x1b[0m'"),
        "{}",
        approved.stderr
    );
    assert!(approved.stderr.contains("WARNING"), "{}", approved.stderr);
    bg.expect_stdout("ready");
    let leases = env.run(&["leases"], None).ok().stdout;
    assert_undisguised(&leases);
    assert!(
        leases.contains("psql (!)"),
        "the warning is flagged: {leases}"
    );
    assert!(leases.contains(r"backup \u202egnissim"), "{leases}");
    env.run(&["revoke", "--all"], None).ok();
    bg.wait();
    let audit = env.run(&["audit"], None).ok().stdout;
    assert_undisguised(&audit);
}

#[test]
fn the_approvers_prompt_cannot_be_forged() {
    let (env, _agent) = setup();
    let approver = env.root().join("approver");
    let prompt = env.root().join("prompt");
    fs::write(
        &approver,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {}\nexit 1\n",
            prompt.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&approver, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&prompt, "").unwrap();
    env.give(&prompt);
    env.write_policy(&format!(
        "[defaults]\napprover = [\"{}\"]\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n",
        approver.display()
    ));
    let mut args: Vec<String> = ["exec", "-s", "prod/db", "--", "/bin/echo"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(hostile_args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run(&refs, None).code(77).says("said no");
    let text = fs::read_to_string(&prompt).unwrap();
    assert_undisguised(&text);
    assert!(
        text.contains("program:  /usr/bin/echo") || text.contains("program:  /bin/echo"),
        "{text}"
    );
    assert!(text.contains(r"$'x\nsecrets:  none'"), "{text}");
    assert!(text.contains("more bytes)"), "{text}");
    // One "secrets:" line: the agent's.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("secrets:")).count(),
        1,
        "{text}"
    );
}

//! What a person reads, pinned: `--help` of every command (found by walking the help
//! itself, so a new command without a snapshot fails), and each documented one-line
//! error with its exit code. After a deliberate change, rewrite the snapshots with
//! `SNAPSHOTS=overwrite cargo test -p jitc-tests --test snapshots` and read the diff.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use jitc_tests::{PASSPHRASE, Run, TestEnv, agentd_bin, jitc_bin, run_with_stdin};

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(name)
}

/// `actual` against the snapshot `name` (exactly, but for line endings).
fn snapshot(name: &str, actual: String) {
    let expected = snapbox::Data::read_from(&snapshot_path(name), None).raw();
    snapbox::Assert::new()
        .action_env("SNAPSHOTS")
        .eq(actual, expected);
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

fn help_of(env: &TestEnv, program: &Path, path: &[String]) -> String {
    let mut c = env.command(program);
    c.args(path).arg("--help");
    let out = run_with_stdin(c, None).ok();
    redact(env, &out.stdout)
}

fn redact(env: &TestEnv, text: &str) -> String {
    text.replace(&env.root().display().to_string(), "[ROOT]")
}

#[test]
fn help_of_every_command() {
    let env = TestEnv::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = Vec::new();
    while let Some(path) = todo.pop() {
        let help = help_of(&env, &jitc_bin(), &path);
        let name = std::iter::once("jitc".to_owned())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("-");
        snapshot(&format!("help/{name}.txt"), help.clone());
        for sub in subcommands(&help) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        seen.push(name);
    }
    assert!(seen.len() > 20, "{seen:?}");
    assert!(seen.iter().any(|s| s == "jitc-policy-explain"), "{seen:?}");
    snapshot("help/jitc-agentd.txt", help_of(&env, &agentd_bin(), &[]));
    // No snapshot is left over from a command that is gone.
    let mut files: Vec<String> = std::fs::read_dir(snapshot_path("help"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = seen
        .iter()
        .map(|s| format!("{s}.txt"))
        .chain(["jitc-agentd.txt".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(files, expected);
}

/// One documented error: what was run, its exit code and its one line.
fn case(env: &TestEnv, log: &mut String, run: Run, args: &[&str], code: i32) {
    let run = run.code(code).one_line_error();
    log.push_str(&redact(
        env,
        &format!(
            "$ jitc {}\nexit {}\n{}\n",
            args.join(" "),
            run.code,
            run.stderr
        ),
    ));
}

fn jitc(env: &TestEnv, log: &mut String, args: &[&str], stdin: Option<&[u8]>, code: i32) {
    case(env, log, env.run(args, stdin), args, code);
}

#[test]
fn each_documented_error_is_one_line_with_its_exit_code() {
    let env = TestEnv::new();
    let mut log = String::new();
    let l = &mut log;
    // 69: nobody answers on the socket named.
    let nobody = env.root().join("nobody.sock");
    let mut c = env.jitc(&["ls"]);
    c.env("JITC_SOCK", &nobody);
    case(&env, l, run_with_stdin(c, None), &["ls"], 69);
    // 2: usage.
    jitc(&env, l, &["add"], None, 2);
    jitc(&env, l, &["exec", "--frobnicate", "--", "true"], None, 2);
    jitc(&env, l, &["revoke", "seven"], None, 2);
    // 65: bad input, checked before anything is asked of the agent.
    let missing = env.root().join("missing.env");
    let missing = missing.to_str().unwrap();
    let nowhere = env.root().join("nowhere");
    let nowhere = nowhere.to_str().unwrap();
    jitc(
        &env,
        l,
        &["exec", "-s", "bad name!", "--", "true"],
        None,
        65,
    );
    jitc(
        &env,
        l,
        &["exec", "--ttl", "5x", "-s", "a", "--", "true"],
        None,
        65,
    );
    jitc(
        &env,
        l,
        &["exec", "-e", "X=jitc:/broken", "--", "true"],
        None,
        65,
    );
    jitc(
        &env,
        l,
        &["exec", "--env-file", missing, "--", "true"],
        None,
        65,
    );
    jitc(&env, l, &["scan", nowhere], None, 65);
    let pass = format!("{PASSPHRASE}\n");
    let pass = pass.as_bytes();
    jitc(
        &env,
        l,
        &["init", "--passphrase-stdin", "--kdf-memory", "1"],
        Some(pass),
        65,
    );
    let _agent = env.start_agent();
    // 1: no vault yet.
    jitc(&env, l, &["unlock", "--passphrase-stdin"], Some(pass), 1);
    env.init();
    env.add("app/key", "app-value-5f1c2e9d");
    env.add("ops/root", "ops-value-77a0b3c4");
    env.run(&["lock"], None).ok();
    // 75: locked.
    jitc(&env, l, &["exec", "-s", "app/key", "--", "true"], None, 75);
    env.unlock().ok();
    // 1: unknown names and ids, a name that exists, a command that does not.
    jitc(&env, l, &["exec", "-s", "nope", "--", "true"], None, 1);
    jitc(&env, l, &["revoke", "999"], None, 1);
    jitc(&env, l, &["approve", "999"], None, 1);
    jitc(&env, l, &["deny", "999"], None, 1);
    jitc(
        &env,
        l,
        &["add", "app/key"],
        Some(b"another-value-123\n"),
        1,
    );
    jitc(
        &env,
        l,
        &["exec", "-s", "app/key", "--", "/no/such/program"],
        None,
        1,
    );
    // 77: refused.
    jitc(
        &env,
        l,
        &["exec", "-s", "app/key", "--", "echo", "ops-value-77a0b3c4"],
        None,
        77,
    );
    jitc(
        &env,
        l,
        &["rm", "app/key", "--passphrase-stdin"],
        Some(b"wrong horse battery staple\n"),
        77,
    );
    jitc(&env, l, &["rm", "app/key"], None, 77);
    env.write_policy(
        "[[rule]]\nsecrets = [\"ops/*\"]\ncommands = [\"/usr/bin/psql\"]\n\n\
         [defaults]\nmax_ttl = \"1h\"\n",
    );
    jitc(&env, l, &["exec", "-s", "ops/root", "--", "true"], None, 77);
    jitc(
        &env,
        l,
        &["exec", "--ttl", "2h", "-s", "app/key", "--", "true"],
        None,
        77,
    );
    // 74: jitc's own output cannot be written.
    let out = env
        .jitc(&["ls"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create("/dev/full").unwrap()))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let full = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    case(&env, l, full, &["ls", ">/dev/full"], 74);
    snapshot("errors.txt", log);
}

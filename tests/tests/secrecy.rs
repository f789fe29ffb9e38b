//! Nothing secret reaches the audit log (issue 9, items 4 and 5): no passphrase —
//! right or wrong, at any command that takes one — even when the command line of a
//! parent holds it; and no value of any secret in the vault, leased or not, put on a
//! command line, in `--task` or in the command's path (or in an encoding). A refusal
//! names a secret only if the request named it: otherwise it would answer guesses
//! about secrets the requester cannot lease. Everything runs as uid 1000.
#![allow(clippy::unwrap_used)]

use std::fs;

use jitc_tests::*;

const LEASED: &str = "leased-value-9c2e11aa";
const OTHER: &str = "other-value-4b7d93ee";

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("app/key", LEASED);
    env.add("ops/root", OTHER);
    (env, agent)
}

fn log(env: &TestEnv) -> String {
    env.run(&["status"], None).ok();
    let mut text = String::new();
    for e in fs::read_dir(env.state.join("jitc")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("audit") {
            text.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

/// `sh -c 'printf "%s\n" PASSPHRASE … | jitc ARGS'`: the passphrase is in the command
/// line of the shell that runs `jitc` (as in `bash -c 'echo "pw" | jitc unlock …'`).
fn piped(env: &TestEnv, lines: &[&str], args: &str) -> Run {
    let mut c = env.command("/bin/sh");
    let quoted: Vec<String> = lines.iter().map(|l| format!("'{l}'")).collect();
    c.arg("-c").arg(format!(
        "printf '%s\\n' {} | {} {args}",
        quoted.join(" "),
        jitc_bin().display()
    ));
    run_with_stdin(c, None)
}

#[test]
fn no_passphrase_reaches_the_log_from_a_parents_command_line() {
    let (env, _agent) = setup();
    env.run(&["lock"], None).ok();
    let wrong = "not-the-passphrase-31";
    piped(&env, &[wrong], "unlock --passphrase-stdin").code(77);
    piped(&env, &[PASSPHRASE], "unlock --passphrase-stdin").ok();
    // approve (wrong and right) of a waiting request.
    env.write_policy("[[rule]]\nsecrets = [\"ops/*\"]\napproval = \"always\"\n");
    let bg = env.spawn(&["exec", "-s", "ops/root", "--", "true"]);
    let id = bg.approval_id();
    piped(&env, &[wrong], &format!("approve {id} --passphrase-stdin")).code(77);
    piped(
        &env,
        &[PASSPHRASE],
        &format!("approve {id} --passphrase-stdin"),
    )
    .ok();
    assert_eq!(bg.wait().code, 0);
    env.write_policy("");
    // Writes that take the passphrase.
    piped(
        &env,
        &[PASSPHRASE, "new-value-00001"],
        "add app/key --replace --passphrase-stdin",
    )
    .ok();
    piped(&env, &[wrong], "rm ops/root --passphrase-stdin").code(77);
    piped(&env, &[PASSPHRASE], "audit accept --passphrase-stdin").ok();
    // A new passphrase, and the old one tried again after it changed.
    let new = "a-brand-new-passphrase-77";
    piped(&env, &[PASSPHRASE, new], "passwd --passphrase-stdin").ok();
    piped(&env, &[PASSPHRASE, new], "passwd --passphrase-stdin").code(77);
    let text = log(&env);
    for secret in [PASSPHRASE, wrong, new] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} is in the log: {leaks:#?}");
    }
    assert!(text.contains("<concealed:passphrase>"), "{text}");
    // The old passphrase no longer opens the vault; the new one does.
    env.run(&["lock"], None).ok();
    env.unlock().code(77);
    env.run(
        &["unlock", "--passphrase-stdin"],
        Some(format!("{new}\n").as_bytes()),
    )
    .ok();
}

#[test]
fn a_new_vaults_passphrase_stays_out_of_the_log() {
    let env = TestEnv::new_as(USER);
    let _agent = env.start_agent();
    piped(
        &env,
        &[PASSPHRASE],
        "init --passphrase-stdin --kdf-memory 8 --kdf-iterations 1",
    )
    .ok();
    let text = log(&env);
    assert!(!text.contains(PASSPHRASE), "{text}");
    assert!(text.contains("<concealed:passphrase>"), "{text}");
}

#[test]
fn a_value_of_any_secret_on_a_command_line_is_refused_and_never_recorded() {
    let (env, _agent) = setup();
    // The value of a secret the request does not lease.
    let out = env
        .run(&["exec", "-s", "app/key", "--", "echo", OTHER], None)
        .code(77)
        .one_line_error();
    assert!(
        out.stderr.contains("a secret in the vault"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("ops/root"),
        "the refusal names it: {}",
        out.stderr
    );
    // In --task, and base64-encoded.
    env.run(
        &[
            "exec",
            "-s",
            "app/key",
            "--task",
            &format!("rotate {OTHER}"),
            "--",
            "true",
        ],
        None,
    )
    .code(77)
    .says("--task");
    let b64 = jitc_protocol::encodings::base64(OTHER.as_bytes(), jitc_protocol::encodings::B64_STD);
    let b64 = String::from_utf8(b64).unwrap();
    env.run(&["exec", "-s", "app/key", "--", "echo", &b64], None)
        .code(77)
        .says("a secret in the vault");
    // A leased one is named (the request named it).
    env.run(&["exec", "-s", "app/key", "--", "echo", LEASED], None)
        .code(77)
        .says("'app/key'");
    // From a parent's command line: refused too, without naming the secret.
    let mut c = env.command("/bin/sh");
    c.arg("-c").arg(format!(
        ": {OTHER}; {} exec -s app/key -- true",
        jitc_bin().display()
    ));
    run_with_stdin(c, None)
        .code(77)
        .says("holds the value of a secret in the vault");
    let text = log(&env);
    for value in [LEASED, OTHER, b64.as_str()] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(value)).collect();
        assert!(leaks.is_empty(), "a value is in the log: {leaks:#?}");
    }
    // Refused records say what they withhold instead of where a value stood. (Other
    // records may conceal: `jitc add` supplied the value, and an ancestor's command
    // line cut short — a CI runner's script — may end in a value's first letters.)
    assert!(
        !text.lines().any(
            |l| (l.contains("lease_denied") || l.contains("\"anomaly\""))
                && l.contains("<concealed:")
        ),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("lease_denied") && l.contains("ops/root")),
        "the log tells which secret a string was"
    );
    let denied: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("lease_denied"))
        .collect();
    assert_eq!(denied.len(), 5, "{text}");
    assert!(
        denied
            .iter()
            .all(|l| l.contains("\"withheld\":\"command, argv")),
        "{denied:#?}"
    );
}

#[test]
fn values_too_short_to_mask_do_not_trip_the_argv_check() {
    let (env, _agent) = setup();
    env.add("port", "443");
    // Masking leaves it alone; so does the check on the command line.
    let out = env
        .run(
            &["exec", "-s", "port", "--", "echo", "listening on 443"],
            None,
        )
        .ok();
    assert!(out.stdout.contains("443"));
}

/// A refused request's record conceals only whole values (review finding): concealing a
/// value's beginning where an argument was cut, or a short value that is a whole
/// argument, would let anything that reads the log check a guess about a secret it
/// cannot lease.
#[test]
fn a_refused_request_does_not_answer_a_guess_in_the_log() {
    let (env, _agent) = setup();
    env.add("pin", "482");
    env.write_policy(
        "[[rule]]\nsecrets = [\"pin\", \"app/*\"]\ncommands = [\"/usr/bin/psql-not-here\"]\n",
    );
    // A short guess as a whole argument.
    env.run(&["exec", "-s", "pin", "--", "echo", "482"], None)
        .code(77);
    // A guess at a value's beginning, at the end of a parent's argument the agent cut
    // (at 256 bytes, `: ` included).
    let guess = &LEASED[..10];
    let long = format!("{}{guess}{}", "x".repeat(244), "z".repeat(40));
    let mut c = env.command("/bin/sh");
    c.arg("-c").arg(format!(
        ": {long}; {} exec -s app/key -- true",
        jitc_bin().display()
    ));
    run_with_stdin(c, None).code(77);
    let text = log(&env);
    assert!(text.matches("lease_denied").count() == 2, "{text}");
    // (Only refused records: `jitc add` supplied the values, and a CI runner's script
    // among the ancestors may end, cut short, in a value's first letters.)
    let denied = || text.lines().filter(|l| l.contains("lease_denied"));
    assert!(!denied().any(|l| l.contains("<concealed:pin>")), "{text}");
    assert!(
        !denied().any(|l| l.contains("<concealed:app/key>")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{guess}…")),
        "the cut argument is not recorded: {text}"
    );
}

/// `sh -c SCRIPT` as the user, `{jitc}` in it standing for the binary.
fn shell(env: &TestEnv, script: &str) -> Run {
    let mut c = env.command("/bin/sh");
    c.arg("-c")
        .arg(script.replace("{jitc}", &jitc_bin().display().to_string()));
    run_with_stdin(c, None)
}

/// A passphrase or value on a shell's command line stays out of every later record and
/// listing of what that shell runs (review findings): the unlock conceals the
/// passphrase in its own record and marks the processes that held it, so the leases and
/// writes that follow from the same shell conceal it too (and `jitc leases` shows it
/// so); `add` conceals the value it stores; and a write from a shell holding a value of
/// the vault is recorded without command lines (concealing the value in place would
/// tell which string was one).
#[test]
fn a_shell_that_held_a_passphrase_or_value_leaks_it_into_no_later_record() {
    let (env, _agent) = setup();
    let added = "brand-new-value-5f31aa07";
    shell(
        &env,
        &format!(
            "printf '{added}' | {{jitc}} add new/x && {{jitc}} add new/x --description 'about {added}'"
        ),
    )
    .ok();
    env.run(&["lock"], None).ok();
    let out = shell(
        &env,
        &format!(
            "printf '%s\\n' '{PASSPHRASE}' | {{jitc}} unlock --passphrase-stdin && \
             {{jitc}} exec -s app/key -- true && \
             {{jitc}} add new/x --description 'a second description' && \
             {{jitc}} exec -s app/key -- {{jitc}} leases --json"
        ),
    )
    .ok();
    assert!(!out.stdout.contains(PASSPHRASE), "{}", out.stdout);
    assert!(
        out.stdout.contains("<concealed:passphrase>"),
        "{}",
        out.stdout
    );
    let text = log(&env);
    for secret in [PASSPHRASE, added] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "in the log: {leaks:#?}");
    }
    for kind in ["\"unlock\"", "\"lease_granted\"", "\"secret_described\""] {
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(&format!("\"event\":{kind}")))
            .unwrap_or_else(|| panic!("no {kind} record: {text}"));
        assert!(line.contains("<concealed:passphrase>"), "{line}");
    }
    let added_line = text
        .lines()
        .find(|l| l.contains("\"secrets\":[\"new/x\"]"))
        .unwrap();
    assert!(added_line.contains("<concealed:new/x>"), "{added_line}");
    // The first description was written from the shell that holds the value.
    let described = text
        .lines()
        .find(|l| l.contains("\"event\":\"secret_described\""))
        .unwrap();
    assert!(described.contains("\"withheld\""), "{described}");
    assert!(!described.contains("\"argv\":[\""), "{described}");
}

/// A canary's record of being added says no more than a real secret's would (the
/// command line that added it excepted): the log is readable by anything running as the
/// user, an injected agent included.
#[test]
fn adding_a_canary_looks_like_adding_a_secret() {
    let (env, _agent) = setup();
    env.run(
        &["add", "--canary", "aws/backup"],
        Some(b"AKIA-fake-7d1e33"),
    )
    .ok();
    let text = log(&env);
    let line = text
        .lines()
        .find(|l| l.contains("\"secrets\":[\"aws/backup\"]"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!line.contains("\"reason\""), "{line}");
}

/// `python3 -c … HELD…` whose child is `jitc ARGS…`: HELD sit in an ancestor's argv.
fn under_parent_holding(env: &TestEnv, held: &[&str], jitc_args: &[&str]) -> Run {
    let mut c = env.command("/usr/bin/python3");
    c.arg("-c")
        .arg("import subprocess,sys; n=int(sys.argv[1]); sys.exit(subprocess.run(sys.argv[2:2+n]).returncode)")
        .arg((jitc_args.len() + 1).to_string())
        .arg(jitc_bin())
        .args(jitc_args)
        .args(held);
    run_with_stdin(c, None)
}

/// Review round 2, finding A: a process that never gave the agent the passphrase
/// cannot test guesses of it through the log — the agent does not look for the
/// passphrase in strings a requester chose (it remembers only the processes that held
/// one that was checked).
#[test]
fn the_log_answers_no_passphrase_guess() {
    let (env, _agent) = setup();
    let guesses = [
        "wrong horse battery staple",
        PASSPHRASE,
        "correct horse battery stapler",
    ];
    under_parent_holding(&env, &guesses, &["exec", "-s", "app/key", "--", "true"]).ok();
    let text = log(&env);
    let granted = text.lines().rfind(|l| l.contains("lease_granted")).unwrap();
    assert!(
        !granted.contains("<concealed:passphrase>"),
        "the record tells which guess was the passphrase: {granted}"
    );
}

/// Finding B: guesses of a value in a requester's chain are answered by a refusal —
/// one bit per request, counted towards `repeated_denials` — and the record carries
/// no command line, so it cannot tell which guess was right.
#[test]
fn guesses_of_a_value_in_the_chain_are_refused_and_not_located() {
    let (env, _agent) = setup();
    env.add("bank/pin", "482913");
    let guesses: Vec<String> = (482900..482950).map(|n| n.to_string()).collect();
    let held: Vec<&str> = guesses.iter().map(String::as_str).collect();
    for _ in 0..3 {
        under_parent_holding(&env, &held, &["exec", "-s", "app/key", "--", "true"])
            .code(77)
            .one_line_error()
            .says("holds the value of a secret in the vault");
    }
    // Without the right one among them: granted.
    let wrong: Vec<String> = (1..50).map(|n| format!("49{n:04}")).collect();
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    under_parent_holding(&env, &wrong, &["exec", "-s", "app/key", "--", "true"]).ok();
    let text = log(&env);
    assert!(!text.contains("<concealed:another secret>"), "{text}");
    let denied: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("lease_denied"))
        .collect();
    assert_eq!(denied.len(), 3, "{text}");
    for d in &denied {
        assert!(!d.contains("482913") && !d.contains("482900"), "{d}");
        assert!(d.contains("\"withheld\""), "{d}");
    }
    assert!(text.contains("\"anomaly\":\"repeated_denials\""), "{text}");
}

/// Finding D: nothing a requester can do cheaply (refused inits, here) makes the agent
/// forget the processes that held the passphrase: a later record of a shell that
/// unlocked with the passphrase on its command line still conceals it.
#[test]
fn refused_inits_cannot_make_the_agent_forget_a_passphrase() {
    use std::io::{BufRead, BufReader, Write};
    let (env, _agent) = setup();
    env.run(&["lock"], None).ok();
    let mut user = env.command("/bin/sh");
    user.arg("-c")
        .arg(format!(
            "echo '{PASSPHRASE}' | {jitc} unlock --passphrase-stdin && echo unlocked && read go && {jitc} exec -s app/key -- true",
            jitc = jitc_bin().display()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut user = spawn(&mut user).unwrap();
    let mut line = String::new();
    BufReader::new(user.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "unlocked\n");
    for i in 0..300 {
        let mut s = raw_connect(&env.socket());
        raw_hello(&mut s);
        let init = jitc_protocol::Request::Init {
            passphrase: jitc_protocol::SecretBytes::new(
                format!("junk-passphrase-{i}").into_bytes(),
            ),
            kdf: jitc_protocol::KdfParams::MIN,
        };
        jitc_protocol::write_frame(&mut s, &init).unwrap();
        let _ = raw_read(&mut s);
    }
    user.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(user.wait().unwrap().success());
    let text = log(&env);
    let leaks: Vec<&str> = text.lines().filter(|l| l.contains(PASSPHRASE)).collect();
    assert!(leaks.is_empty(), "the passphrase is in the log: {leaks:#?}");
    let granted = text.lines().rfind(|l| l.contains("lease_granted")).unwrap();
    assert!(granted.contains("<concealed:passphrase>"), "{granted}");
}

/// Finding G: `jitc policy explain --json` shows the chain as records do: a passphrase
/// an ancestor held (and gave the agent) stays concealed.
#[test]
fn policy_explain_shows_the_chain_as_records_do() {
    let (env, _agent) = setup();
    env.run(&["lock"], None).ok();
    let out = shell(
        &env,
        &format!(
            "echo '{PASSPHRASE}' | {{jitc}} unlock --passphrase-stdin && {{jitc}} policy explain --json -s app/key -- true"
        ),
    )
    .ok();
    assert!(!out.stdout.contains(PASSPHRASE), "{}", out.stdout);
    assert!(
        out.stdout.contains("<concealed:passphrase>"),
        "{}",
        out.stdout
    );
}

/// A connection that leases again and again (an MCP server, a long-lived client): the
/// record of every grant conceals a value's beginning where an argument of the chain was
/// cut, not only the first (the agent remembers per connection which values it has
/// concealed in the chain it shows).
#[test]
fn every_grant_on_a_held_connection_conceals_a_cut_beginning() {
    let (env, _agent) = setup();
    let guess = &LEASED[..10];
    let long = format!("{}{guess}{}", "x".repeat(244), "z".repeat(40));
    let mut c = env.command("/bin/sh");
    c.arg("-c").arg(format!(
        ": {long}; {} jitc {} app/key 1 x4",
        env!("CARGO_BIN_EXE_jitc-lease-bench"),
        env.socket().display()
    ));
    run_with_stdin(c, None).ok();
    let text = log(&env);
    let grants: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("lease_granted"))
        .collect();
    assert_eq!(grants.len(), 5, "{text}");
    let cut = format!("{guess}…");
    for g in &grants {
        assert!(!g.contains(&cut), "a grant shows the cut beginning: {g}");
        assert!(g.contains("<concealed:app/key>"), "{g}");
    }
}

/// A process of the chain names itself with bytes that are not UTF-8 (any program can,
/// with `PR_SET_NAME`, or by its file's name), which `/proc/PID/stat` shows raw: the
/// walk of the requester's ancestry goes on past it, so a process cannot hide its
/// ancestors from the records by its name. Here a copy of `sh` named `sh\xff\xfe`,
/// run as the user, leases through `jitc-lease-bench`.
#[test]
fn a_name_that_is_not_utf8_hides_no_ancestor() {
    use std::os::unix::ffi::OsStrExt;
    let (env, _agent) = setup();
    let sh = env.home.join(std::ffi::OsStr::from_bytes(b"sh\xff\xfe"));
    fs::copy("/bin/sh", &sh).unwrap();
    let mut c = env.command(&sh);
    c.arg("-c").arg(format!(
        "{} jitc {} app/key 1 x1; true",
        env!("CARGO_BIN_EXE_jitc-lease-bench"),
        env.socket().display()
    ));
    run_with_stdin(c, None).ok();
    let text = log(&env);
    let grant = text
        .lines()
        .find(|l| l.contains("lease_granted"))
        .unwrap_or_else(|| panic!("no grant: {text}"));
    let rec: serde_json::Value = serde_json::from_str(grant).unwrap();
    let chain = rec["peer"]["chain"].as_array().unwrap();
    let at = chain
        .iter()
        .position(|p| p["exe"].as_str().is_some_and(|e| e.contains("/sh")))
        .unwrap_or_else(|| panic!("the renamed sh is not in the chain: {grant}"));
    assert!(
        chain.len() > at + 1,
        "the chain stops at the renamed sh: {grant}"
    );
}

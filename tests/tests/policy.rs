//! The policy file: allow-lists, masking, globs and first-match, fail-closed parsing,
//! reload on change, profiles by ancestry, and `jitc policy explain`.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use jitc_tests::*;

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-1");
    env.add("prod/api/key", "api-key-3");
    env.add("dev/x", "dev-value-2");
    (env, agent)
}

#[test]
fn the_command_allow_list_is_checked_against_the_resolved_command() {
    let (env, _agent) = setup();
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"true\", \"/usr/bin/env\"]\n");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(
        &["exec", "-s", "prod/db", "--", "/usr/bin/env", "true"],
        None,
    )
    .ok();
    env.run(&["exec", "-s", "prod/db", "--", "sh", "-c", "true"], None)
        .code(77)
        .one_line_error()
        .says("refused: policy rule 1 lets 'prod/db' go only to true, /usr/bin/env, not to /usr/bin/sh");
    // An absolute entry admits that file only, not another of the same name.
    let elsewhere = env.root().join("bin");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy("/usr/bin/env", elsewhere.join("env")).unwrap();
    let copy = elsewhere.join("env");
    env.run(
        &[
            "exec",
            "-s",
            "prod/db",
            "--",
            copy.to_str().unwrap(),
            "true",
        ],
        None,
    )
    .code(77);
    // Secrets outside the rule are unaffected.
    env.run(&["exec", "-s", "dev/x", "--", "sh", "-c", "true"], None)
        .ok();
    // Bundling a free secret with a guarded one does not dodge the rule.
    env.run(
        &[
            "exec", "-s", "dev/x", "-s", "prod/db", "--", "sh", "-c", "true",
        ],
        None,
    )
    .code(77);
}

#[test]
fn masking_required_refuses_no_masking() {
    let (env, _agent) = setup();
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\nmasking = \"required\"\n");
    env.run(
        &["exec", "--no-masking", "-s", "prod/db", "--", "true"],
        None,
    )
    .code(77)
    .one_line_error()
    .says("rule 1 (for 'prod/db') requires masking; run without --no-masking");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["exec", "--no-masking", "-s", "dev/x", "--", "true"], None)
        .ok();
}

#[test]
fn globs_and_first_match_win() {
    let (env, _agent) = setup();
    env.write_policy(
        r#"
[[rule]]
secrets = ["prod/api/*"]
commands = ["env"]
[[rule]]
secrets = ["prod/*"]
commands = ["true"]
[[rule]]
commands = []
"#,
    );
    // prod/api/key matches rule 1 first (rule 2's * would match it too).
    env.run(&["exec", "-s", "prod/api/key", "--", "env", "true"], None)
        .ok();
    env.run(&["exec", "-s", "prod/api/key", "--", "true"], None)
        .code(77)
        .says("rule 1");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["exec", "-s", "prod/db", "--", "env", "true"], None)
        .code(77)
        .says("rule 2");
    // Everything else falls to rule 3, which allows no command at all.
    env.run(&["exec", "-s", "dev/x", "--", "true"], None)
        .code(77)
        .says("only to no command");
    // Explaining a refusal exits 77, as the lease would.
    let e = env.json_exiting(
        77,
        &[
            "policy",
            "explain",
            "-s",
            "prod/api/key",
            "-s",
            "prod/db",
            "-s",
            "dev/x",
            "--",
            "true",
        ],
    );
    let rules: Vec<u64> = e["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule"].as_u64().unwrap())
        .collect();
    assert_eq!(rules, [1, 2, 3]);
    assert!(e["refusal"].as_str().unwrap().contains("rule 1"));
}

#[test]
fn a_broken_policy_refuses_everything_until_fixed() {
    let (env, _agent) = setup();
    env.run(&["exec", "-s", "dev/x", "--", "true"], None).ok();
    env.write_policy("[defaults]\nttl = \"15m\"\naproval = \"always\"\n");
    env.run(&["exec", "-s", "dev/x", "--", "true"], None)
        .code(77)
        .one_line_error()
        .says("is invalid (line 3: unknown field `aproval`");
    let s = env.status();
    assert!(s["policy"]["error"].as_str().unwrap().contains("line 3"));
    let explained = env
        .run(&["policy", "explain", "-s", "dev/x", "--", "true"], None)
        .code(77);
    assert!(explained.stdout.contains("BROKEN"), "{}", explained.stdout);
    // Fixed: leases flow again, without restarting the agent.
    env.write_policy("[defaults]\nttl = \"15m\"\napproval = \"never\"\n");
    env.run(&["exec", "-s", "dev/x", "--", "true"], None).ok();
    assert_eq!(env.status()["policy"]["error"], serde_json::Value::Null);
    // A policy others could have written is refused the same way.
    std::fs::set_permissions(env.policy_path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    env.run(&["exec", "-s", "dev/x", "--", "true"], None)
        .code(77)
        .says("writable by others");
}

#[test]
fn edits_take_effect_without_a_restart() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\ncommands = []\n");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77);
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"true\"]\n");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    assert!(agent.stderr.text().contains("policy reloaded"));
    // Removing a policy that was in force does not switch it off: every lease is
    // refused until it is back, or a human accepts the defaults.
    std::fs::remove_file(env.policy_path()).unwrap();
    env.run(&["exec", "-s", "prod/db", "--", "sh", "-c", "true"], None)
        .code(77)
        .one_line_error()
        .says("vanished");
    env.run(
        &["policy", "reset", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    )
    .ok();
    env.run(&["exec", "-s", "prod/db", "--", "sh", "-c", "true"], None)
        .ok();
}

/// A copy of sh named `codex`: a stand-in coding agent, matched by ancestry.
fn fake_codex(env: &TestEnv) -> std::path::PathBuf {
    let dir = env.root().join("agentbin");
    std::fs::create_dir_all(&dir).unwrap();
    let codex = dir.join("codex");
    std::fs::copy("/bin/sh", &codex).unwrap();
    codex
}

#[test]
fn a_profile_is_matched_through_a_parent_process() {
    let (env, _agent) = setup();
    env.write_policy(
        r#"
[profiles.agent]
ancestors = ["codex", "claude"]
[[rule]]
secrets = ["prod/*"]
profiles = ["agent"]
commands = ["psql"]
"#,
    );
    // From a plain shell: no profile, no rule, allowed.
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // From under "codex": the agent profile's rule applies.
    let codex = fake_codex(&env);
    let jitc = jitc_bin();
    let mut c = env.command(&codex);
    c.arg("-c")
        .arg(format!("{} exec -s prod/db -- true", jitc.display()));
    run_with_stdin(c, None)
        .code(77)
        .one_line_error()
        .says("only to psql");
    let mut c = env.command(&codex);
    c.arg("-c").arg(format!(
        "{} policy explain --json -s prod/db -- true",
        jitc.display()
    ));
    let e: serde_json::Value =
        serde_json::from_str(&run_with_stdin(c, None).code(77).stdout).unwrap();
    assert_eq!(e["profile"], "agent");
    let chain = e["chain"].as_array().unwrap();
    assert_eq!(chain[0]["argv"][0], jitc.to_str().unwrap());
    assert!(chain.iter().any(|p| p["exe"] == codex.to_str().unwrap()));
    // The lease records the profile and the chain.
    let mut c = env.command(&codex);
    c.arg("-c").arg(format!(
        "{} exec -s dev/x -- sh -c 'echo ready; exec sleep 30'",
        jitc.display()
    ));
    let bg = TestEnv::spawn_command(c);
    bg.expect_stdout("ready");
    let l = &env.json(&["leases"])[0];
    assert_eq!(l["scope"]["profile"], "agent");
    assert!(l["scope"]["chain"].as_array().unwrap().len() >= 3);
    env.run(&["revoke", "--all"], None).ok();
    bg.wait();
}

#[test]
fn explain_exits_as_the_lease_would() {
    let (env, _agent) = setup();
    // Granted: 0. A name the vault does not hold: 1 (the lease would fail so).
    env.run(&["policy", "explain", "-s", "dev/x", "--", "true"], None)
        .ok()
        .stdout
        .contains("granted");
    let out = env
        .run(&["policy", "explain", "-s", "no/such", "--", "true"], None)
        .code(1);
    assert!(
        out.stdout.contains("no secret named 'no/such'"),
        "{}",
        out.stdout
    );
    // Refused: 77.
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"psql\"]\n");
    env.run(&["policy", "explain", "-s", "prod/db", "--", "true"], None)
        .code(77);
}

/// Issue 13, first part: a secret bound with `custody = "required"` is never leased as
/// a value (77), whatever command asks; explain says so; an optional binding changes
/// nothing for a plain lease.
#[test]
fn a_custody_required_credential_is_never_leased_as_a_value() {
    let (env, _agent) = setup();
    env.write_policy(
        "[[credential]]\nsecret = \"prod/api/key\"\nhosts = [\"api.example.com\"]\ncustody = \"required\"\n\n[[credential]]\nsecret = \"dev/x\"\nhosts = [\"dev.example.com\"]\n",
    );
    env.run(&["exec", "-s", "prod/api/key", "--", "true"], None)
        .code(77)
        .one_line_error()
        .says("custody = \"required\"");
    env.run(&["exec", "-s", "dev/x", "--", "true"], None).ok();
    let e = env.json_exiting(
        77,
        &["policy", "explain", "-s", "prod/api/key", "--", "true"],
    );
    assert!(
        e["refusal"].as_str().unwrap().contains("api.example.com"),
        "{e}"
    );
    // A binding that does not parse refuses every lease, with its reason.
    env.write_policy("[[credential]]\nsecret = \"dev/x\"\nhosts = []\n");
    env.run(&["exec", "-s", "dev/x", "--", "true"], None)
        .code(77)
        .says("credential 1: hosts = [] binds no host");
}

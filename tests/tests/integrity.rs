//! The policy and the audit trail hold against a same-user process that edits files
//! (issue 9, items 7 and 8): a policy in force cannot be switched off by moving it
//! away, not even across a restart; a directory others can write refuses it; loads are
//! on record with their digest; a crash cannot hide the last grants, and an agent that
//! did not stop cleanly is an anomaly. Everything runs as uid 1000.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use jitc_tests::*;
use serde_json::Value;

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-integrity-1234");
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

#[test]
fn a_policy_in_force_cannot_be_switched_off_by_moving_it() {
    let (env, agent) = setup();
    let policy = "[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"psql\"]\n";
    env.write_policy(policy);
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .says("only to psql");
    // Its load is on record, with the file's digest.
    let loaded = records(&env);
    let l = loaded
        .iter()
        .rev()
        .find(|r| r["event"] == "policy_loaded")
        .unwrap();
    assert_eq!(l["policy_sha256"], sha256_hex(policy.as_bytes()));
    // Moved away: every lease is refused, saying why and what to do.
    fs::rename(env.policy_path(), env.root().join("moved.toml")).unwrap();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .one_line_error()
        .says("vanished")
        .says("jitc policy reset");
    assert!(records(&env).iter().any(
        |r| r["event"] == "policy_error" && r["reason"].as_str().unwrap().contains("vanished")
    ));
    // Not even a restart of the agent (which anything running as the user can do)
    // brings the defaults back: the vault remembers a policy was in force.
    drop(agent);
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .says("vanished");
    // Only a human can accept the defaults.
    env.run(&["policy", "reset", "--passphrase-stdin"], Some(b"wrong\n"))
        .code(77);
    env.run(
        &["policy", "reset", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    )
    .ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    assert!(records(&env).iter().any(|r| r["event"] == "policy_reset"));
}

#[test]
fn a_policy_directory_others_can_write_is_refused() {
    let (env, _agent) = setup();
    env.write_policy("");
    let dir = env.config.join("jitc");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .says("writable by others");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    // The same up the tree, to $HOME.
    fs::set_permissions(&env.config, fs::Permissions::from_mode(0o777)).unwrap();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(77)
        .says(env.config.to_str().unwrap());
    fs::set_permissions(&env.config, fs::Permissions::from_mode(0o755)).unwrap();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
}

/// Cuts the log back to just before its last `lease_granted`.
fn cut_last_grant(env: &TestEnv) {
    let path = env.state.join("jitc/audit.log");
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains("\"lease_granted\""))
        .unwrap();
    let mut kept = lines[..at].join("\n");
    kept.push('\n');
    fs::write(&path, kept).unwrap();
}

#[test]
fn a_crash_cannot_hide_the_last_grants() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // Killed with its last grant in the log and no checkpoint saved in the vault since.
    agent.kill9();
    cut_last_grant(&env);
    let agent = env.start_agent();
    let out = env.unlock().ok();
    assert!(out.stderr.contains("does not verify"), "{}", out.stderr);
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("checkpoint");
    let recs = records(&env);
    let anomalies: Vec<&str> = recs.iter().filter_map(|r| r["anomaly"].as_str()).collect();
    assert!(anomalies.contains(&"audit_log_tampered"), "{anomalies:?}");
    assert!(anomalies.contains(&"unclean_shutdown"), "{anomalies:?}");
    drop(agent);
}

#[test]
fn removing_or_editing_the_checkpoint_is_caught() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    let sidecar = env.state.join("jitc/audit.checkpoint");
    assert!(sidecar.exists());
    agent.kill9();
    // Cut the log and remove the checkpoint that would tell.
    cut_last_grant(&env);
    fs::remove_file(&sidecar).unwrap();
    let agent = env.start_agent();
    let out = env.unlock().ok();
    assert!(out.stderr.contains("does not verify"), "{}", out.stderr);
    env.run(&["audit", "verify"], None).code(1);
    drop(agent);
    // An edited one does not verify either.
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("x", "value-for-x-0000");
    env.run(&["exec", "-s", "x", "--", "true"], None).ok();
    let sidecar = env.state.join("jitc/audit.checkpoint");
    agent.kill9();
    let mut bytes = fs::read(&sidecar).unwrap();
    for b in bytes.iter_mut().filter(|b| b.is_ascii_digit()).take(3) {
        *b = if *b == b'9' { b'1' } else { *b + 1 };
    }
    fs::write(&sidecar, bytes).unwrap();
    let _agent = env.start_agent();
    let out = env.unlock().ok();
    assert!(out.stderr.contains("does not verify"), "{}", out.stderr);
}

#[test]
fn a_clean_stop_is_not_an_anomaly() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    drop(agent);
    let _agent = env.start_agent();
    env.unlock().ok();
    let recs = records(&env);
    assert!(
        !recs
            .iter()
            .any(|r| r["anomaly"] == "unclean_shutdown" || r["anomaly"] == "audit_log_tampered"),
        "{recs:#?}"
    );
    env.run(&["audit", "verify"], None).ok();
}

/// Killing the agent and appending a `stop` line (as anything running as the user
/// can: lines written while locked carry no tag) does not pass for a clean stop: every
/// stop begins with a keyed `lock`, which cannot be forged.
#[test]
fn a_forged_stop_does_not_hide_a_kill() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    agent.kill9();
    let path = env.state.join("jitc/audit.log");
    let mut text = fs::read_to_string(&path).unwrap();
    let seq = text.lines().count() + 1;
    text.push_str(&format!(
        "{{\"time\":\"2026-11-30T00:00:00.000Z\",\"seq\":{seq},\"event\":\"stop\"}}\n"
    ));
    fs::write(&path, text).unwrap();
    let _agent = env.start_agent();
    let recs = records(&env);
    let unclean = recs
        .iter()
        .find(|r| r["anomaly"] == "unclean_shutdown")
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert!(
        unclean["reason"]
            .as_str()
            .unwrap()
            .contains("not the 'lock'"),
        "{unclean}"
    );
}

/// A vault moved away while unlocked is not replaced by a new one (the user would add
/// secrets to a vault whose passphrase someone else chose); a new vault made once the
/// agent is locked again is an anomaly.
#[test]
fn a_vault_cannot_be_swapped_in_unnoticed() {
    let (env, agent) = setup();
    fs::rename(env.vault(), env.root().join("stolen.jitc")).unwrap();
    env.run(
        &INIT_ARGS,
        Some(format!("attacker-chosen-pass-{}\n", 1).as_bytes()),
    )
    .code(1)
    .one_line_error()
    .says("a vault is unlocked")
    .says("jitc lock");
    // Killed and started again, the agent is locked: init works, and says so loudly.
    agent.kill9();
    let _agent = env.start_agent();
    env.run(&INIT_ARGS, Some(b"attacker-chosen-pass-2\n")).ok();
    let recs = records(&env);
    let replaced = recs
        .iter()
        .find(|r| r["anomaly"] == "vault_replaced")
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert!(
        replaced["reason"]
            .as_str()
            .unwrap()
            .contains("did not run 'jitc init'"),
        "{replaced}"
    );
}

/// Review round 2, finding H: a vault made where one had been is an anomaly even when
/// its log was moved away with it, as long as anything of it is left — here, its
/// backup generation. (A same-user process that removes every trace can replace the
/// vault unnoticed; the README says so.)
#[test]
fn a_replaced_vault_is_noticed_by_what_the_old_one_left() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    agent.kill9();
    let aside = env.home.join("aside");
    fs::create_dir_all(&aside).unwrap();
    env.give(&aside);
    // Its changes since init are in the journal beside it (no compaction yet).
    assert!(env.vault().with_extension("jitc.journal").exists());
    fs::rename(env.vault(), aside.join("vault.jitc")).unwrap();
    for e in fs::read_dir(env.state.join("jitc")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("audit.") {
            fs::rename(e.path(), aside.join(&n)).unwrap();
        }
    }
    let _agent = env.start_agent();
    env.run(&INIT_ARGS, Some(b"attacker-chosen-passphrase\n"))
        .ok();
    let recs = records(&env);
    let replaced = recs
        .iter()
        .find(|r| r["anomaly"] == "vault_replaced")
        .unwrap_or_else(|| panic!("{recs:#?}"));
    assert!(
        replaced["reason"]
            .as_str()
            .unwrap()
            .contains("vault.jitc.journal"),
        "{replaced}"
    );
}

//! Writes need the human (issue 9, item 9): replacing, removing or renaming a secret,
//! and adding one a policy rule guards, take the vault passphrase — or an approval,
//! where the policy asks for one; adding a new unguarded name stays free. And the
//! small writes of item 23: `jitc passwd`, `jitc mv`, `jitc add --description`. Run as
//! uid 1000, from scripts (no terminal to ask on).
#![allow(clippy::unwrap_used)]

use std::fs;

use jitc_tests::*;
use serde_json::Value;

const VALUE: &str = "value-writes-00000001";

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("app/token", VALUE);
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

/// The sha256 of the value `name` holds, as a command sees it.
fn value_hash(env: &TestEnv, name: &str) -> String {
    let var = name.replace(['/', '-'], "_").to_uppercase();
    env.run(
        &[
            "exec",
            "-s",
            name,
            "--",
            "sh",
            "-c",
            &format!("printf %s \"${var}\" | sha256sum"),
        ],
        None,
    )
    .ok()
    .stdout[..64]
        .to_owned()
}

#[test]
fn replacing_or_removing_a_secret_needs_the_passphrase() {
    let (env, _agent) = setup();
    // A prompt-injected agent, with no terminal to ask on, cannot repoint a secret…
    env.run(
        &["add", "app/token", "--replace"],
        Some(b"attacker-value-0001"),
    )
    .code(77)
    .one_line_error()
    .says("replacing the value of 'app/token' needs the vault passphrase");
    env.run(&["rm", "app/token"], None)
        .code(77)
        .says("needs the vault passphrase");
    env.run(&["mv", "app/token", "app/moved"], None)
        .code(77)
        .says("needs the vault passphrase");
    assert_eq!(value_hash(&env, "app/token"), sha256_hex(VALUE.as_bytes()));
    // …nor with a wrong passphrase, which is recorded and slowed down like any.
    env.run(
        &["add", "app/token", "--replace", "--passphrase-stdin"],
        Some(b"wrong-guess\nattacker-value-0001"),
    )
    .code(77)
    .says("wrong passphrase");
    assert_eq!(value_hash(&env, "app/token"), sha256_hex(VALUE.as_bytes()));
    // A plain add of a new name is free.
    env.add("app/new", "another-value-0000001");
    // With the passphrase, it is done, and on record with who did it.
    env.run_as_human(&["add", "app/token", "--replace"], b"replaced-value-00001")
        .ok();
    assert_eq!(
        value_hash(&env, "app/token"),
        sha256_hex(b"replaced-value-00001")
    );
    let recs = records(&env);
    let replaced = recs
        .iter()
        .find(|r| r["event"] == "secret_replaced" && r["decision"].is_null())
        .unwrap();
    assert_eq!(replaced["peer"]["uid"], USER);
    assert!(
        recs.iter()
            .any(|r| r["event"] == "secret_replaced" && r["reason"] == "wrong passphrase")
    );
    env.run_as_human(&["rm", "app/new"], b"").ok();
    assert!(!env.secret_names().contains(&"app/new".to_owned()));
}

#[test]
fn adding_a_name_a_rule_guards_needs_the_human_and_approval_stands_in_where_asked() {
    let (env, _agent) = setup();
    env.write_policy("[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"psql\"]\n");
    env.run(&["add", "prod/db"], Some(b"planted-value-000001"))
        .code(77)
        .says("a policy rule guards it");
    env.run_as_human(&["add", "prod/db"], b"real-db-value-000001")
        .ok();
    // Where the rule asks for approval, a write waits for one instead.
    env.write_policy(
        "[defaults]\napproval_timeout = \"60s\"\n[[rule]]\nsecrets = [\"prod/*\"]\napproval = \"always\"\n",
    );
    let bg = env.spawn(&["rm", "prod/db"]);
    let id = bg.approval_id();
    let pending = env.run(&["pending"], None).ok().stdout;
    assert!(
        pending.contains("change:   removing 'prod/db'"),
        "{pending}"
    );
    env.approve(id).ok();
    assert_eq!(bg.wait().code, 0);
    assert!(!env.secret_names().contains(&"prod/db".to_owned()));
}

#[test]
fn passwd_mv_and_describe() {
    let (env, _agent) = setup();
    let new = "another-long-passphrase-42";
    env.run(
        &["passwd", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n{new}\n").as_bytes()),
    )
    .ok()
    .says("the old one no longer opens the vault");
    env.run(&["lock"], None).ok();
    env.unlock().code(77);
    env.run(
        &["unlock", "--passphrase-stdin"],
        Some(format!("{new}\n").as_bytes()),
    )
    .ok();
    assert!(
        records(&env)
            .iter()
            .any(|r| r["event"] == "passphrase_changed")
    );
    // The new passphrase is what writes need now.
    env.run(
        &["mv", "app/token", "app/renamed", "--passphrase-stdin"],
        Some(format!("{new}\n").as_bytes()),
    )
    .ok();
    let names = env.secret_names();
    assert!(names.contains(&"app/renamed".to_owned()) && !names.contains(&"app/token".to_owned()));
    assert_eq!(
        value_hash(&env, "app/renamed"),
        sha256_hex(VALUE.as_bytes())
    );
    // A description changes without the value being typed again (stdin is empty).
    env.run(
        &["add", "app/renamed", "--description", "the CI token"],
        None,
    )
    .ok()
    .says("updated the description");
    let listed = env.json(&["ls"]);
    assert_eq!(listed[0]["description"], "the CI token");
    assert_eq!(
        value_hash(&env, "app/renamed"),
        sha256_hex(VALUE.as_bytes())
    );
    // A weak passphrase is warned about.
    env.run(
        &["passwd", "--passphrase-stdin"],
        Some(format!("{new}\nshort\n").as_bytes()),
    )
    .ok()
    .says("WARNING");
}

//! Leases: TTLs that end the command, `jitc leases`, `jitc revoke`, and `max_ttl`.
#![allow(clippy::unwrap_used)]

use jitc_tests::*;

const TRAP: &str = "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done";

/// jitc's one line; the group gets SIGTERM, so the shell may add that its `sleep` was
/// terminated.
fn jitc_line(stderr: &str) -> &str {
    stderr.lines().next().unwrap_or("")
}

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", "pw-prod-1");
    env.add("dev/x", "dev-value-2");
    (env, agent)
}

#[test]
fn an_expired_lease_stops_the_command() {
    let (env, _agent) = setup();
    let bg = env.spawn(&["exec", "-s", "dev/x", "--ttl", "1s", "--", "sh", "-c", TRAP]);
    bg.expect_stdout("ready");
    let out = bg.wait();
    assert_eq!(out.code, 42, "the command got SIGTERM: {out:?}");
    assert_eq!(out.stdout, "ready\ngot-term\n");
    assert_eq!(
        jitc_line(&out.stderr),
        "jitc: lease expired after 1s; stopped the command"
    );
    assert_eq!(env.status()["leases"], 0);
}

#[test]
fn the_default_ttl_comes_from_the_policy() {
    let (env, _agent) = setup();
    env.write_policy("[defaults]\nttl = \"1s\"\n");
    let bg = env.spawn(&["exec", "-s", "dev/x", "--", "sh", "-c", TRAP]);
    bg.expect_stdout("ready");
    let out = bg.wait();
    assert_eq!(out.code, 42);
    assert!(
        out.stderr.contains("lease expired after 1s"),
        "{}",
        out.stderr
    );
}

#[test]
fn max_ttl_refuses_longer_leases_and_names_the_limit() {
    let (env, _agent) = setup();
    env.write_policy(
        "[defaults]\nmax_ttl = \"1h\"\n[[rule]]\nsecrets = [\"prod/*\"]\nmax_ttl = \"10m\"\n",
    );
    env.run(&["exec", "-s", "dev/x", "--ttl", "2h", "--", "true"], None)
        .code(77)
        .one_line_error()
        .says("longer than the 1h that the defaults allow; ask for --ttl 1h or less");
    env.run(
        &["exec", "-s", "prod/db", "--ttl", "20m", "--", "true"],
        None,
    )
    .code(77)
    .one_line_error()
    .says("the 10m that rule 1 (for 'prod/db') allows");
    env.run(
        &["exec", "-s", "prod/db", "--ttl", "10m", "--", "true"],
        None,
    )
    .ok();
    env.run(&["exec", "-s", "dev/x", "--ttl", "59m", "--", "true"], None)
        .ok();
    // The default TTL is capped by the rule's shorter maximum, not refused.
    let e = env.json(&["policy", "explain", "-s", "prod/db", "--", "true"]);
    assert_eq!(e["ttl_secs"], 600);
}

#[test]
fn leases_are_listed_without_values() {
    let (env, _agent) = setup();
    let bg = env.spawn(&[
        "exec",
        "-s",
        "prod/db",
        "-s",
        "dev/x",
        "--task",
        "migrate users",
        "--ttl",
        "10m",
        "--",
        "sh",
        "-c",
        TRAP,
    ]);
    bg.expect_stdout("ready");
    let json = env.json(&["leases"]);
    let l = &json.as_array().unwrap()[0];
    assert_eq!(
        l["scope"]["secrets"],
        serde_json::json!(["prod/db", "dev/x"])
    );
    assert_eq!(l["scope"]["task"], "migrate users");
    assert_eq!(l["scope"]["command"], "/usr/bin/sh");
    assert_eq!(l["scope"]["argv"][0], "sh");
    assert_eq!(l["scope"]["pid"], bg.pid());
    assert_eq!(l["scope"]["chain"][0]["pid"], bg.pid());
    assert_eq!(l["ttl_secs"], 600);
    assert_eq!(
        l["expires"].as_u64().unwrap() - l["started"].as_u64().unwrap(),
        600
    );
    let table = env.run(&["leases"], None).ok().stdout;
    assert!(
        table.contains("prod/db,dev/x") && table.contains("migrate users"),
        "{table}"
    );
    for out in [json.to_string(), table] {
        assert!(!out.contains("pw-prod-1") && !out.contains("dev-value-2"));
    }
    env.run(&["revoke", "--all"], None).ok();
    assert_eq!(bg.wait().code, 42);
}

#[test]
fn revoke_one_then_all() {
    let (env, _agent) = setup();
    let first = env.spawn(&["exec", "-s", "dev/x", "--", "sh", "-c", TRAP]);
    first.expect_stdout("ready");
    let second = env.spawn(&["exec", "-s", "prod/db", "--", "sh", "-c", TRAP]);
    second.expect_stdout("ready");
    let ids: Vec<u64> = env
        .json(&["leases"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let first_id = env.json(&["leases"]).as_array().unwrap()[0]["id"]
        .as_u64()
        .unwrap();
    env.run(&["revoke", &first_id.to_string()], None)
        .ok()
        .says("revoked 1 lease");
    let out = first.wait();
    assert_eq!(out.code, 42);
    assert_eq!(
        jitc_line(&out.stderr),
        "jitc: the lease was revoked with 'jitc revoke'; stopped the command"
    );
    assert_eq!(
        env.json(&["leases"]).as_array().unwrap().len(),
        1,
        "the other is untouched"
    );
    env.run(&["revoke", &first_id.to_string()], None)
        .code(1)
        .one_line_error()
        .says("jitc leases");
    env.run(&["revoke"], None).code(2);
    env.run(&["revoke", "--all"], None)
        .ok()
        .says("revoked 1 lease");
    assert_eq!(second.wait().code, 42);
    assert_eq!(env.status()["leases"], 0);
}

#[test]
fn locking_ends_every_lease() {
    let (env, _agent) = setup();
    let a = env.spawn(&["exec", "-s", "dev/x", "--", "sh", "-c", TRAP]);
    let b = env.spawn(&["exec", "-s", "prod/db", "--", "sh", "-c", TRAP]);
    a.expect_stdout("ready");
    b.expect_stdout("ready");
    assert_eq!(env.status()["leases"], 2);
    env.run(&["lock"], None).ok();
    for bg in [a, b] {
        let out = bg.wait();
        assert_eq!(out.code, 42);
        assert_eq!(
            jitc_line(&out.stderr),
            "jitc: the vault was locked; stopped the command"
        );
    }
    assert_eq!(env.status()["leases"], 0);
}

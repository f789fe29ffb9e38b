//! What the audit-trail tests share: the log's path and records, an agent with a vault
//! holding one value, an agent whose log lives on a tmpfs of its own, and waiting for
//! a record.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use crate::{Agent, TestEnv, agentd_bin};

/// The value of `prod/db`, the one secret `setup` stores.
pub const VALUE: &str = "audit-secret-value-7713";

pub fn audit_path(env: &TestEnv) -> PathBuf {
    env.state.join("jitc").join("audit.log")
}

pub fn records(env: &TestEnv) -> Vec<Value> {
    fs::read_to_string(audit_path(env))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn of_kind<'a>(recs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["event"] == kind).collect()
}

pub fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", VALUE);
    (env, agent)
}

/// `setup`, with the agent's local clock reading `clock` (a debug-build hook).
pub fn setup_at(clock: &str) -> (TestEnv, Agent) {
    let env = TestEnv::new();
    env.set_env("JITC_TEST_LOCAL_TIME", clock.to_owned());
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", VALUE);
    (env, agent)
}

/// An agent (started with `args`) whose state directory, the audit log's, is a tmpfs
/// of its own, mounted with `options` in a private mount namespace.
pub fn agent_on_tmpfs(env: &TestEnv, options: &str, args: &[&str]) -> Agent {
    let dir = env.state.join("jitc");
    fs::create_dir_all(&dir).unwrap();
    let mut c = env.command("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o {options},mode=0700 tmpfs {} && exec {} {}",
            dir.display(),
            agentd_bin().display(),
            args.join(" ")
        ));
    Agent::spawn(c).unwrap()
}

/// Waits (following the log with `jitc audit --follow`) for a record of `kind` whose
/// JSON holds `needle`; records of events that have already happened are written
/// without the request waiting for them.
pub fn wait_for_record(env: &TestEnv, kind: &str, needle: &str) -> Value {
    let bg = env.spawn(&["audit", "--follow", "--json", "--event", kind]);
    bg.expect_stdout(needle);
    let text = bg.stdout.text();
    let line = text.lines().find(|l| l.contains(needle)).unwrap();
    serde_json::from_str(line).unwrap()
}

//! `jitc mcp` (issue 12) driven by MCP clients someone else wrote: the official Python
//! SDK (PyPI `mcp`) and TypeScript SDK (npm `@modelcontextprotocol/sdk`), installed by
//! `scripts/test.sh`. The clients run as an ordinary user (uid 1000) against the real
//! agent; every message the server sent is kept and searched for the values.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;

use jitc_tests::audit;
use jitc_tests::*;

const APP: &str = "app-value-51c0e9d2b7a4";
const PROD: &str = "prod-value-0f4e8a6c3155";
const GATED: &str = "gated-value-8d2b4f1a9377";

fn venv_python() -> PathBuf {
    venv_bin("python")
}

fn setup(defaults: &str) -> (TestEnv, Agent, PathBuf) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("app/key", APP);
    env.add("prod/db", PROD);
    env.add("gated/x", GATED);
    env.write_policy(&format!(
        "[defaults]\n{defaults}\n\n[[rule]]\nsecrets = [\"prod/*\"]\ncommands = [\"/nonexistent/psql\"]\n\n[[rule]]\nsecrets = [\"gated/*\"]\napproval = \"always\"\n"
    ));
    let work = env.home.join("work");
    fs::create_dir_all(work.join("tree")).unwrap();
    fs::write(
        work.join("tree/.env"),
        "STRIPE_KEY=sk_live_4eC39HqLyjWDarjtT1zdp7dc\nPORT=8080\n",
    )
    .unwrap();
    fs::create_dir_all(work.join("app")).unwrap();
    fs::write(
        work.join("app/.env"),
        "# the app\nSTRIPE_KEY=sk_live_9a8B7c6D5e4F3g2H1i0J\nPORT=8080\nDB_PASSWORD='hunter2-but-longer-77'\n",
    )
    .unwrap();
    for p in [
        &work,
        &work.join("tree"),
        &work.join("tree/.env"),
        &work.join("app"),
        &work.join("app/.env"),
    ] {
        env.give(p);
    }
    (env, agent, work)
}

fn python_client(env: &TestEnv, work: &std::path::Path, scenario: &[&str]) -> Run {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/py_client.py");
    let mut c = env.command(venv_python());
    c.arg(script)
        .args(scenario)
        .current_dir(work)
        .env("JITC", jitc_bin())
        .env("WORK", work)
        .env("PASSPHRASE", PASSPHRASE)
        .env(
            "VALUES",
            [
                APP,
                PROD,
                GATED,
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "sk_test_added_by_user_123",
                "sk_live_9a8B7c6D5e4F3g2H1i0J",
                "hunter2-but-longer-77",
            ]
            .join(","),
        )
        .env("TRANSCRIPT", work.join("transcript.jsonl"))
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display()),
        );
    run_with_stdin(c, None)
}

#[test]
fn the_python_sdk_uses_every_tool_and_sees_no_value() {
    let (env, _agent, work) = setup("approval_timeout = \"120s\"");
    let out = python_client(&env, &work, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for check in [
        "initialize",
        "tools",
        "list_secrets",
        "run_with_secrets",
        "truncation",
        "refusal",
        "unknown",
        "approval",
        "scan",
        "request_secret",
        "import_env_file",
        "leases",
        "cancellation",
        "start_read_stop",
        "two_clients",
        "exit_on_eof",
        "no_value_in_any_message",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == format!("ok {check}")),
            "{check} not passed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    // The audit trail names the MCP client beside the chain.
    let log = fs::read_to_string(audit::audit_path(&env)).unwrap();
    assert!(
        log.contains("via MCP client 'py-test-client 1.2.3'"),
        "{log}"
    );
    for v in [APP, PROD, GATED] {
        assert!(!log.contains(v));
    }
}

#[test]
fn an_approval_nobody_gives_times_out_with_progress() {
    let (env, _agent, work) = setup("approval_timeout = \"1s\"");
    let out = python_client(&env, &work, &["timeout"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok approval_timeout"), "{}", out.stdout);
}

/// The `node_modules` with the TypeScript SDK that `scripts/test.sh` installed
/// (`JITC_TEST_NODE`).
fn node_modules() -> PathBuf {
    let dir = std::env::var_os("JITC_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-node"));
    let modules = dir.join("node_modules");
    assert!(
        modules.join("@modelcontextprotocol/sdk").exists(),
        "no TypeScript MCP SDK in {}: run scripts/test.sh (it installs it), or set JITC_TEST_NODE",
        dir.display()
    );
    modules
}

#[test]
fn the_typescript_sdk_runs_approves_cancels_and_sees_no_value() {
    let (env, _agent, work) = setup("approval_timeout = \"120s\"");
    // The script beside a link to the SDK, so that Node finds it.
    let dir = env.home.join("ts");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/ts_client.mjs"),
        dir.join("ts_client.mjs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(node_modules(), dir.join("node_modules")).unwrap();
    env.give(&dir);
    let mut c = env.command("node");
    c.arg(dir.join("ts_client.mjs"))
        .current_dir(&work)
        .env("JITC", jitc_bin())
        .env("WORK", &work)
        .env("PASSPHRASE", PASSPHRASE)
        .env("VALUES", [APP, PROD, GATED].join(","))
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display()),
        );
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for check in [
        "initialize_and_tools",
        "list_secrets",
        "run_with_secrets",
        "refusal",
        "approval",
        "cancellation",
        "no_value_in_any_message",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == format!("ok {check}")),
            "{check} not passed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
}

/// A `jitc mcp` that a coding agent starts inside `jitc sandbox` is identified by the
/// sandbox, not by its own command line; the records show the MCP client too.
#[test]
fn jitc_mcp_inside_a_sandbox_gets_the_sandboxs_identity() {
    let (env, _agent, work) = setup("approval_timeout = \"120s\"");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/py_client.py");
    let mut c = env.jitc(&["sandbox", "--"]);
    c.arg(venv_python())
        .arg(script)
        .arg("sandboxed")
        .current_dir(&work)
        .env("JITC", jitc_bin())
        .env("WORK", &work)
        .env("PASSPHRASE", "unused")
        .env("VALUES", APP)
        .env("TRANSCRIPT", work.join("unused"))
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display()),
        );
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok sandboxed"), "{}", out.stdout);
    let recs = audit::records(&env);
    let granted: Vec<_> = audit::of_kind(&recs, "lease_granted");
    assert_eq!(granted.len(), 1, "{granted:#?}");
    let g = granted[0];
    assert_eq!(g["peer"]["sandbox"], 1, "{g}");
    assert_eq!(g["profile"], "agent", "{g}");
    assert!(
        g["task"]
            .as_str()
            .unwrap()
            .starts_with("via MCP client 'sandboxed-agent"),
        "{g}"
    );
}

#[test]
fn runs_are_limited_timed_and_end_with_the_session() {
    let (env, _agent, work) = setup("approval_timeout = \"120s\"");
    let out = python_client(&env, &work, &["limits"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok session_end_stops_started"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("ok max_runs_and_timeout"),
        "{}",
        out.stdout
    );
}

/// A host that clears the environment (Codex passes few variables) still reaches the
/// agent by the default discovery: no `XDG_RUNTIME_DIR`, so `/tmp/jitc-UID` — under a
/// uid of this test's own, so that no other test shares the path.
#[test]
fn jitc_mcp_finds_the_agent_when_the_host_clears_the_environment() {
    const UID: u32 = 1042;
    let env = TestEnv::new_as(UID);
    let bare = |mut c: std::process::Command| {
        c.env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME");
        c
    };
    let _agent = Agent::spawn(bare(env.command(agentd_bin()))).unwrap();
    run_with_stdin(
        bare(env.jitc(&INIT_ARGS)),
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    )
    .ok();
    run_with_stdin(bare(env.jitc(&["add", "app/key"])), Some(APP.as_bytes())).ok();
    let work = env.home.join("work");
    fs::create_dir_all(&work).unwrap();
    env.give(&work);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/py_client.py");
    let mut c = bare(env.command(venv_python()));
    c.arg(script)
        .arg("cleared")
        .current_dir(&work)
        .env("JITC", jitc_bin())
        .env("WORK", &work)
        .env("PASSPHRASE", "unused")
        .env("VALUES", APP)
        .env("TRANSCRIPT", work.join("unused"));
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok cleared_environment"),
        "{}",
        out.stdout
    );
    let _ = run_with_stdin(bare(env.jitc(&["stop"])), None);
}

/// Findings of an adversarial review of `jitc mcp`, each as the exploit it was.
#[test]
fn what_a_command_leaves_behind_ends_and_odd_files_are_refused() {
    let (env, _agent, work) = setup("approval_timeout = \"120s\"");
    let out = python_client(&env, &work, &["review"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for check in [
        "timeout_ends_what_ignores_sigterm",
        "leftovers_end_with_the_call",
        "devices_are_not_env_files",
        "reference_file_not_through_a_symlink",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == format!("ok {check}")),
            "{check} not passed:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
}

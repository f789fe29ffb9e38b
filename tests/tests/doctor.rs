//! `jitc doctor`: passes on a healthy set-up, and names each broken one with the command
//! that fixes it — the real `jitc` against a real agent, as an ordinary user.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use jitc_tests::*;

/// `jitc doctor` in `env` with `jitc` (this build's unless named), its output by check.
fn doctor_with(env: &TestEnv, jitc: &Path, code: i32) -> serde_json::Value {
    let mut c = env.command(jitc);
    c.args(["doctor", "--json"]);
    let out = run_with_stdin(c, None).code(code);
    serde_json::from_str(&out.stdout).unwrap()
}

fn doctor(env: &TestEnv, code: i32) -> serde_json::Value {
    doctor_with(env, &jitc_bin(), code)
}

/// The one check named `name` that failed (there must be exactly one failing).
#[track_caller]
fn failed<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let failing: Vec<&serde_json::Value> = report
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    let hit: Vec<_> = failing.iter().filter(|c| c["check"] == name).collect();
    assert_eq!(hit.len(), 1, "expected '{name}' to fail: {report:#}");
    assert!(hit[0]["fix"].is_string(), "{report:#}");
    hit[0]
}

#[track_caller]
fn only_failure<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let failing = report
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .count();
    assert_eq!(failing, 1, "only '{name}' should fail: {report:#}");
    failed(report, name)
}

fn healthy() -> TestEnv {
    let env = TestEnv::new_as(USER);
    env.init();
    env
}

#[test]
fn a_healthy_set_up_passes_every_check_in_text_and_json() {
    let env = healthy();
    let text = env.run(&["doctor"], None).ok().stdout;
    let lines: Vec<&str> = text.lines().collect();
    for check in [
        "socket",
        "agent",
        "JITC_SOCK",
        "memory",
        "vault",
        "policy",
        "identity",
        "audit",
        "sandbox",
        "mcp",
        "scan",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ok  ") && l.split_whitespace().nth(1) == Some(check)),
            "{check}: {text}"
        );
    }
    assert_eq!(lines.last(), Some(&"all good"), "{text}");
    let report = doctor(&env, 0);
    let memory = report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "memory")
        .unwrap();
    let detail = memory["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("uid {USER}"))
            && detail.contains("not dumpable")
            && detail.contains("no core files")
            && detail.contains("key locked in RAM"),
        "{detail}"
    );
    // The audit trail was verified (the vault is unlocked).
    let audit = report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "audit")
        .unwrap();
    assert!(
        audit["detail"].as_str().unwrap().contains("verifies"),
        "{audit}"
    );
}

#[test]
fn a_socket_directory_others_can_enter_is_named() {
    let env = healthy();
    let dir = env.socket().parent().unwrap().to_owned();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let report = doctor(&env, 1);
    let c = only_failure(&report, "socket");
    assert!(c["detail"].as_str().unwrap().contains("mode 0755"), "{c}");
    assert!(c["fix"].as_str().unwrap().starts_with("chmod 700 "), "{c}");
}

#[test]
fn a_stale_agent_binary_and_another_installations_agent_are_named() {
    let env = healthy();
    // An installation of jitc of its own, whose agent is then upgraded under it.
    let bin = env.root().join("bin");
    fs::create_dir(&bin).unwrap();
    for b in [jitc_bin(), agentd_bin()] {
        let to = bin.join(b.file_name().unwrap());
        fs::copy(&b, &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.run(&["stop"], None).ok();
    let mut c = env.command(bin.join("jitc"));
    c.arg("agent");
    run_with_stdin(c, None).ok();
    // From this build's jitc, the agent is another installation's.
    let report = doctor(&env, 1);
    let c = only_failure(&report, "agent");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("not the jitc-agentd of this jitc"),
        "{c}"
    );
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .contains("jitc stop && jitc agent"),
        "{c}"
    );
    // From its own jitc, it is fine — until the binary is replaced (an upgrade).
    doctor_with(&env, &bin.join("jitc"), 0);
    let agentd = bin.join("jitc-agentd");
    fs::remove_file(&agentd).unwrap();
    fs::copy(agentd_bin(), &agentd).unwrap();
    let report = doctor_with(&env, &bin.join("jitc"), 1);
    let c = only_failure(&report, "agent");
    assert!(c["detail"].as_str().unwrap().contains("stale"), "{c}");
}

#[test]
fn a_group_writable_policy_is_named() {
    let env = healthy();
    env.write_policy("[defaults]\napproval = \"never\"\n");
    fs::set_permissions(env.policy_path(), fs::Permissions::from_mode(0o664)).unwrap();
    let report = doctor(&env, 1);
    let c = failed(&report, "policy");
    assert!(c["detail"].as_str().unwrap().contains("mode 0664"), "{c}");
    assert_eq!(
        c["fix"].as_str().unwrap(),
        format!("chmod go-w {}", env.policy_path().display())
    );
}

#[test]
fn an_audit_log_the_agent_cannot_write_is_named() {
    let env = healthy();
    let log = env.state.join("jitc/audit.log");
    fs::set_permissions(&log, fs::Permissions::from_mode(0o400)).unwrap();
    let report = doctor(&env, 1);
    let c = failed(&report, "audit");
    assert!(
        c["detail"].as_str().unwrap().contains("not writable"),
        "{c}"
    );
    assert_eq!(
        c["fix"].as_str().unwrap(),
        format!("chmod u+w {}", log.display())
    );
}

#[test]
fn a_missing_vault_is_named() {
    let env = TestEnv::new_as(USER);
    env.run(&["agent"], None).ok();
    let report = doctor(&env, 1);
    let c = only_failure(&report, "vault");
    assert!(c["fix"].as_str().unwrap().starts_with("jitc init"), "{c}");
}

#[test]
fn a_locked_vault_with_jitc_sock_pointing_elsewhere_is_named() {
    let env = healthy();
    env.run(&["lock"], None).ok();
    env.set_env("JITC_SOCK", env.root().join("elsewhere.sock"));
    let report = doctor(&env, 1);
    let agent = failed(&report, "agent");
    assert!(
        agent["detail"].as_str().unwrap().contains("elsewhere.sock"),
        "{agent}"
    );
    let sock = failed(&report, "JITC_SOCK");
    assert!(
        sock["detail"]
            .as_str()
            .unwrap()
            .contains(&env.socket().display().to_string()),
        "{sock}"
    );
    assert!(
        sock["fix"].as_str().unwrap().contains("unset JITC_SOCK"),
        "{sock}"
    );
    // Pointed back, the locked vault itself is no problem: it says how to unlock.
    let env2 = healthy();
    env2.run(&["lock"], None).ok();
    let report = doctor(&env2, 0);
    let vault = report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "vault")
        .unwrap();
    assert!(
        vault["detail"].as_str().unwrap().contains("jitc unlock"),
        "{vault}"
    );
}

#[test]
fn an_mcp_entry_running_another_jitc_and_plaintext_credentials_are_named() {
    let env = healthy();
    let codex = env.home.join(".codex");
    fs::create_dir(&codex).unwrap();
    fs::write(
        codex.join("config.toml"),
        "[mcp_servers.jitc]\ncommand = \"/opt/old/bin/jitc\"\nargs = [\"mcp\"]\n",
    )
    .unwrap();
    env.give(&codex);
    env.give(&codex.join("config.toml"));
    // (doctor scans the directory it runs in, but not a whole home.)
    let project = env.home.join("project");
    fs::create_dir(&project).unwrap();
    env.give(&project);
    fs::write(
        project.join(".env"),
        format!("GITHUB_TOKEN=ghp_{}\n", &sha256_hex(b"doctor")[..36]),
    )
    .unwrap();
    let in_project = |code| {
        let mut c = env.command(jitc_bin());
        c.args(["doctor", "--json"]).current_dir(&project);
        let out = run_with_stdin(c, None).code(code);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = in_project(1);
    let mcp = failed(&report, "mcp");
    assert!(
        mcp["detail"]
            .as_str()
            .unwrap()
            .contains("/opt/old/bin/jitc"),
        "{mcp}"
    );
    assert_eq!(
        mcp["fix"].as_str().unwrap(),
        format!(
            "codex mcp remove jitc && codex mcp add jitc -- {} mcp",
            fs::canonicalize(jitc_bin()).unwrap().display()
        )
    );
    let scan = failed(&report, "scan");
    assert!(
        scan["fix"]
            .as_str()
            .unwrap()
            .starts_with("jitc import .env"),
        "{scan}"
    );
    // Pointed at this jitc, the entry passes.
    fs::write(
        codex.join("config.toml"),
        format!(
            "[mcp_servers.jitc]\ncommand = \"{}\"\nargs = [\"mcp\"]\n",
            jitc_bin().display()
        ),
    )
    .unwrap();
    fs::remove_file(project.join(".env")).unwrap();
    in_project(0);
}

#[test]
fn a_cloned_repository_cannot_inject_commands_hang_or_exhaust_doctor() {
    let env = healthy();
    // A project directory with a hostile MCP entry, a credential in a file whose name is
    // a command, and a `.mcp.json` … that is the second of two: the first is a FIFO
    // (would block a plain open) in a subdirectory's config that is read the same way.
    let project = env.home.join("project");
    fs::create_dir(&project).unwrap();
    let name = "x; touch PWNED; \u{1b}]0;pwned\u{7}";
    fs::write(
        project.join(".mcp.json"),
        serde_json::json!({"mcpServers": {name: {"command": "/opt/old/bin/jitc", "args": ["mcp"]}}})
            .to_string(),
    )
    .unwrap();
    let evil_file = "x $(touch PWNED2) .env";
    fs::write(
        project.join(evil_file),
        format!("GITHUB_TOKEN=ghp_{}\n", &sha256_hex(b"doctor2")[..36]),
    )
    .unwrap();
    for p in [
        project.clone(),
        project.join(".mcp.json"),
        project.join(evil_file),
    ] {
        env.give(&p);
    }
    let mut c = env.command(jitc_bin());
    c.args(["doctor", "--json"]).current_dir(&project);
    let out = run_with_stdin(c, None).code(1);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mcp = failed(&report, "mcp");
    let fix = mcp["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(r"claude mcp remove $'x; touch PWNED; \x1b]0;pwned\x07' && "),
        "{fix}"
    );
    assert!(!mcp["detail"].as_str().unwrap().contains('\u{1b}'), "{mcp}");
    let scan = failed(&report, "scan");
    assert_eq!(
        scan["fix"].as_str().unwrap(),
        "jitc import 'x $(touch PWNED2) .env' > .env.jitc, then delete it ('jitc scan' lists them all)"
    );
    // Pasted into a shell, the fixes run nothing but what they say.
    assert!(!project.join("PWNED").exists() && !project.join("PWNED2").exists());

    // A `.mcp.json` that is a FIFO or an endless device is not read at all.
    fs::remove_file(project.join(".mcp.json")).unwrap();
    fs::remove_file(project.join(evil_file)).unwrap();
    nix::unistd::mkfifo(
        &project.join(".mcp.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    env.give(&project.join(".mcp.json"));
    let mut c = env.command(jitc_bin());
    c.args(["doctor", "--json"]).current_dir(&project);
    run_with_stdin(c, None).code(0);
    fs::remove_file(project.join(".mcp.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", project.join(".mcp.json")).unwrap();
    let mut c = env.command(jitc_bin());
    c.args(["doctor", "--json"]).current_dir(&project);
    run_with_stdin(c, None).code(0);
}

#[test]
fn a_symlinked_config_directory_and_a_root_owned_policy_are_healthy() {
    let env = healthy();
    // dotfiles managed by stow: ~/.config/jitc is a link to the real directory.
    let real = env.home.join("dotfiles-jitc");
    fs::create_dir(&real).unwrap();
    fs::write(
        real.join("policy.toml"),
        "[defaults]\napproval = \"never\"\n",
    )
    .unwrap();
    fs::set_permissions(real.join("policy.toml"), fs::Permissions::from_mode(0o644)).unwrap();
    env.give(&real);
    // The file is root's (as under /etc): the agent accepts that, and so does doctor.
    let _ = fs::remove_dir_all(env.config.join("jitc"));
    std::os::unix::fs::symlink(&real, env.config.join("jitc")).unwrap();
    doctor(&env, 0);
}

#[test]
fn an_agent_that_hangs_is_named_not_waited_for() {
    use nix::sys::signal::{Signal, kill};
    let env = healthy();
    let pid = nix::unistd::Pid::from_raw(env.agent_pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let report = doctor(&env, 1);
    kill(pid, Signal::SIGCONT).unwrap();
    let agent = failed(&report, "agent");
    assert!(
        agent["detail"].as_str().unwrap().contains("connection"),
        "{agent}"
    );
}

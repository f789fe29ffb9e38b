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
    let out = proxied(
        &env,
        &[
            "sh",
            "-c",
            "curl -sS --fail https://api.test/hello && echo \"token=$API_TOKEN\" && echo \"proxy=$HTTPS_PROXY\"",
        ],
    )
    .ok();
    assert!(out.stdout.contains("\"ok\":true"), "{}", out.stdout);
    assert!(
        out.stdout.contains("token=jitc-placeholder-"),
        "{}",
        out.stdout
    );
    no_value_in("the command's output", &out.stdout);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        Upstream::header(&reqs[0], "authorization").as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(Upstream::header(&reqs[0], "proxy-authorization").is_none());
    // On record: the grant through the gateway, and the request with its status.
    let rec = audit::wait_for_record(&env, "gateway_request", "/hello");
    let http = &rec["http"];
    assert_eq!(http["host"], "api.test");
    assert_eq!(http["method"], "GET");
    assert_eq!(http["path"], "/hello");
    assert_eq!(http["status"], 200);
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

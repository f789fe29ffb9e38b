//! The order in which a request's faults are decided, stage by stage, against a real
//! agent in-process (its vault, policy and audit log in a temporary directory): each
//! refusal comes from the stage that owns it, with that stage's record, and a later
//! stage never runs for a request an earlier one refused.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use jitc_protocol::{
    AddSecret, CommandLine, ErrorCode, KdfParams, LeaseRequest, Request, Response, SecretBytes,
};
use tokio::sync::mpsc;

use crate::agent::{Agent, Session};
use crate::config::Config;
use crate::peer::Peer;
use crate::vault::VaultFile;

const VALUE: &str = "value-of-db-7f3a91c2";
const CANARY: &str = "value-of-decoy-0c44e1";

struct Fixture {
    _dir: tempfile::TempDir,
    agent: Arc<Agent>,
    policy: PathBuf,
    audit: PathBuf,
}

fn session() -> Session {
    let (pushes, _) = mpsc::unbounded_channel();
    let pid = std::process::id();
    let (exe, argv) = crate::peer::process_info(pid);
    Session::new(
        Peer {
            pid,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            exe,
            argv,
            sandbox: None,
        },
        pushes,
    )
}

async fn call(agent: &Agent, session: &mut Session, request: Request) -> Response {
    match agent.handle(session, request).await.unwrap() {
        crate::agent::Outgoing::Response(r) => r,
        crate::agent::Outgoing::Frame(_) => panic!("a lease is answered with a Response"),
    }
}

/// An agent with an unlocked vault holding `db/main` and the canary `decoy`, and
/// `policy` in force.
async fn fixture(policy: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let config = Config::new(
        root.join("agent.sock"),
        root.join("data/vault.jitc"),
        root.join("policy.toml"),
        root.join("audit.log"),
    );
    let lock = VaultFile::new(config.vault.clone()).lock().unwrap();
    let agent = Arc::new(Agent::new(config, lock));
    // The audit writer, as `server::run` starts it.
    tokio::spawn({
        let agent = agent.clone();
        async move { agent.audit().run_writer().await }
    });
    let mut s = session();
    let init = Request::Init {
        passphrase: SecretBytes::from_slice(b"a passphrase for tests"),
        kdf: KdfParams::MIN,
    };
    assert_eq!(call(&agent, &mut s, init).await, Response::Done);
    for (name, value, canary) in [("db/main", VALUE, false), ("decoy", CANARY, true)] {
        let add = Request::AddSecret(AddSecret {
            name: name.into(),
            value: SecretBytes::from_slice(value.as_bytes()),
            description: None,
            replace: false,
            canary,
            passphrase: None,
        });
        assert_eq!(call(&agent, &mut s, add).await, Response::Done);
    }
    std::fs::write(root.join("policy.toml"), policy).unwrap();
    Fixture {
        policy: root.join("policy.toml"),
        audit: root.join("audit.log"),
        _dir: dir,
        agent,
    }
}

fn lease(secrets: &[&str], argv: &[&str], task: Option<&str>) -> Request {
    Request::Lease(LeaseRequest {
        secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        command: CommandLine {
            path: "/usr/bin/env".into(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: "/".into(),
        },
        task: task.map(str::to_owned),
        ttl_ms: None,
        masking: true,
        proxy: false,
    })
}

/// The records written so far, parsed.
fn records(f: &Fixture) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&f.audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn last_denial(f: &Fixture) -> serde_json::Value {
    records(f)
        .into_iter()
        .rev()
        .find(|r| r["event"] == "lease_denied")
        .expect("a lease_denied record")
}

fn refused(r: &Response) -> (ErrorCode, String) {
    match r {
        Response::Error { code, message } => (*code, message.clone()),
        other => panic!("not refused: {other:?}"),
    }
}

/// A rule that refuses everything to `/usr/bin/env` (it pins another command) and asks
/// approval: every later stage would refuse too, so only order decides.
const STRICT: &str =
    "[[rule]]\nsecrets = [\"*\"]\ncommands = [\"/usr/bin/psql-not-here\"]\napproval = \"always\"\n";

#[tokio::test]
async fn a_malformed_request_is_refused_first_and_recorded_without_its_names() {
    let f = fixture(STRICT).await;
    let mut s = session();
    // Malformed (a name with a space), unknown, a canary, refused by the policy, and a
    // value in argv: intake decides.
    let r = call(
        &f.agent,
        &mut s,
        lease(&["bad name", "nope", "decoy"], &["env", VALUE], None),
    )
    .await;
    let (code, _) = refused(&r);
    assert_eq!(code, ErrorCode::DataErr);
    let d = last_denial(&f);
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed request"),
        "{d}"
    );
    assert!(!d.to_string().contains("bad name"), "{d}");
    assert!(!d.to_string().contains(VALUE), "{d}");
    // No later stage ran (the policy would have refused with its own reason); the
    // canary was noticed all the same: asking for it is the tell.
    wait_for_canary(&f).await;
}

#[tokio::test]
async fn an_unknown_name_comes_before_the_policy() {
    let f = fixture(STRICT).await;
    let mut s = session();
    let r = call(
        &f.agent,
        &mut s,
        lease(&["nope", "decoy"], &["env", VALUE], None),
    )
    .await;
    let (code, message) = refused(&r);
    assert_eq!(code, ErrorCode::Failure);
    assert!(message.contains("nope"), "the requester is told: {message}");
    let d = last_denial(&f);
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .starts_with("no secret by a name"),
        "{d}"
    );
    assert_eq!(
        d["secrets"],
        serde_json::json!(["decoy"]),
        "unknown names left out"
    );
    wait_for_canary(&f).await;
}

#[tokio::test]
async fn a_canary_is_noticed_even_when_the_policy_refuses() {
    let f = fixture(STRICT).await;
    let mut s = session();
    let r = call(&f.agent, &mut s, lease(&["decoy"], &["env"], None)).await;
    let (code, message) = refused(&r);
    assert_eq!(code, ErrorCode::Refused);
    assert!(
        message.contains("psql-not-here"),
        "the policy decided: {message}"
    );
    wait_for_canary(&f).await;
}

/// The canary anomaly is recorded later than the refusal is answered: waits for it.
async fn wait_for_canary(f: &Fixture) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !records(f).iter().any(|r| r["anomaly"] == "canary") {
        assert!(std::time::Instant::now() < deadline, "no canary anomaly");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_policy_comes_before_a_value_in_argv_and_that_before_approval() {
    let f = fixture(STRICT).await;
    let mut s = session();
    // Refused by the policy and carrying a value: the policy's refusal is the answer
    // (it does not tell whether the string was a value).
    let r = call(&f.agent, &mut s, lease(&["db/main"], &["env", VALUE], None)).await;
    let (_, message) = refused(&r);
    assert!(message.contains("psql-not-here"), "{message}");
    let d = last_denial(&f);
    assert!(!d.to_string().contains(VALUE), "{d}");
    // Allowed by the policy but asking approval: the value in argv refuses before
    // anything waits for a human.
    std::fs::write(
        &f.policy,
        "[defaults]\napproval_timeout = \"1h\"\n[[rule]]\nsecrets = [\"*\"]\napproval = \"always\"\n",
    )
    .unwrap();
    let r = call(&f.agent, &mut s, lease(&["db/main"], &["env", VALUE], None)).await;
    let (code, message) = refused(&r);
    assert_eq!(code, ErrorCode::Refused);
    assert!(message.contains("'db/main'"), "{message}");
    assert!(
        f.agent.approvals_mut().is_empty(),
        "nothing waited for approval"
    );
}

#[tokio::test]
async fn a_clean_request_reaches_approval_and_waits_there() {
    let f = fixture("[[rule]]\nsecrets = [\"*\"]\napproval = \"always\"\n").await;
    let agent = f.agent.clone();
    let waiting = tokio::spawn(async move {
        let mut s = session();
        call(&agent, &mut s, lease(&["db/main"], &["env"], None)).await
    });
    // The event: the request shows as pending.
    let id = loop {
        if let Some(id) = f.agent.approvals_mut().first_id() {
            break id;
        }
        tokio::task::yield_now().await;
    };
    let mut human = session();
    assert_eq!(
        call(&f.agent, &mut human, Request::Deny { id }).await,
        Response::Done
    );
    let (code, _) = refused(&waiting.await.unwrap());
    assert_eq!(code, ErrorCode::Refused);
    assert_eq!(last_denial(&f)["event"], "lease_denied");
}

/// A held connection whose chain shows a value's beginning where an argument was cut:
/// after a process of the chain is marked (a passphrase was checked from it, which
/// replaces its shown form), the next grant of the same values on that connection still
/// conceals the cut beginning (review finding: the per-connection memory of what was
/// concealed went stale).
#[tokio::test]
async fn a_mark_after_a_grant_does_not_bring_a_cut_beginning_back() {
    let f = fixture("[[rule]]\nsecrets = [\"*\"]\napproval = \"never\"\n").await;
    let extra = [
        "--pw=Qsomepass-1234".to_owned(),
        format!("{}value-of-db-7f\u{2026}", "x".repeat(200)),
    ];
    let mut s = session();
    s.peer.argv.extend(extra.iter().cloned());
    let r = call(&f.agent, &mut s, lease(&["db/main"], &["env"], None)).await;
    assert!(matches!(r, Response::Leased(_)), "{r:?}");
    // Another connection from the same process gives a passphrase: the process is marked.
    let mut s2 = session();
    s2.peer.argv.extend(extra.iter().cloned());
    let _ = f.agent.hiding_passphrases(&mut s2, &[b"Qsomepass-1234"]);
    let r = call(&f.agent, &mut s, lease(&["db/main"], &["env"], None)).await;
    assert!(matches!(r, Response::Leased(_)), "{r:?}");
    let grants: Vec<String> = records(&f)
        .into_iter()
        .filter(|r| r["event"] == "lease_granted")
        .map(|r| r["peer"].to_string())
        .collect();
    assert_eq!(grants.len(), 2);
    for g in &grants {
        assert!(!g.contains("value-of-db-7f\u{2026}"), "{g}");
    }
}

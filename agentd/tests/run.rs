//! `run(listener, agent, shutdown)` driven in-process with a shutdown future the test
//! controls: graceful shutdown is exercised, not assumed.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use jitc_agentd::vault::VaultFile;
use jitc_agentd::{Agent, Config, run};
use jitc_protocol::{
    AddSecret, CommandLine, Hello, KdfParams, LeaseRequest, PROTOCOL_VERSION, Request, Response,
    SecretBytes, decode, read_frame, write_frame,
};

fn call(s: &mut UnixStream, req: &Request) -> Response {
    write_frame(s, req).unwrap();
    decode(&read_frame(s).unwrap().unwrap()).unwrap()
}

#[tokio::test]
async fn shutdown_ends_every_lease_then_locks_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let config = Config::new(
        sock.clone(),
        dir.path().join("data/vault.jitc"),
        dir.path().join("policy.toml"),
        dir.path().join("audit.log"),
    );
    let lock = VaultFile::new(config.vault.clone()).lock().unwrap();
    let agent = Arc::new(Agent::new(config, lock));
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(listener, agent.clone(), async {
        let _ = stopped.await;
    }));

    // A client holding a lease, on a plain blocking socket.
    let mut held = tokio::task::spawn_blocking(move || {
        let mut s = UnixStream::connect(&sock).unwrap();
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        });
        assert!(matches!(call(&mut s, &hello), Response::Welcome(_)));
        let init = Request::Init {
            passphrase: SecretBytes::from_slice(b"pass"),
            kdf: KdfParams::MIN,
        };
        assert_eq!(call(&mut s, &init), Response::Done);
        let add = Request::AddSecret(AddSecret {
            name: "A".into(),
            value: SecretBytes::from_slice(b"value"),
            description: None,
            replace: false,
            canary: false,
            passphrase: None,
        });
        assert_eq!(call(&mut s, &add), Response::Done);
        let lease = Request::Lease(LeaseRequest {
            secrets: vec!["A".into()],
            command: CommandLine {
                path: "/bin/true".into(),
                argv: vec!["true".into()],
                cwd: "/".into(),
            },
            task: None,
            ttl_ms: None,
            masking: true,
            proxy: false,
        });
        match call(&mut s, &lease) {
            Response::Leased(g) => assert_eq!(g.values[0].value.expose(), b"value"),
            other => panic!("{other:?}"),
        }
        s
    })
    .await
    .unwrap();
    assert!(agent.vault_slot().await.is_some());
    assert_eq!(agent.leases_mut().len(), 1);

    stop.send(()).unwrap();
    let pushed = tokio::task::spawn_blocking(move || {
        let first: Response = decode(&read_frame(&mut held).unwrap().unwrap()).unwrap();
        let then = read_frame(&mut held).unwrap();
        (first, then.is_none())
    })
    .await
    .unwrap();
    assert_eq!(
        pushed,
        (
            Response::LeaseEnded {
                lease: 1,
                reason: "the agent shut down".into()
            },
            true
        ),
        "the holder hears why, then the connection closes"
    );
    server.await.unwrap();
    assert!(agent.vault_slot().await.is_none(), "keys wiped on shutdown");
    assert_eq!(agent.leases_mut().len(), 0);
}

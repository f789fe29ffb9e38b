//! Formats pinned by files written by earlier builds: today's code must open a
//! version-1 vault and verify an audit log segment exactly as they were written, and a
//! single changed byte anywhere in the segment must not verify.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use jitc_agentd::audit::chain::{derive_key, parse, unseal};
use jitc_agentd::audit::verify::verify_files;
use jitc_agentd::vault::Vault;

/// Written by `jitc init` (KDF 8 MiB, 1 pass) and two `jitc add`s, at format version 1.
const VAULT_V1: &str = "vault-v1.jitc";
const VAULT_PASSPHRASE: &[u8] = b"golden fixture passphrase";
/// Written by the audit writer keyed with `AUDIT_VAULT_KEY` (see `write_audit_fixture`).
const AUDIT_V1: &str = "audit-v1.log";
const AUDIT_VAULT_KEY: [u8; 32] = [0x5a; 32];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_version_1_vault_opens_with_its_passphrase() {
    let bytes = std::fs::read(fixture(VAULT_V1)).unwrap();
    assert_eq!(&bytes[..4], b"JITC", "the magic");
    let vault = Vault::open(&bytes, VAULT_PASSPHRASE).unwrap();
    let list = vault.list();
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "db/main"]);
    assert_eq!(list[0].description.as_deref(), Some("the API token"));
    assert!(list.iter().all(|s| !s.canary));
    assert_eq!(
        vault.open_value("db/main").unwrap().expose(),
        b"golden-value-one-1111"
    );
    assert_eq!(
        vault.open_value("api").unwrap().expose(),
        b"golden-value-two-2222"
    );
    // And not with another passphrase, nor after any change to its key slot.
    assert!(Vault::open(&bytes, b"golden fixture passphrasE").is_err());
    for at in 0..bytes.len().min(128) {
        let mut edited = bytes.clone();
        edited[at] ^= 0x01;
        assert!(
            Vault::open(&edited, VAULT_PASSPHRASE).is_err(),
            "byte {at} of the header changed and the vault still opened"
        );
    }
}

/// The keyed line the vault's checkpoint would remember: the last one of the segment.
fn last_keyed(text: &str) -> (u64, [u8; 32]) {
    let last = text.lines().last().unwrap();
    let (body, tag) = unseal(last);
    (parse(&body).unwrap().seq, tag.unwrap())
}

fn verify(text: &[u8], checkpoint: (u64, [u8; 32])) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, text).unwrap();
    let opened = vec![(path.clone(), jitc_protocol::audit_files::open_log(&path))];
    verify_files(opened, &derive_key(&AUDIT_VAULT_KEY), &[checkpoint], None).problem
}

#[test]
fn an_audit_segment_verifies_and_no_single_byte_can_change() {
    let text = std::fs::read_to_string(fixture(AUDIT_V1)).unwrap();
    assert!(text.lines().count() >= 7, "{text}");
    let checkpoint = last_keyed(&text);
    assert_eq!(verify(text.as_bytes(), checkpoint), None);
    let bytes = text.as_bytes();
    for at in 0..bytes.len() {
        for replacement in [bytes[at] ^ 0x01, b' '] {
            if replacement == bytes[at] {
                continue;
            }
            let mut edited = bytes.to_vec();
            edited[at] = replacement;
            assert!(
                verify(&edited, checkpoint).is_some(),
                "byte {at} ({:?} → {:?}) changed and the log still verified",
                bytes[at] as char,
                replacement as char
            );
        }
    }
    // A wrong key verifies nothing either.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, &text).unwrap();
    let report = verify_files(
        vec![(path.clone(), jitc_protocol::audit_files::open_log(&path))],
        &derive_key(&[0x5b; 32]),
        &[],
        None,
    );
    assert!(report.problem.is_some());
}

/// Writes `tests/fixtures/audit-v1.log` with the writer of this build. Run it only when
/// the format changes on purpose (and say so in the commit):
/// `cargo test -p jitc-agentd --test golden -- --ignored write_audit_fixture`.
#[tokio::test]
#[ignore = "writes the fixture"]
async fn write_audit_fixture() {
    use jitc_agentd::audit::{Audit, AuditConfig, Event};
    use jitc_protocol::kinds::EventKind;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let audit = std::sync::Arc::new(Audit::start(AuditConfig {
        path: path.clone(),
        sync: true,
        max_bytes: 1 << 20,
    }));
    tokio::spawn({
        let audit = audit.clone();
        async move { audit.run_writer().await }
    });
    audit
        .record(Event::new(EventKind::Start).reason("golden fixture writer"))
        .await
        .unwrap();
    audit.set_key(Some(&AUDIT_VAULT_KEY));
    let on = |kind, name: &str| Event {
        secrets: vec![name.to_owned()],
        lease: Some(1),
        ..Event::new(kind)
    };
    let events = [
        Event::new(EventKind::Unlock),
        on(EventKind::SecretAdded, "db/main"),
        on(EventKind::LeaseGranted, "db/main").reason("ttl 60s"),
        on(EventKind::LeaseDenied, "api").reason("refused: the policy says no"),
        on(EventKind::LeaseEnded, "db/main").reason("the command exited (0)"),
        Event::new(EventKind::Lock),
    ];
    for event in events {
        audit.record(event).await.unwrap();
    }
    audit.flush().await;
    std::fs::copy(&path, fixture(AUDIT_V1)).unwrap();
}

//! The writer in-process, against real files in a temporary directory: rotation, a
//! failed write (the chain goes back, what nobody waited for is written later), and
//! resuming after a crash tore the last line.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::derive_key;
use super::verify::verify_files;
use super::{Audit, AuditConfig, Event, KEEP, Retention};

const VAULT_KEY: [u8; 32] = [7; 32];

/// An audit trail at `path`, its writer running, keyed as an unlocked vault keys it.
fn start(path: &Path, max_bytes: u64) -> Arc<Audit> {
    let audit = Arc::new(Audit::start(AuditConfig {
        path: path.to_path_buf(),
        sync: true,
        max_bytes,
    }));
    tokio::spawn({
        let audit = audit.clone();
        async move { audit.run_writer().await }
    });
    audit.set_key(Some(&VAULT_KEY));
    audit
}

fn event(n: usize) -> Event {
    Event::new(jitc_protocol::kinds::EventKind::LeaseEnded).reason(format!("record number {n}"))
}

/// The whole log checks out (every file, oldest first).
fn verifies(audit: &Audit, path: &Path) {
    let report = verify_files(
        audit.open_files(false),
        &derive_key(&VAULT_KEY),
        &[],
        Some((path, KEEP)),
    );
    assert_eq!(report.problem, None, "{report:?}");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every line of every file, oldest first (compressed ones decompressed).
fn every_line(audit: &Audit) -> Vec<String> {
    let mut all = Vec::new();
    for (_, opened) in audit.open_files(false) {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut opened.unwrap(), &mut t).unwrap();
        all.extend(t.lines().map(str::to_owned));
    }
    all
}

/// Waits until every rotated file is compressed (the agent does it in the background).
fn all_compressed(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while jitc_protocol::audit_files::rotated_files(path)
        .iter()
        .any(|r| !r.compressed)
    {
        assert!(std::time::Instant::now() < deadline, "never compressed");
        std::thread::yield_now();
    }
}

fn log_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.log")
}

#[tokio::test]
async fn a_full_log_rotates_and_the_chain_goes_on_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let audit = start(&path, 2048);
    for n in 0..60 {
        audit.record(event(n)).await.unwrap();
    }
    assert!(super::files_of(&path).len() > 3, "it never rotated");
    verifies(&audit, &path);
    // Every record is somewhere, once, in order.
    let all = every_line(&audit);
    let numbers: Vec<usize> = all
        .iter()
        .filter_map(|l| l.split("record number ").nth(1))
        .map(|r| r.split('"').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, (0..60).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_write_goes_back_and_what_nobody_waited_for_is_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let audit = start(&path, 1 << 20);
    audit.record(event(0)).await.unwrap();
    let before = audit.state().last_seq;
    // The log's path now leads to a device that takes no byte.
    std::fs::rename(&path, dir.path().join("aside")).unwrap();
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    audit.record_later(event(1));
    let refused = audit.record(event(2)).await.unwrap_err();
    assert!(
        refused.message.contains("cannot write"),
        "{}",
        refused.message
    );
    assert_eq!(
        audit.state().last_seq,
        before,
        "the chain went on past a failed write"
    );
    assert!(audit.state().error.is_some());
    // Back to a real file: the record nobody waited for is written with the next one;
    // the one that was refused never is.
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(dir.path().join("aside"), &path).unwrap();
    audit.record(event(3)).await.unwrap();
    assert_eq!(audit.state().error, None);
    let text = lines(&path).join("\n");
    assert!(text.contains("record number 1"), "{text}");
    assert!(!text.contains("record number 2"), "{text}");
    assert!(text.find("record number 1") < text.find("record number 3"));
    verifies(&audit, &path);
}

#[tokio::test]
async fn a_line_torn_by_a_crash_is_cut_off_and_the_chain_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    {
        let audit = start(&path, 1 << 20);
        for n in 0..3 {
            audit.record(event(n)).await.unwrap();
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"time\":\"2026-11-30T00:00:00.000Z\",\"seq\":4,\"ev");
    std::fs::write(&path, &bytes).unwrap();
    let audit = start(&path, 1 << 20);
    audit.record(event(3)).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("\"ev\n"),
        "the torn line is still there: {text}"
    );
    assert!(text.ends_with("}\n"));
    verifies(&audit, &path);
}

#[tokio::test]
async fn rotated_files_are_compressed_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let audit = start(&path, 4096);
    for n in 0..80 {
        audit.record(event(n)).await.unwrap();
    }
    all_compressed(&path);
    let rotated = jitc_protocol::audit_files::rotated_files(&path);
    assert!(rotated.len() >= 3, "{rotated:?}");
    let raw: u64 = 4096 * rotated.len() as u64;
    let packed: u64 = rotated
        .iter()
        .map(|r| std::fs::metadata(&r.path).unwrap().len())
        .sum();
    assert!(packed * 3 < raw, "compressed {packed} of about {raw}");
    verifies(&audit, &path);
    let numbers = every_line(&audit)
        .iter()
        .filter(|l| l.contains("record number"))
        .count();
    assert_eq!(numbers, 80);
}

#[tokio::test]
async fn retention_prunes_the_oldest_and_verify_accepts_only_what_it_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let audit = start(&path, 2048);
    audit.set_retention(Retention {
        bytes: 6 * 1024,
        days: None,
    });
    for n in 0..120 {
        audit.record(event(n)).await.unwrap();
    }
    all_compressed(&path);
    let lines = every_line(&audit);
    let first = serde_json::from_str::<serde_json::Value>(&lines[0]).unwrap();
    assert!(first["seq"].as_u64().unwrap() > 1, "nothing was pruned");
    assert!(
        lines.iter().any(|l| l.contains("\"pruned_through\"")),
        "no line says what was pruned"
    );
    let total: u64 = super::files_of(&path)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(total <= 6 * 1024 + 4096, "kept {total} bytes");
    verifies(&audit, &path);
    // One more file removed by hand is not retention's doing.
    let oldest = jitc_protocol::audit_files::rotated_files(&path)[0]
        .path
        .clone();
    std::fs::remove_file(oldest).unwrap();
    let report = verify_files(
        audit.open_files(false),
        &derive_key(&VAULT_KEY),
        &[],
        Some((&path, KEEP)),
    );
    let problem = report.problem.unwrap_or_default();
    assert!(problem.contains("older files were removed"), "{problem}");
}

#[tokio::test]
async fn retention_by_age_prunes_files_older_than_its_days() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let audit = start(&path, 2048);
    // Records of 100 days ago (a record keeps the time it was given), then today's.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(100 * 86_400);
    let old = humantime::format_rfc3339_millis(old).to_string();
    for n in 0..40 {
        let mut e = event(n);
        e.time = old.clone();
        audit.record(e).await.unwrap();
    }
    all_compressed(&path);
    let before = jitc_protocol::audit_files::rotated_files(&path);
    assert!(before.len() >= 3);
    // A file's mtime is nobody's word: made old, a recent file is not pruned for it.
    for n in 40..60 {
        audit.record(event(n)).await.unwrap();
    }
    all_compressed(&path);
    let recent = jitc_protocol::audit_files::rotated_files(&path)
        .pop()
        .unwrap()
        .path;
    std::fs::File::options()
        .write(true)
        .open(&recent)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    audit.set_retention(Retention {
        bytes: Retention::DEFAULT_BYTES,
        days: Some(90),
    });
    // At the next rotation the old ones go; the rest stay.
    let mut n = 60;
    while before.iter().any(|r| r.path.exists()) {
        audit.record(event(n)).await.unwrap();
        n += 1;
        assert!(n < 400, "never pruned");
    }
    assert!(recent.exists(), "pruned by its mtime");
    verifies(&audit, &path);
}

#[tokio::test]
async fn a_restart_after_a_rotation_whose_new_file_never_began_resumes_from_the_zst() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    {
        let audit = start(&path, 2048);
        for n in 0..30 {
            audit.record(event(n)).await.unwrap();
        }
    }
    all_compressed(&path);
    // As if the agent died between a rotation and the new file's first line.
    let last_seq = |a: &Audit| a.state().last_seq;
    std::fs::remove_file(&path).unwrap();
    let audit = start(&path, 2048);
    let resumed = last_seq(&audit);
    assert!(
        resumed > 0,
        "the chain did not resume from the compressed file"
    );
    audit.record(event(30)).await.unwrap();
    verifies(&audit, &path);
}

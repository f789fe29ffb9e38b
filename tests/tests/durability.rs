//! Nothing acknowledged is lost: restarts, crashes in the middle of a save, damaged
//! files, and a second agent reaching for the same vault.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::time::Duration;

use jitc_tests::*;

/// A new vault in `env` holding A and B, its agent stopped (the vault locked on disk,
/// the two saves in its journal).
fn with_a_and_b(env: &TestEnv) {
    let agent = env.start_agent();
    env.init();
    env.add("A", "value-a");
    env.add("B", "value-b");
    agent.stop();
}

#[test]
fn secrets_survive_a_restart() {
    let env = TestEnv::new();
    with_a_and_b(&env);
    let _agent = env.start_agent();
    env.run(&["ls"], None).code(75);
    env.unlock().ok();
    assert_eq!(env.secret_names(), ["A", "B"]);
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "B",
                "--",
                "sh",
                "-c",
                "printf %s \"$B\" | sha256sum",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.starts_with(&sha256_hex(b"value-b")));
}

#[test]
fn killing_the_agent_during_add_never_loses_an_acknowledged_secret() {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    agent.stop();
    let mut acknowledged: Vec<String> = Vec::new();
    // The last round lets the add finish before the kill, so that at least one
    // acknowledged secret is checked however busy the machine (the others land wherever
    // the kill falls).
    for i in 0..25u64 {
        let agent = env.start_agent();
        env.unlock().ok();
        let name = format!("S{i}");
        let mut add = env.jitc(&["add", &name]);
        // Explicit socket: a client that finds the agent dead must not start another.
        add.env("JITC_SOCK", env.socket())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = add.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"v").unwrap();
        let done = if i == 24 {
            Some(child.wait().unwrap())
        } else {
            // Spread the kill across the request: before, during and after the save.
            std::thread::sleep(Duration::from_micros(i * 250));
            None
        };
        agent.kill9();
        let status = match done {
            Some(s) => s,
            None => child.wait().unwrap(),
        };
        if status.success() {
            acknowledged.push(name);
        }
        // The vault must open after every crash, and hold everything acknowledged.
        let _agent = env.start_agent();
        env.unlock().ok();
        let present = env.secret_names();
        for n in &acknowledged {
            assert!(
                present.contains(n),
                "acknowledged secret {n} lost after crash {i}"
            );
        }
    }
    eprintln!(
        "{} of 25 adds acknowledged before the kill",
        acknowledged.len()
    );
    assert!(!acknowledged.is_empty(), "some adds should have completed");
    let leftovers: Vec<_> = fs::read_dir(env.data.join("jitc"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files cleaned up: {leftovers:?}");
}

#[test]
fn a_damaged_vault_is_told_apart_from_a_wrong_passphrase() {
    let env = TestEnv::new();
    // Every save writes a snapshot, as before the journal: this test is about the
    // snapshot and its backup (the journal's damage has its own test).
    env.set_env("JITC_TEST_COMPACT_AT", "0");
    let _agent = env.start_agent();
    env.init();
    env.add("A", "value-a");
    env.run(&["lock"], None).ok();
    let good = fs::read(env.vault()).unwrap();

    env.run(&["unlock", "--passphrase-stdin"], Some(b"not it\n"))
        .code(77)
        .one_line_error()
        .says("wrong passphrase");

    // A flipped bit in the sealed body.
    let mut body = good.clone();
    let last = body.len() - 1;
    body[last] ^= 0x01;
    fs::write(env.vault(), &body).unwrap();
    env.unlock()
        .code(65)
        .one_line_error()
        .says("vault.jitc.bak");
    // The same with a flipped bit in the header: damage, not a wrong passphrase.
    let mut head = good.clone();
    head[30] ^= 0x01;
    fs::write(env.vault(), &head).unwrap();
    env.unlock()
        .code(65)
        .one_line_error()
        .says("vault.jitc.bak");
    // Cut short.
    fs::write(env.vault(), &good[..good.len() / 2]).unwrap();
    env.unlock()
        .code(65)
        .one_line_error()
        .says("vault.jitc.bak");
    // Not a vault at all.
    fs::write(env.vault(), b"DATABASE_URL=postgres://\n").unwrap();
    env.unlock()
        .code(65)
        .one_line_error()
        .says("not a jitc vault");

    // The backup the message names is the previous generation, and opens.
    fs::copy(env.backup(), env.vault()).unwrap();
    env.unlock().ok();
    // The snapshot before the last one (the lock's save wrote the last).
    assert_eq!(env.secret_names(), ["A"]);
    fs::write(env.vault(), &good).unwrap();
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    assert_eq!(env.secret_names(), ["A"]);
}

#[test]
fn a_second_agent_on_the_same_vault_is_refused() {
    let env = TestEnv::new();
    let first = env.start_agent();
    env.init();
    let other_sock = env.runtime.join("other").join("agent.sock");
    let mut c = env.command(agentd_bin());
    c.arg("--socket")
        .arg(&other_sock)
        .stdout(std::process::Stdio::null());
    let out = run_with_stdin(c, None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&format!(
            "another jitc-agentd (pid {}) is using the vault",
            first.pid
        )),
        "{}",
        out.stderr
    );
    assert!(!other_sock.exists());
    env.run(&["status"], None).ok();
}

#[test]
fn a_live_agent_is_not_stolen_and_a_stale_socket_is_replaced() {
    let env = TestEnv::new();
    let first = env.start_agent();
    let out = run_with_stdin(env.command(agentd_bin()), None);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    assert_eq!(env.agent_pid(), Some(first.pid));
    // A crash leaves the socket file behind; the next agent replaces it.
    first.kill9();
    assert!(env.socket().exists());
    assert_eq!(env.agent_pid(), None);
    let second = env.start_agent();
    assert_eq!(env.agent_pid(), Some(second.pid));
}

/// Crashes the agent at each step of a save (debug builds die on the spot when
/// `JITC_TEST_CRASH_AT` names the step): an append to the journal, and a compaction
/// (a snapshot written, the journal removed). The vault must open afterwards, holding
/// either the old state or the new one — with what the journal held before the
/// compaction, and the next change appended after whatever the crash left — and no
/// temp file may survive the restart.
#[test]
fn a_crash_at_every_step_of_a_save_leaves_a_whole_vault() {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    // In the journal, not the snapshot: a compaction must carry it over.
    env.add("BEFORE", "old");
    agent.stop();
    assert!(journal(&env).exists());
    for (step, compact, saved) in [
        ("mid-journal-write", false, false),
        ("after-journal-write", false, true),
        ("after-journal-sync", false, true),
        ("after-temp-write", true, false),
        ("after-temp-sync", true, false),
        ("after-backup-link", true, false),
        ("after-backup", true, false),
        ("after-rename", true, true),
        ("after-snapshot", true, true),
    ] {
        let mut c = env.command(agentd_bin());
        c.env("JITC_TEST_CRASH_AT", step);
        if compact {
            c.env("JITC_TEST_COMPACT_AT", "0");
        }
        let mut agent = Agent::spawn(c).unwrap();
        env.unlock().ok();
        let name = format!("NEW_{}", step.replace('-', "_").to_uppercase());
        let mut add = env.jitc(&["add", &name]);
        add.env("JITC_SOCK", env.socket());
        let out = run_with_stdin(add, Some(b"v"));
        assert_ne!(out.code, 0, "{step}: the agent died before acknowledging");
        let status = agent.wait().unwrap();
        assert!(!status.success(), "{step}: the agent crashed");

        let agent = env.start_agent();
        env.unlock().ok();
        let names = env.secret_names();
        assert!(names.contains(&"BEFORE".to_owned()), "{step}: {names:?}");
        assert_eq!(names.contains(&name), saved, "{step}: {names:?}");
        // The next change lands after whatever the crash left, and survives a restart.
        env.add("AFTER", "next");
        agent.stop();
        let _agent = env.start_agent();
        env.unlock().ok();
        let names = env.secret_names();
        assert!(names.contains(&"AFTER".to_owned()), "{step}: {names:?}");
        assert_eq!(names.contains(&name), saved, "{step}: {names:?}");
        env.run_as_human(&["rm", "AFTER"], b"").ok();
        let temps: Vec<_> = fs::read_dir(env.data.join("jitc"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(temps.is_empty(), "{step}: {temps:?}");
        // Leave the vault without the new name for the next step.
        if saved {
            env.run_as_human(&["rm", &name], b"").ok();
        }
    }
}

fn journal(env: &TestEnv) -> std::path::PathBuf {
    env.vault().with_extension("jitc.journal")
}

/// A journal's records bound to their places: a record damaged in the middle (a good
/// one after it) refuses the unlock with what to do, never drops acknowledged changes
/// silently; a stale journal (the snapshot put back from its backup) is not applied.
#[test]
fn a_damaged_journal_is_refused_and_a_restored_snapshot_ignores_a_stale_one() {
    let env = TestEnv::new();
    with_a_and_b(&env);
    let good = fs::read(journal(&env)).unwrap();
    // The first record: its header is 26 bytes, then a 4-byte length, then the sealed
    // bytes; one flipped there, with B's record (and the lock's) after it.
    let mut bad = good.clone();
    bad[26 + 4 + 30] ^= 0x01;
    fs::write(journal(&env), &bad).unwrap();
    let _agent = env.start_agent();
    env.unlock()
        .code(65)
        .one_line_error()
        .says("journal fails authentication")
        .says("vault.jitc.journal aside");
    // Damage with a good record after it is refused: moved aside as told, the vault
    // as of its snapshot (no secrets yet).
    fs::write(journal(&env), &bad).unwrap();
    fs::rename(
        journal(&env),
        env.vault().with_extension("jitc.journal.aside"),
    )
    .unwrap();
    env.unlock().ok();
    assert!(env.secret_names().is_empty());
    env.run(&["lock"], None).ok();
    fs::remove_file(journal(&env)).ok();
    fs::write(journal(&env), &good).unwrap();
    env.unlock().ok();
    assert_eq!(env.secret_names(), ["A", "B"]);
    env.run(&["lock"], None).ok();
    // A snapshot of another generation (here: a new vault's) does not take the journal.
    let snapshot = fs::read(env.vault()).unwrap();
    let other = TestEnv::new();
    let a2 = other.start_agent();
    other.init();
    a2.stop();
    fs::write(env.vault(), fs::read(other.vault()).unwrap()).unwrap();
    env.unlock().ok();
    assert!(env.secret_names().is_empty());
    assert!(!journal(&env).exists(), "the stale journal is removed");
    env.run(&["lock"], None).ok();
    drop(snapshot);
}

/// A journal edited behind the agent (as uid 1000, the agent's own user) so that a
/// record's length no longer frames it — the shape a power cut can also leave.
#[test]
fn an_unexplained_journal_tail_is_kept_and_said() {
    let env = TestEnv::new_as(USER);
    with_a_and_b(&env);
    let good = fs::read(journal(&env)).unwrap();
    let _agent = env.start_agent();
    // The first record's length made shorter, or absurd: no crash leaves that (nor a
    // power cut that wrote the end of an append but not its head, which reads the
    // same). The vault opens without what follows — said, as an anomaly — and the
    // bytes are kept beside the journal; they used to be dropped without a word.
    for len in [60u32, u32::MAX] {
        let mut bad = good.clone();
        bad[26..30].copy_from_slice(&len.to_be_bytes());
        fs::write(journal(&env), &bad).unwrap();
        env.unlock().ok();
        assert!(env.secret_names().is_empty());
        env.run(&["lock"], None).ok();
        let dir = env.vault().parent().unwrap().to_path_buf();
        let kept: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("vault.jitc.journal.dropped-")
            })
            .map(|e| e.path())
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(
            fs::read(&kept[0]).unwrap(),
            bad[26..],
            "the bytes are kept whole"
        );
        fs::remove_file(&kept[0]).unwrap();
        let recs = audit::records(&env);
        let said = recs
            .iter()
            .rev()
            .find(|r| r["anomaly"] == "unclean_shutdown")
            .unwrap_or_else(|| panic!("{recs:#?}"));
        let reason = said["reason"].as_str().unwrap();
        assert!(reason.contains("no record a crash cuts short"), "{reason}");
        assert!(reason.contains(&kept[0].display().to_string()), "{reason}");
    }
}

/// The golden fixture: a vault (with its audit log) written by the version-1 jitc.
/// It opens as it is; its first save writes a version-2 snapshot, keeping the
/// version-1 file as the backup; and from then on changes go to the journal.
#[test]
fn a_version_1_vault_opens_and_becomes_version_2() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vault-v1");
    let env = TestEnv::new();
    let v1 = fs::read(fixture.join("vault.jitc")).unwrap();
    assert_eq!(&v1[..10], b"JITCVLT\0\0\x01", "the fixture is version 1");
    for (file, dir) in [
        ("vault.jitc", env.data.join("jitc")),
        ("audit.log", env.state.join("jitc")),
        ("audit.checkpoint", env.state.join("jitc")),
    ] {
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::copy(fixture.join(file), dir.join(file)).unwrap();
        fs::set_permissions(dir.join(file), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let agent = env.start_agent();
    env.unlock().ok();
    assert_eq!(env.secret_names(), ["API_TOKEN", "DB_PASSWORD"]);
    let listed = env.json(&["ls"]);
    assert_eq!(listed[1]["description"], "written by the version-1 jitc");
    env.run(&["audit", "verify"], None).ok();
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "DB_PASSWORD",
                "--",
                "sh",
                "-c",
                "printf %s \"$DB_PASSWORD\" | sha256sum",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.starts_with(&sha256_hex(b"golden-v1-value-7f3a")));
    env.add("NEW", "after-migration");
    let v2 = fs::read(env.vault()).unwrap();
    assert_eq!(&v2[..10], b"JITCVLT\0\0\x02", "migrated to version 2");
    assert_eq!(
        fs::read(env.backup()).unwrap(),
        v1,
        "the version-1 file is the backup"
    );
    assert!(journal(&env).exists(), "later changes are journaled");
    agent.stop();
    let _agent = env.start_agent();
    env.unlock().ok();
    assert_eq!(env.secret_names(), ["API_TOKEN", "DB_PASSWORD", "NEW"]);
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "API_TOKEN",
                "-s",
                "NEW",
                "--",
                "sh",
                "-c",
                "printf %s \"$API_TOKEN$NEW\" | sha256sum",
            ],
            None,
        )
        .ok();
    assert!(
        out.stdout
            .starts_with(&sha256_hex(b"tok-v1-19c2after-migration"))
    );
    env.run(&["audit", "verify"], None).ok();
}

/// Review finding: a journal changed behind the running agent (a byte appended, or
/// the file removed) must not make the user's later changes vanish at the next unlock.
/// The agent refuses to append to a journal that is not as it left it, and writes a
/// snapshot instead.
#[test]
fn a_journal_changed_behind_the_agent_loses_none_of_the_changes_after() {
    for tamper in ["append", "remove"] {
        let env = TestEnv::new_as(USER);
        let _agent = env.start_agent();
        env.init();
        env.add("leaked", "old-value");
        env.add("kept", "v");
        let j = journal(&env);
        match tamper {
            "append" => {
                let mut f = fs::OpenOptions::new().append(true).open(&j).unwrap();
                std::io::Write::write_all(&mut f, b"\0").unwrap();
            }
            _ => fs::remove_file(&j).unwrap(),
        }
        // The user, later: removes the leaked secret and adds its replacement.
        env.run_as_human(&["rm", "leaked"], b"").ok();
        env.add("rotated", "new-value");
        env.run(&["lock"], None).ok();
        env.unlock().ok();
        assert_eq!(
            env.secret_names(),
            ["kept", "rotated"],
            "{tamper}: changes made after the tampering were lost"
        );
    }
}

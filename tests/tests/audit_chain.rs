//! The audit trail's tamper evidence: verification against edits, drops, reorders,
//! insertions, forged lines and a cut-off tail; the checkpoint in the vault; rotation
//! and new logs, each file staying checkable.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;

use jitc_tests::audit::*;
use jitc_tests::*;
use serde_json::Value;

#[test]
fn verify_passes_untouched_and_names_the_first_bad_line() {
    let (env, _agent) = setup();
    for _ in 0..3 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
    let path = audit_path(&env);
    let good = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let write = |ls: &[&str]| fs::write(&path, ls.join("\n") + "\n").unwrap();
    let check = |what: &str, needle: &str| {
        let out = env.run(&["audit", "verify"], None);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{what}: {}", out.stderr);
    };

    let mut edited = lines.clone();
    let changed = edited[4].replace("/usr/bin/true", "/usr/bin/tru3");
    edited[4] = &changed;
    write(&edited);
    check("edit", "audit.log line 5");

    let mut dropped = lines.clone();
    dropped.remove(3);
    write(&dropped);
    check("drop", "audit.log line 4");

    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    write(&swapped);
    check("reorder", "audit.log line 3");

    let mut inserted = lines.clone();
    inserted.insert(5, lines[2]);
    write(&inserted);
    check("insert", "audit.log line 6");

    write(&lines[..lines.len() - 2]);
    check("truncation", "cut off");

    fs::write(&path, &good).unwrap();
    env.run(&["audit", "verify"], None).ok();
}

#[test]
fn a_cut_off_tail_is_caught_after_a_restart_by_the_vault_checkpoint() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // The vault is saved (with the checkpoint) by this add.
    env.add("other", "other-value-99");
    agent.stop();
    let path = audit_path(&env);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Cut back to before the add (which the checkpoint covers).
    let cut = lines
        .iter()
        .position(|l| l.contains("\"secret_added\"") && l.contains("\"other\""))
        .unwrap();
    fs::write(&path, lines[..cut].join("\n") + "\n").unwrap();
    let _agent = env.start_agent();
    // The person unlocking is told at once, and `jitc status` keeps saying it.
    env.unlock()
        .ok()
        .says("WARNING: the audit log does not verify");
    assert!(env.status()["audit"]["tampered"].is_string());
    // The unlock itself notices, and says so where a person will see it.
    let a = wait_for_record(&env, "anomaly", "audit_log_tampered");
    assert!(a["reason"].as_str().unwrap().contains("cut off"), "{a}");
    assert!(
        env.run(&["audit", "--anomalies"], None)
            .ok()
            .stdout
            .contains("audit_log_tampered")
    );
    let out = env.run(&["audit", "verify"], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("cut off"), "{}", out.stderr);
}

#[test]
fn a_line_torn_by_a_crash_is_dropped_not_taken_for_tampering() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    agent.kill9();
    let path = audit_path(&env);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    // Torn inside a character, too: the cut is made on bytes.
    std::io::Write::write_all(&mut f, b"{\"event\":\"lease_granted\",\"task\":\"caf\xc3").unwrap();
    drop(f);
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
    let recs = records(&env);
    assert!(
        of_kind(&recs, "anomaly")
            .iter()
            .all(|r| r["anomaly"] != "audit_log_tampered")
    );
    assert_eq!(of_kind(&recs, "start").len(), 2);
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-max-bytes", "3000"]);
    env.init();
    env.add("prod/db", VALUE);
    env.run(
        &["exec", "-s", "prod/db", "--task", "lease-0", "--", "true"],
        None,
    )
    .ok();
    // A follower that has listed the first lease is watching: it sees the rest,
    // across the rotations.
    let follower = env.spawn(&["audit", "--follow", "--json", "--event", "lease_granted"]);
    follower.expect_stdout("lease-0");
    for i in 1..12 {
        env.run(
            &[
                "exec",
                "-s",
                "prod/db",
                "--task",
                &format!("lease-{i}"),
                "--",
                "true",
            ],
            None,
        )
        .ok();
    }
    follower.expect_stdout("lease-11");
    let tasks = tasks_of(&follower.stdout.text());
    assert_eq!(
        tasks,
        (0..12).map(|i| format!("lease-{i}")).collect::<Vec<_>>()
    );
    assert!(
        !jitc_protocol::audit_files::rotated_files(&audit_path(&env)).is_empty(),
        "the log was rotated"
    );
    let current = fs::read_to_string(audit_path(&env)).unwrap();
    assert!(
        current
            .lines()
            .next()
            .unwrap()
            .contains("\"log_continued\"")
    );
    let out = env.run(&["audit", "verify"], None).ok();
    assert!(
        out.stderr.contains(" files") && !out.stderr.contains("in 1 file"),
        "{}",
        out.stderr
    );
    // The reader spans the files too.
    let json = env
        .run(&["audit", "--json", "--event", "lease_granted"], None)
        .ok();
    assert_eq!(json.stdout.lines().count(), 12);
}

/// Cuts the log back to just before its first `lease_granted` line, in place.
fn cut_before_the_first_grant(env: &TestEnv) {
    let (lines, _) = lines_and_last_seq(env);
    let first_grant = lines
        .iter()
        .position(|l| l.contains("\"lease_granted\""))
        .unwrap();
    fs::write(audit_path(env), lines[..first_grant].join("\n") + "\n").unwrap();
}

/// The log's lines, and the sequence number of the last.
fn lines_and_last_seq(env: &TestEnv) -> (Vec<String>, u64) {
    let recs = records(env);
    let text = fs::read_to_string(audit_path(env)).unwrap();
    (
        text.lines().map(str::to_owned).collect(),
        recs.last().unwrap()["seq"].as_u64().unwrap(),
    )
}

#[test]
fn lines_forged_while_the_agent_was_down_are_never_vouched_for() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["lock"], None).ok();
    agent.stop();
    // While no agent runs, someone appends a line of their own (it has no tag: only a
    // keyed line could have one).
    let (_, last) = lines_and_last_seq(&env);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(audit_path(&env))
        .unwrap();
    let forged = format!(
        "{{\"time\":\"2026-01-01T00:00:00.000Z\",\"seq\":{},\"event\":\"lease_denied\",\"reason\":\"nothing happened here\"}}\n",
        last + 1
    );
    std::io::Write::write_all(&mut f, forged.as_bytes()).unwrap();
    drop(f);
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // The chain goes on, but does not vouch for the `stop` and the forged line: they
    // were never sealed, and verify says so.
    let out = env.run(&["audit", "verify"], None).ok();
    assert!(
        out.stderr
            .contains("2 lines written while the vault was locked were never sealed"),
        "{}",
        out.stderr
    );
    let start = records(&env)
        .into_iter()
        .filter(|r| r["event"] == "start")
        .nth(1)
        .unwrap();
    assert_eq!(start["unsealed_before"], 2);
}

#[test]
fn a_tail_cut_while_locked_is_caught_by_the_checkpoint_saved_at_lock() {
    let (env, agent) = setup();
    for _ in 0..3 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    // No save since the add: only the lock saves the checkpoint that covers the grants.
    env.run(&["lock"], None).ok();
    agent.stop();
    cut_before_the_first_grant(&env);
    let _agent = env.start_agent();
    env.unlock().ok();
    wait_for_record(&env, "anomaly", "audit_log_tampered");
    env.run(&["audit", "verify"], None).code(1).says("cut off");
}

#[test]
fn removing_older_files_is_caught() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-max-bytes", "2000"]);
    env.init();
    env.add("prod/db", VALUE);
    for _ in 0..12 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    // The agent compresses rotated files in the background: wait until it has.
    let rotated = compressed_files(&env);
    assert!(rotated.len() >= 3, "rotated at least three times");
    env.run(&["audit", "verify"], None).ok();
    // Keep the newest rotated file (which begins with a log_continued line) and remove
    // the older ones: every line that is left still chains, but the beginning is gone.
    let (newest, older) = rotated.split_last().unwrap();
    for r in older {
        fs::remove_file(&r.path).unwrap();
    }
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("older files were removed");
    // Empty files in their place, or a blank line on top, do not hide it.
    for r in older {
        let plain = if r.compressed {
            r.path.with_extension("")
        } else {
            r.path.clone()
        };
        fs::write(plain, "").unwrap();
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut jitc_protocol::audit_files::open_log(&newest.path).unwrap(),
        &mut text,
    )
    .unwrap();
    fs::remove_file(&newest.path).unwrap();
    let plain = newest.path.with_extension("");
    let plain = if newest.compressed {
        plain
    } else {
        newest.path.clone()
    };
    fs::write(&plain, format!("\n{text}")).unwrap();
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("older files were removed");
}

#[test]
fn a_log_started_afresh_is_accepted_only_by_a_human_and_stays_on_record() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // Saved with the vault: the checkpoint a fresh log falls short of.
    env.add("other", "other-value-99");
    // Nothing to accept while the log is whole.
    env.run(&["audit", "accept", "--passphrase-stdin"], None)
        .ok()
        .says("nothing to accept");
    agent.stop();
    // The state directory is lost (or the vault was copied to another machine).
    let dir = env.state.join("jitc");
    let aside = env.root().join("old-audit");
    fs::rename(&dir, &aside).unwrap();
    let agent = env.start_agent();
    env.unlock().ok();
    wait_for_record(&env, "anomaly", "audit_log_tampered");
    env.run(&["audit", "verify"], None).code(1).says("cut off");
    // A process without the passphrase (an agent in the repository) cannot hide it.
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(b"guessing-passphrase-2\n"),
    )
    .code(77)
    .says("wrong passphrase");
    env.run(&["audit", "verify"], None).code(1).says("cut off");
    let run = env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    );
    run.ok().says("cut off").says("audit log intact");
    env.run(&["audit", "verify"], None).ok();
    assert!(env.status()["audit"]["tampered"].is_null());
    let recs = records(&env);
    assert_eq!(of_kind(&recs, "accept_failed").len(), 1);
    let accepted = of_kind(&recs, "audit_accepted");
    assert_eq!(accepted.len(), 1);
    let reason = accepted[0]["reason"].as_str().unwrap();
    assert!(reason.contains("cut off"), "{reason}");
    assert!(accepted[0]["peer"]["pid"].is_u64(), "{}", accepted[0]);
    // The new checkpoint is the vault's: a restart and an unlock find nothing wrong.
    agent.stop();
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(&["audit", "verify"], None).ok();
    env.run(&["status"], None).ok();
    let tampered = of_kind(&records(&env), "anomaly")
        .into_iter()
        .filter(|a| a["anomaly"] == "audit_log_tampered")
        .count();
    assert_eq!(tampered, 1, "the accepted log is not reported again");
    // A chain broken in the middle is evidence, not a fresh start: not accepted.
    let path = audit_path(&env);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("\"unlock\"", "\"unlock \"", 1)).unwrap();
    env.run(&["audit", "verify"], None).code(1);
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    )
    .code(1)
    .says("not accepted: the chain itself is broken");
    assert_eq!(of_kind(&records(&env), "audit_accepted").len(), 1);
    assert!(
        !fs::read_to_string(&path)
            .unwrap()
            .contains("guessing-passphrase-2")
    );
}

fn inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.ino())
}

fn no_tampering_reported(env: &TestEnv) {
    env.run(&["status"], None).ok();
    let dir = env.state.join("jitc");
    for f in fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.is_file() {
            // Compressed or removed since it was listed: read where it went, if anywhere.
            let mut text = Vec::new();
            if let Some(mut r) = jitc_protocol::audit_files::open_listed(&path).unwrap() {
                std::io::Read::read_to_end(&mut r, &mut text).unwrap();
            }
            let text = String::from_utf8_lossy(&text);
            assert!(!text.contains("audit_log_tampered"), "{text}");
        }
    }
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
}

#[test]
fn a_rotation_while_locked_keeps_each_file_checkable() {
    let env = TestEnv::new();
    // Retention small enough that the file where the run began goes, in a test's time.
    env.write_policy("[defaults]\naudit_keep = \"16KiB\"\n");
    let _agent = env.start_agent_with(&["--audit-max-bytes", "4000"]);
    env.init();
    env.add("prod/db", VALUE);
    env.run(&["lock"], None).ok();
    let dir = env.state.join("jitc");
    let log = dir.join("audit.log");
    // Refusals while locked are written unkeyed until the log rotates, and one more
    // after: the run the next unlock seals spans two files.
    let first = inode(&log);
    for _ in 0..200 {
        if inode(&log) != first {
            break;
        }
        env.run(&["exec", "-s", "prod/db", "--", "true"], None)
            .code(75);
    }
    assert_ne!(inode(&log), first, "rotated");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None)
        .code(75);
    // The unlock checks the newest file on its own: it must not cry wolf.
    env.unlock().ok();
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    no_tampering_reported(&env);
    // Nor once the file where that run began is compressed, and once retention has
    // removed it.
    let began = jitc_protocol::audit_files::rotated_files(&log)
        .pop()
        .unwrap()
        .path;
    let packed = jitc_protocol::audit_files::compressed(&began);
    for _ in 0..2000 {
        if !began.exists() && !packed.exists() {
            break;
        }
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    assert!(!began.exists() && !packed.exists(), "never pruned");
    no_tampering_reported(&env);
    env.run(&["audit", "verify"], None).ok();
}

#[test]
fn a_restart_that_rotates_at_once_keeps_the_new_file_checkable() {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("prod/db", VALUE);
    env.run(&["lock"], None).ok();
    // Unkeyed lines fill the log past the size a restarted agent rotates at.
    let log = audit_path(&env);
    for _ in 0..200 {
        if fs::metadata(&log).unwrap().len() >= 4000 {
            break;
        }
        env.run(&["exec", "-s", "prod/db", "--", "true"], None)
            .code(75);
    }
    agent.stop();
    // The new agent gives those lines up (unsealed_before) on the first line of a new file.
    let _agent = env.start_agent_with(&["--audit-max-bytes", "4000"]);
    env.unlock().ok();
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    let first = fs::read_to_string(&log).unwrap();
    let marker = first.lines().next().unwrap();
    assert!(
        marker.contains("log_continued") && marker.contains("\"unsealed_before\""),
        "{first}"
    );

    no_tampering_reported(&env);
}

#[test]
fn a_failed_init_leaves_nothing_keyed_for_a_vault_that_never_was() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let dir = env.root().join("vaultdir");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    env.set_env("JITC_VAULT", dir.join("vault.jitc"));
    let _agent = env.start_agent();
    // The vault's temporary file cannot be created: the save fails.
    let blocker = dir.join(format!("vault.jitc.tmp-{}", env.agent_pid().unwrap()));
    fs::create_dir_all(blocker.join("x")).unwrap();
    let failed = env.run(&INIT_ARGS, Some(format!("{PASSPHRASE}\n").as_bytes()));
    assert_ne!(failed.code, 0, "{failed:?}");
    fs::remove_dir_all(&blocker).unwrap();
    env.init();
    env.add("prod/db", VALUE);
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
    let recs = records(&env);
    let inits = of_kind(&recs, "init");
    assert_eq!(inits.len(), 3, "tried, failed, done: {inits:?}");
    assert_eq!(inits[1]["decision"], "failed");
    assert!(inits.iter().all(|r| r.get("tag").is_none()));
}

#[test]
fn a_tail_cut_under_a_running_agent_is_not_accepted_but_a_fresh_log_is() {
    let (env, agent) = setup();
    for _ in 0..3 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    env.run(&["status"], None).ok();
    // Cut in place: the agent keeps writing to the same file.
    cut_before_the_first_grant(&env);
    env.run(&["audit", "verify"], None).code(1).says("cut off");
    let pass = format!("{PASSPHRASE}\n");
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(pass.as_bytes()),
    )
    .code(1)
    .says("cut while this agent was running");
    assert!(of_kind(&records(&env), "audit_accepted").is_empty());
    // What the agent writes next shows the gap for good; the way to a fresh start is
    // to keep the files aside.
    agent.stop();
    let dir = env.state.join("jitc");
    fs::rename(&dir, env.root().join("evidence")).unwrap();
    let _agent = env.start_agent();
    env.unlock().ok();
    env.run(
        &["audit", "accept", "--passphrase-stdin"],
        Some(pass.as_bytes()),
    )
    .ok()
    .says("audit log intact");
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["audit", "verify"], None).ok();
}

#[test]
fn a_new_vault_moves_the_log_of_the_earlier_one_aside() {
    let (env, agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["lock"], None).ok();
    // The passphrase is forgotten: the vault is moved away and a new one made.
    fs::rename(env.vault(), env.root().join("forgotten.jitc")).unwrap();
    env.init();
    env.add("prod/db", "another-value-5521");
    env.run(&["lock"], None).ok();
    env.unlock().ok();
    no_tampering_reported(&env);
    let recs = records(&env);
    assert_eq!(recs[0]["seq"], 1);
    let init = of_kind(&recs, "init")[0];
    let moved = init["reason"].as_str().unwrap();
    assert!(moved.contains("was moved to"), "{init}");
    let dir = PathBuf::from(moved.rsplit(" moved to ").next().unwrap());
    let old = fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(old.contains("\"lease_granted\""), "kept whole: {old}");
    // It survives a restart too.
    agent.stop();
    let _agent = env.start_agent();
    env.unlock().ok();
    no_tampering_reported(&env);
}

#[test]
fn verify_is_not_fooled_by_rotations_while_it_reads() {
    let env = TestEnv::new();
    let _agent = env.start_agent_with(&["--audit-max-bytes", "1500"]);
    env.init();
    env.add("prod/db", VALUE);
    let mut load: Vec<_> = (0..2)
        .map(|_| {
            let mut c = env.command("sh");
            c.arg("-c").arg(format!(
                "for i in $(seq 60); do {} exec -s prod/db -- true || exit 1; done",
                jitc_bin().display()
            ));
            c.stdout(std::process::Stdio::null()).spawn().unwrap()
        })
        .collect();
    let mut checks = 0;
    while load.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        env.run(&["audit", "verify"], None).ok();
        checks += 1;
    }
    for mut c in load {
        assert!(c.wait().unwrap().success());
    }
    assert!(checks > 5, "verify ran while the log rotated ({checks})");
    no_tampering_reported(&env);
}

#[test]
fn a_new_vault_that_fails_leaves_the_earlier_log_where_it_was() {
    let (env, _agent) = setup();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    env.run(&["lock"], None).ok();
    let old = env.root().join("old.jitc");
    fs::rename(env.vault(), &old).unwrap();
    // The new vault's temporary file cannot be created: the save fails.
    let blocker = env
        .vault()
        .with_file_name(format!("vault.jitc.tmp-{}", env.agent_pid().unwrap()));
    fs::create_dir_all(blocker.join("x")).unwrap();
    let failed = env.run(&INIT_ARGS, Some(format!("{PASSPHRASE}\n").as_bytes()));
    assert_ne!(failed.code, 0, "{failed:?}");
    fs::remove_dir_all(&blocker).unwrap();
    // The old vault comes back: its log is as it left it.
    fs::rename(&old, env.vault()).unwrap();
    env.unlock().ok();
    no_tampering_reported(&env);
    let moved_aside = fs::read_dir(env.state.join("jitc"))
        .unwrap()
        .any(|e| e.unwrap().path().is_dir());
    assert!(!moved_aside);
}

/// Retention end to end: with a small `audit_keep`, the oldest files go (recorded on
/// the chain), the rest are compressed, `verify` accepts exactly what retention
/// removed, and `jitc audit --since` reads records out of the compressed files.
#[test]
fn retention_keeps_the_log_to_its_size_and_compressed_files_stay_readable() {
    let env = TestEnv::new();
    env.write_policy("[defaults]\naudit_keep = \"24KiB\"\n");
    let _agent = env.start_agent_with(&["--audit-max-bytes", "4000"]);
    env.init();
    env.add("prod/db", VALUE);
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let log = audit_path(&env);
    let mut n = 0;
    // Until retention has removed something (said on a log_continued line).
    while !jitc_protocol::audit_files::files_of(&log).iter().any(|f| {
        let mut t = Vec::new();
        jitc_protocol::audit_files::open_listed(f)
            .ok()
            .flatten()
            .and_then(|mut r| std::io::Read::read_to_end(&mut r, &mut t).ok())
            .is_some()
            && String::from_utf8_lossy(&t).contains("\"pruned_through\"")
    }) {
        let task = format!("retained-{n}");
        env.run(
            &["exec", "-s", "prod/db", "--task", &task, "--", "true"],
            None,
        )
        .ok();
        n += 1;
        assert!(n < 2000, "retention never pruned");
    }
    // A few more leases, so some land in files compressed since.
    for i in 0..20 {
        let task = format!("late-{i}");
        env.run(
            &["exec", "-s", "prod/db", "--task", &task, "--", "true"],
            None,
        )
        .ok();
    }
    let total: u64 = jitc_protocol::audit_files::files_of(&log)
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(total <= 24 * 1024 + 8000, "kept {total} bytes");
    env.run(&["audit", "verify"], None)
        .ok()
        .says("audit log intact");
    // What the reader shows: every late lease, including those now in .zst files.
    let json = env
        .run(
            &[
                "audit",
                "--json",
                "--since",
                &started,
                "--event",
                "lease_granted",
            ],
            None,
        )
        .ok();
    let tasks = tasks_of(&json.stdout);
    for i in 0..20 {
        assert!(tasks.contains(&format!("late-{i}")), "late-{i}: {tasks:?}");
    }
    assert!(
        !tasks.contains(&"retained-0".to_owned()),
        "retention removed it"
    );
    let rotated = jitc_protocol::audit_files::rotated_files(&log);
    assert!(rotated.iter().any(|r| r.compressed), "{rotated:?}");
    // The oldest file left, removed by someone else: not retention's doing.
    fs::remove_file(&rotated[0].path).unwrap();
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("older files were removed");
}

/// The `task` of each record `jitc audit --json` printed.
fn tasks_of(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["task"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Waits until the agent has compressed every rotated file; returns them.
fn compressed_files(env: &TestEnv) -> Vec<jitc_protocol::audit_files::Rotated> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let r = jitc_protocol::audit_files::rotated_files(&audit_path(env));
        if r.iter().all(|r| r.compressed) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "never compressed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Review findings: a `pruned_through` that no tag vouches for (a line written while
/// no agent ran, which the next agent gives up on), and a planted sparse file that
/// claims gigabytes and the highest sequence number, must neither excuse removed files
/// nor make the agent prune the real ones.
#[test]
fn forged_retention_claims_excuse_nothing_and_steer_nothing() {
    let env = TestEnv::new_as(USER);
    let agent = env.start_agent_with(&["--audit-max-bytes", "2000"]);
    env.init();
    env.add("prod/db", VALUE);
    for _ in 0..10 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    let rotated = compressed_files(&env);
    assert!(rotated.len() >= 3);
    // A planted file: 2 GiB by its size (sparse: nothing on disk), the highest name.
    let planted = env
        .state
        .join("jitc")
        .join(format!("audit.log.{}", u64::MAX));
    fs::File::create(&planted)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    for _ in 0..10 {
        env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    }
    for r in &rotated {
        assert!(r.path.exists(), "{} was pruned", r.path.display());
    }
    fs::remove_file(&planted).unwrap();
    // The files written before the forged line (it may rotate into a file of its own).
    let older = compressed_files(&env);
    agent.stop();
    // An unkeyed `log_continued` line claiming that everything before it was pruned,
    // forged to pass the chain: what it must say (the last tag, the unkeyed lines since
    // and their digest) is in the file for anyone to read and needs no key. Only its
    // missing tag gives it away.
    let log = audit_path(&env);
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let keyed = lines
        .iter()
        .rposition(|l| l.contains(",\"tag\":\""))
        .unwrap();
    let prev_tag = &lines[keyed][lines[keyed].rfind(",\"tag\":\"").unwrap() + 8..][..64];
    let mut digest = [0u8; 32];
    for body in &lines[keyed + 1..] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(digest);
        h.update((body.len() as u64).to_be_bytes());
        h.update(body.as_bytes());
        digest = h.finalize().into();
    }
    let pending = lines.len() - keyed - 1;
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let last = records(&env).last().unwrap()["seq"].as_u64().unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(
        &mut f,
        format!(
            "{{\"time\":\"2026-11-30T00:00:00.000Z\",\"seq\":{},\"event\":\"log_continued\",\"pending\":{pending},\"pending_digest\":\"{hex}\",\"prev_tag\":\"{prev_tag}\",\"pruned_through\":{}}}\n",
            last + 1,
            last
        )
        .as_bytes(),
    )
    .unwrap();
    drop(f);
    let _agent = env.start_agent_with(&["--audit-max-bytes", "2000"]);
    env.unlock().ok();
    env.run(&["exec", "-s", "prod/db", "--", "true"], None).ok();
    // Before anything is removed, the forged line passes the chain (so only the tag
    // check below stands between it and the removal).
    env.run(&["audit", "verify"], None).ok();
    for r in older {
        fs::remove_file(&r.path).unwrap();
    }
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("older files were removed");
}

/// A rotated file that decompresses to far more than any log holds — a zstd bomb put
/// among the rotated files by anything running as the user — is neither read whole nor
/// passed over in silence: `jitc audit` says which line it will not show and shows the
/// rest, and `jitc audit verify` names it. (Before, `jitc audit` read up to 64 MiB of
/// it into memory and printed nothing about it.)
#[test]
fn a_compressed_bomb_among_the_rotated_files_is_named_not_swallowed() {
    use std::io::Write;
    let env = TestEnv::new_as(USER);
    let _agent = env.start_agent();
    env.init();
    env.add("X", "value-of-x-1234567890");
    env.run(&["exec", "-s", "X", "--", "true"], None).ok();
    // 256 MiB of zeros, in about 10 kB: past every cap.
    let bomb = audit_path(&env).with_file_name("audit.log.00000000000000000001.zst");
    let mut z = zstd::stream::write::Encoder::new(fs::File::create(&bomb).unwrap(), 1).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap();
    env.give(&bomb);
    assert!(fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let shown = env.run(&["audit", "--json"], None).ok();
    assert!(
        shown
            .stderr
            .contains("audit.log.00000000000000000001.zst line 1: longer than any record"),
        "{}",
        shown.stderr
    );
    assert!(
        shown.stdout.contains("\"lease_granted\""),
        "{}",
        shown.stdout
    );
    env.run(&["audit", "verify"], None)
        .code(1)
        .says("audit.log.00000000000000000001.zst line 1: longer than any record");
}

/// The newest file is read a chunk at a time, as the rotated ones are a line at a time:
/// a line in it longer than any record (planted by anything running as the user) is
/// named and not held, a byte that is not UTF-8 hides nothing after it, and every record
/// after them still shows — across chunk boundaries. (Before, the newest file was read
/// whole into memory, and one invalid byte hid the rest of it.)
#[test]
fn the_newest_file_is_read_in_chunks_and_a_planted_line_hides_nothing() {
    use std::io::Write;
    let env = TestEnv::new_as(USER);
    let _agent = env.start_agent_with(&["--audit-max-bytes", "30000000"]);
    env.init();
    env.add("X", "value-of-x-1234567890");
    env.run(&["exec", "-s", "X", "--", "true"], None).ok();
    let log = audit_path(&env);
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&vec![b'a'; 5 << 20]).unwrap();
    f.write_all(b"\n{\"planted\":\"\xff\xfe\"}\n").unwrap();
    drop(f);
    env.run(&["exec", "-s", "X", "--", "true"], None).ok();
    let shown = env.run(&["audit", "--json"], None).ok();
    assert!(
        shown
            .stderr
            .contains("audit.log: a line longer than any record the agent writes, not shown"),
        "{}",
        shown.stderr
    );
    assert_eq!(
        shown.stdout.matches("\"lease_granted\"").count(),
        2,
        "{}",
        &shown.stdout[..shown.stdout.len().min(4000)]
    );
    assert!(!shown.stdout.contains("aaaa"));
}

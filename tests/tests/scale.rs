//! Vaults larger than one reply: listings page, imports go in batches, and nothing hits
//! a cap — through the real binaries.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::fs;

use jitc_tests::*;

/// 30,000 secrets: their listing is about 2 MiB, twice what one frame may carry.
#[test]
fn thirty_thousand_secrets_import_and_list_whole() {
    const PER_FILE: usize = 15_000;
    let env = TestEnv::new_as(USER);
    env.init();
    for part in ["a", "b"] {
        let mut text = String::new();
        for i in 0..PER_FILE {
            // Values that look like credentials (hex of a hash), so import stores them.
            let value = &sha256_hex(format!("{part}{i}").as_bytes())[..32];
            writeln!(text, "API_KEY_{i:05}={value}").unwrap();
        }
        let file = env.home.join(format!("{part}.env"));
        fs::write(&file, text).unwrap();
        env.give(&file);
        let out = env
            .run(
                &[
                    "import",
                    "--prefix",
                    &format!("{part}/"),
                    file.to_str().unwrap(),
                ],
                None,
            )
            .ok();
        assert!(
            out.stderr.contains(&format!("imported {PER_FILE} secrets")),
            "{}",
            out.stderr
        );
    }
    let names = env.secret_names();
    assert_eq!(names.len(), 2 * PER_FILE);
    // In name order, each once, across the pages.
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(names[0], "a/API_KEY_00000");
    assert_eq!(
        names[2 * PER_FILE - 1],
        format!("b/API_KEY_{:05}", PER_FILE - 1)
    );
    let table = env.run(&["ls"], None).ok().stdout;
    assert_eq!(
        table.lines().count(),
        2 * PER_FILE + 1,
        "a header and a line each"
    );
    // Every change shows in the next listing, whichever page it falls on (the agent
    // keeps the listing encoded between changes).
    env.run_as_human(&["rm", "a/API_KEY_00000"], b"").ok();
    env.run_as_human(&["mv", "b/API_KEY_00001", "c/MOVED"], b"")
        .ok();
    env.add("a/API_KEY_00000x", "a-new-value-1234567890");
    let names = env.secret_names();
    assert_eq!(names.len(), 2 * PER_FILE);
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(names[0], "a/API_KEY_00000x");
    assert_eq!(names[2 * PER_FILE - 1], "c/MOVED");
    assert!(!names.iter().any(|n| n == "b/API_KEY_00001"));
    // A lease still finds any of them.
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "b/API_KEY_14999",
                "--",
                "sh",
                "-c",
                "echo ${#B_API_KEY_14999}",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout.trim(), "32");
}

/// An import that replaces a secret whose rule asks for the passphrase cannot get it
/// through on the click another name of the batch would get: the whole batch needs the
/// passphrase, and every name it touches is on record.
#[test]
fn a_batch_needs_the_passphrase_if_any_of_its_names_does() {
    let env = TestEnv::new_as(USER);
    env.init();
    // An approver that approves whatever it is shown.
    let approver = env.root().join("yes.sh");
    fs::write(&approver, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(
        &approver,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    env.give(&approver);
    env.add("DEV_X", "dev-value-1234");
    env.add("PROD_KEY", "prod-value-5678");
    env.write_policy(&format!(
        "[defaults]\napprover = [\"{}\"]\n[[rule]]\nsecrets = [\"DEV_*\"]\napproval = \"always\"\n[[rule]]\nsecrets = [\"PROD_*\"]\napproval = \"never\"\n",
        approver.display()
    ));
    let file = env.home.join("evil.env");
    fs::write(
        &file,
        "DEV_X=0123456789abcdef0123456789abcdef\nPROD_KEY=fedcba9876543210fedcba9876543210\n",
    )
    .unwrap();
    env.give(&file);
    env.run(&["import", "--replace", file.to_str().unwrap()], None)
        .code(77)
        .one_line_error()
        .says("needs the vault passphrase");
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "PROD_KEY",
                "--",
                "sh",
                "-c",
                "printf %s \"$PROD_KEY\"",
            ],
            None,
        )
        .ok();
    assert_eq!(out.stdout, "<concealed:PROD_KEY>", "unchanged");
    // With the passphrase it goes through, and both names are on the one record.
    env.run(
        &[
            "import",
            "--replace",
            "--passphrase-stdin",
            file.to_str().unwrap(),
        ],
        Some(format!("{PASSPHRASE}\n").as_bytes()),
    )
    .ok();
    let records = audit::records(&env);
    let replaced = audit::of_kind(&records, "secret_replaced");
    let last = replaced.last().unwrap();
    assert_eq!(
        last["secrets"],
        serde_json::json!(["DEV_X", "PROD_KEY"]),
        "{last}"
    );
}

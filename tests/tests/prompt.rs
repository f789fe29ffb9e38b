//! Passphrases and values typed at a real terminal (a pty): never echoed, confirmed
//! where it matters, and the terminal is restored whatever happens.
#![allow(clippy::unwrap_used)]

use jitc_tests::*;
use nix::sys::termios::LocalFlags;

#[test]
fn init_asks_twice_and_refuses_a_mismatch() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    let args = ["init", "--kdf-memory", "8", "--kdf-iterations", "1"];
    let mut t = PtySession::spawn(&env, &jitc_bin(), &args);
    t.expect("New vault passphrase: ");
    t.send(b"first-typed\r");
    t.expect("Repeat the passphrase: ");
    t.send(b"second-typed\r");
    assert_eq!(t.wait(), 65);
    t.expect("differ");
    assert!(!env.vault().exists());

    let mut t = PtySession::spawn(&env, &jitc_bin(), &args);
    t.expect("New vault passphrase: ");
    t.send(format!("{PASSPHRASE}\r").as_bytes());
    t.expect("Repeat the passphrase: ");
    t.send(format!("{PASSPHRASE}\r").as_bytes());
    assert_eq!(t.wait(), 0);
    assert!(env.vault().exists());
    assert!(
        !t.output.text().contains(PASSPHRASE),
        "the passphrase was echoed"
    );
    assert!(
        t.termios().local_flags.contains(LocalFlags::ECHO),
        "echo restored"
    );
    // And that passphrase is the vault's.
    env.run(&["lock"], None).ok();
    env.unlock().ok();
}

#[test]
fn add_and_unlock_prompt_without_echo() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    let mut t = PtySession::spawn(&env, &jitc_bin(), &["add", "TOKEN"]);
    t.expect("Value for TOKEN: ");
    // Line editing works: the x is erased with backspace.
    t.send(b"typed-valuex\x7f-123\r");
    assert_eq!(t.wait(), 0);
    assert!(
        !t.output.text().contains("typed-value"),
        "the value was echoed"
    );
    let out = env
        .run(
            &[
                "exec",
                "-s",
                "TOKEN",
                "--",
                "sh",
                "-c",
                "printf %s \"$TOKEN\" | sha256sum",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.starts_with(&sha256_hex(b"typed-value-123")));

    env.run(&["lock"], None).ok();
    let mut t = PtySession::spawn(&env, &jitc_bin(), &["unlock"]);
    t.expect("Passphrase for ");
    t.send(format!("{PASSPHRASE}\r").as_bytes());
    assert_eq!(t.wait(), 0);
    t.expect("unlocked (1 secret)");
    assert!(!t.output.text().contains(PASSPHRASE));
}

#[test]
fn ctrl_c_at_a_prompt_cancels_and_restores_the_terminal() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    let mut t = PtySession::spawn(&env, &jitc_bin(), &["add", "TOKEN"]);
    t.expect("Value for TOKEN: ");
    t.send(b"half-typed\x03");
    assert_eq!(t.wait(), 1);
    t.expect("cancelled");
    let flags = t.termios().local_flags;
    assert!(flags.contains(LocalFlags::ECHO) && flags.contains(LocalFlags::ICANON));
    let json = env.json(&["ls"]);
    assert!(json.as_array().unwrap().is_empty(), "nothing stored");
}

#[test]
fn a_locked_vault_is_reported_before_asking_for_a_value() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    env.run(&["lock"], None).ok();
    let mut t = PtySession::spawn(&env, &jitc_bin(), &["add", "TOKEN"]);
    assert_eq!(t.wait(), 75);
    assert!(!t.output.text().contains("Value for"));
}

#[test]
fn a_pasted_multi_line_value_is_refused_not_cut_short() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    env.init();
    let mut t = PtySession::spawn(&env, &jitc_bin(), &["add", "KEY"]);
    t.expect("Value for KEY: ");
    t.send(b"-----BEGIN KEY-----\rabc\r-----END KEY-----\r");
    assert_eq!(t.wait(), 65);
    t.expect("jitc add NAME < FILE");
    assert!(env.secret_names().is_empty(), "nothing stored");
}

#[test]
fn adding_at_a_terminal_before_init_says_to_init() {
    let env = TestEnv::new();
    let _agent = env.start_agent();
    let mut t = PtySession::spawn(&env, &jitc_bin(), &["add", "KEY"]);
    assert_eq!(t.wait(), 1);
    t.expect("jitc init");
}

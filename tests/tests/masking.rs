//! Masking against independent encoders (coreutils `base64`, Python's `urllib` and
//! `json`, JavaScript's and Go's and PHP's escapes emulated in Python), on the pipe path
//! and on a real terminal; the terminal's newlines (jitc translates them after masking,
//! byte for byte as the kernel would); output that cannot be written, and a reader that
//! goes away.
//!
//! No test prints a value: failures name the section and what kind of piece survived.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use jitc_tests::*;

/// Every character the encoders disagree on: space, `/`, `~`, `!*()'`, `<&>`, 2- and
/// 3-byte UTF-8.
const TOKEN: &str = "tok_9fQ2xLm7 Rt4/Vb8~Nc1!Kd6*(x)'<&>\u{e9}\u{2713}";

/// A multi-line value: a key in PEM's shape (every line 16 bytes or more).
const KEY: &str = "-----BEGIN TEST KEY-----\n\
                   MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n\
                   MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n\
                   -----END TEST KEY-----";

fn setup() -> (TestEnv, Agent) {
    let env = TestEnv::new();
    let agent = env.start_agent();
    env.init();
    env.add("TOKEN", TOKEN);
    env.add("KEY", KEY);
    (env, agent)
}

/// `python3 -c CODE` with `t` (TOKEN) and `k` (KEY) and the encoders imported.
fn py(code: &str) -> String {
    format!(
        "/usr/bin/python3 -c \"import os,json,re,urllib.parse as u; t=os.environ['TOKEN']; k=os.environ['KEY']; {code}\""
    )
}

/// Sections that print a value in one form, and what masking makes of them.
fn exact_sections() -> Vec<(&'static str, String, String)> {
    let whole = |name: &str| format!("<concealed:{name}>\n");
    // (chr(92) is a backslash: the script passes through sh's double quotes.)
    let go = "json.dumps(t, ensure_ascii=False)[1:-1].replace('<', chr(92)+'u003c').replace('>', chr(92)+'u003e').replace('&', chr(92)+'u0026')";
    vec![
        ("raw", "printf '%s\\n' \"$TOKEN\"".into(), whole("TOKEN")),
        ("quote", py("print(u.quote(t))"), whole("TOKEN")),
        (
            "quote-safe",
            py("print(u.quote(t, safe=''))"),
            whole("TOKEN"),
        ),
        ("quote_plus", py("print(u.quote_plus(t))"), whole("TOKEN")),
        (
            "quote_plus-lower",
            py("print(re.sub('%[0-9A-F]{2}', lambda m: m.group(0).lower(), u.quote_plus(t)))"),
            whole("TOKEN"),
        ),
        // encodeURIComponent keeps A-Z a-z 0-9 - _ . ! ~ * ' ( ): quote's always-safe
        // set plus !*'().
        (
            "encodeURIComponent",
            py("print(u.quote(t, safe=chr(33)+chr(42)+chr(39)+chr(40)+chr(41)))"),
            whole("TOKEN"),
        ),
        // URLSearchParams: as quote_plus, but keeps * and escapes ~.
        (
            "URLSearchParams",
            py("print(u.quote_plus(t, safe='*').replace('~', '%7E'))"),
            whole("TOKEN"),
        ),
        (
            "json.dumps",
            py("print(json.dumps(t)[1:-1])"),
            whole("TOKEN"),
        ),
        (
            "json.dumps-utf8",
            py("print(json.dumps(t, ensure_ascii=False)[1:-1])"),
            whole("TOKEN"),
        ),
        ("go-json", py(&format!("print({go})")), whole("TOKEN")),
        (
            "php-json",
            py("print(json.dumps(t)[1:-1].replace('/', chr(92)+'/'))"),
            whole("TOKEN"),
        ),
        ("hex", py("print(t.encode().hex())"), whole("TOKEN")),
        ("key-raw", "printf '%s\\n' \"$KEY\"".into(), whole("KEY")),
        ("key-json", py("print(json.dumps(k)[1:-1])"), whole("KEY")),
        (
            "key-json-php",
            py("print(json.dumps(k)[1:-1].replace('/', chr(92)+'/'))"),
            whole("KEY"),
        ),
        // Indented, as in YAML: each line on its own.
        (
            "key-indented",
            "printf '%s\\n' \"$KEY\" | sed 's/^/  /'".into(),
            "  <concealed:KEY>\n".repeat(4),
        ),
    ]
}

/// `$var` at byte `before` of a block given to coreutils `base64`, wrapped at `width`
/// (76, its default; 64 as PEM; 0 for none).
fn b64_section(var: &str, before: usize, width: usize) -> String {
    let base64 = match width {
        76 => "base64".to_owned(),
        // Unwrapped output ends without a newline.
        0 => "base64 -w 0; echo".to_owned(),
        w => format!("base64 -w {w}"),
    };
    format!(
        "{{ head -c {before} /dev/zero | tr '\\0' x; printf '%s' \"${var}\"; printf yz; }} | {base64}"
    )
}

/// Every base64 section: (label, script, value's name, bytes before it).
fn base64_sections() -> Vec<(String, String, &'static str, usize)> {
    let mut out = Vec::new();
    for (width, befores) in [(76, 0..60), (64, 0..50), (0, 0..3)] {
        for before in befores {
            out.push((
                format!("b64-w{width}-{before}"),
                b64_section("TOKEN", before, width),
                "TOKEN",
                before,
            ));
        }
    }
    for (width, before) in [(76, 0), (76, 1), (76, 2), (64, 0), (64, 5), (64, 13)] {
        out.push((
            format!("key-b64-w{width}-{before}"),
            b64_section("KEY", before, width),
            "KEY",
            before,
        ));
    }
    out
}

/// One script printing every section after a `== label` line.
fn script() -> String {
    let mut parts = Vec::new();
    for (label, cmd, _) in exact_sections() {
        parts.push(format!("echo '== {label}'; {cmd}"));
    }
    for (label, cmd, _, _) in base64_sections() {
        parts.push(format!("echo '== {label}'; {cmd}"));
    }
    parts.join("; ")
}

/// Output cut at its `== label` lines: label → body.
fn sections(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.split_inclusive('\n') {
        if let Some(label) = line.strip_prefix("== ") {
            let label = label.trim_end().to_owned();
            map.insert(label.clone(), String::new());
            current = Some(label);
        } else if let Some(l) = &current {
            map.get_mut(l).unwrap().push_str(line);
        }
    }
    map
}

fn value(name: &str) -> &'static str {
    if name == "TOKEN" { TOKEN } else { KEY }
}

/// Whether any `len`-byte piece of `secret` occurs in `out`.
fn holds_a_piece(out: &[u8], secret: &[u8], len: usize) -> bool {
    secret
        .windows(len)
        .any(|w| out.windows(len).any(|o| o == w))
}

/// The characters of `wrapped` (base64 with line breaks) that the value's bytes alone
/// determine, when `before` bytes precede it: the stable interior.
fn interior(wrapped: &str, before: usize, len: usize) -> Vec<u8> {
    let joined: Vec<u8> = wrapped.bytes().filter(|&b| b != b'\n').collect();
    let first = (8 * before).div_ceil(6);
    let last = (8 * (before + len)) / 6;
    joined[first..last].to_vec()
}

/// Checks masked output `masked` against the same script's unmasked output `plain`.
#[track_caller]
fn check(path: &str, masked: &str, plain: &str) {
    let (got, want) = (sections(masked), sections(plain));
    let expected = exact_sections().len() + base64_sections().len();
    assert_eq!(want.len(), expected, "the script ran whole without jitc");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{path}: the same sections"
    );
    for (label, _, masked) in exact_sections() {
        let body = &got[label];
        // (Never assert_eq! here: a failure would print what leaked.)
        assert!(*body == masked, "{path}: {label} is not masked");
        assert!(
            want[label].len() > 4,
            "{path}: {label}: the encoder printed it"
        );
    }
    for (label, _, name, before) in base64_sections() {
        let body = got[&label].as_bytes();
        assert!(
            got[&label].contains(&format!("<concealed:{name}>")),
            "{path}: {label} has no marker"
        );
        let stable = interior(&want[&label], before, value(name).len());
        let joined: Vec<u8> = body.iter().copied().filter(|&b| b != b'\n').collect();
        assert!(
            !holds_a_piece(&joined, &stable, 8),
            "{path}: {label}: 8 characters of the value's base64 survive"
        );
    }
    for secret in [TOKEN, KEY] {
        assert!(
            !holds_a_piece(masked.as_bytes(), secret.as_bytes(), 8),
            "{path}: 8 bytes of a value survive"
        );
    }
}

/// The script's output without jitc (the values set directly), to compare with.
fn unmasked(env: &TestEnv) -> String {
    let mut c = env.command("sh");
    c.args(["-c", &script()])
        .env("TOKEN", TOKEN)
        .env("KEY", KEY);
    let out = run_with_stdin(c, None).ok();
    out.stdout
}

#[test]
fn independent_encoders_are_masked_on_pipes() {
    let (env, _agent) = setup();
    let script = script();
    let out = env
        .run(
            &[
                "exec", "-s", "TOKEN", "-s", "KEY", "--", "sh", "-c", &script,
            ],
            None,
        )
        .ok();
    check("pipe", &out.stdout, &unmasked(&env));
}

/// Runs `jitc ARGS` on a fresh terminal; returns its exit code and the bytes the
/// terminal showed (lossily decoded).
fn on_a_terminal(env: &TestEnv, program: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut t = PtySession::spawn(env, program, args);
    let code = t.wait();
    assert!(
        t.output.wait_closed(Duration::from_secs(30)),
        "the terminal's output ends"
    );
    (code, t.output.text())
}

#[test]
fn independent_encoders_are_masked_on_a_terminal() {
    let (env, _agent) = setup();
    let script = script();
    let (code, shown) = on_a_terminal(
        &env,
        &jitc_bin(),
        &[
            "exec", "-s", "TOKEN", "-s", "KEY", "--", "sh", "-c", &script,
        ],
    );
    assert_eq!(code, 0);
    // The terminal shows every newline as \r\n, as it would without jitc, and no \r
    // twice.
    assert!(!shown.contains("\r\r"), "no newline translated twice");
    assert_eq!(
        shown.matches('\n').count(),
        shown.matches("\r\n").count(),
        "every newline arrives as \\r\\n"
    );
    check("terminal", &shown.replace("\r\n", "\n"), &unmasked(&env));
}

/// What a mix of output looks like on a terminal: tabs, CRLF, blank lines, colours, a
/// last line without a newline, stderr.
const PLAIN_OUTPUT: &str = "printf 'a\\tb\\nc\\r\\n\\n\\n\\033[1mbold\\033[0m\\n'; printf 'err\\n' >&2; printf 'no newline'";

#[test]
fn the_terminal_shows_the_same_bytes_as_without_jitc() {
    let (env, _agent) = setup();
    let (code, direct) =
        on_a_terminal(&env, std::path::Path::new("/bin/sh"), &["-c", PLAIN_OUTPUT]);
    assert_eq!(code, 0);
    let (code, through) = on_a_terminal(
        &env,
        &jitc_bin(),
        &["exec", "-s", "TOKEN", "--", "sh", "-c", PLAIN_OUTPUT],
    );
    assert_eq!(code, 0);
    assert_eq!(through, direct);
    assert!(direct.contains("c\r\r\n"), "the kernel's ONLCR was on");
}

#[test]
fn the_command_may_set_its_terminals_newlines_itself() {
    let (env, _agent) = setup();
    // Output processing off (as a full-screen program does): newlines stay bare.
    let (_, raw) = on_a_terminal(
        &env,
        &jitc_bin(),
        &[
            "exec",
            "-s",
            "TOKEN",
            "--",
            "sh",
            "-c",
            "stty -opost; printf 'a\\nb\\n'",
        ],
    );
    assert_eq!(raw, "a\nb\n");
    // ONLCR turned back on: the kernel translates, and jitc does not again.
    let (_, cooked) = on_a_terminal(
        &env,
        &jitc_bin(),
        &[
            "exec",
            "-s",
            "TOKEN",
            "--",
            "sh",
            "-c",
            "stty onlcr; printf 'c\\n'",
        ],
    );
    assert_eq!(cooked, "c\r\n");
    // And a multi-line value shown as \r\n by the kernel is still masked.
    let (_, crlf) = on_a_terminal(
        &env,
        &jitc_bin(),
        &[
            "exec",
            "-s",
            "KEY",
            "--",
            "sh",
            "-c",
            "stty onlcr; printf '[%s]\\n' \"$KEY\"",
        ],
    );
    assert!(crlf == "[<concealed:KEY>]\r\n", "the CRLF form is masked");
}

/// Runs `c` with stdin empty, `stdout`/`stderr` as given; returns the exit code and
/// stderr (when piped).
fn run_to(mut c: std::process::Command, stdout: Stdio, stderr: Stdio) -> (Option<i32>, String) {
    c.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let out = spawn(&mut c).unwrap().wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dev_full() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
        .into()
}

#[test]
fn output_that_cannot_be_written_is_an_error() {
    let (env, _agent) = setup();
    let c = env.jitc(&["exec", "-s", "TOKEN", "--", "sh", "-c", "echo hello"]);
    let (code, stderr) = run_to(c, dev_full(), Stdio::piped());
    assert_eq!(code, Some(74));
    assert_eq!(
        stderr,
        "jitc: cannot write the command's output (No space left on device)\n"
    );
    // Stderr too (where the message itself cannot go).
    let c = env.jitc(&["exec", "-s", "TOKEN", "--", "sh", "-c", "echo oops >&2"]);
    assert_eq!(run_to(c, Stdio::null(), dev_full()).0, Some(74));
    // Without masking the command writes to our stdout itself, and answers for it.
    let c = env.jitc(&[
        "exec",
        "--no-masking",
        "-s",
        "TOKEN",
        "--",
        "sh",
        "-c",
        "echo hello; exit 3",
    ]);
    assert_eq!(run_to(c, dev_full(), Stdio::piped()).0, Some(3));
}

#[test]
fn a_reader_that_goes_away_stops_the_command_quietly() {
    let (env, _agent) = setup();
    let mut c = env.jitc(&["exec", "-s", "TOKEN", "--", "yes", "masked output"]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "masked output\n");
    // As `| head -1` does.
    drop(lines);
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.code(), Some(128 + 13), "the command's SIGPIPE");
    assert!(out.status.signal().is_none());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing to report"
    );
}

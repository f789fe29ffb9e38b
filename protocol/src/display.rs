//! How what a requester supplied is shown to a person, so that it cannot forge what the
//! person reads: control characters (C0, DEL, C1), bidirectional overrides and
//! invisible separators are escaped; command arguments are shell-quoted; long command
//! lines are cut with a marker that says how much was left out.
//!
//! Shared contract, not wire format: the agent (the approver's prompt) and the client
//! (`pending`, `approve`, `leases`, `audit`) must show the same text for the same
//! request, so both use these functions.

use std::borrow::Cow;
use std::fmt::Write;

/// The most of a command line shown in prompts and listings.
pub const MAX_SHOWN_ARGV: usize = 512;

/// Characters that change how the rest of a line is displayed, or hide text: they are
/// shown escaped, never as themselves.
fn disguises(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                    // combining grapheme joiner
            | '\u{0600}'..='\u{0605}'       // Arabic number signs (format)
            | '\u{061C}'                    // Arabic letter mark
            | '\u{06DD}' | '\u{070F}'       // Arabic end of ayah, Syriac abbreviation mark
            | '\u{115F}' | '\u{1160}'       // Hangul fillers (blank, yet letters)
            | '\u{17B4}' | '\u{17B5}'       // Khmer inherent vowels (invisible)
            | '\u{180B}'..='\u{180F}'       // Mongolian variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}'       // zero-width space/joiners, LRM, RLM
            | '\u{2028}' | '\u{2029}'       // line and paragraph separators
            | '\u{202A}'..='\u{202E}'       // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}'       // word joiner … bidi isolates, deprecated formats
            | '\u{3164}' | '\u{FFA0}'       // Hangul fillers
            | '\u{FE00}'..='\u{FE0F}'       // variation selectors
            | '\u{FEFF}'                    // zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}'       // interlinear annotation
            | '\u{110BD}' | '\u{110CD}'     // Kaithi number signs
            | '\u{1D173}'..='\u{1D17A}'     // musical formatting
            | '\u{E0000}'..='\u{E0FFF}'     // tags, variation selectors supplement
        )
}

fn escape_into(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        // ASCII only: a shell's `$'\xHH'` is a byte, not a character.
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) <= 0xFFFF => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        // As a shell's `$'…'` reads it (`\u` takes at most four digits).
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// `s` with every disguising character escaped (`\x1b`, `\n`, `\u202e`); unchanged, and
/// not copied, when there is none.
pub fn visible(s: &str) -> Cow<'_, str> {
    // Printable ASCII, the common case, is checked a byte at a time.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(disguises) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if disguises(c) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One argument as a POSIX shell would need it typed: bare when it is plain,
/// single-quoted when it holds spaces or quotes, and `$'…'` with escapes when it holds
/// anything a terminal would act on.
pub fn shell_quote(arg: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        return Cow::Borrowed(arg);
    }
    if !arg.chars().any(disguises) {
        return Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")));
    }
    let mut out = String::with_capacity(arg.len() + 8);
    out.push_str("$'");
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if disguises(c) => escape_into(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// A command line as a person should read it: each argument shell-quoted, at most
/// `cap` bytes, and when cut, `… (N more bytes)` saying how much is not shown.
pub fn command_line(argv: &[String], cap: usize) -> String {
    let mut out = String::new();
    let mut total = 0usize;
    for (i, arg) in argv.iter().enumerate() {
        let quoted = shell_quote(arg);
        let sep = if i > 0 { " " } else { "" };
        total += sep.len() + quoted.len();
        if out.len() <= cap {
            out.push_str(sep);
            out.push_str(&quoted);
        }
    }
    if out.len() > cap {
        let mut at = cap;
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.truncate(at);
    }
    if total > out.len() {
        let _ = write!(out, "… ({} more bytes)", total - out.len());
    }
    out
}

/// A process's name as people know it: argv[0], else its executable, without the
/// directory (`?` when neither is known). Not escaped: pass it through `visible`.
pub fn program_name(p: &crate::ProcessInfo) -> &str {
    p.argv
        .first()
        .or(p.exe.as_ref())
        .map_or("?", |a| a.rsplit('/').next().unwrap_or(a))
}

/// The most processes of a requester's chain shown in prompts and listings.
pub const MAX_SHOWN_CHAIN: usize = 6;

/// A requester's process chain as a person reads it, the requester first:
/// `jitc (4242) ← sh (4240) ← codex (4100) ← … (3 more)` — each program's name (`argv[0]`
/// or else its executable, without the directory) escaped, at most `cap` of them.
pub fn process_chain(chain: &[crate::ProcessInfo], cap: usize) -> String {
    let mut shown: Vec<String> = chain
        .iter()
        .take(cap)
        .map(|p| format!("{} ({})", visible(program_name(p)), p.pid))
        .collect();
    if chain.len() > cap {
        shown.push(format!("… ({} more)", chain.len() - cap));
    }
    shown.join(" ← ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_shows_names_escaped_and_counts_what_it_leaves_out() {
        let p = |pid: u32, argv0: &str| crate::ProcessInfo {
            pid,
            exe: None,
            argv: vec![argv0.to_owned()],
        };
        let chain = [
            p(4242, "/usr/bin/jitc"),
            p(4240, "sh\x1b[8m"),
            p(4100, "codex\nforged"),
            crate::ProcessInfo {
                pid: 1,
                exe: Some("/sbin/init".into()),
                argv: vec![],
            },
        ];
        assert_eq!(
            process_chain(&chain, 3),
            "jitc (4242) ← sh\\x1b[8m (4240) ← codex\\nforged (4100) ← … (1 more)"
        );
        assert_eq!(process_chain(&chain[3..], 3), "init (1)");
        assert_eq!(process_chain(&[], 3), "");
    }

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(visible("plain text ü"), "plain text ü");
        assert!(matches!(visible("plain"), Cow::Borrowed(_)));
        assert_eq!(visible("a\x1b[8mb"), "a\\x1b[8mb");
        assert_eq!(visible("x\ry\nz\t"), "x\\ry\\nz\\t");
        assert_eq!(visible("\u{7f}\u{9b}"), "\\x7f\\u009b");
        assert_eq!(visible("evil\u{202e}txt.sh"), "evil\\u202etxt.sh");
        assert_eq!(visible("a\u{2066}b\u{2069}"), "a\\u2066b\\u2069");
        // Invisible format characters and blank fillers that could hide text between
        // what a person reads.
        assert_eq!(visible("ap\u{00AD}i"), "ap\\u00adi");
        assert_eq!(visible("x\u{3164}y"), "x\\u3164y");
        assert_eq!(visible("t\u{E0041}"), "t\\U000e0041");
        assert_eq!(visible("v\u{FE0F}"), "v\\ufe0f");
    }

    #[test]
    fn quotes_arguments_for_a_shell() {
        assert_eq!(shell_quote("psql"), "psql");
        assert_eq!(
            shell_quote("--host=db.example:5432"),
            "--host=db.example:5432"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("a\nb"), r"$'a\nb'");
        assert_eq!(shell_quote("\x1b[8m'x'\\"), r"$'\x1b[8m\'x\'\\'");
        assert_eq!(shell_quote("\u{202e}"), r"$'\u202e'");
    }

    #[test]
    fn long_command_lines_are_cut_with_a_count() {
        let argv: Vec<String> = vec!["echo".into(), "a".repeat(600), "tail".into()];
        let shown = command_line(&argv, MAX_SHOWN_ARGV);
        assert!(shown.starts_with("echo aaa"));
        let full = 4 + 1 + 600 + 1 + 4;
        assert!(
            shown.ends_with(&format!("… ({} more bytes)", full - MAX_SHOWN_ARGV)),
            "{shown}"
        );
        assert_eq!(shown.find('…'), Some(MAX_SHOWN_ARGV));
        assert_eq!(command_line(&["ls".into(), "-l".into()], 512), "ls -l");
        // Cut inside a multi-byte character: at its start.
        let wide: Vec<String> = vec!["é".repeat(300)];
        let shown = command_line(&wide, 12);
        assert_eq!(shown, "'ééééé… (591 more bytes)");
    }
}

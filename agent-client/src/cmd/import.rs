//! `jitc import FILE.env`: move a plaintext `.env` into the vault and print the
//! reference file (`KEY=jitc://NAME`) to commit in its place — the same lines in the same
//! order, comments kept, with plain settings (`PORT=3000`, `DEBUG=true`) left as they
//! are unless `--all`. Values are never printed.
//!
//! dotenvy (through `read_env_file`) decides what each value is; this file only finds
//! where each entry stands in the file, by following the same rules dotenvy uses to
//! cut a file into entries (`QuotedLines` in dotenvy 0.15), so that comments and blank
//! lines can be carried over.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use jitc::error::note;
use jitc::exec::inject::{EnvEntry, read_env_file};
use jitc::scan::{plain_setting, shown};
use jitc::start::connect_or_start;
use jitc::{Error, Result};
use jitc_protocol::names::check_secret_name;
use jitc_protocol::{AddSecret, ErrorCode, SecretBytes};
use zeroize::Zeroizing;

use super::emit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .env file to import (left in place)
    file: PathBuf,
    /// Prefix for the secret names, e.g. "myapp/" stores KEY as myapp/KEY
    #[arg(long, value_name = "P", default_value = "")]
    prefix: String,
    /// Overwrite secrets that exist already
    #[arg(long)]
    replace: bool,
    /// Store every value, also plain settings (numbers, booleans, hosts and ports, URLs
    /// without credentials, NODE_ENV, LOG_LEVEL, *_HOST, *_PORT, …)
    #[arg(long)]
    all: bool,
    /// Read the vault passphrase (needed to replace secrets, or to add ones a policy
    /// rule guards) from the first line of stdin
    #[arg(long)]
    passphrase_stdin: bool,
}

/// A `.env` larger than this is not one.
const MAX_ENV_FILE: u64 = 1 << 20;

/// One entry, comment or blank line of the file, as dotenvy cuts it.
#[derive(Debug, PartialEq, Eq)]
struct Unit<'a> {
    /// 1-based number of its first line.
    line: usize,
    /// Its lines as written (a quoted value may span several), without the last newline.
    text: &'a str,
    /// What dotenvy parses: `text` without a trailing comment.
    body: &'a str,
    /// The trailing ` # comment`, if any.
    comment: Option<&'a str>,
}

impl Unit<'_> {
    /// Whether dotenvy makes an entry of it (not blank, not a comment).
    fn is_entry(&self) -> bool {
        let b = self.body.trim();
        !b.is_empty() && !b.starts_with('#')
    }

    /// The key and whether it is written `export KEY=…`, as dotenvy reads them.
    fn key(&self) -> (&str, bool) {
        fn key_at(s: &str) -> (&str, &str) {
            let end = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(s.len());
            (&s[..end], s[end..].trim_start())
        }
        let (key, rest) = key_at(self.body.trim_start());
        if key == "export" && !rest.starts_with('=') {
            (key_at(rest).0, true)
        } else {
            (key, false)
        }
    }

    /// The trailing comment, wherever dotenvy finds it: cut off by its line reader
    /// (`KEY=v # c`), or skipped by its value parser after the value ended at
    /// unquoted whitespace (`KEY='v'  # c`). Only asked of values without `$`
    /// outside single quotes, where dotenvy's substitution does not come in.
    fn comment(&self) -> Option<&str> {
        if self.comment.is_some() {
            return self.comment;
        }
        let value = self.body.split_once('=')?.1.trim();
        let (mut strong, mut weak, mut escaped, mut ended) = (false, false, false, false);
        for (at, c) in value.char_indices() {
            if ended {
                if c == '#' {
                    return Some(&value[at..]);
                }
            } else if escaped {
                escaped = false;
            } else if strong {
                strong = c != '\'';
            } else if weak {
                match c {
                    '"' => weak = false,
                    '\\' => escaped = true,
                    _ => {}
                }
            } else {
                match c {
                    '\'' => strong = true,
                    '"' => weak = true,
                    '\\' => escaped = true,
                    ' ' | '\t' => ended = true,
                    _ => {}
                }
            }
        }
        None
    }

    /// Whether dotenv would expand something in the value (`$` outside single quotes):
    /// importing the expansion would silently store something other than the file says.
    fn expands(&self) -> bool {
        let rest = self
            .body
            .split_once('=')
            .map_or("", |(_, r)| r)
            .trim_start();
        !rest.starts_with('\'') && rest.contains('$')
    }
}

/// dotenvy's states while it looks for the end of an entry (`eval_end_state`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Complete,
    Escape,
    StrongOpen,
    StrongOpenEscape,
    WeakOpen,
    WeakOpenEscape,
    Comment,
    WhiteSpace,
}

/// Where in `line` the state machine stops (a comment's `#`) and in which state.
fn end_state(mut state: State, line: &str) -> (usize, State) {
    let mut pos = 0;
    for (at, c) in line.char_indices() {
        pos = at;
        state = match state {
            State::WhiteSpace => match c {
                '#' => return (pos, State::Comment),
                '\\' => State::Escape,
                '"' => State::WeakOpen,
                '\'' => State::StrongOpen,
                _ => State::Complete,
            },
            State::Escape => State::Complete,
            State::Complete => match c {
                c if c.is_whitespace() && c != '\n' && c != '\r' => State::WhiteSpace,
                '\\' => State::Escape,
                '"' => State::WeakOpen,
                '\'' => State::StrongOpen,
                _ => State::Complete,
            },
            State::WeakOpen => match c {
                '\\' => State::WeakOpenEscape,
                '"' => State::Complete,
                _ => State::WeakOpen,
            },
            State::WeakOpenEscape => State::WeakOpen,
            State::StrongOpen => match c {
                '\\' => State::StrongOpenEscape,
                '\'' => State::Complete,
                _ => State::StrongOpen,
            },
            State::StrongOpenEscape => State::StrongOpen,
            State::Comment => return (pos, State::Comment),
        };
    }
    (pos, state)
}

/// `text` cut into units the way dotenvy's line reader cuts it.
fn units(text: &str) -> Vec<Unit<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut line = 1;
    while start < text.len() {
        let mut state = State::Complete;
        let mut end = start;
        let mut lines = 0;
        let mut comment_at = None;
        loop {
            let piece_end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
            let piece = &text[end..piece_end];
            lines += 1;
            if text[start..piece_end].trim_start().starts_with('#') {
                end = piece_end;
                break;
            }
            let (pos, s) = end_state(state, piece);
            state = s;
            let at_end = piece_end == text.len();
            end = piece_end;
            match state {
                State::Comment => {
                    comment_at = Some(piece_end - piece.len() + pos);
                    break;
                }
                State::Complete => break,
                // An entry left open at the end of the file: dotenvy refused it
                // already, so this is not reached with a file it accepted.
                _ if at_end => break,
                _ => {}
            }
        }
        let text_of = |to: usize| text[start..to].trim_end_matches(['\n', '\r']);
        let whole = text_of(end);
        let (body, comment) = match comment_at {
            Some(at) => (
                &text[start..at],
                Some(text_of(end)[at - start..].trim_end()),
            ),
            None => (whole, None),
        };
        out.push(Unit {
            line,
            text: whole,
            body,
            comment,
        });
        line += lines;
        start = end;
    }
    out
}

/// Whether stdout is `file` itself (`jitc import .env > .env`, or `>>`).
fn output_is(file: &Path) -> bool {
    match (
        std::fs::metadata(file),
        std::fs::metadata("/proc/self/fd/1"),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What becomes of one entry.
enum Fate {
    /// Stored as this secret name; the line becomes a reference.
    Store(String),
    /// Left as written: a reference already, empty, or a plain setting.
    Keep,
}

pub fn run(args: Args) -> Result<u8> {
    let shown_file = shown(&args.file.display().to_string());
    let (entries, text) = read(&args.file, &shown_file)?;
    let units = units(&text);
    let entry_units: Vec<&Unit> = units.iter().filter(|u| u.is_entry()).collect();
    let same = entry_units.len() == entries.len()
        && entry_units
            .iter()
            .zip(&entries)
            .all(|(u, (key, _))| u.key().0 == key);
    if !same {
        return Err(Error::failure(format!(
            "{shown_file} changed while jitc read it; nothing was imported: run the import again"
        )));
    }
    let (fates, kept) = decide(&args, &shown_file, &entry_units, &entries)?;
    let to_store: Vec<(&str, &str)> = entries
        .iter()
        .zip(&fates)
        .filter_map(|((_, entry), fate)| match (entry, fate) {
            (EnvEntry::Plain(v), Fate::Store(name)) => Some((name.as_str(), v.as_str())),
            _ => None,
        })
        .collect();
    if to_store.is_empty() && kept.is_empty() {
        return Err(Error::bad_input(format!(
            "{shown_file} holds no values to import, only jitc:// references and empty values; it is a reference file already"
        )));
    }
    if !to_store.is_empty() {
        store(&args, &to_store)?;
    }
    emit(&reference_file(&units, &fates))?;
    if !kept.is_empty() {
        let mut names = kept.iter().take(8).copied().collect::<Vec<_>>().join(", ");
        if kept.len() > 8 {
            names.push_str(", …");
        }
        note(&format!(
            "kept {} as written, not in the vault: {names}; add --all to store them too",
            super::plural(kept.len() as u64, "plain setting")
        ));
    }
    if to_store.is_empty() {
        note(&format!(
            "imported nothing from {shown_file}: every value is a plain setting or a reference"
        ));
    } else {
        note(&format!(
            "imported {} from {shown_file}; it still holds {} in plain text: once the reference file works, delete it (shred -u {shown_file})",
            super::plural(to_store.len() as u64, "secret"),
            if to_store.len() == 1 { "it" } else { "them" }
        ));
    }
    Ok(0)
}

/// The file's entries (by dotenvy) and its text, after the checks that come before
/// reading: not our own output, not oversized, not empty.
fn read(file: &Path, shown_file: &str) -> Result<(Vec<(String, EnvEntry)>, String)> {
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    if output_is(file) {
        let why = if size == 0 {
            "the shell emptied it before jitc could read it: restore it first, then"
        } else {
            "jitc would write into the file it reads;"
        };
        return Err(Error::bad_input(format!(
            "the output goes to {shown_file} itself — {why} write the reference file elsewhere ('jitc import {shown_file} > {shown_file}.jitc')"
        )));
    }
    if size > MAX_ENV_FILE {
        return Err(Error::bad_input(format!(
            "{shown_file} is over 1 MiB: not a .env file; import a .env file"
        )));
    }
    let entries = read_env_file(file)?;
    if entries.is_empty() {
        return Err(Error::bad_input(format!(
            "{shown_file} holds no KEY=value lines, so there is nothing to import (if 'jitc import {shown_file} > {shown_file}' emptied it, restore it first)"
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| {
        Error::local(
            ErrorCode::IoErr,
            format!("cannot read {shown_file} ({})", jitc::scan::os_reason(&e)),
        )
    })?;
    Ok((entries, text))
}

/// What becomes of each entry, and the names of the plain settings kept as written.
/// Refuses (before anything is stored) a value dotenv would expand, a name the vault
/// would refuse, and a key set twice.
fn decide<'e>(
    args: &Args,
    shown_file: &str,
    units: &[&Unit],
    entries: &'e [(String, EnvEntry)],
) -> Result<(Vec<Fate>, Vec<&'e str>)> {
    let mut fates = Vec::new();
    let mut kept = Vec::new();
    for (unit, (key, entry)) in units.iter().zip(entries) {
        let fate = match entry {
            EnvEntry::Secret(_) => Fate::Keep,
            EnvEntry::Plain(v) if v.is_empty() => Fate::Keep,
            EnvEntry::Plain(v) if !args.all && plain_setting(key, v) => {
                kept.push(key.as_str());
                Fate::Keep
            }
            EnvEntry::Plain(_) => {
                if unit.expands() {
                    return Err(Error::bad_input(format!(
                        "{shown_file}: line {} has a '$' that dotenv would expand; put that value in single quotes to import it as written",
                        unit.line
                    )));
                }
                let name = format!("{}{key}", args.prefix);
                check_secret_name(&name).map_err(|why| {
                    Error::bad_input(format!(
                        "secret name '{}' {why}; choose another --prefix",
                        shown(&name)
                    ))
                })?;
                let first = units
                    .iter()
                    .zip(entries)
                    .find(|(_, (k, _))| k == key)
                    .map_or(unit.line, |(u, _)| u.line);
                if first != unit.line {
                    return Err(Error::bad_input(format!(
                        "{shown_file}: {key} is set twice (lines {first} and {}); keep one and import again",
                        unit.line
                    )));
                }
                Fate::Store(name)
            }
        };
        fates.push(fate);
    }
    Ok((fates, kept))
}

/// Stores `(name, value)` pairs: all or, without `--replace`, none if a name exists.
fn store(args: &Args, to_store: &[(&str, &str)]) -> Result<()> {
    let mut client = connect_or_start()?;
    if !args.replace {
        let existing = client.list()?;
        let clash: Vec<&str> = to_store
            .iter()
            .filter(|(n, _)| existing.iter().any(|s| s.name == *n))
            .map(|(n, _)| *n)
            .collect();
        if !clash.is_empty() {
            return Err(Error::local(
                ErrorCode::Failure,
                format!(
                    "{} {} already: nothing was imported; add --replace to overwrite, or use --prefix",
                    clash.join(", "),
                    if clash.len() == 1 { "exists" } else { "exist" }
                ),
            ));
        }
    }
    // Asked for once, if a write needs it (replacing, or a name a rule guards).
    let mut passphrase: Option<Zeroizing<Vec<u8>>> = if args.passphrase_stdin {
        Some(Zeroizing::new(
            jitc::prompt::read_stdin_line("the passphrase")?
                .expose()
                .to_vec(),
        ))
    } else {
        None
    };
    for (stored, (name, value)) in to_store.iter().enumerate() {
        let add = |p: Option<&Zeroizing<Vec<u8>>>| AddSecret {
            name: (*name).to_owned(),
            value: SecretBytes::from_slice(value.as_bytes()),
            description: Some(format!("imported from {}", args.file.display())),
            replace: args.replace,
            canary: false,
            passphrase: p.map(|p| SecretBytes::from_slice(p)),
        };
        let result = client.add(add(passphrase.as_ref())).and_then(|w| match w {
            jitc::Written::Done => Ok(()),
            jitc::Written::NeedsPassphrase(what) => {
                if passphrase.is_some() || std::fs::File::open("/dev/tty").is_err() {
                    return Err(Error::local(
                        ErrorCode::Refused,
                        format!(
                            "{what}; run this at your terminal, or give the passphrase on the first line of stdin with --passphrase-stdin"
                        ),
                    ));
                }
                let p = jitc::prompt::ask_hidden(&format!("Vault passphrase ({what}): "))?;
                let p = Zeroizing::new(p.expose().to_vec());
                let again = client.add(add(Some(&p)));
                passphrase = Some(p);
                match again? {
                    jitc::Written::Done => Ok(()),
                    jitc::Written::NeedsPassphrase(what) => {
                        Err(Error::local(ErrorCode::Refused, what))
                    }
                }
            }
        });
        result.inspect_err(|_| {
            if stored > 0 {
                note(&format!(
                    "{} imported before this failed",
                    plural(stored, "secret was", "secrets were")
                ));
            }
        })?;
    }
    Ok(())
}

/// `n` with the singular or plural phrase.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The file again, line for line, with each stored entry replaced by its reference.
fn reference_file(units: &[Unit], fates: &[Fate]) -> String {
    let mut out = String::new();
    let mut fates = fates.iter();
    for unit in units {
        let fate = if unit.is_entry() { fates.next() } else { None };
        match fate {
            Some(Fate::Store(name)) => {
                let (key, export) = unit.key();
                if export {
                    out.push_str("export ");
                }
                out.push_str(&format!("{key}=jitc://{name}"));
                if let Some(c) = unit.comment() {
                    out.push(' ');
                    out.push_str(c);
                }
            }
            _ => out.push_str(unit.text),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(usize, &str, Option<&str>)> {
        units(text)
            .into_iter()
            .map(|u| (u.line, u.body, u.comment))
            .collect()
    }

    #[test]
    fn units_follow_dotenvy() {
        let text = "# head\n\nA=1 # one\nexport B='x # y'\nC=\"multi\nline\"\nD=v#not-a-comment\n  # indented\nE=last";
        assert_eq!(
            lines(text),
            [
                (1, "# head", None),
                (2, "", None),
                (3, "A=1 ", Some("# one")),
                (4, "export B='x # y'", None),
                (5, "C=\"multi\nline\"", None),
                (7, "D=v#not-a-comment", None),
                (8, "  # indented", None),
                (9, "E=last", None),
            ]
        );
    }
}

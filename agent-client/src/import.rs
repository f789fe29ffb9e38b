//! Reading a plaintext `.env` for import: which entries become secrets (named with a
//! prefix), which stay as written (plain settings, references, empty values), and the
//! reference file (`KEY=jitc://NAME`) to keep in its place — the same lines in the same
//! order, comments kept. Values are never printed. Shared by `jitc import` and the MCP
//! server's `import_env_file`.
//!
//! dotenvy (through `read_env_file`) decides what each value is; this file only finds
//! where each entry stands in the file, by following the same rules dotenvy uses to
//! cut a file into entries (`QuotedLines` in dotenvy 0.15), so that comments and blank
//! lines can be carried over.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use jitc_protocol::ErrorCode;
use jitc_protocol::names::check_secret_name;
use zeroize::Zeroizing;

use crate::exec::inject::{EnvEntry, read_env_file};
use crate::scan::{plain_setting, shown};
use crate::{Error, Result};

/// An import worked out, nothing stored yet.
#[derive(Debug)]
pub struct Prepared {
    /// `(secret name, value)` for each entry to store, in file order.
    pub to_store: Vec<(String, Zeroizing<String>)>,
    /// The reference file to keep in the `.env`'s place.
    pub reference: String,
    /// Keys of the plain settings kept as written.
    pub kept: Vec<String>,
    /// The file as messages show it.
    pub shown: String,
}

/// Reads `file` and decides each entry: stored as `prefix`+KEY, or (a plain setting,
/// unless `all`) kept as written. Refuses, before anything is stored, what could not be
/// imported faithfully (see `decide`) and a file with nothing in it to import.
pub fn prepare(file: &Path, prefix: &str, all: bool) -> Result<Prepared> {
    let shown_file = shown(&file.display().to_string());
    let (entries, text) = read(file, &shown_file)?;
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
    let (fates, kept) = decide(prefix, all, &shown_file, &entry_units, &entries)?;
    let to_store: Vec<(String, Zeroizing<String>)> = entries
        .iter()
        .zip(&fates)
        .filter_map(|((_, entry), fate)| match (entry, fate) {
            (EnvEntry::Plain(v), Fate::Store(name)) => {
                Some((name.clone(), Zeroizing::new(v.as_str().to_owned())))
            }
            _ => None,
        })
        .collect();
    if to_store.is_empty() && kept.is_empty() {
        return Err(Error::bad_input(format!(
            "{shown_file} holds no values to import, only jitc:// references and empty values; it is a reference file already"
        )));
    }
    Ok(Prepared {
        reference: reference_file(&units, &fates),
        kept: kept.into_iter().map(str::to_owned).collect(),
        to_store,
        shown: shown_file,
    })
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
    let text = crate::exec::inject::read_capped(file, MAX_ENV_FILE).map_err(|e| {
        Error::local(
            ErrorCode::IoErr,
            format!("cannot read {shown_file} ({})", crate::scan::os_reason(&e)),
        )
    })?;
    Ok((entries, text))
}

/// What becomes of each entry, and the names of the plain settings kept as written.
/// Refuses (before anything is stored) a value dotenv would expand, a name the vault
/// would refuse, and a key set twice.
fn decide<'e>(
    prefix: &str,
    all: bool,
    shown_file: &str,
    units: &[&Unit],
    entries: &'e [(String, EnvEntry)],
) -> Result<(Vec<Fate>, Vec<&'e str>)> {
    let mut fates = Vec::new();
    let mut kept = Vec::new();
    // Where each key is first set: one pass, so a file of many keys stays linear.
    let mut first_line: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (unit, (key, _)) in units.iter().zip(entries) {
        first_line.entry(key.as_str()).or_insert(unit.line);
    }
    for (unit, (key, entry)) in units.iter().zip(entries) {
        let fate = match entry {
            EnvEntry::Secret(_) => Fate::Keep,
            EnvEntry::Plain(v) if v.is_empty() => Fate::Keep,
            EnvEntry::Plain(v) if !all && plain_setting(key, v) => {
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
                let name = format!("{prefix}{key}");
                check_secret_name(&name).map_err(|why| {
                    Error::bad_input(format!(
                        "secret name '{}' {why}; choose another --prefix",
                        shown(&name)
                    ))
                })?;
                let first = first_line.get(key.as_str()).copied().unwrap_or(unit.line);
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

//! The forms of a value that are masked in a command's output and kept off command
//! lines and out of the audit log ([`encodings`]): the value itself and its base64 (the
//! stable interior at all three alignments, standard and URL alphabets), hex (lower,
//! upper), percent-encoded (RFC 3986, Python's `quote` and `quote_plus`, JavaScript's
//! `encodeURIComponent` and `URLSearchParams`; upper and lower case), JSON-escaped
//! (serde/JavaScript, Python's ASCII-only default, Go's HTML-safe, PHP's `\/`) and, for
//! a multi-line value, CRLF forms. [`output_forms`] adds the forms only output needs,
//! too many to look for on every lease: base64 wrapped into lines (coreutils, PEM) and
//! each long line of a multi-line value on its own.
//!
//! Every form holds secret bytes. Each is written into a buffer allocated once at its
//! exact size (a buffer that grows leaves a copy of what it held behind, unwiped), no
//! intermediate copy is made, and forms left out (too short, repeated) are wiped before
//! they are dropped. The caller owns the forms returned and wipes them.

use zeroize::Zeroize;

use crate::names::MIN_MASKED_LEN;

pub const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const LOWER: &[u8; 16] = b"0123456789abcdef";
const UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Line widths base64 is wrapped at: 76 (MIME; coreutils `base64`, Python's
/// `encodebytes`) and 64 (PEM; `openssl base64`, `base64 -w 64`).
const WRAP_WIDTHS: [usize; 2] = [64, 76];

/// Lines of a multi-line value at least this long are masked on their own (a PEM key
/// printed line by line, indented in YAML, or one line per log record). Shorter lines
/// (`-----END…`, a blank line) would match ordinary output.
pub const LINE_MIN: usize = 16;

/// Base64 without padding.
pub fn base64(data: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity((data.len() * 4).div_ceil(3));
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

/// Where the base64 characters that depend on `len` bytes alone lie when those bytes
/// start `offset` bytes into a 3-byte group: `first..last` (empty when there are none).
fn interior_span(len: usize, offset: usize) -> (usize, usize) {
    let first = (8 * offset).div_ceil(6);
    let last = (8 * (offset + len)) / 6;
    (first, last.max(first))
}

/// Hands `emit` the base64 characters of `value` that depend on it alone when it starts
/// `offset` bytes into a 3-byte group — what any base64 text containing the value must
/// contain — numbered from 0. Reads the value in place (the bytes around it count as
/// zeros), so no padded copy of it is made.
fn each_interior_char(
    value: &[u8],
    offset: usize,
    alphabet: &[u8; 64],
    mut emit: impl FnMut(usize, u8),
) {
    let (first, last) = interior_span(value.len(), offset);
    if first == last {
        return;
    }
    let byte = |i: usize| {
        i.checked_sub(offset)
            .and_then(|i| value.get(i))
            .copied()
            .unwrap_or(0)
    };
    // Group g of the stream is bytes 3g..3g+3 and characters 4g..4g+4.
    for g in first / 4..=(last - 1) / 4 {
        let n = (u32::from(byte(3 * g)) << 16)
            | (u32::from(byte(3 * g + 1)) << 8)
            | u32::from(byte(3 * g + 2));
        for i in 0..4 {
            let c = 4 * g + i;
            if (first..last).contains(&c) {
                emit(c - first, alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
            }
        }
    }
}

/// The base64 characters that depend on `value` alone when it starts `offset` bytes
/// into a 3-byte group.
fn base64_interior(value: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let (first, last) = interior_span(value.len(), offset);
    let mut out = Vec::with_capacity(last - first);
    each_interior_char(value, offset, alphabet, |_, c| out.push(c));
    out
}

/// The standard base64 interior of `value` (at `offset`) as it appears in text wrapped
/// every `width` characters, when the interior's character `phase` begins a line
/// (and so does every `width`-th after it): a `\n` before each of those.
fn wrapped_interior(value: &[u8], offset: usize, width: usize, phase: usize) -> Vec<u8> {
    let (first, last) = interior_span(value.len(), offset);
    let len = last - first;
    let breaks = match phase {
        _ if phase >= len => 0,
        0 => (len - 1) / width,
        _ => 1 + (len - 1 - phase) / width,
    };
    let mut out = Vec::with_capacity(len + breaks);
    each_interior_char(value, offset, B64_STD, |i, c| {
        if i > 0 && i >= phase && (i - phase).is_multiple_of(width) {
            out.push(b'\n');
        }
        out.push(c);
    });
    out
}

/// `data`'s standard base64, padded, with a newline after every `width` characters (as
/// coreutils `base64` writes it at 76, PEM at 64): what test vectors of wrapped output
/// are made with.
pub fn base64_wrapped(data: &[u8], width: usize) -> Vec<u8> {
    let mut enc = base64(data, B64_STD);
    while !enc.len().is_multiple_of(4) {
        enc.push(b'=');
    }
    let mut out = Vec::with_capacity(enc.len() + enc.len() / width.max(1) + 1);
    for line in enc.chunks(width.max(1)) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

pub fn hex(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * value.len());
    for &b in value {
        out.extend_from_slice(&[digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]);
    }
    out
}

/// How a percent-encoder treats the bytes on which encoders differ. Every encoder keeps
/// ASCII letters and digits and `-._`, and escapes every other byte but these.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PercentStyle {
    /// RFC 3986: keeps only the unreserved characters (`~` too). Python's
    /// `quote(v, safe='')`.
    Rfc3986,
    /// Python's `quote(v)`: keeps `/` too.
    KeepSlash,
    /// JavaScript's `encodeURIComponent`: keeps `!'()*` too.
    Js,
    /// Python's `quote_plus` (`urlencode`), Go's `QueryEscape`: a space becomes `+`.
    FormPlus,
    /// WHATWG forms (`URLSearchParams`, Java's `URLEncoder`): keeps `*`, escapes `~`,
    /// a space becomes `+`.
    Whatwg,
}

/// What a percent-encoder does with one byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Treat {
    Keep,
    Escape,
    Plus,
}

impl PercentStyle {
    const ALL: [PercentStyle; 5] = [
        PercentStyle::Rfc3986,
        PercentStyle::KeepSlash,
        PercentStyle::Js,
        PercentStyle::FormPlus,
        PercentStyle::Whatwg,
    ];

    /// How the style treats each class of [`percent_class`].
    const fn treats(self) -> [Treat; 5] {
        use Treat::{Escape as E, Keep as K, Plus as P};
        match self {
            PercentStyle::Rfc3986 => [E, E, E, E, K],
            PercentStyle::KeepSlash => [K, E, E, E, K],
            PercentStyle::Js => [E, K, K, E, K],
            PercentStyle::FormPlus => [E, E, E, P, K],
            PercentStyle::Whatwg => [E, E, K, P, E],
        }
    }

    fn treat(self, b: u8) -> Treat {
        match percent_class(b) {
            Some(i) => self.treats()[i],
            None if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') => Treat::Keep,
            None => Treat::Escape,
        }
    }
}

/// The classes of bytes the styles differ on: `/`, `!'()`, `*`, space, `~`; which one
/// `b` is in.
fn percent_class(b: u8) -> Option<usize> {
    match b {
        b'/' => Some(0),
        b'!' | b'\'' | b'(' | b')' => Some(1),
        b'*' => Some(2),
        b' ' => Some(3),
        b'~' => Some(4),
        _ => None,
    }
}

/// Percent-encoding in `style` with upper- or lower-case hex `digits`.
pub fn percent_styled(value: &[u8], style: PercentStyle, digits: &[u8; 16]) -> Vec<u8> {
    let escaped = value
        .iter()
        .filter(|&&b| style.treat(b) == Treat::Escape)
        .count();
    let mut out = Vec::with_capacity(value.len() + 2 * escaped);
    for &b in value {
        match style.treat(b) {
            Treat::Keep => out.push(b),
            Treat::Plus => out.push(b'+'),
            Treat::Escape => out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]),
        }
    }
    out
}

/// RFC 3986 percent-encoding: everything but the unreserved characters.
pub fn percent(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    percent_styled(value, PercentStyle::Rfc3986, digits)
}

/// Which JSON encoder's escapes to write: they all escape `"`, `\` and control
/// characters alike, and differ in the rest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct JsonStyle {
    /// Non-ASCII as `\uXXXX` (UTF-16 units).
    pub ascii: bool,
    /// DEL as `\u007f` (Python escapes everything outside space..`~`).
    pub del: bool,
    /// `<`, `>`, `&`, U+2028 and U+2029 as `\u…` (Go's default, HTML-safe).
    pub html: bool,
    /// `/` as `\/` (PHP's default).
    pub slash: bool,
}

impl JsonStyle {
    /// serde_json, JavaScript's `JSON.stringify`, Python's `ensure_ascii=False`.
    pub const PLAIN: JsonStyle = JsonStyle {
        ascii: false,
        del: false,
        html: false,
        slash: false,
    };
    /// Python's `json.dumps` default.
    pub const PYTHON: JsonStyle = JsonStyle {
        ascii: true,
        del: true,
        ..JsonStyle::PLAIN
    };
    /// Go's `encoding/json`.
    pub const GO: JsonStyle = JsonStyle {
        html: true,
        ..JsonStyle::PLAIN
    };
    /// PHP's `json_encode`.
    pub const PHP: JsonStyle = JsonStyle {
        ascii: true,
        slash: true,
        ..JsonStyle::PLAIN
    };
    const ALL: [JsonStyle; 4] = [
        JsonStyle::PLAIN,
        JsonStyle::PYTHON,
        JsonStyle::GO,
        JsonStyle::PHP,
    ];
}

/// How one character is written inside a JSON string.
enum JsonChar {
    /// As it is (its UTF-8 bytes).
    Keep,
    /// A backslash and this letter.
    Short(u8),
    /// `\uXXXX`, one per UTF-16 unit.
    Unicode,
}

fn json_char(c: char, style: JsonStyle) -> JsonChar {
    match c {
        '"' => JsonChar::Short(b'"'),
        '\\' => JsonChar::Short(b'\\'),
        '\n' => JsonChar::Short(b'n'),
        '\r' => JsonChar::Short(b'r'),
        '\t' => JsonChar::Short(b't'),
        '\u{8}' => JsonChar::Short(b'b'),
        '\u{c}' => JsonChar::Short(b'f'),
        '/' if style.slash => JsonChar::Short(b'/'),
        c if (c as u32) < 0x20 => JsonChar::Unicode,
        '\u{7f}' if style.del => JsonChar::Unicode,
        '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if style.html => JsonChar::Unicode,
        c if style.ascii && !c.is_ascii() => JsonChar::Unicode,
        _ => JsonChar::Keep,
    }
}

/// The inside of a JSON string holding `text`, as the encoder `style` writes it; hex
/// digits in lower case, as all four write them.
pub fn json_styled(text: &str, style: JsonStyle) -> Vec<u8> {
    let len: usize = text
        .chars()
        .map(|c| match json_char(c, style) {
            JsonChar::Keep => c.len_utf8(),
            JsonChar::Short(_) => 2,
            JsonChar::Unicode => 6 * c.len_utf16(),
        })
        .sum();
    let mut out = Vec::with_capacity(len);
    for c in text.chars() {
        match json_char(c, style) {
            JsonChar::Keep => {
                let start = out.len();
                // Room for the character's bytes, written in place (no stack copy).
                out.resize(start + c.len_utf8(), 0);
                c.encode_utf8(&mut out[start..]);
            }
            JsonChar::Short(letter) => out.extend_from_slice(&[b'\\', letter]),
            JsonChar::Unicode => {
                let mut units = [0u16; 2];
                for &u in c.encode_utf16(&mut units).iter() {
                    out.extend_from_slice(b"\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(LOWER[usize::from((u >> shift) & 15)]);
                    }
                }
                units.zeroize();
            }
        }
    }
    out
}

/// The inside of a JSON string holding `value`; `ascii_only` escapes non-ASCII as
/// `\uXXXX` (Python's default), otherwise it stays UTF-8 (serde_json, JavaScript).
/// Empty if `value` is not UTF-8 (no encoder writes such a value unchanged).
pub fn json_escaped(value: &[u8], ascii_only: bool) -> Vec<u8> {
    match std::str::from_utf8(value) {
        Ok(text) if ascii_only => json_styled(text, JsonStyle::PYTHON),
        Ok(text) => json_styled(text, JsonStyle::PLAIN),
        Err(_) => Vec::new(),
    }
}

/// `value` with every `\n` written as `\r\n`, as a terminal's output processing
/// (ONLCR) shows it.
fn crlf(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + count(b'\n', value));
    for &b in value {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn count(needle: u8, hay: &[u8]) -> usize {
    hay.iter().filter(|&&b| b == needle).count()
}

/// Forms under construction: a form too short to mask is wiped at once; the rest are
/// sorted and repeats wiped at the end. (The list holds only the forms' pointers: its
/// growth copies no secret byte.)
struct Forms(Vec<Vec<u8>>);

impl Forms {
    fn with_capacity(n: usize) -> Forms {
        Forms(Vec::with_capacity(n))
    }

    fn push(&mut self, mut form: Vec<u8>) {
        if form.len() >= MIN_MASKED_LEN {
            self.0.push(form);
        } else {
            form.zeroize();
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.0.sort_unstable();
        self.0.dedup_by(|next, kept| {
            let repeat = next == kept;
            if repeat {
                next.zeroize();
            }
            repeat
        });
        self.0
    }
}

/// What the percent styles' outputs depend on: for each class of [`percent_class`] present
/// in the value, the style's treatment. Styles with the same key write the same bytes.
fn percent_key(style: PercentStyle, present: [bool; 5]) -> [Option<Treat>; 5] {
    let treats = style.treats();
    std::array::from_fn(|i| present[i].then_some(treats[i]))
}

fn push_percent_forms(forms: &mut Forms, value: &[u8]) {
    let mut present = [false; 5];
    let mut any_escape = false;
    for &b in value {
        match percent_class(b) {
            Some(i) => present[i] = true,
            None => any_escape |= PercentStyle::Rfc3986.treat(b) == Treat::Escape,
        }
    }
    let mut seen: [Option<[Option<Treat>; 5]>; 5] = [None; 5];
    for (n, style) in PercentStyle::ALL.into_iter().enumerate() {
        let key = percent_key(style, present);
        // Unchanged (the value itself) or the same as a style already written.
        let unchanged = !any_escape && key.iter().flatten().all(|&t| t == Treat::Keep);
        if unchanged || seen[..n].contains(&Some(key)) {
            continue;
        }
        seen[n] = Some(key);
        let upper = percent_styled(value, style, UPPER);
        // Lower case differs only where an escape has a letter among its digits.
        if value
            .iter()
            .any(|&b| style.treat(b) == Treat::Escape && (b >> 4 > 9 || b & 15 > 9))
        {
            forms.push(percent_styled(value, style, LOWER));
        }
        forms.push(upper);
    }
}

fn push_json_forms(forms: &mut Forms, text: &str) {
    // Which characters the styles differ on occur in the text: [escaped by all, '/',
    // '<>&', U+2028/9, other non-ASCII, DEL].
    let mut present = [false; 6];
    for c in text.chars() {
        let i = match c {
            '"' | '\\' => 0,
            c if (c as u32) < 0x20 => 0,
            '/' => 1,
            '<' | '>' | '&' => 2,
            '\u{2028}' | '\u{2029}' => 3,
            '\u{7f}' => 5,
            c if !c.is_ascii() => 4,
            _ => continue,
        };
        present[i] = true;
    }
    let key = |s: JsonStyle| -> [bool; 6] {
        let escapes = [true, s.slash, s.html, s.html || s.ascii, s.ascii, s.del];
        std::array::from_fn(|i| present[i] && escapes[i])
    };
    let mut seen: [Option<[bool; 6]>; 4] = [None; 4];
    for (n, style) in JsonStyle::ALL.into_iter().enumerate() {
        let k = key(style);
        if !k.contains(&true) || seen[..n].contains(&Some(k)) {
            continue;
        }
        seen[n] = Some(k);
        forms.push(json_styled(text, style));
    }
}

/// Every form of `value` that is masked, kept off command lines and out of the audit
/// log. Cheap enough for the agent to build on every lease.
///
/// Each form at least [`MIN_MASKED_LEN`] bytes long, sorted, without repeats. The
/// caller owns secret bytes in every one of them: wipe them when done.
pub fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Forms::with_capacity(32);
    forms.push(value.to_vec());
    for offset in 0..3 {
        forms.push(base64_interior(value, offset, B64_STD));
        forms.push(base64_interior(value, offset, B64_URL));
    }
    forms.push(hex(value, LOWER));
    forms.push(hex(value, UPPER));
    push_percent_forms(&mut forms, value);
    if let Ok(text) = std::str::from_utf8(value) {
        push_json_forms(&mut forms, text);
    }
    if value.contains(&b'\n') {
        forms.push(crlf(value));
    }
    forms.finish()
}

/// Every form of `value` that output is masked in: [`encodings`], and the forms only
/// output needs, too many to build on every lease — its standard base64 wrapped at 64
/// and 76 columns wherever a line break can fall inside it, and each line of a
/// multi-line value at least [`LINE_MIN`] bytes long.
///
/// Sorted, without repeats; the caller wipes them.
pub fn output_forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Forms(encodings(value));
    push_wrapped_forms(&mut forms, value);
    if value.contains(&b'\n') {
        for line in value.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= LINE_MIN {
                forms.push(line.to_vec());
            }
        }
    }
    forms.finish()
}

/// The value's standard base64 interior with line breaks wherever wrapping puts them.
///
/// Wrapped base64 starts at a line start and its widths are multiples of 4, so a
/// break falls before stream character 4k only. The interior of a value starting at
/// byte 3q+r begins at character 4q + [0, 2, 3][r]: a break falls before its
/// character p only where p ≡ -[0, 2, 3][r] (mod 4) — a quarter of the phases, and the
/// same single-break forms at every width until the interior is longer than a line.
fn push_wrapped_forms(forms: &mut Forms, value: &[u8]) {
    const START: [usize; 3] = [0, 2, 3];
    let interior_len = |offset| {
        let (first, last) = interior_span(value.len(), offset);
        last - first
    };
    let narrowest = WRAP_WIDTHS[0];
    let longest = (0..3).map(interior_len).max().unwrap_or(0);
    for width in WRAP_WIDTHS {
        // While every interior fits in the narrowest line, a break falls inside it once
        // at most, before the same characters whatever the width: the forms at the
        // narrowest width are all there are.
        if width > narrowest && longest <= narrowest {
            break;
        }
        for (offset, start) in START.into_iter().enumerate() {
            let len = interior_len(offset);
            let mut phase = (4 - start) % 4;
            while phase < width.min(len) {
                // Phase 0 breaks only an interior longer than a line.
                if phase > 0 || len > width {
                    forms.push(wrapped_interior(value, offset, width, phase));
                }
                phase += 4;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every character the encoders disagree on: space, `/`, `~`, `!'()*`, `<>&`, DEL,
    /// 2-, 3- and 4-byte UTF-8, U+2028.
    const MIXED: &str = "a b/c~d!e*f'(g)<h>&\u{7f}\u{e9}\u{2713}\u{1d11e}\u{2028}z";

    /// `MIXED` as independent encoders wrote it (Python 3, Node 20; Go's and PHP's
    /// JSON emulated in Python from their documented escapes).
    const VECTORS: [(&str, &str); 9] = [
        (
            "urllib.parse.quote",
            "a%20b/c~d%21e%2Af%27%28g%29%3Ch%3E%26%7F%C3%A9%E2%9C%93%F0%9D%84%9E%E2%80%A8z",
        ),
        (
            "urllib.parse.quote(safe='')",
            "a%20b%2Fc~d%21e%2Af%27%28g%29%3Ch%3E%26%7F%C3%A9%E2%9C%93%F0%9D%84%9E%E2%80%A8z",
        ),
        (
            "urllib.parse.quote_plus",
            "a+b%2Fc~d%21e%2Af%27%28g%29%3Ch%3E%26%7F%C3%A9%E2%9C%93%F0%9D%84%9E%E2%80%A8z",
        ),
        (
            "encodeURIComponent",
            "a%20b%2Fc~d!e*f'(g)%3Ch%3E%26%7F%C3%A9%E2%9C%93%F0%9D%84%9E%E2%80%A8z",
        ),
        (
            "URLSearchParams",
            "a+b%2Fc%7Ed%21e*f%27%28g%29%3Ch%3E%26%7F%C3%A9%E2%9C%93%F0%9D%84%9E%E2%80%A8z",
        ),
        (
            "json.dumps",
            "a b/c~d!e*f'(g)<h>&\\u007f\\u00e9\\u2713\\ud834\\udd1e\\u2028z",
        ),
        (
            "json.dumps(ensure_ascii=False), JSON.stringify",
            "a b/c~d!e*f'(g)<h>&\u{7f}\u{e9}\u{2713}\u{1d11e}\u{2028}z",
        ),
        (
            "Go json.Marshal",
            "a b/c~d!e*f'(g)\\u003ch\\u003e\\u0026\u{7f}\u{e9}\u{2713}\u{1d11e}\\u2028z",
        ),
        (
            "PHP json_encode",
            "a b\\/c~d!e*f'(g)<h>&\u{7f}\\u00e9\\u2713\\ud834\\udd1e\\u2028z",
        ),
    ];

    #[test]
    fn forms_match_independent_encoders() {
        let forms = encodings(MIXED.as_bytes());
        for (encoder, vector) in VECTORS {
            assert!(
                forms.iter().any(|f| f == vector.as_bytes()),
                "{encoder}: not among the forms"
            );
            // And with lower-case escapes.
            let mut lower = vector.as_bytes().to_vec();
            for i in 0..lower.len() {
                if lower[i] == b'%' {
                    lower[i + 1..i + 3].make_ascii_lowercase();
                }
            }
            assert!(forms.contains(&lower), "{encoder}: lower case missing");
        }
    }

    #[test]
    fn a_plain_token_has_only_its_base64_and_hex() {
        // Letters, digits and -_. are the same in every percent and JSON style; this
        // token's base64 has no + or /, so both alphabets agree.
        let forms = encodings(b"tok_9fQ2xLm7-Rt4Vb8.Nc1Kd6");
        assert_eq!(
            forms.len(),
            1 + 3 + 2,
            "the value, three base64 interiors, hex"
        );
    }

    #[test]
    fn the_empty_value_and_short_ones_have_no_forms() {
        assert!(encodings(b"").is_empty());
        assert!(output_forms(b"").is_empty());
        for len in 1..MIN_MASKED_LEN {
            let value = vec![b'x'; len];
            assert!(encodings(&value).iter().all(|f| f.len() >= MIN_MASKED_LEN));
        }
    }

    #[test]
    fn interior_matches_full_encoding() {
        let value = b"s3cr3t-T0ken/value+42";
        for offset in 0..3 {
            let mut buf = vec![0u8; offset];
            buf.extend_from_slice(value);
            buf.extend_from_slice(&[0, 0]);
            let full = base64(&buf, B64_STD);
            let (first, last) = interior_span(value.len(), offset);
            assert_eq!(base64_interior(value, offset, B64_STD), &full[first..last]);
        }
    }

    #[test]
    fn a_multi_line_value_has_crlf_and_line_forms() {
        let value =
            b"-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\r\nshort\nAQEFAASCBKcwggSjAgEAAoIBAQ\n";
        let cheap = encodings(value);
        assert!(cheap.iter().any(|f| f.as_slice()
            == b"-----BEGIN KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0B\r\r\nshort\r\nAQEFAASCBKcwggSjAgEAAoIBAQ\r\n"));
        let all = output_forms(value);
        for line in [
            &b"-----BEGIN KEY-----"[..],
            b"MIIEvQIBADANBgkqhkiG9w0B",
            b"AQEFAASCBKcwggSjAgEAAoIBAQ",
        ] {
            assert!(all.iter().any(|f| f == line));
            assert!(!cheap.iter().any(|f| f == line), "lines are output-only");
        }
        assert!(!all.iter().any(|f| f == b"short"), "shorter than LINE_MIN");
    }

    fn wrapped(data: &[u8], width: usize) -> Vec<u8> {
        base64_wrapped(data, width)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    proptest! {
        /// Whatever the bytes: no panic, every form long enough, sorted, each once, each
        /// written into a buffer of exactly its size (it never grew, so no copy was left
        /// behind), the value among them, and the agent's forms among the masker's.
        #[test]
        fn forms_are_well_formed(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let cheap = encodings(&value);
            let all = output_forms(&value);
            for forms in [&cheap, &all] {
                prop_assert!(forms.windows(2).all(|w| w[0] < w[1]));
                for f in forms.iter() {
                    prop_assert!(f.len() >= MIN_MASKED_LEN);
                    prop_assert_eq!(f.len(), f.capacity());
                }
                prop_assert_eq!(forms.contains(&value), value.len() >= MIN_MASKED_LEN);
            }
            prop_assert!(cheap.iter().all(|f| all.contains(f)));
        }

        /// The value's base64 inside longer data, wrapped at 64 or 76 columns, holds one
        /// of its forms wherever the value sits.
        #[test]
        fn wrapped_base64_holds_a_form(
            value in proptest::collection::vec(any::<u8>(), MIN_MASKED_LEN..200),
            before in 0usize..200,
            after in 0usize..3,
            wide in any::<bool>(),
        ) {
            let mut data = vec![b'.'; before];
            data.extend_from_slice(&value);
            data.extend(std::iter::repeat_n(b'.', after));
            let text = wrapped(&data, if wide { 76 } else { 64 });
            let forms = output_forms(&value);
            // Only forms that are not the bare value can come from base64 here.
            let found = forms.iter().filter(|f| **f != value).any(|f| contains(&text, f));
            prop_assert!(found);
        }
    }
}

//! The forms of a value that are masked in a command's output and kept off command
//! lines and out of the audit log: the value itself and its base64 (the stable
//! interior at all three alignments, standard and URL alphabets), hex (lower, upper),
//! percent-encoded (upper, lower) and JSON-escaped (as is, and ASCII-only) forms.

use crate::names::MIN_MASKED_LEN;

pub const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 without padding.
pub fn base64(data: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
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

/// The base64 characters that depend on `value` alone when it starts `offset` bytes
/// into a 3-byte group: what any base64 text containing the value must contain.
fn base64_interior(value: &[u8], offset: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut buf = vec![0u8; offset];
    buf.extend_from_slice(value);
    buf.extend_from_slice(&[0, 0]);
    let enc = base64(&buf, alphabet);
    let first = (8 * offset).div_ceil(6);
    let last = (8 * (offset + value.len())) / 6;
    enc[first..last.min(enc.len())].to_vec()
}

pub fn hex(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    value
        .iter()
        .flat_map(|b| [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]])
        .collect()
}

/// RFC 3986 percent-encoding: everything but the unreserved characters.
pub fn percent(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        }
    }
    out
}

/// The inside of a JSON string holding `value`; `ascii_only` escapes non-ASCII as
/// `\uXXXX` (Python's default), otherwise it stays UTF-8 (serde_json, JavaScript).
pub fn json_escaped(value: &[u8], ascii_only: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(value);
    let mut out = String::with_capacity(value.len() + 8);
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ascii_only && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// Every form of `value` that is masked.
///
/// Each form at least [`MIN_MASKED_LEN`] bytes long, sorted, without repeats. The
/// caller owns secret bytes in every one of them: wipe them when done.
pub fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    const LOWER: &[u8; 16] = b"0123456789abcdef";
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    let mut forms = vec![value.to_vec()];
    for offset in 0..3 {
        forms.push(base64_interior(value, offset, B64_STD));
        forms.push(base64_interior(value, offset, B64_URL));
    }
    forms.push(hex(value, LOWER));
    forms.push(hex(value, UPPER));
    forms.push(percent(value, UPPER));
    forms.push(percent(value, LOWER));
    if std::str::from_utf8(value).is_ok() {
        forms.push(json_escaped(value, false));
        forms.push(json_escaped(value, true));
    }
    forms.retain(|f| f.len() >= MIN_MASKED_LEN);
    forms.sort();
    forms.dedup();
    forms
}

//! Keeping values out of records: every occurrence of a value (or of an encoding its
//! output is masked in) in what a requester supplied is written `<concealed:NAME>`.

use jitc_protocol::ProcessInfo;
use zeroize::Zeroizing;

use crate::peer::Peer;

/// A value being leased, kept out of records: its secret's name and its bytes.
pub type Concealed<'a> = (&'a str, &'a [u8]);

/// How far concealment reaches into what a requester supplied.
///
/// Only whole occurrences may be concealed in the record of a request whose values the
/// requester does not receive: concealing the beginning of a value where an argument
/// was cut short, or a value too short to mask where it is a whole argument, would tell
/// a reader of the log (anything running as the user) how much of a guess was right.
/// Where the requester receives the values anyway (a grant), or supplied the secret
/// itself (a passphrase it typed), there is nothing to learn, and both are concealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Whole occurrences of values long enough to mask.
    Whole,
    /// Also a short value that is a whole string, and a value's beginning at a cut.
    Known,
}

/// Every string of a requester and its ancestry (executables and argv), each between
/// NUL bytes: one buffer to look for values in, made once per connection.
pub fn haystack(peer: &Peer, chain: &[ProcessInfo]) -> Vec<u8> {
    nul_joined(
        peer.exe
            .iter()
            .chain(&peer.argv)
            .chain(chain.iter().flat_map(|p| p.exe.iter().chain(&p.argv))),
    )
}

/// `strings`, each between NUL bytes: one buffer that `occurs` looks in at once.
pub fn nul_joined<'a>(strings: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let mut hay = vec![0u8];
    for s in strings {
        hay.extend_from_slice(s.as_bytes());
        hay.push(0);
    }
    hay
}

/// Whether `value` occurs in `haystack` as `reach` conceals it: anywhere, or — too
/// short to mask, and only with `Reach::Known` — as a whole string.
pub fn occurs(haystack: &[u8], value: &[u8], reach: Reach) -> bool {
    if value.is_empty() {
        return false;
    }
    if value.len() < jitc_protocol::names::MIN_MASKED_LEN {
        if reach == Reach::Whole {
            return false;
        }
        let mut whole = Vec::with_capacity(value.len() + 2);
        whole.push(0);
        whole.extend_from_slice(value);
        whole.push(0);
        return memchr::memmem::find(haystack, &whole).is_some();
    }
    memchr::memmem::find(haystack, value).is_some()
}

/// For an argument cut short (it ends with `…`, see `peer::process_info`) whose end is
/// the beginning of a value: where that beginning starts, and the value's name. The
/// longest such beginning wins; a character the cut broke in two counts with it.
pub fn cut_tail<'a>(s: &str, values: &[Concealed<'a>]) -> Option<(usize, &'a str)> {
    let head = s.strip_suffix('…')?.trim_end_matches('\u{FFFD}');
    let head = head.as_bytes();
    let mut best: Option<(usize, &str)> = None;
    for (name, value) in values {
        if value.len() < jitc_protocol::names::MIN_MASKED_LEN {
            continue;
        }
        let longest = (1..value.len().min(head.len() + 1))
            .rev()
            .find(|&k| head.ends_with(&value[..k]));
        if let Some(k) = longest
            && best.is_none_or(|(at, _)| head.len() - k < at)
        {
            best = Some((head.len() - k, name));
        }
    }
    best
}

/// `s` with each occurrence of a value replaced by `<concealed:NAME>` — with
/// `Reach::Known`, also a value too short to mask when it is the whole of `s`, and the
/// beginning of one at the end of an argument cut short; `None` when nothing is.
pub fn conceal(s: &str, values: &[Concealed<'_>], reach: Reach) -> Option<String> {
    let whole = conceal_whole(s, values, reach);
    if reach == Reach::Whole {
        return whole;
    }
    let cur = whole.as_deref().unwrap_or(s);
    match cut_tail(cur, values) {
        Some((mut at, name)) => {
            // From where the character it falls in starts.
            while !cur.is_char_boundary(at) {
                at -= 1;
            }
            Some(format!("{}<concealed:{name}>…", &cur[..at]))
        }
        None => whole,
    }
}

fn conceal_whole(s: &str, values: &[Concealed<'_>], reach: Reach) -> Option<String> {
    let mut out: Option<Vec<u8>> = None;
    for (name, value) in values {
        let cur = out.as_deref().unwrap_or(s.as_bytes());
        if value.is_empty() {
            continue;
        }
        let marker = format!("<concealed:{name}>");
        if value.len() < jitc_protocol::names::MIN_MASKED_LEN {
            if reach == Reach::Known && cur == *value {
                out = Some(marker.into_bytes());
            }
            continue;
        }
        let mut next = Vec::new();
        let mut from = 0;
        for at in memchr::memmem::find_iter(cur, value) {
            if at < from {
                continue;
            }
            next.extend_from_slice(&cur[from..at]);
            next.extend_from_slice(marker.as_bytes());
            from = at + value.len();
        }
        if from == 0 {
            continue;
        }
        next.extend_from_slice(&cur[from..]);
        out = Some(next);
    }
    out.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The label names the vault does not hold are concealed under (any of them could be a
/// value given where a name goes).
pub const UNKNOWN_NAME: &str = "unknown name";

/// Values to conceal in a record, each with the forms its output is masked in (and
/// names the vault does not hold, concealed as `unknown name`): what a lease's screen
/// found, gathered to conceal its records and refusals with.
pub struct Needles {
    forms: Vec<(String, Zeroizing<Vec<u8>>)>,
    pub unknown: Vec<String>,
}

impl Needles {
    pub fn new(unknown: Vec<String>) -> Needles {
        Needles {
            forms: Vec::new(),
            unknown,
        }
    }

    /// Adds `name`'s value: each of its forms, or — too short to mask — the value
    /// itself, concealed only where it is a whole string.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        if self.forms.iter().any(|(n, _)| n == name) {
            return;
        }
        let forms = crate::vault::screen::forms(value);
        if forms.is_empty() {
            self.forms
                .push((name.to_owned(), Zeroizing::new(value.to_vec())));
        }
        self.forms
            .extend(forms.into_iter().map(|f| (name.to_owned(), f)));
    }

    /// Unknown names first: a string given where a name goes is concealed as one,
    /// whatever else it is.
    pub fn list(&self) -> Vec<Concealed<'_>> {
        self.unknown
            .iter()
            .map(|n| (UNKNOWN_NAME, n.as_bytes()))
            .chain(self.forms.iter().map(|(n, f)| (n.as_str(), f.as_slice())))
            .collect()
    }

    pub fn conceal(&self, text: &str) -> String {
        conceal(text, &self.list(), Reach::Whole).unwrap_or_else(|| text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &[u8] = "sk-live-0123456789".as_bytes();
    const K: Reach = Reach::Known;

    #[test]
    fn values_are_concealed_whole_and_where_an_argument_was_cut_short() {
        let values: &[Concealed<'_>] = &[("api", V)];
        assert_eq!(
            conceal("Bearer sk-live-0123456789!", values, K).as_deref(),
            Some("Bearer <concealed:api>!")
        );
        assert_eq!(conceal("nothing here", values, K), None);
        // Cut inside the value: its beginning goes too.
        assert_eq!(
            conceal("xxxx sk-live-01…", values, K).as_deref(),
            Some("xxxx <concealed:api>…")
        );
        // A cut that broke a character in two (shown as U+FFFD) right after it.
        let multi: &[Concealed<'_>] = &[("m", "ключ-секрет-42".as_bytes())];
        assert_eq!(
            conceal("a=ключ-се\u{FFFD}…", multi, K).as_deref(),
            Some("a=<concealed:m>…")
        );
        // An argument not cut short keeps a mere look-alike ending.
        assert_eq!(conceal("xxxx sk-live-01", values, K), None);
    }

    #[test]
    fn whole_reach_answers_no_guess() {
        // Where the requester does not receive the value, only whole occurrences are
        // concealed: how much of a beginning matched, or whether a short guess was
        // right, must not show.
        let values: &[Concealed<'_>] = &[("api", V), ("pin", b"482")];
        assert_eq!(conceal("xxxx sk-live-01…", values, Reach::Whole), None);
        assert_eq!(conceal("482", values, Reach::Whole), None);
        assert!(!occurs(b"\x00482\x00", b"482", Reach::Whole));
        assert_eq!(
            conceal("a sk-live-0123456789 b", values, Reach::Whole).as_deref(),
            Some("a <concealed:api> b")
        );
    }
}

//! The audit log's tamper evidence: each keyed line ends with a tag,
//! HMAC-SHA256(K, previous tag ‖ the unkeyed lines since ‖ this line), K derived from
//! the vault key with HKDF. Lines written while no key is at hand (before the first
//! unlock of an agent's life, or while locked) carry no tag and are sealed by the next
//! keyed line. They enter the tag as a count and a running SHA-256 digest, which needs
//! no key: the writer keeps it while locked, and a `log_continued` line at the top of a
//! new file carries it, so each file can be checked on its own. Every
//! line carries a sequence number, so drops, insertions and reorders show even before
//! they are sealed; a checkpoint (last sequence and tag) kept in the vault and by the
//! running agent shows a cut-off tail.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub type Tag = [u8; 32];

/// The chain's HMAC key: wiped on drop, never printed.
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Key {
    /// The key's bytes (for the HMACs that use it).
    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }
}

/// The tag of the chain's first line's predecessor.
pub const GENESIS: Tag = [0; 32];

const TAG_FIELD: &str = ",\"tag\":\"";

/// The audit key for a vault key.
pub fn derive_key(vault_key: &[u8; 32]) -> Key {
    let mut k = Zeroizing::new([0u8; 32]);
    let hk = hkdf::Hkdf::<Sha256>::new(None, vault_key);
    // 32 bytes is far below HKDF-SHA256's limit.
    let _ = hk.expand(b"jitc audit chain v1", &mut *k);
    Key(k)
}

/// The digest of the unkeyed bodies so far, `digest`, with one more: SHA-256 over the
/// digest and the length-prefixed body, so no two sequences collide.
pub fn absorb(digest: &Tag, body: &str) -> Tag {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(digest);
    h.update((body.len() as u64).to_be_bytes());
    h.update(body.as_bytes());
    h.finalize().into()
}

/// HMAC over the previous tag, how many unkeyed bodies came since and their digest,
/// and this body (length-prefixed).
pub fn tag(key: &Key, prev: &Tag, pending: u64, digest: &Tag, body: &str) -> Tag {
    let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key.0[..]) else {
        return GENESIS;
    };
    mac.update(prev);
    mac.update(&pending.to_be_bytes());
    mac.update(digest);
    mac.update(&(body.len() as u64).to_be_bytes());
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Lower-case hex of a tag. By table, not `write!("{:02x}")`: this runs two or three
/// times for every record, and the formatting machinery cost more than the MAC itself
/// with SHA-NI (callgrind: ~7,800 instructions a call, now ~300).
pub fn hex(tag: &Tag) -> String {
    let mut s = String::with_capacity(64);
    push_hex(&mut s, tag);
    s
}

/// `hex(tag)`, appended to `out`.
fn push_hex(out: &mut String, tag: &Tag) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in tag {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

pub fn parse_hex(s: &str) -> Option<Tag> {
    if s.len() != 64 {
        return None;
    }
    let mut t = [0u8; 32];
    for (i, b) in t.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(t)
}

/// Seals the body (a JSON object) that `out` holds from `start` on, in place: its tag
/// appended as the last field.
fn seal_in_place(out: &mut String, start: usize, tag: &Tag) {
    if out[start..].ends_with('}') {
        out.pop();
    }
    out.push_str(TAG_FIELD);
    push_hex(out, tag);
    out.push_str("\"}");
}

/// Splits a line into its body and its tag (`None`: an unkeyed line).
pub fn unseal(line: &str) -> (String, Option<Tag>) {
    if let Some(at) = line.rfind(TAG_FIELD) {
        let rest = &line[at + TAG_FIELD.len()..];
        if let Some(t) = rest.strip_suffix("\"}").and_then(parse_hex) {
            return (format!("{}}}", &line[..at]), Some(t));
        }
    }
    (line.to_owned(), None)
}

/// The fields verification reads from a body.
pub struct Parsed {
    pub seq: u64,
    pub event: String,
    /// For `log_continued`: the tag the chain had when the file was started, and the
    /// unkeyed lines it carried then (how many, and their digest).
    pub prev_tag: Option<Tag>,
    pub pending: Option<u64>,
    pub pending_digest: Option<Tag>,
    /// How many unkeyed lines just before this one the chain gave up on (they were
    /// never sealed, and this line's chain does not cover them).
    pub unsealed_before: Option<u64>,
    /// For `log_continued`: older files retention removed, through this sequence.
    pub pruned_through: Option<u64>,
    /// For `log_continued`: written by a writer with retention (see `Event`).
    pub rotated_by_seq: bool,
}

pub fn parse(body: &str) -> Option<Parsed> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(Parsed {
        seq: v.get("seq")?.as_u64()?,
        event: v.get("event")?.as_str()?.to_owned(),
        prev_tag: v
            .get("prev_tag")
            .and_then(|t| t.as_str())
            .and_then(parse_hex),
        pending: v.get("pending").and_then(|n| n.as_u64()),
        pending_digest: v
            .get("pending_digest")
            .and_then(|t| t.as_str())
            .and_then(parse_hex),
        unsealed_before: v.get("unsealed_before").and_then(|n| n.as_u64()),
        pruned_through: v.get("pruned_through").and_then(|n| n.as_u64()),
        rotated_by_seq: v.get("rotated_by").is_some(),
    })
}

impl Parsed {
    /// The chain a `log_continued` line says it follows (`None` for other lines).
    pub fn continues(&self) -> Option<State> {
        if self.event != "log_continued" {
            return None;
        }
        Some(State {
            seq: self.seq.saturating_sub(1),
            prev: self.prev_tag?,
            pending: self.pending.unwrap_or(0),
            digest: self.pending_digest.unwrap_or(GENESIS),
        })
    }
}

/// Where the chain stands: what the next line must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub seq: u64,
    pub prev: Tag,
    /// Unkeyed bodies since `prev`: how many, and their digest (see `absorb`).
    pub pending: u64,
    pub digest: Tag,
}

impl Default for State {
    fn default() -> Self {
        State {
            seq: 0,
            prev: GENESIS,
            pending: 0,
            digest: GENESIS,
        }
    }
}

impl State {
    /// Takes one more line as written (no checking): how an agent resumes a log.
    pub fn follow(&mut self, line: &str) {
        let (body, tag) = unseal(line);
        if let Some(p) = parse(&body) {
            if let Some(from) = p.continues() {
                *self = from;
            }
            self.seq = p.seq;
            if p.unsealed_before.is_some() {
                self.drop_pending();
            }
        }
        self.take(&body, tag);
    }

    /// Forgets the unkeyed lines since the last keyed one.
    pub fn drop_pending(&mut self) {
        self.pending = 0;
        self.digest = GENESIS;
    }

    /// One more line: keyed (`tag`) or left for the next keyed line to seal.
    fn take(&mut self, body: &str, tag: Option<Tag>) {
        match tag {
            Some(t) => {
                self.prev = t;
                self.drop_pending();
            }
            None => {
                self.pending += 1;
                self.digest = absorb(&self.digest, body);
            }
        }
    }

    /// Seals `body` (already carrying `seq`) with `key`, or leaves it for later.
    pub fn append(&mut self, mut body: String, key: Option<&Key>) -> String {
        self.append_in_place(&mut body, 0, key);
        body
    }

    /// `append` for the body `out` holds from `start` on: sealed where it is, with no
    /// copy (the writer builds a batch's lines in one buffer).
    pub fn append_in_place(&mut self, out: &mut String, start: usize, key: Option<&Key>) {
        let body = &out[start..];
        let t = key.map(|k| tag(k, &self.prev, self.pending, &self.digest, body));
        self.take(body, t);
        if let Some(t) = t {
            seal_in_place(out, start, &t);
        }
    }
}

/// The outcome of checking a sequence of lines.
#[derive(Debug, Default)]
pub struct Check {
    pub lines: u64,
    pub problem: Option<String>,
    /// Unkeyed lines at the end.
    pub unsealed: u64,
    /// Unkeyed lines the chain gave up on, and where the first run of them ends.
    pub never_sealed: u64,
    pub never_sealed_at: Option<String>,
    /// The last keyed line's (seq, tag).
    pub last_keyed: Option<(u64, Tag)>,
    pub last_seq: Option<u64>,
}

/// Checks `lines` (file name, line number, text) in order against `key`. The first
/// line may be a `log_continued` marker that says what preceded it (older files rotated
/// away); otherwise the chain starts at genesis. Each of `checkpoints`, a keyed line
/// the agent knows it wrote (its own latest, and the one saved in the vault), must be
/// there unchanged, or the log's tail was cut off or rewritten.
pub fn verify<F: std::fmt::Display, L: AsRef<str>>(
    key: &Key,
    lines: impl IntoIterator<Item = (F, usize, L)>,
    checkpoints: &[(u64, Tag)],
) -> Check {
    let mut check = verify_lines(key, lines, checkpoints);
    let newest = checkpoints.iter().map(|c| c.0).max();
    if check.problem.is_none()
        && let Some(seq) = newest
        && check.last_seq.unwrap_or(0) < seq
    {
        check.problem = Some(format!(
            "the log ends at sequence {} but the agent recorded sequence {seq}: its tail was cut off",
            check.last_seq.unwrap_or(0)
        ));
    }
    check
}

fn verify_lines<F: std::fmt::Display, L: AsRef<str>>(
    key: &Key,
    lines: impl IntoIterator<Item = (F, usize, L)>,
    checkpoints: &[(u64, Tag)],
) -> Check {
    let mut check = Check::default();
    let mut state: Option<State> = None;
    for (file, n, line) in lines {
        let line = line.as_ref();
        let at = || format!("{file} line {n}");
        check.lines += 1;
        let (body, tag) = unseal(line);
        let Some(p) = parse(&body) else {
            check.problem = Some(format!("{}: not an audit record", at()));
            return check;
        };
        // A log that goes on from older files starts where its first line says.
        let continues = p.continues();
        let st = state.get_or_insert_with(|| continues.unwrap_or_default());
        if p.seq != st.seq + 1 {
            check.problem = Some(format!(
                "{}: sequence {} follows {} (a line was removed, added or moved)",
                at(),
                p.seq,
                st.seq
            ));
            return check;
        }
        // Further on, a file's first line must say where the chain really stood.
        if let Some(c) = continues
            && (c.prev != st.prev
                || c.pending != st.pending
                || (p.unsealed_before.is_none() && c.digest != st.digest))
        {
            check.problem = Some(format!(
                "{}: says the chain stood elsewhere than the lines before it show (a file was replaced, or lines removed)",
                at()
            ));
            return check;
        }
        st.seq = p.seq;
        if let Some(n) = p.unsealed_before {
            if st.pending != n {
                check.problem = Some(format!(
                    "{}: says {n} unkeyed line(s) before it were never sealed, but {} are there (a line was added or removed)",
                    at(),
                    st.pending
                ));
                return check;
            }
            check.never_sealed += n;
            if n > 0 && check.never_sealed_at.is_none() {
                check.never_sealed_at = Some(at());
            }
            st.drop_pending();
        }
        // A line the agent knows it wrote with a tag must be there with that tag.
        if checkpoints
            .iter()
            .any(|&(seq, cp)| seq == p.seq && tag != Some(cp))
        {
            check.problem = Some(format!(
                "{}: differs from the checkpoint the agent kept: the log was cut off or rewritten there",
                at()
            ));
            return check;
        }
        if let Some(t) = tag {
            if super::chain::tag(key, &st.prev, st.pending, &st.digest, &body) != t {
                check.problem = Some(format!(
                    "{}: its tag does not match (this line, or an unsealed one before it, was changed)",
                    at()
                ));
                return check;
            }
            check.last_keyed = Some((p.seq, t));
        }
        st.take(&body, tag);
        check.last_seq = Some(p.seq);
    }
    check.unsealed = state.map_or(0, |s| s.pending);
    check
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_what_formatting_gives_and_parses_back() {
        let mut tag = [0u8; 32];
        for (i, b) in tag.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0xa5;
        }
        let by_format: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&tag), by_format);
        assert_eq!(parse_hex(&by_format), Some(tag));
    }

    use super::*;

    #[test]
    fn the_key_is_never_printed() {
        assert_eq!(format!("{:?}", key()), "[redacted]");
    }

    fn key() -> Key {
        derive_key(&[7; 32])
    }

    fn log(n: u64, keyed_from: u64) -> Vec<String> {
        let k = key();
        let mut st = State::default();
        (1..=n)
            .map(|seq| {
                let body = format!("{{\"event\":\"e\",\"seq\":{seq},\"x\":\"v{seq}\"}}");
                st.append(body, (seq >= keyed_from).then_some(&k))
            })
            .collect()
    }

    fn check(lines: &[String]) -> Check {
        verify(
            &key(),
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| ("audit.log", i + 1, l.as_str())),
            &[],
        )
    }

    #[test]
    fn an_untouched_log_verifies_and_unkeyed_lines_are_sealed_later() {
        let lines = log(10, 4);
        assert!(lines[0].ends_with('}') && !lines[0].contains("\"tag\""));
        assert!(lines[5].contains("\"tag\":\""));
        let c = check(&lines);
        assert!(c.problem.is_none(), "{:?}", c.problem);
        assert_eq!((c.lines, c.unsealed), (10, 0));
        assert_eq!(c.last_keyed.map(|k| k.0), Some(10));
    }

    #[test]
    fn edits_drops_reorders_and_insertions_are_found() {
        let lines = log(8, 1);
        let mut edited = lines.clone();
        edited[3] = edited[3].replace("v4", "v5");
        assert!(check(&edited).problem.unwrap().contains("line 4"));
        let mut dropped = lines.clone();
        dropped.remove(5);
        assert!(check(&dropped).problem.unwrap().contains("line 6"));
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert!(check(&swapped).problem.unwrap().contains("line 3"));
        let mut inserted = lines.clone();
        inserted.insert(4, lines[4].clone());
        assert!(check(&inserted).problem.is_some());
        // An edited unkeyed line is caught by the keyed line that seals it.
        let mut early = log(6, 4);
        early[1] = early[1].replace("v2", "vX");
        assert!(check(&early).problem.unwrap().contains("line 4"));
        // A wrong key fails at the first keyed line.
        let lines = log(3, 1);
        let c = verify(
            &derive_key(&[8; 32]),
            lines.iter().map(|l| ("a", 1, l.as_str())),
            &[],
        );
        assert!(c.problem.is_some());
    }

    #[test]
    fn a_cut_off_tail_is_found_against_the_checkpoint() {
        let lines = log(6, 1);
        let whole = check(&lines);
        let cp = whole.last_keyed;
        let all = |ls: &[String]| {
            verify(
                &key(),
                ls.iter()
                    .enumerate()
                    .map(|(i, l)| ("audit.log", i + 1, l.as_str())),
                cp.as_slice(),
            )
        };
        assert!(all(&lines).problem.is_none());
        let cut = &lines[..4];
        assert!(
            check(cut).problem.is_none(),
            "without the checkpoint it looks fine"
        );
        assert!(all(cut).problem.unwrap().contains("cut off"));
    }

    #[test]
    fn resuming_continues_the_chain() {
        let lines = log(5, 2);
        let mut st = State::default();
        for l in &lines {
            st.follow(l);
        }
        let k = key();
        let mut all = lines.clone();
        all.push(st.append("{\"event\":\"e\",\"seq\":6}".into(), Some(&k)));
        assert!(check(&all).problem.is_none());
    }

    #[test]
    fn lines_sealed_in_one_buffer_are_the_lines_sealed_one_by_one() {
        let k = key();
        let bodies = [
            "{\"event\":\"a\",\"seq\":1}",
            "{\"event\":\"b\",\"seq\":2}",
            "{\"event\":\"c\",\"seq\":3}",
        ];
        let keyed = [Some(&k), None, Some(&k)];
        let mut one_by_one = State::default();
        let expected: String = bodies
            .iter()
            .zip(keyed)
            .map(|(b, key)| one_by_one.append((*b).to_owned(), key) + "\n")
            .collect();
        let mut in_place = State::default();
        let mut buf = String::from("left as it was\n");
        for (b, key) in bodies.iter().zip(keyed) {
            let start = buf.len();
            buf.push_str(b);
            in_place.append_in_place(&mut buf, start, key);
            buf.push('\n');
        }
        assert_eq!(buf, format!("left as it was\n{expected}"));
        assert_eq!(in_place, one_by_one);
        let lines: Vec<String> = expected.lines().map(str::to_owned).collect();
        assert_eq!(check(&lines).problem, None);
    }

    /// How lines were sealed before they were sealed in place: the format is the
    /// contract `verify` and older logs hold to.
    fn sealed_as_before(body: &str, tag: &Tag) -> String {
        let open = body.strip_suffix('}').unwrap_or(body);
        format!("{open}{TAG_FIELD}{}\"}}", hex(tag))
    }

    #[test]
    fn sealing_in_place_makes_the_bytes_sealing_made_before() {
        let k = key();
        let bodies = [
            "",
            "}",
            "{}",
            "}}",
            "no brace",
            "{\"a\":\"}\"}",
            "{\"tag\":\"00\"}",
            "{\"x\":\"é…\\u0000\"}",
        ];
        for prefix in ["", "an earlier line\n", "é"] {
            let (mut before, mut now) = (State::default(), State::default());
            let (mut expected, mut buf) = (prefix.to_owned(), prefix.to_owned());
            for (i, body) in bodies.iter().enumerate() {
                let key = (i % 3 != 1).then_some(&k);
                let t = key.map(|k| tag(k, &before.prev, before.pending, &before.digest, body));
                before.take(body, t);
                expected.push_str(
                    &t.map_or_else(|| (*body).to_owned(), |t| sealed_as_before(body, &t)),
                );
                expected.push('\n');
                let start = buf.len();
                buf.push_str(body);
                now.append_in_place(&mut buf, start, key);
                buf.push('\n');
            }
            assert_eq!(buf, expected);
            assert_eq!(now, before);
        }
    }

    #[test]
    fn tags_survive_tag_lookalikes_in_values() {
        let k = key();
        let mut st = State::default();
        let tricky = "{\"argv\":[\",\\\"tag\\\":\\\"\"],\"event\":\"e\",\"seq\":1}";
        let line = st.append(tricky.into(), Some(&k));
        let (body, tag) = unseal(&line);
        assert_eq!(body, tricky);
        assert!(tag.is_some());
    }

    #[test]
    fn a_file_going_on_from_unkeyed_lines_checks_on_its_own_and_in_sequence() {
        let k = key();
        let mut st = State::default();
        let older: Vec<String> = (1..=4)
            .map(|seq| {
                let body = format!("{{\"event\":\"e\",\"seq\":{seq}}}");
                st.append(body, (seq == 1).then_some(&k))
            })
            .collect();
        assert_eq!(st.pending, 3);
        let marker = format!(
            "{{\"event\":\"log_continued\",\"pending\":3,\"pending_digest\":\"{}\",\"prev_tag\":\"{}\",\"seq\":5}}",
            hex(&st.digest),
            hex(&st.prev)
        );
        let newer = vec![
            st.append(marker, None),
            st.append("{\"event\":\"e\",\"seq\":6}".into(), Some(&k)),
        ];
        assert!(check(&newer).problem.is_none(), "{:?}", check(&newer));
        let all: Vec<String> = older.iter().chain(&newer).cloned().collect();
        assert!(check(&all).problem.is_none());
        // A line of the older file changed: caught in sequence by the seal...
        let mut edited = all.clone();
        edited[2] = edited[2].replace("\"e\"", "\"f\"");
        assert!(check(&edited).problem.unwrap().contains("line 5"));
        // ...and a marker that misstates the chain, on its own and in sequence.
        let mut lying = newer.clone();
        lying[0] = lying[0].replace("\"pending\":3", "\"pending\":2");
        assert!(check(&lying).problem.is_some());
        let all: Vec<String> = older.iter().chain(&lying).cloned().collect();
        assert!(check(&all).problem.unwrap().contains("line 5"));
    }
}

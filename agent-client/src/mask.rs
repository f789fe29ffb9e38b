//! The streaming masker: every leased value, and its common encodings, replaced by
//! `<concealed:NAME>` in a command's output as it streams past.
//!
//! Patterns are each value of at least [`MIN_MASKED_LEN`] bytes and every form of it in
//! [`output_forms`]: its base64 (the stable interior at all three alignments, standard
//! and URL alphabets, and wrapped at 64 and 76 columns with a line break anywhere
//! inside), hex, percent-encoded and JSON-escaped forms as common encoders write them,
//! and for a multi-line value its CRLF form and each long line on its own. All
//! occurrences are found, overlapping ones included, and each maximal run of
//! overlapping occurrences is replaced, so one value cannot leak around another.
//!
//! Across reads, a stream holds back only the shortest tail that could still become
//! part of an occurrence: the earliest suffix that is a proper prefix of some pattern
//! (or an occurrence overlapping it). It is released as soon as the next bytes show
//! it cannot be, so output that cannot match is never delayed, and a value split
//! across writes, or across a pause, never escapes.

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, MatchKind};
use zeroize::Zeroizing;

/// The forms of a value the agent keeps off command lines and out of the audit log
/// (all of them masked in output too).
pub use jitc_protocol::encodings::encodings;
/// Every form of a value that is masked in output: [`encodings`] and the forms only
/// output needs (wrapped base64, the lines of a multi-line value).
pub use jitc_protocol::encodings::output_forms;
/// Values shorter than this are not masked (their encodings would match all over
/// ordinary output); `jitc exec` says so, and `masking = "required"` refuses them.
pub use jitc_protocol::names::MIN_MASKED_LEN;

/// How much of each pattern the finder looks for. Starts this long contain an 8-byte
/// block at an offset that is a multiple of 8 wherever they occur; the block filter
/// finds them.
const LONG: usize = 16;
/// log2 of the block filter's size in bits (512 KiB: stays in cache, ~1% false hits
/// with a hundred values and all their encodings).
const FILTER_BITS: u32 = 22;

fn block_hash(block: u64) -> usize {
    (block.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

/// Finds where the next occurrence may start, fast: most output has none.
///
/// It looks for the patterns' starts only — each pattern's first [`LONG`] bytes (all of
/// a shorter one): every occurrence begins where its pattern's start occurs, and the
/// overlapping automaton then settles whether one does. Many forms share their start
/// (a value's base64 wrapped with a line break somewhere inside it begins as the
/// unbroken base64 does), so the set searched stays small, and its patterns short.
///
/// Long starts go through a block filter: every 8-byte substring of every long start
/// is hashed into a bitmap, and the output is probed only at offsets that are
/// multiples of 8 — a long start contains such a block, so stretches whose blocks all
/// miss cannot hold one. Hits are confirmed by a leftmost-first automaton over the few
/// bytes around them. Short patterns (rare) get an automaton of their own.
struct Finder {
    /// A small set (one lease's few values): a plain automaton, whose SIMD prefilter
    /// beats the block filter there.
    all: Option<AhoCorasick>,
    /// The long starts (all exactly [`LONG`] bytes) and their block filter.
    long: Option<(AhoCorasick, Vec<u64>)>,
    short: Option<AhoCorasick>,
}

/// Up to this many patterns, aho-corasick's packed (SIMD) prefilter applies.
const SMALL_SET: usize = 64;

/// Why masks could not be compiled (then the command must not run): the automata
/// refused the patterns (too many states for their ids, in practice).
#[derive(Debug, thiserror::Error)]
#[error("the masks could not be compiled: {0}")]
pub struct MaskError(#[from] aho_corasick::BuildError);

impl Finder {
    fn build(patterns: &[Zeroizing<Vec<u8>>]) -> Result<Finder, MaskError> {
        let mut starts: Vec<&[u8]> = patterns.iter().map(|p| &p[..p.len().min(LONG)]).collect();
        starts.sort_unstable();
        starts.dedup();
        let automaton = |set: &[&[u8]]| -> Result<Option<AhoCorasick>, MaskError> {
            if set.is_empty() {
                return Ok(None);
            }
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(set)
                .map(Some)
                .map_err(MaskError::from)
        };
        if starts.len() <= SMALL_SET {
            return Ok(Finder {
                all: automaton(&starts)?,
                long: None,
                short: None,
            });
        }
        let (long, short): (Vec<&[u8]>, Vec<&[u8]>) =
            starts.into_iter().partition(|p| p.len() >= LONG);
        let long = match automaton(&long)? {
            None => None,
            Some(ac) => {
                let mut bits = vec![0u64; 1 << (FILTER_BITS - 6)];
                for p in &long {
                    for w in p.windows(8) {
                        let h = block_hash(u64::from_le_bytes(w.try_into().unwrap_or_default()));
                        bits[h >> 6] |= 1 << (h & 63);
                    }
                }
                Some((ac, bits))
            }
        };
        Ok(Finder {
            all: None,
            long,
            short: automaton(&short)?,
        })
    }

    /// The leftmost place at or after `at` where a pattern's start occurs.
    fn find(&self, data: &[u8], at: usize) -> Option<usize> {
        if let Some(ac) = &self.all {
            return ac
                .find(Input::new(data).span(at..data.len()))
                .map(|m| m.start());
        }
        let short = self
            .short
            .as_ref()
            .and_then(|ac| ac.find(Input::new(data).span(at..data.len())))
            .map(|m| m.start());
        let long = self.find_long(data, at, short.unwrap_or(data.len()));
        match (short, long) {
            (Some(s), Some(l)) => Some(s.min(l)),
            (s, l) => s.or(l),
        }
    }

    /// The leftmost long start at or after `at` that begins before `limit`.
    fn find_long(&self, data: &[u8], at: usize, limit: usize) -> Option<usize> {
        let (ac, bits) = self.long.as_ref()?;
        let hit = |k: usize| {
            let b = u64::from_le_bytes(data[8 * k..8 * k + 8].try_into().unwrap_or_default());
            let h = block_hash(b);
            bits[h >> 6] & (1 << (h & 63)) != 0
        };
        let blocks = data.len() / 8;
        let mut k = at.div_ceil(8);
        while k < blocks {
            // A start containing block k begins at or after 8k + 8 - LONG.
            if (8 * k + 8).saturating_sub(LONG) >= limit {
                return None;
            }
            if !hit(k) {
                k += 1;
                continue;
            }
            // The stretch every occurrence through a hit block must lie in; stretches of
            // neighbouring hits merge.
            let lo = at.max((8 * k + 8).saturating_sub(LONG));
            let mut hi = data.len().min(8 * k + LONG);
            let mut j = k + 1;
            while j < blocks && (8 * j + 8).saturating_sub(LONG) < hi {
                if hit(j) {
                    hi = data.len().min(8 * j + LONG);
                }
                j += 1;
            }
            if let Some(m) = ac.find(Input::new(data).span(lo..hi)) {
                return Some(m.start());
            }
            k = j;
        }
        None
    }
}

/// The compiled patterns of one lease's values.
pub struct Masker {
    /// Finds the next occurrence fast.
    finder: Option<Finder>,
    /// Reports every occurrence, overlapping ones included, near one that was found; and
    /// answers, anchored, whether a tail could still grow into one.
    nfa: Option<NFA>,
    /// Secret name of each pattern, by pattern index.
    owners: Vec<usize>,
    names: Vec<String>,
    /// `<concealed:NAME>` for each name.
    markers: Vec<String>,
    max_len: usize,
    /// Names of values too short to mask.
    unmasked: Vec<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("names", &self.names)
            .field("patterns", &self.owners.len())
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Compiles the masks for `values` (name, value). An error means masking cannot be
    /// done, and the command must not run.
    pub fn new<'a>(
        values: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Masker, MaskError> {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut owners = Vec::new();
        let mut names = Vec::new();
        let mut unmasked = Vec::new();
        for (name, value) in values {
            if value.len() < MIN_MASKED_LEN {
                unmasked.push(name.to_owned());
                continue;
            }
            let owner = names.len();
            names.push(name.to_owned());
            for form in output_forms(value) {
                patterns.push(Zeroizing::new(form));
                owners.push(owner);
            }
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let (finder, nfa) = if patterns.is_empty() {
            (None, None)
        } else {
            let finder = Finder::build(&patterns)?;
            let nfa = NFA::builder()
                .match_kind(MatchKind::Standard)
                .byte_classes(true)
                .build(patterns.iter().map(|p| p.as_slice()))?;
            (Some(finder), Some(nfa))
        };
        Ok(Masker {
            finder,
            nfa,
            owners,
            markers: names.iter().map(|n| format!("<concealed:{n}>")).collect(),
            names,
            max_len,
            unmasked,
        })
    }

    /// Names of leased values too short to be masked.
    pub fn unmasked(&self) -> &[String] {
        &self.unmasked
    }

    /// A stream (stdout, stderr, a terminal) to mask.
    pub fn stream(&self) -> MaskStream<'_> {
        MaskStream {
            masker: self,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    /// Whether `s` is a proper prefix of some pattern: an occurrence could still start
    /// here and finish in bytes not read yet.
    fn could_continue(&self, nfa: &NFA, s: &[u8]) -> bool {
        let Ok(mut sid) = nfa.start_state(Anchored::Yes) else {
            return false;
        };
        for &b in s {
            sid = nfa.next_state(Anchored::Yes, sid, b);
            if nfa.is_dead(sid) {
                return false;
            }
        }
        // Alive after all of `s`: some pattern is longer, unless `s` is a whole
        // pattern that nothing extends.
        !nfa.is_match(sid)
            || (0..=255u8).any(|b| !nfa.is_dead(nfa.next_state(Anchored::Yes, sid, b)))
    }

    /// Where the held-back tail of `data` starts: the earliest position from which the
    /// rest could still grow into an occurrence.
    fn hold_from(&self, nfa: &NFA, data: &[u8]) -> usize {
        let from = data.len().saturating_sub(self.max_len.saturating_sub(1));
        (from..data.len())
            .find(|&p| self.could_continue(nfa, &data[p..]))
            .unwrap_or(data.len())
    }
}

/// One output stream's masking state.
pub struct MaskStream<'a> {
    masker: &'a Masker,
    /// Bytes held back: they may be the start of an occurrence.
    pending: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for MaskStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaskStream({} bytes held)", self.pending.len())
    }
}

/// A maximal run of overlapping occurrences, and whose values they are.
struct Region {
    start: usize,
    end: usize,
    owners: Vec<usize>,
}

impl MaskStream<'_> {
    /// Masks `chunk` (following everything pushed before), handing the output to `emit`
    /// in pieces: slices of `chunk` itself where nothing is replaced (no copy), markers
    /// in between.
    pub fn push(&mut self, chunk: &[u8], emit: &mut dyn FnMut(&[u8])) {
        let Some(nfa) = &self.masker.nfa else {
            emit(chunk);
            return;
        };
        if self.pending.is_empty() {
            let keep = self.mask(nfa, chunk, false, emit);
            self.hold(&chunk[keep..]);
        } else {
            let mut data = Zeroizing::new(Vec::with_capacity(self.pending.len() + chunk.len()));
            data.extend_from_slice(&self.pending);
            data.extend_from_slice(chunk);
            let keep = self.mask(nfa, &data, false, emit);
            self.pending.clear();
            self.hold(&data[keep..]);
        }
    }

    /// Keeps `tail` back (`pending` is empty). A buffer too small is replaced, not
    /// grown: growing copies the bytes and frees the old buffer without wiping it, while
    /// the replaced one is wiped as it drops.
    fn hold(&mut self, tail: &[u8]) {
        if self.pending.capacity() < tail.len() {
            // Room for the longest tail that can be held, so this happens about once.
            let room = tail.len().max(self.masker.max_len);
            self.pending = Zeroizing::new(Vec::with_capacity(room));
        }
        self.pending.extend_from_slice(tail);
    }

    /// The stream ended: releases what was held back, masked.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        let data = Zeroizing::new(std::mem::take(&mut *self.pending));
        match &self.masker.nfa {
            Some(nfa) => {
                self.mask(nfa, &data, true, emit);
            }
            None => emit(&data),
        }
    }

    /// `push` into a vector (tests, benchmarks).
    pub fn push_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.push(chunk, &mut |s| out.extend_from_slice(s));
    }

    /// `finish` into a vector.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        self.finish(&mut |s| out.extend_from_slice(s));
    }

    /// The run of overlapping occurrences that begins with the occurrence at `start`:
    /// every occurrence starting inside the run so far joins it, until none does.
    fn region_at(&self, nfa: &NFA, data: &[u8], start: usize) -> Region {
        let max_len = self.masker.max_len;
        let mut upto = (start + 2 * max_len).min(data.len());
        loop {
            // Every occurrence starting in [start, upto), in order of start.
            let mut found: Vec<(usize, usize, usize)> = nfa
                .try_find_overlapping_iter(Input::new(&data[..upto]).span(start..upto))
                .map(|iter| {
                    iter.map(|m| {
                        (
                            m.start(),
                            m.end(),
                            self.masker.owners[m.pattern().as_usize()],
                        )
                    })
                    .collect()
                })
                .unwrap_or_default();
            found.sort_unstable();
            let mut region = Region {
                start,
                end: start,
                owners: Vec::new(),
            };
            for (s, e, owner) in found {
                if s > start && s >= region.end {
                    break;
                }
                region.end = region.end.max(e);
                if !region.owners.contains(&owner) {
                    region.owners.push(owner);
                }
            }
            // Done once nothing past `upto` could still start inside the run.
            if region.end + max_len <= upto || upto == data.len() {
                return region;
            }
            upto = (region.end + 2 * max_len).min(data.len());
        }
    }

    /// Writes `data` to `out` with every final occurrence replaced; returns where the
    /// held-back tail starts (`data.len()` at the end of the stream).
    fn mask(&self, nfa: &NFA, data: &[u8], end: bool, emit: &mut dyn FnMut(&[u8])) -> usize {
        let mut cut = if end {
            data.len()
        } else {
            self.masker.hold_from(nfa, data)
        };
        // Written out up to `at`; the finder looks on from `from`.
        let (mut at, mut from) = (0, 0);
        while let Some(start) = self.masker.finder.as_ref().and_then(|f| f.find(data, from)) {
            if start >= cut {
                break;
            }
            let r = self.region_at(nfa, data, start);
            if r.owners.is_empty() {
                // A pattern's start, but no whole pattern here.
                from = start + 1;
                continue;
            }
            // An occurrence running into the held tail is held with it: it may yet grow.
            if r.end > cut {
                cut = r.start;
                break;
            }
            if r.start > at {
                emit(&data[at..r.start]);
            }
            for &o in &r.owners {
                emit(self.masker.markers[o].as_bytes());
            }
            (at, from) = (r.end, r.end);
        }
        if cut > at {
            emit(&data[at..cut]);
        }
        cut
    }

    /// Whether bytes are held back (waiting for more output or the end).
    pub fn holding(&self) -> bool {
        !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `data` cut into consecutive writes at the sampled points.
    fn cut_at<'a>(data: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        points.sort();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&data[last..p]);
            last = p;
        }
        chunks.push(&data[last..]);
        chunks
    }

    fn mask_all(m: &Masker, chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = m.stream();
        let mut out = Vec::new();
        for c in chunks {
            s.push_into(c, &mut out);
        }
        s.finish_into(&mut out);
        out
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    use jitc_protocol::encodings::{B64_STD, B64_URL, base64, hex, json_escaped, percent};

    const VALUE: &[u8] = b"s3cr3t-T0ken/value+42";

    #[test]
    fn every_encoding_is_masked() {
        let m = Masker::new([("TOKEN", VALUE)]).unwrap();
        let lower: &[u8; 16] = b"0123456789abcdef";
        let upper: &[u8; 16] = b"0123456789ABCDEF";
        let mut cases: Vec<Vec<u8>> = vec![
            VALUE.to_vec(),
            hex(VALUE, lower),
            hex(VALUE, upper),
            percent(VALUE, upper),
            percent(VALUE, lower),
            json_escaped(b"a\"quoted\\value\n", false),
        ];
        // base64 of the value embedded at every alignment in longer data.
        for pad in 0..3 {
            for alphabet in [B64_STD, B64_URL] {
                let mut data = vec![b'x'; pad];
                data.extend_from_slice(VALUE);
                data.extend_from_slice(b"tail");
                cases.push(base64(&data, alphabet));
            }
        }
        for case in &cases {
            let m2;
            let masker = if case.starts_with(b"a\\\"") {
                m2 = Masker::new([("TOKEN", &b"a\"quoted\\value\n"[..])]).unwrap();
                &m2
            } else {
                &m
            };
            let mut data = b"before ".to_vec();
            data.extend_from_slice(case);
            data.extend_from_slice(b" after");
            let out = text(&mask_all(masker, &[&data]));
            assert!(out.contains("<concealed:TOKEN>"), "{} -> {out}", text(case));
            assert!(
                out.starts_with("before ") || out.starts_with("<concealed"),
                "{out}"
            );
        }
    }

    #[test]
    fn json_ascii_only_and_unicode() {
        let v = "pässwörd-✓".as_bytes();
        let m = Masker::new([("P", v)]).unwrap();
        let python = json_escaped(v, true);
        assert!(text(&python).contains("\\u00e4"));
        let out = mask_all(&m, &[b"{\"p\": \"", &python, b"\"}"]);
        assert_eq!(text(&out), "{\"p\": \"<concealed:P>\"}");
    }

    #[test]
    fn splits_at_every_offset_never_leak() {
        let m = Masker::new([("TOKEN", VALUE)]).unwrap();
        let mut data = b"log: token=".to_vec();
        data.extend_from_slice(VALUE);
        data.extend_from_slice(b" done\n");
        let whole = mask_all(&m, &[&data]);
        assert_eq!(text(&whole), "log: token=<concealed:TOKEN> done\n");
        for i in 0..=data.len() {
            for j in i..=data.len() {
                let out = mask_all(&m, &[&data[..i], &data[i..j], &data[j..]]);
                assert_eq!(out, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn nothing_that_cannot_match_is_held() {
        let m = Masker::new([("TOKEN", VALUE)]).unwrap();
        let mut s = m.stream();
        let mut out = Vec::new();
        s.push_into(b"hello world\n", &mut out);
        assert_eq!(out, b"hello world\n");
        assert!(!s.holding());
        // A possible start is held, and released the moment it cannot be one.
        out.clear();
        s.push_into(b"prefix s3cr", &mut out);
        assert_eq!(text(&out), "prefix ");
        assert!(s.holding());
        s.push_into(b"et", &mut out);
        assert_eq!(text(&out), "prefix s3cret");
        assert!(!s.holding());
    }

    #[test]
    fn overlapping_values_are_both_concealed() {
        let m = Masker::new([("A", &b"abcd1234"[..]), ("B", &b"1234wxyz"[..])]).unwrap();
        let out = mask_all(&m, &[b"[abcd1234wxyz]"]);
        assert_eq!(text(&out), "[<concealed:A><concealed:B>]");
        // Split inside the overlap.
        let out = mask_all(&m, &[b"[abcd12", b"34wxyz]"]);
        assert_eq!(text(&out), "[<concealed:A><concealed:B>]");
        // One value inside another.
        let m = Masker::new([("LONG", &b"xxsecretxx"[..]), ("SHORT", &b"secret"[..])]).unwrap();
        let out = mask_all(&m, &[b"(xxsecretxx)(secret)"]);
        assert_eq!(
            text(&out),
            "(<concealed:LONG><concealed:SHORT>)(<concealed:SHORT>)"
        );
    }

    #[test]
    fn short_values_are_reported_not_masked() {
        let m = Masker::new([("PIN", &b"123"[..]), ("OK", &b"long-enough"[..])]).unwrap();
        assert_eq!(m.unmasked(), ["PIN"]);
        assert_eq!(
            text(&mask_all(&m, &[b"123 long-enough"])),
            "123 <concealed:OK>"
        );
    }

    use jitc_protocol::encodings::base64_wrapped as wrapped_base64;

    #[test]
    fn wrapped_base64_is_masked_wherever_the_break_falls() {
        let value = b"s3cr3t-T0ken/value+42-long-enough-to-wrap-twice-at-64-columns-".repeat(2);
        let m = Masker::new([("TOKEN", value.as_slice())]).unwrap();
        let unwrapped = base64(&value, B64_STD);
        for width in [64, 76] {
            for before in 0..2 * width {
                let mut data = vec![b'.'; before];
                data.extend_from_slice(&value);
                data.extend_from_slice(b"...");
                let out = mask_all(&m, &[&wrapped_base64(&data, width)]);
                assert!(text(&out).contains("<concealed:TOKEN>"));
                // No 8 characters of the value's base64 survive, across lines either.
                let joined: Vec<u8> = out.iter().copied().filter(|&b| b != b'\n').collect();
                for w in unwrapped.windows(8) {
                    assert!(
                        !joined.windows(8).any(|o| o == w),
                        "width {width}, {before} bytes before"
                    );
                }
            }
        }
    }

    #[test]
    fn each_line_of_a_multi_line_value_is_masked() {
        let key = b"-----BEGIN TEST KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END TEST KEY-----";
        let m = Masker::new([("KEY", &key[..])]).unwrap();
        // Indented, as YAML would have it, and with CRLF line ends.
        let out = mask_all(
            &m,
            &[b"key: |\r\n  MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r\n  BKcwggSjAgEAAoIBAQC7\r\n"],
        );
        assert_eq!(
            text(&out),
            "key: |\r\n  <concealed:KEY>\r\n  <concealed:KEY>\r\n"
        );
        // Whole, through a terminal that writes \r\n: one marker.
        let shown: Vec<u8> = key
            .iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect();
        assert_eq!(
            text(&mask_all(&m, &[b"[", &shown, b"]"])),
            "[<concealed:KEY>]"
        );
    }

    #[test]
    fn the_start_of_a_pattern_alone_passes_through() {
        // The finder looks for the first 16 bytes of each form; output holding only
        // those is not masked, and the occurrence just after them is.
        let value = b"0123456789abcdefXYZ-rest-of-it";
        let m = Masker::new([("V", &value[..])]).unwrap();
        let mut data = value[..20].to_vec();
        data.extend_from_slice(value);
        data.extend_from_slice(b" end");
        let out = mask_all(&m, &[&data]);
        assert_eq!(text(&out), "0123456789abcdefXYZ-<concealed:V> end");
    }

    #[test]
    fn binary_data_passes_through() {
        let m = Masker::new([("K", &b"\x00\xff\x10\x80key"[..])]).unwrap();
        let data: Vec<u8> = (0..=255u8)
            .chain([0, 0xff, 0x10, 0x80, b'k', b'e', b'y'])
            .collect();
        let out = mask_all(&m, &[&data]);
        assert!(out.starts_with(&(0..=255u8).collect::<Vec<_>>()));
        assert!(out.ends_with(b"<concealed:K>"));
    }

    /// The obvious, slow masker: every occurrence of every form by brute force.
    fn reference(values: &[(String, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let mut found = Vec::new();
        for (owner, (_, v)) in values.iter().enumerate() {
            if v.len() < MIN_MASKED_LEN {
                continue;
            }
            for form in output_forms(v) {
                for (i, w) in data.windows(form.len()).enumerate() {
                    if w == form.as_slice() {
                        found.push((i, i + form.len(), owner));
                    }
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        let mut out = Vec::new();
        let mut at = 0;
        let mut k = 0;
        while k < found.len() {
            let (start, mut end, _) = found[k];
            let mut owners: Vec<usize> = Vec::new();
            while k < found.len() && (found[k].0 == start || found[k].0 < end) {
                end = end.max(found[k].1);
                if !owners.contains(&found[k].2) {
                    owners.push(found[k].2);
                }
                k += 1;
            }
            out.extend_from_slice(&data[at..start]);
            for o in owners {
                out.extend_from_slice(format!("<concealed:{}>", values[o].0).as_bytes());
            }
            at = end;
        }
        out.extend_from_slice(&data[at..]);
        out
    }

    proptest! {
        /// Several values, long and short, planted in noise (some overlapping, some
        /// encoded): the fast masker agrees with the brute-force one, whatever the cuts.
        #[test]
        fn agrees_with_brute_force(
            // Up to a dozen values: past 64 patterns the block filter takes over. Some
            // from few bytes, with line breaks: multi-line values, their lines, runs of
            // one value inside another.
            values in proptest::collection::vec(prop_oneof![
                proptest::collection::vec(any::<u8>(), 4..40),
                proptest::collection::vec(prop::sample::select(b"ab\n\r/+ <&".to_vec()), 4..60),
            ], 1..12),
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            plants in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let named: Vec<(String, Vec<u8>)> =
                values.iter().enumerate().map(|(i, v)| (format!("V{i}"), v.clone())).collect();
            let mut data = noise.clone();
            for (which, at, form) in &plants {
                let v = &values[which.index(values.len())];
                let forms = output_forms(v);
                let f = &forms[form.index(forms.len())];
                let pos = at.index(data.len() + 1);
                data.splice(pos..pos, f.iter().copied());
            }
            let m = Masker::new(named.iter().map(|(n, v)| (n.as_str(), v.as_slice()))).unwrap();
            let chunks = cut_at(&data, &cuts);
            prop_assert_eq!(mask_all(&m, &chunks), reference(&named, &data));
        }

        /// However the output is cut into writes, the result is the same as masking it
        /// whole, and no value survives in it.
        #[test]
        fn chunking_never_changes_the_result(
            value in proptest::collection::vec(any::<u8>(), 4..24),
            noise in proptest::collection::vec(any::<u8>(), 0..200),
            at in any::<prop::sample::Index>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let m = Masker::new([("V", value.as_slice())]).unwrap();
            let mut data = noise.clone();
            let pos = at.index(noise.len() + 1);
            data.splice(pos..pos, value.iter().copied());
            let whole = mask_all(&m, &[&data]);
            let chunks = cut_at(&data, &cuts);
            let out = mask_all(&m, &chunks);
            prop_assert_eq!(&out, &whole);
            // Any occurrence of the value left in the output must be inside a marker's
            // text (a value such as "ceal" is part of "<concealed:V>").
            let marker = b"<concealed:V>";
            let spans: Vec<(usize, usize)> = out
                .windows(marker.len())
                .enumerate()
                .filter(|(_, w)| w == marker)
                .map(|(i, _)| (i, i + marker.len()))
                .collect();
            for (i, w) in out.windows(value.len()).enumerate() {
                if w == value.as_slice() {
                    let inside = spans.iter().any(|&(s, e)| i >= s && i + value.len() <= e);
                    prop_assert!(inside, "value survives at {}", i);
                }
            }
        }
    }
}

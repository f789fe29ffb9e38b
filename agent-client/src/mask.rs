//! The streaming masker: every leased value, and its common encodings, replaced by
//! `<concealed:NAME>` in a command's output as it streams past.
//!
//! Patterns are each value of at least [`MIN_MASKED_LEN`] bytes and its base64 (the
//! stable interior at all three alignments, standard and URL alphabets), hex (lower,
//! upper), percent-encoded (upper, lower) and JSON-escaped (as is, and ASCII-only)
//! forms. All occurrences are found, overlapping ones included, and each maximal run of
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

/// Every form of a value that is masked (shared with the agent, which keeps the same
/// forms off command lines and out of the audit log).
pub use jitc_protocol::encodings::encodings;
/// Values shorter than this are not masked (their encodings would match all over
/// ordinary output); `jitc exec` says so, and `masking = "required"` refuses them.
pub use jitc_protocol::names::MIN_MASKED_LEN;

/// Patterns at least this long contain an 8-byte block at an offset that is a multiple
/// of 8 wherever they occur; the block filter finds them.
const LONG: usize = 16;
/// log2 of the block filter's size in bits (512 KiB: stays in cache, ~1% false hits
/// with a hundred values and all their encodings).
const FILTER_BITS: u32 = 22;

fn block_hash(block: u64) -> usize {
    (block.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

/// Finds where the next occurrence starts, fast: most output has none.
///
/// Long patterns go through a block filter: every 8-byte substring of every long
/// pattern is hashed into a bitmap, and the output is probed only at offsets that are
/// multiples of 8 — a long occurrence contains such a block, so stretches whose blocks
/// all miss cannot hold one. Hits are confirmed by a leftmost-first automaton over the
/// few bytes around them. Short patterns (rare) get an automaton of their own.
struct Finder {
    /// A small set (one lease's few values): a plain automaton, whose SIMD prefilter
    /// beats the block filter there.
    all: Option<AhoCorasick>,
    long: Option<(AhoCorasick, Vec<u64>, usize)>,
    short: Option<AhoCorasick>,
}

/// Up to this many patterns, aho-corasick's packed (SIMD) prefilter applies.
const SMALL_SET: usize = 64;

impl Finder {
    fn build(patterns: &[Zeroizing<Vec<u8>>]) -> Result<Finder, String> {
        let automaton = |set: &[&[u8]]| -> Result<Option<AhoCorasick>, String> {
            if set.is_empty() {
                return Ok(None);
            }
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(set)
                .map(Some)
                .map_err(|e| e.to_string())
        };
        if patterns.len() <= SMALL_SET {
            let all: Vec<&[u8]> = patterns.iter().map(|p| p.as_slice()).collect();
            return Ok(Finder {
                all: automaton(&all)?,
                long: None,
                short: None,
            });
        }
        let long: Vec<&[u8]> = patterns
            .iter()
            .filter(|p| p.len() >= LONG)
            .map(|p| p.as_slice())
            .collect();
        let short: Vec<&[u8]> = patterns
            .iter()
            .filter(|p| p.len() < LONG)
            .map(|p| p.as_slice())
            .collect();
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
                let max_len = long.iter().map(|p| p.len()).max().unwrap_or(LONG);
                Some((ac, bits, max_len))
            }
        };
        Ok(Finder {
            all: None,
            long,
            short: automaton(&short)?,
        })
    }

    /// The start of the leftmost occurrence at or after `at`.
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

    /// The leftmost long occurrence at or after `at` that starts before `limit`.
    fn find_long(&self, data: &[u8], at: usize, limit: usize) -> Option<usize> {
        let (ac, bits, max_len) = self.long.as_ref()?;
        let hit = |k: usize| {
            let b = u64::from_le_bytes(data[8 * k..8 * k + 8].try_into().unwrap_or_default());
            let h = block_hash(b);
            bits[h >> 6] & (1 << (h & 63)) != 0
        };
        let blocks = data.len() / 8;
        let mut k = at.div_ceil(8);
        while k < blocks {
            // An occurrence containing block k starts at or after 8k + 8 - max_len.
            if (8 * k + 8).saturating_sub(*max_len) >= limit {
                return None;
            }
            if !hit(k) {
                k += 1;
                continue;
            }
            // The stretch every occurrence through a hit block must lie in; stretches of
            // neighbouring hits merge.
            let lo = at.max((8 * k + 8).saturating_sub(*max_len));
            let mut hi = data.len().min(8 * k + max_len);
            let mut j = k + 1;
            while j < blocks && (8 * j + 8).saturating_sub(*max_len) < hi {
                if hit(j) {
                    hi = data.len().min(8 * j + max_len);
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
    ) -> Result<Masker, String> {
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
            for form in encodings(value) {
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
                .build(patterns.iter().map(|p| p.as_slice()))
                .map_err(|e| e.to_string())?;
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
            self.pending.extend_from_slice(&chunk[keep..]);
        } else {
            let mut data = Zeroizing::new(Vec::with_capacity(self.pending.len() + chunk.len()));
            data.extend_from_slice(&self.pending);
            data.extend_from_slice(chunk);
            let keep = self.mask(nfa, &data, false, emit);
            self.pending.clear();
            self.pending.extend_from_slice(&data[keep..]);
        }
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
        let mut at = 0;
        while let Some(start) = self.masker.finder.as_ref().and_then(|f| f.find(data, at)) {
            if start >= cut {
                break;
            }
            let r = self.region_at(nfa, data, start);
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
            at = r.end;
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
            for form in encodings(v) {
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
            // Up to a dozen values: past 64 patterns the block filter takes over.
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 4..40), 1..12),
            noise in proptest::collection::vec(any::<u8>(), 0..300),
            plants in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0usize..14), 0..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let named: Vec<(String, Vec<u8>)> =
                values.iter().enumerate().map(|(i, v)| (format!("V{i}"), v.clone())).collect();
            let mut data = noise.clone();
            for (which, at, form) in &plants {
                let v = &values[which.index(values.len())];
                let forms = encodings(v);
                let f = &forms[form % forms.len()];
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

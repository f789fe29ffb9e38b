//! `Screen`: every value in the vault — and each form its output is masked in (base64,
//! hex, percent, JSON) — reduced to keyed fingerprints, so that what a requester
//! supplies (argv, task, command path, its process chain) can be checked against all of
//! them in one pass, without opening a single value. A hit is only a candidate: the
//! caller confirms it by opening that one value.
//!
//! Each form is filed under a keyed hash of its last 8 bytes (4 for forms of 4–7
//! bytes): any occurrence of the form contains that window, so one pass over the
//! haystack with a window of 8 (and one of 4, if short forms exist) finds every
//! candidate, whatever the number of secrets. The window's hash is a keyed multiply-mix
//! of the window read as one integer (a couple of nanoseconds a byte), checked first
//! against a bitmap of the windows filed, and only then looked up. A keyed SipHash of
//! the whole form, at the place the window puts it, rules out almost every false
//! candidate before any value is opened. Nothing stored is a value or a piece of one;
//! the keys are random per unlock and live only in the agent's (non-dumpable) memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use jitc_protocol::names::MIN_MASKED_LEN;
use zeroize::Zeroizing;

/// The window of forms this long or longer.
const WIDE: usize = 8;
/// The window of shorter forms (each at least `MIN_MASKED_LEN`).
const NARROW: usize = MIN_MASKED_LEN;

#[derive(Debug, Clone)]
struct Entry {
    /// Keyed hash of the whole form.
    full: u64,
    len: u32,
    secret: Arc<str>,
}

/// The keyed window hashes are uniform already: the map uses them as they are.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Windows = HashMap<u64, Vec<Entry>, BuildHasherDefault<Identity>>;

/// Bits in each window bitmap (one per value of the hash's top bits).
const BITMAP_BITS: usize = 1 << 16;

/// The windows of one width: a bitmap of their hashes' top 16 bits, and the map.
struct Width {
    bitmap: Vec<u64>,
    map: Windows,
}

impl Width {
    fn new() -> Width {
        Width {
            bitmap: vec![0; BITMAP_BITS / 64],
            map: Windows::default(),
        }
    }

    fn bit(h: u64) -> (usize, u64) {
        let top = (h >> 48) as usize;
        (top / 64, 1 << (top % 64))
    }

    fn may_hold(&self, h: u64) -> bool {
        let (word, mask) = Width::bit(h);
        self.bitmap[word] & mask != 0
    }

    /// Rebuilt after a removal (a bit may serve several windows).
    fn rebuild_bitmap(&mut self) {
        self.bitmap.iter_mut().for_each(|w| *w = 0);
        for h in self.map.keys() {
            let (word, mask) = Width::bit(*h);
            self.bitmap[word] |= mask;
        }
    }
}

pub struct Screen {
    /// For the whole-form hash.
    keys: RandomState,
    /// For the window hash: a random odd multiplier and a random mask.
    mul: u64,
    xor: u64,
    /// Forms of `WIDE` bytes or more, by the keyed hash of their last `WIDE` bytes.
    wide: Width,
    /// Shorter forms, by the keyed hash of their last `NARROW` bytes.
    narrow: Width,
    /// Unique to this screen as it is now, among all screens of this process: what a
    /// cached answer about an unchanging haystack is keyed by.
    generation: u64,
}

/// The next screen generation (see `Screen::generation`).
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Screen({} wide, {} narrow windows)",
            self.wide.map.len(),
            self.narrow.map.len()
        )
    }
}

impl Default for Screen {
    fn default() -> Self {
        Screen::new()
    }
}

/// Every form of `value` that a request must not carry and a record must not show: the
/// value, its encodings, and — not UTF-8 — the form `/proc` and a lossy reading give it.
/// Forms shorter than the masking minimum are left out (as masking leaves them).
pub fn forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    if value.len() < MIN_MASKED_LEN {
        return Vec::new();
    }
    let mut out: Vec<Zeroizing<Vec<u8>>> = jitc_protocol::encodings::encodings(value)
        .into_iter()
        .map(Zeroizing::new)
        .collect();
    if std::str::from_utf8(value).is_err() {
        let lossy = Zeroizing::new(String::from_utf8_lossy(value).into_owned().into_bytes());
        if !out.iter().any(|f| **f == *lossy) {
            out.push(lossy);
        }
    }
    out.retain(|f| f.len() >= MIN_MASKED_LEN);
    out
}

fn window(form: &[u8]) -> (&[u8], bool) {
    if form.len() >= WIDE {
        (&form[form.len() - WIDE..], true)
    } else {
        (&form[form.len() - NARROW..], false)
    }
}

impl Screen {
    pub fn new() -> Screen {
        let keys = RandomState::new();
        Screen {
            mul: keys.hash_one(1u8) | 1,
            xor: keys.hash_one(2u8),
            keys,
            wide: Width::new(),
            narrow: Width::new(),
            generation: next_generation(),
        }
    }

    /// Changes whenever what is filed changes; never the same for two screens.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn width(&mut self, wide: bool) -> &mut Width {
        if wide {
            &mut self.wide
        } else {
            &mut self.narrow
        }
    }

    /// The keyed hash of a window of 8 (or 4) bytes.
    #[inline]
    fn mix(&self, w: &[u8]) -> u64 {
        let n = match w.len() {
            WIDE => u64::from_le_bytes(w.try_into().unwrap_or_default()),
            _ => u64::from(u32::from_le_bytes(w.try_into().unwrap_or_default())),
        };
        let x = (n ^ self.xor).wrapping_mul(self.mul);
        (x ^ (x >> 29)).wrapping_mul(self.mul)
    }

    /// Files every form of `secret`'s `value`.
    pub fn insert(&mut self, secret: &str, value: &[u8]) {
        self.generation = next_generation();
        let name: Arc<str> = Arc::from(secret);
        for form in forms(value) {
            let (w, wide) = window(&form);
            let key = self.mix(w);
            let entry = Entry {
                full: self.keys.hash_one(&form[..]),
                len: u32::try_from(form.len()).unwrap_or(u32::MAX),
                secret: name.clone(),
            };
            let width = self.width(wide);
            let (word, mask) = Width::bit(key);
            width.bitmap[word] |= mask;
            width.map.entry(key).or_default().push(entry);
        }
    }

    /// Forgets `secret` (whose value was `value`).
    pub fn remove(&mut self, secret: &str, value: &[u8]) {
        self.generation = next_generation();
        for form in forms(value) {
            let (w, wide) = window(&form);
            let key = self.mix(w);
            let width = self.width(wide);
            if let Some(list) = width.map.get_mut(&key) {
                list.retain(|e| &*e.secret != secret);
                if list.is_empty() {
                    width.map.remove(&key);
                    width.rebuild_bitmap();
                }
            }
        }
    }

    /// The secrets one of whose forms may occur in `hay` (confirm by opening them).
    pub fn find(&self, hay: &[u8]) -> Vec<Arc<str>> {
        let mut found: Vec<Arc<str>> = Vec::new();
        self.each_hit(hay, |_, e| {
            if !found.contains(&e.secret) {
                found.push(e.secret.clone());
            }
        });
        found
    }

    /// Calls `hit(end, entry)` for every place in `hay` (ending at `end`) where the
    /// keyed hash of a whole form matches.
    fn each_hit(&self, hay: &[u8], mut hit: impl FnMut(usize, &Entry)) {
        for (filed, width) in [(&self.wide, WIDE), (&self.narrow, NARROW)] {
            if filed.map.is_empty() || hay.len() < width {
                continue;
            }
            for end in width..=hay.len() {
                let h = self.mix(&hay[end - width..end]);
                if !filed.may_hold(h) {
                    continue;
                }
                let Some(list) = filed.map.get(&h) else {
                    continue;
                };
                for e in list {
                    let len = e.len as usize;
                    if len <= end && self.keys.hash_one(&hay[end - len..end]) == e.full {
                        hit(end, e);
                    }
                }
            }
        }
    }

    /// Whether nothing is filed.
    pub fn is_empty(&self) -> bool {
        self.wide.map.is_empty() && self.narrow.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_form_of_every_value_and_nothing_else() {
        let mut s = Screen::new();
        s.insert("api", b"sk-live-0123456789");
        s.insert("pin", b"4711");
        s.insert("bin", b"\xff\xfe-binary");
        fn names_in(s: &Screen, hay: &[u8]) -> Vec<String> {
            let mut v: Vec<String> = s.find(hay).iter().map(|n| n.to_string()).collect();
            v.sort();
            v
        }
        let names = |hay: &[u8]| names_in(&s, hay);
        assert_eq!(
            names(b"curl -H 'Authorization: sk-live-0123456789'"),
            ["api"]
        );
        assert_eq!(names(b"echo 4711"), ["pin"]);
        let hex = jitc_protocol::encodings::hex(b"sk-live-0123456789", b"0123456789abcdef");
        assert_eq!(names(&[b"x=".as_slice(), &hex].concat()), ["api"]);
        let b64 = jitc_protocol::encodings::base64(
            b"sk-live-0123456789",
            jitc_protocol::encodings::B64_STD,
        );
        assert_eq!(names(&b64), ["api"]);
        // A non-UTF-8 value as /proc shows it.
        let lossy = String::from_utf8_lossy(b"\xff\xfe-binary").into_owned();
        assert_eq!(names(lossy.as_bytes()), ["bin"]);
        assert!(names(b"sk-live-012345678 4710 nothing").is_empty());
        assert!(names(b"").is_empty());
        s.remove("api", b"sk-live-0123456789");
        assert!(names_in(&s, b"sk-live-0123456789").is_empty());
        assert_eq!(names_in(&s, b"4711"), ["pin"]);
    }

    #[test]
    fn shared_tails_and_prefixes_are_told_apart() {
        let mut s = Screen::new();
        s.insert("a", b"one-token-SAME-END");
        s.insert("b", b"two-token-SAME-END");
        let found: Vec<String> = s
            .find(b"...two-token-SAME-END...")
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(found, ["b"]);
        // Too short to mask: not screened (as the argv check and masking treat them).
        s.insert("tiny", b"abc");
        assert!(s.find(b"abc").is_empty());
    }
}

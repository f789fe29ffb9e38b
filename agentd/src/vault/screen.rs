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

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use jitc_protocol::names::MIN_MASKED_LEN;
use zeroize::Zeroizing;

/// The window of forms this long or longer.
const WIDE: usize = 8;
/// The window of shorter forms (each at least `MIN_MASKED_LEN`).
const NARROW: usize = MIN_MASKED_LEN;

/// One filed form: 16 bytes, stored in the table itself (no allocation of its own).
/// Its hashes are 32 bits: a hit is only a candidate, confirmed by opening the value,
/// and a false one among 2^32 costs no more than that.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The keyed hash of the form's window (what the table is keyed by).
    window: u32,
    /// Keyed hash of the whole form.
    full: u32,
    len: u32,
    /// The secret's slot in `Screen::names`.
    id: u32,
}

/// The smallest window bitmap (bits); it grows to about 8 bits a filed window.
const MIN_BITMAP_BITS: u32 = 16;
const MAX_BITMAP_BITS: u32 = 26;

/// The table's 64-bit hash of a 32-bit window hash (which is uniform already): its low
/// bits pick the bucket, its top bits the tag.
fn spread(window: u32) -> u64 {
    (u64::from(window) << 32) | u64::from(window)
}

/// `Entry::id` of a table entry whose window has several forms filed under it: they are
/// in `Width::shared`. (All forms of a window share one table hash, so filing them in
/// the table itself would make each insert walk all the others: PEM keys all end in
/// the same 8 bytes, and equal values share every window.)
const SHARED: u32 = u32::MAX;

/// The windows of one width: a bitmap of their hashes' top bits (a hit there is only a
/// maybe), and the table — one entry a window.
struct Width {
    bits: u32,
    bitmap: Vec<u64>,
    table: HashTable<Entry>,
    /// The forms of windows that have more than one.
    shared: std::collections::HashMap<u32, Vec<Entry>>,
    /// Windows removed since the bitmap was built: their bits may still be set, which
    /// costs only a look in the table. The bitmap is rebuilt when they are many.
    stale: usize,
}

impl Width {
    fn new() -> Width {
        Width {
            bits: MIN_BITMAP_BITS,
            bitmap: vec![0; (1 << MIN_BITMAP_BITS) / 64],
            table: HashTable::new(),
            shared: std::collections::HashMap::new(),
            stale: 0,
        }
    }

    /// The forms filed under `window`.
    fn under(&self, window: u32) -> &[Entry] {
        match self.table.find(spread(window), |e| e.window == window) {
            Some(e) if e.id == SHARED => self.shared.get(&window).map_or(&[], Vec::as_slice),
            Some(e) => std::slice::from_ref(e),
            None => &[],
        }
    }

    fn bit(&self, h: u32) -> (usize, u64) {
        let top = (h >> (32 - self.bits)) as usize;
        (top / 64, 1 << (top % 64))
    }

    fn may_hold(&self, h: u32) -> bool {
        let (word, mask) = self.bit(h);
        self.bitmap[word] & mask != 0
    }

    fn set(&mut self, h: u32) {
        let (word, mask) = self.bit(h);
        self.bitmap[word] |= mask;
    }

    fn add(&mut self, e: Entry) {
        let w = e.window;
        match self.table.find_mut(spread(w), |x| x.window == w) {
            Some(first) if first.id == SHARED => self.shared.entry(w).or_default().push(e),
            Some(first) => {
                let alone = std::mem::replace(first, Entry { id: SHARED, ..e });
                self.shared.insert(w, vec![alone, e]);
            }
            None => {
                self.table.insert_unique(spread(w), e, |e| spread(e.window));
            }
        }
        let want = (self.table.len() * 8)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(MIN_BITMAP_BITS, MAX_BITMAP_BITS);
        if want > self.bits {
            self.rebuild(want);
        } else {
            self.set(e.window);
        }
    }

    /// Removes what `gone` picks among the entries filed under `window`; the ids of
    /// those removed go to `ids`.
    fn take(&mut self, window: u32, mut gone: impl FnMut(&Entry) -> bool, ids: &mut Vec<u32>) {
        let Ok(mut found) = self
            .table
            .find_entry(spread(window), |e| e.window == window)
        else {
            return;
        };
        let mut note = |e: &Entry| {
            if !ids.contains(&e.id) {
                ids.push(e.id);
            }
        };
        if found.get().id != SHARED {
            if gone(found.get()) {
                note(found.get());
                found.remove();
                self.stale += 1;
            }
        } else {
            let list = self.shared.entry(window).or_default();
            list.retain(|e| {
                let go = gone(e);
                if go {
                    note(e);
                }
                !go
            });
            match list.len() {
                0 => {
                    self.shared.remove(&window);
                    found.remove();
                    self.stale += 1;
                }
                1 => {
                    *found.get_mut() = list[0];
                    self.shared.remove(&window);
                }
                _ => {}
            }
        }
        if self.stale > self.table.len() / 2 + 64 {
            self.table.shrink_to_fit(|e| spread(e.window));
            self.rebuild(self.bits);
        }
    }

    /// The bitmap anew, `bits` wide, from the table (amortised: after the table doubles
    /// or half of it is removed).
    fn rebuild(&mut self, bits: u32) {
        self.bits = bits;
        let mut bitmap = vec![0u64; (1usize << bits) / 64];
        for e in self.table.iter() {
            let top = (e.window >> (32 - bits)) as usize;
            bitmap[top / 64] |= 1 << (top % 64);
        }
        self.bitmap = bitmap;
        self.stale = 0;
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
    /// The names of the secrets filed, by id; a freed id is reused.
    names: Vec<Option<Box<str>>>,
    free: Vec<u32>,
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
            self.wide.table.len(),
            self.narrow.table.len()
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
            names: Vec::new(),
            free: Vec::new(),
            generation: next_generation(),
        }
    }

    /// Changes whenever what is filed changes; never the same for two screens.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The keyed hash of a window of 8 (or 4) bytes.
    #[inline]
    fn mix(&self, w: &[u8]) -> u32 {
        let n = match w.len() {
            WIDE => u64::from_le_bytes(w.try_into().unwrap_or_default()),
            _ => u64::from(u32::from_le_bytes(w.try_into().unwrap_or_default())),
        };
        let x = (n ^ self.xor).wrapping_mul(self.mul);
        ((x ^ (x >> 29)).wrapping_mul(self.mul) >> 32) as u32
    }

    /// The keyed hash of a whole form.
    fn full(&self, form: &[u8]) -> u32 {
        self.keys.hash_one(form) as u32
    }

    /// Files every form of `secret`'s `value`.
    pub fn insert(&mut self, secret: &str, value: &[u8]) {
        self.generation = next_generation();
        let forms = forms(value);
        if forms.is_empty() {
            return;
        }
        let name = Some(Box::<str>::from(secret));
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = name;
                id
            }
            None => {
                self.names.push(name);
                u32::try_from(self.names.len() - 1).unwrap_or(u32::MAX)
            }
        };
        for form in forms {
            let (w, wide) = window(&form);
            let entry = Entry {
                window: self.mix(w),
                full: self.full(&form),
                len: u32::try_from(form.len()).unwrap_or(u32::MAX),
                id,
            };
            if wide {
                self.wide.add(entry)
            } else {
                self.narrow.add(entry)
            }
        }
    }

    /// Forgets `secret` (whose value was `value`).
    pub fn remove(&mut self, secret: &str, value: &[u8]) {
        self.generation = next_generation();
        let mut ids = Vec::new();
        for form in forms(value) {
            let (w, wide) = window(&form);
            let key = self.mix(w);
            let names = &self.names;
            let named = |e: &Entry| names[e.id as usize].as_deref() == Some(secret);
            if wide {
                self.wide.take(key, named, &mut ids)
            } else {
                self.narrow.take(key, named, &mut ids)
            }
        }
        for id in ids {
            self.names[id as usize] = None;
            self.free.push(id);
        }
        if self.wide.table.is_empty() && self.narrow.table.is_empty() {
            self.names = Vec::new();
            self.free = Vec::new();
        }
    }

    /// The secrets one of whose forms may occur in `hay` (confirm by opening them).
    pub fn find(&self, hay: &[u8]) -> Vec<Arc<str>> {
        let mut ids: Vec<u32> = Vec::new();
        self.each_hit(hay, |e| {
            if !ids.contains(&e.id) {
                ids.push(e.id);
            }
        });
        ids.into_iter()
            .filter_map(|id| self.names[id as usize].as_deref().map(Arc::from))
            .collect()
    }

    /// Calls `hit(entry)` for every place in `hay` where the keyed hash of a whole form
    /// matches.
    fn each_hit(&self, hay: &[u8], mut hit: impl FnMut(&Entry)) {
        for (filed, width) in [(&self.wide, WIDE), (&self.narrow, NARROW)] {
            if filed.table.is_empty() || hay.len() < width {
                continue;
            }
            for end in width..=hay.len() {
                let h = self.mix(&hay[end - width..end]);
                if !filed.may_hold(h) {
                    continue;
                }
                for e in filed.under(h) {
                    let len = e.len as usize;
                    if len <= end && self.full(&hay[end - len..end]) == e.full {
                        hit(e);
                    }
                }
            }
        }
    }

    /// Whether nothing is filed.
    pub fn is_empty(&self) -> bool {
        self.wide.table.is_empty() && self.narrow.table.is_empty()
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

    /// Thousands of secrets filed, half forgotten, some filed again: every value still
    /// filed is found under its name only, none forgotten is, the bitmap grew with the
    /// table and freed slots are reused.
    #[test]
    fn churn_keeps_every_answer_and_reuses_slots() {
        let mut s = Screen::new();
        let value = |i: usize, round: usize| format!("value-{round}-{i:05}-tail{}", i * 7919);
        let n = 4000;
        for i in 0..n {
            s.insert(&format!("s{i}"), value(i, 0).as_bytes());
        }
        assert!(
            s.wide.bits > MIN_BITMAP_BITS,
            "the bitmap grows with the table"
        );
        let slots = s.names.len();
        for i in (0..n).step_by(2) {
            s.remove(&format!("s{i}"), value(i, 0).as_bytes());
        }
        for i in (0..n).step_by(4) {
            s.insert(&format!("s{i}"), value(i, 1).as_bytes());
        }
        assert_eq!(s.names.len(), slots, "freed slots are reused");
        for i in 0..n {
            let name = format!("s{i}");
            let now = match i % 4 {
                0 => Some(value(i, 1)),
                2 => None,
                _ => Some(value(i, 0)),
            };
            let found = |v: String| -> Vec<String> {
                s.find(format!("run --token={v} now").as_bytes())
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            };
            if let Some(v) = now {
                assert_eq!(found(v), std::slice::from_ref(&name));
            }
            if i % 2 == 0 {
                assert!(
                    found(value(i, 0)).is_empty(),
                    "{name}'s old value is forgotten"
                );
            }
        }
        for i in 0..n {
            let name = format!("s{i}");
            match i % 4 {
                0 => s.remove(&name, value(i, 1).as_bytes()),
                2 => {}
                _ => s.remove(&name, value(i, 0).as_bytes()),
            }
        }
        assert!(s.is_empty());
        assert!(s.names.is_empty());
    }

    /// Values that share their last bytes (PEM keys all end alike) or are equal: each
    /// is found under its own names, and removing some leaves the others found.
    #[test]
    fn shared_windows_keep_every_form_apart() {
        let mut s = Screen::new();
        let pem = |i: usize| format!("-----BEGIN KEY-----\n{i:06}abcdef\n-----END KEY-----\n");
        let n = 3000;
        for i in 0..n {
            s.insert(&format!("k{i}"), pem(i).as_bytes());
        }
        s.insert("same-a", b"one-equal-value-42");
        s.insert("same-b", b"one-equal-value-42");
        let found = |s: &Screen, hay: &[u8]| -> Vec<String> {
            let mut v: Vec<String> = s.find(hay).iter().map(|n| n.to_string()).collect();
            v.sort();
            v
        };
        for i in (0..n).step_by(2) {
            s.remove(&format!("k{i}"), pem(i).as_bytes());
        }
        s.remove("same-a", b"one-equal-value-42");
        for i in 0..n {
            let got = found(&s, format!("x {} y", pem(i)).as_bytes());
            if i % 2 == 0 {
                assert!(got.is_empty(), "k{i}: {got:?}");
            } else {
                assert_eq!(got, [format!("k{i}")]);
            }
        }
        assert_eq!(found(&s, b"[one-equal-value-42]"), ["same-b"]);
        for i in (1..n).step_by(2) {
            s.remove(&format!("k{i}"), pem(i).as_bytes());
        }
        s.remove("same-b", b"one-equal-value-42");
        assert!(s.is_empty());
        assert!(s.wide.shared.is_empty() && s.narrow.shared.is_empty());
    }
}

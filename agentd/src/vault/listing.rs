//! The vault's secrets by name, and their listing kept encoded.
//!
//! A page of `jitc ls` walked the map and encoded each entry anew: at 100,000 secrets
//! that is a walk over entries scattered across the heap, a cache miss each (`perf`
//! put half of a listing's agent time on one load in the walk and most of the rest on
//! copying the names). The listing is now encoded once, the first time it is asked for
//! after a change, into one buffer in name order; a page is then a binary search and
//! one copy. Every change goes through [`Secrets`], which drops the listing, so a page
//! never shows a stale entry.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::sync::OnceLock;

use jitc_protocol::{
    FrameError, SecretInfo, SecretInfoRef, encode_secret_info, secrets_page_frame,
};
use zeroize::Zeroizing;

use super::format::StoredSecret;

/// The secrets, ordered by name. Every change goes through the methods here, which
/// drop the encoded listing. Each secret is keyed by the name it holds: a map from name
/// to secret held every name twice (5 MB at 100,000 secrets).
#[derive(Default)]
pub(super) struct Secrets {
    set: BTreeSet<ByName>,
    listing: OnceLock<Listing>,
}

impl StoredSecret {
    /// The secret's metadata as a listing carries it.
    pub(super) fn info_ref(&self) -> SecretInfoRef<'_> {
        SecretInfoRef {
            name: &self.name,
            description: self.description.as_deref(),
            created: self.created,
            updated: self.updated,
            canary: self.canary,
        }
    }

    /// The same, owned.
    pub(super) fn info(&self) -> SecretInfo {
        self.info_ref().into()
    }
}

/// A secret, compared by its name alone.
struct ByName(StoredSecret);

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}
impl Eq for ByName {}
impl PartialOrd for ByName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name.cmp(&other.0.name)
    }
}
impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl FromIterator<StoredSecret> for Secrets {
    fn from_iter<I: IntoIterator<Item = StoredSecret>>(iter: I) -> Self {
        Secrets {
            set: iter.into_iter().map(ByName).collect(),
            listing: OnceLock::new(),
        }
    }
}

impl Secrets {
    /// Files `s` under its name; the secret it replaces, if any.
    pub(super) fn insert(&mut self, s: StoredSecret) -> Option<StoredSecret> {
        self.listing = OnceLock::new();
        self.set.replace(ByName(s)).map(|b| b.0)
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<StoredSecret> {
        self.listing = OnceLock::new();
        self.set.take(name).map(|b| b.0)
    }

    pub(super) fn get(&self, name: &str) -> Option<&StoredSecret> {
        self.set.get(name).map(|b| &b.0)
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.set.contains(name)
    }

    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The secrets in name order.
    pub(super) fn values(&self) -> impl ExactSizeIterator<Item = &StoredSecret> {
        self.set.iter().map(|b| &b.0)
    }

    /// The names in order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.values().map(|s| &*s.name)
    }

    /// The frame of one page of the listing: the secrets named after `after`, in name
    /// order, about `budget` bytes of them (at least one); and whether more follow.
    pub(super) fn page_frame(
        &self,
        after: &str,
        budget: usize,
    ) -> Result<Zeroizing<Vec<u8>>, FrameError> {
        let listing = match self.listing.get() {
            Some(l) => l,
            None => {
                let built = Listing::build(self.values())?;
                self.listing.get_or_init(|| built)
            }
        };
        listing.page_frame(after, budget)
    }
}

/// Every secret's metadata, encoded as a page carries it, back to back in name order.
struct Listing {
    bytes: Vec<u8>,
    /// Where each entry begins in `bytes`, and where the last one ends.
    starts: Vec<usize>,
}

impl Listing {
    fn build<'a>(
        secrets: impl ExactSizeIterator<Item = &'a StoredSecret>,
    ) -> Result<Listing, FrameError> {
        let mut bytes = Vec::with_capacity(secrets.len() * 64);
        let mut starts = Vec::with_capacity(secrets.len() + 1);
        for s in secrets {
            starts.push(bytes.len());
            encode_secret_info(&s.info_ref(), &mut bytes)?;
        }
        starts.push(bytes.len());
        bytes.shrink_to_fit();
        Ok(Listing { bytes, starts })
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// The name entry `i` begins with (a varint length, then the bytes).
    fn name(&self, i: usize) -> &[u8] {
        let entry = &self.bytes[self.starts[i]..self.starts[i + 1]];
        let (mut len, mut shift, mut at) = (0usize, 0u32, 0usize);
        while let Some(b) = entry.get(at) {
            len |= usize::from(b & 0x7f) << shift;
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        entry.get(at..at + len).unwrap_or_default()
    }

    fn page_frame(&self, after: &str, budget: usize) -> Result<Zeroizing<Vec<u8>>, FrameError> {
        // Names are compared as bytes, as the map orders them.
        let first = match after.is_empty() {
            true => 0,
            false => {
                let (mut lo, mut hi) = (0, self.len());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if self.name(mid) <= after.as_bytes() {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                lo
            }
        };
        let from = self.starts[first];
        // As many as fit in the budget, and at least one.
        let mut end = first;
        while end < self.len() && (end == first || self.starts[end + 1] - from <= budget) {
            end += 1;
        }
        secrets_page_frame(
            &self.bytes[from..self.starts[end]],
            end - first,
            end < self.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jitc_protocol::{Response, encode_frame};

    fn secret(name: &str, description: Option<&str>) -> StoredSecret {
        StoredSecret {
            name: name.into(),
            description: description.map(Into::into),
            created: 1_700_000_000,
            updated: 1_700_000_123,
            canary: name.ends_with('7'),
            nonce: [0; 24],
            sealed: Box::default(),
        }
    }

    /// Every page of the listing, each checked to be byte for byte the frame of the
    /// owned response with the same items.
    fn pages(s: &Secrets, budget: usize) -> Vec<(Vec<SecretInfo>, bool)> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let frame = s.page_frame(&after, budget).unwrap();
            let msg = jitc_protocol::decode(&frame[jitc_protocol::FRAME_PREFIX_LEN..]).unwrap();
            assert_eq!(frame, encode_frame(&msg).unwrap());
            let Response::Secrets { items, more } = msg else {
                panic!("not a page");
            };
            after = items.last().map(|i| i.name.clone()).unwrap_or_default();
            out.push((items, more));
            if !more {
                return out;
            }
        }
    }

    /// Pages from the kept listing are the frames the map itself encodes, page for
    /// page; any change shows in the next page asked for.
    #[test]
    fn pages_match_the_map_and_follow_every_change() {
        let mut s: Secrets = (0..1000)
            .map(|i| {
                let name = format!("app/secret-{i:04}");
                let desc = (i % 3 == 0).then(|| "x".repeat(i % 200));
                secret(&name, desc.as_deref())
            })
            .collect();
        let expect =
            |s: &Secrets| -> Vec<SecretInfo> { s.values().map(StoredSecret::info).collect() };
        for budget in [1, 500, 4096, 1 << 20] {
            let got = pages(&s, budget);
            let listed: Vec<SecretInfo> = got.iter().flat_map(|(p, _)| p.clone()).collect();
            assert_eq!(listed, expect(&s), "budget {budget}");
            assert_eq!(got.len() > 1, budget < 1 << 20, "budget {budget}");
        }
        // A page after a name that is not there starts at the next one.
        let frame = s.page_frame("app/secret-0499x", 1 << 20).unwrap();
        let Response::Secrets { items, .. } =
            jitc_protocol::decode(&frame[jitc_protocol::FRAME_PREFIX_LEN..]).unwrap()
        else {
            panic!("not a page");
        };
        assert_eq!(items[0].name, "app/secret-0500");
        s.remove("app/secret-0000");
        s.insert(secret("a", Some("first")));
        let mut changed = s.remove("app/secret-0999").unwrap();
        changed.description = Some("changed".into());
        s.insert(changed);
        let listed: Vec<SecretInfo> = pages(&s, 4096).into_iter().flat_map(|(p, _)| p).collect();
        assert_eq!(listed, expect(&s));
        // Empty: one empty page.
        let empty = Secrets::default();
        assert_eq!(pages(&empty, 4096), vec![(Vec::new(), false)]);
    }
}

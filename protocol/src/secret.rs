//! `SecretBytes`: owned secret bytes that zeroize on drop and never print.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// A secret value or passphrase. Zeroized on drop, `[redacted]` in `Debug`, no `Display`,
/// no `Clone`: every copy is a copy someone has to remember to wipe.
#[derive(Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are wiped when this value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Copies `bytes` into an exactly sized buffer (no reallocation leaves a copy behind).
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut v = Vec::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        Self(v)
    }

    /// Takes the contents of a zeroizing buffer without copying them.
    pub fn from_zeroizing(mut bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(std::mem::take(&mut *bytes))
    }

    /// The secret itself: the one narrow way out.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("secret bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(SecretBytes::from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(SecretBytes::new(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Formats without a native byte string. The hint is untrusted, so it is capped;
        // a buffer that has to grow is wiped before it is given back.
        let mut out = Zeroizing::new(Vec::with_capacity(
            seq.size_hint().unwrap_or(0).min(crate::MAX_FRAME_LEN),
        ));
        while let Some(b) = seq.next_element::<u8>()? {
            if out.len() == out.capacity() {
                let mut bigger = Zeroizing::new(Vec::with_capacity((out.len() * 2).max(32)));
                bigger.extend_from_slice(&out);
                out = bigger;
            }
            out.push(b);
        }
        Ok(SecretBytes::from_zeroizing(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::from_slice(b"hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
    }

    #[test]
    fn round_trips_through_postcard() {
        let s = SecretBytes::from_slice(b"\x00\xffvalue");
        let bytes = postcard::to_allocvec(&s).unwrap();
        let back: SecretBytes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.expose(), s.expose());
    }
}

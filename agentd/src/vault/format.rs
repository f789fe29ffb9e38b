//! The vault file's layout: a fixed binary header (readable before any key is known) and
//! a postcard body sealed under the vault key with the header as associated data.
//!
//! ```text
//! off len
//!   0   8  magic "JITCVLT\0"
//!   8   2  format version, big-endian (2; 1 before the journal, still read)
//!  10   1  KDF algorithm (1 = Argon2id v0x13)
//!  11   1  reserved, 0
//!  12   4  Argon2 memory, KiB (BE)
//!  16   4  Argon2 iterations (BE)
//!  20   4  Argon2 lanes (BE)
//!  24  32  salt
//!  56  24  nonce wrapping the vault key
//!  80  48  vault key sealed under the passphrase-derived key (32 + 16-byte tag)
//! 128  24  body nonce (fresh on every save)
//! 152  32  SHA-256 of bytes 0..152: tells a damaged header from a wrong passphrase
//! 184   …  body: XChaCha20-Poly1305(vault key, body nonce, postcard(Body), aad = 0..184)
//! ```
//!
//! Version 2 adds a `Link` after the body's other parts: the snapshot's generation,
//! which names the journal (`vault.jitc.journal`, see `journal.rs`) that continues it.
//! An older jitc refuses a version-2 file instead of ignoring the journal's changes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"JITCVLT\0";
pub const FORMAT_VERSION: u16 = 2;
/// The version the wrapped key is bound to: the key slot has not changed since 1.
const SLOT_VERSION: u16 = 1;
pub const GENERATION_LEN: usize = 16;
pub const KDF_ARGON2ID: u8 = 1;
pub const SALT_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
pub const WRAPPED_KEY_LEN: usize = 32 + TAG_LEN;
const DIGEST_AT: usize = 152;
pub const HEADER_LEN: usize = DIGEST_AT + 32;

/// The Argon2id parameters as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kdf {
    pub memory_kib: u32,
    pub iterations: u32,
    pub lanes: u32,
}

/// Everything in the header but the body nonce and the digest; constant across saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    pub kdf: Kdf,
    pub salt: [u8; SALT_LEN],
    pub wrap_nonce: [u8; NONCE_LEN],
    pub wrapped_key: [u8; WRAPPED_KEY_LEN],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The format version read (1 or 2); a header written now is always version 2.
    pub version: u16,
    pub slot: KeySlot,
    pub body_nonce: [u8; NONCE_LEN],
}

/// Why a header could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("it is not a jitc vault")]
    NotAVault,
    #[error("it was written by a newer jitc (vault format {0}); upgrade jitc")]
    NewerFormat(u16),
    #[error("it is cut short")]
    Truncated,
    #[error("its header is damaged")]
    Damaged,
}

impl KeySlot {
    /// The bytes the wrapped vault key is bound to (so parameters cannot be swapped).
    pub fn wrap_aad(&self) -> [u8; 56] {
        let mut aad = [0u8; 56];
        aad[..24].copy_from_slice(&Header::fixed_prefix(SLOT_VERSION, &self.kdf));
        aad[24..].copy_from_slice(&self.salt);
        aad
    }
}

impl Header {
    fn fixed_prefix(version: u16, kdf: &Kdf) -> [u8; 24] {
        let mut p = [0u8; 24];
        p[..8].copy_from_slice(&MAGIC);
        p[8..10].copy_from_slice(&version.to_be_bytes());
        p[10] = KDF_ARGON2ID;
        p[12..16].copy_from_slice(&kdf.memory_kib.to_be_bytes());
        p[16..20].copy_from_slice(&kdf.iterations.to_be_bytes());
        p[20..24].copy_from_slice(&kdf.lanes.to_be_bytes());
        p
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..24].copy_from_slice(&Self::fixed_prefix(self.version, &self.slot.kdf));
        h[24..56].copy_from_slice(&self.slot.salt);
        h[56..80].copy_from_slice(&self.slot.wrap_nonce);
        h[80..128].copy_from_slice(&self.slot.wrapped_key);
        h[128..152].copy_from_slice(&self.body_nonce);
        let digest = Sha256::digest(&h[..DIGEST_AT]);
        h[DIGEST_AT..].copy_from_slice(&digest);
        h
    }

    /// Parses and checks the header at the start of `file`.
    pub fn decode(file: &[u8]) -> Result<Header, HeaderError> {
        if file.len() < 10 {
            return Err(if MAGIC.starts_with(file) {
                HeaderError::Truncated
            } else {
                HeaderError::NotAVault
            });
        }
        if file[..8] != MAGIC {
            return Err(HeaderError::NotAVault);
        }
        let version = u16::from_be_bytes([file[8], file[9]]);
        if version > FORMAT_VERSION {
            return Err(HeaderError::NewerFormat(version));
        }
        if file.len() < HEADER_LEN {
            return Err(HeaderError::Truncated);
        }
        let h = &file[..HEADER_LEN];
        if Sha256::digest(&h[..DIGEST_AT])[..] != h[DIGEST_AT..] {
            return Err(HeaderError::Damaged);
        }
        if version == 0 || h[10] != KDF_ARGON2ID || h[11] != 0 {
            return Err(HeaderError::Damaged);
        }
        let be = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let arr = |from: usize, to: usize| h[from..to].to_vec();
        Ok(Header {
            version,
            slot: KeySlot {
                kdf: Kdf {
                    memory_kib: be(12),
                    iterations: be(16),
                    lanes: be(20),
                },
                salt: arr(24, 56).try_into().map_err(|_| HeaderError::Damaged)?,
                wrap_nonce: arr(56, 80).try_into().map_err(|_| HeaderError::Damaged)?,
                wrapped_key: arr(80, 128).try_into().map_err(|_| HeaderError::Damaged)?,
            },
            body_nonce: arr(128, 152).try_into().map_err(|_| HeaderError::Damaged)?,
        })
    }
}

/// The sealed body: every secret (each value sealed again on its own) and metadata.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Body {
    pub secrets: Vec<StoredSecret>,
    /// The audit log's last sequence number and chain tag at this save, so truncating
    /// the log's tail can be detected.
    pub audit_checkpoint: Option<AuditCheckpoint>,
    /// (secret, executable) pairs that have been leased together: the first use of a
    /// secret by a new executable is an anomaly.
    pub seen: Vec<(String, String)>,
}

/// What the agent keeps across restarts about things other than secrets. Written after
/// `Body` in the same sealed plaintext: a vault from before it has nothing there (and
/// reads as the default), and an older jitc ignores it (postcard reads what it needs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bookkeeping {
    /// SHA-256 of the last policy file the agent loaded: a policy was in force, so its
    /// disappearance refuses every lease until restored or reset with the passphrase.
    pub policy: Option<[u8; 32]>,
    /// Whether the audit log has kept an `audit.checkpoint` beside it: once it has, a
    /// missing one is tampering.
    pub audit_sidecar: bool,
}

/// Written after `Bookkeeping`, the same way (absent in older vaults, ignored by older
/// jitc): the gateway's certificate authority.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Extras {
    pub gateway_ca: Option<SealedCa>,
}

/// The gateway's CA: its certificate (public) and its private key (PKCS#8), sealed like
/// a value: XChaCha20-Poly1305(vault key, nonce, key, aad = CA_AAD).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealedCa {
    pub cert_der: Vec<u8>,
    pub nonce: [u8; NONCE_LEN],
    pub sealed_key: Vec<u8>,
}

/// Written after `Extras` from version 2 on: which journal continues this snapshot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Link {
    pub generation: [u8; GENERATION_LEN],
}

/// The parts of a body's plaintext.
pub struct Parts {
    pub body: Body,
    pub bookkeeping: Bookkeeping,
    pub extras: Extras,
    pub link: Option<Link>,
}

/// The plaintext of a body: `Body`, `Bookkeeping`, `Extras`, then `Link`.
pub fn encode_body(
    body: &Body,
    bookkeeping: &Bookkeeping,
    extras: &Extras,
    link: &Link,
) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let mut out = zeroize::Zeroizing::new(postcard::to_allocvec(body).ok()?);
    out.extend_from_slice(&postcard::to_allocvec(bookkeeping).ok()?);
    out.extend_from_slice(&postcard::to_allocvec(extras).ok()?);
    out.extend_from_slice(&postcard::to_allocvec(link).ok()?);
    Some(out)
}

/// Reads a body's plaintext: `Body`, and what follows it if the vault has it (version
/// 1 files may stop after any part but the first, and have no `Link`).
pub fn decode_body(plain: &[u8]) -> Option<Parts> {
    let (body, rest) = postcard::take_from_bytes::<Body>(plain).ok()?;
    let mut parts = Parts {
        body,
        bookkeeping: Bookkeeping::default(),
        extras: Extras::default(),
        link: None,
    };
    if rest.is_empty() {
        return Some(parts);
    }
    let (bookkeeping, rest) = postcard::take_from_bytes::<Bookkeeping>(rest).ok()?;
    parts.bookkeeping = bookkeeping;
    if rest.is_empty() {
        return Some(parts);
    }
    let (extras, rest) = postcard::take_from_bytes::<Extras>(rest).ok()?;
    parts.extras = extras;
    if !rest.is_empty() {
        parts.link = Some(postcard::from_bytes(rest).ok()?);
    }
    Some(parts)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
/// Boxed strings and bytes, not `String` and `Vec`: 24 bytes less a secret in memory
/// (2.4 MB at 100,000), and the same bytes in the file (postcard writes both as a
/// length and the bytes).
pub struct StoredSecret {
    pub name: Box<str>,
    pub description: Option<Box<str>>,
    pub created: u64,
    pub updated: u64,
    pub canary: bool,
    pub nonce: [u8; NONCE_LEN],
    /// XChaCha20-Poly1305(vault key, nonce, value, aad = VALUE_AAD ‖ name).
    pub sealed: Box<[u8]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub seq: u64,
    pub tag: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: FORMAT_VERSION,
            slot: KeySlot {
                kdf: Kdf {
                    memory_kib: 8192,
                    iterations: 1,
                    lanes: 1,
                },
                salt: [1; SALT_LEN],
                wrap_nonce: [2; NONCE_LEN],
                wrapped_key: [3; WRAPPED_KEY_LEN],
            },
            body_nonce: [4; NONCE_LEN],
        }
    }

    #[test]
    fn round_trip() {
        let h = header();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn every_flipped_header_byte_is_noticed() {
        let bytes = header().encode();
        for i in 0..HEADER_LEN {
            let mut b = bytes;
            b[i] ^= 0x40;
            assert!(Header::decode(&b).is_err(), "byte {i}");
        }
    }

    #[test]
    fn kinds_of_bad_header() {
        let bytes = header().encode();
        assert_eq!(
            Header::decode(b"hello world, not a vault"),
            Err(HeaderError::NotAVault)
        );
        assert_eq!(Header::decode(&bytes[..3]), Err(HeaderError::Truncated));
        assert_eq!(Header::decode(&bytes[..100]), Err(HeaderError::Truncated));
        let mut newer = bytes;
        newer[9] = 9;
        assert_eq!(Header::decode(&newer), Err(HeaderError::NewerFormat(9)));
        let mut damaged = bytes;
        damaged[30] ^= 1;
        assert_eq!(Header::decode(&damaged), Err(HeaderError::Damaged));
    }
}

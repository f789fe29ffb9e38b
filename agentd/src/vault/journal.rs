//! The vault's journal: the changes since the last snapshot, appended and synced one
//! record per save, so a save costs the size of its change, not of the vault.
//!
//! ```text
//! header   magic "JITCJNL\0" (8) ‖ version (2, BE, 1) ‖ generation (16)
//! record   length (4, BE) ‖ nonce (24) ‖ XChaCha20-Poly1305(vault key, nonce,
//!          postcard(Vec<Op>), aad = "jitc journal v1\0" ‖ generation ‖ seq (8, BE))
//! ```
//!
//! The generation is the snapshot's (`format::Link`): a journal whose generation is not
//! the snapshot's is left over from before the last compaction (its changes are in the
//! snapshot) or belongs to a vault restored from its backup, and is not applied. Each
//! record is bound to its place (`seq`), so records cannot be reordered, dropped from
//! the middle unnoticed, or moved between journals. Reading stops at the first record
//! that is cut short or fails authentication: a crash mid-append leaves at most that
//! one, and it was never acknowledged. A bad record with a good one after it is damage,
//! not a crash, and the vault refuses to open rather than drop acknowledged changes.

use chacha20poly1305::XNonce;
use chacha20poly1305::aead::AeadInOut;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::format::{
    AuditCheckpoint, Bookkeeping, GENERATION_LEN, NONCE_LEN, SealedCa, StoredSecret, TAG_LEN,
};
use super::{VaultError, cipher, random, seal};
use crate::locked::KEY_LEN;

pub const MAGIC: [u8; 8] = *b"JITCJNL\0";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 8 + 2 + GENERATION_LEN;
/// Larger than any one save (a request is at most 1 MiB); bounds what a damaged length
/// can make the agent consider.
pub const MAX_RECORD: usize = 16 << 20;
const AAD: &[u8] = b"jitc journal v1\0";

/// One change, as the vault made it in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    Put(StoredSecret),
    Remove(String),
    Rename {
        from: String,
        to: StoredSecret,
    },
    Seen(String, String),
    GatewayCa(SealedCa),
    /// What the agent keeps besides secrets, as of this record (the last one wins).
    Meta {
        audit_checkpoint: Option<AuditCheckpoint>,
        bookkeeping: Bookkeeping,
    },
}

pub fn header(generation: &[u8; GENERATION_LEN]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_be_bytes());
    h[10..].copy_from_slice(generation);
    h
}

fn aad(generation: &[u8; GENERATION_LEN], seq: u64) -> Vec<u8> {
    [AAD, generation, &seq.to_be_bytes()].concat()
}

/// One record: the operations sealed under the vault key, bound to `generation`/`seq`.
pub fn seal_record(
    key: &[u8; KEY_LEN],
    generation: &[u8; GENERATION_LEN],
    seq: u64,
    ops: &[Op],
) -> Result<Vec<u8>, VaultError> {
    // Names and descriptions in the clear (values are sealed on their own already).
    let plain = Zeroizing::new(postcard::to_allocvec(ops).map_err(|_| VaultError::BodyDecode)?);
    let nonce: [u8; NONCE_LEN] = random()?;
    let sealed_len = NONCE_LEN + plain.len() + TAG_LEN;
    if sealed_len > MAX_RECORD {
        return Err(VaultError::TooLarge);
    }
    let buf = seal(key, &nonce, &aad(generation, seq), &plain);
    if buf.len() != plain.len() + TAG_LEN {
        return Err(VaultError::Random);
    }
    let mut out = Vec::with_capacity(4 + sealed_len);
    out.extend_from_slice(&(sealed_len as u32).to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The records' operations, in order.
    pub records: Vec<Vec<Op>>,
    /// Bytes from the start of the file that hold whole, authentic records.
    pub valid_len: u64,
    /// Bytes after those: a record cut short by a crash (or damage).
    pub dropped: u64,
    /// The journal does not continue this snapshot: its changes are in the snapshot
    /// already (a compaction was cut short) or the snapshot was put back from a backup.
    pub stale: bool,
    /// The dropped bytes are not what a crash leaves at the end (see `torn_tail`).
    pub unexplained: bool,
}

/// Reads a journal for the snapshot of `generation` (`None`: a version-1 snapshot,
/// which no journal continues).
pub fn read(
    key: &[u8; KEY_LEN],
    generation: Option<&[u8; GENERATION_LEN]>,
    bytes: &[u8],
) -> Result<Replay, VaultError> {
    let stale = Replay {
        stale: true,
        ..Replay::default()
    };
    if bytes.len() >= 10 && bytes[..8] == MAGIC {
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if version > VERSION {
            return Err(VaultError::Header(super::HeaderError::NewerFormat(version)));
        }
    }
    let Some(generation) = generation else {
        return Ok(stale);
    };
    if bytes.len() < HEADER_LEN || bytes[..HEADER_LEN] != header(generation) {
        return Ok(stale);
    }
    let mut replay = Replay {
        valid_len: HEADER_LEN as u64,
        ..Replay::default()
    };
    let mut at = HEADER_LEN;
    let mut seq = 0u64;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let start = at + 4;
        let Some(end) = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len() && (NONCE_LEN + TAG_LEN..=MAX_RECORD).contains(&len))
        else {
            break;
        };
        let Some(ops) = open_record(key, generation, seq, &bytes[start..end]) else {
            if authentic_at(key, generation, seq + 1, &bytes[end..]) {
                return Err(VaultError::JournalDamaged);
            }
            break;
        };
        replay.records.push(ops);
        replay.valid_len = end as u64;
        at = end;
        seq += 1;
    }
    replay.unexplained = !torn_tail(&bytes[at..]);
    replay.dropped = bytes.len() as u64 - replay.valid_len;
    Ok(replay)
}

/// Whether what follows the last record that opens is what a crash ordinarily leaves:
/// nothing, the record being appended — whole or in part, its length first —, or zeros
/// where the file grew before its data reached the disk. Anything else is unexplained:
/// a length changed in the middle (every record after it would otherwise be dropped
/// unsaid) — or a power cut that wrote the end of the last append but not its head,
/// which no reader can tell from it. The caller keeps such bytes aside and says so; it
/// does not refuse the vault (a refusal would cost every change since the snapshot).
/// (A length raised past the end of the file still reads as a record cut short.)
fn torn_tail(rest: &[u8]) -> bool {
    let Some(len) = rest.get(..4) else {
        return true;
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    ((NONCE_LEN + TAG_LEN..=MAX_RECORD).contains(&len) && 4 + len >= rest.len())
        || rest.iter().all(|b| *b == 0)
}

/// Whether `rest` starts with an authentic record number `seq`.
fn authentic_at(
    key: &[u8; KEY_LEN],
    generation: &[u8; GENERATION_LEN],
    seq: u64,
    rest: &[u8],
) -> bool {
    let Some(len) = rest.get(..4) else {
        return false;
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    (NONCE_LEN + TAG_LEN..=MAX_RECORD).contains(&len)
        && rest
            .get(4..4 + len)
            .is_some_and(|r| open_record(key, generation, seq, r).is_some())
}

fn open_record(
    key: &[u8; KEY_LEN],
    generation: &[u8; GENERATION_LEN],
    seq: u64,
    record: &[u8],
) -> Option<Vec<Op>> {
    let (nonce, sealed) = record.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    cipher(key)
        .decrypt_in_place(&XNonce::from(nonce), &aad(generation, seq), &mut *buf)
        .ok()?;
    postcard::from_bytes(&buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; KEY_LEN] = [7; KEY_LEN];
    const GEN: [u8; GENERATION_LEN] = [9; GENERATION_LEN];

    fn journal(n: u64) -> Vec<u8> {
        let mut j = header(&GEN).to_vec();
        for seq in 0..n {
            let ops = vec![Op::Remove(format!("name-{seq}"))];
            j.extend(seal_record(&KEY, &GEN, seq, &ops).unwrap());
        }
        j
    }

    fn names(r: &Replay) -> Vec<String> {
        r.records
            .iter()
            .flatten()
            .map(|op| match op {
                Op::Remove(n) => n.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn records_read_back_in_order() {
        let j = journal(3);
        let r = read(&KEY, Some(&GEN), &j).unwrap();
        assert_eq!(names(&r), ["name-0", "name-1", "name-2"]);
        assert_eq!(
            (r.valid_len, r.dropped, r.stale),
            (j.len() as u64, 0, false)
        );
        assert!(!j.windows(6).any(|w| w == b"name-1"), "records are sealed");
    }

    #[test]
    fn a_record_cut_short_anywhere_is_dropped_and_the_rest_kept() {
        let whole = journal(2);
        let first_end = journal(1).len();
        for cut in first_end..whole.len() {
            let r = read(&KEY, Some(&GEN), &whole[..cut]).unwrap();
            assert_eq!(names(&r), ["name-0"], "cut at {cut}");
            assert_eq!(r.valid_len, first_end as u64);
            assert_eq!(r.dropped, (cut - first_end) as u64);
        }
    }

    #[test]
    fn reordered_flipped_or_foreign_records_are_not_applied() {
        let j = journal(2);
        let one = journal(1).len();
        // The second record moved first: bound to seq 1, it fails at seq 0, and what
        // follows is no crash's leftover.
        let mut swapped = header(&GEN).to_vec();
        swapped.extend_from_slice(&j[one..]);
        swapped.extend_from_slice(&j[HEADER_LEN..one]);
        let r = read(&KEY, Some(&GEN), &swapped).unwrap();
        assert!(r.records.is_empty() && r.unexplained);
        // A flipped byte in the last record's sealed part: cut short, as a crash would
        // leave it. In the first record's sealed part, with a good record after it:
        // damage. In a length: unexplained, or — raised past the end of the file — a
        // record cut short (see `torn_tail`).
        let length =
            |i: usize| (HEADER_LEN..HEADER_LEN + 4).contains(&i) || (one..one + 4).contains(&i);
        for i in HEADER_LEN..j.len() {
            let mut bad = j.clone();
            bad[i] ^= 0x20;
            match read(&KEY, Some(&GEN), &bad) {
                Ok(r) if length(i) => assert!(r.records.len() <= 1, "byte {i}"),
                Ok(r) if r.unexplained => panic!("byte {i}: unexplained"),
                Ok(r) => {
                    assert_eq!(r.records.len(), 1, "byte {i}");
                    assert!(i >= one, "byte {i}");
                }
                Err(VaultError::JournalDamaged) => {
                    assert!((HEADER_LEN + 4..one).contains(&i), "byte {i}")
                }
                Err(e) => panic!("byte {i}: {e}"),
            }
        }
        // Another generation's journal, or no generation at all, is stale.
        let other = [1; GENERATION_LEN];
        assert!(read(&KEY, Some(&other), &j).unwrap().stale);
        assert!(read(&KEY, None, &j).unwrap().stale);
        let mut newer = j.clone();
        newer[9] = 2;
        assert!(read(&KEY, Some(&GEN), &newer).is_err());
    }

    #[test]
    fn an_absurd_length_is_unexplained_not_an_allocation() {
        let mut j = journal(1);
        j.extend_from_slice(&u32::MAX.to_be_bytes());
        j.extend_from_slice(&[0; 64]);
        let r = read(&KEY, Some(&GEN), &j).unwrap();
        assert_eq!((r.records.len(), r.dropped, r.unexplained), (1, 68, true));
    }

    /// A power cut that wrote the end of the last append but not its head (its length
    /// and first bytes still zeros): the records before it open, the rest is
    /// unexplained — kept aside by the caller, not a refusal.
    #[test]
    fn an_append_whose_head_never_reached_the_disk_is_unexplained() {
        let mut j = journal(2);
        let one = journal(1).len();
        j[one..one + 20].fill(0);
        let r = read(&KEY, Some(&GEN), &j).unwrap();
        assert_eq!(names(&r), ["name-0"]);
        assert!(r.unexplained);
        assert_eq!(r.valid_len, one as u64);
    }

    /// The file grew before its data reached the disk: zeros, a torn tail.
    #[test]
    fn zeros_after_the_last_record_are_a_torn_tail() {
        let mut j = journal(1);
        j.extend_from_slice(&[0; 4096]);
        let r = read(&KEY, Some(&GEN), &j).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.dropped, 4096);
        assert!(!r.unexplained);
    }

    /// A length changed in the middle — shorter, or out of range —: every record after
    /// it would be dropped unsaid; it is unexplained. (One raised past the end of the
    /// file reads as the last record cut short: telling the two apart would take a
    /// search for the next record, a decryption at every byte.)
    #[test]
    fn a_changed_length_in_the_middle_is_unexplained() {
        let j = journal(3);
        for len in [
            NONCE_LEN + TAG_LEN,
            100,
            MAX_RECORD + 1,
            u32::MAX as usize,
            0,
        ] {
            let mut bad = j.clone();
            bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(len as u32).to_be_bytes());
            let r = read(&KEY, Some(&GEN), &bad).unwrap();
            assert!(r.records.is_empty() && r.unexplained, "length {len}");
        }
    }
}

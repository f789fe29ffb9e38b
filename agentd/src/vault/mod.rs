//! The vault: secrets sealed at rest and in memory.
//!
//! passphrase → Argon2id → key-encryption key (KEK) → unwraps a random 256-bit vault
//! key → opens the body. Each value inside the body is sealed again on its own under the
//! vault key, and stays sealed in memory after unlock: a value is opened only while a
//! request that needs it is being served. The vault key lives in an `mlock`ed page.
//!
//! On disk a vault is a snapshot (`vault.jitc`) and a journal of the changes since
//! (`vault.jitc.journal`): a save appends one sealed record with what changed, and the
//! snapshot is rewritten (compacted) only once the journal outgrows it.

mod file;
mod format;
pub mod journal;
mod listing;
pub mod screen;

use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jitc_protocol::{KdfParams, SecretBytes, SecretInfo};
use zeroize::Zeroizing;

pub use file::{FileError, FileStamp, VaultFile, VaultLock};
pub use format::{AuditCheckpoint, Bookkeeping, HeaderError};
use format::{
    Body, GENERATION_LEN, HEADER_LEN, Header, Kdf, KeySlot, Link, NONCE_LEN, StoredSecret, TAG_LEN,
};
use journal::Op;
pub use screen::Screen;

use crate::locked::{AllocError, KEY_LEN, LockedKey};

/// Domain separation for the per-value seal; the secret's name follows it.
const VALUE_AAD: &[u8] = b"jitc value v1\0";
/// What the gateway CA's sealed key is bound to.
const CA_AAD: &[u8] = b"jitc gateway ca v1\0";

/// What can go wrong opening or changing a vault. The file path is added by the caller.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("{0}")]
    Header(#[from] HeaderError),
    #[error("its contents fail authentication")]
    BodyAuth,
    #[error("its contents cannot be decoded")]
    BodyDecode,
    #[error("secret '{0}' fails authentication")]
    ValueAuth(String),
    #[error("no secret named '{0}'")]
    NoSuchSecret(String),
    #[error("a secret named '{0}' exists")]
    Exists(String),
    #[error("{0}")]
    Memory(#[from] AllocError),
    #[error("the key derivation failed ({0})")]
    Kdf(String),
    #[error("the system random generator failed")]
    Random,
    #[error("the change is too large to save at once; save it in parts")]
    TooLarge,
    #[error("a record in the middle of its journal fails authentication")]
    JournalDamaged,
}

/// The journal a vault appends to between snapshots.
#[derive(Debug, Default)]
struct JournalState {
    /// The snapshot's generation, `None` until the vault has a version-2 snapshot (new,
    /// or opened from version 1): the next save then writes one.
    generation: Option<[u8; GENERATION_LEN]>,
    /// The next record's sequence number.
    seq: u64,
    /// The journal file's length as last written or read.
    len: u64,
    /// The snapshot's length, against which the journal's is weighed.
    snapshot_len: u64,
    /// The next save writes a snapshot (a new key slot, or an append that failed).
    snapshot_due: bool,
    /// What changed since the last save.
    pending: Vec<Op>,
}

/// The journal outgrows the snapshot (or this much, for a small vault): compact.
const COMPACT_AT_LEAST: u64 = 1 << 20;

/// Debug builds only: `JITC_TEST_COMPACT_AT` sets the journal length past which a save
/// compacts, so tests can reach a compaction (and crash in it) with a few changes.
#[cfg(debug_assertions)]
fn compact_at() -> Option<u64> {
    std::env::var("JITC_TEST_COMPACT_AT").ok()?.parse().ok()
}

#[cfg(not(debug_assertions))]
fn compact_at() -> Option<u64> {
    None
}

/// What opening found in the journal, for the caller to act on.
#[derive(Debug, Default)]
pub struct JournalFound {
    pub records: u64,
    /// Bytes of whole records: the file is cut back to this before the next append.
    pub valid_len: u64,
    /// Bytes past them: a record a crash cut short (it was never acknowledged).
    pub dropped: u64,
    /// The journal does not continue this snapshot and is to be removed.
    pub stale: bool,
    /// The dropped bytes are no crash's leftover: kept aside, and said (see
    /// `journal::torn_tail`).
    pub unexplained: bool,
}

/// How the next save is written.
pub enum SaveBytes {
    /// Append this record (the header comes first when the journal is new) to a
    /// journal that is `expect` bytes long (0: none yet).
    Append {
        header: [u8; journal::HEADER_LEN],
        record: Vec<u8>,
        expect: u64,
    },
    /// Write this snapshot (and remove the journal): `generation` names it.
    Snapshot {
        bytes: Zeroizing<Vec<u8>>,
        generation: [u8; GENERATION_LEN],
    },
}

pub struct Vault {
    key: LockedKey,
    slot: KeySlot,
    secrets: listing::Secrets,
    audit_checkpoint: Option<AuditCheckpoint>,
    seen: std::collections::BTreeSet<(String, String)>,
    bookkeeping: Bookkeeping,
    extras: format::Extras,
    /// Fingerprints of every value, to check requests against all of them.
    screen: Screen,
    journal: JournalState,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

/// The vault's key slot, detached from the vault: re-derives and unwraps the key from a
/// passphrase (slow; call off the runtime).
#[derive(Debug, Clone)]
pub struct PassphraseCheck {
    slot: KeySlot,
}

impl PassphraseCheck {
    pub fn unwrap_key(&self, passphrase: &[u8]) -> Result<LockedKey, VaultError> {
        Vault::unwrap_key(&self.slot, passphrase)
    }

    /// The key-encryption key for a new passphrase (same KDF costs, a fresh salt).
    /// Slow on purpose: call off the runtime.
    pub fn derive_new(&self, passphrase: &[u8]) -> Result<NewKek, VaultError> {
        let kdf = self.slot.kdf;
        let salt = random()?;
        let kek = derive_kek(passphrase, &kdf, &salt)?;
        Ok(NewKek { kek, kdf, salt })
    }
}

/// A key-encryption key derived from a new passphrase, to wrap the vault key with.
#[derive(Debug)]
pub struct NewKek {
    kek: LockedKey,
    kdf: Kdf,
    salt: [u8; format::SALT_LEN],
}

/// A vault key wrapped for a new passphrase (see `Vault::rewrapped`).
#[derive(Debug)]
pub struct PassphraseChange {
    slot: KeySlot,
}

/// What a name looked like before a change, to put back if the save fails.
#[derive(Debug)]
pub struct Undo {
    name: String,
    previous: Option<StoredSecret>,
}

pub enum Inserted {
    Added,
    Replaced,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| VaultError::Random)?;
    Ok(b)
}

fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

/// Seals `plain` into a fresh buffer sized so that sealing never reallocates.
fn seal(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plain.len() + TAG_LEN);
    buf.extend_from_slice(plain);
    // Encryption with a correctly sized buffer cannot fail for inputs under 256 GiB.
    if cipher(key)
        .encrypt_in_place(&XNonce::from(*nonce), aad, &mut buf)
        .is_err()
    {
        buf.clear();
    }
    buf
}

/// Opens `sealed` into a zeroizing buffer; `None` if it fails authentication.
fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(sealed.to_vec());
    cipher(key)
        .decrypt_in_place(&XNonce::from(*nonce), aad, &mut *buf)
        .ok()?;
    Some(buf)
}

fn value_aad(name: &str) -> Vec<u8> {
    [VALUE_AAD, name.as_bytes()].concat()
}

/// Argon2id(passphrase, salt) into a locked key. Slow on purpose: call off the runtime.
fn derive_kek(passphrase: &[u8], kdf: &Kdf, salt: &[u8]) -> Result<LockedKey, VaultError> {
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.lanes, Some(KEY_LEN))
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    LockedKey::new_with(|out| argon.hash_password_into(passphrase, salt, out))?
        .map_err(|e| VaultError::Kdf(e.to_string()))
}

fn kdf_from_params(p: KdfParams) -> Kdf {
    Kdf {
        memory_kib: p.memory_mib.saturating_mul(1024),
        iterations: p.iterations,
        lanes: 1,
    }
}

/// Refuses KDF costs from a header that are outside what `init` can produce, so a
/// damaged or planted file cannot make the agent allocate gigabytes or spin for hours.
fn check_stored_kdf(kdf: &Kdf) -> Result<(), VaultError> {
    let (lo, hi) = (KdfParams::MIN, KdfParams::MAX);
    let ok = (lo.memory_mib * 1024..=hi.memory_mib * 1024).contains(&kdf.memory_kib)
        && (lo.iterations..=hi.iterations).contains(&kdf.iterations)
        && kdf.lanes == 1;
    if ok {
        Ok(())
    } else {
        Err(HeaderError::Damaged.into())
    }
}

impl Vault {
    /// A new, empty vault protected by `passphrase`.
    pub fn create(passphrase: &[u8], params: KdfParams) -> Result<Vault, VaultError> {
        let kdf = kdf_from_params(params);
        let salt = random()?;
        let kek = derive_kek(passphrase, &kdf, &salt)?;
        let key = LockedKey::random()?;
        let mut slot = KeySlot {
            kdf,
            salt,
            wrap_nonce: random()?,
            wrapped_key: [0; format::WRAPPED_KEY_LEN],
        };
        let wrapped = seal(
            kek.expose(),
            &slot.wrap_nonce,
            &slot.wrap_aad(),
            key.expose(),
        );
        slot.wrapped_key = wrapped.try_into().map_err(|_| VaultError::Random)?;
        Ok(Vault {
            key,
            slot,
            secrets: listing::Secrets::default(),
            audit_checkpoint: None,
            seen: Default::default(),
            bookkeeping: Bookkeeping::default(),
            extras: format::Extras::default(),
            screen: Screen::new(),
            journal: JournalState::default(),
        })
    }

    /// A new key slot wrapping this vault's key under `kek` (see
    /// `PassphraseCheck::derive_new`): fast, the slow part is done.
    pub fn rewrapped(&self, kek: NewKek) -> Result<PassphraseChange, VaultError> {
        let mut slot = KeySlot {
            kdf: kek.kdf,
            salt: kek.salt,
            wrap_nonce: random()?,
            wrapped_key: [0; format::WRAPPED_KEY_LEN],
        };
        let wrapped = seal(
            kek.kek.expose(),
            &slot.wrap_nonce,
            &slot.wrap_aad(),
            self.key.expose(),
        );
        slot.wrapped_key = wrapped.try_into().map_err(|_| VaultError::Random)?;
        Ok(PassphraseChange { slot })
    }

    /// Installs a key slot made by `rewrapped`; returns the one it replaces (to put
    /// back if the save fails).
    pub fn set_passphrase(&mut self, change: PassphraseChange) -> PassphraseChange {
        // The key slot lives in the snapshot's header.
        self.journal.snapshot_due = true;
        PassphraseChange {
            slot: std::mem::replace(&mut self.slot, change.slot),
        }
    }

    /// Unwraps the vault key with the KEK derived from `passphrase`.
    fn unwrap_key(slot: &KeySlot, passphrase: &[u8]) -> Result<LockedKey, VaultError> {
        check_stored_kdf(&slot.kdf)?;
        let kek = derive_kek(passphrase, &slot.kdf, &slot.salt)?;
        let plain = open(
            kek.expose(),
            &slot.wrap_nonce,
            &slot.wrap_aad(),
            &slot.wrapped_key,
        )
        .ok_or(VaultError::WrongPassphrase)?;
        LockedKey::new_with(|k| {
            k.copy_from_slice(&plain);
            Ok::<(), VaultError>(())
        })?
    }

    /// Opens a vault file's bytes. A wrong passphrase and a damaged file are different
    /// errors: the key unwraps (proving the passphrase) before the body is checked.
    /// Opens a snapshot alone (no journal).
    pub fn open(file: &[u8], passphrase: &[u8]) -> Result<Vault, VaultError> {
        Self::open_with_journal(file, None, passphrase).map(|(v, _)| v)
    }

    /// Opens a snapshot and applies its journal, if there is one.
    pub fn open_with_journal(
        file: &[u8],
        journal_bytes: Option<&[u8]>,
        passphrase: &[u8],
    ) -> Result<(Vault, JournalFound), VaultError> {
        let header = Header::decode(file)?;
        let key = Self::unwrap_key(&header.slot, passphrase)?;
        let aad = &file[..HEADER_LEN];
        let plain = open(key.expose(), &header.body_nonce, aad, &file[HEADER_LEN..])
            .ok_or(VaultError::BodyAuth)?;
        let parts = format::decode_body(&plain).ok_or(VaultError::BodyDecode)?;
        drop(plain);
        if header.version >= 2 && parts.link.is_none() {
            return Err(VaultError::BodyDecode);
        }
        let body = parts.body;
        let secrets = body.secrets.into_iter().collect();
        let mut vault = Vault {
            key,
            slot: header.slot,
            secrets,
            audit_checkpoint: body.audit_checkpoint,
            seen: body.seen.into_iter().collect(),
            bookkeeping: parts.bookkeeping,
            extras: parts.extras,
            screen: Screen::new(),
            journal: JournalState {
                generation: parts.link.map(|l| l.generation),
                snapshot_len: file.len() as u64,
                ..JournalState::default()
            },
        };
        let mut found = JournalFound::default();
        if let Some(bytes) = journal_bytes {
            let replay =
                journal::read(vault.key.expose(), vault.journal.generation.as_ref(), bytes)?;
            found = JournalFound {
                records: replay.records.len() as u64,
                valid_len: replay.valid_len,
                dropped: replay.dropped,
                unexplained: replay.unexplained,
                stale: replay.stale,
            };
            for op in replay.records.into_iter().flatten() {
                vault.apply(op);
            }
            vault.journal.seq = found.records;
            vault.journal.len = if found.stale { 0 } else { found.valid_len };
        }
        // Every value once, for its fingerprints (a value that fails authentication is
        // reported when it is asked for).
        let names: Vec<String> = vault.secrets.keys().map(str::to_owned).collect();
        for name in names {
            if let Ok(value) = vault.open_value(&name) {
                vault.screen.insert(&name, value.expose());
            }
        }
        Ok((vault, found))
    }

    /// Replays one journal operation.
    fn apply(&mut self, op: Op) {
        match op {
            Op::Put(s) => {
                self.secrets.insert(s);
            }
            Op::Remove(name) => {
                self.secrets.remove(&name);
            }
            Op::Rename { from, to } => {
                self.secrets.remove(&from);
                self.move_seen(&from, &to.name);
                self.secrets.insert(to);
            }
            Op::Seen(secret, exe) => {
                self.seen.insert((secret, exe));
            }
            Op::GatewayCa(ca) => self.extras.gateway_ca = Some(ca),
            Op::Meta {
                audit_checkpoint,
                bookkeeping,
            } => {
                self.audit_checkpoint = audit_checkpoint;
                self.bookkeeping = bookkeeping;
            }
        }
    }

    /// How to write what changed since the last save: a journal record, or a whole
    /// snapshot when one is due (no journal yet, a new key slot, `force_snapshot`, or a
    /// journal grown past the snapshot). Call `saved` once it is on disk.
    pub fn save_bytes(&self, force_snapshot: bool) -> Result<SaveBytes, VaultError> {
        let j = &self.journal;
        let limit = compact_at().unwrap_or(j.snapshot_len.max(COMPACT_AT_LEAST));
        match j.generation {
            Some(generation) if !force_snapshot && !j.snapshot_due && j.len < limit => {
                let mut ops = j.pending.clone();
                ops.push(Op::Meta {
                    audit_checkpoint: self.audit_checkpoint.clone(),
                    bookkeeping: self.bookkeeping.clone(),
                });
                let record = journal::seal_record(self.key.expose(), &generation, j.seq, &ops)?;
                Ok(SaveBytes::Append {
                    header: journal::header(&generation),
                    record,
                    expect: j.len,
                })
            }
            _ => {
                let generation = random()?;
                Ok(SaveBytes::Snapshot {
                    bytes: self.to_file_bytes(&Link { generation })?,
                    generation,
                })
            }
        }
    }

    /// Notes a save as written: `len` is the journal's new length (after an append) or
    /// the snapshot's (after a snapshot).
    pub fn saved(&mut self, how: &SaveBytes, len: u64) {
        let j = &mut self.journal;
        j.pending.clear();
        match how {
            SaveBytes::Append { .. } => {
                j.seq += 1;
                j.len = len;
            }
            SaveBytes::Snapshot { generation, .. } => {
                *j = JournalState {
                    generation: Some(*generation),
                    snapshot_len: len,
                    ..JournalState::default()
                };
            }
        }
    }

    /// A save that failed: what it held may or may not be on disk, so the next save
    /// writes a whole snapshot, which settles it either way.
    pub fn save_failed(&mut self) {
        self.journal.pending.clear();
        self.journal.snapshot_due = true;
    }

    /// A whole snapshot of the vault as it is now.
    #[cfg(test)]
    pub fn snapshot(&self) -> Zeroizing<Vec<u8>> {
        match self.save_bytes(true).unwrap() {
            SaveBytes::Snapshot { bytes, .. } => bytes,
            SaveBytes::Append { .. } => unreachable!(),
        }
    }

    /// The next save writes a snapshot rather than append to the journal.
    pub fn compact_next(&mut self) {
        self.journal.snapshot_due = true;
    }

    fn log(&mut self, op: Op) {
        self.journal.pending.push(op);
    }

    fn move_seen(&mut self, from: &str, to: &str) {
        let moved: Vec<(String, String)> = self
            .seen
            .iter()
            .filter(|(s, _)| s == from)
            .cloned()
            .collect();
        for (s, exe) in moved {
            self.seen.remove(&(s, exe.clone()));
            self.seen.insert((to.to_owned(), exe));
        }
    }

    /// What re-checking a passphrase needs, so the slow part can run without holding
    /// the vault.
    pub fn passphrase_check(&self) -> PassphraseCheck {
        PassphraseCheck {
            slot: self.slot.clone(),
        }
    }

    /// Whether `key` is this vault's key.
    pub fn has_key(&self, key: &LockedKey) -> bool {
        key.expose() == self.key.expose()
    }

    /// Whether `passphrase` opens this vault (for re-authenticating a human).
    pub fn check_passphrase(&self, passphrase: &[u8]) -> Result<(), VaultError> {
        let key = self.passphrase_check().unwrap_key(passphrase)?;
        if self.has_key(&key) {
            Ok(())
        } else {
            Err(VaultError::WrongPassphrase)
        }
    }

    /// The whole snapshot as it should be written now, with a fresh body nonce.
    fn to_file_bytes(&self, link: &Link) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let header = Header {
            version: format::FORMAT_VERSION,
            slot: self.slot.clone(),
            body_nonce: random()?,
        };
        let head = header.encode();
        let body = Body {
            secrets: self.secrets.values().cloned().collect(),
            audit_checkpoint: self.audit_checkpoint.clone(),
            seen: self.seen.iter().cloned().collect(),
        };
        let plain = format::encode_body(&body, &self.bookkeeping, &self.extras, link)
            .ok_or(VaultError::BodyDecode)?;
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN));
        out.extend_from_slice(&head);
        out.extend_from_slice(&seal(self.key.expose(), &header.body_nonce, &head, &plain));
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.secrets.contains_key(name)
    }

    /// Whether `secret` has never gone to `exe`.
    pub fn is_new_use(&self, secret: &str, exe: &str) -> bool {
        !self.seen.contains(&(secret.to_owned(), exe.to_owned()))
    }

    /// Records that `secret` went to `exe`; true if that had never happened before.
    pub fn first_use(&mut self, secret: &str, exe: &str) -> bool {
        let new = self.seen.insert((secret.to_owned(), exe.to_owned()));
        if new {
            self.log(Op::Seen(secret.to_owned(), exe.to_owned()));
        }
        new
    }

    /// Whether `name` is a decoy (`jitc add --canary`).
    pub fn is_canary(&self, name: &str) -> bool {
        self.secrets.get(name).is_some_and(|s| s.canary)
    }

    pub fn memory_locked(&self) -> bool {
        self.key.is_memory_locked()
    }

    pub fn key(&self) -> &[u8; KEY_LEN] {
        self.key.expose()
    }

    pub fn audit_checkpoint(&self) -> Option<&AuditCheckpoint> {
        self.audit_checkpoint.as_ref()
    }

    pub fn set_audit_checkpoint(&mut self, checkpoint: Option<AuditCheckpoint>) {
        self.audit_checkpoint = checkpoint;
    }

    /// What the agent keeps about the policy and the audit trail across restarts.
    pub fn bookkeeping(&self) -> &Bookkeeping {
        &self.bookkeeping
    }

    pub fn bookkeeping_mut(&mut self) -> &mut Bookkeeping {
        &mut self.bookkeeping
    }

    /// The secrets (names) one of whose values, or their encodings, may occur in `hay`.
    pub fn screen(&self, hay: &[u8]) -> Vec<std::sync::Arc<str>> {
        self.screen.find(hay)
    }

    /// The fingerprints of every value (see `Screen`).
    pub fn fingerprints(&self) -> &Screen {
        &self.screen
    }

    /// Stores `value` under `name`, sealed. Refuses an existing name unless `replace`.
    pub fn insert(
        &mut self,
        name: &str,
        value: &SecretBytes,
        description: Option<String>,
        replace: bool,
        canary: bool,
    ) -> Result<Inserted, VaultError> {
        let now = now_unix();
        let nonce = random()?;
        let sealed = seal(self.key.expose(), &nonce, &value_aad(name), value.expose());
        let (created, inserted) = match self.secrets.get(name) {
            Some(_) if !replace => return Err(VaultError::Exists(name.to_owned())),
            Some(old) => (old.created, Inserted::Replaced),
            None => (now, Inserted::Added),
        };
        if let Ok(old) = self.open_value(name) {
            self.screen.remove(name, old.expose());
        }
        self.screen.insert(name, value.expose());
        let description = match (description, self.secrets.get(name)) {
            (Some(d), _) => Some(d.into_boxed_str()),
            (None, Some(old)) => old.description.clone(),
            (None, None) => None,
        };
        let stored = StoredSecret {
            name: name.into(),
            description,
            created,
            updated: now,
            canary,
            nonce,
            sealed: sealed.into(),
        };
        self.log(Op::Put(stored.clone()));
        self.secrets.insert(stored);
        Ok(inserted)
    }

    /// Remembers `name`'s current state, for `undo` after a failed save.
    pub fn undo_point(&self, name: &str) -> Undo {
        Undo {
            name: name.to_owned(),
            previous: self.secrets.get(name).cloned(),
        }
    }

    pub fn undo(&mut self, undo: Undo) {
        if let Ok(now) = self.open_value(&undo.name) {
            self.screen.remove(&undo.name, now.expose());
        }
        match undo.previous {
            Some(old) => {
                self.log(Op::Put(old.clone()));
                self.secrets.insert(old);
            }
            None => {
                self.log(Op::Remove(undo.name.clone()));
                self.secrets.remove(&undo.name);
            }
        }
        if let Ok(back) = self.open_value(&undo.name) {
            self.screen.insert(&undo.name, back.expose());
        }
    }

    pub fn remove(&mut self, name: &str) -> Result<(), VaultError> {
        if let Ok(old) = self.open_value(name) {
            self.screen.remove(name, old.expose());
        }
        self.secrets
            .remove(name)
            .ok_or_else(|| VaultError::NoSuchSecret(name.to_owned()))?;
        self.log(Op::Remove(name.to_owned()));
        Ok(())
    }

    /// Renames `from` to `to` (which must not exist); the value is sealed again, bound
    /// to its new name.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), VaultError> {
        if self.secrets.contains_key(to) {
            return Err(VaultError::Exists(to.to_owned()));
        }
        let value = self.open_value(from)?;
        let old = self
            .secrets
            .get(from)
            .cloned()
            .ok_or_else(|| VaultError::NoSuchSecret(from.to_owned()))?;
        let nonce = random()?;
        let sealed = seal(self.key.expose(), &nonce, &value_aad(to), value.expose());
        self.screen.remove(from, value.expose());
        self.secrets.remove(from);
        let moved = StoredSecret {
            name: to.into(),
            updated: now_unix(),
            nonce,
            sealed: sealed.into(),
            ..old
        };
        self.log(Op::Rename {
            from: from.to_owned(),
            to: moved.clone(),
        });
        self.secrets.insert(moved);
        self.screen.insert(to, value.expose());
        // First uses are remembered by name.
        self.move_seen(from, to);
        Ok(())
    }

    /// Sets (or clears) a secret's description.
    pub fn describe(&mut self, name: &str, description: Option<String>) -> Result<(), VaultError> {
        let mut s = self
            .secrets
            .remove(name)
            .ok_or_else(|| VaultError::NoSuchSecret(name.to_owned()))?;
        s.description = description.map(String::into_boxed_str);
        s.updated = now_unix();
        self.log(Op::Put(s.clone()));
        self.secrets.insert(s);
        Ok(())
    }

    /// Every secret's metadata, in name order.
    pub fn list(&self) -> Vec<SecretInfo> {
        self.secrets.values().map(StoredSecret::info).collect()
    }

    /// The frame of one page of the listing: the secrets named after `after`, in name
    /// order, up to about `budget` bytes (at least one); its `more` says whether more
    /// follow. From the listing the vault keeps encoded (see `listing`).
    pub fn list_page_frame(
        &self,
        after: &str,
        budget: usize,
    ) -> Result<Zeroizing<Vec<u8>>, jitc_protocol::FrameError> {
        self.secrets.page_frame(after, budget)
    }

    /// Opens one value for the request being served.
    /// The gateway's CA: its certificate (DER) and private key (PKCS#8 DER), if made.
    pub fn gateway_ca(&self) -> Option<(Vec<u8>, SecretBytes)> {
        let ca = self.extras.gateway_ca.as_ref()?;
        let key = open(self.key.expose(), &ca.nonce, CA_AAD, &ca.sealed_key)?;
        Some((ca.cert_der.clone(), SecretBytes::from_zeroizing(key)))
    }

    /// Keeps the gateway's CA (saved with the vault's next save).
    pub fn set_gateway_ca(&mut self, cert_der: Vec<u8>, key_der: &[u8]) -> Result<(), VaultError> {
        let nonce = random()?;
        let sealed_key = seal(self.key.expose(), &nonce, CA_AAD, key_der);
        let ca = format::SealedCa {
            cert_der,
            nonce,
            sealed_key,
        };
        self.log(Op::GatewayCa(ca.clone()));
        self.extras.gateway_ca = Some(ca);
        Ok(())
    }

    pub fn open_value(&self, name: &str) -> Result<SecretBytes, VaultError> {
        let s = self
            .secrets
            .get(name)
            .ok_or_else(|| VaultError::NoSuchSecret(name.to_owned()))?;
        open(self.key.expose(), &s.nonce, &value_aad(name), &s.sealed)
            .map(SecretBytes::from_zeroizing)
            .ok_or_else(|| VaultError::ValueAuth(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams::MIN;

    fn vault_with(values: &[(&str, &[u8])]) -> Vault {
        let mut v = Vault::create(b"pass", FAST).unwrap();
        for (n, val) in values {
            v.insert(n, &SecretBytes::from_slice(val), None, false, false)
                .unwrap();
        }
        v
    }

    #[test]
    fn round_trip_through_file_bytes() {
        let v = vault_with(&[("a", b"alpha"), ("b/c", b"\x00bin\xff")]);
        let bytes = v.snapshot();
        let w = Vault::open(&bytes, b"pass").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.open_value("a").unwrap().expose(), b"alpha");
        assert_eq!(w.open_value("b/c").unwrap().expose(), b"\x00bin\xff");
        assert!(matches!(
            w.open_value("zz"),
            Err(VaultError::NoSuchSecret(_))
        ));
    }

    /// Saves `v` onto the in-memory "disk" (snapshot, journal) as the agent would.
    fn save(v: &mut Vault, disk: &mut (Vec<u8>, Vec<u8>)) -> bool {
        let how = v.save_bytes(false).unwrap();
        let len = match &how {
            SaveBytes::Snapshot { bytes, .. } => {
                disk.0 = bytes.to_vec();
                disk.1.clear();
                disk.0.len()
            }
            SaveBytes::Append { header, record, .. } => {
                if disk.1.is_empty() {
                    disk.1.extend_from_slice(header);
                }
                disk.1.extend_from_slice(record);
                disk.1.len()
            }
        };
        v.saved(&how, len as u64);
        matches!(how, SaveBytes::Snapshot { .. })
    }

    #[test]
    fn a_snapshot_and_its_journal_open_as_the_vault_that_wrote_them() {
        let mut v = vault_with(&[("a", b"one"), ("b", b"two")]);
        let mut disk = (Vec::new(), Vec::new());
        assert!(
            save(&mut v, &mut disk),
            "a new vault starts with a snapshot"
        );
        let snapshot = disk.0.clone();
        v.insert("c", &SecretBytes::from_slice(b"three"), None, false, false)
            .unwrap();
        assert!(!save(&mut v, &mut disk), "a change is appended");
        v.rename("a", "a2").unwrap();
        assert!(v.first_use("a2", "/usr/bin/psql"));
        assert!(!save(&mut v, &mut disk));
        v.remove("b").unwrap();
        v.describe("c", Some("the third".into())).unwrap();
        v.set_gateway_ca(b"cert".to_vec(), b"ca-private-key")
            .unwrap();
        v.set_audit_checkpoint(Some(AuditCheckpoint {
            seq: 7,
            tag: [5; 32],
        }));
        v.bookkeeping_mut().audit_sidecar = true;
        assert!(!save(&mut v, &mut disk));
        assert_eq!(disk.0, snapshot, "the snapshot is not rewritten");
        assert!(!disk.1.windows(5).any(|w| w == b"three"));

        let (w, found) = Vault::open_with_journal(&disk.0, Some(&disk.1), b"pass").unwrap();
        assert_eq!((found.records, found.dropped, found.stale), (3, 0, false));
        assert_eq!(w.list(), v.list());
        assert_eq!(w.open_value("a2").unwrap().expose(), b"one");
        assert_eq!(w.open_value("c").unwrap().expose(), b"three");
        assert!(!w.is_new_use("a2", "/usr/bin/psql"));
        assert_eq!(w.gateway_ca().unwrap().1.expose(), b"ca-private-key");
        assert_eq!(w.audit_checkpoint().unwrap().seq, 7);
        assert!(w.bookkeeping().audit_sidecar);
        assert_eq!(w.screen(b"x three y")[..], [std::sync::Arc::from("c")]);
        assert!(w.screen(b"two").is_empty());

        // A new passphrase writes a snapshot, and the journal starts over.
        let mut w = w;
        let change = w
            .rewrapped(w.passphrase_check().derive_new(b"new").unwrap())
            .unwrap();
        w.set_passphrase(change);
        let mut disk2 = (Vec::new(), disk.1.clone());
        assert!(save(&mut w, &mut disk2));
        let (x, found) = Vault::open_with_journal(&disk2.0, Some(&disk.1), b"new").unwrap();
        assert!(
            found.stale,
            "the old journal does not continue the new snapshot"
        );
        assert_eq!(x.list(), v.list());
    }

    #[test]
    fn the_journal_is_compacted_once_it_outgrows_the_snapshot() {
        let mut v = vault_with(&[]);
        let mut disk = (Vec::new(), Vec::new());
        assert!(save(&mut v, &mut disk));
        let big = vec![b'x'; 64 << 10];
        let mut saves = 0;
        while !{
            v.insert("big", &SecretBytes::from_slice(&big), None, true, false)
                .unwrap();
            saves += 1;
            save(&mut v, &mut disk)
        } {}
        // 1 MiB of journal at 64 KiB a record, then the snapshot.
        assert!((16..=18).contains(&saves), "{saves}");
        assert!(disk.1.is_empty());
        assert!(disk.0.len() < 70 << 10);
    }

    #[test]
    fn the_gateway_ca_is_kept_sealed_and_a_vault_without_one_still_opens() {
        let mut v = vault_with(&[("a", b"alpha")]);
        let before = v.snapshot();
        assert!(
            Vault::open(&before, b"pass")
                .unwrap()
                .gateway_ca()
                .is_none()
        );
        v.set_gateway_ca(b"cert-der".to_vec(), b"private-key-pkcs8-bytes")
            .unwrap();
        let bytes = v.snapshot();
        assert!(!bytes.windows(23).any(|w| w == b"private-key-pkcs8-bytes"));
        let w = Vault::open(&bytes, b"pass").unwrap();
        let (cert, key) = w.gateway_ca().unwrap();
        assert_eq!(cert, b"cert-der");
        assert_eq!(key.expose(), b"private-key-pkcs8-bytes");
        assert_eq!(w.open_value("a").unwrap().expose(), b"alpha");
    }

    #[test]
    fn no_plaintext_in_the_file() {
        let v = vault_with(&[("token", b"sup3r-s3cret-value")]);
        let bytes = v.snapshot();
        assert!(!bytes.windows(18).any(|w| w == b"sup3r-s3cret-value"));
    }

    #[test]
    fn wrong_passphrase_is_not_corruption() {
        let bytes = vault_with(&[("a", b"alpha")]).snapshot();
        assert!(matches!(
            Vault::open(&bytes, b"nope"),
            Err(VaultError::WrongPassphrase)
        ));
        let mut body = bytes.clone();
        let last = body.len() - 1;
        body[last] ^= 1;
        assert!(matches!(
            Vault::open(&body, b"pass"),
            Err(VaultError::BodyAuth)
        ));
        let mut head = bytes.clone();
        head[40] ^= 1;
        assert!(matches!(
            Vault::open(&head, b"pass"),
            Err(VaultError::Header(HeaderError::Damaged))
        ));
        assert!(matches!(
            Vault::open(&bytes[..HEADER_LEN + 3], b"pass"),
            Err(VaultError::BodyAuth)
        ));
    }

    #[test]
    fn replace_and_remove() {
        let mut v = vault_with(&[("a", b"one")]);
        assert!(matches!(
            v.insert("a", &SecretBytes::from_slice(b"two"), None, false, false),
            Err(VaultError::Exists(_))
        ));
        v.insert(
            "a",
            &SecretBytes::from_slice(b"two"),
            Some("d".into()),
            true,
            false,
        )
        .unwrap();
        assert_eq!(v.open_value("a").unwrap().expose(), b"two");
        assert_eq!(v.list()[0].description.as_deref(), Some("d"));
        v.remove("a").unwrap();
        assert!(v.is_empty());
        assert!(v.remove("a").is_err());
    }

    #[test]
    fn values_are_bound_to_their_names() {
        let mut v = vault_with(&[("a", b"one"), ("b", b"two")]);
        let a = v.secrets.get("a").unwrap().clone();
        let mut b = v.secrets.remove("b").unwrap();
        b.nonce = a.nonce;
        b.sealed = a.sealed;
        v.secrets.insert(b);
        assert!(matches!(v.open_value("b"), Err(VaultError::ValueAuth(_))));
    }

    #[test]
    fn check_passphrase() {
        let v = vault_with(&[]);
        v.check_passphrase(b"pass").unwrap();
        assert!(v.check_passphrase(b"other").is_err());
    }

    #[test]
    fn absurd_stored_costs_are_refused_before_hashing() {
        let v = vault_with(&[]);
        let mut slot = v.slot.clone();
        slot.kdf.memory_kib = u32::MAX;
        assert!(matches!(
            Vault::unwrap_key(&slot, b"pass"),
            Err(VaultError::Header(HeaderError::Damaged))
        ));
    }
}

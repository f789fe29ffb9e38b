//! The vault: secrets sealed at rest and in memory.
//!
//! passphrase → Argon2id → key-encryption key (KEK) → unwraps a random 256-bit vault
//! key → opens the body. Each value inside the body is sealed again on its own under the
//! vault key, and stays sealed in memory after unlock: a value is opened only while a
//! request that needs it is being served. The vault key lives in an `mlock`ed page.

mod file;
mod format;
pub mod screen;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jitc_protocol::{KdfParams, SecretBytes, SecretInfo};
use zeroize::Zeroizing;

pub use file::{FileError, FileStamp, VaultFile, VaultLock};
pub use format::{AuditCheckpoint, Bookkeeping, HeaderError};
use format::{Body, HEADER_LEN, Header, Kdf, KeySlot, NONCE_LEN, StoredSecret, TAG_LEN};
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
}

pub struct Vault {
    key: LockedKey,
    slot: KeySlot,
    secrets: BTreeMap<String, StoredSecret>,
    audit_checkpoint: Option<AuditCheckpoint>,
    seen: std::collections::BTreeSet<(String, String)>,
    bookkeeping: Bookkeeping,
    extras: format::Extras,
    /// Fingerprints of every value, to check requests against all of them.
    screen: Screen,
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
            secrets: BTreeMap::new(),
            audit_checkpoint: None,
            seen: Default::default(),
            bookkeeping: Bookkeeping::default(),
            extras: format::Extras::default(),
            screen: Screen::new(),
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
    pub fn open(file: &[u8], passphrase: &[u8]) -> Result<Vault, VaultError> {
        let header = Header::decode(file)?;
        let key = Self::unwrap_key(&header.slot, passphrase)?;
        let aad = &file[..HEADER_LEN];
        let plain = open(key.expose(), &header.body_nonce, aad, &file[HEADER_LEN..])
            .ok_or(VaultError::BodyAuth)?;
        let (body, bookkeeping, extras) =
            format::decode_body(&plain).ok_or(VaultError::BodyDecode)?;
        let secrets = body
            .secrets
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut vault = Vault {
            key,
            slot: header.slot,
            secrets,
            audit_checkpoint: body.audit_checkpoint,
            seen: body.seen.into_iter().collect(),
            bookkeeping,
            extras,
            screen: Screen::new(),
        };
        // Every value once, for its fingerprints (a value that fails authentication is
        // reported when it is asked for).
        let names: Vec<String> = vault.secrets.keys().cloned().collect();
        for name in names {
            if let Ok(value) = vault.open_value(&name) {
                vault.screen.insert(&name, value.expose());
            }
        }
        Ok(vault)
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

    /// The whole file as it should be written now, with a fresh body nonce.
    pub fn to_file_bytes(&self) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let header = Header {
            slot: self.slot.clone(),
            body_nonce: random()?,
        };
        let head = header.encode();
        let body = Body {
            secrets: self.secrets.values().cloned().collect(),
            audit_checkpoint: self.audit_checkpoint.clone(),
            seen: self.seen.iter().cloned().collect(),
        };
        let plain = format::encode_body(&body, &self.bookkeeping, &self.extras)
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
        self.seen.insert((secret.to_owned(), exe.to_owned()))
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
            (Some(d), _) => Some(d),
            (None, Some(old)) => old.description.clone(),
            (None, None) => None,
        };
        self.secrets.insert(
            name.to_owned(),
            StoredSecret {
                name: name.to_owned(),
                description,
                created,
                updated: now,
                canary,
                nonce,
                sealed,
            },
        );
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
            Some(old) => self.secrets.insert(undo.name.clone(), old),
            None => self.secrets.remove(&undo.name),
        };
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
            .map(drop)
            .ok_or_else(|| VaultError::NoSuchSecret(name.to_owned()))
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
        self.secrets.insert(
            to.to_owned(),
            StoredSecret {
                name: to.to_owned(),
                updated: now_unix(),
                nonce,
                sealed,
                ..old
            },
        );
        self.screen.insert(to, value.expose());
        // First uses are remembered by name.
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
        Ok(())
    }

    /// Sets (or clears) a secret's description.
    pub fn describe(&mut self, name: &str, description: Option<String>) -> Result<(), VaultError> {
        let s = self
            .secrets
            .get_mut(name)
            .ok_or_else(|| VaultError::NoSuchSecret(name.to_owned()))?;
        s.description = description;
        s.updated = now_unix();
        Ok(())
    }

    /// Every secret's metadata, in name order.
    pub fn list(&self) -> Vec<SecretInfo> {
        self.list_page("", usize::MAX).0
    }

    /// The secrets named after `after`, in name order, up to `budget` bytes encoded;
    /// `true` if more follow.
    pub fn list_page(&self, after: &str, budget: usize) -> (Vec<SecretInfo>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = if after.is_empty() {
            Unbounded
        } else {
            Excluded(after)
        };
        let items = self
            .secrets
            .range::<str, _>((from, Unbounded))
            .map(|(_, s)| SecretInfo {
                name: s.name.clone(),
                description: s.description.clone(),
                created: s.created,
                updated: s.updated,
                canary: s.canary,
            });
        crate::leases::page(items, budget)
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
        self.extras.gateway_ca = Some(format::SealedCa {
            cert_der,
            nonce,
            sealed_key,
        });
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
        let bytes = v.to_file_bytes().unwrap();
        let w = Vault::open(&bytes, b"pass").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w.open_value("a").unwrap().expose(), b"alpha");
        assert_eq!(w.open_value("b/c").unwrap().expose(), b"\x00bin\xff");
        assert!(matches!(
            w.open_value("zz"),
            Err(VaultError::NoSuchSecret(_))
        ));
    }

    #[test]
    fn the_gateway_ca_is_kept_sealed_and_a_vault_without_one_still_opens() {
        let mut v = vault_with(&[("a", b"alpha")]);
        let before = v.to_file_bytes().unwrap();
        assert!(
            Vault::open(&before, b"pass")
                .unwrap()
                .gateway_ca()
                .is_none()
        );
        v.set_gateway_ca(b"cert-der".to_vec(), b"private-key-pkcs8-bytes")
            .unwrap();
        let bytes = v.to_file_bytes().unwrap();
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
        let bytes = v.to_file_bytes().unwrap();
        assert!(!bytes.windows(18).any(|w| w == b"sup3r-s3cret-value"));
    }

    #[test]
    fn wrong_passphrase_is_not_corruption() {
        let bytes = vault_with(&[("a", b"alpha")]).to_file_bytes().unwrap();
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
        let a = v.secrets["a"].clone();
        let b = v.secrets.get_mut("b").unwrap();
        b.nonce = a.nonce;
        b.sealed = a.sealed;
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

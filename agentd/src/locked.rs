//! `LockedKey`: a 256-bit key in its own `mlock`ed, guard-paged, no-dump page (memsec),
//! wiped before the page is freed.
#![allow(unsafe_code)]

use std::fmt;
use std::ptr::NonNull;

use zeroize::Zeroize;

pub const KEY_LEN: usize = 32;

pub struct LockedKey {
    ptr: NonNull<[u8; KEY_LEN]>,
    locked: bool,
}

// SAFETY: `LockedKey` owns its allocation exclusively, like a `Box`; nothing else holds
// the pointer, and shared access only reads.
unsafe impl Send for LockedKey {}
// SAFETY: as above; `&LockedKey` only ever yields `&[u8; KEY_LEN]`.
unsafe impl Sync for LockedKey {}

#[derive(Debug, thiserror::Error)]
#[error("could not allocate protected memory for a key")]
pub struct AllocError;

impl LockedKey {
    /// A key filled by `fill`; if `fill` fails the page is wiped and freed.
    pub fn new_with<E>(
        fill: impl FnOnce(&mut [u8; KEY_LEN]) -> Result<(), E>,
    ) -> Result<Result<Self, E>, AllocError> {
        // SAFETY: memsec::malloc returns either None or a valid, aligned, writable
        // allocation of size_of::<[u8; KEY_LEN]>() that we now own.
        let ptr = unsafe { memsec::malloc::<[u8; KEY_LEN]>() }.ok_or(AllocError)?;
        // SAFETY: the page was just mapped and mlock is idempotent; calling it again only
        // tells us whether the first attempt (inside memsec) succeeded.
        let locked = unsafe { memsec::mlock(ptr.as_ptr().cast::<u8>(), KEY_LEN) };
        let key = LockedKey { ptr, locked };
        // SAFETY: ptr is valid and uniquely owned by `key`.
        let bytes = unsafe { &mut *key.ptr.as_ptr() };
        bytes.zeroize();
        Ok(fill(bytes).map(|()| key))
    }

    /// A fresh random key.
    pub fn random() -> Result<Self, AllocError> {
        Self::new_with(|k| getrandom::fill(k))?.map_err(|_| AllocError)
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        // SAFETY: ptr is valid for our lifetime and only mutated through `&mut self`.
        unsafe { self.ptr.as_ref() }
    }

    /// Whether the page is really locked in RAM (mlock can fail under RLIMIT_MEMLOCK).
    pub fn is_memory_locked(&self) -> bool {
        self.locked
    }
}

impl Drop for LockedKey {
    fn drop(&mut self) {
        // SAFETY: ptr is valid and uniquely owned; after this it is never used again.
        unsafe {
            (*self.ptr.as_ptr()).zeroize();
            memsec::free(self.ptr);
        }
    }
}

impl fmt::Debug for LockedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockedKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_differ_and_are_redacted() {
        let a = LockedKey::random().unwrap();
        let b = LockedKey::random().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(format!("{a:?}"), "LockedKey([redacted])");
    }

    #[test]
    fn failed_fill_gives_the_error() {
        let r = LockedKey::new_with(|_| Err::<(), _>("nope")).unwrap();
        assert_eq!(r.err(), Some("nope"));
    }
}

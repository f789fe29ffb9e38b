//! Length-prefixed frames: a 4-byte big-endian length, then a postcard payload.
//!
//! Buffers that may hold secret values are `Zeroizing`, and are sized exactly once so no
//! reallocation leaves a stray copy on the heap.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::{Zeroize, Zeroizing};

pub const FRAME_PREFIX_LEN: usize = 4;
/// The largest payload either side accepts or sends.
pub const MAX_FRAME_LEN: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {MAX_FRAME_LEN}-byte limit")]
    TooLarge { len: usize },
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed message ({0})")]
    Decode(postcard::Error),
    #[error("message could not be encoded ({0})")]
    Encode(postcard::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The payload length announced by a prefix, refused if over the cap. Call this before
/// allocating anything for the payload.
pub fn frame_len(prefix: [u8; FRAME_PREFIX_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    Ok(len)
}

/// Encodes `msg` as a whole frame, prefix included.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let len = postcard::experimental::serialized_size(msg).map_err(FrameError::Encode)?;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    let mut buf = Zeroizing::new(vec![0u8; FRAME_PREFIX_LEN + len]);
    buf[..FRAME_PREFIX_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    postcard::to_slice(msg, &mut buf[FRAME_PREFIX_LEN..]).map_err(FrameError::Encode)?;
    Ok(buf)
}

/// Appends one secret's metadata to `out` as it is encoded inside a page: pieces made
/// this way, back to back, are the items of [`secrets_page_frame`].
pub fn encode_secret_info(
    item: &crate::SecretInfoRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(item, taken).map_err(FrameError::Encode)?;
    Ok(())
}

/// The frame of `Response::Secrets` whose items are `count` pieces of
/// [`encode_secret_info`] back to back in `items`: byte for byte the frame of the
/// owned response, built with one copy (the agent keeps its listing encoded).
pub fn secrets_page_frame(
    items: &[u8],
    count: usize,
    more: bool,
) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let variant =
        postcard::to_allocvec(&crate::message::SECRETS_VARIANT).map_err(FrameError::Encode)?;
    let length = postcard::to_allocvec(&count).map_err(FrameError::Encode)?;
    let len = variant.len() + length.len() + items.len() + 1;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(FRAME_PREFIX_LEN + len));
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    buf.extend_from_slice(&variant);
    buf.extend_from_slice(&length);
    buf.extend_from_slice(items);
    buf.push(u8::from(more));
    Ok(buf)
}

/// A page of `Response::Secrets` borrowed from the payload it arrived in (its items and
/// whether more follow), with no copy of a name; `None` if the payload is another
/// response (decode that with [`decode`]).
pub fn borrow_secrets_page(
    payload: &[u8],
) -> Result<Option<(Vec<crate::SecretInfoRef<'_>>, bool)>, FrameError> {
    let (variant, rest): (u32, &[u8]) =
        postcard::take_from_bytes(payload).map_err(FrameError::Decode)?;
    if variant != crate::message::SECRETS_VARIANT {
        return Ok(None);
    }
    let (items, rest) = postcard::take_from_bytes(rest).map_err(FrameError::Decode)?;
    let (more, rest): (bool, &[u8]) =
        postcard::take_from_bytes(rest).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(Some((items, more)))
}

/// Decodes one payload; trailing bytes are an error, not silently ignored.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes(payload).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(msg)
}

/// Reads one frame's payload. `Ok(None)` is a clean end of stream between frames; an
/// end anywhere inside a frame is [`FrameError::Truncated`].
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
    let mut prefix = [0u8; FRAME_PREFIX_LEN];
    let mut got = 0;
    while got < FRAME_PREFIX_LEN {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = frame_len(prefix)?;
    let mut payload = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(payload))
}

/// What one read asks the kernel for: a typical message (and then some) in one call.
const READ_CHUNK: usize = 4096;

/// Received bytes on their way to becoming messages, for readers of either kind (the
/// agent's async one, the client's blocking one): usually a whole frame arrives in one
/// read. The buffer is zeroizing, each decoded frame is wiped at once, and a frame's
/// length is checked against the cap before any room is made for it.
#[derive(Debug)]
pub struct FrameBuf {
    /// Undecoded bytes are `buf[start..end]`.
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Default for FrameBuf {
    fn default() -> Self {
        FrameBuf {
            buf: Zeroizing::new(vec![0; READ_CHUNK]),
            start: 0,
            end: 0,
        }
    }
}

impl FrameBuf {
    /// Whether any received byte is still undecoded.
    pub fn has_data(&self) -> bool {
        self.end > self.start
    }

    /// Decodes the next whole frame, if one is buffered.
    pub fn take<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let mut decoder = Some(|payload: &[u8]| decode(payload));
        self.take_with(&mut decoder)?.transpose()
    }

    /// Hands the next whole frame's payload to `f` (taken out of its option: once), if
    /// one is buffered; the payload is wiped after.
    fn take_with<T>(
        &mut self,
        f: &mut Option<impl FnOnce(&[u8]) -> T>,
    ) -> Result<Option<T>, FrameError> {
        let avail = self.end - self.start;
        if avail < FRAME_PREFIX_LEN {
            return Ok(None);
        }
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        prefix.copy_from_slice(&self.buf[self.start..self.start + FRAME_PREFIX_LEN]);
        let total = FRAME_PREFIX_LEN + frame_len(prefix)?;
        if avail < total {
            return Ok(None);
        }
        let frame = self.start..self.start + total;
        let Some(f) = f.take() else {
            return Ok(None);
        };
        let msg = f(&self.buf[frame.start + FRAME_PREFIX_LEN..frame.end]);
        self.buf[frame.clone()].zeroize();
        self.start = frame.end;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_CHUNK {
                self.buf = Zeroizing::new(vec![0; READ_CHUNK]);
            }
        }
        Ok(Some(msg))
    }

    /// Room to read into: enough for the rest of a frame whose prefix is in (checked
    /// against the cap first), else whatever the buffer has left.
    pub fn spare(&mut self) -> Result<&mut [u8], FrameError> {
        let avail = self.end - self.start;
        let mut needed = READ_CHUNK;
        if avail >= FRAME_PREFIX_LEN {
            let mut prefix = [0u8; FRAME_PREFIX_LEN];
            prefix.copy_from_slice(&self.buf[self.start..self.start + FRAME_PREFIX_LEN]);
            needed = needed.max(FRAME_PREFIX_LEN + frame_len(prefix)?);
        }
        if self.buf.len() < needed {
            // Moved into a buffer that fits; the old one is wiped as it drops.
            let mut bigger = Zeroizing::new(vec![0u8; needed]);
            bigger[..avail].copy_from_slice(&self.buf[self.start..self.end]);
            self.buf = bigger;
            self.start = 0;
            self.end = avail;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.buf[avail..self.end].zeroize();
            self.start = 0;
            self.end = avail;
        }
        Ok(&mut self.buf[self.end..])
    }

    /// Records `n` bytes read into `spare()`.
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// A blocking read of the next message. `Ok(None)` is a clean end of stream between
    /// frames; an end inside a frame is [`FrameError::Truncated`].
    pub fn read<T: DeserializeOwned, R: Read + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> Result<Option<T>, FrameError> {
        self.read_with(r, |payload| decode(payload))?.transpose()
    }

    /// A blocking read of the next frame, whose payload is handed to `f` (which may
    /// borrow from it, as [`borrow_secrets_page`] does) and wiped after. `Ok(None)` is a
    /// clean end of stream between frames.
    pub fn read_with<T, R: Read + ?Sized>(
        &mut self,
        r: &mut R,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, FrameError> {
        let mut f = Some(f);
        loop {
            if let Some(out) = self.take_with(&mut f)? {
                return Ok(Some(out));
            }
            let n = loop {
                match r.read(self.spare()?) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            };
            if n == 0 {
                return if self.has_data() {
                    Err(FrameError::Truncated)
                } else {
                    Ok(None)
                };
            }
            self.filled(n);
        }
    }
}

/// Encodes and writes one frame in a single write call.
pub fn write_frame<W: Write + ?Sized, T: Serialize + ?Sized>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    use crate::arbitrary::{request, response};

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
        let frame = encode_frame(msg).unwrap();
        let mut r = &frame[..];
        let payload = read_frame(&mut r).unwrap().unwrap();
        assert!(r.is_empty());
        let back: T = decode(&payload).unwrap();
        assert_eq!(&back, msg);
    }

    proptest! {
        #[test]
        fn requests_round_trip(msg in request()) {
            round_trip(&msg);
        }

        #[test]
        fn responses_round_trip(msg in response()) {
            round_trip(&msg);
        }

        /// A page encoded from borrowed items is the owned response, byte for byte.
        #[test]
        fn a_borrowed_page_encodes_as_the_owned_one(msg in response()) {
            if let Response::Secrets { items, more } = &msg {
                let refs: Vec<SecretInfoRef<'_>> = items
                    .iter()
                    .map(|s| SecretInfoRef {
                        name: &s.name,
                        description: s.description.as_deref(),
                        created: s.created,
                        updated: s.updated,
                        canary: s.canary,
                    })
                    .collect();
                // Built from pieces encoded one at a time, as the agent keeps them.
                let mut pieces = Vec::new();
                for r in &refs {
                    encode_secret_info(r, &mut pieces).unwrap();
                }
                let built = secrets_page_frame(&pieces, refs.len(), *more).unwrap();
                prop_assert_eq!(&built, &encode_frame(&msg).unwrap());
                // Read back borrowed, the same items.
                let (back, more_back) = borrow_secrets_page(&built[FRAME_PREFIX_LEN..]).unwrap().unwrap();
                prop_assert_eq!(more_back, *more);
                prop_assert_eq!(back.len(), items.len());
                for (b, s) in back.iter().zip(items) {
                    prop_assert_eq!(&SecretInfo::from(*b), s);
                }
            } else {
                let frame = encode_frame(&msg).unwrap();
                prop_assert!(borrow_secrets_page(&frame[FRAME_PREFIX_LEN..]).unwrap().is_none());
            }
        }

        #[test]
        fn truncated_frames_are_errors(msg in request(), cut in any::<prop::sample::Index>()) {
            let frame = encode_frame(&msg).unwrap();
            // Every strict, non-empty prefix of a frame is an error, never a message.
            let cut = 1 + cut.index(frame.len() - 1);
            let mut r = &frame[..cut];
            prop_assert!(matches!(read_frame(&mut r), Err(FrameError::Truncated)));
        }

        #[test]
        fn oversized_prefixes_are_refused(len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX) {
            let mut r = &len.to_be_bytes()[..];
            let err = read_frame(&mut r).unwrap_err();
            let refused = matches!(err, FrameError::TooLarge { len: l } if l == len as usize);
            prop_assert!(refused);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
            let mut r = &bytes[..];
            while let Ok(Some(p)) = read_frame(&mut r) {
                let _ = decode::<Request>(&p);
            }
        }

        #[test]
        fn random_payloads_in_valid_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&bytes);
            let mut r = &frame[..];
            let payload = read_frame(&mut r).unwrap().unwrap();
            let _ = decode::<Request>(&payload);
            let _ = decode::<Response>(&payload);
        }
    }

    proptest! {
        #[test]
        fn a_buffered_reader_yields_every_message_whatever_the_read_sizes(
            msgs in proptest::collection::vec(request(), 1..8),
            sizes in proptest::collection::vec(1usize..600, 1..64),
        ) {
            // A reader that hands out the stream in arbitrary pieces.
            struct Pieces { data: Vec<u8>, at: usize, sizes: Vec<usize>, i: usize }
            impl Read for Pieces {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    let want = self.sizes[self.i % self.sizes.len()].min(buf.len());
                    self.i += 1;
                    let n = want.min(self.data.len() - self.at);
                    buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
                    self.at += n;
                    Ok(n)
                }
            }
            let mut data = Vec::new();
            for m in &msgs {
                data.extend_from_slice(&encode_frame(m).unwrap());
            }
            let total = data.len();
            let mut r = Pieces { data, at: 0, sizes, i: 0 };
            let mut fb = FrameBuf::default();
            for m in &msgs {
                let got: Request = fb.read(&mut r).unwrap().unwrap();
                prop_assert_eq!(&got, m);
            }
            prop_assert!(fb.read::<Request, _>(&mut r).unwrap().is_none());
            prop_assert_eq!(r.at, total);
        }
    }

    #[test]
    fn a_buffered_reader_refuses_oversized_and_truncated_frames() {
        let mut fb = FrameBuf::default();
        let mut r = &u32::MAX.to_be_bytes()[..];
        assert!(matches!(
            fb.read::<Request, _>(&mut r),
            Err(FrameError::TooLarge { .. })
        ));
        let frame = encode_frame(&Request::Status).unwrap();
        let mut fb = FrameBuf::default();
        let mut r = &frame[..frame.len() - 1];
        assert!(matches!(
            fb.read::<Request, _>(&mut r),
            Err(FrameError::Truncated)
        ));
        // A large frame (over the read chunk) still arrives whole.
        let big = Request::AddSecret(AddSecret {
            name: "big".into(),
            value: SecretBytes::new(vec![7; 100_000]),
            description: None,
            replace: false,
            canary: false,
            passphrase: None,
        });
        let frame = encode_frame(&big).unwrap();
        let mut fb = FrameBuf::default();
        let mut r = &frame[..];
        assert_eq!(fb.read::<Request, _>(&mut r).unwrap().unwrap(), big);
    }

    #[test]
    fn clean_end_of_stream_is_none() {
        let mut r: &[u8] = &[];
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn cap_is_checked_before_allocating() {
        // A reader that would fail the test if asked for more than the prefix.
        struct PrefixOnly([u8; 4], bool);
        impl Read for PrefixOnly {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                assert!(!self.1, "read past the prefix of an oversized frame");
                self.1 = true;
                buf[..4].copy_from_slice(&self.0);
                Ok(4)
            }
        }
        let mut r = PrefixOnly(u32::MAX.to_be_bytes(), false);
        assert!(matches!(
            read_frame(&mut r),
            Err(FrameError::TooLarge { .. })
        ));
        let exact = (MAX_FRAME_LEN as u32).to_be_bytes();
        assert_eq!(frame_len(exact).unwrap(), MAX_FRAME_LEN);
    }

    #[test]
    fn oversized_messages_are_not_sent() {
        let msg = Request::AddSecret(AddSecret {
            name: "big".into(),
            value: SecretBytes::new(vec![7; MAX_FRAME_LEN]),
            description: None,
            replace: false,
            canary: false,
            passphrase: None,
        });
        assert!(matches!(
            encode_frame(&msg),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut payload = postcard::to_allocvec(&Request::Status).unwrap();
        payload.push(0);
        assert!(decode::<Request>(&payload).is_err());
    }

    #[test]
    fn hello_and_error_keep_their_wire_positions() {
        // Every version must be able to parse another's Hello and its refusal.
        let hello = postcard::to_allocvec(&Request::Hello(Hello {
            protocol_version: 7,
        }))
        .unwrap();
        assert_eq!(hello, [0, 7]);
        let err = postcard::to_allocvec(&Response::Error {
            code: ErrorCode::Unavailable,
            message: "x".into(),
        })
        .unwrap();
        assert_eq!(err[0], 0);
        let welcome = postcard::to_allocvec(&Response::Welcome(Welcome {
            protocol_version: 1,
            agent_version: String::new(),
            pid: 1,
        }))
        .unwrap();
        assert_eq!(welcome[0], 1);
    }

    #[test]
    fn debug_output_never_shows_values() {
        let msg = Request::Unlock {
            passphrase: SecretBytes::from_slice(b"correct horse"),
        };
        let shown = format!("{msg:?}");
        assert!(!shown.contains("correct horse"));
        assert!(shown.contains("[redacted]"));
    }
}

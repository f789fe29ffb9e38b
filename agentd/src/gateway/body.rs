//! Streaming bodies: never buffered whole. `Masked` writes `*` over a bound value that a
//! response echoes (the same length, so `Content-Length` holds) and counts the bytes;
//! `Scanned` stops a request body that carries a placeholder.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::upstream::BoxError;

/// Writes `*` over every needle in the response's header values.
pub fn mask_headers(headers: &mut HeaderMap, needles: &[Vec<u8>]) {
    for v in headers.values_mut() {
        let mut bytes = v.as_bytes().to_vec();
        let mut changed = false;
        for n in needles {
            while let Some(at) = memchr::memmem::find(&bytes, n) {
                bytes[at..at + n.len()].fill(b'*');
                changed = true;
            }
        }
        if changed && let Ok(masked) = HeaderValue::from_bytes(&bytes) {
            *v = masked;
        }
    }
}

/// A response body with `needles` masked and its bytes counted into `on_end`, called
/// once when the body ends, fails or is dropped (with the count and whether it ended).
pub struct Masked<B> {
    inner: B,
    needles: Vec<Vec<u8>>,
    /// The longest needle less one: held back, as it may begin a needle.
    keep: usize,
    pending: BytesMut,
    bytes: u64,
    on_end: Option<Box<dyn FnOnce(u64, bool) + Send>>,
    done: bool,
    /// Trailers that came while bytes were held back: sent after them.
    queued: Option<Frame<Bytes>>,
}

impl<B> Masked<B> {
    pub fn new(
        inner: B,
        needles: Vec<Vec<u8>>,
        on_end: Option<Box<dyn FnOnce(u64, bool) + Send>>,
    ) -> Masked<B> {
        let keep = needles
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        Masked {
            inner,
            needles,
            keep,
            pending: BytesMut::new(),
            bytes: 0,
            on_end,
            done: false,
            queued: None,
        }
    }

    fn end(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes, complete);
        }
    }

    fn mask_pending(&mut self) {
        for n in &self.needles {
            if n.is_empty() {
                continue;
            }
            let mut from = 0;
            while let Some(at) = memchr::memmem::find(&self.pending[from..], n) {
                let at = from + at;
                self.pending[at..at + n.len()].fill(b'*');
                from = at + n.len();
            }
        }
    }
}

impl<B> Drop for Masked<B> {
    fn drop(&mut self) {
        let complete = self.done;
        self.end(complete);
    }
}

impl<B> Body for Masked<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.queued.take() {
                return Poll::Ready(Some(Ok(f)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    this.end(true);
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                    let rest = this.pending.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.end(false);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            this.bytes += data.len() as u64;
                            if this.needles.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                            this.pending.extend_from_slice(&data);
                            this.mask_pending();
                            let out = this.pending.len().saturating_sub(this.keep);
                            if out == 0 {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(
                                this.pending.split_to(out).freeze(),
                            ))));
                        }
                        Err(frame) => match frame.into_trailers() {
                            Ok(mut trailers) => {
                                mask_headers(&mut trailers, &this.needles);
                                Frame::trailers(trailers)
                            }
                            Err(frame) => frame,
                        },
                    };
                    // Trailers: whatever is held back goes first.
                    if !this.pending.is_empty() {
                        let rest = this.pending.split().freeze();
                        this.queued = Some(frame);
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.queued.is_none()
            && (self.done || (self.pending.is_empty() && self.inner.is_end_stream()))
    }

    fn size_hint(&self) -> SizeHint {
        // Masking keeps lengths: the inner body's hint holds, plus what is held back.
        let mut hint = self.inner.size_hint();
        let held = self.pending.len() as u64;
        hint.set_lower(hint.lower() + held);
        if let Some(u) = hint.upper() {
            hint.set_upper(u + held);
        }
        hint
    }
}

/// A request body that fails (so the request is cut off) at the first placeholder,
/// calling `on_found` once.
pub struct Scanned<B> {
    inner: B,
    /// The last bytes seen, fewer than the prefix: a placeholder split across frames.
    tail: Vec<u8>,
    on_found: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> Scanned<B> {
    pub fn new(inner: B, on_found: Box<dyn FnOnce() + Send>) -> Scanned<B> {
        Scanned {
            inner,
            tail: Vec::new(),
            on_found: Some(on_found),
        }
    }
}

impl<B> Body for Scanned<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let trailers_hold = frame.trailers_ref().is_some_and(|t| {
                    t.iter().any(|(k, v)| {
                        super::proxy::has_placeholder(k.as_str().as_bytes())
                            || super::proxy::has_placeholder(v.as_bytes())
                    })
                });
                if trailers_hold {
                    if let Some(f) = this.on_found.take() {
                        f();
                    }
                    return Poll::Ready(Some(Err(
                        "a jitc placeholder in request trailers to a host it is not bound to"
                            .into(),
                    )));
                }
                if let Some(data) = frame.data_ref() {
                    let prefix = super::PLACEHOLDER_PREFIX.as_bytes();
                    let mut hay = std::mem::take(&mut this.tail);
                    hay.extend_from_slice(data);
                    if memchr::memmem::find(&hay, prefix).is_some() {
                        if let Some(f) = this.on_found.take() {
                            f();
                        }
                        return Poll::Ready(Some(Err(
                            "a jitc placeholder in a request body to a host it is not bound to"
                                .into(),
                        )));
                    }
                    let keep = hay.len().min(prefix.len() - 1);
                    this.tail = hay[hay.len() - keep..].to_vec();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

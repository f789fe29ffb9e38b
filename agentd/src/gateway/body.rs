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
        if changed {
            // Stars are always a valid value; should it ever not be, nothing of it goes.
            *v = HeaderValue::from_bytes(&bytes).unwrap_or(HeaderValue::from_static(""));
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

    /// The longest tail of `pending` that is the beginning of a needle (at most
    /// `keep`).
    fn could_begin(&self) -> usize {
        let p = &self.pending[..];
        let mut longest = 0;
        for n in &self.needles {
            for k in (longest + 1..n.len().min(p.len() + 1)).rev() {
                if p.ends_with(&n[..k]) {
                    longest = k;
                    break;
                }
            }
        }
        longest.min(self.keep)
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
                            // Held back: only what could begin a needle, so a stream's
                            // last event is not kept waiting for the next.
                            let out = this.pending.len() - this.could_begin();
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
        let inner = self.inner.size_hint();
        let held = self.pending.len() as u64;
        match inner.exact() {
            Some(n) => SizeHint::with_exact(n + held),
            None => {
                let mut hint = SizeHint::new();
                if let Some(u) = inner.upper() {
                    hint.set_upper(u + held);
                }
                hint.set_lower(inner.lower() + held);
                hint
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn next(b: &mut Masked<Frames>) -> Option<Frame<Bytes>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(b).poll_frame(&mut cx) {
            Poll::Ready(f) => f.map(|f| f.ok().unwrap_or_else(|| Frame::data(Bytes::new()))),
            Poll::Pending => None,
        }
    }

    #[test]
    fn a_value_split_across_frames_and_in_trailers_is_masked_and_counted() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-echo", HeaderValue::from_static("is SECRETVALUE"));
        let frames = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"event one\n")),
            Frame::data(Bytes::from_static(b"abcSECR")),
            Frame::data(Bytes::from_static(b"ETVALUExyz")),
            Frame::trailers(trailers),
        ]));
        let counted = Arc::new(Mutex::new(None));
        let c = counted.clone();
        let mut b = Masked::new(
            frames,
            vec![b"SECRETVALUE".to_vec()],
            Some(Box::new(move |n, done| {
                *c.lock().unwrap() = Some((n, done))
            })),
        );
        // Nothing that could begin the value is held back: a stream's event goes out.
        assert_eq!(next(&mut b).unwrap().into_data().unwrap(), "event one\n");
        let mut out = Vec::new();
        let mut trailers = None;
        while let Some(f) = next(&mut b) {
            match f.into_data() {
                Ok(d) => out.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        assert_eq!(out, b"abc***********xyz");
        assert_eq!(trailers.unwrap()["x-echo"], "is ***********");
        assert_eq!(*counted.lock().unwrap(), Some((27, true)));
        // Exact sizes stay exact with bytes held back (no panic).
        let _ = b.size_hint();
    }
}

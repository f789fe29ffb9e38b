//! One client socket, split in two: `FrameReader` reads `Request` frames, `FrameWriter`
//! writes `Response` frames. Split so that a handler can watch for the next frame (or
//! the peer hanging up) while it writes pushes during a long request.
//!
//! Reading is cancel-safe (it can sit in a `select!`): bytes are kept between calls and
//! only whole frames come out. A peer that starts a frame has `frame_timeout` to finish
//! it; the length is checked before allocating; the buffers are zeroized, since
//! requests carry passphrases and values.

use std::time::Duration;

use jitc_protocol::{
    FRAME_PREFIX_LEN, FrameError, Request, Response, decode, encode_frame, frame_len,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the peer stalled in the middle of a frame")]
    Stalled,
    #[error("the peer did not read our reply in time")]
    WriteStalled,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Splits `stream` into its reading and writing halves.
pub fn split(stream: UnixStream, frame_timeout: Duration) -> (FrameReader, FrameWriter) {
    let (read, write) = stream.into_split();
    (
        FrameReader {
            read,
            buf: Zeroizing::new(vec![0; FRAME_PREFIX_LEN]),
            filled: 0,
            payload_len: None,
            deadline: None,
            frame_timeout,
        },
        FrameWriter {
            write,
            frame_timeout,
        },
    )
}

#[derive(Debug)]
pub struct FrameReader {
    read: OwnedReadHalf,
    /// The frame being read: the prefix, then prefix + payload once its length is known.
    buf: Zeroizing<Vec<u8>>,
    filled: usize,
    /// The payload length, once the prefix is in.
    payload_len: Option<usize>,
    /// When the frame being read must be complete.
    deadline: Option<Instant>,
    frame_timeout: Duration,
}

impl FrameReader {
    /// The next request; `Ok(None)` when the peer closed cleanly between frames.
    pub async fn read_request(&mut self) -> Result<Option<Request>, ConnError> {
        loop {
            if self.payload_len.is_none() && self.filled == FRAME_PREFIX_LEN {
                let mut prefix = [0u8; FRAME_PREFIX_LEN];
                prefix.copy_from_slice(&self.buf[..]);
                let len = frame_len(prefix)?;
                let mut frame = Zeroizing::new(vec![0u8; FRAME_PREFIX_LEN + len]);
                frame[..FRAME_PREFIX_LEN].copy_from_slice(&prefix);
                self.buf = frame;
                self.payload_len = Some(len);
            }
            if self.payload_len.is_some() && self.filled == self.buf.len() {
                let msg = decode(&self.buf[FRAME_PREFIX_LEN..]);
                self.reset();
                return Ok(Some(msg?));
            }
            let read = self.read.read(&mut self.buf[self.filled..]);
            let n = match self.deadline {
                Some(d) => tokio::time::timeout_at(d, read)
                    .await
                    .map_err(|_| ConnError::Stalled)??,
                None => read.await?,
            };
            if n == 0 {
                return if self.filled == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated.into())
                };
            }
            if self.filled == 0 {
                self.deadline = Some(Instant::now() + self.frame_timeout);
            }
            self.filled += n;
        }
    }

    fn reset(&mut self) {
        self.buf = Zeroizing::new(vec![0; FRAME_PREFIX_LEN]);
        self.filled = 0;
        self.payload_len = None;
        self.deadline = None;
    }
}

#[derive(Debug)]
pub struct FrameWriter {
    write: OwnedWriteHalf,
    frame_timeout: Duration,
}

impl FrameWriter {
    pub async fn write(&mut self, response: &Response) -> Result<(), ConnError> {
        let frame = encode_frame(response)?;
        tokio::time::timeout(self.frame_timeout, self.write.write_all(&frame))
            .await
            .map_err(|_| ConnError::WriteStalled)??;
        Ok(())
    }
}

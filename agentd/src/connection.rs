//! One client socket, split in two: `FrameReader` reads `Request` frames, `FrameWriter`
//! writes `Response` frames. Split so that a handler can watch for the next frame (or
//! the peer hanging up) while it writes pushes during a long request.
//!
//! Reading is cancel-safe (it can sit in a `select!`): bytes are kept between calls and
//! only whole frames come out. A peer that starts a frame has `frame_timeout` to finish
//! it; the length is checked before allocating; the buffers are zeroized, since
//! requests carry passphrases and values.

use std::time::Duration;

use jitc_protocol::{FrameBuf, FrameError, Request, Response, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

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
            buf: FrameBuf::default(),
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
    buf: FrameBuf,
    /// When the frame being received must be complete.
    deadline: Option<Instant>,
    frame_timeout: Duration,
}

impl FrameReader {
    /// The next request; `Ok(None)` when the peer closed cleanly between frames.
    pub async fn read_request(&mut self) -> Result<Option<Request>, ConnError> {
        loop {
            if let Some(msg) = self.buf.take()? {
                // Part of the next frame may be here already: its clock starts now.
                self.deadline = self
                    .buf
                    .has_data()
                    .then(|| Instant::now() + self.frame_timeout);
                return Ok(Some(msg));
            }
            let was_empty = !self.buf.has_data();
            let read = self.read.read(self.buf.spare()?);
            let n = match self.deadline {
                Some(d) => tokio::time::timeout_at(d, read)
                    .await
                    .map_err(|_| ConnError::Stalled)??,
                None => read.await?,
            };
            if n == 0 {
                return if was_empty {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated.into())
                };
            }
            if was_empty {
                self.deadline = Some(Instant::now() + self.frame_timeout);
            }
            self.buf.filled(n);
        }
    }
}

#[derive(Debug)]
pub struct FrameWriter {
    write: OwnedWriteHalf,
    frame_timeout: Duration,
}

impl FrameWriter {
    /// Writes what a request's handling produced.
    pub async fn send(&mut self, out: &crate::agent::Outgoing) -> Result<(), ConnError> {
        match out {
            crate::agent::Outgoing::Response(r) => self.write(r).await,
            crate::agent::Outgoing::Frame(f) => self.write_frame(f).await,
        }
    }

    /// Writes a frame encoded already.
    async fn write_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        tokio::time::timeout(self.frame_timeout, self.write.write_all(frame))
            .await
            .map_err(|_| ConnError::WriteStalled)??;
        Ok(())
    }

    pub async fn write(&mut self, response: &Response) -> Result<(), ConnError> {
        let frame = match encode_frame(response) {
            Ok(f) => f,
            // Never a silent hang-up: the client is told why there is no answer.
            Err(FrameError::TooLarge { len }) => encode_frame(&Response::Error {
                code: jitc_protocol::ErrorCode::Failure,
                message: format!(
                    "the agent's answer is {len} bytes, more than a reply may hold; this is a bug in jitc, please report it"
                ),
            })?,
            Err(e) => return Err(e.into()),
        };
        self.write_frame(&frame).await
    }
}

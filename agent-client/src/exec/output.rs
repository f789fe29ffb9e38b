//! Moving the command's output to ours through the masker, and (on the terminal path)
//! our keystrokes to the command.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::mask::{MaskStream, Masker};

/// Bytes read per call.
pub const CHUNK: usize = 1 << 20;

/// Writes all of `data` to `fd`, waiting out a non-blocking sink. `Err` when the reader
/// went away (EPIPE) or the sink failed.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One stream of the command's output (its stdout pipe, its stderr pipe, or the pty)
/// on its way to one of ours, masked unless masking is off.
pub struct Pump<'m> {
    source: Option<OwnedFd>,
    sink: BorrowedFd<'static>,
    mask: Option<MaskStream<'m>>,
    /// A pty master reports the end with EIO rather than EOF.
    pty: bool,
}

impl std::fmt::Debug for Pump<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pump(open: {})", self.source.is_some())
    }
}

impl<'m> Pump<'m> {
    /// `source` must be non-blocking.
    pub fn new(
        source: OwnedFd,
        sink: BorrowedFd<'static>,
        masker: Option<&'m Masker>,
        pty: bool,
    ) -> Pump<'m> {
        Pump {
            source: Some(source),
            sink,
            mask: masker.map(Masker::stream),
            pty,
        }
    }

    pub fn is_open(&self) -> bool {
        self.source.is_some()
    }

    pub fn source(&self) -> Option<BorrowedFd<'_>> {
        self.source.as_ref().map(|s| s.as_fd())
    }

    /// Moves everything readable now; closes the pump at the end of the stream (or if
    /// our side can no longer be written, so the command gets SIGPIPE, as it would
    /// without jitc).
    pub fn pump(&mut self, buf: &mut [u8]) {
        loop {
            let Some(src) = &self.source else { return };
            let n = match nix::unistd::read(src, buf) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                // The pty's other side is closed by everyone: the end.
                Err(Errno::EIO) if self.pty => 0,
                Err(_) => 0,
            };
            if n == 0 {
                self.finish();
                return;
            }
            let sink = self.sink;
            let mut failed = false;
            let mut emit = |piece: &[u8]| {
                if !failed && write_all(sink, piece).is_err() {
                    failed = true;
                }
            };
            match &mut self.mask {
                Some(m) => m.push(&buf[..n], &mut emit),
                None => emit(&buf[..n]),
            }
            if failed {
                self.source = None;
                return;
            }
        }
    }

    /// The stream ended: releases anything held back (masked) and closes.
    pub fn finish(&mut self) {
        if let Some(m) = &mut self.mask {
            let sink = self.sink;
            m.finish(&mut |piece| {
                let _ = write_all(sink, piece);
            });
        }
        self.mask = None;
        self.source = None;
    }
}

/// Keystrokes on their way from our terminal to the command's pty.
#[derive(Debug, Default)]
pub struct Keys {
    pending: Vec<u8>,
    pub stdin_open: bool,
}

impl Keys {
    pub fn new() -> Keys {
        Keys {
            pending: Vec::new(),
            stdin_open: true,
        }
    }

    /// Whether to read more keystrokes (not while the command is not taking them).
    pub fn wants_input(&self) -> bool {
        self.stdin_open && self.pending.len() < CHUNK
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads what the terminal has (stdin polled readable).
    pub fn read_stdin(&mut self, buf: &mut [u8]) {
        let stdin = std::io::stdin();
        match nix::unistd::read(stdin.as_fd(), buf) {
            Ok(0) => self.stdin_open = false,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.stdin_open = false,
        }
    }

    /// Hands pending keystrokes to the pty (non-blocking master).
    pub fn write_to(&mut self, master: BorrowedFd<'_>) {
        while !self.pending.is_empty() {
            match nix::unistd::write(master, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.pending.clear();
                    self.stdin_open = false;
                    return;
                }
            }
        }
    }
}

//! Moving the command's output to ours through the masker, and (on the terminal path)
//! our keystrokes to the command.

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use jitc_protocol::ErrorCode;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use zeroize::{Zeroize, Zeroizing};

use super::terminal;
use crate::error::{Error, Result};
use crate::mask::{MaskStream, Masker};

/// Bytes read per call.
pub const CHUNK: usize = 1 << 20;

/// Keystrokes held for the command at most (a paste larger than this waits in our
/// terminal until the command reads).
const KEYS_HELD: usize = 64 << 10;

/// Translated terminal output is gathered up to this much per write.
const STAGED: usize = 64 << 10;

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

/// The first failure writing the command's output to ours, shared by its pumps.
///
/// A reader that went away (EPIPE: `jitc exec … | head`) is not one: the pump closes,
/// the command gets SIGPIPE as it would without jitc, and jitc exits with its status.
/// Anything else (a full disk, an I/O error) means the output is incomplete, and jitc
/// must not exit as if all was well.
#[derive(Debug, Default)]
pub struct WriteErrors {
    first: Cell<Option<Errno>>,
}

impl WriteErrors {
    fn record(&self, e: Errno) {
        if e != Errno::EPIPE && self.first.get().is_none() {
            self.first.set(Some(e));
        }
    }

    /// `Err` (exit 74) if some of the command's output could not be written.
    pub fn check(&self) -> Result<()> {
        match self.first.get() {
            None => Ok(()),
            Some(e) => Err(Error::local(
                ErrorCode::IoErr,
                format!("cannot write the command's output ({})", e.desc()),
            )),
        }
    }
}

/// Where a pump's output goes: our stdout or stderr, written as the masker hands pieces
/// over; on a terminal whose newlines jitc translates, gathered with `\n` written as
/// `\r\n` and written once per read.
struct Sink {
    fd: BorrowedFd<'static>,
    /// Translated output waiting to be written: allocated once, at its full size, and
    /// never grown (it holds the command's output), wiped when dropped.
    staged: Option<Zeroizing<Vec<u8>>>,
    /// The first failure; nothing more is written after it.
    failed: Option<Errno>,
}

impl Sink {
    fn write(&mut self, piece: &[u8]) {
        if self.failed.is_none()
            && let Err(e) = write_all(self.fd, piece)
        {
            self.failed = Some(e);
        }
    }

    /// Writes `piece` with each `\n` as `\r\n`, as the kernel's ONLCR would have.
    fn write_translated(&mut self, piece: &[u8]) {
        for (i, line) in piece.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                self.stage(b"\r\n");
            }
            self.stage(line);
        }
    }

    fn stage(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Some(staged) = &mut self.staged else {
                return self.write(bytes);
            };
            let room = STAGED - staged.len();
            if room == 0 {
                self.flush();
                continue;
            }
            let n = room.min(bytes.len());
            staged.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    fn flush(&mut self) {
        if let Some(mut staged) = self.staged.take() {
            self.write(&staged);
            // Emptied, not wiped: the same buffer is filled again, and wiped as it drops.
            staged.clear();
            self.staged = Some(staged);
        }
    }
}

/// One stream of the command's output (its stdout pipe, its stderr pipe, or the pty)
/// on its way to one of ours, masked unless masking is off.
pub struct Pump<'m> {
    source: Option<OwnedFd>,
    sink: Sink,
    mask: Option<MaskStream<'m>>,
    /// A pty master reports the end with EIO rather than EOF.
    pty: bool,
    /// Whether the last read's newlines were translated: bytes held back from it are
    /// released (at the end) the same way.
    translate: bool,
    errors: &'m WriteErrors,
}

impl std::fmt::Debug for Pump<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pump(open: {})", self.source.is_some())
    }
}

/// What a pump reads from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    Pipe,
    /// The pty master; `onlcr_by_jitc`: jitc cleared ONLCR on it and translates
    /// newlines itself (see [`terminal::translates_newlines`]).
    Pty {
        onlcr_by_jitc: bool,
    },
}

impl<'m> Pump<'m> {
    /// `source` must be non-blocking. Failures to write to `sink` are recorded in
    /// `errors`.
    pub fn new(
        source: OwnedFd,
        sink: BorrowedFd<'static>,
        masker: Option<&'m Masker>,
        kind: Source,
        errors: &'m WriteErrors,
    ) -> Pump<'m> {
        let translate = matches!(
            kind,
            Source::Pty {
                onlcr_by_jitc: true
            }
        );
        Pump {
            source: Some(source),
            sink: Sink {
                fd: sink,
                staged: translate.then(|| Zeroizing::new(Vec::with_capacity(STAGED))),
                failed: None,
            },
            mask: masker.map(Masker::stream),
            pty: matches!(kind, Source::Pty { .. }),
            translate: false,
            errors,
        }
    }

    pub fn is_open(&self) -> bool {
        self.source.is_some()
    }

    pub fn source(&self) -> Option<BorrowedFd<'_>> {
        self.source.as_ref().map(|s| s.as_fd())
    }

    /// Whether what is read now needs its newlines translated: checked per read, as the
    /// command may change its terminal's settings at any time.
    fn translating(&self) -> bool {
        self.sink.staged.is_some()
            && self
                .source
                .as_ref()
                .is_some_and(|s| terminal::translates_newlines(s.as_fd()))
    }

    /// Moves everything readable now; closes the pump at the end of the stream (or if
    /// our side can no longer be written, so the command gets SIGPIPE, as it would
    /// without jitc).
    /// How far `buf` was filled, at the most.
    pub fn pump(&mut self, buf: &mut [u8]) -> usize {
        let mut filled = 0;
        loop {
            let Some(src) = &self.source else {
                return filled;
            };
            let n = match nix::unistd::read(src, buf) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return filled,
                // The pty's other side is closed by everyone: the end.
                Err(Errno::EIO) if self.pty => 0,
                Err(_) => 0,
            };
            if n == 0 {
                self.finish();
                return filled;
            }
            filled = filled.max(n);
            self.translate = self.translating();
            let translate = self.translate;
            let sink = &mut self.sink;
            let mut emit = |piece: &[u8]| match translate {
                true => sink.write_translated(piece),
                false => sink.write(piece),
            };
            match &mut self.mask {
                Some(m) => m.push(&buf[..n], &mut emit),
                None => emit(&buf[..n]),
            }
            self.sink.flush();
            if let Some(e) = self.sink.failed {
                self.errors.record(e);
                self.source = None;
                return filled;
            }
        }
    }

    /// The stream ended: releases anything held back (masked) and closes.
    pub fn finish(&mut self) {
        let translate = self.translate;
        if let Some(m) = &mut self.mask {
            let sink = &mut self.sink;
            m.finish(&mut |piece| match translate {
                true => sink.write_translated(piece),
                false => sink.write(piece),
            });
            self.sink.flush();
        }
        if let Some(e) = self.sink.failed {
            self.errors.record(e);
        }
        self.mask = None;
        self.source = None;
    }
}

/// Keystrokes on their way from our terminal to the command's pty.
pub struct Keys {
    /// Typed, not yet taken by the command: perhaps a password. Allocated once at its
    /// full size and never grown (growing would leave a copy behind, unwiped); wiped as
    /// keys leave it and when dropped.
    pending: Zeroizing<Vec<u8>>,
    pub stdin_open: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} pending)", self.pending.len())
    }
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::new()
    }
}

impl Keys {
    pub fn new() -> Keys {
        Keys {
            pending: Zeroizing::new(Vec::with_capacity(KEYS_HELD)),
            stdin_open: true,
        }
    }

    /// Whether to read more keystrokes (not while the command is not taking them).
    pub fn wants_input(&self) -> bool {
        self.stdin_open && self.pending.len() < KEYS_HELD
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads what the terminal has (stdin polled readable), as much as `pending` has
    /// room for; `buf` is scratch space, wiped after.
    pub fn read_stdin(&mut self, buf: &mut [u8]) {
        let room = KEYS_HELD.saturating_sub(self.pending.len()).min(buf.len());
        if room == 0 {
            return;
        }
        let stdin = std::io::stdin();
        match nix::unistd::read(stdin.as_fd(), &mut buf[..room]) {
            Ok(0) => self.stdin_open = false,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                buf[..n].zeroize();
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => self.stdin_open = false,
        }
    }

    /// Hands pending keystrokes to the pty (non-blocking master).
    pub fn write_to(&mut self, master: BorrowedFd<'_>) {
        while !self.pending.is_empty() {
            match nix::unistd::write(master, &self.pending) {
                Ok(n) => self.taken(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.pending.zeroize();
                    self.stdin_open = false;
                    return;
                }
            }
        }
    }

    /// The command took the first `n` pending bytes.
    fn taken(&mut self, n: usize) {
        let rest = shift_out(&mut self.pending, n);
        self.pending.truncate(rest);
    }
}

/// Drops the first `n` bytes of `buf`: the rest move to the front, and the bytes they
/// leave behind are wiped. Returns how many remain.
fn shift_out(buf: &mut [u8], n: usize) -> usize {
    let rest = buf.len() - n;
    buf.copy_within(n.., 0);
    buf[rest..].zeroize();
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_keys_leave_nothing_behind() {
        let mut typed = *b"hunter2-password";
        let rest = shift_out(&mut typed, 7);
        assert_eq!(&typed[..rest], b"-password");
        assert!(typed[rest..].iter().all(|&b| b == 0));
    }

    #[test]
    fn keys_stay_in_one_buffer() {
        let mut keys = Keys::new();
        let buffer = keys.pending.as_ptr();
        keys.pending.extend_from_slice(&[b'k'; KEYS_HELD]);
        assert!(!keys.wants_input(), "full: no more reads");
        keys.taken(KEYS_HELD - 3);
        assert_eq!(keys.pending.as_slice(), b"kkk");
        assert_eq!(keys.pending.as_ptr(), buffer);
        assert_eq!(keys.pending.capacity(), KEYS_HELD);
    }
}

//! Reading passphrases and values without echo, from the terminal or from stdin.
//!
//! The terminal is put in non-canonical, no-echo, no-signal mode and line editing is done
//! here, so that Ctrl-C can restore the terminal before leaving and every byte typed
//! lands in one zeroizing buffer that never reallocates.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};

use std::os::fd::AsFd;

use jitc_protocol::SecretBytes;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Longest line accepted at a prompt.
const MAX_TYPED: usize = 4096;

/// Restores the terminal's settings when dropped, however the prompt ends.
struct RawGuard<'a> {
    tty: &'a File,
    saved: termios::Termios,
}

impl Drop for RawGuard<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, SetArg::TCSAFLUSH, &self.saved);
    }
}

/// Signals that would end `jitc` while the terminal is in no-echo mode. They are held
/// back during a prompt and delivered only after the terminal is restored.
fn prompt_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
    ] {
        set.add(s);
    }
    set
}

/// Asks on `/dev/tty` with `label`, without echo. Ctrl-C or Ctrl-D on an empty line
/// cancels (exit 1). The terminal is restored however the prompt ends; a signal that
/// arrives meanwhile (SIGTERM from `timeout`, say) takes effect right after.
pub fn ask_hidden(label: &str) -> Result<SecretBytes> {
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            Error::failure(
                "there is no terminal to ask on; pass the input on stdin (--passphrase-stdin)",
            )
        })?;
    let saved = termios::tcgetattr(&tty)
        .map_err(|e| Error::failure(format!("cannot configure the terminal ({e})")))?;
    let mut raw = saved.clone();
    raw.local_flags &=
        !(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG | LocalFlags::IEXTEN);
    raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    let held = prompt_signals();
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&held), Some(&mut old_mask))
        .map_err(|e| Error::failure(format!("cannot hold signals during the prompt ({e})")))?;
    let signals = SignalFd::with_flags(&held, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK);
    let result = match signals {
        Err(e) => Err(Error::failure(format!("cannot watch signals ({e})"))),
        Ok(signals) => {
            let guard = RawGuard { tty: &tty, saved };
            // Echo off (and type-ahead, which was echoed, discarded) before the prompt
            // shows, so nothing typed in answer to it can appear on the screen.
            match termios::tcsetattr(guard.tty, SetArg::TCSAFLUSH, &raw) {
                Err(e) => Err(Error::failure(format!(
                    "cannot configure the terminal ({e})"
                ))),
                Ok(()) => {
                    let mut out = guard.tty;
                    let _ = write!(out, "{label}");
                    let _ = out.flush();
                    read_hidden_line(guard.tty, &signals)
                }
            }
        }
    };
    let _ = writeln!(tty);
    // The terminal is restored (the guard is gone): a held signal may now act.
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    result
}

/// Whether the terminal has input waiting right now.
fn pending(tty: &File) -> bool {
    let mut fds = [PollFd::new(tty.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn read_hidden_line(mut tty: &File, signals: &SignalFd) -> Result<SecretBytes> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_TYPED));
    let mut byte = [0u8; 1];
    loop {
        let mut fds = [
            PollFd::new(tty.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::failure(format!(
                    "cannot read from the terminal ({e})"
                )));
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Err(Error::failure("interrupted"));
        }
        match tty.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                return Err(Error::failure(format!(
                    "cannot read from the terminal ({e})"
                )));
            }
        }
        match byte[0] {
            b'\r' | b'\n' => {
                // More input right behind the newline is a multi-line paste (a PEM key,
                // say): storing its first line alone would be silently wrong.
                if pending(tty) {
                    return Err(Error::bad_input(
                        "that was several lines; pipe multi-line values in instead: jitc add NAME < FILE",
                    ));
                }
                break;
            }
            0x03 => return Err(Error::failure("cancelled")),
            0x04 if line.is_empty() => return Err(Error::failure("cancelled")),
            0x04 => break,
            0x7f | 0x08 => {
                line.pop();
            }
            0x15 => line.clear(),
            _ if line.len() >= MAX_TYPED => {
                return Err(Error::bad_input(format!(
                    "that is longer than {MAX_TYPED} bytes; pipe long values in instead: jitc add NAME < FILE"
                )));
            }
            b => line.push(b),
        }
    }
    byte.zeroize();
    Ok(SecretBytes::from_zeroizing(line))
}

/// A new passphrase, typed twice.
pub fn ask_new_passphrase() -> Result<SecretBytes> {
    let first = ask_hidden("New vault passphrase: ")?;
    if first.is_empty() {
        return Err(Error::bad_input(
            "the passphrase is empty; run 'jitc init' again and type one",
        ));
    }
    let second = ask_hidden("Repeat the passphrase: ")?;
    if first.expose() != second.expose() {
        return Err(Error::bad_input(
            "the two passphrases differ; run 'jitc init' again",
        ));
    }
    Ok(first)
}

/// One unbuffered read from fd 0: std's `Stdin` keeps a buffer we could not wipe.
fn read_stdin_raw(buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsFd;
    loop {
        match nix::unistd::read(std::io::stdin().as_fd(), buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(std::io::Error::from),
        }
    }
}

/// Reads stdin to its end, at most `max` bytes, dropping one trailing newline (`\n` or
/// `\r\n`): `echo value | jitc add NAME` stores `value`.
pub fn read_stdin(max: usize, what: &str) -> Result<SecretBytes> {
    let cap = max + 2;
    let mut buf = Zeroizing::new(vec![0u8; cap]);
    let mut len = 0;
    while len < cap {
        match read_stdin_raw(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => {
                return Err(Error::failure(format!(
                    "cannot read {what} from stdin ({e})"
                )));
            }
        }
    }
    if len == cap {
        return Err(Error::bad_input(format!(
            "{what} on stdin is over {max} bytes; nothing was stored"
        )));
    }
    buf.truncate(len);
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
    Ok(SecretBytes::from_zeroizing(buf))
}

/// The first line of stdin (for `--passphrase-stdin`), without its newline. Reads one
/// byte at a time so nothing after the line is consumed.
pub fn read_stdin_line(what: &str) -> Result<SecretBytes> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_TYPED + 1));
    let mut byte = [0u8; 1];
    while line.len() <= MAX_TYPED {
        match read_stdin_raw(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => {
                return Err(Error::failure(format!(
                    "cannot read {what} from stdin ({e})"
                )));
            }
        }
    }
    byte.zeroize();
    if line.ends_with(b"\r") {
        line.pop();
    }
    if line.len() > MAX_TYPED {
        return Err(Error::bad_input(format!(
            "{what} on stdin is over {MAX_TYPED} bytes"
        )));
    }
    if line.is_empty() {
        return Err(Error::bad_input(format!(
            "{what} on stdin is empty; pipe it in, one line"
        )));
    }
    Ok(SecretBytes::from_zeroizing(line))
}

/// Whether stdin is a terminal (then values are prompted for, not read).
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

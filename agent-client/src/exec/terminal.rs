//! The terminal path of `jitc exec`: when our stdout is a terminal, the command runs on
//! a pseudo-terminal of its own, so `isatty`, colours and line buffering behave as
//! without jitc, while everything it prints passes through the masker. Our terminal is
//! put in raw mode (keys go to the command as typed) and restored however jitc ends.
//!
//! The pty's output processing would turn each `\n` into `\r\n` (ONLCR) before the
//! masker sees it, splitting multi-line values and wrapped base64 into forms nobody
//! looks for. So jitc clears ONLCR on the command's pty and turns `\n` into `\r\n`
//! itself, after masking, for as long as the command's terminal would have: the bytes
//! on the screen are the same.
#![allow(unsafe_code)]

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{OpenptyResult, Winsize, openpty};
use nix::sys::termios::{self, OutputFlags, SetArg, Termios};

use crate::error::{Error, Result};

/// The pty a command runs on.
pub struct Pty {
    /// Our side: the command's output comes from here, keystrokes go here.
    pub master: OwnedFd,
    /// The command's side, opened by path in the child so it becomes its controlling
    /// terminal.
    pub slave_path: PathBuf,
    /// Whether jitc cleared ONLCR on the pty, to translate newlines itself after
    /// masking (see [`translates_newlines`]).
    pub onlcr_by_jitc: bool,
}

impl std::fmt::Debug for Pty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pty({})", self.slave_path.display())
    }
}

fn failed(what: &str, e: nix::Error) -> Error {
    Error::failure(format!(
        "cannot set up a terminal for the command ({what}: {e})"
    ))
}

/// The window size of the terminal on `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    Some(Winsize {
        ws_row: ws.ws_row,
        ws_col: ws.ws_col,
        ws_xpixel: ws.ws_xpixel,
        ws_ypixel: ws.ws_ypixel,
    })
}

/// Gives the pty the window size of our terminal; the kernel then sends SIGWINCH to
/// the command's foreground process group.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(to, ws);
    }
}

/// Clears ONLCR in `settings` if jitc can do the translation in the kernel's place
/// with the same result: output processing on, ONLCR on, and nothing whose effect
/// depends on the column the kernel keeps — which only ONLCR's `\r` resets (OCRNL
/// would also turn a `\r` into a `\n` jitc must not translate).
fn take_over_newlines(settings: &mut Termios) -> bool {
    let o = settings.output_flags;
    let plain = o.contains(OutputFlags::OPOST | OutputFlags::ONLCR)
        && !o.intersects(OutputFlags::OCRNL | OutputFlags::ONOCR)
        && o & OutputFlags::TABDLY != OutputFlags::TAB3;
    if plain {
        settings.output_flags.remove(OutputFlags::ONLCR);
    }
    plain
}

/// Whether output just read from the pty (`master`) needs its `\n` turned into `\r\n`
/// by jitc: on a pty where jitc took over ONLCR, while output processing is on and
/// ONLCR off. If the command turns ONLCR on itself, the kernel translates (not twice);
/// if it turns processing off (raw output, as full-screen programs do), nothing is.
pub fn translates_newlines(master: BorrowedFd<'_>) -> bool {
    termios::tcgetattr(master).is_ok_and(|t| {
        t.output_flags.contains(OutputFlags::OPOST) && !t.output_flags.contains(OutputFlags::ONLCR)
    })
}

/// A pty shaped like our terminal (its settings and size), with ONLCR left to jitc
/// where it can take it over.
pub fn open_like(terminal: BorrowedFd<'_>) -> Result<Pty> {
    let mut settings = termios::tcgetattr(terminal).ok();
    let onlcr_by_jitc = settings.as_mut().is_some_and(take_over_newlines);
    let size = window_size(terminal);
    let OpenptyResult { master, slave } =
        openpty(size.as_ref(), settings.as_ref()).map_err(|e| failed("openpty", e))?;
    let slave_path = nix::unistd::ttyname(&slave).map_err(|e| failed("ttyname", e))?;
    // The command opens the slave itself; our copy would keep it open forever.
    drop(slave);
    fcntl(&master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| failed("fcntl", e))?;
    let fl = OFlag::from_bits_truncate(
        fcntl(&master, FcntlArg::F_GETFL).map_err(|e| failed("fcntl", e))?,
    );
    fcntl(&master, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map_err(|e| failed("fcntl", e))?;
    Ok(Pty {
        master,
        slave_path,
        onlcr_by_jitc,
    })
}

/// Our terminal in raw mode until this is dropped.
pub struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawMode")
    }
}

impl RawMode {
    /// Puts stdin's terminal in raw mode, if stdin is a terminal.
    pub fn stdin() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        // SAFETY: fd 0 stays open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(0) };
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Whether our stdout (and so the user) is a terminal.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Our stdout (for output and window sizes).
pub fn stdout_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 1 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// Our stderr.
pub fn stderr_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 2 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(2) }
}

impl AsFd for Pty {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

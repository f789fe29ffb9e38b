//! The sandbox's terminal. A sandboxed program never holds your terminal: it runs in a
//! session of its own on a pseudo-terminal `jitc sandbox` relays, as ssh does. Holding
//! yours, it could read what you type into your shell (a passphrase at `jitc unlock`),
//! take the foreground, or stop `jitc sandbox` with SIGTTOU by changing the terminal
//! from the background; on its own pty it can do all that only to itself, and nothing
//! reaches your terminal once the relay stops.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::exec::terminal::{RawMode, copy_window_size, window_size};

/// The pty the sandbox runs on, and which of our standard descriptors it stands for.
pub struct Pty {
    pub master: OwnedFd,
    /// Given to the sandbox in place of each of our descriptors that is a terminal.
    pub slave: OwnedFd,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Whether keys are relayed: stdin is a terminal and jitc is its foreground job (in
    /// the background, taking the terminal would stop jitc, and reading it is not ours).
    pub input: bool,
}

impl std::fmt::Debug for Pty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pty")
    }
}

impl Pty {
    /// A pty shaped like our terminal, if any of stdin, stdout, stderr is one.
    pub fn open() -> Result<Option<Pty>> {
        use std::io::IsTerminal;
        let input = std::io::stdin();
        let (stdin, stdout, stderr) = (
            input.is_terminal(),
            std::io::stdout().is_terminal(),
            std::io::stderr().is_terminal(),
        );
        if !(stdin || stdout || stderr) {
            return Ok(None);
        }
        let terminal = if stdout {
            crate::exec::terminal::stdout_fd()
        } else if stderr {
            crate::exec::terminal::stderr_fd()
        } else {
            input.as_fd()
        };
        let fail = |what: &str, e: nix::Error| {
            Error::failure(format!("cannot make the sandbox's terminal ({what}: {e})"))
        };
        let settings = termios::tcgetattr(terminal).ok();
        let size = window_size(terminal);
        let pty =
            nix::pty::openpty(size.as_ref(), settings.as_ref()).map_err(|e| fail("openpty", e))?;
        fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| fail("fcntl", e))?;
        let fl = OFlag::from_bits_truncate(
            fcntl(&pty.master, FcntlArg::F_GETFL).map_err(|e| fail("fcntl", e))?,
        );
        fcntl(&pty.master, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))
            .map_err(|e| fail("fcntl", e))?;
        let input =
            stdin && nix::unistd::tcgetpgrp(&input).is_ok_and(|fg| fg == nix::unistd::getpgrp());
        Ok(Some(Pty {
            master: pty.master,
            slave: pty.slave,
            stdin,
            stdout,
            stderr,
            input,
        }))
    }
}

/// How the relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// bubblewrap exited (the program ended).
    Exited,
    /// The agent's connection closed.
    AgentGone,
    /// We were told to stop (SIGTERM, SIGINT, SIGHUP): the signal.
    Signalled(i32),
}

/// Signals the relay handles; blocked before bubblewrap starts (and unblocked in it).
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGWINCH,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

/// Relays between our terminal and the sandbox's pty until bubblewrap exits, the agent
/// goes away, or we are told to stop. Our terminal is raw meanwhile (keys go to the
/// program as typed; its pty does the line discipline) and restored after.
pub fn relay(pty: Pty, client: &Client, bwrap: &OwnedFd) -> Result<Ended> {
    let Pty {
        master,
        slave,
        input: stdin,
        stdout,
        ..
    } = pty;
    drop(slave);
    let signals = SignalFd::with_flags(
        &handled_signals(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| Error::failure(format!("cannot set up signal handling ({e})")))?;
    let raw = if stdin { RawMode::stdin() } else { None };
    let out = if stdout {
        crate::exec::terminal::stdout_fd()
    } else {
        crate::exec::terminal::stderr_fd()
    };
    let mut master_file = std::fs::File::from(
        master
            .try_clone()
            .map_err(|e| Error::failure(format!("cannot relay the sandbox's terminal ({e})")))?,
    );
    let mut pending: Vec<u8> = Vec::new();
    let mut master_open = true;
    let mut input_open = stdin;
    let mut buf = vec![0u8; 16 << 10];
    let mut filter = OutputFilter::default();
    let mut shown = Vec::with_capacity(16 << 10);
    let ended = loop {
        let mut fds = vec![
            PollFd::new(bwrap.as_fd(), PollFlags::POLLIN),
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        let master_at = fds.len();
        let mut want = PollFlags::empty();
        if master_open {
            want |= PollFlags::POLLIN;
        }
        if !pending.is_empty() {
            want |= PollFlags::POLLOUT;
        }
        fds.push(PollFd::new(master.as_fd(), want));
        let input_at = fds.len();
        let stdin_fd = std::io::stdin();
        if input_open && pending.is_empty() {
            fds.push(PollFd::new(stdin_fd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(Error::failure(format!(
                    "cannot relay the sandbox's terminal ({e})"
                )));
            }
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        if ready(2) {
            let mut stop = None;
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => copy_window_size(out, master.as_fd()),
                    Ok(s) => stop = Some(s as i32),
                    Err(_) => {}
                }
            }
            if let Some(s) = stop {
                break Ended::Signalled(s);
            }
        }
        if ready(master_at) {
            if master_open {
                match master_file.read(&mut buf) {
                    Ok(0) => master_open = false,
                    Ok(n) => {
                        shown.clear();
                        filter.pass(&buf[..n], &mut shown);
                        write_all(out, &shown);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // EIO: every descriptor of the pty's other side is closed.
                    Err(_) => master_open = false,
                }
            }
            if !pending.is_empty() {
                match master_file.write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => pending.clear(),
                }
            }
        }
        if input_open && ready(input_at) {
            match nix::unistd::read(stdin_fd.as_fd(), &mut buf) {
                Ok(0) | Err(_) => input_open = false,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        if ready(1) && agent_closed(client) {
            break Ended::AgentGone;
        }
        if ready(0) {
            break Ended::Exited;
        }
    };
    // What the program wrote last.
    while master_open {
        match master_file.read(&mut buf) {
            Ok(n) if n > 0 => {
                shown.clear();
                filter.pass(&buf[..n], &mut shown);
                write_all(out, &shown);
            }
            _ => master_open = false,
        }
    }
    // Whatever modes the program left the terminal in (colours, a hidden cursor, mouse
    // reporting, bracketed paste), and whatever the terminal answered to a last query
    // of the program's: neither is left for your shell.
    write_all(out, RESET);
    if raw.is_some() {
        drain_answers();
    }
    drop(raw);
    Ok(ended)
}

/// Resets what a program may leave set on a terminal: attributes, cursor visibility,
/// mouse reporting, bracketed paste.
const RESET: &[u8] = b"\x1b[0m\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l";

/// Reads and drops what arrives on stdin until it has been quiet for 50 ms (at most a
/// second): a terminal's answers to queries the program sent last.
fn drain_answers() {
    let stdin = std::io::stdin();
    let mut buf = [0u8; 4096];
    for _ in 0..20 {
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(n) if n > 0 => {
                if nix::unistd::read(stdin.as_fd(), &mut buf).unwrap_or(0) == 0 {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Drops the escape strings a program could use to act on your terminal beyond its
/// screen: OSC 52 (write your clipboard), and DCS, APC, PM and SOS strings (terminal
/// remote control, such as kitty's). Everything else passes as written. Works across
/// reads: a sequence may be split anywhere.
#[derive(Debug, Default)]
pub struct OutputFilter {
    state: FilterState,
    /// An OSC's first bytes, held until it is known whether it is 52.
    held: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum FilterState {
    #[default]
    Text,
    /// After 0xC2: perhaps a C1 control in UTF-8 (U+0080..U+009F).
    C2,
    /// After ESC.
    Escape,
    /// In an OSC, deciding (the bytes are in `held`).
    OscStart,
    /// Dropping a string until BEL (OSC only) or ST (ESC \\).
    Dropping { osc: bool },
    /// Dropping, after an ESC (ST's first byte, or not).
    DroppingEscape { osc: bool },
    /// Dropping, after 0xC2 (perhaps ST as U+009C).
    DroppingC2 { osc: bool },
}

impl OutputFilter {
    pub fn pass(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match self.state {
                FilterState::Text if b == 0x1b => FilterState::Escape,
                FilterState::Text if b == 0xc2 => FilterState::C2,
                // DCS, SOS, OSC, PM, APC as UTF-8 C1 characters: dropped whole (the
                // terminals that honour them would act on them as on the ESC forms).
                FilterState::C2 if matches!(b, 0x90 | 0x98 | 0x9d | 0x9e | 0x9f) => {
                    FilterState::Dropping { osc: true }
                }
                FilterState::C2 => {
                    out.extend_from_slice(&[0xc2, b]);
                    FilterState::Text
                }
                FilterState::Text => {
                    out.push(b);
                    FilterState::Text
                }
                FilterState::Escape => match b {
                    b']' => {
                        self.held.clear();
                        self.held.extend_from_slice(b"\x1b]");
                        FilterState::OscStart
                    }
                    b'P' | b'_' | b'^' | b'X' => FilterState::Dropping { osc: false },
                    0x1b => {
                        out.push(0x1b);
                        FilterState::Escape
                    }
                    _ => {
                        out.extend_from_slice(&[0x1b, b]);
                        FilterState::Text
                    }
                },
                // The OSC's number, compared as a number (`052` is 52): clipboard
                // writes (52, and kitty's 5522) are dropped, anything else passes.
                FilterState::OscStart if b.is_ascii_digit() && self.held.len() < 12 => {
                    self.held.push(b);
                    FilterState::OscStart
                }
                FilterState::OscStart => {
                    let code = std::str::from_utf8(&self.held[2..])
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok());
                    if matches!(code, Some(52 | 5522)) {
                        self.held.clear();
                        if b == 0x07 {
                            FilterState::Text
                        } else if b == 0x1b {
                            FilterState::DroppingEscape { osc: true }
                        } else {
                            FilterState::Dropping { osc: true }
                        }
                    } else {
                        self.held.push(b);
                        out.extend_from_slice(&self.held);
                        self.held.clear();
                        FilterState::Text
                    }
                }
                FilterState::Dropping { osc } if osc && b == 0x07 => FilterState::Text,
                FilterState::Dropping { osc } if b == 0x1b => FilterState::DroppingEscape { osc },
                // ST as a UTF-8 C1 character (U+009C) ends a string too.
                FilterState::Dropping { osc } if b == 0xc2 => FilterState::DroppingC2 { osc },
                FilterState::Dropping { osc } => FilterState::Dropping { osc },
                FilterState::DroppingEscape { .. } if b == b'\\' => FilterState::Text,
                FilterState::DroppingC2 { .. } if b == 0x9c => FilterState::Text,
                FilterState::DroppingC2 { osc } => FilterState::Dropping { osc },
                FilterState::DroppingEscape { osc } => FilterState::Dropping { osc },
            };
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) | Err(_) => return,
            Ok(n) => data = &data[n..],
        }
    }
}

/// Whether the agent's connection has closed (anything else it says is dropped).
pub fn agent_closed(client: &Client) -> bool {
    let mut buf = [0u8; 4096];
    match nix::sys::socket::recv(
        client.as_fd().as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => true,
        Ok(_) | Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = OutputFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            f.pass(c, &mut out);
        }
        out
    }

    #[test]
    fn clipboard_writes_and_terminal_commands_are_dropped_the_rest_passes() {
        assert_eq!(filtered(&[b"a\x1b]52;c;ZXZpbA==\x07b"]), b"ab");
        assert_eq!(filtered(&[b"a\x1b]5", b"2;c;ZX", b"Zp\x1b\\b"]), b"ab");
        assert_eq!(filtered(&[b"x\x1bP@kitty-cmd{}\x1b\\y"]), b"xy");
        assert_eq!(filtered(&[b"x\x1b_Gf=1;AAAA\x1b\\y"]), b"xy");
        // A window title and colours pass.
        assert_eq!(
            filtered(&[b"\x1b]0;title\x07\x1b[31mred"]),
            b"\x1b]0;title\x07\x1b[31mred"
        );
        assert_eq!(filtered(&[b"\x1b]5", b"1;x\x07"]), b"\x1b]51;x\x07");
        // Review findings: a leading zero, kitty's 5522, and the UTF-8 C1 forms.
        assert_eq!(filtered(&[b"a\x1b]052;c;ZXZpbA==\x07b"]), b"ab");
        assert_eq!(filtered(&[b"a\x1b]5522;type=write\x1b\\b"]), b"ab");
        assert_eq!(filtered(&[b"a\xc2\x9d52;c;ZXZp\x07b"]), b"ab");
        assert_eq!(filtered(&[b"a\xc2\x90@kitty-cmd{}\xc2\x9cb"]), b"ab");
        // Text with other characters from the same UTF-8 block passes.
        assert_eq!(filtered(&["a\u{a9}b".as_bytes()]), "a\u{a9}b".as_bytes());
    }
}

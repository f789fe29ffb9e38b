//! `CLOCK_BOOTTIME`: lease expiry runs on a clock that counts time spent suspended and
//! ignores wall-clock changes, so neither a laptop lid nor `date -s` can stretch a lease.
//! (tokio's timers use `CLOCK_MONOTONIC`, which stops during suspend.)
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::time::clock_gettime;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Time since boot, suspend included.
pub fn boot_now() -> Duration {
    clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A one-shot timer at an absolute `CLOCK_BOOTTIME` instant, awaitable from tokio. After
/// a resume from suspend, an instant that passed meanwhile fires at once.
pub struct BootTimer {
    fd: AsyncFd<Fd>,
}

impl std::fmt::Debug for BootTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootTimer")
    }
}

impl BootTimer {
    pub fn new() -> io::Result<BootTimer> {
        let t = TimerFd::new(
            ClockId::CLOCK_BOOTTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: `Fd` owns the timerfd and always returns that same open descriptor;
        // it is closed only when `Fd` drops, which happens when the `AsyncFd` drops.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(t), Interest::READABLE) }?;
        Ok(BootTimer { fd })
    }

    /// Fires at boot-time `at`, or never (`None`).
    pub fn arm(&self, at: Option<Duration>) -> io::Result<()> {
        let timer = &self.fd.get_ref().0;
        match at {
            // An absolute time of 0 would disarm; the earliest real instant is 1 ns.
            Some(at) => timer.set(
                Expiration::OneShot(TimeSpec::from_duration(at.max(Duration::from_nanos(1)))),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )?,
            None => timer.unset()?,
        }
        Ok(())
    }

    /// Waits until the timer fires.
    pub async fn fired(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| inner.get_ref().0.wait().map_err(io::Error::from)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_an_absolute_boot_time() {
        let t = BootTimer::new().unwrap();
        let start = boot_now();
        t.arm(Some(start + Duration::from_millis(30))).unwrap();
        t.fired().await.unwrap();
        assert!(boot_now() >= start + Duration::from_millis(30));
        // A time already past fires at once.
        t.arm(Some(start)).unwrap();
        tokio::time::timeout(Duration::from_secs(5), t.fired())
            .await
            .unwrap()
            .unwrap();
    }
}

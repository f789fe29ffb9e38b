//! The idle lock: the vault locks itself after a period with no use and no lease.
//! Measured on `CLOCK_BOOTTIME`, like leases: time spent suspended counts, so a laptop
//! left closed overnight comes back locked.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::{BootTimer, boot_now};

#[derive(Debug)]
pub struct Idle {
    timeout: Mutex<Duration>,
    /// Boot-time instant of the last use.
    last_use: Mutex<Duration>,
    changed: Notify,
}

impl Idle {
    pub fn new(timeout: Duration) -> Idle {
        Idle {
            timeout: Mutex::new(timeout),
            last_use: Mutex::new(boot_now()),
            changed: Notify::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        *self.timeout.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the period (the policy's `idle_lock` was edited); wakes the countdown
    /// if it actually changed.
    pub fn set_timeout(&self, timeout: Duration) {
        let mut t = self.timeout.lock().unwrap_or_else(|p| p.into_inner());
        if *t != timeout {
            *t = timeout;
            drop(t);
            self.changed.notify_one();
        }
    }

    /// Restarts the countdown. Cheap on purpose (every request calls it): the waiting
    /// side notices the moved deadline when its timer fires, so no wake-up is needed.
    pub fn touch(&self) {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) = boot_now();
    }

    /// Boot-time instant at which the vault locks if nothing uses it.
    pub fn deadline(&self) -> Duration {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) + self.timeout()
    }

    /// Time left before the idle lock, from now.
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_sub(boot_now())
    }

    /// Waits until the deadline passes without a `touch` in between.
    pub async fn expired(&self) {
        let timer = match BootTimer::new() {
            Ok(t) => t,
            Err(e) => {
                // Without it the vault would never lock itself: say so, loudly.
                tracing::error!(error = %e, "cannot create the idle-lock timer; the vault will not lock itself");
                return std::future::pending().await;
            }
        };
        loop {
            let deadline = self.deadline();
            if let Err(e) = timer.arm(Some(deadline)) {
                tracing::error!(error = %e, "cannot arm the idle-lock timer");
            }
            tokio::select! {
                fired = timer.fired() => {
                    if fired.is_ok() && boot_now() >= self.deadline() {
                        return;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

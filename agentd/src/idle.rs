//! The idle lock: the vault locks itself after a period with no use and no lease.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Idle {
    timeout: Mutex<Duration>,
    last_use: Mutex<Instant>,
    changed: Notify,
}

impl Idle {
    pub fn new(timeout: Duration) -> Idle {
        Idle {
            timeout: Mutex::new(timeout),
            last_use: Mutex::new(Instant::now()),
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

    /// Restarts the countdown.
    /// Restarts the countdown. Cheap on purpose (every request calls it): the waiting
    /// side notices the moved deadline when its sleep ends, so no wake-up is needed.
    pub fn touch(&self) {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn deadline(&self) -> Instant {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) + self.timeout()
    }

    /// Waits until the deadline passes without a `touch` in between.
    pub async fn expired(&self) {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    if Instant::now() >= self.deadline() {
                        return;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

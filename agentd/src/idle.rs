//! The idle lock: the vault locks itself after a period with no use and no lease.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Idle {
    timeout: Duration,
    last_use: Mutex<Instant>,
    changed: Notify,
}

impl Idle {
    pub fn new(timeout: Duration) -> Idle {
        Idle {
            timeout,
            last_use: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Restarts the countdown.
    pub fn touch(&self) {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.changed.notify_one();
    }

    pub fn deadline(&self) -> Instant {
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) + self.timeout
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

//! The time, as the service sees it: Unix seconds from a clock it is given. The server uses
//! the system clock; tests use a [`ManualClock`] and move it forward instead of sleeping, so
//! token expiry, grace intervals, throttle windows and retention are tested exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

pub trait Clock: Send + Sync + 'static {
    /// Unix time in whole seconds.
    fn now(&self) -> i64;
}

/// The clock every operation reads.
pub type SharedClock = Arc<dyn Clock>;

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }
}

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// A clock that stands still until moved. Clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// Starts at the current real time (so stored rows look ordinary).
    pub fn starting_now() -> ManualClock {
        ManualClock::at(SystemClock.now())
    }

    pub fn at(unix_secs: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(unix_secs)))
    }

    /// Moves the time forward by whole seconds (fractions are dropped).
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1000);
        let shared = clock.shared();
        assert_eq!(shared.now(), 1000);
        clock.advance(Duration::from_secs(90));
        assert_eq!(shared.now(), 1090);
        clock.advance(Duration::from_millis(999));
        assert_eq!(shared.now(), 1090);
    }
}

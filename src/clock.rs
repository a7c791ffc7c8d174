//! Time, injectable: windows, caps and timeouts are tested at the instants that matter.

use std::sync::atomic::{AtomicI64, Ordering};

use jiff::{SignedDuration, Timestamp};

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;

    /// Whether it tells the time of day as this machine's clock does (and may run apart from
    /// other machines'): where nodes share a database, such a clock follows the database's
    /// (see [`crate::cluster::aligned`]). A clock that moves only when told to does not.
    fn is_wall_clock(&self) -> bool {
        false
    }
}

/// `at` to the millisecond, as the store keeps times: a time read back equals the one written.
pub fn to_millisecond(at: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(at)
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn is_wall_clock(&self) -> bool {
        true
    }
}

/// A wall clock set to another's time: `base` moved by an offset, measured and kept up to
/// date by whoever knows the other clock (see [`crate::cluster::aligned`]).
pub struct OffsetClock {
    base: std::sync::Arc<dyn Clock>,
    offset_micros: AtomicI64,
}

impl OffsetClock {
    pub fn new(base: std::sync::Arc<dyn Clock>) -> Self {
        Self {
            base,
            offset_micros: AtomicI64::new(0),
        }
    }

    /// The base clock's time now (what an offset is measured against).
    pub fn base_now(&self) -> Timestamp {
        self.base.now()
    }

    pub fn set_offset(&self, offset: SignedDuration) {
        let micros = i64::try_from(offset.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.store(micros, Ordering::SeqCst);
    }

    pub fn offset(&self) -> SignedDuration {
        SignedDuration::from_micros(self.offset_micros.load(Ordering::SeqCst))
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let now = self.base.now();
        now.checked_add(self.offset()).unwrap_or(now)
    }

    fn is_wall_clock(&self) -> bool {
        true
    }
}

/// A clock that moves only when told to (tests and simulations), to microseconds.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        Self {
            micros: AtomicI64::new(at.as_microsecond()),
        }
    }

    pub fn set(&self, at: Timestamp) {
        self.micros.store(at.as_microsecond(), Ordering::SeqCst);
    }

    pub fn advance(&self, by: SignedDuration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_microsecond(self.micros.load(Ordering::SeqCst)).unwrap_or(Timestamp::MAX)
    }
}

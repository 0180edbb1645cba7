//! The wall clock as a value passed in, never a global (rustls's `TimeProvider`): the pause
//! table of a CA and the caches' settled-stamp rule read it through [`Clock`], so a test can
//! set the time instead of sleeping.
//!
//! The commands read the clock once (`now`) and pass it down; below them, only what asks
//! "what time is it" again during a run (a pause the CA asked for, a cache stamp written
//! after loading) holds a `Clock`. Monotonic deadlines (`Instant`: hook and DNS timeouts,
//! the lock wait, nonce ages) are not wall time and stay as they are. The architecture test
//! holds the rest of the code to this.

use std::fmt::Debug;
use std::time::SystemTime;

/// Tells the time.
pub trait Clock: Send + Sync + Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that shows the time it is set to, for tests.
#[cfg(test)]
#[derive(Debug)]
pub struct FakeClock(std::sync::Mutex<SystemTime>);

#[cfg(test)]
impl FakeClock {
    /// A clock showing `at`.
    pub fn at(at: SystemTime) -> Self {
        Self(std::sync::Mutex::new(at))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

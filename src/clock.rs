//! The wall clock as a value passed in, never a global (rustls's `TimeProvider`): the pause
//! table of a CA and the caches' settled-stamp rule read it through [`Clock`], so a test can
//! set the time instead of sleeping.
//!
//! The commands read the clock once (`now`) and pass it down; below them, only what asks
//! "what time is it" again during a run (a pause the CA asked for, a cache stamp written
//! after loading) holds a `Clock`. Monotonic deadlines (`Instant`: hook and DNS timeouts,
//! the lock wait, nonce ages) are not wall time and stay as they are. The architecture test
//! holds the rest of the code to this.
//!
//! The commands that plan renewals (`reconcile`, `want`, `status`, `check`, `cull`,
//! `metrics`) read it through [`now`]. In debug builds only, `ACMEKEEP_TEST_CLOCK_SKEW=<seconds>`
//! moves that time, so the end-to-end tests can follow a certificate through its life (a
//! 90-day certificate's renewal point, its CA's window) without waiting for it; release builds
//! have no such knob. The caches' settled stamps and the CA's pauses keep the system's time:
//! they are compared with file times and with Retry-After as it arrives.

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

/// The time a command plans with: the system's (see the module's preamble for the one
/// exception, in debug builds).
pub fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + skew()
}

/// `ACMEKEEP_TEST_CLOCK_SKEW`, in debug builds (zero when unset or not a number of seconds).
#[cfg(debug_assertions)]
fn skew() -> time::Duration {
    static SKEW: std::sync::OnceLock<time::Duration> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var("ACMEKEEP_TEST_CLOCK_SKEW")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map_or(time::Duration::ZERO, time::Duration::seconds)
    })
}

/// No skew in release builds.
#[cfg(not(debug_assertions))]
fn skew() -> time::Duration {
    time::Duration::ZERO
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

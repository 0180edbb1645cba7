//! The wall clock as a value passed in, never a global (rustls's `TimeProvider`): every
//! decision about time can then be tested at any time, with a [`FakeClock`] set and moved
//! instead of sleeping.
//!
//! The command line builds one [`CommandClock`] (in [`crate::settings::Settings`]); the
//! commands read it once (`now`) and pass that down, with the clock itself where something
//! asks "what time is it" again during a run (a certificate checked as it arrives, a fleet's
//! lease, a pause the CA asked for). Monotonic deadlines (`Instant`: hook and DNS timeouts,
//! the lock wait, nonce ages) are not wall time and stay as they are. The architecture test
//! holds the rest of the code to this: nothing but this module asks the system the time,
//! bar the few files it names and why.
//!
//! In debug builds only, `ACMEKEEP_TEST_CLOCK_SKEW=<seconds>` moves the [`CommandClock`], so
//! the end-to-end tests can follow a certificate through its life (a 90-day certificate's
//! renewal point, its CA's window) without waiting for it; release builds have no such knob.
//! The caches' settled stamps and the CA's pauses keep the [`SystemClock`]: they are compared
//! with file times and with Retry-After as it arrives.

use std::fmt::Debug;
use std::time::SystemTime;

/// Tells the time.
pub trait Clock: Send + Sync + Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The same time as a date, in UTC.
    fn now_utc(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::from(self.now())
    }
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The clock the commands plan with: the system's, moved by `ACMEKEEP_TEST_CLOCK_SKEW` in
/// debug builds (see the module's preamble).
#[derive(Clone, Copy, Debug)]
pub struct CommandClock {
    skew: time::Duration,
}

impl CommandClock {
    /// The system's clock, with this process's skew (none in release builds).
    pub fn from_env() -> Self {
        Self { skew: skew() }
    }
}

impl Clock for CommandClock {
    fn now(&self) -> SystemTime {
        (time::OffsetDateTime::now_utc() + self.skew).into()
    }
}

/// `ACMEKEEP_TEST_CLOCK_SKEW`, in debug builds (zero when unset or not a number of seconds).
#[cfg(debug_assertions)]
fn skew() -> time::Duration {
    std::env::var("ACMEKEEP_TEST_CLOCK_SKEW")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(time::Duration::ZERO, time::Duration::seconds)
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

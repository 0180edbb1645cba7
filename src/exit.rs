//! Exit codes, deliberate and documented (doc/exit-codes in the README).
//!
//! 0: everything succeeded. 1: some target failed, or a run-time error. 2: usage or
//! configuration error. 69 (EX_UNAVAILABLE): the fleet's etcd cluster is unavailable, so
//! nothing was ordered. 75 (EX_TEMPFAIL): another process holds the state directory lock.
//! When several apply: 2 and 75 (decided before anything is done) first, then 1 if a target
//! failed, then 69. `check`, a monitoring plugin, has the Nagios codes instead (3 for a
//! usage error: [`crate::cli::usage_error_code`]).

/// Everything succeeded.
pub const OK: u8 = 0;
/// Some target failed, or a run-time error.
pub const FAILED: u8 = 1;
/// Usage or configuration error.
pub const CONFIG: u8 = 2;
/// The fleet's etcd cluster is unavailable: nothing was ordered (sysexits EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// The state directory is locked by another process (sysexits EX_TEMPFAIL).
pub const LOCKED: u8 = 75;

/// The fleet's etcd cluster cannot be used (no member answers, or none has a leader): exit 69.
#[derive(Debug, thiserror::Error)]
#[error("cluster unavailable ({0})")]
pub struct Unavailable(pub String);

/// Marks an error as a configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct ConfigError(pub anyhow::Error);

/// Wraps `e` as a configuration error.
pub fn config_error(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(ConfigError(e.into()))
}

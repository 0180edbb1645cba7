//! Monitoring: telling people and monitoring systems how the certificates stand, before one
//! breaks. Let's Encrypt stopped mailing about expiry in 2025; the client is the only one left
//! that knows.
//!
//! Everything here reads the [`facts`] (the planner's verdicts, the run records) and never
//! asks a CA or takes the lock: [`metrics`] renders Prometheus's text format (the textfile a
//! run leaves for node_exporter, and `acmekeep metrics`); [`check`] judges each target the
//! way a Nagios/Icinga plugin must (`acmekeep check`).

pub mod check;
pub mod facts;
pub mod metrics;

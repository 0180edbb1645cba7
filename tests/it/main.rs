//! Integration tests for `acmekeep`: one test binary sharing one harness.
//!
//! Run everything with `cargo test --test it`; the harness self-test alone with
//! `cargo test --test it pebble_starts`.

mod acmetool;
mod ari;
mod chain;
mod challenges;
mod cluster;
mod commands;
mod contrib_hooks;
mod dns;
mod dns_drafts;
mod e2e;
mod eab;
mod failover;
mod hooks;
mod hostile;
mod hostile_hooks;
mod hostile_state;
mod import;
mod lifetimes;
mod migration;
mod monitor;
mod package;
mod perm;
mod quickstart;
mod quiet;
mod recovery;
mod redirector;
mod scale;
mod settings;
mod support;

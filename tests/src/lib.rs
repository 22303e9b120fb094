//! Shared helpers for Sluice's workspace integration tests.
//!
//! - [`provision`]: throw-away PostgreSQL and Redis servers from the local
//!   binaries (standard library only; `cargo xtask test` uses it too).
//! - [`services`] (feature `clients`, on by default): the service URLs a
//!   test should use, and one isolated database or key prefix per test.
//! - [`client`] (feature `clients`): an HTTP client for black-box tests.
//! - [`load`] (feature `clients`): a closed-loop load generator that
//!   records every request, for fault drills.
//! - [`upstream`] (feature `clients`): a local HTTP upstream with fault
//!   injection, on 127.0.0.1.
//!
//! Real-service tests read `DATABASE_URL` and `REDIS_URL`. `cargo xtask test`
//! sets them to servers it provisions; set them yourself to use your own (a
//! URL whose user may `CREATE DATABASE`). When they are missing a test fails
//! with the command to run: it never passes by skipping.

pub mod certs;
#[cfg(feature = "clients")]
pub mod client;
#[cfg(feature = "clients")]
pub mod load;
pub mod provision;
#[cfg(feature = "clients")]
pub mod services;
#[cfg(feature = "clients")]
pub mod upstream;

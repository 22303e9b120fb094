#![doc = include_str!("../README.md")]

mod config;
mod error;
mod manager;
mod read;
mod report;
mod vars;

pub use config::{IoConfig, IoSettings};
pub use error::IoError;
pub use manager::IoManager;
pub use read::{ConfigError, MAX_COUNT, Reader};
pub use report::{ApiMetrics, Check, DatabaseMetrics, Health, IoMetrics, Operations, RedisMetrics};
pub use vars::{
    VARIABLES, ValueType, Variable, find, group_of, help, help_with, is_io_variable, markdown,
};

/// The crates the manager holds, re-exported so a service needs only
/// `sluice-io` among its dependencies.
pub use sluice_api_client as api;
pub use sluice_db as db;
pub use sluice_pool as pool;

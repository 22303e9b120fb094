//! [`Registry`]: connections by name, and the snapshot over all of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::connection::ConnectionMetrics;
use crate::operation::Backend;
use crate::snapshot::{ConnectionSnapshot, Snapshot};

/// The set of connections whose figures a [`Snapshot`] reports.
///
/// Most programs use [`Registry::global`]; tests and embedders that want
/// isolated figures create their own with [`Registry::new`]. Clones share
/// the same connections.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    connections: Arc<Mutex<BTreeMap<(Backend, String), ConnectionMetrics>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry, used by the other Sluice crates unless
    /// they are given another.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// The recording handle for the connection `name` of `backend`,
    /// created on first use. Asking again returns a handle to the same
    /// figures, so a pool that is re-opened keeps its history.
    pub fn connection(&self, backend: Backend, name: &str) -> ConnectionMetrics {
        let mut map = match self.connections.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry((backend, name.to_owned()))
            .or_insert_with(|| ConnectionMetrics::new(backend, name))
            .clone()
    }

    /// Count, errors, success rate and latency percentiles per connection
    /// and operation kind, since the connection was first recorded.
    pub fn snapshot(&self) -> Snapshot {
        let connections: Vec<ConnectionMetrics> = match self.connections.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        Snapshot {
            connections: connections
                .iter()
                .map(|c| ConnectionSnapshot::from_parts(c.backend(), c.snapshot_parts()))
                .collect(),
        }
    }
}

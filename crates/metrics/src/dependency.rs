//! `sluice_dependency_up`: the result of the last health probe of each
//! dependency, so that an outage shows (and alerts) without traffic.

use crate::names::DEPENDENCY_UP;
use crate::operation::Backend;

/// Publishes whether the dependency `connection` (its configured name) of
/// kind `system` answered its last health probe.
pub fn dependency_up(system: Backend, connection: &str, up: bool) {
    metrics::gauge!(
        DEPENDENCY_UP,
        "system" => system.as_str(),
        "connection" => connection.to_owned(),
    )
    .set(if up { 1.0 } else { 0.0 });
}

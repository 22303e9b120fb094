//! Whether Sluice takes part in distributed traces: one process-wide
//! switch, off by default, so that a process that exports no traces pays
//! one relaxed load per request and per outbound call, nothing more.
//!
//! The binary turns it on when it installs an OpenTelemetry tracer; the
//! HTTP server then continues a W3C `traceparent` it receives, and the API
//! client injects the current trace context into every outbound request.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns trace-context propagation on (or off) for this process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether trace-context propagation is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

//! Classification: may a retry help, and did the server say when?
//!
//! A policy retries only errors that classify as [`Class::Transient`]; a
//! [`Class::Permanent`] error (bad input, a constraint violation, a 4xx) is
//! returned at once. Helpers here classify the common cases by their
//! protocol codes, and [`classify_source_chain`] walks `source()` to find an
//! I/O error buried under other layers (linkerd's `is_caused_by`).

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

/// Whether a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The same call may succeed later: connection refused or reset, a
    /// timeout, an exhausted pool, a serialization failure, HTTP 429/502/503/504.
    Transient,
    /// The same call will fail the same way: do not retry.
    Permanent,
}

/// Errors a policy can run under.
pub trait Classify {
    /// Whether a retry may help.
    fn class(&self) -> Class;

    /// A delay the server asked for (HTTP `Retry-After`), honoured by the
    /// policy within its limits.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Classify for io::Error {
    fn class(&self) -> Class {
        io_class(self)
    }
}

impl Classify for tokio::time::error::Elapsed {
    fn class(&self) -> Class {
        Class::Transient
    }
}

fn io_class(error: &io::Error) -> Class {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
        | TimedOut | Interrupted | WouldBlock | UnexpectedEof | AddrNotAvailable
        | NetworkUnreachable | HostUnreachable | NetworkDown => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Classifies an error by the first [`io::Error`] in its `source()` chain
/// (the error itself included); `None` when there is none.
pub fn classify_source_chain(error: &(dyn StdError + 'static)) -> Option<Class> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io_class(io));
        }
        current = e.source();
    }
    None
}

/// The class of an HTTP response status: 429, 502, 503 and 504 are
/// transient (the server is busy or an intermediary failed to reach it);
/// every other status — 500 included, which is usually a bug that repeats —
/// is permanent.
pub fn http_status_class(status: u16) -> Class {
    match status {
        429 | 502 | 503 | 504 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// The class of a PostgreSQL SQLSTATE code (also used by sqlx for SQLite's
/// extended codes where they map). Transient: serialization failure
/// (40001), deadlock (40P01), connection exceptions (08xxx), too many
/// connections (53300), admin/crash shutdown and cannot-connect-now
/// (57P01–57P03). Everything else — constraint violations (23xxx), syntax
/// (42xxx), data errors (22xxx) — is permanent.
pub fn sqlstate_class(code: &str) -> Class {
    match code {
        "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" => Class::Transient,
        c if c.starts_with("08") => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Parses an HTTP `Retry-After` value given in seconds. (HTTP dates are
/// not accepted: an upstream's clock is not ours to trust.)
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Wrapped);

    #[test]
    fn io_errors_deep_in_the_chain_are_found() {
        let e = Outer(Wrapped(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert_eq!(classify_source_chain(&e), Some(Class::Transient));
        let e = Outer(Wrapped(io::Error::from(io::ErrorKind::PermissionDenied)));
        assert_eq!(classify_source_chain(&e), Some(Class::Permanent));
        let plain = std::fmt::Error;
        assert_eq!(classify_source_chain(&plain), None);
    }

    #[test]
    fn http_statuses() {
        for s in [429, 502, 503, 504] {
            assert_eq!(http_status_class(s), Class::Transient, "{s}");
        }
        for s in [400, 401, 404, 409, 422, 500, 501] {
            assert_eq!(http_status_class(s), Class::Permanent, "{s}");
        }
    }

    #[test]
    fn sqlstates() {
        for c in ["40001", "40P01", "08006", "08001", "53300", "57P01"] {
            assert_eq!(sqlstate_class(c), Class::Transient, "{c}");
        }
        for c in ["23505", "23503", "42601", "22P02"] {
            assert_eq!(sqlstate_class(c), Class::Permanent, "{c}");
        }
    }

    #[test]
    fn retry_after_in_seconds_only() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}

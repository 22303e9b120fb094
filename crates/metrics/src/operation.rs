//! The vocabulary of an I/O operation: which backend, what kind, what outcome.
//!
//! Every value here renders to a fixed `&'static str`, which is what keeps
//! metric labels of bounded cardinality: nothing a caller sends at run time
//! (SQL text, ids, URLs) can become a label.

use std::fmt;

/// The kind of system an operation talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Backend {
    /// A PostgreSQL server.
    Postgresql,
    /// An SQLite database file or in-memory database.
    Sqlite,
    /// A Redis server, cluster or sentinel group.
    Redis,
    /// An outbound HTTP upstream.
    Http,
}

impl Backend {
    /// Every backend, in a fixed order.
    pub const ALL: [Backend; 4] = [
        Backend::Postgresql,
        Backend::Sqlite,
        Backend::Redis,
        Backend::Http,
    ];

    /// The label value: `postgresql`, `sqlite`, `redis` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgresql => "postgresql",
            Backend::Sqlite => "sqlite",
            Backend::Redis => "redis",
            Backend::Http => "http",
        }
    }

    /// Whether the backend is a database in OpenTelemetry's sense (its
    /// operations go to `db_client_operation_duration_seconds`).
    pub fn is_database(self) -> bool {
        !matches!(self, Backend::Http)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OpKind {
    /// A statement that returns rows.
    Query,
    /// A statement that returns a row count.
    Execute,
    /// A whole transaction, from begin to commit or rollback.
    Transaction,
    /// A read: a cache `GET`, an HTTP `GET`.
    Read,
    /// A write: a cache `SET`/`DEL`, an HTTP `POST`.
    Write,
    /// A batch of requests run together.
    Batch,
    /// Opening a connection.
    Connect,
}

impl OpKind {
    /// Every kind, in a fixed order (also the index order used internally).
    pub const ALL: [OpKind; 7] = [
        OpKind::Query,
        OpKind::Execute,
        OpKind::Transaction,
        OpKind::Read,
        OpKind::Write,
        OpKind::Batch,
        OpKind::Connect,
    ];

    /// The label value, e.g. `query`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Query => "query",
            OpKind::Execute => "execute",
            OpKind::Transaction => "transaction",
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Batch => "batch",
            OpKind::Connect => "connect",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed; the string is a short, fixed error class such as
    /// `"timeout"` or `"unavailable"` (it becomes a label value, so it must
    /// come from a small fixed set, never from an error message).
    Error(&'static str),
}

impl Outcome {
    /// `ok` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
        }
    }

    /// Whether the operation succeeded.
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

/// Errors that can name their class for metrics.
///
/// The class is a label value, so return one of a few fixed words
/// (`"timeout"`, `"unavailable"`, `"conflict"`, …). The default is `"error"`,
/// so `impl ErrorClass for MyError {}` is enough to start with.
pub trait ErrorClass {
    /// A short fixed word describing the error.
    fn error_class(&self) -> &'static str {
        "error"
    }
}

impl ErrorClass for std::io::Error {
    fn error_class(&self) -> &'static str {
        match self.kind() {
            std::io::ErrorKind::TimedOut => "timeout",
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::NotConnected
            | std::io::ErrorKind::BrokenPipe => "connection",
            _ => "io",
        }
    }
}

impl ErrorClass for tokio::time::error::Elapsed {
    fn error_class(&self) -> &'static str {
        "timeout"
    }
}

/// The method label values: the nine standard methods, then `_OTHER`.
pub(crate) const METHOD_LABELS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

/// The index of `_OTHER` in [`METHOD_LABELS`].
pub(crate) const OTHER_METHOD: usize = METHOD_LABELS.len() - 1;

/// The index in [`METHOD_LABELS`] of a method: exact spellings first (what
/// `http::Method::as_str` gives), then any case; `_OTHER` for the rest.
pub(crate) fn method_index(method: &str) -> usize {
    let known = &METHOD_LABELS[..OTHER_METHOD];
    known
        .iter()
        .position(|k| *k == method)
        .or_else(|| known.iter().position(|k| k.eq_ignore_ascii_case(method)))
        .unwrap_or(OTHER_METHOD)
}

/// Normalises an HTTP method to one of a fixed set of label values, so that
/// a client sending `FOO` cannot add a label value.
pub fn method_label(method: &str) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// The `http_response_status_code` label of a status: its three digits,
/// or `_OTHER` outside 100–599 (so a peer cannot add label values beyond
/// those 500).
pub fn status_code_label(status: u16) -> &'static str {
    static CODES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    match status {
        100..=599 => {
            let codes = CODES.get_or_init(|| (100..=599u16).map(|c| c.to_string()).collect());
            codes[usize::from(status - 100)].as_str()
        }
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_normalised_to_a_fixed_set() {
        assert_eq!(method_label("get"), "GET");
        assert_eq!(method_label("POST"), "POST");
        assert_eq!(method_label("BREW"), "_OTHER");
    }

    #[test]
    fn status_codes_are_their_digits_within_a_fixed_range() {
        assert_eq!(status_code_label(204), "204");
        assert_eq!(status_code_label(599), "599");
        assert_eq!(status_code_label(100), "100");
        assert_eq!(status_code_label(42), "_OTHER");
        assert_eq!(status_code_label(600), "_OTHER");
    }

    #[test]
    fn kind_indices_match_all() {
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}

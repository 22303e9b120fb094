//! Parameter values and lists, bound by position (`$1`) or by name (`:email`).

use chrono::{DateTime, Utc};

/// One parameter value. Each variant holds an `Option` so that a NULL keeps
/// its SQL type (PostgreSQL rejects an untyped NULL for a typed column).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `BOOLEAN`.
    Bool(Option<bool>),
    /// `BIGINT` / `INTEGER`.
    Int(Option<i64>),
    /// `DOUBLE PRECISION` / `REAL`.
    Float(Option<f64>),
    /// `TEXT`.
    Text(Option<String>),
    /// `JSONB` on PostgreSQL, `TEXT` on SQLite.
    Json(Option<serde_json::Value>),
    /// `TIMESTAMPTZ` on PostgreSQL, RFC 3339 `TEXT` on SQLite.
    Timestamp(Option<DateTime<Utc>>),
    /// `BYTEA` / `BLOB`.
    Bytes(Option<Vec<u8>>),
}

macro_rules! value_from {
    ($($t:ty => $variant:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$variant(Some(v $(as $cast)?)) }
        }
        impl From<Option<$t>> for Value {
            fn from(v: Option<$t>) -> Self { Value::$variant(v.map(|v| v $(as $cast)?)) }
        }
    )*};
}

value_from! {
    bool => Bool,
    i64 => Int,
    i32 => Int as i64,
    u32 => Int as i64,
    f64 => Float,
    String => Text,
    serde_json::Value => Json,
    DateTime<Utc> => Timestamp,
    Vec<u8> => Bytes,
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}

/// The parameters of one statement.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Params {
    /// None.
    #[default]
    None,
    /// `$1`, `$2`, … in order.
    Positional(Vec<Value>),
    /// `:name` placeholders.
    Named(Vec<(String, Value)>),
}

impl From<()> for Params {
    fn from(_: ()) -> Self {
        Params::None
    }
}

impl From<Vec<Value>> for Params {
    fn from(values: Vec<Value>) -> Self {
        Params::Positional(values)
    }
}

/// Builds [`Params`]: `params![a, b]` binds `$1`, `$2`;
/// `params!{"email" => e, "name" => n}` binds `:email`, `:name`.
#[macro_export]
macro_rules! params {
    () => { $crate::Params::None };
    ($($name:literal => $value:expr),+ $(,)?) => {
        $crate::Params::Named(vec![$(($name.to_string(), $crate::Value::from($value))),+])
    };
    ($($value:expr),+ $(,)?) => {
        $crate::Params::Positional(vec![$($crate::Value::from($value)),+])
    };
}

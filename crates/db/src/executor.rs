//! Running a prepared statement on a PostgreSQL or SQLite connection.

use serde_json::{Map, Value as Json};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Column, FromRow, Row, TypeInfo, ValueRef};

use crate::params::Value;
use crate::statement::Prepared;

/// Rows that decode from both backends: derive `sqlx::FromRow` (or use a
/// tuple) and this is implemented for you.
pub trait Record:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

impl<T> Record for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

/// A borrowed connection of either backend.
pub(crate) enum Conn<'a> {
    Pg(&'a mut PgConnection),
    Sqlite(&'a mut SqliteConnection),
}

/// Binds every value of a statement, in order, keeping NULLs typed.
macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Value::Bool(v) => query.bind(v),
                Value::Int(v) => query.bind(v),
                Value::Float(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
                Value::Json(v) => query.bind(v.map(sqlx::types::Json)),
                Value::Timestamp(v) => query.bind(v),
                Value::Bytes(v) => query.bind(v),
            };
        }
        query
    }};
}

/// Whether to prepare statements by name; off behind PgBouncer.
pub(crate) type Persistent = bool;

pub(crate) async fn fetch_all<T: Record>(
    conn: Conn<'_>,
    p: Prepared,
    persistent: Persistent,
) -> Result<Vec<T>, sqlx::Error> {
    match conn {
        Conn::Pg(c) => {
            bind_all!(sqlx::query_as::<_, T>(AssertSqlSafe(p.text)), p.values)
                .persistent(persistent)
                .fetch_all(c)
                .await
        }
        Conn::Sqlite(c) => {
            bind_all!(sqlx::query_as::<_, T>(AssertSqlSafe(p.text)), p.values)
                .fetch_all(c)
                .await
        }
    }
}

pub(crate) async fn fetch_optional<T: Record>(
    conn: Conn<'_>,
    p: Prepared,
    persistent: Persistent,
) -> Result<Option<T>, sqlx::Error> {
    match conn {
        Conn::Pg(c) => {
            bind_all!(sqlx::query_as::<_, T>(AssertSqlSafe(p.text)), p.values)
                .persistent(persistent)
                .fetch_optional(c)
                .await
        }
        Conn::Sqlite(c) => {
            bind_all!(sqlx::query_as::<_, T>(AssertSqlSafe(p.text)), p.values)
                .fetch_optional(c)
                .await
        }
    }
}

pub(crate) async fn execute(
    conn: Conn<'_>,
    p: Prepared,
    persistent: Persistent,
) -> Result<u64, sqlx::Error> {
    match conn {
        Conn::Pg(c) => Ok(bind_all!(sqlx::query(AssertSqlSafe(p.text)), p.values)
            .persistent(persistent)
            .execute(c)
            .await?
            .rows_affected()),
        Conn::Sqlite(c) => Ok(bind_all!(sqlx::query(AssertSqlSafe(p.text)), p.values)
            .execute(c)
            .await?
            .rows_affected()),
    }
}

pub(crate) async fn fetch_json(
    conn: Conn<'_>,
    p: Prepared,
    persistent: Persistent,
) -> Result<Vec<Map<String, Json>>, sqlx::Error> {
    match conn {
        Conn::Pg(c) => {
            let rows = bind_all!(sqlx::query(AssertSqlSafe(p.text)), p.values)
                .persistent(persistent)
                .fetch_all(c)
                .await?;
            rows.iter().map(pg_json).collect()
        }
        Conn::Sqlite(c) => {
            let rows = bind_all!(sqlx::query(AssertSqlSafe(p.text)), p.values)
                .fetch_all(c)
                .await?;
            rows.iter().map(sqlite_json).collect()
        }
    }
}

fn unsupported(column: &str, type_name: &str) -> sqlx::Error {
    sqlx::Error::Decode(
        format!(
            "column {column} has type {type_name}, which has no JSON form here; cast it to text"
        )
        .into(),
    )
}

fn pg_json(row: &PgRow) -> Result<Map<String, Json>, sqlx::Error> {
    let mut object = Map::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let value = if row.try_get_raw(i)?.is_null() {
            Json::Null
        } else {
            match column.type_info().name() {
                "BOOL" => Json::from(row.try_get::<bool, _>(i)?),
                "INT2" => Json::from(row.try_get::<i16, _>(i)?),
                "INT4" => Json::from(row.try_get::<i32, _>(i)?),
                "INT8" => Json::from(row.try_get::<i64, _>(i)?),
                "FLOAT4" => Json::from(row.try_get::<f32, _>(i)?),
                "FLOAT8" => Json::from(row.try_get::<f64, _>(i)?),
                "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" => {
                    Json::from(row.try_get::<String, _>(i)?)
                }
                "JSON" | "JSONB" => row.try_get::<Json, _>(i)?,
                "TIMESTAMPTZ" => Json::from(
                    row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)?
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                ),
                "TIMESTAMP" => Json::from(row.try_get::<chrono::NaiveDateTime, _>(i)?.to_string()),
                "DATE" => Json::from(row.try_get::<chrono::NaiveDate, _>(i)?.to_string()),
                other => return Err(unsupported(name, other)),
            }
        };
        object.insert(name.to_owned(), value);
    }
    Ok(object)
}

fn sqlite_json(row: &SqliteRow) -> Result<Map<String, Json>, sqlx::Error> {
    let mut object = Map::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let name = column.name();
        let raw = row.try_get_raw(i)?;
        let value = if raw.is_null() {
            Json::Null
        } else {
            let declared = column.type_info().name().to_ascii_uppercase();
            let stored = raw.type_info().name().to_ascii_uppercase();
            match (declared.as_str(), stored.as_str()) {
                ("BOOLEAN", _) => Json::from(row.try_get::<bool, _>(i)?),
                (_, "INTEGER") => Json::from(row.try_get::<i64, _>(i)?),
                (_, "REAL") => Json::from(row.try_get::<f64, _>(i)?),
                (_, "TEXT") => Json::from(row.try_get::<String, _>(i)?),
                (_, other) => return Err(unsupported(name, other)),
            }
        };
        object.insert(name.to_owned(), value);
    }
    Ok(object)
}

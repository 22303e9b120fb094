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

/// How a PostgreSQL statement goes to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistent {
    /// Prepared by name and cached on the connection (the default).
    Named,
    /// The unnamed statement, inside a transaction behind PgBouncer: the
    /// transaction keeps PgBouncer on one server connection.
    Unnamed,
    /// The unnamed statement in a transaction of its own, behind PgBouncer
    /// in transaction pooling. sqlx sends Parse/Describe and Bind/Execute
    /// with a Sync after each, and between two Syncs outside a
    /// transaction PgBouncer may hand the next messages to another server
    /// connection, where the unnamed statement does not exist
    /// (`unnamed prepared statement does not exist`). `BEGIN` … `COMMIT`
    /// around the statement pins one server connection for all of it.
    Pinned,
}

impl Persistent {
    /// The mode for a statement outside (`in_transaction` false) or
    /// inside a transaction.
    pub(crate) fn for_pool(pgbouncer: bool, in_transaction: bool) -> Self {
        match (pgbouncer, in_transaction) {
            (false, _) => Persistent::Named,
            (true, true) => Persistent::Unnamed,
            (true, false) => Persistent::Pinned,
        }
    }

    fn named(self) -> bool {
        self == Persistent::Named
    }
}

/// Sends `BEGIN`, `COMMIT` or `ROLLBACK` (simple query). Its own boxed
/// future, kept out of the statement functions' state machines: inlined,
/// sqlx's futures made every statement's future (boxed and copied once
/// per call) about 12 KB larger, PgBouncer or not.
fn control<'c>(
    c: &'c mut PgConnection,
    command: &'static str,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
    Box::pin(async move { sqlx::raw_sql(command).execute(c).await.map(drop) })
}

/// Runs `$run` (which uses `$c`) on PostgreSQL connection `$c`, inside a
/// transaction of its own when `$mode` is [`Persistent::Pinned`].
macro_rules! on_pg {
    ($c:expr, $mode:expr, $run:expr) => {{
        let pinned = $mode == Persistent::Pinned;
        if pinned {
            control(&mut *$c, "BEGIN").await?;
        }
        let result = $run;
        if pinned {
            match &result {
                Ok(_) => control(&mut *$c, "COMMIT").await?,
                // The statement's error is the one to report; a failed
                // rollback means the connection is gone anyway.
                Err(_) => {
                    let _ = control(&mut *$c, "ROLLBACK").await;
                }
            }
        }
        result
    }};
}

pub(crate) async fn fetch_all<T: Record>(
    conn: Conn<'_>,
    p: Prepared,
    persistent: Persistent,
) -> Result<Vec<T>, sqlx::Error> {
    match conn {
        Conn::Pg(c) => on_pg!(
            c,
            persistent,
            bind_all!(sqlx::query_as::<_, T>(AssertSqlSafe(p.text)), p.values)
                .persistent(persistent.named())
                .fetch_all(&mut *c)
                .await
        ),
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
        Conn::Pg(c) => on_pg!(
            c,
            persistent,
            bind_all!(sqlx::query_as::<_, T>(AssertSqlSafe(p.text)), p.values)
                .persistent(persistent.named())
                .fetch_optional(&mut *c)
                .await
        ),
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
        Conn::Pg(c) => on_pg!(
            c,
            persistent,
            bind_all!(sqlx::query(AssertSqlSafe(p.text)), p.values)
                .persistent(persistent.named())
                .execute(&mut *c)
                .await
                .map(|done| done.rows_affected())
        ),
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
            let rows = on_pg!(
                c,
                persistent,
                bind_all!(sqlx::query(AssertSqlSafe(p.text)), p.values)
                    .persistent(persistent.named())
                    .fetch_all(&mut *c)
                    .await
            )?;
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

//! Batches of independent statements (the design's "use batch operations
//! for multiple queries"): run concurrently over the pool, bounded by its
//! size, each with its own result.

use futures_util::StreamExt;
use futures_util::stream;

use crate::database::Database;
use crate::error::Result;
use crate::executor::Record;
use crate::params::Params;
use crate::statement::Sql;

impl Database {
    /// Runs independent queries concurrently, at most as many at once as
    /// the pool has connections, and returns each one's rows in input
    /// order. One failing never fails the others: each has its own
    /// `Result`. Not a transaction — use [`Database::transaction`] for
    /// statements that must succeed or fail together.
    ///
    /// ```no_run
    /// # async fn demo(db: sluice_db::Database) {
    /// use sluice_db::{Params, Sql, params};
    /// let results = db
    ///     .batch_query::<(i64,)>(vec![
    ///         (Sql::from("SELECT count(*) FROM users"), Params::default()),
    ///         (Sql::from("SELECT id FROM users WHERE id = $1"), params![7].into()),
    ///     ])
    ///     .await;
    /// assert_eq!(results.len(), 2);
    /// # }
    /// ```
    pub async fn batch_query<T: Record>(
        &self,
        statements: impl IntoIterator<Item = (Sql, Params)>,
    ) -> Vec<Result<Vec<T>>> {
        let width = self.batch_width();
        stream::iter(statements)
            .map(|(sql, params)| self.query::<T>(sql, params))
            .buffered(width)
            .collect()
            .await
    }

    /// Runs independent statements concurrently, as
    /// [`batch_query`](Database::batch_query) does, returning each one's
    /// count of affected rows in input order.
    pub async fn batch_execute(
        &self,
        statements: impl IntoIterator<Item = (Sql, Params)>,
    ) -> Vec<Result<u64>> {
        let width = self.batch_width();
        stream::iter(statements)
            .map(|(sql, params)| self.execute(sql, params))
            .buffered(width)
            .collect()
            .await
    }

    fn batch_width(&self) -> usize {
        usize::try_from(self.pool.max_connections())
            .unwrap_or(1)
            .max(1)
    }
}

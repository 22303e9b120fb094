//! Reads that tolerate lag, served by a read replica when one is set.
//!
//! A streaming replica is behind its primary by a little (usually
//! milliseconds). A read that does not need the latest write — a user
//! looked up after a cache miss — may go there, taking load off the
//! primary. Writes, transactions and every other read stay on the primary.
//! Two rules keep such a read correct: a replica that is unavailable is
//! skipped (the read goes to the primary), and a replica that finds no row
//! is not believed (the row may be too new to have reached it: the
//! primary is asked), so a client that just created a row always reads it
//! back.

use std::sync::Arc;

use crate::database::Database;
use crate::error::Result;
use crate::executor::Record;
use crate::params::Params;
use crate::statement::Sql;

impl Database {
    /// This database, with `replica` serving the reads that tolerate lag
    /// ([`query_optional_lagging`](Self::query_optional_lagging)).
    pub fn with_replica(mut self, replica: Database) -> Self {
        self.replica = Some(Arc::new(replica));
        self
    }

    /// The read replica, when one is set.
    pub fn replica(&self) -> Option<&Database> {
        self.replica.as_deref()
    }

    /// The first row, if any, read from the replica when one is set and
    /// answers; from this database (the primary) when there is none, when
    /// it is unavailable, and when it finds no row.
    pub async fn query_optional_lagging<T: Record>(
        &self,
        sql: impl Into<Sql>,
        params: impl Into<Params>,
    ) -> Result<Option<T>> {
        let (sql, params) = (sql.into(), params.into());
        if let Some(replica) = &self.replica {
            // Boxed: without a replica, the handlers' futures stay as
            // small as they were.
            let read = Box::pin(replica.query_optional::<T>(sql.clone(), params.clone()));
            match read.await {
                Ok(Some(row)) => return Ok(Some(row)),
                // Perhaps too new for the replica: the primary decides.
                Ok(None) => {}
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(error = %e, "replica unavailable; reading from the primary");
                }
                Err(e) => return Err(e),
            }
        }
        self.query_optional(sql, params).await
    }
}

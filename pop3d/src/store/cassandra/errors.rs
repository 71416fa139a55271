//! The driver's errors sorted into the kinds `pop3d_store_errors_total{kind}` counts, because
//! each calls for a different look: `timeout` (a replica slow or gone: Cassandra's read/write
//! timeout, or the driver's own request timeout), `unavailable` (too few live replicas for the
//! consistency level, or no connection to any node of the local datacenter), `overloaded` (a
//! node shedding load or rate-limiting), and `other` (refused or unexpected answers).

use scylla::errors::{
    DbError, ExecutionError, NextPageError, NextRowError, PagerExecutionError, RequestAttemptError, RequestError,
};

use crate::store::StoreError;

/// What Cassandra (or the connection to it) answered one attempt with.
pub(super) fn attempt(e: &RequestAttemptError, text: String) -> StoreError {
    match e {
        RequestAttemptError::DbError(db, _) => match db {
            DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => StoreError::Timeout(text),
            DbError::Unavailable { .. } | DbError::IsBootstrapping => StoreError::Unavailable(text),
            DbError::Overloaded | DbError::RateLimitReached { .. } => StoreError::Overloaded(text),
            _ => StoreError::Failed(text),
        },
        RequestAttemptError::BrokenConnectionError(_) | RequestAttemptError::UnableToAllocStreamId => {
            StoreError::Unavailable(text)
        }
        _ => StoreError::Failed(text),
    }
}

/// A single request (`execute_unpaged`, `batch`).
pub(super) fn execution(e: ExecutionError) -> StoreError {
    let text = e.to_string();
    match &e {
        ExecutionError::LastAttemptError(a) => attempt(a, text),
        ExecutionError::RequestTimeout(_) => StoreError::Timeout(text),
        // With DC failover off, no plan or no pool means no node of the local DC is reachable.
        ExecutionError::EmptyPlan | ExecutionError::ConnectionPoolError(_) => StoreError::Unavailable(text),
        _ => StoreError::Failed(text),
    }
}

fn request(e: &RequestError, text: String) -> StoreError {
    match e {
        RequestError::LastAttemptError(a) => attempt(a, text),
        RequestError::RequestTimeout(_) => StoreError::Timeout(text),
        RequestError::EmptyPlan | RequestError::ConnectionPoolError(_) => StoreError::Unavailable(text),
        _ => StoreError::Failed(text),
    }
}

fn next_page(e: &NextPageError, text: String) -> StoreError {
    match e {
        NextPageError::RequestFailure(r) => request(r, text),
        _ => StoreError::Failed(text),
    }
}

/// The first page of a paged read (`execute_iter`).
pub(super) fn pager(e: PagerExecutionError) -> StoreError {
    let text = e.to_string();
    match &e {
        PagerExecutionError::NextPageError(p) => next_page(p, text),
        _ => StoreError::Failed(text),
    }
}

/// A later page of a paged read.
pub(super) fn next_row(e: NextRowError) -> StoreError {
    let text = e.to_string();
    match &e {
        NextRowError::NextPageError(p) => next_page(p, text),
        _ => StoreError::Failed(text),
    }
}

/// An answer that was not what the statement promises (not rows, wrong types).
pub(super) fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::statement::Consistency;
    use std::time::Duration;

    fn db(error: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(error, "from the server".into()))
    }

    #[test]
    fn driver_errors_map_to_the_kinds_on_call_reads() {
        let c = Consistency::LocalQuorum;
        let cases = [
            (db(DbError::ReadTimeout { consistency: c, received: 1, required: 2, data_present: false }), "timeout"),
            (
                db(DbError::WriteTimeout {
                    consistency: c,
                    received: 1,
                    required: 2,
                    write_type: scylla::errors::WriteType::Simple,
                }),
                "timeout",
            ),
            (ExecutionError::RequestTimeout(Duration::from_secs(12)), "timeout"),
            (db(DbError::Unavailable { consistency: c, required: 2, alive: 1 }), "unavailable"),
            (ExecutionError::EmptyPlan, "unavailable"),
            (db(DbError::Overloaded), "overloaded"),
            (db(DbError::SyntaxError), "other"),
            (db(DbError::Invalid), "other"),
        ];
        for (error, kind) in cases {
            let text = error.to_string();
            let mapped = execution(error);
            assert_eq!(mapped.kind(), kind, "{text}");
            assert!(mapped.to_string().contains(&text), "the driver's message is kept: {mapped}");
        }
    }
}

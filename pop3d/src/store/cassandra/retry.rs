//! The driver's retry policy: the driver's default, plus one retry of a read whose replica went
//! silent.
//!
//! A LOCAL_QUORUM read asks two of the DC's three replicas (writes ask all three and wait for two).
//! When one of those two dies under the read, the coordinator waits for it until Cassandra's
//! `read_request_timeout` and answers ReadTimeout with fewer responses than required, although a
//! quorum of live replicas is there. The driver's default policy retries a read timeout only when
//! enough replicas answered (`received >= required`), so without this the crash of one node of
//! three turned an in-flight RETR into `-ERR [SYS/TEMP]` (seen by the quorum test). Retried once,
//! on the next coordinator of the plan, which leaves the node out once Cassandra has marked it
//! down (until then it may pick it too, and the read fails after all: rarer, not impossible).
//! Every statement pop3d sends is idempotent (reads, upserts, deletes), and a statement not marked
//! so is never retried here. The retry needs time: `--cassandra-timeout-ms` bounds both attempts,
//! so its default sits above Cassandra's read timeout (5 s).

use scylla::errors::{DbError, RequestAttemptError};
use scylla::policies::retry::{DefaultRetrySession, RequestInfo, RetryDecision, RetryPolicy, RetrySession};

#[derive(Debug, Default)]
pub struct RetryLostReplica;

impl RetryPolicy for RetryLostReplica {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(Session { default: DefaultRetrySession::new(), retried_lost_replica: false })
    }
}

struct Session {
    default: DefaultRetrySession,
    retried_lost_replica: bool,
}

impl RetrySession for Session {
    fn decide_should_retry(&mut self, info: RequestInfo) -> RetryDecision {
        if lost_replica(info.error, info.is_idempotent) && !self.retried_lost_replica {
            self.retried_lost_replica = true;
            return RetryDecision::RetryNextTarget(None);
        }
        self.default.decide_should_retry(info)
    }

    fn reset(&mut self) {
        self.default.reset();
        self.retried_lost_replica = false;
    }
}

/// A read timed out short of its quorum (a replica it asked did not answer), on a statement that
/// may be sent twice. Serial reads never reach here: pop3d issues none.
fn lost_replica(error: &RequestAttemptError, is_idempotent: bool) -> bool {
    matches!(
        error,
        RequestAttemptError::DbError(DbError::ReadTimeout { received, required, consistency, .. }, _)
            if is_idempotent && received < required && !consistency.is_serial()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::statement::Consistency;

    fn read_timeout(received: i32, required: i32, data_present: bool) -> RequestAttemptError {
        let error = DbError::ReadTimeout { consistency: Consistency::LocalQuorum, received, required, data_present };
        RequestAttemptError::DbError(error, "Operation timed out".into())
    }

    #[test]
    fn a_read_short_of_its_quorum_is_retried_when_idempotent() {
        // What the quorum test met: the data came, the second replica died under the read.
        assert!(lost_replica(&read_timeout(1, 2, true), true));
        assert!(lost_replica(&read_timeout(0, 2, false), true));
        assert!(!lost_replica(&read_timeout(1, 2, true), false), "not idempotent: never twice");
    }

    #[test]
    fn other_errors_are_left_to_the_default_policy() {
        // Enough replicas answered: the default policy's own case.
        assert!(!lost_replica(&read_timeout(2, 2, false), true));
        let unavailable = DbError::Unavailable { consistency: Consistency::LocalQuorum, required: 2, alive: 1 };
        assert!(!lost_replica(&RequestAttemptError::DbError(unavailable, String::new()), true));
    }
}

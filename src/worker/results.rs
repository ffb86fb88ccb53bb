//! Task results: an optional hook the worker calls after a batch is committed, so that a
//! Celery caller's `AsyncResult.get()` sees `SUCCESS:<event_id>` (see
//! `broker::redis_celery::RedisCeleryResults`). The task id comes from the decoder
//! ([`super::TaskRef`]), so nothing is decoded twice.
//!
//! Results are best effort: lineage is never held back for them. A failed write is logged and
//! not retried; the events themselves are committed and acknowledged either way.

use async_trait::async_trait;

use super::TaskRef;
use crate::broker::BrokerError;
use crate::event::LineageEvent;

/// Where the results of committed tasks are written.
#[async_trait]
pub trait ResultBackend: Send + Sync {
    /// Record success for each committed (task, event). The worker passes only tasks that want
    /// a result. MUST NOT be called before the batch holding them is committed.
    async fn store_success(
        &self,
        committed: &[(&TaskRef, &LineageEvent)],
    ) -> Result<(), BrokerError>;
}

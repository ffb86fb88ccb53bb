//! Task results: an optional hook the worker calls after a batch is committed, so that a
//! Celery caller's `AsyncResult.get()` sees `SUCCESS:<event_id>` (see
//! [`super::redis::RedisCeleryResults`]). The task id comes from the decoder
//! ([`crate::celery::TaskRef`]), so nothing is decoded twice. The trait sits with the brokers,
//! which implement it, so that the worker depends on the broker module and never the reverse.
//!
//! Results are best effort: lineage is never held back for them. A failed write is logged and
//! not retried; the events themselves are committed and acknowledged either way.

use async_trait::async_trait;

use super::BrokerError;
use crate::celery::TaskRef;
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

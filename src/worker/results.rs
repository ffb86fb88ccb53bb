//! Task results: an optional hook the worker calls after a batch is committed, so that a
//! Celery caller's `AsyncResult.get()` sees `SUCCESS:<event_id>` (see
//! `broker::redis_celery::RedisCeleryResults`, which reads the task id from a Redis envelope or
//! from a RabbitMQ delivery's headers).
//!
//! Results are best effort: lineage is never held back for them. A failed write is logged and
//! not retried; the events themselves are committed and acknowledged either way.

use async_trait::async_trait;

use crate::broker::{BrokerError, Delivery};
use crate::event::LineageEvent;

/// Where the results of committed tasks are written.
#[async_trait]
pub trait ResultBackend: Send + Sync {
    /// Record success for each committed (delivery, event). MUST skip deliveries that are not
    /// task messages or that asked for no result (`ignore_result`). MUST NOT be called before
    /// the batch holding them is committed.
    async fn store_success(
        &self,
        committed: &[(&Delivery, &LineageEvent)],
    ) -> Result<(), BrokerError>;
}

//! Leasing messages from the embedded queue for one worker task, and acknowledging, holding,
//! giving back and dead-lettering them (see "How a message moves" in the parent module).
//!
//! Not for: listing, replaying or purging dead letters (see `dead_letters`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, OptionalExtension};
use tokio::time::Instant;

use super::schema::{DEAD_LETTER, DELETE_BODY, DELETE_MESSAGE, LEASE, SELECT_BODY, SET_VISIBLE_AT};
use super::{duration_ms, in_transaction, message_id, message_ids, now_ms, Durability, Shared};
use crate::broker::{BrokerError, Consumer, ConsumerOptions, Delivery, DeliveryTag};

/// The first pause of an idle `receive` between two polls of the file.
const POLL_START: Duration = Duration::from_millis(5);

/// The longest pause of an idle `receive` between two polls: the worst-case latency for a message
/// enqueued by another process.
const POLL_MAX: Duration = Duration::from_millis(50);

/// Leases messages from an [`EmbeddedBroker`](super::EmbeddedBroker)'s file for one worker task.
pub struct EmbeddedConsumer {
    shared: Arc<Shared>,
    /// The visibility timeout in milliseconds.
    visibility_ms: i64,
    /// The consumer's name, for `Debug` output.
    name: String,
}

impl fmt::Debug for EmbeddedConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedConsumer")
            .field("path", &self.shared.path)
            .field("name", &self.name)
            .field("visibility_ms", &self.visibility_ms)
            .finish_non_exhaustive()
    }
}

impl EmbeddedConsumer {
    /// A consumer on `shared`'s connection.
    pub(super) fn new(shared: Arc<Shared>, options: ConsumerOptions) -> Self {
        EmbeddedConsumer {
            shared,
            visibility_ms: duration_ms(options.visibility_timeout),
            name: options.name,
        }
    }

    /// Lease up to `max` visible messages now, without waiting.
    async fn lease(&self, max: usize) -> Result<Vec<Delivery>, BrokerError> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let visibility_ms = self.visibility_ms;
        self.shared
            .run(
                "receive",
                Durability::Relaxed,
                in_transaction(move |tx| {
                    let now = now_ms();
                    let mut leased = {
                        let mut lease = tx.prepare_cached(LEASE)?;
                        let rows = lease.query_map(
                            params![now.saturating_add(visibility_ms), now, limit],
                            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                        )?;
                        rows.collect::<Result<Vec<_>, _>>()?
                    };
                    // RETURNING yields rows in no particular order.
                    leased.sort_unstable_by_key(|(id, _)| *id);
                    let mut deliveries = Vec::with_capacity(leased.len());
                    {
                        let mut select_body = tx.prepare_cached(SELECT_BODY)?;
                        for (id, attempts) in leased {
                            // A missing body (a hand-edited file) is delivered empty: the worker
                            // dead-letters it instead of the queue failing on it forever.
                            let body: Option<Vec<u8>> = select_body
                                .query_row(params![id], |row| row.get(0))
                                .optional()?;
                            deliveries.push(Delivery {
                                tag: DeliveryTag::Int(u64::try_from(id).unwrap_or(0)),
                                body: body.map(Bytes::from).unwrap_or_default(),
                                attempt: u32::try_from(attempts.max(1)).unwrap_or(u32::MAX),
                                properties: None,
                            });
                        }
                    }
                    Ok(deliveries)
                }),
            )
            .await
    }

    /// Set `visible_at = now + delay_ms` on these messages, in one transaction.
    async fn set_visible_in(
        &self,
        operation: &'static str,
        tags: &[DeliveryTag],
        delay_ms: i64,
    ) -> Result<(), BrokerError> {
        let ids = message_ids(tags)?;
        if ids.is_empty() {
            return Ok(());
        }
        self.shared
            .run(
                operation,
                Durability::Relaxed,
                in_transaction(move |tx| {
                    let visible_at = now_ms().saturating_add(delay_ms);
                    {
                        let mut update = tx.prepare_cached(SET_VISIBLE_AT)?;
                        for id in &ids {
                            update.execute(params![id, visible_at])?;
                        }
                    }
                    Ok(())
                }),
            )
            .await
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    /// Returns as soon as at least one message is leased (it does not wait to fill `max`), or
    /// with nothing once `wait` has passed.
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // `None`: a wait too long to represent, i.e. forever.
        let deadline = Instant::now().checked_add(wait);
        let mut pause = POLL_START;
        loop {
            // Registered before looking, so an enqueue between the look and the sleep still
            // wakes us.
            let notified = self.shared.wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let leased = self.lease(max).await?;
            if !leased.is_empty() {
                return Ok(leased);
            }
            let nap = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(leased);
                    }
                    pause.min(left)
                }
                None => pause,
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(nap) => {}
            }
            pause = pause.saturating_mul(2).min(POLL_MAX);
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        let ids = message_ids(tags)?;
        if ids.is_empty() {
            return Ok(());
        }
        self.shared
            .run(
                "ack",
                Durability::Relaxed,
                in_transaction(move |tx| {
                    {
                        let mut delete = tx.prepare_cached(DELETE_MESSAGE)?;
                        let mut delete_body = tx.prepare_cached(DELETE_BODY)?;
                        for id in &ids {
                            delete.execute(params![id])?;
                            delete_body.execute(params![id])?;
                        }
                    }
                    Ok(())
                }),
            )
            .await
    }

    async fn extend(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        self.set_visible_in("extend", tags, self.visibility_ms)
            .await
    }

    async fn retry_later(
        &mut self,
        tags: &[DeliveryTag],
        delay: Duration,
    ) -> Result<(), BrokerError> {
        self.set_visible_in("retry_later", tags, duration_ms(delay))
            .await
    }

    /// Moves each message still in the queue to `dead_letters` with its stored bytes and attempt
    /// count; a message no longer in the queue (its expired lease was acked or dead-lettered by
    /// another consumer) is skipped, so nothing is dead-lettered twice.
    async fn dead_letter(&mut self, items: &[(Delivery, String)]) -> Result<(), BrokerError> {
        if items.is_empty() {
            return Ok(());
        }
        let items = items
            .iter()
            .map(|(delivery, reason)| Ok((message_id(&delivery.tag)?, reason.clone())))
            .collect::<Result<Vec<_>, BrokerError>>()?;
        self.shared
            .run(
                "dead_letter",
                Durability::Synced,
                in_transaction(move |tx| {
                    let now = now_ms();
                    {
                        let mut copy = tx.prepare_cached(DEAD_LETTER)?;
                        let mut delete = tx.prepare_cached(DELETE_MESSAGE)?;
                        let mut delete_body = tx.prepare_cached(DELETE_BODY)?;
                        for (id, reason) in &items {
                            copy.execute(params![id, reason, now])?;
                            delete.execute(params![id])?;
                            delete_body.execute(params![id])?;
                        }
                    }
                    Ok(())
                }),
            )
            .await
    }
}

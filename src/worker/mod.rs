//! The worker: consume → decode → validate → batch → commit → ack, knowing only the `Consumer`
//! and `Store` traits.
//!
//! Guarantees kept here:
//! - a delivery is acknowledged only after the batch holding it is committed (nothing lost);
//! - invalid input is dead-lettered at once and never blocks valid input;
//! - a store outage makes the worker hold the batch (extending its leases) and retry with capped
//!   exponential backoff and jitter, forever, without burning any retry budget;
//! - a message the store keeps refusing is retried later and dead-lettered after `max_retries`.
//!
//! [`Worker::try_process_batch`] runs one iteration so tests can drive the loop step by step.

pub mod celery_decoder;
pub mod checkpointer;
pub mod pipeline;
pub mod rate_limit;
pub mod retry;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::{BrokerError, Consumer, Delivery, DeliveryTag};
use crate::event::LineageEvent;
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

pub use crate::broker::ResultBackend;
pub use crate::celery::TaskRef;
pub use celery_decoder::CeleryDecoder;
pub use checkpointer::{CheckpointOptions, Checkpointer};
pub use pipeline::{Decoded, Decoder, NativeDecoder};
pub use rate_limit::RateLimiter;
pub use retry::Backoff;

/// How a worker batches and retries.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Most events committed in one transaction. Defaults to 5000.
    pub batch_size: usize,
    /// How long to wait for a batch to fill once its first message arrived. Defaults to 20ms.
    pub linger: Duration,
    /// Deliveries allowed to fail before a message is dead-lettered. Defaults to 5.
    pub max_retries: u32,
    /// The broker's visibility timeout: held batches are extended well within it.
    /// Defaults to 30s.
    pub visibility_timeout: Duration,
    /// Backoff while the store or broker is unavailable.
    pub backoff: Backoff,
    /// How long one `receive` may block, so that shutdown is noticed. Defaults to 500ms.
    pub poll: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            batch_size: 5000,
            linger: Duration::from_millis(20),
            max_retries: 5,
            visibility_timeout: Duration::from_secs(30),
            backoff: Backoff::default(),
            poll: Duration::from_millis(500),
        }
    }
}

/// What went wrong in a worker iteration that the loop must back off from.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker failed (receive, ack, dead-letter). Unacked messages are redelivered later.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The store failed in a way that holding cannot fix.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one iteration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Messages taken from the broker.
    pub received: usize,
    /// New rows stored.
    pub persisted: u64,
    /// Events already stored (skipped).
    pub duplicates: u64,
    /// Messages dead-lettered.
    pub dead_lettered: usize,
    /// Messages given back for a later attempt.
    pub retried: usize,
    /// True when the iteration stopped because shutdown was requested.
    pub stopped: bool,
}

/// One worker task: a consumer, the store, a decoder.
pub struct Worker {
    consumer: Box<dyn Consumer>,
    store: Arc<dyn Store>,
    decoder: Arc<dyn Decoder>,
    limiter: Option<Arc<RateLimiter>>,
    /// Where task results go after a commit (Celery's result backend), if anywhere.
    results: Option<Arc<dyn ResultBackend>>,
    options: WorkerOptions,
    shutdown: Shutdown,
    /// Whether the last commit attempt reached the store; used to log state changes only once.
    store_up: bool,
}

impl Worker {
    /// A worker reading from `consumer` and writing to `store`.
    pub fn new(
        consumer: Box<dyn Consumer>,
        store: Arc<dyn Store>,
        decoder: Arc<dyn Decoder>,
        options: WorkerOptions,
        shutdown: Shutdown,
    ) -> Self {
        Worker {
            consumer,
            store,
            decoder,
            limiter: None,
            results: None,
            options,
            shutdown,
            store_up: true,
        }
    }

    /// Cap persisted events per second with a limiter shared by several workers.
    pub fn with_rate_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Write task results (`SUCCESS:<event_id>`) after each commit.
    pub fn with_results(mut self, results: Arc<dyn ResultBackend>) -> Self {
        self.results = Some(results);
        self
    }

    /// Run until shutdown is requested; the batch in hand is finished and acknowledged first.
    pub async fn run(mut self) {
        let mut failures = 0u32;
        let mut broker_down = false;
        loop {
            if self.shutdown.is_requested() {
                break;
            }
            match self.try_process_batch().await {
                Ok(outcome) if outcome.stopped => break,
                Ok(_) => {
                    if broker_down {
                        tracing::info!(message = "Broker available again; resuming.");
                        broker_down = false;
                    }
                    failures = 0;
                }
                Err(WorkerError::Store(error)) if error.is_fatal() => {
                    tracing::error!(message = "Worker stopped: the store cannot accept events until this is fixed.", %error);
                    break;
                }
                Err(error) => {
                    if !broker_down {
                        tracing::warn!(message = "Worker iteration failed; backing off.", %error);
                        broker_down = true;
                    }
                    let delay = self.options.backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    let mut shutdown = self.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.requested() => break,
                    }
                }
            }
        }
        tracing::debug!(message = "Worker stopped.");
    }

    /// Take one batch from the broker and see it through: dead-letter what is invalid, commit
    /// the rest (holding through outages), acknowledge.
    pub async fn try_process_batch(&mut self) -> Result<BatchOutcome, WorkerError> {
        let mut outcome = BatchOutcome::default();
        let (deliveries, leased_at) = self.collect_batch().await?;
        if deliveries.is_empty() {
            outcome.stopped = self.shutdown.is_requested();
            return Ok(outcome);
        }
        outcome.received = deliveries.len();
        metrics::messages_received(deliveries.len());

        let mut events: Vec<LineageEvent> = Vec::with_capacity(deliveries.len());
        let mut held: Vec<Delivery> = Vec::with_capacity(deliveries.len());
        let mut tasks: Vec<Option<TaskRef>> = Vec::with_capacity(deliveries.len());
        let mut rejects: Vec<(Delivery, String)> = Vec::new();
        let max_deliveries = self.options.max_retries.saturating_add(1);
        for delivery in deliveries {
            if delivery.attempt > max_deliveries {
                let reason = format!(
                    "delivered {} times without being stored (max_retries {})",
                    delivery.attempt, self.options.max_retries
                );
                rejects.push((delivery, reason));
                continue;
            }
            match self.decoder.decode(&delivery) {
                Decoded::Event { event, task } => {
                    events.push(*event);
                    held.push(delivery);
                    tasks.push(task);
                }
                Decoded::Reject(reason) => rejects.push((delivery, reason)),
                Decoded::Defer(delay) => {
                    self.consumer
                        .retry_later(std::slice::from_ref(&delivery.tag), delay)
                        .await?;
                    outcome.retried += 1;
                }
            }
        }
        if !rejects.is_empty() {
            self.consumer.dead_letter(&rejects).await?;
            for (_, reason) in &rejects {
                metrics::dead_lettered(reason);
            }
            outcome.dead_lettered = rejects.len();
        }
        if events.is_empty() {
            return Ok(outcome);
        }
        self.commit_and_ack(events, held, tasks, leased_at, &mut outcome)
            .await?;
        Ok(outcome)
    }

    /// Receive up to `batch_size` messages: wait for the first, then linger briefly to fill.
    /// Returns them with the instant the first ones arrived, when their leases started.
    async fn collect_batch(&mut self) -> Result<(Vec<Delivery>, Instant), WorkerError> {
        let max = match &self.limiter {
            Some(l) => self.options.batch_size.min(l.burst()),
            None => self.options.batch_size,
        }
        .max(1);
        let mut shutdown = self.shutdown.clone();
        let mut batch = tokio::select! {
            r = self.consumer.receive(max, self.options.poll) => r?,
            _ = shutdown.requested() => return Ok((Vec::new(), Instant::now())),
        };
        let leased_at = Instant::now();
        if batch.is_empty() || batch.len() >= max {
            return Ok((batch, leased_at));
        }
        let deadline = Instant::now() + self.options.linger;
        while batch.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let more = self.consumer.receive(max - batch.len(), left).await?;
            if more.is_empty() {
                break;
            }
            batch.extend(more);
        }
        Ok((batch, leased_at))
    }

    async fn commit_and_ack(
        &mut self,
        events: Vec<LineageEvent>,
        held: Vec<Delivery>,
        tasks: Vec<Option<TaskRef>>,
        leased_at: Instant,
        outcome: &mut BatchOutcome,
    ) -> Result<(), WorkerError> {
        let tags: Vec<DeliveryTag> = held.iter().map(|d| d.tag.clone()).collect();
        let mut last_extend = leased_at;
        if let Some(limiter) = self.limiter.clone() {
            // A slow limit, or many workers sharing one, can make this wait outlive the leases.
            let ready = limiter.reserve(events.len());
            self.wait_holding(&tags, ready, &mut last_extend, false)
                .await?;
        }
        match self
            .commit_holding(&events, &tags, &mut last_extend)
            .await?
        {
            Commit::Stored(report) => {
                outcome.persisted += report.inserted;
                outcome.duplicates += report.duplicates;
                self.consumer.ack(&tags).await?;
                if let Some(results) = self.results.clone() {
                    store_results(results, &tasks, &events).await;
                }
                Ok(())
            }
            Commit::Stopped => {
                // Cannot finish this batch: give it back for immediate redelivery.
                self.give_back(&tags, outcome).await?;
                outcome.stopped = true;
                Ok(())
            }
            Commit::Fatal(error) => {
                // Nothing can be stored until an operator acts: give the batch back and stop.
                self.give_back(&tags, outcome).await?;
                Err(WorkerError::Store(error))
            }
            Commit::Refused(error) => {
                tracing::error!(message = "Store refused the batch; committing events one by one.", %error);
                self.commit_one_by_one(events, held, tasks, last_extend, outcome)
                    .await
            }
        }
    }

    /// Commit `events`, holding through outages: while the store is unavailable, retry with
    /// capped exponential backoff and jitter, forever, keeping the leases of `held` (every
    /// delivery still in hand) alive. `last_extend` is when those leases were last renewed.
    /// Errs only when the broker fails.
    async fn commit_holding(
        &mut self,
        events: &[LineageEvent],
        held: &[DeliveryTag],
        last_extend: &mut Instant,
    ) -> Result<Commit, WorkerError> {
        let mut failures = 0u32;
        loop {
            // Before every attempt too: committing a refused batch event by event can take
            // longer than the leases.
            self.extend_if_due(held, last_extend).await?;
            let started = Instant::now();
            match self.store.commit_batch(events).await {
                Ok(report) => {
                    if !self.store_up {
                        self.store_up = true;
                        metrics::store_state_changed(true, "commit succeeded");
                    }
                    metrics::batch_committed(report.inserted, report.duplicates, started.elapsed());
                    return Ok(Commit::Stored(report));
                }
                Err(error) if error.is_transient() => {
                    if self.store_up {
                        self.store_up = false;
                        metrics::store_state_changed(false, &error.to_string());
                    }
                    let delay = self.options.backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    metrics::commit_retry(&error, delay);
                    let retry_at = Instant::now() + delay;
                    if !self.wait_holding(held, retry_at, last_extend, true).await? {
                        return Ok(Commit::Stopped);
                    }
                }
                Err(error) if error.is_fatal() => return Ok(Commit::Fatal(error)),
                Err(error) => return Ok(Commit::Refused(error)),
            }
        }
    }

    /// Wait until `until` (the next commit attempt, or the rate limiter's go), renewing the
    /// leases of `held` every third of the visibility timeout meanwhile: the backoff delay (up
    /// to its cap) or the limiter's wait may be longer than the timeout. With `stoppable`, a
    /// shutdown request ends the wait early and this returns false.
    async fn wait_holding(
        &mut self,
        held: &[DeliveryTag],
        until: Instant,
        last_extend: &mut Instant,
        stoppable: bool,
    ) -> Result<bool, WorkerError> {
        let mut shutdown = self.shutdown.clone();
        loop {
            self.extend_if_due(held, last_extend).await?;
            let wake = until.min(*last_extend + self.extend_every());
            if wake <= Instant::now() {
                return Ok(true);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.requested(), if stoppable => return Ok(false),
            }
        }
    }

    /// Renew the leases of `held` when a third of the visibility timeout passed since
    /// `last_extend`, so that they stay alive well within it.
    async fn extend_if_due(
        &mut self,
        held: &[DeliveryTag],
        last_extend: &mut Instant,
    ) -> Result<(), WorkerError> {
        if last_extend.elapsed() >= self.extend_every() {
            self.consumer.extend(held).await?;
            *last_extend = Instant::now();
        }
        Ok(())
    }

    /// How often held leases are renewed: a third of the visibility timeout, and not more
    /// often than every 100ms (a zero timeout would otherwise renew in a busy loop).
    fn extend_every(&self) -> Duration {
        (self.options.visibility_timeout / 3).max(Duration::from_millis(100))
    }

    /// Give deliveries back for immediate redelivery.
    async fn give_back(
        &mut self,
        tags: &[DeliveryTag],
        outcome: &mut BatchOutcome,
    ) -> Result<(), WorkerError> {
        self.consumer.retry_later(tags, Duration::ZERO).await?;
        outcome.retried += tags.len();
        Ok(())
    }

    /// A permanent store error: isolate the event(s) that cause it. Those that commit are
    /// acknowledged; the others are retried later and dead-lettered after `max_retries`. An
    /// outage on the way is held through (the deliveries not yet settled stay leased), and a
    /// fatal error gives those back and stops, as for a whole batch.
    async fn commit_one_by_one(
        &mut self,
        events: Vec<LineageEvent>,
        held: Vec<Delivery>,
        tasks: Vec<Option<TaskRef>>,
        mut last_extend: Instant,
        outcome: &mut BatchOutcome,
    ) -> Result<(), WorkerError> {
        let tags: Vec<DeliveryTag> = held.iter().map(|d| d.tag.clone()).collect();
        for (i, ((event, delivery), task)) in events.into_iter().zip(held).zip(tasks).enumerate() {
            let unsettled = &tags[i..];
            match self
                .commit_holding(std::slice::from_ref(&event), unsettled, &mut last_extend)
                .await?
            {
                Commit::Stored(report) => {
                    outcome.persisted += report.inserted;
                    outcome.duplicates += report.duplicates;
                    self.consumer
                        .ack(std::slice::from_ref(&delivery.tag))
                        .await?;
                    if let Some(results) = self.results.clone() {
                        store_results(results, &[task], std::slice::from_ref(&event)).await;
                    }
                }
                Commit::Stopped => {
                    self.give_back(unsettled, outcome).await?;
                    outcome.stopped = true;
                    return Ok(());
                }
                Commit::Fatal(error) => {
                    self.give_back(unsettled, outcome).await?;
                    return Err(WorkerError::Store(error));
                }
                Commit::Refused(error) if delivery.attempt > self.options.max_retries => {
                    let reason = format!("store refused it {} times: {error}", delivery.attempt);
                    metrics::dead_lettered(&reason);
                    self.consumer.dead_letter(&[(delivery, reason)]).await?;
                    outcome.dead_lettered += 1;
                }
                Commit::Refused(error) => {
                    let delay = self.options.backoff.delay(delivery.attempt);
                    metrics::commit_retry(&error, delay);
                    self.consumer
                        .retry_later(std::slice::from_ref(&delivery.tag), delay)
                        .await?;
                    outcome.retried += 1;
                }
            }
        }
        Ok(())
    }
}

/// How [`Worker::commit_holding`] ended.
enum Commit {
    /// Stored.
    Stored(crate::store::CommitReport),
    /// Shutdown was requested while the store was unavailable.
    Stopped,
    /// No event can be stored until an operator acts ([`StoreError::is_fatal`]).
    Fatal(StoreError),
    /// The store refused these events for good (neither transient nor fatal).
    Refused(StoreError),
}

/// Best effort: write the results of the committed events that came from Celery tasks which
/// want one; a failure is logged and never fails the batch. A free function, so that no borrow
/// of the worker (whose consumer is not `Sync`) lives across the await.
async fn store_results(
    results: Arc<dyn ResultBackend>,
    tasks: &[Option<TaskRef>],
    events: &[LineageEvent],
) {
    let pairs: Vec<(&TaskRef, &LineageEvent)> = tasks
        .iter()
        .zip(events)
        .filter_map(|(task, event)| task.as_ref().map(|t| (t, event)))
        .filter(|(task, _)| !task.ignore_result)
        .collect();
    if pairs.is_empty() {
        return;
    }
    if let Err(error) = results.store_success(&pairs).await {
        tracing::warn!(message = "Could not write task results; the events are stored.", %error);
    }
}

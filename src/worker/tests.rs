//! In-process tests of the worker loop on Tokio's paused clock: a scripted fake broker consumer
//! and a scripted fake store record every call in one journal, in order, with the (paused)
//! instant it happened, and the tests drive [`Worker::try_process_batch`] one iteration at a
//! time (or a whole [`Worker::run`]).
//!
//! Not for: the real brokers and stores, which the integration tests (`tests/it`) cover.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    Backoff, BatchOutcome, NativeDecoder, RateLimiter, Worker, WorkerError, WorkerOptions,
};
use crate::broker::{BrokerError, Consumer, Delivery, DeliveryTag};
use crate::config::Rate;
use crate::event::{EventId, LineageEvent};
use crate::shutdown::{self, ShutdownTrigger};
use crate::store::{
    CommitReport, Direction, EdgePage, LineageEdge, Store, StoreError, StoredEvent,
};

// ---------------------------------------------------------------------------------------------
// The journal both fakes write to.

/// How a commit attempt ended, as the fake store answered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Stored,
    Unavailable,
    Refused,
    Fatal,
}

/// One call a fake saw.
#[derive(Debug, Clone)]
enum Call {
    /// A `receive` that returned deliveries (empty ones are not journaled): each tag with the
    /// delivery's `attempt`.
    Receive(Vec<(DeliveryTag, u32)>),
    /// A `commit_batch`: the datasets of its events and the answer.
    Commit(Vec<Uuid>, Answer),
    Ack(Vec<DeliveryTag>),
    Extend(Vec<DeliveryTag>),
    RetryLater(Vec<DeliveryTag>, Duration),
    /// `dead_letter`: (tag, attempt, body, reason) of each item.
    DeadLetter(Vec<(DeliveryTag, u32, Bytes, String)>),
}

type Journal = Arc<Mutex<Vec<(Instant, Call)>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn record(journal: &Journal, call: Call) {
    lock(journal).push((Instant::now(), call));
}

// ---------------------------------------------------------------------------------------------
// The fake broker.

/// What the fake broker holds: messages waiting (visible from an instant on) and messages
/// handed out and not yet settled, each with the instant its lease runs out.
struct Queue {
    visibility_timeout: Duration,
    waiting: VecDeque<(Instant, Delivery)>,
    in_flight: HashMap<DeliveryTag, (Delivery, Instant)>,
    /// Leases that ran out before the worker extended or settled them: (tag, what the worker
    /// did then, how late). A real broker would have handed those messages to another consumer.
    lapsed: Vec<(DeliveryTag, &'static str, Duration)>,
}

impl Queue {
    /// Note a lease of `tag` that ran out before `now`, when the worker does `what` with it.
    fn check_lease(&mut self, tag: &DeliveryTag, what: &'static str, now: Instant) {
        if let Some((_, until)) = self.in_flight.get(tag) {
            if now >= *until {
                let late = now - *until;
                self.lapsed.push((tag.clone(), what, late));
            }
        }
    }
}

/// The test's handle on the fake broker: enqueue messages, read the journal.
#[derive(Clone)]
struct FakeBroker {
    queue: Arc<Mutex<Queue>>,
    journal: Journal,
    /// The dataset of each tag whose body is a valid event, to check acks against commits.
    datasets: Arc<Mutex<HashMap<DeliveryTag, Uuid>>>,
    next_tag: Arc<Mutex<u64>>,
}

impl FakeBroker {
    fn new(journal: Journal, visibility_timeout: Duration) -> Self {
        FakeBroker {
            queue: Arc::new(Mutex::new(Queue {
                visibility_timeout,
                waiting: VecDeque::new(),
                in_flight: HashMap::new(),
                lapsed: Vec::new(),
            })),
            journal,
            datasets: Arc::default(),
            next_tag: Arc::default(),
        }
    }

    fn consumer(&self) -> Box<dyn Consumer> {
        Box::new(FakeConsumer {
            queue: self.queue.clone(),
            journal: self.journal.clone(),
        })
    }

    /// Enqueue `body` as a first delivery; returns its tag.
    fn push(&self, body: impl Into<Bytes>) -> DeliveryTag {
        self.push_at_attempt(body, 1)
    }

    /// Enqueue `body` as if it had been delivered `attempt - 1` times before.
    fn push_at_attempt(&self, body: impl Into<Bytes>, attempt: u32) -> DeliveryTag {
        let body = body.into();
        let tag = {
            let mut next = lock(&self.next_tag);
            *next += 1;
            DeliveryTag::Int(*next)
        };
        if let Ok(event) = crate::event::parse_event(&body, usize::MAX) {
            lock(&self.datasets).insert(tag.clone(), event.dataset_uuid);
        }
        lock(&self.queue).waiting.push_back((
            Instant::now(),
            Delivery {
                tag: tag.clone(),
                body,
                attempt,
                properties: None,
            },
        ));
        tag
    }

    /// Enqueue a valid event for `dataset`; returns its tag.
    fn push_event(&self, dataset: Uuid) -> DeliveryTag {
        self.push(event_json(dataset))
    }

    fn calls(&self) -> Vec<(Instant, Call)> {
        lock(&self.journal).clone()
    }

    fn settled(&self) -> bool {
        let queue = lock(&self.queue);
        queue.waiting.is_empty() && queue.in_flight.is_empty()
    }

    /// Checks that no lease ran out while the worker held the delivery (the broker would have
    /// redelivered it to another consumer, with a higher attempt).
    fn assert_leases_kept(&self) {
        let mut queue = lock(&self.queue);
        let now = Instant::now();
        let held: Vec<DeliveryTag> = queue.in_flight.keys().cloned().collect();
        for tag in &held {
            queue.check_lease(tag, "still held", now);
        }
        assert!(queue.lapsed.is_empty(), "leases lapsed: {:?}", queue.lapsed);
    }

    /// Every acked tag, in order, once per ack.
    fn acked(&self) -> Vec<DeliveryTag> {
        self.calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::Ack(tags) => Some(tags),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every dead letter, in order: (tag, attempt, body, reason).
    fn dead_letters(&self) -> Vec<(DeliveryTag, u32, Bytes, String)> {
        self.calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::DeadLetter(items) => Some(items),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every `retry_later` of `tag`: (when, delay).
    fn retries_of(&self, tag: &DeliveryTag) -> Vec<(Instant, Duration)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, c)| match c {
                Call::RetryLater(tags, delay) if tags.contains(tag) => Some((at, delay)),
                _ => None,
            })
            .collect()
    }

    /// The attempt number of every delivery of `tag` the worker received, in order.
    fn attempts_received(&self, tag: &DeliveryTag) -> Vec<u32> {
        self.calls()
            .into_iter()
            .filter_map(|(_, c)| match c {
                Call::Receive(got) => Some(got),
                _ => None,
            })
            .flatten()
            .filter(|(t, _)| t == tag)
            .map(|(_, attempt)| attempt)
            .collect()
    }

    /// Checks the first guarantee on the whole journal: each acked tag was acked once, and
    /// only after a successful commit whose batch held its event.
    fn assert_acks_follow_commits(&self) {
        let datasets = lock(&self.datasets).clone();
        let mut committed: HashSet<Uuid> = HashSet::new();
        let mut acked: HashSet<DeliveryTag> = HashSet::new();
        for (_, call) in self.calls() {
            match call {
                Call::Commit(batch, Answer::Stored) => committed.extend(batch),
                Call::Ack(tags) => {
                    for tag in tags {
                        let dataset = datasets
                            .get(&tag)
                            .unwrap_or_else(|| panic!("acked {tag:?}, which holds no valid event"));
                        assert!(
                            committed.contains(dataset),
                            "acked {tag:?} before any commit holding its event"
                        );
                        assert!(acked.insert(tag.clone()), "acked {tag:?} twice");
                    }
                }
                _ => {}
            }
        }
    }
}

struct FakeConsumer {
    queue: Arc<Mutex<Queue>>,
    journal: Journal,
}

impl FakeConsumer {
    /// Take the in-flight delivery of `tag`; settling a delivery that is not in flight is a
    /// worker bug (acked or given back twice).
    fn settle(&self, tag: &DeliveryTag, what: &'static str) -> Delivery {
        let mut queue = lock(&self.queue);
        queue.check_lease(tag, what, Instant::now());
        queue
            .in_flight
            .remove(tag)
            .unwrap_or_else(|| panic!("{what} of {tag:?}, which is not in flight"))
            .0
    }
}

#[async_trait]
impl Consumer for FakeConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let deadline = Instant::now() + wait;
        loop {
            let now = Instant::now();
            let next_visible = {
                let mut queue = lock(&self.queue);
                let mut taken = Vec::new();
                let mut rest = VecDeque::new();
                while let Some((visible, delivery)) = queue.waiting.pop_front() {
                    if visible <= now && taken.len() < max {
                        taken.push(delivery);
                    } else {
                        rest.push_back((visible, delivery));
                    }
                }
                queue.waiting = rest;
                if !taken.is_empty() {
                    let until = now + queue.visibility_timeout;
                    for d in &taken {
                        queue.in_flight.insert(d.tag.clone(), (d.clone(), until));
                    }
                    drop(queue);
                    record(
                        &self.journal,
                        Call::Receive(taken.iter().map(|d| (d.tag.clone(), d.attempt)).collect()),
                    );
                    return Ok(taken);
                }
                queue.waiting.iter().map(|(v, _)| *v).min()
            };
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_visible.map_or(deadline, |v| v.min(deadline));
            tokio::time::sleep_until(until).await;
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        for tag in tags {
            self.settle(tag, "ack");
        }
        record(&self.journal, Call::Ack(tags.to_vec()));
        Ok(())
    }

    async fn extend(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        {
            let mut queue = lock(&self.queue);
            let now = Instant::now();
            let until = now + queue.visibility_timeout;
            for tag in tags {
                queue.check_lease(tag, "extend", now);
                let Some((_, lease)) = queue.in_flight.get_mut(tag) else {
                    panic!("extend of {tag:?}, not in flight");
                };
                *lease = until;
            }
        }
        record(&self.journal, Call::Extend(tags.to_vec()));
        Ok(())
    }

    async fn retry_later(
        &mut self,
        tags: &[DeliveryTag],
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let visible = Instant::now() + delay;
        for tag in tags {
            let mut delivery = self.settle(tag, "retry_later");
            delivery.attempt += 1;
            lock(&self.queue).waiting.push_back((visible, delivery));
        }
        record(&self.journal, Call::RetryLater(tags.to_vec(), delay));
        Ok(())
    }

    async fn dead_letter(&mut self, items: &[(Delivery, String)]) -> Result<(), BrokerError> {
        for (delivery, _) in items {
            self.settle(&delivery.tag, "dead_letter");
        }
        record(
            &self.journal,
            Call::DeadLetter(
                items
                    .iter()
                    .map(|(d, reason)| (d.tag.clone(), d.attempt, d.body.clone(), reason.clone()))
                    .collect(),
            ),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The fake store.

/// A scripted answer for the next commit attempt.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `StoreError::Unavailable` (an outage).
    Unavailable,
    /// `StoreError::Schema` (an operator must act).
    Fatal,
    /// The standing rules (outage window, refused datasets), as with no script.
    Rules,
}

#[derive(Default)]
struct StoreState {
    /// Answers for the next commit attempts, before the standing rules below.
    script: VecDeque<Step>,
    /// Every commit before this instant finds the store down.
    down_until: Option<Instant>,
    /// How long every commit attempt takes (a slow or distant database).
    latency: Duration,
    /// Events of these datasets are refused (`StoreError::Query`), and so is any batch holding
    /// one of them.
    refused: HashSet<Uuid>,
    stored: HashSet<EventId>,
}

/// The message of the fake store's permanent refusal.
const REFUSAL: &str =
    "new row for relation \"events\" violates check constraint \"events_payload\"";

struct FakeStore {
    state: Mutex<StoreState>,
    journal: Journal,
}

impl FakeStore {
    /// The next `n` commit attempts find the store unavailable.
    fn fail_unavailable(&self, n: usize) {
        let mut state = lock(&self.state);
        state
            .script
            .extend(std::iter::repeat_n(Step::Unavailable, n));
    }

    fn then(&self, step: Step) {
        lock(&self.state).script.push_back(step);
    }

    fn down_until(&self, until: Instant) {
        lock(&self.state).down_until = Some(until);
    }

    fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    fn refuse(&self, dataset: Uuid) {
        lock(&self.state).refused.insert(dataset);
    }
}

#[async_trait]
impl Store for FakeStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        Ok(1)
    }

    async fn commit_batch(&self, batch: &[LineageEvent]) -> Result<CommitReport, StoreError> {
        let datasets: Vec<Uuid> = batch.iter().map(|e| e.dataset_uuid).collect();
        let latency = lock(&self.state).latency;
        tokio::time::sleep(latency).await;
        let result = {
            let mut state = lock(&self.state);
            match state.script.pop_front() {
                Some(Step::Unavailable) => {
                    Err(StoreError::Unavailable("connection refused".into()))
                }
                Some(Step::Fatal) => Err(StoreError::Schema(
                    "schema version 9 is newer than this geoprov".into(),
                )),
                Some(Step::Rules) | None
                    if state.down_until.is_some_and(|t| Instant::now() < t) =>
                {
                    Err(StoreError::Unavailable("connection refused".into()))
                }
                Some(Step::Rules) | None if datasets.iter().any(|d| state.refused.contains(d)) => {
                    Err(StoreError::Query(REFUSAL.into()))
                }
                Some(Step::Rules) | None => {
                    let mut report = CommitReport::default();
                    for event in batch {
                        if state.stored.insert(event.event_id) {
                            report.inserted += 1;
                        } else {
                            report.duplicates += 1;
                        }
                    }
                    report.log_size = state.stored.len() as u64;
                    Ok(report)
                }
            }
        };
        let answer = match &result {
            Ok(_) => Answer::Stored,
            Err(e) if e.is_transient() => Answer::Unavailable,
            Err(e) if e.is_fatal() => Answer::Fatal,
            Err(_) => Answer::Refused,
        };
        record(&self.journal, Call::Commit(datasets, answer));
        result
    }

    async fn get_event(&self, _id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        Err(not_used())
    }

    async fn scan(&self, _from: u64, _limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        Err(not_used())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.state).stored.len() as u64)
    }

    async fn neighbours(
        &self,
        _datasets: &[Uuid],
        _direction: Direction,
        _limit: usize,
    ) -> Result<Vec<LineageEdge>, StoreError> {
        Err(not_used())
    }

    async fn edges(&self, _cursor: u64, _limit: usize) -> Result<EdgePage, StoreError> {
        Err(not_used())
    }

    async fn mentions_dataset(&self, _dataset: uuid::Uuid) -> Result<bool, StoreError> {
        Err(not_used())
    }

    async fn search_events(
        &self,
        _query: &crate::store::EventQuery,
    ) -> Result<crate::store::EventPage, StoreError> {
        Err(not_used())
    }

    async fn event_ids_with_prefix(
        &self,
        _prefix: &str,
        _limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Err(not_used())
    }
}

fn not_used() -> StoreError {
    StoreError::Query("not used by the worker".into())
}

// ---------------------------------------------------------------------------------------------
// Harness.

/// Slack for the paused clock, whose timer rounds deadlines up to the millisecond.
const TICK: Duration = Duration::from_millis(1);

struct Setup {
    broker: FakeBroker,
    store: Arc<FakeStore>,
    /// Kept alive: dropping the trigger counts as a shutdown request.
    trigger: ShutdownTrigger,
    worker: Worker,
}

fn setup(options: WorkerOptions) -> Setup {
    setup_limited(options, None)
}

/// A worker on fresh fakes, with `--rate-limit per_second/s` when given.
fn setup_limited(options: WorkerOptions, per_second: Option<f64>) -> Setup {
    let journal = Journal::default();
    let broker = FakeBroker::new(journal.clone(), options.visibility_timeout);
    let store = Arc::new(FakeStore {
        state: Mutex::default(),
        journal,
    });
    let (trigger, shutdown) = shutdown::channel();
    let mut worker = Worker::new(
        broker.consumer(),
        store.clone(),
        Arc::new(NativeDecoder::default()),
        options,
        shutdown,
    );
    if let Some(per_second) = per_second {
        worker = worker.with_rate_limiter(Arc::new(RateLimiter::new(Rate { per_second })));
    }
    Setup {
        broker,
        store,
        trigger,
        worker,
    }
}

/// A dataset id that reads like a random v4 UUID.
fn dataset(n: u128) -> Uuid {
    Uuid::from_u128(0x6f1c_2a00_0000_4000_8000_0000_0000_0000 | n)
}

fn event_json(dataset: Uuid) -> String {
    format!(r#"{{"dataset_uuid": "{dataset}", "operation": "reproject", "processor_id": "p"}}"#)
}

async fn step(worker: &mut Worker) -> BatchOutcome {
    match worker.try_process_batch().await {
        Ok(outcome) => outcome,
        Err(error) => panic!("the iteration failed: {error}"),
    }
}

/// Every commit attempt: when, the datasets of its batch, the answer.
fn commits(calls: &[(Instant, Call)]) -> Vec<(Instant, Vec<Uuid>, Answer)> {
    calls
        .iter()
        .filter_map(|(at, c)| match c {
            Call::Commit(batch, answer) => Some((*at, batch.clone(), *answer)),
            _ => None,
        })
        .collect()
}

/// The bounds of `Backoff::delay(n)`: half the ceiling fixed, the other half jitter.
fn delay_bounds(backoff: &Backoff, n: u32) -> (Duration, Duration) {
    let ceiling = backoff
        .base
        .saturating_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
        .min(backoff.cap);
    (ceiling / 2, ceiling)
}

// ---------------------------------------------------------------------------------------------
// 1. Backoff during an outage.

#[tokio::test(start_paused = true)]
async fn outage_backs_off_exponentially_with_jitter_up_to_the_cap_then_commits_and_acks_once() {
    const FAILURES: usize = 12;
    let options = WorkerOptions::default();
    let backoff = options.backoff;
    let mut s = setup(options);
    s.store.fail_unavailable(FAILURES);
    let tags: Vec<DeliveryTag> = (0..3).map(|n| s.broker.push_event(dataset(n))).collect();

    let outcome = step(&mut s.worker).await;
    assert_eq!(
        outcome,
        BatchOutcome {
            received: 3,
            persisted: 3,
            ..BatchOutcome::default()
        }
    );

    let calls = s.broker.calls();
    let commits = commits(&calls);
    assert_eq!(commits.len(), FAILURES + 1, "{commits:?}");
    for (n, (_, batch, answer)) in commits.iter().enumerate() {
        assert_eq!(batch.len(), 3, "attempt {n} committed the whole batch");
        let expected = if n < FAILURES {
            Answer::Unavailable
        } else {
            Answer::Stored
        };
        assert_eq!(*answer, expected, "attempt {n}");
    }
    let mut jittered = 0;
    for (n, pair) in commits.windows(2).enumerate() {
        let waited = pair[1].0 - pair[0].0;
        let (low, high) = delay_bounds(&backoff, u32::try_from(n).unwrap());
        assert!(
            waited >= low && waited <= high + TICK,
            "retry {n} waited {waited:?}, not within {low:?}..={high:?}"
        );
        if waited > low + TICK {
            jittered += 1;
        }
    }
    // The ceiling doubles from 100ms and is capped at 10s from the 8th retry on.
    assert_eq!(delay_bounds(&backoff, 7).1, backoff.cap);
    assert!(
        jittered >= FAILURES / 2,
        "only {jittered} of {FAILURES} delays had any jitter"
    );

    // Acked once, all three together, right after the commit that stored them.
    let last_commit = calls
        .iter()
        .rposition(|(_, c)| matches!(c, Call::Commit(..)))
        .unwrap();
    assert!(
        matches!(&calls[last_commit + 1..], [(_, Call::Ack(acked))] if *acked == tags),
        "{:?}",
        &calls[last_commit..]
    );
    assert_eq!(s.broker.acked(), tags);
    assert!(s.broker.dead_letters().is_empty());
    assert!(s.broker.settled());
    s.broker.assert_acks_follow_commits();
    s.broker.assert_leases_kept();
}

// ---------------------------------------------------------------------------------------------
// 2. Holding the batch through a long outage.

#[tokio::test(start_paused = true)]
async fn store_outage_holds_the_batch_extending_leases_and_burns_no_retry_budget() {
    let options = WorkerOptions {
        max_retries: 5,
        visibility_timeout: Duration::from_secs(30),
        ..WorkerOptions::default()
    };
    let vt = options.visibility_timeout;
    let mut s = setup(options);
    let start = Instant::now();
    let outage = Duration::from_secs(10 * 60);
    s.store.down_until(start + outage);
    let good = [
        s.broker.push_event(dataset(1)),
        s.broker.push_event(dataset(2)),
    ];
    // Refused for good once the store is back: it must still get its full retry budget.
    s.store.refuse(dataset(3));
    let bad = s.broker.push_event(dataset(3));
    let all = vec![good[0].clone(), good[1].clone(), bad.clone()];

    let first = step(&mut s.worker).await;
    assert!(
        Instant::now() >= start + outage,
        "the iteration returned during the outage"
    );
    assert_eq!(
        first,
        BatchOutcome {
            received: 3,
            persisted: 2,
            retried: 1,
            ..BatchOutcome::default()
        }
    );

    let calls = s.broker.calls();
    let (received_at, Call::Receive(_)) = &calls[0] else {
        panic!("{:?}", calls[0]);
    };
    let back = calls
        .iter()
        .position(|(_, c)| matches!(c, Call::Commit(_, a) if *a != Answer::Unavailable))
        .unwrap();
    assert!(calls[back].0 >= start + outage);
    // While the store is down: failed commits of the whole batch and lease extensions only,
    // one every third of the visibility timeout, counted from when the batch was received.
    let every = vt / 3;
    let mut lease = *received_at;
    let (mut failed, mut extends) = (0, 0);
    for (at, call) in &calls[1..back] {
        match call {
            Call::Commit(batch, Answer::Unavailable) => {
                assert_eq!(batch.len(), 3);
                failed += 1;
            }
            Call::Extend(tags) => {
                assert_eq!(*tags, all, "every held delivery is extended");
                assert!(
                    *at - lease <= every + TICK,
                    "extended {:?} after the last",
                    *at - lease
                );
                lease = *at;
                extends += 1;
            }
            other => panic!("{other:?} while the store was down"),
        }
    }
    assert!(
        calls[back].0 - lease <= every + TICK,
        "lease renewed too late"
    );
    assert!(failed > 50, "{failed} attempts in 10 minutes");
    assert!(
        extends >= 600 / 10 - 1,
        "{extends} extensions in 10 minutes"
    );

    // The store is back: the good events are stored and acked, the refused one is retried
    // later, and only after max_retries more deliveries is it dead-lettered.
    assert_eq!(s.broker.acked(), good);
    for _ in 0..50 {
        if !s.broker.dead_letters().is_empty() {
            break;
        }
        step(&mut s.worker).await;
    }
    assert_eq!(s.broker.attempts_received(&bad), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(s.broker.retries_of(&bad).len(), 5);
    let dead = s.broker.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!((&dead[0].0, dead[0].1), (&bad, 6));
    assert_eq!(s.broker.acked(), good);
    assert!(s.broker.settled());
    s.broker.assert_acks_follow_commits();
    s.broker.assert_leases_kept();
}

// ---------------------------------------------------------------------------------------------
// 3. max_retries for an event the store keeps refusing.

/// `[good, refused, good]` in one batch: the good ones are stored and acked in the first
/// iteration; the refused one is given back `max_retries` times and dead-lettered on delivery
/// `max_retries + 1`.
async fn refused_event_scenario(max_retries: u32) {
    let options = WorkerOptions {
        max_retries,
        ..WorkerOptions::default()
    };
    let backoff = options.backoff;
    let mut s = setup(options);
    let good_a = s.broker.push_event(dataset(10));
    s.store.refuse(dataset(11));
    let bad_body = event_json(dataset(11));
    let bad = s.broker.push(bad_body.clone());
    let good_b = s.broker.push_event(dataset(12));

    let first = step(&mut s.worker).await;
    assert_eq!(first.received, 3, "max_retries {max_retries}");
    assert_eq!(first.persisted, 2, "max_retries {max_retries}");
    assert_eq!(
        (first.retried, first.dead_lettered),
        if max_retries == 0 { (0, 1) } else { (1, 0) },
        "max_retries {max_retries}"
    );
    // Bad input never blocks good input: both good events are acked in the first iteration.
    assert_eq!(s.broker.acked(), vec![good_a.clone(), good_b.clone()]);

    for _ in 0..100 {
        if !s.broker.dead_letters().is_empty() {
            break;
        }
        step(&mut s.worker).await;
    }

    let last = max_retries + 1;
    assert_eq!(
        s.broker.attempts_received(&bad),
        (1..=last).collect::<Vec<_>>(),
        "max_retries {max_retries}"
    );
    let retries = s.broker.retries_of(&bad);
    assert_eq!(retries.len(), usize::try_from(max_retries).unwrap());
    let receipts: Vec<Instant> = s
        .broker
        .calls()
        .into_iter()
        .filter_map(|(at, c)| match c {
            Call::Receive(got) if got.iter().any(|(t, _)| *t == bad) => Some(at),
            _ => None,
        })
        .collect();
    for (n, (at, delay)) in retries.iter().enumerate() {
        // Given back after delivery `attempt`, with the backoff delay of that attempt.
        let attempt = u32::try_from(n + 1).unwrap();
        let (low, high) = delay_bounds(&backoff, attempt);
        assert!(
            *delay >= low && *delay <= high,
            "retry {attempt}: {delay:?}"
        );
        assert!(
            receipts[n + 1] >= *at + *delay,
            "redelivered before its delay"
        );
    }

    let dead = s.broker.dead_letters();
    assert_eq!(dead.len(), 1, "max_retries {max_retries}: {dead:?}");
    let (tag, attempt, body, reason) = &dead[0];
    assert_eq!((tag, *attempt), (&bad, last));
    assert_eq!(
        body,
        bad_body.as_bytes(),
        "dead-lettered with its original bytes"
    );
    assert_eq!(
        *reason,
        format!("store refused it {last} times: store query failed: {REFUSAL}")
    );
    assert_eq!(s.broker.acked(), vec![good_a, good_b]);
    assert!(s.broker.settled());
    s.broker.assert_acks_follow_commits();
    s.broker.assert_leases_kept();
}

#[tokio::test(start_paused = true)]
async fn refused_event_is_retried_then_dead_lettered_after_max_retries_and_the_rest_is_stored() {
    for max_retries in [0, 1, 3, 5] {
        refused_event_scenario(max_retries).await;
    }
}

#[tokio::test(start_paused = true)]
async fn delivery_past_the_retry_budget_is_dead_lettered_without_a_commit() {
    let options = WorkerOptions::default();
    assert_eq!(options.max_retries, 5);
    let mut s = setup(options);
    // Redelivered after crashes: the last allowed delivery is still stored, the next is not.
    let last_chance = s.broker.push_at_attempt(event_json(dataset(20)), 6);
    let over = s.broker.push_at_attempt(event_json(dataset(21)), 7);

    let outcome = step(&mut s.worker).await;
    assert_eq!((outcome.persisted, outcome.dead_lettered), (1, 1));
    assert_eq!(s.broker.acked(), vec![last_chance]);
    let dead = s.broker.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!((&dead[0].0, dead[0].1), (&over, 7));
    assert_eq!(
        dead[0].3,
        "delivered 7 times without being stored (max_retries 5)"
    );
    let commits = commits(&s.broker.calls());
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].1, vec![dataset(20)]);
    s.broker.assert_acks_follow_commits();
    s.broker.assert_leases_kept();
}

// ---------------------------------------------------------------------------------------------
// 4. The rate limit.

/// Runs a whole worker loop over `events` events and returns when and how many each
/// successful commit stored, and the paused time until the last ack.
async fn run_over(
    events: u32,
    batch_size: usize,
    per_second: Option<f64>,
) -> (Vec<(Instant, usize)>, Duration) {
    let options = WorkerOptions {
        batch_size,
        ..WorkerOptions::default()
    };
    let Setup {
        broker,
        store: _store,
        trigger,
        worker,
    } = setup_limited(options, per_second);
    for n in 0..events {
        broker.push_event(dataset(1000 + u128::from(n)));
    }
    let start = Instant::now();
    let running = tokio::spawn(worker.run());
    while !broker.settled() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    trigger.trigger();
    running.await.expect("the worker loop panicked");
    assert_eq!(broker.acked().len(), usize::try_from(events).unwrap());
    broker.assert_acks_follow_commits();
    broker.assert_leases_kept();
    let calls = broker.calls();
    let last_ack = calls
        .iter()
        .rev()
        .find_map(|(at, c)| matches!(c, Call::Ack(_)).then_some(*at))
        .unwrap();
    let took = last_ack - start;
    let stored = commits(&calls)
        .into_iter()
        .filter(|(_, _, answer)| *answer == Answer::Stored)
        .map(|(at, batch, _)| (at, batch.len()))
        .collect();
    (stored, took)
}

#[tokio::test(start_paused = true)]
async fn rate_limit_caps_persisted_events_per_second() {
    // The batch size (5000 by default) is capped at the limiter's burst.
    let (stored, took) = run_over(1000, WorkerOptions::default().batch_size, Some(100.0)).await;
    // The bucket starts full (one second's worth): 100 at once, then 900 at 100/s.
    assert!(took >= Duration::from_secs(9), "{took:?}");
    assert!(took <= Duration::from_secs(10), "{took:?}");
    assert!(
        stored.iter().all(|(_, n)| *n <= 100),
        "a batch over the burst"
    );
    // A token bucket's promise: any stretch of w seconds holds at most burst + rate * w.
    for i in 0..stored.len() {
        let mut sum = 0u32;
        for (at, n) in &stored[i..] {
            sum += u32::try_from(*n).unwrap();
            let w = (*at - stored[i].0).as_secs_f64();
            assert!(
                f64::from(sum) <= 100.0 + 100.0 * w + 1e-6,
                "{sum} events within {w}s"
            );
        }
    }
    // Here, moreover, no second-long window holds more than the limit: batches are capped at the
    // burst and taken a full second apart.
    for (i, (from, _)) in stored.iter().enumerate() {
        let in_window: usize = stored[i..]
            .iter()
            .take_while(|(at, _)| *at < *from + Duration::from_secs(1))
            .map(|(_, n)| n)
            .sum();
        assert!(
            in_window <= 100,
            "{in_window} events in the second from {from:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_rate_limit_nothing_waits() {
    // Batches of 100 fill at once, so not even the linger is waited.
    let (stored, took) = run_over(1000, 100, None).await;
    assert_eq!(took, Duration::ZERO);
    assert_eq!(stored.len(), 10);
    assert!(stored.iter().all(|(_, n)| *n == 100));
}

// ---------------------------------------------------------------------------------------------
// 5. Invalid input.

#[tokio::test(start_paused = true)]
async fn invalid_input_is_dead_lettered_at_once_with_its_bytes_while_valid_input_commits() {
    let mut s = setup(WorkerOptions::default());
    // A short outage: invalid input must not wait for the store.
    s.store.fail_unavailable(2);
    let valid_a = s.broker.push_event(dataset(30));
    let invalid: Vec<(Bytes, &str)> = vec![
        (Bytes::from_static(b"{\"dataset_uuid\": "), "not valid JSON"),
        (Bytes::from_static(b"\xff\xfe\x00garbage"), "not valid JSON"),
        (Bytes::from_static(b"[1, 2, 3]"), "expected an object"),
        (
            Bytes::from_static(
                br#"{"dataset_uuid": "tile-42", "operation": "reproject", "processor_id": "p"}"#,
            ),
            "dataset_uuid: 'tile-42' is not a UUID",
        ),
        (
            Bytes::from(format!(
                r#"{{"dataset_uuid": "{}", "processor_id": "p"}}"#,
                dataset(31)
            )),
            "operation: missing",
        ),
    ];
    let invalid_tags: Vec<DeliveryTag> = invalid
        .iter()
        .map(|(body, _)| s.broker.push(body.clone()))
        .collect();
    let valid_b = s.broker.push_event(dataset(32));

    let outcome = step(&mut s.worker).await;
    assert_eq!(
        outcome,
        BatchOutcome {
            received: 7,
            persisted: 2,
            dead_lettered: 5,
            ..BatchOutcome::default()
        }
    );

    let calls = s.broker.calls();
    let dead_at = calls
        .iter()
        .position(|(_, c)| matches!(c, Call::DeadLetter(_)))
        .unwrap();
    let first_commit = calls
        .iter()
        .position(|(_, c)| matches!(c, Call::Commit(..)))
        .unwrap();
    assert!(
        dead_at < first_commit,
        "dead-lettered only after trying the store"
    );
    let Call::DeadLetter(items) = &calls[dead_at].1 else {
        unreachable!()
    };
    assert_eq!(items.len(), invalid.len(), "all in one call");
    for ((tag, attempt, body, reason), (expected_tag, (sent, why))) in
        items.iter().zip(invalid_tags.iter().zip(&invalid))
    {
        assert_eq!(tag, expected_tag);
        assert_eq!(*attempt, 1);
        assert_eq!(body, sent, "the original bytes");
        assert!(reason.contains(why), "{reason:?} does not say {why:?}");
    }
    assert_eq!(
        s.broker.dead_letters().len(),
        invalid.len(),
        "dead-lettered once"
    );
    for (_, batch, _) in commits(&calls) {
        assert_eq!(
            batch,
            vec![dataset(30), dataset(32)],
            "only valid events reach the store"
        );
    }
    assert_eq!(s.broker.acked(), vec![valid_a, valid_b]);
    assert!(s.broker.settled());
    s.broker.assert_acks_follow_commits();
    s.broker.assert_leases_kept();
}

// ---------------------------------------------------------------------------------------------
// 6. Ack only after commit.

#[tokio::test(start_paused = true)]
async fn shutdown_during_an_outage_gives_the_batch_back_without_acking() {
    let mut s = setup(WorkerOptions::default());
    s.store
        .down_until(Instant::now() + Duration::from_secs(24 * 3600));
    let tags: Vec<DeliveryTag> = (40..43).map(|n| s.broker.push_event(dataset(n))).collect();

    let trigger = &s.trigger;
    let (outcome, ()) = tokio::join!(step(&mut s.worker), async {
        tokio::time::sleep(Duration::from_secs(95)).await;
        trigger.trigger();
    });
    assert_eq!(
        outcome,
        BatchOutcome {
            received: 3,
            retried: 3,
            stopped: true,
            ..BatchOutcome::default()
        }
    );
    let calls = s.broker.calls();
    assert!(commits(&calls)
        .iter()
        .all(|(_, _, a)| *a == Answer::Unavailable));
    assert!(s.broker.acked().is_empty(), "acked without a commit");
    assert!(s.broker.dead_letters().is_empty());
    // Given back for immediate redelivery, once, after the last failed attempt.
    let retried: Vec<&Call> = calls
        .iter()
        .map(|(_, c)| c)
        .filter(|c| matches!(c, Call::RetryLater(..)))
        .collect();
    assert!(
        matches!(retried[..], [Call::RetryLater(t, d)] if *t == tags && d.is_zero()),
        "{retried:?}"
    );
    assert!(matches!(calls.last(), Some((_, Call::RetryLater(..)))));
}

#[tokio::test(start_paused = true)]
async fn fatal_store_error_gives_the_batch_back_unacked_and_stops_the_loop() {
    let mut s = setup(WorkerOptions::default());
    s.store.then(Step::Fatal);
    let tags: Vec<DeliveryTag> = (50..52).map(|n| s.broker.push_event(dataset(n))).collect();

    match s.worker.try_process_batch().await {
        Err(WorkerError::Store(error)) => assert!(error.is_fatal(), "{error}"),
        other => panic!("{other:?}"),
    }
    let calls = s.broker.calls();
    assert!(
        matches!(
            &calls[1..],
            [(_, Call::Commit(_, Answer::Fatal)), (_, Call::RetryLater(t, d))] if *t == tags && d.is_zero()
        ),
        "{calls:?}"
    );

    // The whole loop stops by itself on it, without acking or dead-lettering anything.
    s.store.then(Step::Fatal);
    let Setup {
        broker,
        trigger: _trigger,
        worker,
        ..
    } = s;
    tokio::time::timeout(Duration::from_secs(3600), worker.run())
        .await
        .expect("the loop kept running after a fatal store error");
    assert_eq!(broker.attempts_received(&tags[0]), vec![1, 2]);
    assert!(broker.acked().is_empty());
    assert!(broker.dead_letters().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Regressions.

/// The store refuses a batch for one bad event, then goes down while the worker commits the
/// batch event by event. The outage must be held through like any other: before the fix each
/// good event's `Unavailable` counted as a refusal, so it was given back (burning a retry) or,
/// on its last allowed delivery, dead-lettered although nothing was wrong with it.
#[tokio::test(start_paused = true)]
async fn regression_outage_during_the_one_by_one_pass_burns_retries_and_dead_letters_good_events() {
    let options = WorkerOptions::default();
    let last = options.max_retries + 1;
    let mut s = setup(options);
    s.store.refuse(dataset(61));
    // The batch is refused (it holds 61); then the first single commit finds the store down.
    s.store.then(Step::Rules);
    s.store.fail_unavailable(4);
    let last_chance = s.broker.push_at_attempt(event_json(dataset(60)), last);
    let bad = s.broker.push(event_json(dataset(61)));
    let fresh = s.broker.push(event_json(dataset(62)));

    let outcome = step(&mut s.worker).await;
    assert_eq!(
        outcome,
        BatchOutcome {
            received: 3,
            persisted: 2,
            retried: 1,
            ..BatchOutcome::default()
        }
    );
    assert!(
        s.broker.dead_letters().is_empty(),
        "{:?}",
        s.broker.dead_letters()
    );
    assert!(s.broker.retries_of(&last_chance).is_empty());
    assert!(
        s.broker.retries_of(&fresh).is_empty(),
        "a retry burned on an outage"
    );
    assert_eq!(s.broker.retries_of(&bad).len(), 1);
    assert_eq!(s.broker.acked(), vec![last_chance, fresh]);
    s.broker.assert_acks_follow_commits();
    s.broker.assert_leases_kept();
}

/// A fatal store error (schema, configuration) while committing event by event must stop the
/// worker with the rest of the batch given back, as it does for a whole batch. Before the fix
/// it counted as a refusal of that one event: given back with a retry burned, or dead-lettered
/// on its last allowed delivery, and the worker went on.
#[tokio::test(start_paused = true)]
async fn regression_fatal_error_during_the_one_by_one_pass_dead_letters_instead_of_stopping() {
    let options = WorkerOptions::default();
    let last = options.max_retries + 1;
    let mut s = setup(options);
    s.store.refuse(dataset(71));
    s.store.then(Step::Rules);
    s.store.then(Step::Fatal);
    let last_chance = s.broker.push_at_attempt(event_json(dataset(70)), last);
    let bad = s.broker.push(event_json(dataset(71)));

    match s.worker.try_process_batch().await {
        Err(WorkerError::Store(error)) => assert!(error.is_fatal(), "{error}"),
        other => panic!("the worker went on after a fatal store error: {other:?}"),
    }
    assert!(
        s.broker.dead_letters().is_empty(),
        "{:?}",
        s.broker.dead_letters()
    );
    assert!(s.broker.acked().is_empty());
    let given_back: Vec<Call> = s
        .broker
        .calls()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| matches!(c, Call::RetryLater(..)))
        .collect();
    assert!(
        matches!(&given_back[..], [Call::RetryLater(t, d)] if *t == [last_chance.clone(), bad.clone()] && d.is_zero()),
        "{given_back:?}"
    );
}

/// With a visibility timeout below about 1.5 times the backoff cap (10s), the leases lapsed
/// during an outage: the lease was renewed only between commit attempts, so once the delay
/// between attempts outgrew the timeout, every held message was redelivered to other consumers
/// while this worker still held it. Here (5s timeout) every capped delay of 5..10s outlived it.
#[tokio::test(start_paused = true)]
async fn regression_leases_lapse_when_the_backoff_delay_outgrows_a_short_visibility_timeout() {
    let options = WorkerOptions {
        visibility_timeout: Duration::from_secs(5),
        ..WorkerOptions::default()
    };
    let mut s = setup(options);
    s.store
        .down_until(Instant::now() + Duration::from_secs(120));
    let tags: Vec<DeliveryTag> = (80..83).map(|n| s.broker.push_event(dataset(n))).collect();

    let outcome = step(&mut s.worker).await;
    assert_eq!(outcome.persisted, 3);
    assert_eq!(s.broker.acked(), tags);
    s.broker.assert_leases_kept();
    s.broker.assert_acks_follow_commits();
}

/// Committing a refused batch event by event can take longer than the visibility timeout (a
/// large batch, a distant database); the leases of the events still waiting lapsed meanwhile,
/// since they were renewed only while the store was down. Here: 40 events at 1s per commit
/// against a 30s timeout.
#[tokio::test(start_paused = true)]
async fn regression_leases_lapse_during_a_long_one_by_one_pass() {
    let mut s = setup(WorkerOptions::default());
    s.store.set_latency(Duration::from_secs(1));
    s.store.refuse(dataset(90));
    let bad = s.broker.push_event(dataset(90));
    let good: Vec<DeliveryTag> = (91..130).map(|n| s.broker.push_event(dataset(n))).collect();

    let outcome = step(&mut s.worker).await;
    assert_eq!((outcome.persisted, outcome.retried), (39, 1));
    assert_eq!(s.broker.retries_of(&bad).len(), 1);
    assert_eq!(s.broker.acked(), good);
    s.broker.assert_leases_kept();
    s.broker.assert_acks_follow_commits();
}

/// The longest any delivery waited between its receive and its ack.
fn longest_hold(calls: &[(Instant, Call)]) -> Duration {
    let mut received: HashMap<&DeliveryTag, Instant> = HashMap::new();
    let mut longest = Duration::ZERO;
    for (at, call) in calls {
        match call {
            Call::Receive(got) => received.extend(got.iter().map(|(tag, _)| (tag, *at))),
            Call::Ack(tags) => {
                for tag in tags {
                    longest = longest.max(*at - received[tag]);
                }
            }
            _ => {}
        }
    }
    longest
}

/// Workers sharing one limiter: a worker that waited for tokens could lose them, on every
/// wake-up, to the worker that had just committed and came back for more, and so hold its
/// batch (and lapse its leases) for as long as the others kept busy. Here two workers shared
/// `--rate-limit 100/s` over 4,000 events: one held its first batch for about 39s.
#[tokio::test(start_paused = true)]
async fn regression_shared_rate_limiter_starves_a_worker() {
    const WORKERS: u32 = 2;
    let options = WorkerOptions::default();
    let Setup {
        broker,
        store,
        trigger,
        worker,
    } = setup_limited(options.clone(), None);
    let limiter = Arc::new(RateLimiter::new(Rate { per_second: 100.0 }));
    for n in 0..4000 {
        broker.push_event(dataset(2000 + n));
    }
    let mut running = vec![tokio::spawn(
        worker.with_rate_limiter(limiter.clone()).run(),
    )];
    for _ in 1..WORKERS {
        let shutdown = trigger.subscribe();
        let another = Worker::new(
            broker.consumer(),
            store.clone(),
            Arc::new(NativeDecoder::default()),
            options.clone(),
            shutdown,
        )
        .with_rate_limiter(limiter.clone());
        running.push(tokio::spawn(another.run()));
    }
    while !broker.settled() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trigger.trigger();
    for task in running {
        task.await.expect("a worker loop panicked");
    }

    // Each worker takes a burst (100 events, one second's worth) at a time: a batch waits for
    // the batches reserved before it, one second each, and no longer.
    let longest = longest_hold(&broker.calls());
    assert!(
        longest <= Duration::from_secs(WORKERS.into()) + TICK,
        "a batch was held {longest:?}"
    );
    assert_eq!(broker.acked().len(), 4000);
    broker.assert_leases_kept();
    broker.assert_acks_follow_commits();
}

/// With a slow limit (`--rate-limit 100/h`: one event every 36s, over the 30s visibility
/// timeout) the wait for the limiter outlived the leases of the batch in hand, which nothing
/// renewed then: every message but the first was redelivered while still held.
#[tokio::test(start_paused = true)]
async fn regression_leases_lapse_while_waiting_for_a_slow_rate_limit() {
    let mut s = setup_limited(WorkerOptions::default(), Some(100.0 / 3600.0));
    let tags: Vec<DeliveryTag> = (140..143)
        .map(|n| s.broker.push_event(dataset(n)))
        .collect();
    let start = Instant::now();
    while s.broker.acked().len() < tags.len() {
        step(&mut s.worker).await;
    }
    assert!(
        start.elapsed() >= Duration::from_secs(72),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.broker.acked(), tags);
    s.broker.assert_leases_kept();
    s.broker.assert_acks_follow_commits();
}

//! The conformance suite of the `Broker` trait (and the `Producer`, `Consumer` and
//! `DeadLetterQueue` it hands out): one body per promise of `geoprov::broker`'s contract,
//! stamped onto every backend by [`broker_suite!`].
//!
//! A backend joins with a factory, `async fn() -> Option<Backend>` (`None` after printing why it
//! is skipped), that gives every test a broker on a queue of its own with a cleanup guard, and
//! with the [`Traits`] that say honestly what the backend can and cannot do (AMQP has no
//! visibility timeout; kombu's lists do not count deliveries in flight; ...). The suite then
//! checks what the contract promises in the way the backend keeps it.
//!
//! Not for: a backend's own edge cases (kombu and Python Celery compatibility, restarts, TLS,
//! crash tests, file locking): those stay in that backend's test file.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geoprov::broker::{
    self, Broker, BrokerError, BrokerOptions, Consumer, ConsumerOptions, Delivery, DeliveryTag,
};
use geoprov::url::BrokerUrl;
use geoprov::worker::{CeleryDecoder, Decoded, Decoder as _};

use super::support::valid_events;

pub mod celery;

/// Stamps the whole suite onto one backend: `broker_suite!(module, factory)` makes `module`
/// with one test per contract item, each calling `factory().await` for a fresh backend.
macro_rules! broker_suite {
    ($module:ident, $factory:path) => {
        /// The `Broker` contract (see `broker_suite`) on this backend.
        mod $module {
            crate::broker_suite::broker_suite!(
                @tests $factory;
                roundtrip_keeps_bytes_and_order,
                receive_returns_at_most_max_oldest_first,
                receive_waits_for_an_enqueue,
                held_deliveries_are_invisible_then_redelivered,
                a_dropped_consumer_loses_nothing,
                extend_keeps_deliveries_invisible,
                retry_later_delays_redelivery,
                dead_letters_keep_bytes_reason_attempts_and_time_and_replay,
                dead_letters_list_oldest_first_and_replay_and_purge_by_id,
                depth_counts_what_waits,
                foreign_tags_are_refused,
            );
        }
    };
    (@tests $factory:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                if let Some(backend) = $factory().await {
                    crate::broker_suite::$test(backend).await;
                }
            }
        )*
    };
}
pub(crate) use broker_suite;

/// One backend under test: how to open a broker on its queue, what it carries, what it can do,
/// and the guard that removes the queue (file, keys, RabbitMQ queues) when the test ends.
pub struct Backend {
    /// The URL `broker::open` is given.
    pub url: BrokerUrl,
    /// The options `broker::open` is given: a queue, key prefix or file of this test's own.
    pub options: BrokerOptions,
    /// What the messages are.
    pub wire: Wire,
    /// What the backend can and cannot do.
    pub traits: Traits,
    /// Removes the queue when dropped (held only to be dropped).
    pub _cleanup: Box<dyn Send + Sync>,
}

/// What a producer puts on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// geoprov's own: the delivered body is the enqueued body.
    Native,
    /// Celery task messages: the producer wraps each event, the consumer delivers the task
    /// message, and the suite compares the events it carries.
    Celery,
}

/// How a delivery held by a consumer that neither acks nor extends comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// After the visibility timeout, while the holder still lives.
    VisibilityTimeout,
    /// Only when the holder's channel closes (AMQP: no leases, a held delivery stays with its
    /// channel).
    ChannelClose,
}

/// A malformed dead-letter id and what refusing it looks like.
#[derive(Debug, Clone, Copy)]
pub struct MalformedId {
    /// The id.
    pub id: &'static str,
    /// True for the error the backend answers with.
    pub refused_with: fn(&BrokerError) -> bool,
}

/// What a backend can do, where the contract leaves it room.
#[derive(Debug, Clone)]
pub struct Traits {
    /// The producer carries any bytes, not only JSON events (the empty body included).
    pub opaque_bodies: bool,
    /// `receive` pulls from the server: whatever is ready is returned at once, up to `max`.
    /// False where the server pushes deliveries ahead (AMQP) and a receive returns what has
    /// arrived so far.
    pub pull: bool,
    /// `depth` counts deliveries in flight (taken, not yet acked), not only ready messages.
    pub depth_counts_in_flight: bool,
    /// `depth` counts messages waiting out a `retry_later` delay.
    pub depth_counts_delayed: bool,
    /// How a held delivery comes back.
    pub lapse: Lapse,
    /// A consumer dropped while holding deliveries gives them back at once (otherwise they come
    /// back after the visibility timeout).
    pub drop_returns_at_once: bool,
    /// Redelivered messages come in the order they were enqueued.
    pub redelivery_in_order: bool,
    /// Dead-lettering a delivery that was already dead-lettered adds nothing.
    pub dead_letter_twice_adds_nothing: bool,
    /// A tag this backend never hands out, which `ack` refuses with a protocol error; `None`
    /// where the backend cannot tell.
    pub foreign_tag: Option<DeliveryTag>,
    /// A dead-letter id of the right form that names nothing.
    pub unknown_dead_letter_id: String,
    /// A dead-letter id the backend refuses, where it can tell.
    pub malformed_dead_letter_id: Option<MalformedId>,
    /// The visibility timeout the suite's consumers use.
    pub visibility: Duration,
    /// How long after the moment a delivery is due again (a visibility timeout ran out, a
    /// delay passed, a channel closed) it may take to arrive.
    pub slack: Duration,
}

impl Traits {
    /// Every promise kept the strictest way (the embedded queue's): a backend lists where it
    /// differs. With the visibility timeout its consumers use, the slack its redeliveries may
    /// take, and a well-formed dead-letter id that names nothing.
    pub fn strict(visibility: Duration, slack: Duration, unknown_dead_letter_id: &str) -> Traits {
        Traits {
            opaque_bodies: true,
            pull: true,
            depth_counts_in_flight: true,
            depth_counts_delayed: true,
            lapse: Lapse::VisibilityTimeout,
            drop_returns_at_once: false,
            redelivery_in_order: true,
            dead_letter_twice_adds_nothing: true,
            foreign_tag: None,
            unknown_dead_letter_id: unknown_dead_letter_id.to_owned(),
            malformed_dead_letter_id: None,
            visibility,
            slack,
        }
    }
}

/// A wait of nothing: what is there now.
const NO_WAIT: Duration = Duration::ZERO;
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// A visibility timeout long enough that only `retry_later` brings a delivery back in a test.
const LONG: Duration = Duration::from_secs(60);
/// The delay given to `retry_later`.
const RETRY_DELAY: Duration = Duration::from_millis(1500);

impl Backend {
    /// A broker on this backend's queue (a second one stands in for another process).
    pub async fn open(&self) -> Arc<dyn Broker> {
        broker::open(&self.url, &self.options)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    /// A consumer with this backend's visibility timeout.
    async fn consumer(&self, broker: &dyn Broker) -> Box<dyn Consumer> {
        self.consumer_with(broker, self.traits.visibility, 1000)
            .await
    }

    /// A consumer with a visibility timeout and prefetch of its own.
    async fn consumer_with(
        &self,
        broker: &dyn Broker,
        visibility: Duration,
        prefetch: u16,
    ) -> Box<dyn Consumer> {
        broker
            .consumer(ConsumerOptions {
                visibility_timeout: visibility,
                name: format!("suite-{}", uuid::Uuid::new_v4().simple()),
                prefetch,
            })
            .await
            .expect("consumer")
    }

    /// `n` bodies the producer accepts, all different.
    fn bodies(&self, n: usize) -> Vec<Bytes> {
        valid_events(n, "suite")
            .into_iter()
            .map(Bytes::from)
            .collect()
    }

    /// What a delivery carries: its body (native), or the id of the event in the task
    /// message (Celery).
    fn content(&self, delivery: &Delivery) -> Vec<u8> {
        match self.wire {
            Wire::Native => delivery.body.to_vec(),
            Wire::Celery => match CeleryDecoder::default().decode(delivery) {
                Decoded::Event { event, .. } => event.event_id.to_hex().into_bytes(),
                other => panic!("not a Celery task carrying an event: {other:?}"),
            },
        }
    }

    /// What an enqueued body is delivered as, in [`Backend::content`]'s terms.
    fn sent(&self, bodies: &[Bytes]) -> Vec<Vec<u8>> {
        bodies
            .iter()
            .map(|body| match self.wire {
                Wire::Native => body.to_vec(),
                Wire::Celery => geoprov::event::parse_event(body, 1 << 20)
                    .expect("a valid event")
                    .event_id
                    .to_hex()
                    .into_bytes(),
            })
            .collect()
    }

    /// The contents of these deliveries, in order.
    fn contents(&self, deliveries: &[Delivery]) -> Vec<Vec<u8>> {
        deliveries.iter().map(|d| self.content(d)).collect()
    }

    /// Let a delivery held by `holder` lapse: wait out the visibility timeout (the holder lives
    /// on, silent), or close the holder's channel.
    async fn lapse(&self, holder: Box<dyn Consumer>) -> Option<Box<dyn Consumer>> {
        match self.traits.lapse {
            Lapse::VisibilityTimeout => {
                tokio::time::sleep(self.traits.visibility + Duration::from_millis(200)).await;
                Some(holder)
            }
            Lapse::ChannelClose => {
                drop(holder);
                None
            }
        }
    }
}

/// A consumer that prefetches no more than `n`, and the first `n` deliveries it takes.
async fn take(b: &Backend, broker: &dyn Broker, n: u16) -> (Box<dyn Consumer>, Vec<Delivery>) {
    let mut holder = b.consumer_with(broker, b.traits.visibility, n).await;
    let held = receive_n(holder.as_mut(), n.into(), Duration::from_secs(5)).await;
    assert_eq!(held.len(), usize::from(n));
    (holder, held)
}

/// Receive until `n` deliveries have arrived or `within` has passed.
async fn receive_n(consumer: &mut dyn Consumer, n: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let more = consumer
            .receive(n - got.len(), left)
            .await
            .expect("receive");
        assert!(
            more.len() <= n - got.len(),
            "receive returned more than max"
        );
        got.extend(more);
        if left.is_zero() {
            break;
        }
    }
    got
}

fn tags(deliveries: &[Delivery]) -> Vec<DeliveryTag> {
    deliveries.iter().map(|d| d.tag.clone()).collect()
}

/// The same contents, in any order.
fn same_set(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    a.len() == b.len() && a.iter().collect::<HashSet<_>>() == b.iter().collect::<HashSet<_>>()
}

/// Redelivered contents match `expected`: in order where the backend keeps it.
fn assert_redelivered(backend: &Backend, got: &[Delivery], expected: &[Vec<u8>]) {
    let contents = backend.contents(got);
    if backend.traits.redelivery_in_order {
        assert_eq!(contents, expected, "redelivered in order");
    } else {
        assert!(same_set(&contents, expected), "every message redelivered");
    }
}

/// Every body comes back unchanged and in order, once, with attempt 1; acks (in any order,
/// twice) remove them for good.
pub async fn roundtrip_keeps_bytes_and_order(b: Backend) {
    let broker = b.open().await;
    let producer = broker.producer().await.unwrap();
    let mut sent = b.bodies(50);
    if b.traits.opaque_bodies {
        // Arbitrary bytes, not only UTF-8, including an empty body.
        sent.push(Bytes::from_static(&[0, 255, 1, 254, 0]));
        sent.push(Bytes::new());
    }
    producer.enqueue(&sent[..30]).await.unwrap();
    producer.enqueue(&sent[30..]).await.unwrap();
    assert_eq!(
        broker.depth().await.unwrap(),
        Some(sent.len() as u64),
        "confirmed = queued"
    );

    let mut consumer = b.consumer(broker.as_ref()).await;
    let got = if b.traits.pull {
        consumer.receive(100, NO_WAIT).await.unwrap()
    } else {
        receive_n(consumer.as_mut(), sent.len(), Duration::from_secs(10)).await
    };
    assert_eq!(b.contents(&got), b.sent(&sent), "FIFO, bytes unchanged");
    assert!(got.iter().all(|d| d.attempt == 1));
    if b.wire == Wire::Native {
        assert!(got.iter().all(|d| d.properties.is_none()));
    }

    // A run below every held tag, then a gap, then the rest; acking twice is harmless.
    let tags = tags(&got);
    consumer.ack(&tags[..2]).await.unwrap();
    consumer
        .ack(&[tags[3].clone(), tags[5].clone()])
        .await
        .unwrap();
    consumer
        .ack(&[tags[2].clone(), tags[4].clone()])
        .await
        .unwrap();
    consumer.ack(&tags[6..]).await.unwrap();
    consumer.ack(&tags[..1]).await.unwrap();
    assert!(consumer
        .receive(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    drop(consumer);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        broker.depth().await.unwrap(),
        Some(0),
        "every message acked"
    );
    let mut again = b.consumer(broker.as_ref()).await;
    assert!(again
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
}

/// A receive returns at most `max` deliveries, oldest first.
pub async fn receive_returns_at_most_max_oldest_first(b: Backend) {
    let broker = b.open().await;
    let sent = b.bodies(25);
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = b.consumer(broker.as_ref()).await;

    let mut all = Vec::new();
    if b.traits.pull {
        let first = consumer.receive(10, NO_WAIT).await.unwrap();
        let second = consumer.receive(10, NO_WAIT).await.unwrap();
        let third = consumer.receive(10, NO_WAIT).await.unwrap();
        assert_eq!((first.len(), second.len(), third.len()), (10, 10, 5));
        all.extend([first, second, third].concat());
    } else {
        let deadline = Instant::now() + Duration::from_secs(10);
        while all.len() < 25 && Instant::now() < deadline {
            let batch = consumer.receive(10, Duration::from_secs(2)).await.unwrap();
            assert!(batch.len() <= 10, "at most max");
            all.extend(batch);
        }
    }
    assert_eq!(b.contents(&all), b.sent(&sent));
    assert!(consumer.receive(0, NO_WAIT).await.unwrap().is_empty());
}

/// An empty receive waits out its `wait`; a waiting receive returns as soon as something is
/// enqueued, without waiting to fill the batch.
pub async fn receive_waits_for_an_enqueue(b: Backend) {
    let broker = b.open().await;
    let producer = broker.producer().await.unwrap();
    let mut consumer = b.consumer(broker.as_ref()).await;

    let started = Instant::now();
    assert!(consumer
        .receive(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));

    let waiting = tokio::spawn(async move {
        let got = consumer.receive(10, Duration::from_secs(10)).await.unwrap();
        (got, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    producer.enqueue(&b.bodies(3)).await.unwrap();
    let enqueued = Instant::now();
    let (got, woke) = waiting.await.unwrap();
    assert!(!got.is_empty() && got.len() <= 3);
    assert!(woke.duration_since(enqueued) < Duration::from_secs(1));
}

/// A held delivery is invisible to every other consumer; once it lapses (visibility timeout
/// without `extend`, or the holder's channel closing) it is delivered again, attempt 2.
pub async fn held_deliveries_are_invisible_then_redelivered(b: Backend) {
    let broker = b.open().await;
    let sent = b.bodies(5);
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let (mut holder, held) = take(&b, broker.as_ref(), 5).await;
    assert!(held.iter().all(|d| d.attempt == 1));

    let mut other = b.consumer(broker.as_ref()).await;
    assert!(other.receive(10, QUIET).await.unwrap().is_empty());
    if b.traits.depth_counts_in_flight {
        assert_eq!(broker.depth().await.unwrap(), Some(5));
    }
    // Extending is always allowed (a no-op where nothing would expire).
    holder.extend(&tags(&held)).await.unwrap();
    drop(other);

    let _holder = b.lapse(holder).await;
    let mut next = b.consumer(broker.as_ref()).await;
    let again = receive_n(next.as_mut(), 5, b.traits.slack).await;
    assert_eq!(again.len(), 5);
    assert!(again.iter().all(|d| d.attempt == 2), "redelivered counts");
    assert_redelivered(&b, &again, &b.sent(&sent));
    next.ack(&tags(&again)).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));
}

/// A consumer (and its broker) gone without acking loses nothing: what it held comes back,
/// attempt 2; what it never took comes with attempt 1.
pub async fn a_dropped_consumer_loses_nothing(b: Backend) {
    let broker = b.open().await;
    let sent = b.bodies(8);
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let (holder, _) = take(&b, broker.as_ref(), 5).await;
    // Simulated crash: the consumer and its broker (its connection) go away without ack.
    drop(holder);
    drop(broker);

    let broker = b.open().await;
    let mut consumer = b.consumer(broker.as_ref()).await;
    let expected = b.sent(&sent);
    if b.traits.drop_returns_at_once {
        let all = receive_n(consumer.as_mut(), 8, b.traits.slack).await;
        assert_eq!(all.len(), 8);
        for d in &all {
            let was_held = expected[..5].contains(&b.content(d));
            assert_eq!(d.attempt, if was_held { 2 } else { 1 });
        }
        assert_redelivered(&b, &all, &expected);
    } else {
        let rest = consumer.receive(10, NO_WAIT).await.unwrap();
        assert_eq!(
            b.contents(&rest),
            expected[5..],
            "only the never-taken ones are visible at once"
        );
        consumer.ack(&tags(&rest)).await.unwrap();
        let back = receive_n(consumer.as_mut(), 5, b.traits.visibility + b.traits.slack).await;
        assert_eq!(back.len(), 5);
        assert!(back.iter().all(|d| d.attempt == 2));
        assert_redelivered(&b, &back, &expected[..5]);
    }
}

/// `extend` keeps a delivery invisible past its visibility timeout, as long as it is called;
/// once it stops, the delivery lapses and comes back, attempt 2.
pub async fn extend_keeps_deliveries_invisible(b: Backend) {
    let broker = b.open().await;
    crate::support::enqueue(broker.as_ref(), &b.bodies(3)).await;
    let (mut holder, held) = take(&b, broker.as_ref(), 3).await;
    let mut other = b.consumer(broker.as_ref()).await;
    // Extend every quarter of the visibility timeout for two timeouts: never visible meanwhile.
    for _ in 0..8 {
        tokio::time::sleep(b.traits.visibility / 4).await;
        holder.extend(&tags(&held)).await.unwrap();
        assert!(other.receive(10, NO_WAIT).await.unwrap().is_empty());
    }
    drop(other);
    let _holder = b.lapse(holder).await;
    let mut next = b.consumer(broker.as_ref()).await;
    let back = receive_n(next.as_mut(), 3, b.traits.slack).await;
    assert_eq!(back.len(), 3);
    assert!(back.iter().all(|d| d.attempt == 2));
}

/// `retry_later` gives deliveries back to come again after the delay (never before), counting
/// one more attempt; a zero delay makes them visible at once.
pub async fn retry_later_delays_redelivery(b: Backend) {
    let broker = b.open().await;
    let sent = b.bodies(2);
    crate::support::enqueue(broker.as_ref(), &sent).await;
    // A long visibility timeout, so only retry_later can bring them back soon.
    let mut consumer = b.consumer_with(broker.as_ref(), LONG, 1000).await;

    let got = receive_n(consumer.as_mut(), 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    let retried_at = Instant::now();
    consumer
        .retry_later(&tags(&got), RETRY_DELAY)
        .await
        .unwrap();
    if b.traits.depth_counts_delayed {
        assert_eq!(
            broker.depth().await.unwrap(),
            Some(2),
            "waiting out the delay"
        );
    }
    assert!(consumer
        .receive(10, Duration::from_millis(800))
        .await
        .unwrap()
        .is_empty());

    let back = receive_n(consumer.as_mut(), 2, RETRY_DELAY + b.traits.slack).await;
    assert!(retried_at.elapsed() >= RETRY_DELAY - Duration::from_millis(10));
    assert!(retried_at.elapsed() < RETRY_DELAY + b.traits.slack);
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|d| d.attempt == 2), "attempts counted once");
    assert_redelivered(&b, &back, &b.sent(&sent));

    // A zero delay: straight back.
    consumer
        .retry_later(&tags(&back), Duration::ZERO)
        .await
        .unwrap();
    let third = if b.traits.pull {
        consumer.receive(10, NO_WAIT).await.unwrap()
    } else {
        receive_n(consumer.as_mut(), 2, Duration::from_secs(2)).await
    };
    assert_eq!(third.len(), 2);
    assert!(third.iter().all(|d| d.attempt == 3));
    consumer.ack(&tags(&third)).await.unwrap();
}

/// A dead letter keeps the delivered bytes, the reason, the attempts and the time; replay puts
/// every dead letter back, in order, with a fresh attempt count.
pub async fn dead_letters_keep_bytes_reason_attempts_and_time_and_replay(b: Backend) {
    let broker = b.open().await;
    let dlq = broker.dead_letters().await.unwrap();
    let mut bodies = b.bodies(3);
    if b.traits.opaque_bodies {
        bodies[0] = Bytes::from_static(b"\xff\xfe not json {");
    }
    crate::support::enqueue(broker.as_ref(), &bodies).await;
    let sent = b.sent(&bodies);
    let mut consumer = b.consumer_with(broker.as_ref(), LONG, 1000).await;

    // First delivery: retried; second delivery: dead-lettered, so attempts is 2.
    let first = receive_n(consumer.as_mut(), 3, Duration::from_secs(5)).await;
    consumer
        .retry_later(&tags(&first), Duration::ZERO)
        .await
        .unwrap();
    let second = receive_n(consumer.as_mut(), 3, b.traits.slack).await;
    assert_eq!(second.len(), 3);
    let find = |i: usize| {
        second
            .iter()
            .find(|d| b.content(d) == sent[i])
            .expect("delivered again")
            .clone()
    };
    let (x, y, z) = (find(0), find(1), find(2));
    let before = chrono::Utc::now() - chrono::Duration::milliseconds(5);
    consumer
        .dead_letter(&[
            (x.clone(), "payload is not JSON".to_owned()),
            (z.clone(), "second reason".to_owned()),
        ])
        .await
        .unwrap();
    consumer.ack(std::slice::from_ref(&y.tag)).await.unwrap();
    let after = chrono::Utc::now() + chrono::Duration::milliseconds(5);

    assert_eq!(broker.depth().await.unwrap(), Some(0));
    assert_eq!(dlq.count().await.unwrap(), 2);
    let letters = dlq.list(10).await.unwrap();
    assert_eq!(letters.len(), 2);
    let letter = &letters[0];
    assert_eq!(letter.body, x.body, "the delivered bytes, byte for byte");
    if b.wire == Wire::Native {
        assert_eq!(letter.body, bodies[0]);
    }
    assert_eq!(letter.reason, "payload is not JSON");
    assert_eq!(letter.attempts, 2);
    assert!(letter.dead_lettered_at >= before && letter.dead_lettered_at <= after);
    assert_eq!(letters[1].body, z.body);
    assert_eq!(letters[1].reason, "second reason");

    if b.traits.dead_letter_twice_adds_nothing {
        // Dead-lettering the same delivery again (e.g. after its lease expired) adds nothing.
        consumer
            .dead_letter(&[(x.clone(), "again".to_owned())])
            .await
            .unwrap();
        assert_eq!(dlq.count().await.unwrap(), 2);
    }

    // Replay puts them back, in order, with a fresh attempt count. (No consumer meanwhile, so
    // that a pushing broker keeps them ready, where `depth` sees them.)
    drop(consumer);
    assert_eq!(dlq.replay(None).await.unwrap(), 2);
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert_eq!(broker.depth().await.unwrap(), Some(2));
    let mut consumer = b.consumer_with(broker.as_ref(), LONG, 1000).await;
    let replayed = receive_n(consumer.as_mut(), 2, Duration::from_secs(5)).await;
    assert_eq!(
        replayed.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        [x.body.clone(), z.body.clone()]
    );
    assert_eq!(b.contents(&replayed), [sent[0].clone(), sent[2].clone()]);
    assert!(replayed.iter().all(|d| d.attempt == 1));
}

/// Dead letters are listed oldest first (listing takes nothing away), and can be replayed and
/// purged by id (unknown ids count for nothing, malformed ones are refused) and all at once.
pub async fn dead_letters_list_oldest_first_and_replay_and_purge_by_id(b: Backend) {
    let broker = b.open().await;
    let bodies = b.bodies(4);
    crate::support::enqueue(broker.as_ref(), &bodies).await;
    let sent = b.sent(&bodies);
    let dlq = broker.dead_letters().await.unwrap();
    let mut consumer = b.consumer_with(broker.as_ref(), LONG, 1000).await;

    let got = receive_n(consumer.as_mut(), 4, Duration::from_secs(5)).await;
    assert_eq!(b.contents(&got), sent);
    let items: Vec<(Delivery, String)> = got
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), format!("reason for {i}")))
        .collect();
    consumer.dead_letter(&items).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));
    let letters = dlq.list(10).await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.body.clone()).collect::<Vec<_>>(),
        got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        "oldest first"
    );
    assert_eq!(
        letters
            .iter()
            .map(|l| l.reason.as_str())
            .collect::<Vec<_>>(),
        [
            "reason for 0",
            "reason for 1",
            "reason for 2",
            "reason for 3"
        ],
        "listing keeps the order"
    );
    assert!(letters.iter().all(|l| l.attempts == 1));
    assert_eq!(dlq.list(2).await.unwrap().len(), 2);
    assert_eq!(dlq.count().await.unwrap(), 4, "listing takes nothing");
    let ids: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();

    // Replay one, purge one; an unknown id counts for nothing. (No consumer meanwhile, so that
    // a pushing broker keeps the replayed one ready, where `depth` sees it.)
    drop(consumer);
    let unknown = b.traits.unknown_dead_letter_id.clone();
    assert_eq!(
        dlq.replay(Some(&[ids[1].clone(), unknown])).await.unwrap(),
        1
    );
    assert_eq!(dlq.purge(Some(&[ids[3].clone()])).await.unwrap(), 1);
    assert_eq!(dlq.count().await.unwrap(), 2);
    assert_eq!(
        dlq.list(10)
            .await
            .unwrap()
            .iter()
            .map(|l| l.id.clone())
            .collect::<Vec<_>>(),
        [ids[0].clone(), ids[2].clone()]
    );
    assert_eq!(broker.depth().await.unwrap(), Some(1));
    let mut consumer = b.consumer_with(broker.as_ref(), LONG, 1000).await;
    let replayed = receive_n(consumer.as_mut(), 1, Duration::from_secs(5)).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].body, letters[1].body);
    assert_eq!(b.content(&replayed[0]), sent[1]);
    assert_eq!(replayed[0].attempt, 1, "replay resets the attempts");
    consumer.ack(&tags(&replayed)).await.unwrap();

    if let Some(malformed) = b.traits.malformed_dead_letter_id {
        let error = dlq
            .purge(Some(&[malformed.id.to_owned()]))
            .await
            .unwrap_err();
        assert!((malformed.refused_with)(&error), "{error}");
        assert_eq!(dlq.count().await.unwrap(), 2, "and changes nothing");
    }
    assert_eq!(dlq.purge(None).await.unwrap(), 2);
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert!(dlq.list(10).await.unwrap().is_empty());
}

/// `depth` counts the ready messages, and those in flight where the backend can tell.
pub async fn depth_counts_what_waits(b: Backend) {
    let broker = b.open().await;
    assert_eq!(broker.depth().await.unwrap(), Some(0));
    crate::support::enqueue(broker.as_ref(), &b.bodies(10)).await;
    assert_eq!(broker.depth().await.unwrap(), Some(10));
    let (mut consumer, got) = take(&b, broker.as_ref(), 4).await;
    let in_flight = if b.traits.depth_counts_in_flight {
        10
    } else {
        6
    };
    assert_eq!(broker.depth().await.unwrap(), Some(in_flight));
    consumer.ack(&tags(&got)).await.unwrap();
    // Gone, so that a pushing broker does not take more ahead.
    drop(consumer);
    assert_eq!(broker.depth().await.unwrap(), Some(6));
}

/// A tag the backend never handed out is refused, where the backend can tell.
pub async fn foreign_tags_are_refused(b: Backend) {
    let Some(foreign) = b.traits.foreign_tag.clone() else {
        return;
    };
    let broker = b.open().await;
    let mut consumer = b.consumer(broker.as_ref()).await;
    let error = consumer.ack(&[foreign]).await.unwrap_err();
    assert!(matches!(error, BrokerError::Protocol(_)), "{error}");
}

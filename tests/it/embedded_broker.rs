//! The embedded on-disk queue: delivery, leases and redelivery, dead letters, and several brokers
//! (standing in for several processes) sharing one file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use geoprov::broker::embedded::EmbeddedBroker;
use geoprov::broker::{Broker, BrokerError, ConsumerOptions, Delivery, DeliveryTag};

/// A queue file in its own temporary directory, removed on drop.
struct TempQueue {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TempQueue {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // A directory that does not exist yet: `open` must create it.
        let path = dir.path().join("data").join("queue.db");
        Self { _dir: dir, path }
    }

    async fn open(&self) -> EmbeddedBroker {
        EmbeddedBroker::open(&self.path).await.expect("open queue")
    }
}

fn options(visibility: Duration) -> ConsumerOptions {
    ConsumerOptions {
        visibility_timeout: visibility,
        name: "test".to_owned(),
        ..ConsumerOptions::default()
    }
}

fn bodies(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("msg-{i}"))).collect()
}

fn tags(deliveries: &[Delivery]) -> Vec<DeliveryTag> {
    deliveries.iter().map(|d| d.tag.clone()).collect()
}

const NO_WAIT: Duration = Duration::ZERO;
const SHORT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn roundtrip_keeps_bytes_and_order() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    let producer = broker.producer().await.unwrap();
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();

    // Arbitrary bytes, not only UTF-8, including an empty body.
    let mut sent: Vec<Bytes> = bodies(50);
    sent.push(Bytes::from_static(&[0, 255, 1, 254, 0]));
    sent.push(Bytes::new());
    producer.enqueue(&sent[..30]).await.unwrap();
    producer.enqueue(&sent[30..]).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(52));

    let got = consumer.receive(100, NO_WAIT).await.unwrap();
    let got_bodies: Vec<Bytes> = got.iter().map(|d| d.body.clone()).collect();
    assert_eq!(got_bodies, sent);
    assert!(got.iter().all(|d| d.attempt == 1));

    consumer.ack(&tags(&got)).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));
    assert!(consumer.receive(10, NO_WAIT).await.unwrap().is_empty());
}

#[tokio::test]
async fn receive_returns_at_most_max_oldest_first() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    crate::support::enqueue(&broker, &bodies(25)).await;
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();

    let first = consumer.receive(10, NO_WAIT).await.unwrap();
    let second = consumer.receive(10, NO_WAIT).await.unwrap();
    let third = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!((first.len(), second.len(), third.len()), (10, 10, 5));
    let all: Vec<Bytes> = [first, second, third]
        .concat()
        .into_iter()
        .map(|d| d.body)
        .collect();
    assert_eq!(all, bodies(25));
    assert!(consumer.receive(0, NO_WAIT).await.unwrap().is_empty());
}

#[tokio::test]
async fn receive_waits_for_an_in_process_enqueue() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    let producer = broker.producer().await.unwrap();
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();

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
    producer.enqueue(&bodies(3)).await.unwrap();
    let enqueued = Instant::now();
    let (got, woke) = waiting.await.unwrap();
    // Returns as soon as something is leased, without waiting to fill the batch.
    assert!(!got.is_empty() && got.len() <= 3);
    assert!(woke.duration_since(enqueued) < Duration::from_secs(1));
}

#[tokio::test]
async fn unacked_messages_are_redelivered_after_the_visibility_timeout() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    crate::support::enqueue(&broker, &bodies(5)).await;
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();

    let first = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(first.len(), 5);
    // Invisible while leased, to this consumer and to any other.
    let mut other = broker.consumer(options(SHORT)).await.unwrap();
    assert!(other.receive(10, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(broker.depth().await.unwrap(), Some(5));

    let again = other.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again.len(), 5);
    assert!(again.iter().all(|d| d.attempt == 2));
    assert_eq!(
        again.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        bodies(5)
    );
    other.ack(&tags(&again)).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));
}

#[tokio::test]
async fn a_dropped_consumer_loses_nothing() {
    let queue = TempQueue::new();
    {
        let broker = queue.open().await;
        crate::support::enqueue(&broker, &bodies(8)).await;
        let mut consumer = broker.consumer(options(SHORT)).await.unwrap();
        assert_eq!(consumer.receive(5, NO_WAIT).await.unwrap().len(), 5);
        // Simulated crash: the consumer and its broker (its connection) go away without ack.
    }
    let broker = queue.open().await;
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();
    let rest = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(
        rest.len(),
        3,
        "only the never-leased ones are visible at once"
    );
    consumer.ack(&tags(&rest)).await.unwrap();

    let back = consumer.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(back.len(), 5);
    assert!(back.iter().all(|d| d.attempt == 2));
    assert_eq!(
        back.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        bodies(5)
    );
}

#[tokio::test]
async fn extend_keeps_messages_invisible() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    crate::support::enqueue(&broker, &bodies(3)).await;
    let visibility = Duration::from_millis(600);
    let mut holder = broker.consumer(options(visibility)).await.unwrap();
    let mut other = broker.consumer(options(visibility)).await.unwrap();

    let held = holder.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(held.len(), 3);
    // Extend every 150ms for 1.2s (two visibility timeouts): never visible meanwhile.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        holder.extend(&tags(&held)).await.unwrap();
        assert!(other.receive(10, NO_WAIT).await.unwrap().is_empty());
    }
    // Once extending stops, the timeout runs out and they come back.
    let back = other.receive(10, Duration::from_secs(5)).await.unwrap();
    assert_eq!(back.len(), 3);
    assert!(back.iter().all(|d| d.attempt == 2));
}

#[tokio::test]
async fn retry_later_delays_redelivery() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    crate::support::enqueue(&broker, &bodies(2)).await;
    // A long visibility timeout, so only retry_later can bring them back soon.
    let mut consumer = broker
        .consumer(options(Duration::from_secs(60)))
        .await
        .unwrap();

    let got = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 2);
    let retried_at = Instant::now();
    consumer
        .retry_later(&tags(&got), Duration::from_millis(400))
        .await
        .unwrap();
    assert!(consumer.receive(10, NO_WAIT).await.unwrap().is_empty());

    let back = consumer.receive(10, Duration::from_secs(5)).await.unwrap();
    assert!(retried_at.elapsed() >= Duration::from_millis(390));
    assert!(retried_at.elapsed() < Duration::from_secs(5));
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|d| d.attempt == 2), "attempts counted once");

    // A zero delay makes them visible at once.
    consumer
        .retry_later(&tags(&back), Duration::ZERO)
        .await
        .unwrap();
    let third = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(third.len(), 2);
    assert!(third.iter().all(|d| d.attempt == 3));
}

#[tokio::test]
async fn dead_letters_keep_bytes_reason_attempts_and_time_and_replay() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    let producer = broker.producer().await.unwrap();
    let dlq = broker.dead_letters().await.unwrap();
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();

    let bad = Bytes::from_static(b"\xff\xfe not json {");
    producer
        .enqueue(&[bad.clone(), Bytes::from_static(b"{\"ok\":1}")])
        .await
        .unwrap();
    // First delivery: retried; second delivery: dead-lettered, so attempts is 2.
    let first = consumer.receive(10, NO_WAIT).await.unwrap();
    consumer
        .retry_later(&tags(&first), Duration::ZERO)
        .await
        .unwrap();
    let second = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(second.len(), 2);
    let before = chrono::Utc::now() - chrono::Duration::milliseconds(5);
    consumer
        .dead_letter(&[(second[0].clone(), "payload is not JSON".to_owned())])
        .await
        .unwrap();
    consumer.ack(&[second[1].tag.clone()]).await.unwrap();
    let after = chrono::Utc::now() + chrono::Duration::milliseconds(5);

    assert_eq!(broker.depth().await.unwrap(), Some(0));
    assert_eq!(dlq.count().await.unwrap(), 1);
    let letters = dlq.list(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.body, bad);
    assert_eq!(letter.reason, "payload is not JSON");
    assert_eq!(letter.attempts, 2);
    assert!(letter.dead_lettered_at >= before && letter.dead_lettered_at <= after);

    // Dead-lettering the same delivery again (e.g. after its lease expired) adds nothing.
    consumer
        .dead_letter(&[(second[0].clone(), "again".to_owned())])
        .await
        .unwrap();
    assert_eq!(dlq.count().await.unwrap(), 1);

    // Replay puts it back with a fresh attempt count.
    assert_eq!(dlq.replay(None).await.unwrap(), 1);
    assert_eq!(dlq.count().await.unwrap(), 0);
    let replayed = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].body, bad);
    assert_eq!(replayed[0].attempt, 1);
}

#[tokio::test]
async fn replay_and_purge_by_id() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    crate::support::enqueue(&broker, &bodies(4)).await;
    let dlq = broker.dead_letters().await.unwrap();
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();

    let got = consumer.receive(10, NO_WAIT).await.unwrap();
    let items: Vec<(Delivery, String)> = got
        .iter()
        .map(|d| {
            (
                d.clone(),
                format!("reason for {}", String::from_utf8_lossy(&d.body)),
            )
        })
        .collect();
    consumer.dead_letter(&items).await.unwrap();
    let letters = dlq.list(10).await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.body.clone()).collect::<Vec<_>>(),
        bodies(4),
        "oldest first"
    );
    assert_eq!(letters[2].reason, "reason for msg-2");
    assert_eq!(dlq.list(2).await.unwrap().len(), 2);
    let ids: Vec<String> = letters.iter().map(|l| l.id.clone()).collect();

    // Replay one, purge one, an unknown id counts for nothing.
    assert_eq!(
        dlq.replay(Some(&[ids[1].clone(), "999999".to_owned()]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(dlq.purge(Some(&[ids[3].clone()])).await.unwrap(), 1);
    assert_eq!(dlq.count().await.unwrap(), 2);
    let replayed = consumer.receive(10, NO_WAIT).await.unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].body, Bytes::from_static(b"msg-1"));

    // Ids that are not numbers are a usage error, and change nothing.
    let error = dlq.purge(Some(&["abc".to_owned()])).await.unwrap_err();
    assert!(matches!(error, BrokerError::Config(_)), "{error}");
    assert_eq!(dlq.purge(None).await.unwrap(), 2);
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert!(dlq.list(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn depth_counts_ready_and_in_flight() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    assert_eq!(broker.depth().await.unwrap(), Some(0));
    crate::support::enqueue(&broker, &bodies(10)).await;
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();
    let got = consumer.receive(4, NO_WAIT).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(10));
    consumer.ack(&tags(&got)).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(6));
}

#[tokio::test]
async fn foreign_tags_are_refused() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    let mut consumer = broker.consumer(options(SHORT)).await.unwrap();
    let error = consumer
        .ack(&[DeliveryTag::Text("1-0".to_owned())])
        .await
        .unwrap_err();
    assert!(matches!(error, BrokerError::Protocol(_)), "{error}");
}

#[tokio::test]
async fn reopening_keeps_messages_and_refuses_a_newer_schema() {
    let queue = TempQueue::new();
    {
        let broker = queue.open().await;
        crate::support::enqueue(&broker, &bodies(3)).await;
    }
    let broker = queue.open().await;
    assert_eq!(broker.depth().await.unwrap(), Some(3));
    drop(broker);

    let conn = rusqlite::Connection::open(&queue.path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let error = EmbeddedBroker::open(&queue.path).await.unwrap_err();
    assert!(matches!(error, BrokerError::Config(_)), "{error}");
    assert!(error.to_string().contains("99"), "{error}");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let error = EmbeddedBroker::open(&path).await.unwrap_err();
    assert!(matches!(error, BrokerError::Config(_)), "{error}");
}

#[tokio::test]
async fn an_unrelated_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE other (x); PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let error = EmbeddedBroker::open(&path).await.unwrap_err();
    assert!(matches!(error, BrokerError::Config(_)), "{error}");
}

/// Another process holding the write lock past the busy timeout is a transient error; readers
/// are not blocked meanwhile (WAL), and writing works again once the lock is released.
#[tokio::test]
async fn a_write_lock_held_elsewhere_is_transient() {
    let queue = TempQueue::new();
    let broker = queue.open().await;
    let producer = broker.producer().await.unwrap();
    producer.enqueue(&bodies(1)).await.unwrap();

    let other = rusqlite::Connection::open(&queue.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(1));
    let started = Instant::now();
    let error = producer.enqueue(&bodies(1)).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(matches!(error, BrokerError::Unavailable(_)), "{error}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "waited for the lock first"
    );

    other.execute_batch("ROLLBACK").unwrap();
    producer.enqueue(&bodies(1)).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(2));
}

/// Two brokers on one file stand in for two processes: one enqueues while four consumers on the
/// other drain the queue; every message is seen exactly once (no lease expires here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_brokers_on_one_file_deliver_each_message_once() {
    const TOTAL: usize = 20_000;
    const CONSUMERS: usize = 4;
    let queue = TempQueue::new();
    let producing = queue.open().await;
    let consuming = Arc::new(queue.open().await);

    let seen = Arc::new(Mutex::new(Vec::<usize>::with_capacity(TOTAL)));
    let mut workers = Vec::new();
    for n in 0..CONSUMERS {
        let mut consumer = consuming
            .consumer(ConsumerOptions {
                visibility_timeout: Duration::from_secs(60),
                name: format!("consumer-{n}"),
                ..ConsumerOptions::default()
            })
            .await
            .unwrap();
        let seen = Arc::clone(&seen);
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.lock().unwrap().len() < TOTAL && Instant::now() < deadline {
                let got = consumer
                    .receive(250, Duration::from_millis(100))
                    .await
                    .unwrap();
                if got.is_empty() {
                    continue;
                }
                let indexes: Vec<usize> = got
                    .iter()
                    .map(|d| {
                        assert_eq!(d.attempt, 1);
                        std::str::from_utf8(&d.body)
                            .unwrap()
                            .strip_prefix("msg-")
                            .unwrap()
                            .parse()
                            .unwrap()
                    })
                    .collect();
                consumer.ack(&tags(&got)).await.unwrap();
                seen.lock().unwrap().extend(indexes);
            }
        }));
    }

    // Enqueue while the consumers run (they find the messages by polling: the producer is on
    // the other broker).
    let producer = producing.producer().await.unwrap();
    let all = bodies(TOTAL);
    for chunk in all.chunks(500) {
        producer.enqueue(chunk).await.unwrap();
    }
    for worker in workers {
        worker.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), TOTAL, "every message delivered");
    let distinct: HashSet<usize> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), TOTAL, "no message delivered twice");
    assert_eq!(consuming.depth().await.unwrap(), Some(0));
    assert_eq!(producing.depth().await.unwrap(), Some(0));
}

/// Enqueue, drain (lease + ack) and concurrent produce-while-consuming rates. Run in release:
/// `cargo test --release --test it embedded -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release with --ignored --nocapture"]
async fn embedded_throughput() {
    const TOTAL: usize = 200_000;
    const BATCH: usize = 1_000;
    let rate = |d: Duration| f64::from(u32::try_from(TOTAL).unwrap()) / d.as_secs_f64();
    for size in [100_usize, 500] {
        let batch = vec![Bytes::from(vec![b'x'; size]); BATCH];

        // Enqueue everything, then drain it.
        let queue = TempQueue::new();
        let broker = queue.open().await;
        let producer = broker.producer().await.unwrap();
        let started = Instant::now();
        for _ in 0..TOTAL / BATCH {
            producer.enqueue(&batch).await.unwrap();
        }
        let enqueue = started.elapsed();
        let mut consumer = broker
            .consumer(options(Duration::from_secs(60)))
            .await
            .unwrap();
        let started = Instant::now();
        let mut done = 0;
        while done < TOTAL {
            let got = consumer.receive(BATCH, NO_WAIT).await.unwrap();
            assert!(!got.is_empty());
            consumer.ack(&tags(&got)).await.unwrap();
            done += got.len();
        }
        let drain = started.elapsed();
        assert_eq!(broker.depth().await.unwrap(), Some(0));

        // A producer and a consumer at the same time, as in `geoprov serve`.
        let queue = TempQueue::new();
        let broker = queue.open().await;
        let producer = broker.producer().await.unwrap();
        let mut consumer = broker
            .consumer(options(Duration::from_secs(60)))
            .await
            .unwrap();
        let started = Instant::now();
        let producing = tokio::spawn(async move {
            for _ in 0..TOTAL / BATCH {
                producer.enqueue(&batch).await.unwrap();
            }
        });
        let mut done = 0;
        while done < TOTAL {
            let got = consumer
                .receive(BATCH, Duration::from_secs(5))
                .await
                .unwrap();
            assert!(!got.is_empty());
            consumer.ack(&tags(&got)).await.unwrap();
            done += got.len();
        }
        producing.await.unwrap();
        let both = started.elapsed();

        println!(
            "embedded queue, {TOTAL} messages of {size} B, batches of {BATCH}: \
             enqueue {:.0} msg/s, lease+ack {:.0} msg/s, \
             enqueue and lease+ack concurrently {:.0} msg/s",
            rate(enqueue),
            rate(drain),
            rate(both)
        );
    }
}

//! The embedded on-disk queue: the `Broker` contract (the shared suite), and what is its own:
//! reopening and schema checks, another process holding the write lock, and several brokers
//! (standing in for several processes) sharing one file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use geoprov::broker::embedded::EmbeddedBroker;
use geoprov::broker::{Broker, BrokerError, BrokerOptions, ConsumerOptions, Delivery, DeliveryTag};
use geoprov::url::BrokerUrl;

use crate::broker_suite::{broker_suite, Backend, MalformedId, Traits, Wire};

/// A queue file in a temporary directory of its own (removed with the `TempDir`), in a
/// directory that does not exist yet: `open` must create it.
fn temp_queue() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data").join("queue.db");
    (dir, path)
}

async fn open(path: &Path) -> EmbeddedBroker {
    EmbeddedBroker::open(path).await.expect("open queue")
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

/// A queue file of the test's own, for the shared suite.
async fn embedded_backend() -> Option<Backend> {
    let (dir, path) = temp_queue();
    Some(Backend {
        url: BrokerUrl::Embedded,
        options: BrokerOptions {
            embedded_queue: path,
            ..BrokerOptions::default()
        },
        wire: Wire::Native,
        traits: Traits {
            foreign_tag: Some(DeliveryTag::Text("1-0".to_owned())),
            // Ids that are not numbers are a usage error.
            malformed_dead_letter_id: Some(MalformedId {
                id: "abc",
                refused_with: |e| matches!(e, BrokerError::Config(_)),
            }),
            ..Traits::strict(
                Duration::from_millis(600),
                Duration::from_millis(4500),
                "999999",
            )
        },
        _cleanup: Box::new(dir),
    })
}

broker_suite!(conformance, super::embedded_backend);

#[tokio::test]
async fn reopening_keeps_messages_and_refuses_a_newer_schema() {
    let (_dir, path) = temp_queue();
    {
        let broker = open(&path).await;
        crate::support::enqueue(&broker, &bodies(3)).await;
    }
    let broker = open(&path).await;
    assert_eq!(broker.depth().await.unwrap(), Some(3));
    drop(broker);

    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let error = EmbeddedBroker::open(&path).await.unwrap_err();
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
    let (_dir, path) = temp_queue();
    let broker = open(&path).await;
    let producer = broker.producer().await.unwrap();
    producer.enqueue(&bodies(1)).await.unwrap();

    let other = rusqlite::Connection::open(&path).unwrap();
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
    let (_dir, path) = temp_queue();
    let producing = open(&path).await;
    let consuming = Arc::new(open(&path).await);

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
        let (_dir, path) = temp_queue();
        let broker = open(&path).await;
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
        let (_dir, path) = temp_queue();
        let broker = open(&path).await;
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

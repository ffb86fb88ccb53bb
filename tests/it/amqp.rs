//! RabbitMQ against a real server (`GEOPROV_TEST_AMQP`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), native and Celery mode, and against the real Python
//! Celery client: acks, publisher confirms, dead letters with their reason headers, redelivery
//! after a dropped connection, delays, 5,000 `.delay()` calls, a SIGKILLed worker, poison and
//! foreign messages, results for `AsyncResult.get()`, `countdown`, and `amqps://` with a private
//! CA and a client certificate on a RabbitMQ node the test starts itself.
//!
//! Every test uses its own queue names and deletes its queues and exchanges when it ends.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geoprov::broker::amqp::{HEADER_ATTEMPTS, HEADER_DEAD_AT, HEADER_DEAD_ID, HEADER_REASON};
use geoprov::broker::{self, Broker, BrokerOptions, ConsumerOptions, TlsFiles};
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeleteOptions};
use lapin::types::AMQPValue;
use lapin::{Connection, ConnectionProperties};

use super::redis_support::{
    python, redis_url, required, stored_ids, unique, CeleryEnv, WorkerProc,
};
use super::support::{free_port, valid_events, wait_until};

/// The `db_uri` the Python client passes: a password that must never reach a log.
const SECRET_DB_URI: &str = "postgresql://lineage:Sup3rS3cret-pw@db.invalid:5432/lineage";

/// Run a future on a runtime of its own, on a thread of its own (usable from sync tests, async
/// tests and `Drop`).
fn block_on<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .ok()
            .map(|rt| rt.block_on(f))
    })
    .join()
    .ok()
    .flatten()
}

async fn raw_connect(url: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    Connection::connect(url, properties).await
}

/// The RabbitMQ URL to test against, or `None` after printing why the test is skipped.
fn amqp_url() -> Option<String> {
    let url = std::env::var("GEOPROV_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let probe = url.clone();
    let ok = block_on(async move {
        match tokio::time::timeout(Duration::from_secs(5), raw_connect(&probe)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close(200, "probe").await;
                true
            }
            _ => false,
        }
    })
    .unwrap_or(false);
    if ok {
        return Some(url);
    }
    if required() {
        panic!("no RabbitMQ server at {url} (GEOPROV_REQUIRE_SERVICES=1)");
    }
    eprintln!("skipped: no server at {url}");
    None
}

/// Deletes a test's queues and exchanges when dropped.
struct AmqpCleanup {
    url: String,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl AmqpCleanup {
    /// geoprov's queues for `queue`, plus Celery's queue and exchange of that name when
    /// `celery`.
    fn new(url: &str, queue: &str, celery: bool) -> AmqpCleanup {
        let mut queues = vec![
            format!("geoprov.{queue}.delay"),
            format!("geoprov.{queue}.dead"),
        ];
        let mut exchanges = Vec::new();
        if celery {
            queues.push(queue.to_owned());
            exchanges.push(queue.to_owned());
        } else {
            queues.push(format!("geoprov.{queue}"));
        }
        AmqpCleanup {
            url: url.to_owned(),
            queues,
            exchanges,
        }
    }
}

impl Drop for AmqpCleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let _ = block_on(async move {
            let Ok(conn) = raw_connect(&url).await else {
                return;
            };
            for q in &queues {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch.queue_delete(q, QueueDeleteOptions::default()).await;
                }
            }
            for e in &exchanges {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch.exchange_delete(e, Default::default()).await;
                }
            }
            let _ = conn.close(200, "cleanup").await;
        });
    }
}

async fn open(url: &str, queue: &str, celery: bool) -> Arc<dyn Broker> {
    let options = BrokerOptions {
        queue: Some(queue.to_owned()),
        celery,
        ..BrokerOptions::default()
    };
    broker::open(&url.parse().unwrap(), &options)
        .await
        .expect("open amqp broker")
}

fn consumer_options(name: &str, prefetch: u16) -> ConsumerOptions {
    ConsumerOptions {
        name: unique(name),
        prefetch,
        ..ConsumerOptions::default()
    }
}

fn bodies(n: usize, tag: &str) -> Vec<Bytes> {
    valid_events(n, tag).into_iter().map(Bytes::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_roundtrip_acks_with_multiple_and_single_tags() {
    let Some(url) = amqp_url() else { return };
    let queue = unique("rt");
    let _cleanup = AmqpCleanup::new(&url, &queue, false);
    let broker = open(&url, &queue, false).await;
    let sent = bodies(6, "rt");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    assert_eq!(broker.depth().await.unwrap(), Some(6), "confirmed = queued");
    let mut consumer = broker.consumer(consumer_options("c", 10)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let more = consumer.receive(10, Duration::from_secs(2)).await.unwrap();
        assert!(!more.is_empty(), "all 6 arrive");
        got.extend(more);
    }
    assert_eq!(
        got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        sent,
        "FIFO, bytes unchanged"
    );
    assert!(got.iter().all(|d| d.attempt == 1 && d.properties.is_none()));
    let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
    // A run below every held tag (one `multiple` ack), then a gap (single acks).
    consumer.ack(&tags[..2]).await.unwrap();
    consumer
        .ack(&[tags[3].clone(), tags[5].clone()])
        .await
        .unwrap();
    consumer
        .ack(&[tags[2].clone(), tags[4].clone()])
        .await
        .unwrap();
    // Acking twice is harmless (the tag is no longer held).
    consumer.ack(&tags[..1]).await.unwrap();
    drop(consumer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        broker.depth().await.unwrap(),
        Some(0),
        "every message acked"
    );
    let mut again = broker.consumer(consumer_options("d", 10)).await.unwrap();
    assert!(again
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_fail_when_the_queue_is_gone() {
    let Some(url) = amqp_url() else { return };
    let queue = unique("confirm");
    let cleanup = AmqpCleanup::new(&url, &queue, false);
    let broker = open(&url, &queue, false).await;
    let producer = broker.producer().await.unwrap();
    producer.enqueue(&bodies(500, "confirm")).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(500));
    // Delete the queue behind the broker's back: a publish is now unroutable, and enqueue
    // must say so instead of reporting a message RabbitMQ dropped as durable.
    let conn = raw_connect(&url).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(&format!("geoprov.{queue}"), QueueDeleteOptions::default())
        .await
        .unwrap();
    let err = producer.enqueue(&bodies(3, "lost")).await.unwrap_err();
    assert!(err.to_string().contains("could not route"), "{err}");
    let _ = conn.close(200, "done").await;
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_reason_headers_and_can_be_listed_replayed_and_purged() {
    let Some(url) = amqp_url() else { return };
    let queue = unique("dlq");
    let _cleanup = AmqpCleanup::new(&url, &queue, false);
    let broker = open(&url, &queue, false).await;
    let sent = bodies(3, "dlq");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = broker.consumer(consumer_options("c", 10)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(consumer.receive(10, Duration::from_secs(2)).await.unwrap());
    }
    let items: Vec<_> = got
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), format!("reason number {i}")))
        .collect();
    consumer.dead_letter(&items).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));

    // The raw message: original body, reason and bookkeeping in headers.
    let conn = raw_connect(&url).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let raw = ch
        .basic_get(
            &format!("geoprov.{queue}.dead"),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(raw.delivery.data, sent[0].to_vec());
    let headers = raw.delivery.properties.headers().clone().unwrap();
    let text = |k: &str| match headers.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("header {k}: {other:?}"),
    };
    assert_eq!(text(HEADER_REASON), "reason number 0");
    assert!(chrono::DateTime::parse_from_rfc3339(&text(HEADER_DEAD_AT)).is_ok());
    assert!(uuid::Uuid::parse_str(&text(HEADER_DEAD_ID)).is_ok());
    assert!(matches!(
        headers.inner().get(HEADER_ATTEMPTS),
        Some(AMQPValue::LongLongInt(1))
    ));
    assert_eq!(raw.delivery.properties.delivery_mode(), &Some(2));
    ch.basic_nack(
        raw.delivery.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .unwrap();
    let _ = conn.close(200, "done").await;

    let dlq = broker.dead_letters().await.unwrap();
    assert_eq!(dlq.count().await.unwrap(), 3);
    let letters = dlq.list(10).await.unwrap();
    assert_eq!(letters.len(), 3);
    assert_eq!(
        letters
            .iter()
            .map(|l| l.reason.as_str())
            .collect::<Vec<_>>(),
        ["reason number 0", "reason number 1", "reason number 2"],
        "listing keeps the order"
    );
    assert_eq!(letters[1].body, sent[1]);
    assert_eq!(dlq.count().await.unwrap(), 3, "listing takes nothing");

    // Replay one by id: back on the queue with a fresh budget, the others stay.
    let id = letters[1].id.clone();
    assert_eq!(dlq.replay(Some(&[id])).await.unwrap(), 1);
    assert_eq!(dlq.count().await.unwrap(), 2);
    let back = consumer.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, sent[1]);
    assert_eq!(back[0].attempt, 1, "replay resets the attempts");
    consumer.ack(&[back[0].tag.clone()]).await.unwrap();

    // Purge one by id, then all.
    let left = dlq.list(10).await.unwrap();
    assert_eq!(dlq.purge(Some(&[left[0].id.clone()])).await.unwrap(), 1);
    let left_after = dlq.list(10).await.unwrap();
    assert_eq!(left_after.len(), 1);
    assert_eq!(left_after[0].id, left[1].id);
    assert_eq!(dlq.purge(None).await.unwrap(), 1);
    assert_eq!(dlq.count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_deliveries_come_back_when_the_consumer_connection_drops() {
    let Some(url) = amqp_url() else { return };
    let queue = unique("redeliver");
    let _cleanup = AmqpCleanup::new(&url, &queue, false);
    let broker = open(&url, &queue, false).await;
    let sent = bodies(3, "redeliver");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut first = broker.consumer(consumer_options("a", 10)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(first.receive(10, Duration::from_secs(2)).await.unwrap());
    }
    // Prefetch keeps them with this consumer: another one gets nothing meanwhile.
    let mut second = broker.consumer(consumer_options("b", 10)).await.unwrap();
    assert!(second
        .receive(10, Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    // Holding across a long "outage" is fine: extend is a no-op and nothing moves.
    let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
    first.extend(&tags).await.unwrap();
    drop(first); // the connection closes without an ack
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while again.len() < 3 && Instant::now() < deadline {
        again.extend(
            second
                .receive(10, Duration::from_millis(500))
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        again.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        sent
    );
    assert!(again.iter().all(|d| d.attempt == 2), "redelivered counts");
    let tags: Vec<_> = again.iter().map(|d| d.tag.clone()).collect();
    second.ack(&tags).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_later_republishes_after_the_delay_with_one_more_attempt() {
    let Some(url) = amqp_url() else { return };
    let queue = unique("retry");
    let _cleanup = AmqpCleanup::new(&url, &queue, false);
    let broker = open(&url, &queue, false).await;
    let sent = bodies(1, "retry");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = broker.consumer(consumer_options("c", 10)).await.unwrap();
    let got = consumer.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    let started = Instant::now();
    consumer
        .retry_later(&[got[0].tag.clone()], Duration::from_millis(1500))
        .await
        .unwrap();
    assert_eq!(
        broker.depth().await.unwrap(),
        Some(1),
        "waiting in the delay queue"
    );
    assert!(consumer
        .receive(10, Duration::from_millis(800))
        .await
        .unwrap()
        .is_empty());
    let mut back = Vec::new();
    while back.is_empty() && started.elapsed() < Duration::from_secs(10) {
        back = consumer
            .receive(10, Duration::from_millis(500))
            .await
            .unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, sent[0]);
    assert_eq!(back[0].attempt, 2);
    // No delay: straight back to the queue.
    consumer
        .retry_later(&[back[0].tag.clone()], Duration::ZERO)
        .await
        .unwrap();
    let third = consumer.receive(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].attempt, 3);
    consumer.ack(&[third[0].tag.clone()]).await.unwrap();
}

/// The reference Celery app on this RabbitMQ, with a queue of its own.
fn celery_env(url: &str, name: &str) -> (CeleryEnv, AmqpCleanup) {
    let queue = unique(name);
    let cleanup = AmqpCleanup::new(url, &queue, true);
    let env = CeleryEnv {
        broker: url.to_string(),
        queue,
        prefix: String::new(),
        result_backend: None,
        visibility_timeout: None,
    };
    (env, cleanup)
}

fn start_worker(env: &CeleryEnv, data: &Path, extra: &[&str]) -> WorkerProc {
    let mut args: Vec<String> = vec![
        "--broker".into(),
        env.broker.clone(),
        "--celery".into(),
        "--queue".into(),
        env.queue.clone(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    WorkerProc::start(data, &refs)
}

fn assert_same_ids(data: &Path, expected: &[String], log: &str) {
    let stored = stored_ids(data);
    let set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), set.len(), "no duplicate rows");
    let want: HashSet<&String> = expected.iter().collect();
    assert_eq!(want.len(), expected.len(), "Python made distinct payloads");
    assert_eq!(set.len(), want.len(), "row count; log:\n{log}");
    assert!(set == want, "stored event ids are the ones Python computes");
}

/// What `rabbitmqctl` says about the queues whose names contain `queue` and about every
/// channel, for a failure message (empty when rabbitmqctl is not on this machine).
fn rabbitmq_state(queue: &str) -> String {
    let run = |args: &[&str]| {
        Command::new("rabbitmqctl")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let queues = run(&[
        "list_queues",
        "-q",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
    ]);
    let queues: String = queues
        .lines()
        .filter(|l| l.contains(queue))
        .map(|l| format!("{l}\n"))
        .collect();
    let channels = run(&[
        "list_channels",
        "-q",
        "connection",
        "pid",
        "consumer_count",
        "messages_unacknowledged",
    ]);
    format!("{queues}channels:\n{channels}")
}

/// Ready messages in a queue (passive declare).
fn ready(url: &str, queue: &str) -> u32 {
    let (url, queue) = (url.to_owned(), queue.to_owned());
    block_on(async move {
        let conn = raw_connect(&url).await.ok()?;
        let ch = conn.create_channel().await.ok()?;
        let q = ch
            .queue_declare(
                &queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .ok()?;
        let _ = conn.close(200, "counted").await;
        Some(q.message_count())
    })
    .flatten()
    .unwrap_or(u32::MAX)
}

#[test]
fn python_celery_client_5000_delay_calls_over_rabbitmq_are_stored_with_python_event_ids() {
    let Some(url) = amqp_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "py5k");
    let ids = env.tool(&py, &["publish", "5000", "py5k", SECRET_DB_URI]);
    assert_eq!(ids.len(), 5000);
    assert_eq!(
        ready(&url, &env.queue),
        5000,
        "Celery declared and filled its queue"
    );
    let data = tempfile::tempdir().unwrap();
    let mut worker = start_worker(&env, data.path(), &["--concurrency", "2"]);
    let done = wait_until(Duration::from_secs(120), || {
        stored_ids(data.path()).len() >= 5000
    });
    let log = worker.log_text();
    assert!(done, "not all stored; log:\n{log}");
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
    let log = worker.log_text();
    assert!(
        !log.contains("Sup3rS3cret"),
        "the db_uri password must never be logged"
    );
    assert_eq!(ready(&url, &env.queue), 0);
    assert_eq!(ready(&url, &format!("geoprov.{}.dead", env.queue)), 0);
}

#[test]
fn celery_worker_killed_mid_stream_then_restarted_stores_every_event_once_over_rabbitmq() {
    let Some(url) = amqp_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "crash");
    let ids = env.tool(&py, &["publish", "3000", "crash", SECRET_DB_URI]);
    let data = tempfile::tempdir().unwrap();
    let mut first = start_worker(
        &env,
        data.path(),
        &["--rate-limit", "1500/s", "--batch-size", "200"],
    );
    assert!(
        wait_until(Duration::from_secs(60), || stored_ids(data.path()).len()
            >= 600),
        "no progress:\n{}",
        first.log_text()
    );
    first.kill9();
    let at_kill = stored_ids(data.path()).len();
    assert!(at_kill < 3000, "killed mid-stream");
    let mut second = start_worker(&env, data.path(), &[]);
    let done = wait_until(Duration::from_secs(90), || {
        stored_ids(data.path()).len() >= 3000
    });
    let log = second.log_text();
    assert!(
        done,
        "not all stored after restart ({} stored, {} ready in the queue); rabbitmqctl:\n{}\nlog:\n{log}",
        stored_ids(data.path()).len(),
        ready(&url, &env.queue),
        rabbitmq_state(&env.queue)
    );
    assert!(
        wait_until(Duration::from_secs(10), || ready(&url, &env.queue) == 0),
        "everything acknowledged"
    );
    assert_eq!(second.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
    eprintln!("crash: {at_kill} stored before the SIGKILL, 3000 after the restart");
}

#[test]
fn poison_and_foreign_messages_over_rabbitmq_become_dead_letters_with_reasons() {
    let Some(url) = amqp_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "poison");
    let ids = env.tool(&py, &["poison", "poison", SECRET_DB_URI]);
    assert_eq!(ids.len(), 3);
    let data = tempfile::tempdir().unwrap();
    let mut worker = start_worker(&env, data.path(), &[]);
    let dead = format!("geoprov.{}.dead", env.queue);
    let done = wait_until(Duration::from_secs(30), || {
        stored_ids(data.path()).len() >= 3 && ready(&url, &dead) >= 5
    });
    let log = worker.log_text();
    assert!(done, "log:\n{log}");
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
    let broker_url = url.clone();
    let queue = env.queue.clone();
    let letters = block_on(async move {
        let broker = open(&broker_url, &queue, true).await;
        broker
            .dead_letters()
            .await
            .unwrap()
            .list(100)
            .await
            .unwrap()
    })
    .expect("list dead letters");
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 5, "{reasons:?}");
    for needle in [
        "unknown task 'other_app.tasks.resize'",
        "application/x-python-serialize",
        "expired",
        "protocol v1",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no dead letter says {needle:?}: {reasons:?}"
        );
    }
    let malformed = letters
        .iter()
        .find(|l| l.body.as_ref() == b"{this is not json")
        .expect("the malformed body, byte for byte");
    assert!(
        malformed.reason.contains("celery message"),
        "{}",
        malformed.reason
    );
    assert!(!log.contains("Sup3rS3cret"));
    assert!(
        !reasons.iter().any(|r| r.contains("Sup3rS3cret")),
        "{reasons:?}"
    );
}

#[test]
fn results_of_rabbitmq_tasks_reach_python_async_result_get_through_redis() {
    let Some(url) = amqp_url() else { return };
    let Some(redis) = redis_url() else { return };
    let Some(py) = python() else { return };
    let (mut env, _cleanup) = celery_env(&url, "res");
    env.result_backend = Some(redis.clone());
    let data = tempfile::tempdir().unwrap();
    let mut worker = start_worker(&env, data.path(), &["--result-backend", redis.as_str()]);
    let lines = env.tool(&py, &["results", "3", "res", SECRET_DB_URI]);
    assert_eq!(lines.len(), 3, "{}", worker.log_text());
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    for line in &lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert_eq!(parts[1], format!("SUCCESS:{}", parts[0]));
        let _: () = redis::cmd("DEL")
            .arg(format!("celery-task-meta-{}", parts[2]))
            .query(&mut conn)
            .unwrap();
    }
    assert_eq!(worker.terminate(), Some(0));
}

#[test]
fn countdown_tasks_over_rabbitmq_are_not_stored_before_their_eta() {
    let Some(url) = amqp_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "eta");
    let data = tempfile::tempdir().unwrap();
    // Declare the queue first (as Celery would) so the worker can start before the client.
    let (broker_url, queue) = (url.clone(), env.queue.clone());
    block_on(async move {
        open(&broker_url, &queue, true).await;
    });
    let mut worker = start_worker(&env, data.path(), &[]);
    let published = Instant::now();
    let ids = env.tool(
        &py,
        &["publish", "3", "eta", SECRET_DB_URI, "--countdown", "4"],
    );
    std::thread::sleep(Duration::from_millis(2500));
    if published.elapsed() < Duration::from_millis(3800) {
        assert_eq!(stored_ids(data.path()).len(), 0, "stored before its eta");
    }
    let done = wait_until(Duration::from_secs(40), || {
        stored_ids(data.path()).len() >= 3
    });
    let log = worker.log_text();
    assert!(done, "log:\n{log}");
    assert!(published.elapsed() >= Duration::from_secs(4));
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
}

/// A RabbitMQ node of the test's own on spare ports, with its data and logs in a temporary
/// directory: plain AMQP, or only a TLS listener with mutual TLS required. It can be stopped
/// and started again (same node, ports and data); it is killed when dropped.
struct OwnRabbit {
    dir: tempfile::TempDir,
    server: String,
    node: String,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
}

impl OwnRabbit {
    /// Start one, or `None` (after printing why) when rabbitmq-server or openssl is missing.
    fn start(tls: bool) -> Option<OwnRabbit> {
        let server = ["/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"]
            .into_iter()
            .find(|p| {
                Path::new(p).exists()
                    || Command::new("which")
                        .arg(p)
                        .stdout(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
            });
        let openssl = !tls
            || Command::new("openssl")
                .arg("version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        let (Some(server), true) = (server, openssl) else {
            if required() {
                panic!("rabbitmq-server or openssl is missing (GEOPROV_REQUIRE_SERVICES=1)");
            }
            eprintln!("skipped: no rabbitmq-server/openssl to start a node of our own");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        let config = if tls {
            make_certs(d);
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = {port}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n",
                ca = d.join("ca.pem").display(),
                cert = d.join("server.pem").display(),
                key = d.join("server.key").display(),
            )
        } else {
            format!("listeners.tcp.default = {port}\n")
        };
        std::fs::write(d.join("rabbitmq.conf"), config).expect("config");
        std::fs::write(d.join("enabled_plugins"), "[].\n").expect("plugins file");
        let mut me = OwnRabbit {
            dir,
            server: server.to_owned(),
            node: format!(
                "geoprovit{}@localhost",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            port,
            dist_port: free_port(),
            child: None,
        };
        me.spawn();
        Some(me)
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("out.log"))
            .expect("log");
        let child = Command::new(&self.server)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", d.join("plugins-expand"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            // Crash dumps (erl_crash.dump, MnesiaCore.*) land in the temporary directory.
            .env("ERL_CRASH_DUMP", d.join("erl_crash.dump"))
            .current_dir(d)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn rabbitmq-server");
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(Duration::from_secs(90), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "own RabbitMQ node did not start:\n{}",
            std::fs::read_to_string(d.join("out.log")).unwrap_or_default()
        );
    }

    /// The Erlang VM's OS pid, from the pid file the node writes once it runs. Only this
    /// process and the start script are ever signalled: never a process group.
    fn vm_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.file("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid > 1)
    }

    /// Stop the node gracefully (SIGTERM to the start script, which stops the VM) and wait
    /// for it to exit; SIGKILL the VM if it is still there after 30 s.
    fn stop(&mut self) {
        let vm = self.vm_pid();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = vm {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(self.file("pid"));
    }

    /// Stop it, wait `down`, start it again on the same ports and data.
    fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    fn url(&self, tls: bool) -> String {
        if tls {
            format!("amqps://guest:guest@localhost:{}/%2f", self.port)
        } else {
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        if let Some(pid) = self.vm_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Open `url` for `options`, retrying while the node finishes booting (it may accept TCP a
/// moment before AMQP is ready).
async fn open_when_ready(url: &str, options: &BrokerOptions) -> Arc<dyn Broker> {
    let mut last = None;
    for _ in 0..60 {
        match broker::open(&url.parse().unwrap(), options).await {
            Ok(b) => return b,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("cannot open {url}: {last:?}");
}

/// A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate.
fn make_certs(d: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=geoprov test CA",
    ]);
    for who in ["server", "client"] {
        let (key, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        let cn = format!(
            "/CN={}",
            if who == "server" {
                "localhost"
            } else {
                "geoprov"
            }
        );
        run(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &cn,
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    // The other CA: a client trusting only it must refuse the server.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
        "-days",
        "2",
        "-subj",
        "/CN=some other CA",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_and_a_client_certificate() {
    let Some(node) = OwnRabbit::start(true) else {
        return;
    };
    let url = node.url(true);
    let queue = unique("tls");
    let tls = TlsFiles {
        ca: Some(node.file("ca.pem")),
        cert: Some(node.file("client.pem")),
        key: Some(node.file("client.key")),
    };
    let options = BrokerOptions {
        queue: Some(queue.clone()),
        tls: tls.clone(),
        ..BrokerOptions::default()
    };
    let broker = open_when_ready(&url, &options).await;
    let sent = bodies(20, "tls");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = broker.consumer(consumer_options("c", 50)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        let more = consumer.receive(50, Duration::from_secs(2)).await.unwrap();
        assert!(!more.is_empty());
        got.extend(more);
    }
    assert_eq!(got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(), sent);
    let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
    consumer.ack(&tags).await.unwrap();

    // No client certificate: the server (fail_if_no_peer_cert) refuses.
    let no_cert = BrokerOptions {
        queue: Some(queue.clone()),
        tls: TlsFiles {
            ca: Some(node.file("ca.pem")),
            ..TlsFiles::default()
        },
        ..BrokerOptions::default()
    };
    assert!(broker::open(&url.parse().unwrap(), &no_cert).await.is_err());
    // A CA that did not sign the server's certificate: the client refuses.
    let wrong_ca = BrokerOptions {
        queue: Some(queue.clone()),
        tls: TlsFiles {
            ca: Some(node.file("other.pem")),
            ..tls
        },
        ..BrokerOptions::default()
    };
    let err = broker::open(&url.parse().unwrap(), &wrong_ca)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("certificate"), "{err}");
    // TLS files with a plain amqp:// URL are a configuration error.
    let plain = url.replacen("amqps://", "amqp://", 1);
    assert!(matches!(
        broker::open(&plain.parse().unwrap(), &wrong_ca).await.err(),
        Some(broker::BrokerError::Config(_))
    ));
}

#[test]
fn worker_and_producer_reconnect_by_themselves_after_a_rabbitmq_restart() {
    let Some(mut node) = OwnRabbit::start(false) else {
        return;
    };
    let url = node.url(false);
    let queue = unique("restart");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = BrokerOptions {
        queue: Some(queue.clone()),
        ..BrokerOptions::default()
    };
    let broker = rt.block_on(open_when_ready(&url, &options));
    let producer = rt.block_on(broker.producer()).unwrap();
    let first = bodies(1500, "restart-a");
    rt.block_on(producer.enqueue(&first)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut worker = WorkerProc::start(
        data.path(),
        &[
            "--broker",
            &url,
            "--queue",
            &queue,
            "--rate-limit",
            "500/s",
            "--batch-size",
            "100",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), || stored_ids(data.path()).len()
            >= 300),
        "no progress:\n{}",
        worker.log_text()
    );
    node.restart(Duration::from_secs(1));
    assert!(
        stored_ids(data.path()).len() < 1500,
        "the restart happened mid-stream"
    );
    // The same producer publishes again once RabbitMQ is back (its next call reconnects).
    let second = bodies(300, "restart-b");
    let mut sent = false;
    for _ in 0..60 {
        if rt.block_on(producer.enqueue(&second)).is_ok() {
            sent = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(sent, "the producer reconnected");
    let done = wait_until(Duration::from_secs(120), || {
        stored_ids(data.path()).len() >= 1800
    });
    assert!(
        done,
        "not all stored after the restart; log:\n{}",
        worker.log_text()
    );
    // Each worker task says so when its own next attempt succeeds, which may come after the
    // other task drained the queue (its backoff grew during the outage).
    let recovered = wait_until(Duration::from_secs(60), || {
        worker.log_text().contains("Broker available again")
    });
    assert!(
        recovered,
        "the worker saw the outage and recovered by itself; log:\n{}",
        worker.log_text()
    );
    let code = worker.terminate();
    assert_eq!(
        code,
        Some(0),
        "exit on SIGTERM; log:\n{}",
        worker.log_text()
    );
    let stored = stored_ids(data.path());
    let set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), 1800);
    assert_eq!(set.len(), 1800, "no duplicate rows");
    drop(broker);
    drop(rt);
}

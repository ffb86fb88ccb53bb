//! Celery-compatible Redis broker against a real server and the real Python Celery client and
//! worker: kombu's unacked bookkeeping, the visibility sweep, 5,000 `.delay()` calls, a
//! SIGKILLed worker, a restarted Redis, poison and foreign messages, results for
//! `AsyncResult.get()`, `countdown`, and a mixed fleet of Python and geoprov workers.
//!
//! Every test uses its own kombu `global_keyprefix` (and queue name), so the DB-wide
//! `unacked*` keys of one test are never swept by another.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geoprov::broker::{self, Broker, BrokerOptions, ConsumerOptions, DeliveryTag};

use super::redis_support::{
    python, redis_url, stored_ids, sync_conn, unique, CeleryEnv, KeyCleanup, OwnRedis, WorkerProc,
};
use super::support::{valid_events, wait_until};

/// The `db_uri` the Python client passes: a password that must never reach a log.
const SECRET_DB_URI: &str = "postgresql://lineage:Sup3rS3cret-pw@db.invalid:5432/lineage";

fn celery_env(url: &str, name: &str) -> (CeleryEnv, KeyCleanup) {
    let prefix = format!("{}:", unique(name));
    let env = CeleryEnv {
        broker: url.to_string(),
        queue: unique(name),
        prefix: prefix.clone(),
        result_backend: None,
        visibility_timeout: None,
    };
    let cleanup = KeyCleanup {
        url: url.to_string(),
        patterns: vec![format!("{prefix}*")],
    };
    (env, cleanup)
}

async fn open_celery(env: &CeleryEnv) -> Arc<dyn Broker> {
    let options = BrokerOptions {
        queue: Some(env.queue.clone()),
        celery: true,
        key_prefix: Some(env.prefix.clone()),
        ..BrokerOptions::default()
    };
    broker::open(&env.broker.parse().unwrap(), &options)
        .await
        .expect("open celery broker")
}

fn hlen(url: &str, key: &str) -> u64 {
    redis::cmd("HLEN")
        .arg(key)
        .query(&mut sync_conn(url))
        .unwrap_or(0)
}

#[tokio::test]
async fn celery_take_registers_unacked_like_kombu_and_ack_clears() {
    let Some(url) = redis_url() else { return };
    let (env, _cleanup) = celery_env(&url, "reg");
    let broker = open_celery(&env).await;
    let events: Vec<Bytes> = valid_events(4, "reg")
        .into_iter()
        .map(Bytes::from)
        .collect();
    crate::support::enqueue(broker.as_ref(), &events).await;
    assert_eq!(broker.depth().await.unwrap(), Some(4));
    let mut consumer = broker
        .consumer(ConsumerOptions {
            visibility_timeout: Duration::from_secs(60),
            name: "c".into(),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap();
    let got = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    let mut conn = sync_conn(&url);
    let unacked = format!("{}unacked", env.prefix);
    for d in &got {
        let DeliveryTag::Text(tag) = &d.tag else {
            panic!("kombu tags are text")
        };
        let value: Vec<u8> = redis::cmd("HGET")
            .arg(&unacked)
            .arg(tag)
            .query(&mut conn)
            .unwrap();
        // '[' .. envelope as popped .. ',' .. exchange .. ',' .. routing key .. ']'
        let mut expected = b"[".to_vec();
        expected.extend_from_slice(&d.body);
        expected.extend_from_slice(format!(",\"\",\"{}\"]", env.queue).as_bytes());
        assert_eq!(value, expected);
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(format!("{}unacked_index", env.prefix))
            .arg(tag)
            .query(&mut conn)
            .unwrap();
        assert!(score.is_some());
    }
    let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
    consumer.ack(&tags[..2]).await.unwrap();
    assert_eq!(hlen(&url, &unacked), 2);
    consumer.ack(&tags[2..]).await.unwrap();
    assert_eq!(hlen(&url, &unacked), 0);
    assert_eq!(broker.depth().await.unwrap(), Some(0));
}

#[tokio::test]
async fn celery_sweep_restores_after_the_visibility_timeout_with_priorities_served_in_order() {
    let Some(url) = redis_url() else { return };
    let (env, _cleanup) = celery_env(&url, "sweep");
    let broker = open_celery(&env).await;
    // One message on priority step 3, then two on step 0: step 0 is served first.
    let payload = |i: usize| {
        geoprov::event::python_json::parse(valid_events(1, &format!("p{i}"))[0].as_bytes()).unwrap()
    };
    let envelope = |i: usize| {
        geoprov::celery::build_redis_envelope(
            &payload(i),
            geoprov::celery::DEFAULT_TASK_NAME,
            &env.queue,
            &format!("id-{i}"),
            &format!("tag-{i}"),
        )
    };
    let mut conn = sync_conn(&url);
    let _: () = redis::cmd("LPUSH")
        .arg(format!("{}{}\x06\x163", env.prefix, env.queue))
        .arg(envelope(0))
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg(format!("{}{}", env.prefix, env.queue))
        .arg(envelope(1))
        .arg(envelope(2))
        .query(&mut conn)
        .unwrap();
    let vt = Duration::from_secs(1);
    let mut first = broker
        .consumer(ConsumerOptions {
            visibility_timeout: vt,
            name: "a".into(),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap();
    let got = first.receive(2, Duration::from_millis(500)).await.unwrap();
    let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
    assert_eq!(
        tags,
        vec![
            DeliveryTag::Text("tag-1".into()),
            DeliveryTag::Text("tag-2".into())
        ]
    );
    // "Crash": never ack. After the visibility timeout a new consumer's start-up sweep puts
    // them back (RPUSH: consumed next) with kombu's redelivered flags.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut second = broker
        .consumer(ConsumerOptions {
            visibility_timeout: vt,
            name: "b".into(),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..10 {
        again.extend(
            second
                .receive(10, Duration::from_millis(200))
                .await
                .unwrap(),
        );
        if again.len() >= 3 {
            break;
        }
    }
    assert_eq!(again.len(), 3);
    let restored: Vec<_> = again
        .iter()
        .filter(|d| d.tag != DeliveryTag::Text("tag-0".into()))
        .collect();
    assert_eq!(restored.len(), 2);
    for d in restored {
        assert_eq!(d.attempt, 2);
        let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["headers"]["redelivered"], true);
        assert_eq!(v["properties"]["delivery_info"]["redelivered"], true);
    }
    // Defer one (an eta): it stays unacked and comes back only after the delay.
    let deferred = again[0].tag.clone();
    second
        .retry_later(std::slice::from_ref(&deferred), Duration::from_secs(2))
        .await
        .unwrap();
    let rest: Vec<_> = again[1..].iter().map(|d| d.tag.clone()).collect();
    second.ack(&rest).await.unwrap();
    let mut third = broker
        .consumer(ConsumerOptions {
            visibility_timeout: vt,
            name: "c".into(),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap();
    assert!(third
        .receive(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut fourth = broker
        .consumer(ConsumerOptions {
            visibility_timeout: vt,
            name: "d".into(),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap();
    let back = fourth
        .receive(10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|d| d.tag.clone()).collect::<Vec<_>>(),
        vec![deferred]
    );
}

/// The flags and data dir of a geoprov worker on `env`.
fn start_worker(env: &CeleryEnv, data: &Path, extra: &[&str]) -> WorkerProc {
    let mut args: Vec<String> = env.geoprov_flags();
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

#[test]
fn python_celery_client_5000_delay_calls_are_stored_with_python_event_ids() {
    let Some(url) = redis_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "py5k");
    let ids = env.tool(&py, &["publish", "5000", "py5k", SECRET_DB_URI]);
    assert_eq!(ids.len(), 5000);
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
    assert_eq!(hlen(&url, &format!("{}unacked", env.prefix)), 0);
}

#[test]
fn celery_worker_killed_mid_stream_then_restarted_stores_every_event_once() {
    let Some(url) = redis_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "crash");
    let ids = env.tool(&py, &["publish", "3000", "crash", SECRET_DB_URI]);
    let data = tempfile::tempdir().unwrap();
    let mut first = start_worker(
        &env,
        data.path(),
        &[
            "--rate-limit",
            "1500/s",
            "--batch-size",
            "200",
            "--visibility-timeout",
            "2s",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), || stored_ids(data.path()).len()
            >= 600),
        "no progress:\n{}",
        first.log_text()
    );
    first.kill9();
    assert!(stored_ids(data.path()).len() < 3000, "killed mid-stream");
    let mut second = start_worker(&env, data.path(), &["--visibility-timeout", "2s"]);
    let done = wait_until(Duration::from_secs(90), || {
        stored_ids(data.path()).len() >= 3000
    });
    let log = second.log_text();
    assert!(done, "not all stored after restart; log:\n{log}");
    assert!(
        wait_until(Duration::from_secs(10), || hlen(
            &url,
            &format!("{}unacked", env.prefix)
        ) == 0),
        "everything acknowledged"
    );
    assert_eq!(second.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
}

#[test]
fn celery_worker_survives_a_redis_restart() {
    let Some(py) = python() else { return };
    let Some(mut redis) = OwnRedis::start(&[]) else {
        return;
    };
    let url = redis.url();
    let (env, _cleanup) = celery_env(&url, "rr");
    let mut ids = env.tool(&py, &["publish", "2000", "rr", SECRET_DB_URI]);
    let data = tempfile::tempdir().unwrap();
    let mut worker = start_worker(
        &env,
        data.path(),
        &["--rate-limit", "500/s", "--batch-size", "100"],
    );
    assert!(
        wait_until(Duration::from_secs(60), || stored_ids(data.path()).len()
            >= 400),
        "no progress:\n{}",
        worker.log_text()
    );
    redis.restart(Duration::from_secs(2));
    assert!(
        stored_ids(data.path()).len() < 2000,
        "the restart happened mid-stream"
    );
    ids.extend(env.tool(&py, &["publish", "500", "rr2", SECRET_DB_URI]));
    let done = wait_until(Duration::from_secs(120), || {
        stored_ids(data.path()).len() >= 2500
    });
    let log = worker.log_text();
    assert!(done, "not all stored after the restart; log:\n{log}");
    assert!(
        log.contains("Broker available again"),
        "the worker saw the outage and recovered by itself; log:\n{log}"
    );
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
}

#[test]
fn poison_and_foreign_messages_become_dead_letters_with_reasons() {
    let Some(url) = redis_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "poison");
    let ids = env.tool(&py, &["poison", "poison", SECRET_DB_URI]);
    assert_eq!(ids.len(), 3);
    let data = tempfile::tempdir().unwrap();
    let mut worker = start_worker(&env, data.path(), &[]);
    let dead_key = format!("{}geoprov:{}:dead", env.prefix, env.queue);
    let done = wait_until(Duration::from_secs(30), || {
        stored_ids(data.path()).len() >= 3
            && redis::cmd("XLEN")
                .arg(&dead_key)
                .query::<u64>(&mut sync_conn(&url))
                .unwrap_or(0)
                >= 5
    });
    let log = worker.log_text();
    assert!(done, "log:\n{log}");
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let letters = rt.block_on(async {
        let broker = open_celery(&env).await;
        broker
            .dead_letters()
            .await
            .unwrap()
            .list(100)
            .await
            .unwrap()
    });
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 5, "{reasons:?}");
    for needle in [
        "not a kombu message",
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
    assert!(letters
        .iter()
        .any(|l| l.body.as_ref() == b"{this is not json"));
    assert!(!log.contains("Sup3rS3cret"));
}

#[test]
fn results_reach_python_async_result_get() {
    let Some(url) = redis_url() else { return };
    let Some(py) = python() else { return };
    let (mut env, _cleanup) = celery_env(&url, "res");
    env.result_backend = Some(url.clone());
    let data = tempfile::tempdir().unwrap();
    let mut worker = start_worker(&env, data.path(), &["--result-backend", url.as_str()]);
    let lines = env.tool(&py, &["results", "3", "res", SECRET_DB_URI]);
    assert_eq!(lines.len(), 3, "{}", worker.log_text());
    let mut conn = sync_conn(&url);
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
fn countdown_tasks_are_not_stored_before_their_eta() {
    let Some(url) = redis_url() else { return };
    let Some(py) = python() else { return };
    let (env, _cleanup) = celery_env(&url, "eta");
    let data = tempfile::tempdir().unwrap();
    let mut worker = start_worker(&env, data.path(), &["--visibility-timeout", "30s"]);
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

/// Mixed fleet. A Python Celery worker running the reference task and a geoprov worker
/// consume the same queue at once, with the same visibility timeout.
///
/// The reference task writes into its own table (`seed_lineage_events` in a SQLite file named
/// by the task's `db_uri`), geoprov into its tamper-evident store: a Python process cannot
/// append Merkle leaves, so the two cannot share geoprov's table, and in a real migration the
/// union is what the auditors get (geoprov migrate adopts the seed table). The test asserts:
/// every event is in exactly one of the two tables (union = all, intersection = empty), each
/// table has no duplicates, both workers took part, and nothing is left queued or unacked.
#[test]
fn mixed_fleet_of_python_and_geoprov_workers_stores_every_event_once() {
    let Some(url) = redis_url() else { return };
    let Some(py) = python() else { return };
    let (mut env, _cleanup) = celery_env(&url, "mixed");
    env.visibility_timeout = Some(120);
    let data = tempfile::tempdir().unwrap();
    let seed_db = data.path().join("seed.db");
    let db_uri = format!("sqlite:///{}", seed_db.display());
    let ids = env.tool(&py, &["publish", "3000", "mixed", &db_uri]);
    let python_log = std::fs::File::create(data.path().join("celery.log")).unwrap();
    let mut celery = env
        .command(&py)
        .args([
            "-m",
            "celery",
            "-A",
            "lineage_tasks",
            "worker",
            "-Q",
            &env.queue,
            "-c",
            "2",
            "-P",
            "threads",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ])
        .stdout(Stdio::null())
        .stderr(python_log)
        .spawn()
        .expect("start the Python Celery worker");
    // Let the Python worker get going first (it starts slower), then run both at once.
    let python_started = wait_until(Duration::from_secs(90), || {
        rusqlite::Connection::open(&seed_db)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM seed_lineage_events", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .is_ok_and(|n| n > 0)
    });
    assert!(python_started, "the Python Celery worker stored nothing");
    let mut geoprov = start_worker(
        &env,
        data.path(),
        &[
            "--visibility-timeout",
            "120s",
            "--rate-limit",
            "300/s",
            "--batch-size",
            "50",
        ],
    );
    let queued = |url: &str| -> u64 {
        let mut conn = sync_conn(url);
        let mut n = 0u64;
        for suffix in ["", "\x06\x163", "\x06\x166", "\x06\x169"] {
            n += redis::cmd("LLEN")
                .arg(format!("{}{}{suffix}", env.prefix, env.queue))
                .query::<u64>(&mut conn)
                .unwrap_or(0);
        }
        n + hlen(url, &format!("{}unacked", env.prefix))
    };
    let drained = wait_until(Duration::from_secs(180), || queued(&url) == 0);
    let _ = Command::new("kill")
        .args(["-TERM", &celery.id().to_string()])
        .status();
    let _ = celery.wait();
    assert_eq!(geoprov.terminate(), Some(0));
    let log = geoprov.log_text();
    assert!(drained, "queue not drained; geoprov log:\n{log}");

    let ours: Vec<String> = stored_ids(data.path());
    let theirs: Vec<String> = {
        let conn = rusqlite::Connection::open(&seed_db).expect("seed db");
        let mut stmt = conn
            .prepare("SELECT event_id FROM seed_lineage_events")
            .expect("seed table");
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let ours_set: HashSet<&String> = ours.iter().collect();
    let theirs_set: HashSet<&String> = theirs.iter().collect();
    assert_eq!(ours.len(), ours_set.len());
    assert_eq!(theirs.len(), theirs_set.len());
    assert!(!ours.is_empty(), "geoprov took part");
    assert!(!theirs.is_empty(), "the Python worker took part");
    assert!(
        ours_set.is_disjoint(&theirs_set),
        "an event was run by both workers"
    );
    eprintln!(
        "mixed fleet: geoprov stored {}, the Python worker {}",
        ours.len(),
        theirs.len()
    );
    let union: HashSet<&String> = ours_set.union(&theirs_set).copied().collect();
    let want: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        union.len(),
        3000,
        "geoprov {} + python {}",
        ours.len(),
        theirs.len()
    );
    assert!(union == want);
}

#[tokio::test]
async fn celery_dead_letters_are_atomic_and_replay_to_the_queue() {
    let Some(url) = redis_url() else { return };
    let (env, _cleanup) = celery_env(&url, "dlq");
    let broker = open_celery(&env).await;
    let events: Vec<Bytes> = valid_events(2, "dlq")
        .into_iter()
        .map(Bytes::from)
        .collect();
    crate::support::enqueue(broker.as_ref(), &events).await;
    let mut consumer = broker
        .consumer(ConsumerOptions {
            visibility_timeout: Duration::from_secs(60),
            name: "c".into(),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap();
    let got = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let items: Vec<_> = got
        .iter()
        .map(|d| (d.clone(), "testing".to_string()))
        .collect();
    consumer.dead_letter(&items).await.unwrap();
    assert_eq!(hlen(&url, &format!("{}unacked", env.prefix)), 0);
    assert_eq!(
        hlen(
            &url,
            &format!("{}geoprov:{}:attempts", env.prefix, env.queue)
        ),
        0
    );
    let dlq = broker.dead_letters().await.unwrap();
    let letters = dlq.list(10).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].body, got[0].body, "the envelope byte for byte");
    assert_eq!(letters[0].reason, "testing");
    assert_eq!(dlq.replay(None).await.unwrap(), 2);
    assert_eq!(dlq.count().await.unwrap(), 0);
    assert_eq!(broker.depth().await.unwrap(), Some(2));
    let again = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        got.iter().map(|d| d.body.clone()).collect::<Vec<_>>()
    );
}

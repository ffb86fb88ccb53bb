//! Celery-compatible Redis broker against a real server and the real Python Celery client and
//! worker: the `Broker` contract (the shared suite), kombu's unacked bookkeeping, the visibility
//! sweep with priorities; with Python (the shared Celery scenarios) 5,000 `.delay()` calls, a
//! SIGKILLed worker, poison and foreign messages, results for `AsyncResult.get()`, `countdown`;
//! a restarted Redis, and a mixed fleet of Python and geoprov workers.
//!
//! Every test uses its own kombu `global_keyprefix` (and queue name), so the DB-wide
//! `unacked*` keys of one test are never swept by another.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use geoprov::broker::{
    self, Broker, BrokerOptions, Consumer, ConsumerOptions, Delivery, DeliveryTag,
};

use super::redis_support::{
    assert_same_ids, interrupt_mid_stream, python, redis_traits, redis_url, stored_ids, stores,
    sync_conn, CeleryEnv, KeyCleanup, OwnRedis, SECRET_DB_URI,
};
use super::support::{valid_events, wait_until};
use crate::broker_suite::{broker_suite, celery, Backend, Traits, Wire};

/// The Redis server, the Python with Celery, and a Celery environment of the test's own (with
/// its cleanup guard), or `None` after printing why the test is skipped.
fn python_celery(name: &str) -> Option<(String, PathBuf, CeleryEnv, KeyCleanup)> {
    let url = redis_url()?;
    let py = python()?;
    let (env, cleanup) = CeleryEnv::on_redis(&url, name);
    Some((url, py, env, cleanup))
}

/// The broker options for consuming `env`'s queue as Celery's.
fn celery_options(env: &CeleryEnv) -> BrokerOptions {
    BrokerOptions {
        queue: Some(env.queue.clone()),
        celery: true,
        key_prefix: Some(env.prefix.clone()),
        ..BrokerOptions::default()
    }
}

async fn open_celery(env: &CeleryEnv) -> Arc<dyn Broker> {
    broker::open(&env.broker.parse().unwrap(), &celery_options(env))
        .await
        .expect("open celery broker")
}

/// kombu lists under a key prefix of the test's own, for the shared suite.
async fn celery_backend() -> Option<Backend> {
    let url = redis_url()?;
    let (env, cleanup) = CeleryEnv::on_redis(&url, "suite");
    Some(Backend {
        url: url.parse().unwrap(),
        options: celery_options(&env),
        wire: Wire::Celery,
        traits: Traits {
            opaque_bodies: false,
            // kombu's unacked messages, and those waiting out a delay, live in a hash beside
            // the lists.
            depth_counts_in_flight: false,
            depth_counts_delayed: false,
            // Given back with RPUSH when dropped, as kombu does at shutdown.
            drop_returns_at_once: true,
            redelivery_in_order: false,
            // The visibility sweep runs at a consumer's start and every 10 s.
            ..redis_traits(Duration::from_secs(1), Duration::from_secs(12))
        },
        _cleanup: Box::new(cleanup),
    })
}

broker_suite!(conformance, super::celery_backend);

/// A consumer named `name` with visibility timeout `vt`.
async fn open_consumer(broker: &dyn Broker, name: &str, vt: Duration) -> Box<dyn Consumer> {
    broker
        .consumer(ConsumerOptions {
            visibility_timeout: vt,
            name: name.into(),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap()
}

/// Enqueue `n` events on `env`'s queue through the broker and take them all with one consumer
/// (visibility timeout 60 s).
async fn take_events(
    env: &CeleryEnv,
    n: usize,
) -> (Arc<dyn Broker>, Box<dyn Consumer>, Vec<Delivery>) {
    let broker = open_celery(env).await;
    let events: Vec<Bytes> = valid_events(n, "take")
        .into_iter()
        .map(Bytes::from)
        .collect();
    crate::support::enqueue(broker.as_ref(), &events).await;
    assert_eq!(broker.depth().await.unwrap(), Some(n as u64));
    let mut consumer = open_consumer(broker.as_ref(), "c", Duration::from_secs(60)).await;
    let got = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(got.len(), n);
    (broker, consumer, got)
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
    let (env, _cleanup) = CeleryEnv::on_redis(&url, "reg");
    let (broker, mut consumer, got) = take_events(&env, 4).await;
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
    let (env, _cleanup) = CeleryEnv::on_redis(&url, "sweep");
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
    let mut first = open_consumer(broker.as_ref(), "a", vt).await;
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
    let mut second = open_consumer(broker.as_ref(), "b", vt).await;
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
    let mut third = open_consumer(broker.as_ref(), "c", vt).await;
    assert!(third
        .receive(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut fourth = open_consumer(broker.as_ref(), "d", vt).await;
    let back = fourth
        .receive(10, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|d| d.tag.clone()).collect::<Vec<_>>(),
        vec![deferred]
    );
}

#[test]
fn python_celery_client_5000_delay_calls_are_stored_with_python_event_ids() {
    let Some((url, py, env, _cleanup)) = python_celery("py5k") else {
        return;
    };
    celery::delay_calls_are_stored_with_python_event_ids(&env, &py, 5000, || {});
    assert_eq!(hlen(&url, &format!("{}unacked", env.prefix)), 0);
}

#[test]
fn celery_worker_killed_mid_stream_then_restarted_stores_every_event_once() {
    let Some((url, py, env, _cleanup)) = python_celery("crash") else {
        return;
    };
    let unacked = || hlen(&url, &format!("{}unacked", env.prefix));
    celery::killed_worker_then_restarted_stores_every_event_once(
        &env,
        &py,
        "--visibility-timeout 2s",
        || unacked() == 0,
        || format!("{} unacked", unacked()),
    );
}

#[test]
fn celery_worker_survives_a_redis_restart() {
    let Some(py) = python() else { return };
    let Some(mut redis) = OwnRedis::start(&[]) else {
        return;
    };
    let url = redis.url();
    let (env, _cleanup) = CeleryEnv::on_redis(&url, "rr");
    let mut ids = env.tool(&py, &["publish", "2000", "rr", SECRET_DB_URI]);
    let data = tempfile::tempdir().unwrap();
    let mut worker = env.start_geoprov_worker(data.path(), "--rate-limit 500/s --batch-size 100");
    interrupt_mid_stream(data.path(), &mut worker, 400, 2000, |_| {
        redis.restart(Duration::from_secs(2));
    });
    ids.extend(env.tool(&py, &["publish", "500", "rr2", SECRET_DB_URI]));
    let done = stores(data.path(), 2500, Duration::from_secs(120));
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
    let Some((url, py, env, _cleanup)) = python_celery("poison") else {
        return;
    };
    let dead_key = format!("{}geoprov:{}:dead", env.prefix, env.queue);
    let dead = || {
        redis::cmd("XLEN")
            .arg(&dead_key)
            .query::<u64>(&mut sync_conn(&url))
            .unwrap_or(0)
    };
    celery::poison_and_foreign_messages_become_dead_letters(
        &env,
        &py,
        dead,
        &celery_options(&env),
        &["not a kombu message"],
    );
}

#[test]
fn results_reach_python_async_result_get() {
    let Some((url, py, mut env, _cleanup)) = python_celery("res") else {
        return;
    };
    env.result_backend = Some(url.clone());
    celery::results_reach_python_async_result_get(&env, &py, &url);
}

#[test]
fn countdown_tasks_are_not_stored_before_their_eta() {
    let Some((_url, py, env, _cleanup)) = python_celery("eta") else {
        return;
    };
    celery::countdown_tasks_are_not_stored_before_their_eta(&env, &py, "--visibility-timeout 30s");
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
    let Some((url, py, mut env, _cleanup)) = python_celery("mixed") else {
        return;
    };
    env.visibility_timeout = Some(120);
    let data = tempfile::tempdir().unwrap();
    let seed_db = data.path().join("seed.db");
    let db_uri = format!("sqlite:///{}", seed_db.display());
    let ids = env.tool(&py, &["publish", "3000", "mixed", &db_uri]);
    let python_log = std::fs::File::create(data.path().join("celery.log")).unwrap();
    let mut celery = env
        .command(&py)
        .args("-m celery -A lineage_tasks worker -Q".split_whitespace())
        .arg(&env.queue)
        .args(
            "-c 2 -P threads --without-heartbeat --without-mingle --without-gossip"
                .split_whitespace(),
        )
        .args(["-l", "warning"])
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
    let mut geoprov = env.start_geoprov_worker(
        data.path(),
        "--visibility-timeout 120s --rate-limit 300/s --batch-size 50",
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

/// Dead-lettering forgets kombu's bookkeeping for the message in the same MULTI (the dead
/// letters themselves are checked by the shared suite).
#[tokio::test]
async fn celery_dead_letters_clear_the_unacked_bookkeeping() {
    let Some(url) = redis_url() else { return };
    let (env, _cleanup) = CeleryEnv::on_redis(&url, "dlq");
    let (_broker, mut consumer, got) = take_events(&env, 2).await;
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
}

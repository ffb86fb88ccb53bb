//! The Python Celery scenarios both Celery backends (kombu's lists on Redis, Celery's queue on
//! RabbitMQ) run against the real Python client and a geoprov worker: thousands of `.delay()`
//! calls, a worker SIGKILLed mid-stream, poison and foreign messages, results for
//! `AsyncResult.get()`, and `countdown`.
//!
//! Not for: what only one transport has (kombu's unacked bookkeeping, RabbitMQ's queue counts);
//! each backend's test checks that around these, through the hooks they take.

use std::path::Path;
use std::time::{Duration, Instant};

use geoprov::broker::{self, BrokerOptions, DeadLetter};

use crate::redis_support::{
    assert_same_ids, interrupt_mid_stream, stored_ids, stores, sync_conn, CeleryEnv, SECRET_DB_URI,
};

/// `n` `.delay()` calls from the Python client are stored by a geoprov worker (two tasks) with
/// the event ids Python computes, and the `db_uri` password never reaches the log. `published`
/// runs once they are all on the queue, before the worker starts.
pub fn delay_calls_are_stored_with_python_event_ids(
    env: &CeleryEnv,
    py: &Path,
    n: usize,
    published: impl FnOnce(),
) {
    let ids = env.tool(py, &["publish", &n.to_string(), "py5k", SECRET_DB_URI]);
    assert_eq!(ids.len(), n);
    published();
    let data = tempfile::tempdir().unwrap();
    let mut worker = env.start_geoprov_worker(data.path(), "--concurrency 2");
    let done = stores(data.path(), n, Duration::from_secs(120));
    let log = worker.log_text();
    assert!(done, "not all stored; log:\n{log}");
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
    let log = worker.log_text();
    assert!(
        !log.contains("Sup3rS3cret"),
        "the db_uri password must never be logged"
    );
}

/// A worker SIGKILLed mid-stream, then a second one, store every one of 3,000 events once.
/// `flags` (separated by spaces) go to both workers; `drained` says the broker holds nothing more (waited for once
/// all are stored); `state` describes the broker for a failure message.
pub fn killed_worker_then_restarted_stores_every_event_once(
    env: &CeleryEnv,
    py: &Path,
    flags: &str,
    drained: impl Fn() -> bool,
    state: impl Fn() -> String,
) {
    let ids = env.tool(py, &["publish", "3000", "crash", SECRET_DB_URI]);
    let data = tempfile::tempdir().unwrap();
    let throttled = format!("--rate-limit 1500/s --batch-size 200 {flags}");
    let mut first = env.start_geoprov_worker(data.path(), &throttled);
    let at_kill = interrupt_mid_stream(data.path(), &mut first, 600, 3000, |w| w.kill9());
    let mut second = env.start_geoprov_worker(data.path(), flags);
    let done = stores(data.path(), 3000, Duration::from_secs(90));
    let log = second.log_text();
    assert!(
        done,
        "not all stored after restart ({} stored; {}); log:\n{log}",
        stored_ids(data.path()).len(),
        state()
    );
    assert!(
        crate::support::wait_until(Duration::from_secs(10), drained),
        "everything acknowledged"
    );
    assert_eq!(second.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
    eprintln!("crash: {at_kill} stored before the SIGKILL, 3000 after the restart");
}

/// The Python tool's poison and foreign messages become five dead letters, each with a reason
/// naming what is wrong (`reasons`, besides those every backend gives), and the three valid
/// tasks among them are stored; neither the log nor a reason shows the `db_uri` password.
/// `dead` counts the dead letters on the broker; `options` open it to list them. Returns them.
pub fn poison_and_foreign_messages_become_dead_letters(
    env: &CeleryEnv,
    py: &Path,
    dead: impl Fn() -> u64,
    options: &BrokerOptions,
    reasons: &[&str],
) -> Vec<DeadLetter> {
    let ids = env.tool(py, &["poison", "poison", SECRET_DB_URI]);
    assert_eq!(ids.len(), 3);
    let data = tempfile::tempdir().unwrap();
    let mut worker = env.start_geoprov_worker(data.path(), "");
    let done = crate::support::wait_until(Duration::from_secs(30), || {
        stored_ids(data.path()).len() >= 3 && dead() >= 5
    });
    let log = worker.log_text();
    assert!(done, "log:\n{log}");
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
    let url = env.broker.parse().unwrap();
    let letters = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let broker = broker::open(&url, options).await.expect("open the broker");
        broker
            .dead_letters()
            .await
            .unwrap()
            .list(100)
            .await
            .unwrap()
    });
    let found: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 5, "{found:?}");
    let every_backend = [
        "unknown task 'other_app.tasks.resize'",
        "application/x-python-serialize",
        "expired",
        "protocol v1",
    ];
    for needle in every_backend.iter().chain(reasons) {
        assert!(
            found.iter().any(|r| r.contains(needle)),
            "no dead letter says {needle:?}: {found:?}"
        );
    }
    assert!(
        letters
            .iter()
            .any(|l| l.body.as_ref() == b"{this is not json"),
        "the malformed body, byte for byte"
    );
    assert!(!log.contains("Sup3rS3cret"));
    assert!(
        !found.iter().any(|r| r.contains("Sup3rS3cret")),
        "{found:?}"
    );
    letters
}

/// Results of the tasks a geoprov worker stored reach the Python caller's `AsyncResult.get()`
/// through the Redis result backend at `results` (`env.result_backend` names it for Python).
pub fn results_reach_python_async_result_get(env: &CeleryEnv, py: &Path, results: &str) {
    let data = tempfile::tempdir().unwrap();
    let mut worker = env.start_geoprov_worker(data.path(), &format!("--result-backend {results}"));
    let lines = env.tool(py, &["results", "3", "res", SECRET_DB_URI]);
    assert_eq!(lines.len(), 3, "{}", worker.log_text());
    let mut conn = sync_conn(results);
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

/// Tasks sent with `countdown=4` are not stored before their eta, and are stored after it.
/// `flags` (separated by spaces) go to the worker, which is already running when Python publishes.
pub fn countdown_tasks_are_not_stored_before_their_eta(env: &CeleryEnv, py: &Path, flags: &str) {
    let data = tempfile::tempdir().unwrap();
    let mut worker = env.start_geoprov_worker(data.path(), flags);
    let published = Instant::now();
    let ids = env.tool(
        py,
        &["publish", "3", "eta", SECRET_DB_URI, "--countdown", "4"],
    );
    std::thread::sleep(Duration::from_millis(2500));
    if published.elapsed() < Duration::from_millis(3800) {
        assert_eq!(stored_ids(data.path()).len(), 0, "stored before its eta");
    }
    let done = stores(data.path(), 3, Duration::from_secs(40));
    let log = worker.log_text();
    assert!(done, "log:\n{log}");
    assert!(published.elapsed() >= Duration::from_secs(4));
    assert_eq!(worker.terminate(), Some(0));
    assert_same_ids(data.path(), &ids, &log);
}

//! End to end on the embedded default (on-disk queue + SQLite store), against a real
//! `geoprov serve` child process: crash, bad input, duplicates, store outage, clean shutdown.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::support::{
    post_events, sqlite_distinct_and_dense, sqlite_row_count, valid_events, wait_until, Server,
};

/// Whether the store of the data dir `dir` holds `n` rows or more within `secs` seconds.
fn rows_reach(dir: &Path, n: u64, secs: u64) -> bool {
    wait_until(Duration::from_secs(secs), || sqlite_row_count(dir) >= n)
}

/// Post `events` in arrays of `chunk`, asserting each answer is 202 with every event accepted.
async fn post_all(base: &str, events: &[String], chunk: usize) {
    for part in events.chunks(chunk) {
        let (status, answer) = post_events(base, format!("[{}]", part.join(","))).await;
        assert_eq!(status, 202, "answer: {answer}");
        assert_eq!(answer["accepted"].as_u64(), Some(part.len() as u64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_persist_then_restart_stores_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--rate-limit", "4000/s", "--visibility-timeout", "2s"];
    let mut server = Server::start(dir.path(), &flags);
    let events = valid_events(20_000, "crash");
    post_all(&server.url(), &events, 1000).await;
    // Kill while the worker is in the middle of persisting.
    assert!(rows_reach(dir.path(), 3000, 30), "persisting did not start");
    server.kill9();
    let at_kill = sqlite_row_count(dir.path());
    assert!(at_kill < 20_000, "killed too late: {at_kill} rows already");

    let server = Server::start(dir.path(), &["--visibility-timeout", "2s"]);
    assert!(
        rows_reach(dir.path(), 20_000, 60),
        "only {} rows after restart",
        sqlite_row_count(dir.path())
    );
    // Redelivered leftovers must not add rows.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sqlite_row_count(dir.path()), 20_000);
    assert_eq!(sqlite_distinct_and_dense(dir.path()), (20_000, true));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_become_dead_letters_and_valid_ones_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    // Enqueue raw bytes straight into the embedded queue, as another process would, so that the
    // worker (not the HTTP ingest) has to deal with them.
    let broker = geoprov::broker::open(
        &geoprov::url::BrokerUrl::Embedded,
        &geoprov::broker::BrokerOptions::new(dir.path()),
    )
    .await
    .unwrap();
    let producer = broker.producer().await.unwrap();
    let good = valid_events(10_000, "bad-input");
    let oversized = format!(
        r#"{{"dataset_uuid": "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11", "operation": "tile", "processor_id": "p", "blob": "{}"}}"#,
        "x".repeat(1_100_000)
    );
    let bad_kinds: Vec<String> = vec![
        "this is not json".into(),
        "[1, 2, 3]".into(),
        r#"{"operation": "tile", "processor_id": "p"}"#.into(),
        r#"{"dataset_uuid": "not-a-uuid", "operation": "tile", "processor_id": "p"}"#.into(),
        r#"{"dataset_uuid": "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11", "operation": 7, "processor_id": "p"}"#.into(),
        r#"{"dataset_uuid": "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11", "operation": "tile", "processor_id": "p", "inputs": "nope"}"#.into(),
        r#"{"dataset_uuid": "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11", "operation": "tile", "processor_id": "p", "started_at": "yesterday"}"#.into(),
        oversized,
        "{\"truncated\": ".into(),
        "\u{0}\u{1}binary".into(),
    ];
    let mut all: Vec<Bytes> = Vec::with_capacity(11_000);
    for (i, g) in good.iter().enumerate() {
        all.push(Bytes::from(g.clone()));
        if i % 10 == 9 {
            all.push(Bytes::from(bad_kinds[(i / 10) % bad_kinds.len()].clone()));
        }
    }
    assert_eq!(all.len(), 11_000);
    for part in all.chunks(500) {
        producer.enqueue(part).await.unwrap();
    }
    let dlq = broker.dead_letters().await.unwrap();
    assert!(
        rows_reach(dir.path(), 10_000, 60),
        "rows: {}",
        sqlite_row_count(dir.path())
    );
    let mut letters = 0;
    for _ in 0..200 {
        letters = dlq.count().await.unwrap();
        if letters >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letters, 1000);
    assert_eq!(sqlite_row_count(dir.path()), 10_000);
    for letter in dlq.list(1000).await.unwrap() {
        assert!(
            !letter.reason.trim().is_empty(),
            "dead letter without a reason"
        );
        assert!(!letter.body.is_empty());
    }
    assert!(server.is_running(), "the server must stay up");
    assert_eq!(
        crate::support::get_status(&format!("{}/healthz", server.url())),
        Ok(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_events_sent_three_times_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let events = valid_events(1000, "dup");
    for _ in 0..3 {
        post_all(&server.url(), &events, 250).await;
    }
    assert!(rows_reach(dir.path(), 1000, 30));
    // Let the worker drain the queue completely before counting for good.
    let broker = geoprov::broker::open(
        &geoprov::url::BrokerUrl::Embedded,
        &geoprov::broker::BrokerOptions::new(dir.path()),
    )
    .await
    .unwrap();
    for _ in 0..400 {
        if broker.depth().await.unwrap() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(broker.depth().await.unwrap(), Some(0));
    assert_eq!(sqlite_row_count(dir.path()), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough (at least 10 s for the whole stream) that the outage below always comes
    // mid-stream, however slowly a loaded machine posts.
    let server = Server::start(dir.path(), &["--rate-limit", "1000/s"]);
    let events = valid_events(10_000, "outage");
    post_all(&server.url(), &events, 1000).await;
    assert!(rows_reach(dir.path(), 1000, 30));
    // Make the store unwritable: hold an exclusive write lock for a few seconds.
    let locker = rusqlite::Connection::open(dir.path().join("lineage.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let during = sqlite_row_count(dir.path());
    assert!(
        during < 10_000,
        "the outage starts mid-stream ({during} rows)"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        sqlite_row_count(dir.path()),
        during,
        "nothing can be written while the lock is held"
    );
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    assert!(
        rows_reach(dir.path(), 10_000, 60),
        "rows: {}",
        sqlite_row_count(dir.path())
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sqlite_distinct_and_dense(dir.path()), (10_000, true));
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("Store unavailable"),
        "outage not logged:\n{log}"
    );
    assert!(
        log.contains("Store available again"),
        "recovery not logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_reports_each_refused_item_and_accepts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = valid_events(2, "mixed");
    let body = format!(
        r#"[{}, {{"dataset_uuid": "nope", "operation": "x", "processor_id": "p"}}, 42, {}]"#,
        good[0], good[1]
    );
    let (status, answer) = post_events(&server.url(), body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2);
    let rejected = answer["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 1);
    assert!(rejected[0]["reason"]
        .as_str()
        .unwrap()
        .contains("dataset_uuid"));
    assert_eq!(rejected[1]["index"], 2);
    // Every refused: 422 with reasons.
    let (status, answer) = post_events(&server.url(), "[1, 2]".into()).await;
    assert_eq!(status, 422, "{answer}");
    // The accepted events become readable by id.
    let id = answer_id(&post_events(&server.url(), good[0].clone()).await.1);
    let url = format!("{}/v1/events/{id}", server.url());
    assert!(wait_until(Duration::from_secs(10), || {
        crate::support::get_status(&url) == Ok(200)
    }));
}

fn answer_id(answer: &serde_json::Value) -> String {
    answer["event_ids"][0].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    post_all(&server.url(), &valid_events(3000, "term"), 1000).await;
    assert_eq!(server.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured_and_for_public_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--token", "s3cret"]);
    let (status, _) = post_events(&server.url(), valid_events(1, "tok")[0].clone()).await;
    assert_eq!(status, 401);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/events", server.url()))
        .bearer_auth("s3cret")
        .body(valid_events(1, "tok")[0].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let out = std::process::Command::new(crate::support::geoprov_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_shows_the_sample_graph_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--demo"]);
    assert!(wait_until(Duration::from_secs(20), || {
        sqlite_row_count(dir.path()) == 15
    }));
    let client = reqwest::Client::new();
    let graph: serde_json::Value = client
        .get(format!(
            "{}/v1/datasets/{}/lineage?direction=upstream&depth=20",
            server.url(),
            geoprov::sample::PUBLISHED
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 15, "{graph}");
    let resp = client
        .get(format!("{}/v1/export/prov", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["entity"].as_object().unwrap().len(), 15);
    assert_eq!(doc["activity"].as_object().unwrap().len(), 15);
    let metrics = client
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("geoprov_events_persisted_total"),
        "{metrics}"
    );
    assert!(metrics.contains("geoprov_queue_depth"), "{metrics}");
    assert!(
        metrics.contains("geoprov_batch_commit_seconds_bucket"),
        "{metrics}"
    );
}

//! Adoption of rows the reference Python task wrote, then `geoprov verify` (regression tests for
//! "a store adopted from the reference table never verifies").
//!
//! The reference task hashes `json.dumps(payload, sort_keys=True)` but stores `json.dumps(payload)`
//! in insertion order. These tests run the real task (the Python Celery worker with the
//! reference module, `tests/python/lineage_tasks.py`, writing through SQLAlchemy and psycopg2)
//! against a test schema on the real PostgreSQL server, with payloads whose key order differs
//! from sorted order at every level, non-ASCII text, floats and nested objects (`--rich`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use geoprov::config::default_key_path;
use geoprov::store::postgres::PostgresStore;
use geoprov::tlog::Signer;
use geoprov::tlog_service::{write_checkpoint, write_key_file};

use crate::redis_support::{python, redis_url, unique, CeleryEnv, KeyCleanup, WorkerProc};
use crate::support::pg::{self, TestSchema};
use crate::support::tlog::{geoprov, text, verify_fails, verify_ok};

/// What an adoption test needs: Redis for the Celery queue, the Python that runs the reference
/// task, and a test schema holding the reference table (with a raw connection to it). `None`
/// (after a skip) when one is missing.
async fn reference_setup() -> Option<(
    String,
    std::path::PathBuf,
    TestSchema,
    tokio_postgres::Client,
)> {
    let url = redis_url()?;
    let py = python()?;
    let (schema, raw) = TestSchema::with_reference_table().await?;
    Some((url, py, schema, raw))
}

/// A Redis queue of the test's own for the reference Celery app.
fn celery_env(url: &str, name: &str) -> (CeleryEnv, KeyCleanup) {
    let prefix = format!("{}:", unique(name));
    let env = CeleryEnv {
        broker: url.to_string(),
        queue: unique(name),
        prefix: prefix.clone(),
        result_backend: None,
        visibility_timeout: Some(120),
    };
    let cleanup = KeyCleanup {
        url: url.to_string(),
        patterns: vec![format!("{prefix}*")],
    };
    (env, cleanup)
}

/// The `db_uri` the reference task gets: the test server, with the test schema on its
/// `search_path` (libpq's `options`, which psycopg2 passes on).
fn reference_db_uri(schema: &TestSchema) -> String {
    pg::with_param(
        &schema.server,
        &format!("options=-csearch_path%3D{}", schema.name),
    )
}

/// The real Python Celery worker running the reference module on `env`'s queue.
fn start_reference_worker(env: &CeleryEnv, py: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("celery log");
    env.command(py)
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
        .stderr(log)
        .spawn()
        .expect("start the Python Celery worker")
}

/// SIGTERM (Celery's warm shutdown) and reap.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Every seed column of every row, as the server prints the row (`(event_id,...)`), in
/// event_id order: equal lists mean byte-identical columns.
async fn seed_rows(raw: &tokio_postgres::Client) -> Vec<String> {
    raw.query(
        "SELECT ROW(event_id, dataset_uuid, operation, crs_from, crs_to, processor_id, \
                \"timestamp\", payload_json)::text FROM lineage_events ORDER BY event_id",
        &[],
    )
    .await
    .expect("seed columns")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// (rows without a log position, rows with one).
async fn unlogged_and_logged(raw: &tokio_postgres::Client) -> (i64, i64) {
    let row = raw
        .query_one(
            "SELECT count(*) FILTER (WHERE log_position IS NULL), \
                    count(*) FILTER (WHERE log_position IS NOT NULL) FROM lineage_events",
            &[],
        )
        .await
        .expect("count");
    (row.get(0), row.get(1))
}

async fn row_count(raw: &tokio_postgres::Client) -> i64 {
    raw.query_one("SELECT count(*) FROM lineage_events", &[])
        .await
        .map_or(0, |r| r.get(0))
}

/// `geoprov migrate` adopts the `n` rows the reference task wrote without changing a seed column;
/// after a checkpoint, `verify` passes on all of them. Returns the signing key.
async fn adopt_and_verify(raw: &tokio_postgres::Client, dir: &Path, url: &str, n: i64) -> Signer {
    let before = seed_rows(raw).await;
    migrate(dir, url);
    assert_eq!(seed_rows(raw).await, before, "every seed column unchanged");
    assert_eq!(unlogged_and_logged(raw).await, (0, n));
    let signer = checkpoint(dir, url).await;
    let key = signer.verifier_key_text();
    let (stdout, stderr) = verify_ok(dir, &["--store", url, "--key", &key]);
    assert!(
        stdout.contains(&format!("OK: {n} events")),
        "{stdout} {stderr}"
    );
    signer
}

/// `geoprov migrate --store URL`, asserting exit 0.
fn migrate(dir: &Path, url: &str) {
    let out = geoprov(dir, &["migrate", "--store", url]);
    assert_eq!(out.status.code(), Some(0), "migrate: {}", text(&out.stderr));
}

/// A signing key at the data dir's default place (where `verify` finds its verifier key), and
/// a checkpoint of the log as it is now.
async fn checkpoint(dir: &Path, url: &str) -> Signer {
    let key = default_key_path(dir);
    let signer = if key.exists() {
        geoprov::tlog_service::load_signer(&key).expect("key")
    } else {
        let signer = Signer::generate("geoprov/adoption-test").expect("signer");
        write_key_file(&key, &signer, false).expect("key file");
        signer
    };
    let store = PostgresStore::open(url).await.expect("store");
    write_checkpoint(&store, &signer)
        .await
        .expect("checkpoint")
        .expect("a checkpoint of a log that grew");
    signer
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_written_by_the_reference_task_are_adopted_and_verify() {
    let Some((url, py, schema, raw)) = reference_setup().await else {
        return;
    };
    let (env, _cleanup) = celery_env(&url, "adopt");
    let dir = tempfile::tempdir().unwrap();
    let db_uri = reference_db_uri(&schema);
    let ids = env.tool(&py, &["publish", "300", "adopt", &db_uri, "--rich"]);
    assert_eq!(ids.len(), 300);

    let mut celery = start_reference_worker(&env, &py, &dir.path().join("celery.log"));
    let mut stored = 0;
    for _ in 0..1200 {
        stored = row_count(&raw).await;
        if stored >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(&mut celery);
    let celery_log = std::fs::read_to_string(dir.path().join("celery.log")).unwrap_or_default();
    assert_eq!(
        stored, 300,
        "the reference task stored; its log:\n{celery_log}"
    );

    // The reference task stored the unsorted dump and keyed it by the sorted one.
    let sample: (String, String) = {
        let r = raw
            .query_one(
                "SELECT event_id, payload_json FROM lineage_events ORDER BY event_id LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(
        sample.1.starts_with("{\"processor_id\": "),
        "insertion order: {}",
        sample.1
    );
    assert!(ids.contains(&sample.0));

    let store_url = schema.url();
    let signer = adopt_and_verify(&raw, dir.path(), &store_url, 300).await;
    let key = signer.verifier_key_text();

    // An adopted row's inclusion proof carries its stored (unsorted) text and checks offline.
    let proof = geoprov(dir.path(), &["prove", &sample.0, "--store", &store_url]);
    assert_eq!(proof.status.code(), Some(0), "{}", text(&proof.stderr));
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, &proof.stdout).unwrap();
    let proof_json: serde_json::Value = serde_json::from_slice(&proof.stdout).unwrap();
    assert_eq!(proof_json["payload_json"].as_str(), Some(sample.1.as_str()));
    let checked = geoprov(
        dir.path(),
        &["verify-proof", proof_file.to_str().unwrap(), "--key", &key],
    );
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked.stderr));

    // Tampering with one byte of one adopted row's payload_json is named, both when the byte
    // changes the payload (the id no longer matches) and when it changes only the stored text
    // (a space for a tab: the same id, another leaf).
    let victim: (i64, String, String) = {
        let r = raw
            .query_one(
                "SELECT log_position, event_id, payload_json FROM lineage_events \
                 WHERE log_position = 150",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let (position, event_id, original) = victim;
    let value_changed = original.replacen("\"sequence\": ", "\"sequence\": 9", 1);
    let text_changed = original.replacen("\"note\": ", "\"note\":\t", 1);
    assert_ne!(value_changed, original);
    assert_ne!(text_changed, original);
    raw.batch_execute("ALTER TABLE lineage_events DISABLE TRIGGER USER")
        .await
        .unwrap();
    for (tampered, cause) in [
        (&value_changed, "does not hash to event_id"),
        (&text_changed, "leaf_hash"),
    ] {
        raw.execute(
            "UPDATE lineage_events SET payload_json = $1 WHERE log_position = $2",
            &[tampered, &position],
        )
        .await
        .unwrap();
        let stderr = verify_fails(dir.path(), &["--store", &store_url, "--key", &key]);
        assert!(
            stderr.contains(&format!("position {position}")) && stderr.contains(&event_id[..12]),
            "names the row: {stderr}"
        );
        assert!(stderr.contains(cause), "says why ({cause}): {stderr}");
    }
    raw.execute(
        "UPDATE lineage_events SET payload_json = $1 WHERE log_position = $2",
        &[&original, &position],
    )
    .await
    .unwrap();
    verify_ok(dir.path(), &["--store", &store_url, "--key", &key]);
}

/// The README's migration: the Python workers and a geoprov worker on one Celery queue, both
/// writing the one adopted table; `migrate` then adopts what Python wrote, and after a
/// checkpoint the whole log verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_fleet_writing_one_adopted_table_verifies_after_migrate() {
    let Some((url, py, schema, raw)) = reference_setup().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store_url = schema.url();
    // The table is adopted before the fleet starts (empty here), as the migration guide says.
    migrate(dir.path(), &store_url);

    let (env, _cleanup) = celery_env(&url, "fleet");
    let db_uri = reference_db_uri(&schema);
    let ids = env.tool(&py, &["publish", "1500", "fleet", &db_uri, "--rich"]);
    let mut celery = start_reference_worker(&env, &py, &dir.path().join("celery.log"));
    let python_started = pg::wait_for(Duration::from_secs(90), || async {
        unlogged_and_logged(&raw).await.0 > 0
    })
    .await;
    assert!(python_started, "the Python Celery worker stored nothing");
    let mut args: Vec<String> = env.geoprov_flags();
    args.extend(
        [
            "--store",
            &store_url,
            "--visibility-timeout",
            "120s",
            "--rate-limit",
            "300/s",
            "--batch-size",
            "50",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut worker = WorkerProc::start(dir.path(), &refs);
    let all_stored = pg::wait_for(Duration::from_secs(180), || async {
        row_count(&raw).await >= 1500
    })
    .await;
    stop(&mut celery);
    assert_eq!(worker.terminate(), Some(0));
    let log = worker.log_text();
    assert!(all_stored, "stored {}; log:\n{log}", row_count(&raw).await);

    let (python_rows, geoprov_rows) = unlogged_and_logged(&raw).await;
    eprintln!("mixed fleet: geoprov stored {geoprov_rows}, the Python worker {python_rows}");
    assert!(python_rows > 0, "the Python worker took part");
    assert!(geoprov_rows > 0, "geoprov took part");
    let stored: std::collections::HashSet<String> = raw
        .query("SELECT event_id FROM lineage_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: std::collections::HashSet<String> = ids.into_iter().collect();
    assert_eq!(
        stored, want,
        "every task stored once, under the Python event id"
    );

    adopt_and_verify(&raw, dir.path(), &store_url, 1500).await;
}

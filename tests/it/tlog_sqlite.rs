//! The transparency log on the SQLite store, through the real `geoprov` binary: checkpoints
//! written by a worker (and a final one on SIGTERM), `geoprov verify` on an intact log and on
//! every kind of tampering (done with direct SQL after dropping the append-only triggers),
//! inclusion and consistency proofs checked offline, and the HTTP log endpoints. The cases that
//! read the same on PostgreSQL are in `support/log_cases.rs`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use geoprov::config::default_key_path;
use geoprov::event::EventId;
use geoprov::event::LineageEvent;
use geoprov::store::sqlite::SqliteStore;
use geoprov::store::Store;
use geoprov::tlog::Signer;
use geoprov::tlog_service::{
    consistency_proof, inclusion_proof, materialize_nodes, write_checkpoint, write_key_file,
    ConsistencyProof, InclusionProof,
};
use rusqlite::{params, Connection};

use crate::support::log_cases::{self, edge_tamper_is_named, tamper_is_named};
use crate::support::stamp::stamp_cases;
use crate::support::tlog::{
    a_backfilled_log_verifies, emit, event, geoprov, terminate, text, verify_fails, verify_ok,
    Backend, Fixture, LogDir,
};
use crate::support::{geoprov_bin, valid_events, wait_until};

/// A data dir holding a SQLite log of 40 events with signed checkpoints at tree sizes 10, 20
/// and 30 (the last 10 events are not covered yet) and the signing key at its default place.
async fn fixture() -> Fixture {
    Fixture::new(Backend::Sqlite)
        .await
        .expect("SQLite needs no server")
}

log_cases::log_cases!(Backend::Sqlite);

stamp_cases!(Fixture::new(Backend::Sqlite), |f| log_cases(f);
    a_row_appended_beyond_the_head_is_named,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_log_verifies_and_reports_uncovered_events() {
    let f = fixture().await;
    log_cases::intact_log_verifies(&f).await;
    // Another key: every stored checkpoint fails, the first one is named.
    let other = Signer::generate("geoprov/test-log").expect("other key");
    log_cases::first_checkpoint_fails_with(&f, &other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_payload_is_named_by_position() {
    tamper_is_named(
        fixture().await,
        "UPDATE lineage_events SET payload_json = replace(payload_json, 'reproject', \
         'reprojekt') WHERE log_position = 13",
        13,
        "payload_json does not hash to event_id",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_seed_column_is_named_by_position() {
    tamper_is_named(
        fixture().await,
        "UPDATE lineage_events SET operation = 'tile' WHERE log_position = 17",
        17,
        "column operation",
    )
    .await;
}

/// Edges are derived from the payloads, which the log covers: one added, removed or changed
/// edge, or one naming an event that is not stored, fails verify (each fixture event has one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_lineage_edges_are_named() {
    let tampers: [(&str, &str); 4] = [
        (
            // No trigger stops an INSERT: an attacker adds lineage the payloads do not name.
            "INSERT INTO lineage_edges (from_uuid, to_uuid, event_id, operation) \
             SELECT '6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11', to_uuid, event_id, operation \
             FROM lineage_edges LIMIT 1",
            "the lineage edges do not match the payloads in the log (41 stored, 40 named by \
             the payloads)",
        ),
        (
            "DROP TRIGGER lineage_edges_no_delete; DELETE FROM lineage_edges WHERE rowid = 7",
            "(39 stored, 40 named by the payloads)",
        ),
        (
            "DROP TRIGGER lineage_edges_no_update; \
             UPDATE lineage_edges SET from_uuid = '6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11' \
             WHERE rowid = 7",
            "the lineage edges do not match the payloads in the log (an edge was changed)",
        ),
        (
            "INSERT INTO lineage_edges (from_uuid, to_uuid, event_id, operation) VALUES \
             ('6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11', '6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c12', \
             'feed', 'forged')",
            "names event feed, which is not in the log",
        ),
    ];
    for (sql, want) in tampers {
        edge_tamper_is_named(fixture().await, sql, want).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_event_time_is_named_by_position() {
    tamper_is_named(
        fixture().await,
        "UPDATE lineage_events SET ended_at = '2020-01-01T00:00:00.000000Z' \
         WHERE log_position = 9",
        9,
        "column ended_at",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_inside_the_log_breaks_the_next_checkpoint() {
    log_cases::a_thorough_insert_breaks_the_next_checkpoint(fixture().await).await;
    log_cases::a_lazy_insert_is_named_at_the_first_moved_row(fixture().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_read_stored_tree_nodes_and_never_trust_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("lineage.db");
    let signer = Signer::generate("geoprov/nodes").expect("signer");
    let store = SqliteStore::open_and_migrate(&db).await.expect("store");
    for (from, to) in [(0, 3000), (3000, 5000)] {
        for start in (from..to).step_by(1000) {
            let events: Vec<LineageEvent> = (start..start + 1000).map(event).collect();
            store.commit_batch(&events).await.expect("commit");
        }
        write_checkpoint(&store, &signer).await.expect("checkpoint");
    }
    let raw = Connection::open(&db).expect("raw connection");
    let id_at = |position: i64| -> EventId {
        let id: String = raw
            .query_row(
                "SELECT event_id FROM lineage_events WHERE log_position = ?1",
                [position],
                |r| r.get(0),
            )
            .expect("event");
        id.parse().expect("event id")
    };
    let positions = [0, 100, 1023, 1024, 2500, 4095, 4096, 4999];
    let ids: Vec<EventId> = positions.iter().map(|&p| id_at(p)).collect();
    let mut from_leaves = Vec::new();
    for id in &ids {
        from_leaves.push(inclusion_proof(&store, id).await.expect("proof"));
    }
    let consistency = consistency_proof(&store, 3000, 5000).await.expect("proof");

    // 5,000 leaves: nodes 0-3 of 1,024 leaves, 0-1 of 2,048, 0 of 4,096; then nothing new.
    assert_eq!(materialize_nodes(&store).await.expect("nodes"), 7);
    assert_eq!(materialize_nodes(&store).await.expect("nodes"), 0);
    let key = signer.verifier_key_text();
    let (stdout, _) = verify_ok(dir.path(), &["--key", &key]);
    assert!(stdout.contains("OK: 5000 events"), "{stdout}");
    same_proofs(&store, &ids, &from_leaves, &consistency).await;

    // The nodes are what the proofs read: with a leaf hash under the node of leaves 0..4096
    // gone, the proof of the last event still comes out the same.
    let attacker = Connection::open(&db).expect("raw connection");
    attacker
        .execute_batch(
            "DROP TRIGGER lineage_events_no_update;
             DROP TRIGGER log_nodes_no_update;
             CREATE TEMP TABLE saved AS SELECT leaf_hash FROM lineage_events
                 WHERE log_position = 100;
             UPDATE lineage_events SET leaf_hash = NULL WHERE log_position = 100;",
        )
        .expect("tamper");
    let last = inclusion_proof(&store, &ids[7]).await.expect("proof");
    assert_eq!(&last, &from_leaves[7]);
    assert!(
        inclusion_proof(&store, &ids[1]).await.is_err(),
        "the leaf itself is still read"
    );

    // A wrong node is never served: the proof is checked against the signed root and rebuilt
    // from the leaves.
    attacker
        .execute_batch(
            "UPDATE lineage_events SET leaf_hash = (SELECT leaf_hash FROM saved)
                 WHERE log_position = 100;
             UPDATE log_nodes SET hash = zeroblob(32) WHERE height = 10 AND node_index = 1;
             UPDATE log_nodes SET hash = zeroblob(32) WHERE height = 12 AND node_index = 0;",
        )
        .expect("tamper");
    // `verify` names the first wrong node.
    let stderr = verify_fails(dir.path(), &["--key", &key]);
    assert!(
        stderr.contains("tree node 10/1") && stderr.contains("positions 1024 to 2047"),
        "{stderr}"
    );
    same_proofs(&store, &ids, &from_leaves, &consistency).await;

    // Wrong nodes removed and stored again: the log verifies; then a node over leaves that do
    // not exist is named.
    attacker
        .execute_batch(
            "DROP TRIGGER log_nodes_no_delete;
             DELETE FROM log_nodes WHERE height IN (10, 12);",
        )
        .expect("remove");
    assert_eq!(materialize_nodes(&store).await.expect("nodes"), 5);
    verify_ok(dir.path(), &["--key", &key]);
    attacker
        .execute("INSERT INTO log_nodes VALUES (10, 99, zeroblob(32))", [])
        .expect("forge");
    let stderr = verify_fails(dir.path(), &["--key", &key]);
    assert!(stderr.contains("tree node 10/99"), "{stderr}");
}

/// The proofs of `ids` and the consistency proof from 3,000 to 5,000, as `store` builds them
/// now, are exactly `inclusion` and `consistency` (built earlier from the leaves alone).
async fn same_proofs(
    store: &SqliteStore,
    ids: &[EventId],
    inclusion: &[InclusionProof],
    consistency: &ConsistencyProof,
) {
    for (id, expected) in ids.iter().zip(inclusion) {
        let proof = inclusion_proof(store, id).await.expect("proof");
        assert_eq!(&proof, expected, "event {id}");
    }
    assert_eq!(
        &consistency_proof(store, 3000, 5000).await.expect("proof"),
        consistency
    );
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = geoprov(dir.path(), &["keygen", "--name", "example.org/log"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let verifier = text(&out.stdout);
    assert!(verifier.starts_with("example.org/log+"), "{verifier}");
    geoprov::tlog::Verifier::from_key_text(verifier.trim()).expect("a verifier key");
    let path = dir.path().join("log-signing.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = geoprov(dir.path(), &["keygen"]);
    assert_eq!(out.status.code(), Some(2), "refuses to overwrite");
    let out = geoprov(dir.path(), &["keygen", "--force"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("geoprov/"), "default name");
}

fn checkpoint_sizes(dir: &Path) -> Vec<i64> {
    let conn = Connection::open(dir.join("lineage.db")).expect("raw connection");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    conn.prepare("SELECT tree_size FROM log_checkpoints ORDER BY tree_size")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))
                .and_then(|rows| rows.collect::<Result<Vec<i64>, _>>())
        })
        .unwrap_or_default()
}

/// `geoprov worker ARGS...` on the data dir `dir`, logging (at info) to `log_name` there.
fn spawn_worker(dir: &Path, log_name: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(log_name)).expect("log");
    Command::new(geoprov_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("worker")
        .args(args)
        .env("GEOPROV_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn worker")
}

#[test]
fn a_worker_writes_checkpoints_and_a_final_one_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    emit(dir.path(), &valid_events(3000, "tlog-worker"));
    let mut worker = spawn_worker(
        dir.path(),
        "worker.log",
        &[
            "--rate-limit",
            "2000/s",
            "--checkpoint-interval",
            "200ms",
            "--checkpoint-every",
            "1000000",
        ],
    );
    // Checkpoints appear while the log grows, on the interval.
    assert!(
        wait_until(Duration::from_secs(30), || checkpoint_sizes(dir.path())
            .len()
            >= 2),
        "no checkpoints while the worker runs"
    );
    assert!(wait_until(Duration::from_secs(60), || {
        crate::support::sqlite_row_count(dir.path()) >= 3000
    }));
    assert_eq!(terminate(&mut worker), Some(0), "clean exit on SIGTERM");
    assert_eq!(
        checkpoint_sizes(dir.path()).last().copied(),
        Some(3000),
        "the final checkpoint covers every committed event"
    );
    let worker_log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    assert!(
        worker_log.contains("Created the log signing key"),
        "the verifier key is logged on first start: {worker_log}"
    );
    let (stdout, stderr) = verify_ok(dir.path(), &[]);
    assert!(stdout.contains("OK: 3000 events"), "{stdout}");
    assert!(!stderr.contains("not yet covered"), "{stderr}");

    // With checkpoints due only in an hour, the final checkpoint on SIGTERM is what covers the
    // last events.
    emit(dir.path(), &valid_events(500, "tlog-worker-2"));
    let mut worker = spawn_worker(dir.path(), "worker2.log", &["--checkpoint-interval", "1h"]);
    assert!(wait_until(Duration::from_secs(60), || {
        crate::support::sqlite_row_count(dir.path()) >= 3500
    }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(checkpoint_sizes(dir.path()).last().copied(), Some(3000));
    assert_eq!(terminate(&mut worker), Some(0), "clean exit on SIGTERM");
    assert_eq!(checkpoint_sizes(dir.path()).last().copied(), Some(3500));
    let worker_log = std::fs::read_to_string(dir.path().join("worker2.log")).unwrap_or_default();
    assert!(
        !worker_log.contains("Created the log signing key"),
        "the existing key is reused: {worker_log}"
    );
    let (stdout, _) = verify_ok(dir.path(), &[]);
    assert!(stdout.contains("OK: 3500 events"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_a_dense_log_that_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let signer = Signer::generate("geoprov/test-log").expect("signer");
    write_key_file(&default_key_path(dir.path()), &signer, false).expect("key file");
    let path = dir.path().join("lineage.db");
    SqliteStore::open_and_migrate(&path).await.expect("store");
    // Two handles on one file stand for two processes; each has two committing tasks and
    // writes checkpoints between its batches.
    let mut tasks = tokio::task::JoinSet::new();
    for handle in 0..2 {
        let store = std::sync::Arc::new(SqliteStore::open(&path).await.expect("open"));
        for task in 0..2 {
            let store = store.clone();
            let signer = signer.clone();
            tasks.spawn(async move {
                for batch in 0..20 {
                    let events: Vec<LineageEvent> = (0..25)
                        .map(|i| event(((handle * 2 + task) * 20 + batch) * 25 + i))
                        .collect();
                    loop {
                        match store.commit_batch(&events).await {
                            Ok(_) => break,
                            Err(e) if e.is_transient() => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("commit: {e}"),
                        }
                    }
                    if batch % 5 == 4 {
                        // Lost races (busy) are fine: another writer checkpoints.
                        let _ = write_checkpoint(store.as_ref(), &signer).await;
                    }
                }
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("writer task");
    }
    let store = SqliteStore::open(&path).await.expect("open");
    write_checkpoint(&store, &signer)
        .await
        .expect("final checkpoint");
    drop(store);
    assert_eq!(
        crate::support::sqlite_distinct_and_dense(dir.path()),
        (2000, true)
    );
    let (stdout, stderr) = verify_ok(dir.path(), &[]);
    assert!(stdout.contains("OK: 2000 events"), "{stdout}");
    assert!(!stderr.contains("not yet covered"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_backfills_the_leaves_of_a_version_1_log() {
    let log = LogDir::new(Backend::Sqlite).await.expect("a data dir");
    let path = log.path().join("lineage.db");
    // A log written by a schema-1 geoprov: rows with positions but no leaf hashes.
    {
        let conn = Connection::open(&path).expect("raw connection");
        conn.execute_batch(include_str!(
            "../../src/store/sqlite/migrations/0001_init.sql"
        ))
        .expect("schema 1");
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, '2026-01-01T00:00:00.000000Z');",
        )
        .expect("version 1");
        for i in 0..25u64 {
            let e = event(usize::try_from(i).expect("small"));
            conn.execute(
                "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, \
                 crs_to, processor_id, timestamp, payload_json, log_position) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, '2026-01-01T00:00:00.000000Z', ?7, ?8)",
                params![
                    e.event_id.to_hex(),
                    e.dataset_uuid.to_string(),
                    e.operation,
                    e.crs_from,
                    e.crs_to,
                    e.processor_id,
                    e.payload_json,
                    i64::try_from(i).expect("small"),
                ],
            )
            .expect("row");
            for from in &e.inputs {
                conn.execute(
                    "INSERT INTO lineage_edges (from_uuid, to_uuid, event_id, operation) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        from.to_string(),
                        e.dataset_uuid.to_string(),
                        e.event_id.to_hex(),
                        e.operation
                    ],
                )
                .expect("edge");
            }
        }
        conn.execute("UPDATE log_head SET size = 25", [])
            .expect("head");
    }
    a_backfilled_log_verifies(&log).await;
    // The append-only trigger is back.
    let conn = Connection::open(&path).expect("raw connection");
    assert!(conn
        .execute("UPDATE lineage_events SET operation = 'x'", [])
        .is_err());
}

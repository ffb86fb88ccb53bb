//! The SQLite store: the whole store suite on a fresh file each, plus what only SQLite has
//! (triggers seen through raw SQL, schema versions, locks held by another connection).
//!
//! Two measurements are `#[ignore]`d; run them in release:
//! `cargo test --release --test it sqlite_store::measure -- --ignored --nocapture`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoprov::event::LineageEvent;
use geoprov::store::sqlite::{SqliteStore, SCHEMA_VERSION};
use geoprov::store::{Direction, Store, StoreError};
use rusqlite::Connection;
use serde_json::json;
use uuid::Uuid;

use crate::store_suite::{
    self, commit_one, event_from, mosaic_of, refuses_a_newer_schema, sources, step,
    still_stored_and_walked, walk,
};

/// A store file in its own temporary directory, removed on drop.
struct TempDb(tempfile::TempDir);

impl TempDb {
    fn new() -> Self {
        TempDb(tempfile::tempdir().expect("temp dir"))
    }

    /// The store file, in a directory that does not exist yet: `open` must create it.
    fn path(&self) -> PathBuf {
        self.0.path().join("data").join("lineage.db")
    }

    async fn open(&self) -> SqliteStore {
        SqliteStore::open(self.path()).await.expect("open store")
    }

    /// A fresh file with a migrated store on it.
    async fn with_store() -> (TempDb, SqliteStore) {
        let db = TempDb::new();
        let store = db.migrated().await;
        (db, store)
    }

    async fn migrated(&self) -> SqliteStore {
        SqliteStore::open_and_migrate(self.path())
            .await
            .expect("open and migrate store")
    }

    /// A second, raw connection to the same file, as an operator's `sqlite3` shell would be.
    fn raw(&self) -> Connection {
        Connection::open(self.path()).expect("raw connection")
    }
}

/// A fresh, migrated store for the conformance suite (`store_suite.rs`).
pub async fn fresh_store() -> store_suite::Fresh {
    let db = TempDb::new();
    let store: Arc<dyn Store> = Arc::new(db.migrated().await);
    Some((store, Box::new(db)))
}

#[tokio::test]
async fn open_creates_the_file_in_wal_mode_without_migrating() {
    let db = TempDb::new();
    let store = db.open().await;
    assert!(
        db.path().exists(),
        "open creates the file and its directory"
    );
    let raw = db.raw();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let tables: i64 = raw
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'lineage_events'",
            [],
            |r| r.get(0),
        )
        .expect("sqlite_master");
    assert_eq!(tables, 0, "open must not migrate");

    // Until migrated, every call says what to do.
    let err = store
        .commit_batch(&sources(1))
        .await
        .expect_err("no schema");
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains("geoprov migrate")),
        "{err}"
    );
    let err = store.count().await.expect_err("no schema");
    assert!(matches!(err, StoreError::Schema(_)), "{err}");

    assert_eq!(store.migrate().await.expect("migrate"), SCHEMA_VERSION);
    assert_eq!(store.count().await.expect("count"), 0);
}

#[tokio::test]
async fn in_memory_and_empty_paths_are_refused() {
    for path in ["", ":memory:"] {
        let err = SqliteStore::open(path).await.err().expect("refused");
        assert!(matches!(err, StoreError::Config(_)), "{err}");
    }
}

#[tokio::test]
async fn migrations_are_recorded_once() {
    let (db, store) = TempDb::with_store().await;
    assert_eq!(store.migrate().await.expect("again"), SCHEMA_VERSION);
    // A second handle on the same file sees the schema as current.
    let other = db.open().await;
    assert_eq!(other.migrate().await.expect("other"), SCHEMA_VERSION);
    let raw = db.raw();
    let rows: Vec<(i64, String)> = raw
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let versions: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        versions,
        (1..=i64::from(SCHEMA_VERSION)).collect::<Vec<_>>()
    );
    assert!(rows.iter().all(|r| r.1.ends_with('Z')));
}

#[tokio::test]
async fn geoprov_columns_and_edges_are_stored() {
    let (db, store) = TempDb::with_store().await;
    let (a, b, out) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let event = mosaic_of(a, b, out);
    commit_one(&store, &event).await;

    let raw = db.raw();
    let (position, timestamp, started, ended, leaf): (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
    ) = raw
        .query_row(
            "SELECT log_position, timestamp, started_at, ended_at, leaf_hash FROM lineage_events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("row");
    assert_eq!(position, 0);
    // The recording time: RFC 3339, UTC, six fractional digits, 'Z'.
    assert_eq!(timestamp.len(), 27, "{timestamp}");
    assert!(
        timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.',
        "{timestamp}"
    );
    // Event times in the same form, converted to UTC.
    assert_eq!(started.as_deref(), Some("2024-05-01T10:00:00.250000Z"));
    assert_eq!(ended.as_deref(), Some("2024-05-01T10:00:03.000000Z"));
    // The leaf hash of geoprov/leaf/v1 over the position and the exact timestamp text stored.
    let want_leaf = geoprov::tlog::event_leaf_hash(
        0,
        &event.event_id.to_hex(),
        &timestamp,
        &event.payload_json,
    )
    .expect("leaf");
    assert_eq!(leaf.as_deref(), Some(&want_leaf[..]), "leaf_hash is filled");

    let mut edges: Vec<(String, String, String, String)> = raw
        .prepare("SELECT from_uuid, to_uuid, event_id, operation FROM lineage_edges")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("edges");
    edges.sort();
    let id = event.event_id.to_hex();
    let mut want = vec![
        (
            a.to_string(),
            out.to_string(),
            id.clone(),
            "mosaic".to_owned(),
        ),
        (b.to_string(), out.to_string(), id, "mosaic".to_owned()),
    ];
    want.sort();
    assert_eq!(edges, want, "one edge per distinct input and output");
}

#[tokio::test]
async fn update_and_delete_are_refused() {
    let (db, store) = TempDb::with_store().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let event = step("derive", &[a], &[b]);
    commit_one(&store, &event).await;

    let raw = db.raw();
    for sql in [
        "UPDATE lineage_events SET operation = 'forged'",
        "UPDATE lineage_events SET log_position = 7",
        "DELETE FROM lineage_events",
        "UPDATE lineage_edges SET operation = 'forged'",
        "DELETE FROM lineage_edges",
    ] {
        let err = raw.execute(sql, []).expect_err(sql);
        assert!(err.to_string().contains("is append-only"), "{sql}: {err}");
    }
    still_stored_and_walked(&store, &event, b).await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let (db, store) = TempDb::with_store().await;
    store.commit_batch(&sources(3)).await.expect("commit");
    drop(store);
    db.raw()
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'later')",
            [SCHEMA_VERSION + 1],
        )
        .expect("pretend a newer geoprov migrated");

    refuses_a_newer_schema(&db.open().await).await;
}

#[tokio::test]
async fn a_foreign_lineage_table_is_not_adopted_silently() {
    let db = TempDb::new();
    std::fs::create_dir_all(db.path().parent().expect("parent")).expect("dir");
    db.raw()
        .execute_batch(
            "CREATE TABLE lineage_events (event_id TEXT PRIMARY KEY, dataset_uuid TEXT, \
             operation TEXT, crs_from TEXT, crs_to TEXT, processor_id TEXT, timestamp TEXT, \
             payload_json TEXT);
             INSERT INTO lineage_events (event_id) VALUES ('abc');",
        )
        .expect("seed table");
    let store = db.open().await;
    let err = store.migrate().await.expect_err("seed table");
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains("lineage_events")),
        "{err}"
    );
    let count: i64 = db
        .raw()
        .query_row("SELECT COUNT(*) FROM lineage_events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(count, 1, "the existing rows are untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_is_a_transient_error_until_released() {
    let (db, store) = TempDb::with_store().await;
    let events = sources(10);
    store.commit_batch(&events[..5]).await.expect("commit");

    let locker = db.raw();
    locker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");

    let started = Instant::now();
    let err = store
        .commit_batch(&events[5..])
        .await
        .expect_err("locked database");
    let waited = started.elapsed();
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        waited < Duration::from_secs(2),
        "gave up after {waited:?}, not quickly"
    );

    // Readers do not wait for the writer's lock.
    let started = Instant::now();
    assert_eq!(store.count().await.expect("count while locked"), 5);
    assert_eq!(
        store.scan(0, 100).await.expect("scan while locked").len(),
        5
    );
    assert!(started.elapsed() < Duration::from_millis(500));

    locker.execute_batch("ROLLBACK").expect("release");
    let report = store
        .commit_batch(&events[5..])
        .await
        .expect("commit after release");
    assert_eq!((report.inserted, report.log_size), (5, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_keep_positions_dense() {
    let db = TempDb::new();
    let store: Arc<dyn Store> = Arc::new(db.migrated().await);
    store_suite::concurrent_commits_keep_positions_dense(store, &sources(400)).await;
}

/// The batch size of the measurements.
const BATCH: usize = 1000;

/// A realistic event of about 500 bytes: an operation with CRS pair, one input, event times,
/// parameters, a checksum and a bounding box.
fn realistic(i: usize, input: Uuid, output: Uuid) -> LineageEvent {
    const OPS: [(&str, &str, &str); 4] = [
        ("reproject", "EPSG:32633", "EPSG:3857"),
        ("tile", "EPSG:3857", "EPSG:3857"),
        ("mosaic", "EPSG:3857", "EPSG:3857"),
        ("validate_topology", "EPSG:4326", "EPSG:4326"),
    ];
    let (operation, crs_from, crs_to) = OPS[i % OPS.len()];
    event_from(&json!({
        "dataset_uuid": output,
        "operation": operation,
        "crs_from": crs_from,
        "crs_to": crs_to,
        "processor_id": format!("geoprov-bench-worker-{:02}.cluster.internal", i % 16),
        "inputs": [input],
        "outputs": [output],
        "started_at": "2024-05-01T10:00:00.125Z",
        "ended_at": "2024-05-01T10:00:04.875Z",
        "parameters": {"resampling": "bilinear", "tile_size": 512, "nodata": -9999,
                       "compression": "deflate", "overviews": [2, 4, 8, 16]},
        "checksums": {"sha256": format!("{:064x}", i)},
        "bbox": [i % 180, i % 90, i % 180 + 1, i % 90 + 1],
        "sequence": i,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --ignored --nocapture"]
async fn measure_commit_throughput() {
    const BATCHES: usize = 200;
    let (_db, store) = TempDb::with_store().await;
    let mut previous = Uuid::new_v4();
    let events: Vec<LineageEvent> = (0..BATCHES * BATCH)
        .map(|i| {
            let output = Uuid::new_v4();
            let event = realistic(i, previous, output);
            previous = output;
            event
        })
        .collect();
    let mean_payload = events.iter().map(|e| e.payload_json.len()).sum::<usize>() / events.len();

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut segment = Instant::now();
    for (i, batch) in events.chunks(BATCH).enumerate() {
        let t = Instant::now();
        let report = store.commit_batch(batch).await.expect("commit");
        assert_eq!(report.inserted, BATCH as u64);
        slowest = slowest.max(t.elapsed());
        if (i + 1) % 50 == 0 {
            let rate = (50 * BATCH) as f64 / segment.elapsed().as_secs_f64();
            println!(
                "  events {:>7}..{:>7}: {rate:.0} events/s",
                (i - 49) * BATCH,
                (i + 1) * BATCH
            );
            segment = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    let rate = (BATCHES * BATCH) as f64 / elapsed.as_secs_f64();
    println!(
        "sqlite commit_batch: {} events in batches of {BATCH} ({mean_payload}-byte payloads, one \
         edge each) in {elapsed:.2?}: {rate:.0} events/s; slowest batch {slowest:.2?}",
        BATCHES * BATCH
    );

    // Re-sending everything: the duplicate path.
    let started = Instant::now();
    for batch in events.chunks(BATCH) {
        let report = store.commit_batch(batch).await.expect("commit");
        assert_eq!(report.duplicates, BATCH as u64);
    }
    let rate = (BATCHES * BATCH) as f64 / started.elapsed().as_secs_f64();
    println!("sqlite commit_batch, all duplicates: {rate:.0} events/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --ignored --nocapture"]
async fn measure_lineage_walk_in_a_million_events() {
    const EVENTS: usize = 1_000_000;
    let (_db, store) = TempDb::with_store().await;
    // A pipeline graph: every event reads two datasets written by the previous few thousand
    // events, so walks fan out and reconverge.
    let mut outputs: Vec<Uuid> = (0..16).map(|_| Uuid::new_v4()).collect();
    let mut rng_state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        usize::try_from(rng_state % bound as u64).unwrap_or(0)
    };
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..EVENTS {
        let n = outputs.len();
        let window = n.min(5000);
        let a = outputs[n - 1 - next(window)];
        let b = outputs[n - 1 - next(window)];
        let output = Uuid::new_v4();
        let inputs: &[Uuid] = if a == b { &[a] } else { &[a, b] };
        batch.push(step(
            ["reproject", "tile", "mosaic"][i % 3],
            inputs,
            &[output],
        ));
        outputs.push(output);
        if batch.len() == BATCH {
            store.commit_batch(&batch).await.expect("commit");
            batch.clear();
        }
    }
    store.commit_batch(&batch).await.expect("commit");
    println!(
        "built a {EVENTS}-event store (with parsing) in {:.2?}",
        started.elapsed()
    );

    for (label, root, direction) in [
        (
            "upstream from the newest",
            outputs[outputs.len() - 1],
            Direction::Upstream,
        ),
        (
            "upstream from the middle",
            outputs[outputs.len() / 2],
            Direction::Upstream,
        ),
        (
            "downstream from the middle",
            outputs[outputs.len() / 2],
            Direction::Downstream,
        ),
    ] {
        let started = Instant::now();
        let graph = walk(&store, root, direction, 10).await;
        println!(
            "lineage {label}, depth 10: {} datasets, {} edges in {:.2?}",
            graph.nodes.len(),
            graph.edges.len(),
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

//! The PostgreSQL store: the whole store suite, each case in a schema of its own on the shared
//! server, plus what only PostgreSQL has: adoption of the reference table, the append-only
//! triggers seen through raw SQL, outages of a private server, several worker processes killed
//! at random, and TLS.
//!
//! The shared server is `GEOPROV_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); without it every test prints "skipped: ..." and
//! passes, unless `GEOPROV_REQUIRE_SERVICES=1`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use geoprov::event::LineageEvent;
use geoprov::store::postgres::{PostgresStore, SCHEMA_VERSION};
use geoprov::store::{Direction, Store, StoreError};
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use crate::store_suite::{
    self, commit_one, event_from, mosaic_of, refuses_a_newer_schema, sources, step,
    still_stored_and_walked, walk,
};
use crate::support::pg::{self, LocalPg, TestSchema, WorkerProcess};

/// A fresh, migrated store in a schema of its own for the conformance suite (`store_suite.rs`).
pub async fn fresh_store() -> store_suite::Fresh {
    let schema = TestSchema::create().await?;
    let store = PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("open and migrate");
    let store: Arc<dyn Store> = Arc::new(store);
    Some((store, Box::new(schema)))
}

/// The open `store::open` factory picks PostgreSQL for both URL schemes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_open_accepts_both_schemes() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let url = schema.url();
    let store = geoprov::store::open(&url.parse().unwrap())
        .await
        .expect("open postgres://");
    assert_eq!(store.migrate().await.expect("migrate"), SCHEMA_VERSION);
    store.commit_batch(&sources(3)).await.expect("commit");
    let other = url.replacen("postgres://", "postgresql://", 1);
    let store = geoprov::store::open(&other.parse().unwrap())
        .await
        .expect("open postgresql://");
    assert_eq!(store.count().await.expect("count"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_a_missing_schema() {
    let Some(created) = TestSchema::create().await else {
        return;
    };
    // A name nobody created yet; dropped (if it exists by then) with the guard.
    let schema = TestSchema {
        server: created.server.clone(),
        name: format!("{}_new", created.name),
    };
    let store = PostgresStore::open(&schema.url()).await.expect("open");
    assert_eq!(store.migrate().await.expect("migrate"), SCHEMA_VERSION);
    store.commit_batch(&sources(2)).await.expect("commit");
    let n: i64 = schema
        .raw()
        .await
        .query_one(
            "SELECT count(*) FROM lineage_events WHERE log_position IS NOT NULL",
            &[],
        )
        .await
        .expect("count in the new schema")
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_recorded_once_even_when_many_start_at_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = schema.url();
        tasks.push(tokio::spawn(async move {
            let store = PostgresStore::open(&url).await.expect("open");
            store.migrate().await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("join").expect("migrate"), SCHEMA_VERSION);
    }
    let raw = schema.raw().await;
    let rows = raw
        .query("SELECT version, name FROM schema_migrations", &[])
        .await
        .expect("schema_migrations");
    assert_eq!(rows.len(), MIGRATION_COUNT);
    assert_eq!(pg::number(&raw, "SELECT size FROM log_head").await, 0);
}

const MIGRATION_COUNT: usize = SCHEMA_VERSION as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geoprov_columns_and_edges_are_stored() {
    let Some((schema, store)) = TestSchema::with_store().await else {
        return;
    };
    let (a, b, out) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let event = mosaic_of(a, b, out);
    commit_one(&store, &event).await;
    let raw = schema.raw().await;
    let row = raw
        .query_one(
            "SELECT log_position, started_at, ended_at, leaf_hash FROM lineage_events",
            &[],
        )
        .await
        .expect("row");
    let position: i64 = row.get(0);
    let started: Option<DateTime<Utc>> = row.get(1);
    let ended: Option<DateTime<Utc>> = row.get(2);
    let leaf: Option<Vec<u8>> = row.get(3);
    assert_eq!(position, 0);
    assert_eq!(
        started,
        Some(
            Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
                + chrono::Duration::milliseconds(250)
        )
    );
    assert_eq!(
        ended,
        Some(Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 3).unwrap())
    );
    let stored = store
        .get_event(&event.event_id)
        .await
        .expect("get")
        .expect("stored");
    let want = geoprov::tlog::event_leaf_hash(
        0,
        &stored.event_id,
        &geoprov::tlog::format_recorded_at(stored.recorded_at),
        &stored.payload_json,
    )
    .expect("leaf");
    assert_eq!(
        leaf.as_deref(),
        Some(&want[..]),
        "leaf_hash covers the row as stored"
    );
    let id = event.event_id.to_hex();
    let mut want = vec![
        (a, out, id.clone(), "mosaic".to_owned()),
        (b, out, id, "mosaic".to_owned()),
    ];
    want.sort();
    assert_eq!(
        pg::edges(&raw).await,
        want,
        "one edge per distinct input and output"
    );
}

/// A log written before migration 3 kept its edges in the `lineage_edges` table: the migration
/// moves them into the rows' `inputs` and `outputs`, walks find the same edges, the
/// `lineage_edges` view lists the same pairs, and new events join the same graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3_moves_the_edges_table_into_the_rows() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let raw = schema.raw().await;
    // A schema-1 log (migration 2 gives it its leaf hashes on the way): three events, two of
    // them with edges, written row by row as schema 1 wrote them.
    pg::create_schema_1(&raw).await;
    let (src, other, a, b) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let events = [
        step("ingest", &[], &[src]),
        step("reproject", &[src], &[a]),
        step("mosaic", &[a, other], &[b]),
    ];
    let mut old_pairs = Vec::new();
    for (position, e) in (0_i64..).zip(&events) {
        pg::insert_row(&raw, e, Utc::now(), Some(position)).await;
        for &from in &e.inputs {
            for &to in &e.outputs {
                raw.execute(
                    "INSERT INTO lineage_edges (from_uuid, to_uuid, event_id, operation) \
                     VALUES ($1, $2, $3, $4)",
                    &[&from, &to, &e.event_id.to_hex(), &e.operation],
                )
                .await
                .expect("edge");
                old_pairs.push((from, to, e.event_id.to_hex(), e.operation.clone()));
            }
        }
    }
    raw.batch_execute("UPDATE log_head SET size = 3")
        .await
        .expect("head");

    let store = PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("migrate");
    old_pairs.sort();
    assert_eq!(
        pg::edges(&raw).await,
        old_pairs,
        "the view lists the pairs the table held"
    );
    let no_edges: (Option<Vec<Uuid>>, Option<Vec<Uuid>>) = {
        let row = raw
            .query_one(
                "SELECT inputs, outputs FROM lineage_events WHERE log_position = 0",
                &[],
            )
            .await
            .expect("row 0");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        no_edges,
        (None, None),
        "an event without edges had nothing to move"
    );
    let up = walk(&store, b, Direction::Upstream, 10).await;
    let reached: std::collections::BTreeSet<Uuid> = up.nodes.iter().map(|n| n.0).collect();
    assert_eq!(reached, [src, other, a, b].into_iter().collect());
    assert_eq!(up.edges.len(), 3);

    // A new event downstream of an old dataset joins the same graph.
    let c = Uuid::new_v4();
    store
        .commit_batch(&[step("tile", &[src], &[c])])
        .await
        .expect("append");
    let down = walk(&store, src, Direction::Downstream, 10).await;
    let reached: std::collections::BTreeSet<Uuid> = down.nodes.iter().map(|n| n.0).collect();
    assert_eq!(reached, [src, a, b, c].into_iter().collect());
    assert_eq!(store.count().await.expect("count"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_delete_and_truncate_are_refused() {
    let Some((schema, store)) = TestSchema::with_store().await else {
        return;
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let event = step("derive", &[a], &[b]);
    commit_one(&store, &event).await;
    let raw = schema.raw().await;
    pg::assert_append_only(
        &raw,
        &[
            "UPDATE lineage_events SET operation = 'forged'",
            "UPDATE lineage_events SET log_position = 7",
            "UPDATE lineage_events SET leaf_hash = '\\x00'",
            "DELETE FROM lineage_events",
            "TRUNCATE lineage_events",
            "UPDATE lineage_events SET inputs = NULL",
            "UPDATE lineage_events SET outputs = '{}'",
        ],
    )
    .await;
    // The edges are a view computed from the rows: nothing can be written through it either.
    for sql in [
        "DELETE FROM lineage_edges",
        "INSERT INTO lineage_edges SELECT from_uuid, from_uuid, event_id, operation \
         FROM lineage_edges",
    ] {
        raw.batch_execute(sql).await.expect_err(sql);
    }
    still_stored_and_walked(&store, &event, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Some((schema, store)) = TestSchema::with_store().await else {
        return;
    };
    store.commit_batch(&sources(3)).await.expect("commit");
    drop(store);
    let newer = i32::try_from(SCHEMA_VERSION + 1).expect("small");
    schema
        .raw()
        .await
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'later')",
            &[&newer],
        )
        .await
        .expect("pretend a newer geoprov migrated");
    let store = PostgresStore::open(&schema.url()).await.expect("open");
    refuses_a_newer_schema(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_store_asks_for_migrate() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = PostgresStore::open(&schema.url()).await.expect("open");
    let err = store.count().await.expect_err("no schema yet");
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains("geoprov migrate")),
        "{err}"
    );
}

/// In a fresh schema, `sql` creates a `lineage_events` table that `migrate` must refuse to
/// adopt, naming `why`. `None` (after a skip) without a server.
async fn not_adopted(sql: &str, why: &str) -> Option<TestSchema> {
    let schema = TestSchema::create().await?;
    schema.raw().await.batch_execute(sql).await.expect(sql);
    let store = PostgresStore::open(&schema.url()).await.expect("open");
    let err = store.migrate().await.expect_err("not adoptable");
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains(why)),
        "{err}"
    );
    Some(schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_another_shape_is_not_adopted() {
    let Some(schema) = not_adopted(
        "CREATE TABLE lineage_events (event_id integer PRIMARY KEY, dataset_uuid text, \
         operation text, crs_from text, crs_to text, processor_id text, \
         timestamp timestamptz, payload_json text);
         INSERT INTO lineage_events (event_id) VALUES (1);",
        "event_id is integer",
    )
    .await
    else {
        return;
    };
    let raw = schema.raw().await;
    let n = pg::number(&raw, "SELECT count(*) FROM lineage_events").await;
    assert_eq!(n, 1, "the table is left as it was");
}

/// A reference table that already has a column by the name of one of geoprov's, of another type,
/// is refused before anything is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_a_geoprov_column_of_another_type_is_not_adopted() {
    not_adopted(
        &format!(
            "{} ; ALTER TABLE lineage_events ADD COLUMN inputs text[]",
            pg::REFERENCE_TABLE
        ),
        "column inputs is text[], not uuid[]",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_transient_error() {
    let port = crate::support::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/test?connect_timeout=2");
    let store = PostgresStore::open(&url).await.expect("open is lazy");
    let started = Instant::now();
    let err = store.migrate().await.expect_err("nobody listens");
    assert!(err.is_transient(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = store.commit_batch(&sources(1)).await.expect_err("down");
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_keep_positions_dense() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let url = pg::with_param(&schema.url(), "pool_size=8");
    let store: Arc<dyn Store> =
        Arc::new(PostgresStore::open_and_migrate(&url).await.expect("store"));
    // One edge per event, so that a lost race that inserted edges would show as extra edges.
    let events: Vec<LineageEvent> = (0..800)
        .map(|_| step("derive", &[Uuid::new_v4()], &[Uuid::new_v4()]))
        .collect();
    store_suite::concurrent_commits_keep_positions_dense(store, &events).await;
    let raw = schema.raw().await;
    let (n, distinct, dense) = pg::rows_distinct_dense(&raw).await;
    assert_eq!((n, distinct, dense), (800, 800, true));
    let edges = raw
        .query_one(
            "SELECT count(*), count(DISTINCT (from_uuid, to_uuid, event_id)) FROM lineage_edges",
            &[],
        )
        .await
        .expect("edges");
    assert_eq!((edges.get::<_, i64>(0), edges.get::<_, i64>(1)), (800, 800));
}

/// A writer that does not take the log lock (the Python task) inserts an event of the batch
/// while the commit is under way: the commit starts again and stores the rest, with dense
/// positions and no edge twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_free_writer_racing_a_commit_costs_a_retry_not_a_gap() {
    let Some((schema, store)) = TestSchema::with_store().await else {
        return;
    };
    let store = Arc::new(store);
    store.commit_batch(&sources(3)).await.expect("commit");
    let raced = step("derive", &[Uuid::new_v4()], &[Uuid::new_v4()]);
    let other = step("derive", &[Uuid::new_v4()], &[Uuid::new_v4()]);

    // The other writer's insert is in flight (not committed) when the commit starts.
    let mut python = schema.raw().await;
    let tx = python.transaction().await.expect("begin");
    pg::insert_row(&tx, &raced, Utc::now(), None).await;
    let commit = {
        let store = Arc::clone(&store);
        let batch = vec![raced.clone(), other.clone()];
        tokio::spawn(async move { store.commit_batch(&batch).await })
    };
    // The commit waits on the uncommitted row; then the other writer commits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !commit.is_finished(),
        "the commit should wait for the other writer"
    );
    tx.commit().await.expect("the other writer commits");

    let report = commit.await.expect("join").expect("commit after the race");
    assert_eq!(
        (report.inserted, report.duplicates, report.log_size),
        (1, 1, 4)
    );
    let raw = schema.raw().await;
    let rows: Vec<(String, Option<i64>)> = raw
        .query(
            "SELECT event_id, log_position FROM lineage_events ORDER BY event_id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows.len(), 5);
    let position_of = |id: String| rows.iter().find(|r| r.0 == id).and_then(|r| r.1);
    assert_eq!(position_of(other.event_id.to_hex()), Some(3));
    assert_eq!(
        position_of(raced.event_id.to_hex()),
        None,
        "not adopted yet"
    );
    let edges: Vec<String> = raw
        .query("SELECT event_id FROM lineage_edges", &[])
        .await
        .expect("edges")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        edges,
        vec![other.event_id.to_hex()],
        "the rolled-back edges are gone"
    );

    // The next migrate adopts the other writer's row at the end of the log, with its edge.
    store.migrate().await.expect("adopt");
    let (n, distinct, dense) = pg::rows_distinct_dense(&raw).await;
    assert_eq!((n, distinct, dense), (5, 5, true));
    let graph = walk(store.as_ref(), raced.dataset_uuid, Direction::Upstream, 1).await;
    assert_eq!(graph.edges.len(), 1);
}

/// A seed row as the reference Python task writes it.
struct SeedRow {
    event: LineageEvent,
    timestamp: DateTime<Utc>,
}

/// The seed table's columns, every one of them, in event_id order.
type SeedColumns = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
);

async fn seed_columns(raw: &tokio_postgres::Client) -> Vec<SeedColumns> {
    raw.query(
        "SELECT event_id, dataset_uuid, operation, crs_from, crs_to, processor_id, \
                \"timestamp\", payload_json FROM lineage_events ORDER BY event_id",
        &[],
    )
    .await
    .expect("seed columns")
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
        )
    })
    .collect()
}

async fn insert_seed_rows(raw: &tokio_postgres::Client, rows: &[SeedRow]) {
    for row in rows {
        pg::insert_row(raw, &row.event, row.timestamp, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_table_with_rows_is_adopted_unchanged() {
    let Some((schema, raw)) = TestSchema::with_reference_table().await else {
        return;
    };

    // 1,000 rows: a chain of derivations, every fourth with no inputs; timestamps in 250
    // distinct instants, so that ties are broken by event_id; a few payload shapes the Python
    // task writes (non-ASCII text, floats, nested parameters).
    let base = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
    let mut previous = Uuid::new_v4();
    let mut rows = Vec::new();
    for i in 0..1000_i64 {
        let output = Uuid::new_v4();
        let inputs: Vec<Uuid> = if i % 4 == 0 { vec![] } else { vec![previous] };
        let operation = ["reproject", "tile", "mosaic", "validate_topology"]
            [usize::try_from(i % 4).unwrap_or(0)];
        let event = event_from(&json!({
            "dataset_uuid": output,
            "operation": operation,
            "crs_from": "EPSG:32633",
            "crs_to": if i % 3 == 0 { serde_json::Value::Null } else { json!("EPSG:3857") },
            "processor_id": format!("celery@worker-{}", i % 7),
            "inputs": inputs,
            "outputs": [output],
            "parameters": {"resolution": 10.5, "note": "Zürich 東京", "i": i},
        }));
        rows.push(SeedRow {
            event,
            timestamp: base + chrono::Duration::milliseconds((i / 4) * 1000),
        });
        previous = output;
    }
    insert_seed_rows(&raw, &rows).await;
    let before = seed_columns(&raw).await;
    assert_eq!(before.len(), 1000);

    let store = PostgresStore::open(&schema.url()).await.expect("open");
    assert_eq!(store.migrate().await.expect("adopt"), SCHEMA_VERSION);

    // Every seed column of every row is exactly as it was.
    assert_eq!(seed_columns(&raw).await, before);
    assert_eq!(store.count().await.expect("count"), 1000);
    let (n, distinct, dense) = pg::rows_distinct_dense(&raw).await;
    assert_eq!((n, distinct, dense), (1000, 1000, true));

    // Positions follow (timestamp, event_id).
    let mut expected: Vec<(DateTime<Utc>, String)> = rows
        .iter()
        .map(|r| (r.timestamp, r.event.event_id.to_hex()))
        .collect();
    expected.sort();
    let scanned = store.scan(0, 2000).await.expect("scan");
    let order: Vec<String> = scanned.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(
        order,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
    let first = &scanned[0];
    let original = rows
        .iter()
        .find(|r| r.event.event_id.to_hex() == first.event_id)
        .expect("row");
    assert_eq!(first.payload_json, original.event.payload_json);
    assert_eq!(first.recorded_at, original.timestamp);

    // Edges were built from payload_json: the whole chain is walkable.
    let last = rows.last().expect("rows").event.dataset_uuid;
    let up = walk(&store, last, Direction::Upstream, 10_000).await;
    assert_eq!(
        up.edges.len(),
        3,
        "three derivations back to the last source"
    );
    let edges = pg::number(&raw, "SELECT count(*) FROM lineage_edges").await;
    assert_eq!(edges, 750);

    // New events go beside them.
    let new = sources(10);
    let report = store.commit_batch(&new).await.expect("commit");
    assert_eq!((report.inserted, report.log_size), (10, 1010));
    let stored = store
        .get_event(&new[9].event_id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.position, 1009);
    // An event the Python task already stored is a duplicate.
    let again = store
        .commit_batch(std::slice::from_ref(&rows[5].event))
        .await
        .expect("commit");
    assert_eq!((again.inserted, again.duplicates), (0, 1));

    // The Python task keeps writing during the migration: the next migrate adopts its rows.
    let late = SeedRow {
        event: sources(1).remove(0),
        timestamp: Utc::now(),
    };
    insert_seed_rows(&raw, std::slice::from_ref(&late)).await;
    assert_eq!(
        store.count().await.expect("count"),
        1010,
        "not in the log yet"
    );
    assert_eq!(
        store.migrate().await.expect("migrate again"),
        SCHEMA_VERSION
    );
    let adopted = store
        .get_event(&late.event.event_id)
        .await
        .expect("get")
        .expect("adopted");
    assert_eq!(adopted.position, 1010);
    let (n, distinct, dense) = pg::rows_distinct_dense(&raw).await;
    assert_eq!((n, distinct, dense), (1011, 1011, true));

    // Adopted rows are as frozen as any other.
    let err = raw
        .batch_execute("UPDATE lineage_events SET payload_json = '{}' WHERE log_position = 0")
        .await
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only") || err.as_db_error().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_columns_of_an_unadopted_row_cannot_be_changed_either() {
    let Some((schema, store)) = TestSchema::with_store().await else {
        return;
    };
    let raw = schema.raw().await;
    // A row written by another writer, not in the log yet.
    let row = SeedRow {
        event: sources(1).remove(0),
        timestamp: Utc::now(),
    };
    insert_seed_rows(&raw, std::slice::from_ref(&row)).await;
    let err = raw
        .batch_execute("UPDATE lineage_events SET operation = 'forged', log_position = 0")
        .await
        .expect_err("seed columns are frozen");
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("append-only")),
        "{message:?}"
    );
    assert_eq!(store.migrate().await.expect("adopt"), SCHEMA_VERSION);
    assert_eq!(store.count().await.expect("count"), 1);
}

// ---------------------------------------------------------------------------------------------
// Worker processes against a private or shared server.

async fn stored(raw: &tokio_postgres::Client) -> i64 {
    raw.query_one("SELECT count(*) FROM lineage_events", &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_outage_mid_stream_loses_and_duplicates_nothing() {
    const EVENTS: usize = 20_000;
    let Some(server) = LocalPg::init("") else {
        return;
    };
    server.start();
    let url = server.url("127.0.0.1", "sslmode=disable");
    let data = tempfile::tempdir().expect("data dir");
    let payloads = crate::support::valid_events(EVENTS, "pg-outage");

    let mut worker = WorkerProcess::start(
        data.path(),
        &url,
        "worker.log",
        &["--concurrency", "1", "--batch-size", "500"],
    );
    let raw = pg::connect(&url).await.expect("raw connection");
    // The worker migrates at start.
    assert!(
        pg::wait_for(Duration::from_secs(30), || async {
            raw.query_one("SELECT to_regclass('log_head') IS NOT NULL", &[])
                .await
                .is_ok_and(|r| r.get::<_, bool>(0))
        })
        .await,
        "the worker did not migrate:\n{}",
        worker.log_text()
    );
    crate::support::tlog::emit(data.path(), &payloads[..EVENTS / 2]);
    assert!(
        pg::wait_for(Duration::from_secs(30), || async {
            stored(&raw).await >= 2000
        })
        .await,
        "nothing stored:\n{}",
        worker.log_text()
    );
    drop(raw);

    // Down for ten seconds, mid-stream; the rest of the stream arrives during the outage.
    server.stop();
    let down_at = Instant::now();
    crate::support::tlog::emit(data.path(), &payloads[EVENTS / 2..]);
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down_at.elapsed())).await;
    assert!(
        worker.child.try_wait().expect("poll").is_none(),
        "the worker died"
    );
    server.start();

    let raw = pg::connect(&url)
        .await
        .expect("raw connection after restart");
    let done = pg::wait_for(Duration::from_secs(60), || async {
        stored(&raw).await >= EVENTS as i64
    })
    .await;
    let log = worker.log_text();
    assert!(
        done,
        "only {} of {EVENTS} stored:\n{log}",
        stored(&raw).await
    );
    let (n, distinct, dense) = pg::rows_distinct_dense(&raw).await;
    assert_eq!((n, distinct, dense), (EVENTS as i64, EVENTS as i64, true));
    assert_eq!(
        pg::number(&raw, "SELECT size FROM log_head").await,
        EVENTS as i64
    );

    // One line per state change, not one per attempt.
    assert_eq!(
        log.matches("Store unavailable").count(),
        1,
        "worker log:\n{log}"
    );
    assert_eq!(
        log.matches("Store available again").count(),
        1,
        "worker log:\n{log}"
    );
    worker.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_killed_at_random_store_every_event_once() {
    const EVENTS: usize = 30_000;
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let url = schema.url();
    // Migrate first, so that the workers' own start-up migrations find nothing to do.
    PostgresStore::open_and_migrate(&url)
        .await
        .expect("migrate");
    let data = tempfile::tempdir().expect("data dir");
    let events = crate::support::valid_events(EVENTS, "pg-three-workers");
    let args = [
        "--concurrency",
        "2",
        "--batch-size",
        "250",
        "--rate-limit",
        "3000/s",
        "--visibility-timeout",
        "2s",
    ];
    let mut workers = WorkerProcess::fleet(3, data.path(), &url, &events, &args);
    // Each worker is killed once, when the store passes a random count, and restarted at once.
    let mut rng = rand::thread_rng();
    let mut kill_at: Vec<Option<i64>> = (0..3)
        .map(|_| Some(rng.gen_range(1_000..(EVENTS as i64 * 3 / 4))))
        .collect();
    let raw = schema.raw().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = stored(&raw).await;
        for (i, at) in kill_at.iter_mut().enumerate() {
            if at.is_some_and(|at| n >= at) {
                *at = None;
                workers[i].kill9();
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..300))).await;
                workers[i] = WorkerProcess::numbered(i, data.path(), &url, &args);
            }
        }
        if n >= EVENTS as i64 && kill_at.iter().all(Option::is_none) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {EVENTS} stored; logs:\n{}",
            WorkerProcess::logs(&workers)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Redelivered leases of the killed workers come back as duplicates: give them time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, distinct, dense) = pg::rows_distinct_dense(&raw).await;
    assert_eq!((n, distinct, dense), (EVENTS as i64, EVENTS as i64, true));
    let store = PostgresStore::open(&url).await.expect("open");
    assert_eq!(store.count().await.expect("count"), EVENTS as u64);
    for worker in &mut workers {
        worker.kill9();
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A throwaway CA and two server certificates signed by it: one for `localhost`, one for
/// another host name. `None` (after a skip) without the openssl CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn make() -> Option<Pki> {
        if Command::new("openssl").arg("version").output().is_err() {
            crate::support::require_or_skip("no openssl CLI to make test certificates");
            return None;
        }
        let dir = tempfile::tempdir().expect("pki dir");
        let run =
            |args: &[&str]| pg::run_ok(Command::new("openssl").args(args).current_dir(dir.path()));
        // A new P-256 key (unencrypted) and a request or certificate for it.
        let new_key = |args: &[&str]| {
            let key = [
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ];
            run(&[&key[..], args].concat());
        };
        new_key(&[
            "-x509",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=geoprov test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        for name in ["localhost", "elsewhere.example"] {
            std::fs::write(
                dir.path().join(format!("{name}.ext")),
                format!(
                    "subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n\
                     keyUsage=critical,digitalSignature,keyEncipherment\n\
                     extendedKeyUsage=serverAuth\n"
                ),
            )
            .expect("ext file");
            new_key(&[
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Some(Pki { dir })
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).expect("read pki file")
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

/// A throwaway PKI and a private server with `ssl = on`, presenting the certificate made for
/// `name`; `None` (after a skip) without openssl or the server binaries.
fn tls_server(name: &str) -> Option<(Pki, LocalPg)> {
    let pki = Pki::make()?;
    let server =
        LocalPg::init("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'")?;
    server.put_file("server.crt", &pki.read(&format!("{name}.crt")));
    server.put_file("server.key", &pki.read(&format!("{name}.key")));
    server.start();
    Some((pki, server))
}

async fn migrate_and_commit(url: &str) -> Result<u64, StoreError> {
    let store = PostgresStore::open(url).await?;
    store.migrate().await?;
    Ok(store.commit_batch(&sources(2)).await?.log_size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_accepts_the_right_host_and_refuses_another() {
    let Some((pki, server)) = tls_server("localhost") else {
        return;
    };
    let ca = pki.ca();
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    migrate_and_commit(&server.url("localhost", &full))
        .await
        .expect("verify-full against localhost with the right CA");

    // The session is really encrypted.
    let store = PostgresStore::open(&server.url("localhost", &full))
        .await
        .expect("open");
    assert_eq!(store.count().await.expect("count"), 2);
    let raw = pg::connect(&server.url("127.0.0.1", "sslmode=disable"))
        .await
        .expect("raw");
    let encrypted: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.application_name = 'geoprov'",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted >= 1, "no TLS session from geoprov");

    // The same certificate reached under a name it does not carry.
    let err = migrate_and_commit(&server.url("127.0.0.1", &full))
        .await
        .expect_err("127.0.0.1 is not in the certificate");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");

    // `require` encrypts without verifying; `verify-ca` checks the chain only.
    migrate_and_commit(&server.url("127.0.0.1", "sslmode=require"))
        .await
        .expect("require");
    migrate_and_commit(&server.url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca");

    // A CA that did not sign the certificate.
    let Some(other) = Pki::make() else {
        return;
    };
    let err = migrate_and_commit(&server.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", other.ca()),
    ))
    .await
    .expect_err("unknown CA");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_refuses_a_certificate_for_another_host_name() {
    let Some((pki, server)) = tls_server("elsewhere.example") else {
        return;
    };
    let full = format!("sslmode=verify-full&sslrootcert={}", pki.ca());
    let err = migrate_and_commit(&server.url("localhost", &full))
        .await
        .expect_err("the certificate is for elsewhere.example");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(!err.is_transient());
    // Same CA, chain only: accepted.
    migrate_and_commit(&server.url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={}", pki.ca()),
    ))
    .await
    .expect("verify-ca");
    // A server without TLS refuses `require`.
    drop(server);
    let Some(plain) = LocalPg::init("") else {
        return;
    };
    plain.start();
    let err = migrate_and_commit(&plain.url("localhost", "sslmode=require"))
        .await
        .expect_err("no TLS offered");
    assert!(!err.is_transient(), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Measurements (run in release: `cargo test --release --test it postgres_store::measure --
// --ignored --nocapture`).

/// `n` events shaped like `geoprov bench`'s (about 580 bytes, one to three inputs chained to
/// recent outputs).
fn bench_like_events(n: usize) -> Vec<LineageEvent> {
    let mut rng = rand::thread_rng();
    let mut outputs: Vec<Uuid> = vec![Uuid::new_v4()];
    (0..n)
        .map(|i| {
            let output = Uuid::new_v4();
            let inputs: Vec<Uuid> = (0..rng.gen_range(1..=3))
                .map(|_| outputs[outputs.len() - 1 - rng.gen_range(0..outputs.len().min(50))])
                .collect();
            let event = event_from(&json!({
                "dataset_uuid": output,
                "operation": "reproject",
                "crs_from": "EPSG:32633",
                "crs_to": "EPSG:3857",
                "processor_id": format!("etl-worker-{:02}", i % 24),
                "started_at": "2026-03-01T10:00:00.125000Z",
                "inputs": inputs,
                "parameters": {"resampling": "bilinear", "target_resolution": 10.0, "nodata": -9999},
                "bbox": [12.5, 41.9, 13.5, 42.9],
                "output_uri": format!("s3://geo-lake-curated/reproject/{}.tif", &output.to_string()[..8]),
                "software": {"gdal": "3.6.2", "pipeline": "geo-etl/2.4.1"},
                "sequence": i,
            }));
            outputs.push(output);
            event
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --ignored --nocapture"]
async fn measure_commit_throughput() {
    const BATCHES: usize = 200;
    const BATCH: usize = 1000;
    let events = bench_like_events(BATCHES * BATCH);
    for tasks in [1_usize, 2] {
        // A fresh schema per run, so that the second starts from an empty log too.
        let Some((_schema, store)) = TestSchema::with_store().await else {
            return;
        };
        let store = Arc::new(store);
        let started = Instant::now();
        let chunks: Vec<Vec<LineageEvent>> = events.chunks(BATCH).map(<[_]>::to_vec).collect();
        let chunks = Arc::new(std::sync::Mutex::new(chunks));
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let store = Arc::clone(&store);
            let chunks = Arc::clone(&chunks);
            handles.push(tokio::spawn(async move {
                loop {
                    let Some(batch) = chunks.lock().expect("lock").pop() else {
                        break;
                    };
                    store.commit_batch(&batch).await.expect("commit");
                }
            }));
        }
        for h in handles {
            h.await.expect("join");
        }
        let elapsed = started.elapsed();
        println!(
            "postgres commit_batch, {tasks} task(s): {} events in batches of {BATCH} in \
             {elapsed:.2?}: {:.0} events/s",
            events.len(),
            events.len() as f64 / elapsed.as_secs_f64()
        );
    }
}

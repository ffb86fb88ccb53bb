//! The transparency log on the PostgreSQL store, through the real `geoprov` binary with
//! `--store postgres://...?schema=...` (each test in a schema of its own): `geoprov verify` on an
//! intact log and on every kind of tampering (done with direct SQL after disabling the
//! append-only triggers, as the owner of the tables can), three worker processes appending to one
//! log, inclusion and consistency proofs checked offline, the migration that gives a schema-1 log
//! its leaf hashes, and adoption of the reference task's rows into the log. The cases that read
//! the same on SQLite are in `support/log_cases.rs`.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use geoprov::config::default_key_path;
use geoprov::event::LineageEvent;
use geoprov::store::postgres::PostgresStore;
use geoprov::store::{Store, TransparencyLog};
use geoprov::tlog::Signer;
use geoprov::tlog_service::{write_checkpoint, write_key_file};

use crate::support::log_cases::{self, edge_tamper_is_named, tamper_is_named};
use crate::support::pg::{self, TestSchema, WorkerProcess};
use crate::support::stamp::stamp_cases;
use crate::support::tlog::{
    a_backfilled_log_verifies, event, geoprov, head_covers_the_leaves, terminate, text, verify_ok,
    Backend, Fixture, LogDir,
};

log_cases::log_cases!(Backend::Postgres);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_log_verifies_and_reports_uncovered_events() {
    let Some(f) = Fixture::new(Backend::Postgres).await else {
        return;
    };
    let stdout = log_cases::intact_log_verifies(&f).await;
    // The root verify prints is the store's own tree head.
    let store = f.open().await;
    let head = store.transparency_log().expect("log").tree_head().await;
    let head = head.expect("head");
    assert!(stdout.contains(&hex::encode(head.root)), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_columns_are_named_by_position() {
    let cases = [
        (
            "UPDATE lineage_events SET operation = 'tile' WHERE log_position = 17",
            17,
            "column operation",
        ),
        (
            "UPDATE lineage_events SET payload_json = replace(payload_json, 'reproject', \
             'reprojekt') WHERE log_position = 13",
            13,
            "payload_json does not hash to event_id",
        ),
        // One microsecond is enough: the leaf covers the record time as stored.
        (
            "UPDATE lineage_events SET \"timestamp\" = \"timestamp\" + interval '1 microsecond' \
             WHERE log_position = 21",
            21,
            "the stored leaf_hash does not match",
        ),
        // The event times are derived from the payload too.
        (
            "UPDATE lineage_events SET started_at = '2020-01-01T00:00:00Z' WHERE log_position = 8",
            8,
            "column started_at",
        ),
    ];
    for (sql, position, why) in cases {
        let Some(f) = Fixture::new(Backend::Postgres).await else {
            return;
        };
        tamper_is_named(f, sql, position, why).await;
    }
}

/// The edges in a row (`inputs`, `outputs`) are derived from its payload: changing them fails
/// verify even with the triggers out of the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_lineage_edges_are_named() {
    for sql in [
        "UPDATE lineage_events SET inputs = ARRAY[gen_random_uuid()] WHERE log_position = 13",
        "UPDATE lineage_events SET outputs = outputs || gen_random_uuid() \
         WHERE log_position = 21",
        "UPDATE lineage_events SET inputs = NULL WHERE log_position = 2",
    ] {
        let Some(f) = Fixture::new(Backend::Postgres).await else {
            return;
        };
        edge_tamper_is_named(
            f,
            sql,
            "the lineage edges do not match the payloads in the log",
        )
        .await;
    }
}

stamp_cases!(Fixture::new(Backend::Postgres), |f| log_cases(f);
    an_inserted_row_is_named,
);

/// Checkpoints are append-only on PostgreSQL (the trait's contract is in `tlog_suite.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_refuse_update_delete_and_truncate() {
    let Some((schema, store)) = TestSchema::with_store().await else {
        return;
    };
    store.commit_batch(&[event(0)]).await.expect("commit");
    let head = store.tree_head().await.expect("head");
    assert!(
        geoprov::tlog_service::add_checkpoint(&store, 1, head.root, "n")
            .await
            .expect("add")
    );
    // Append-only.
    pg::assert_append_only(
        &schema.raw().await,
        &[
            "UPDATE log_checkpoints SET note = 'x'",
            "DELETE FROM log_checkpoints",
            "TRUNCATE log_checkpoints",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_backfills_the_leaves_of_a_version_1_log() {
    let Some(log) = LogDir::new(Backend::Postgres).await else {
        return;
    };
    let raw = log.schema.as_ref().expect("a schema").raw().await;
    // A log written by a schema-1 geoprov: rows with positions but no leaf hashes.
    pg::create_schema_1(&raw).await;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for i in 0..25_i64 {
        let e = event(usize::try_from(i).expect("small"));
        // Distinct microseconds, so the backfill has to keep them exactly.
        let at = base + chrono::Duration::microseconds(i * 1_000_001 + 7);
        pg::insert_row(&raw, &e, at, Some(i)).await;
        for from in &e.inputs {
            raw.execute(
                "INSERT INTO lineage_edges (from_uuid, to_uuid, event_id, operation) \
                 VALUES ($1, $2, $3, $4)",
                &[from, &e.dataset_uuid, &e.event_id.to_hex(), &e.operation],
            )
            .await
            .expect("edge");
        }
    }
    raw.batch_execute("UPDATE log_head SET size = 25")
        .await
        .expect("head");

    a_backfilled_log_verifies(&log).await;
    // The append-only trigger is back.
    assert!(raw
        .batch_execute("UPDATE lineage_events SET leaf_hash = NULL")
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_rows_join_the_log_with_their_leaves() {
    let Some((schema, raw)) = TestSchema::with_reference_table().await else {
        return;
    };
    // Rows written by the reference task, with microsecond timestamps.
    let base = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
    for i in 0..30_i64 {
        let e = event(usize::try_from(i).expect("small"));
        pg::insert_row(
            &raw,
            &e,
            base + chrono::Duration::microseconds(i * 333_333),
            None,
        )
        .await;
    }
    let store = PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("adopt");
    head_covers_the_leaves(&store, 30).await;
    store
        .commit_batch(&(100..110).map(event).collect::<Vec<_>>())
        .await
        .expect("commit");
    // A late row of the reference task, adopted by the next migrate.
    pg::insert_row(&raw, &event(200), Utc::now(), None).await;
    store.migrate().await.expect("adopt again");
    assert_eq!(store.tree_head().await.expect("head").size, 41);
    let dir = tempfile::tempdir().expect("temp dir");
    let (stdout, _) = verify_ok(dir.path(), &["--store", &schema.url()]);
    assert!(stdout.contains("OK: 41 events"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_leave_a_dense_log_that_verifies() {
    const EVENTS: usize = 15_000;
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().expect("data dir");
    let out = geoprov(dir.path(), &["keygen", "--name", "geoprov/pg-workers"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = geoprov(dir.path(), &["migrate", "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = crate::support::valid_events(EVENTS, "tlog-pg-workers");
    let args = [
        "--concurrency",
        "2",
        "--batch-size",
        "200",
        "--checkpoint-interval",
        "200ms",
        "--checkpoint-every",
        "2000",
    ];
    let mut workers = WorkerProcess::fleet(3, dir.path(), &url, &events, &args);
    let raw = schema.raw().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n, _, _) = pg::rows_distinct_dense(&raw).await;
        if n >= EVENTS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {EVENTS} stored; logs:\n{}",
            WorkerProcess::logs(&workers)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in &mut workers {
        assert_eq!(
            terminate(&mut worker.child),
            Some(0),
            "clean exit on SIGTERM:\n{}",
            worker.log_text()
        );
    }
    let (n, distinct, dense) = pg::rows_distinct_dense(&raw).await;
    assert_eq!((n, distinct, dense), (EVENTS as i64, EVENTS as i64, true));
    // Every worker wrote checkpoints while the log grew; the final ones cover everything.
    let checkpoints = pg::number(&raw, "SELECT count(*) FROM log_checkpoints").await;
    assert!(checkpoints >= 2, "{checkpoints} checkpoints");
    let (stdout, stderr) = verify_ok(dir.path(), &["--store", &url]);
    assert!(stdout.contains(&format!("OK: {EVENTS} events")), "{stdout}");
    assert!(!stderr.contains("not yet covered"), "{stderr}");
    assert!(
        stdout.contains(&format!("latest at tree size {EVENTS}")),
        "{stdout}"
    );
}

// Measurement (run in release: `cargo test --release --test it tlog_postgres::measure --
// --ignored --nocapture`).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --ignored --nocapture"]
async fn measure_verify_throughput() {
    const EVENTS: usize = 200_000;
    const BATCH: usize = 5_000;
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let signer = Signer::generate("geoprov/measure").expect("signer");
    write_key_file(&default_key_path(dir.path()), &signer, false).expect("key file");
    let store = PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("store");
    let events: Vec<LineageEvent> = (0..EVENTS).map(event).collect();
    for chunk in events.chunks(BATCH) {
        store.commit_batch(chunk).await.expect("commit");
        write_checkpoint(&store, &signer).await.expect("checkpoint");
    }
    let (stdout, _) = verify_ok(dir.path(), &["--store", &schema.url()]);
    println!("{stdout}");
    assert!(stdout.contains(&format!("OK: {EVENTS} events")), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_worker_role_appends_and_checkpoints() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let Some(rest) = schema.server.strip_prefix("postgres://postgres@") else {
        eprintln!("skipped: the test server URL does not log in as postgres@");
        return;
    };
    PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("migrate as the owner");
    // The grants the README gives a worker role.
    let role = format!("geoprov_w_{}", uuid::Uuid::new_v4().simple());
    let raw = schema.raw().await;
    raw.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA {s} TO {role};
         GRANT SELECT, INSERT ON lineage_events, log_checkpoints, log_nodes TO {role};
         GRANT SELECT, UPDATE ON log_head TO {role};
         GRANT SELECT ON schema_migrations TO {role};
         GRANT EXECUTE ON FUNCTION geoprov_clean_edge_indexes() TO {role};",
        s = schema.name
    ))
    .await
    .expect("worker role");
    let url = pg::with_param(
        &format!("postgres://{role}@{rest}"),
        &format!("schema={}", schema.name),
    );
    // The log service's errors, as the store errors this block returns.
    let service = |e: geoprov::tlog_service::LogServiceError| {
        geoprov::store::StoreError::Query(e.to_string())
    };
    let result = async {
        let store = PostgresStore::open(&url).await?;
        store.migrate().await?;
        let signer = Signer::generate("geoprov/least-privilege").expect("signer");
        for batch in 0..3 {
            let events: Vec<LineageEvent> = (0..10).map(|i| event(batch * 10 + i)).collect();
            store.commit_batch(&events).await?;
            write_checkpoint(&store, &signer).await.map_err(service)?;
        }
        // The role may merge the edge indexes' pending lists through the owner's function,
        // and only through it (gin_clean_pending_list itself wants the index's owner).
        let (client, connection) =
            tokio_postgres::connect(&format!("postgres://{role}@{rest}"), tokio_postgres::NoTls)
                .await
                .map_err(geoprov::store::postgres::classify)?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("SET search_path TO {}", schema.name))
            .await
            .map_err(geoprov::store::postgres::classify)?;
        let merged: i64 = client
            .query_one("SELECT geoprov_clean_edge_indexes()", &[])
            .await
            .map_err(geoprov::store::postgres::classify)?
            .get(0);
        assert!(merged >= 0);
        assert!(client
            .query_one(
                "SELECT gin_clean_pending_list('lineage_events_inputs')",
                &[]
            )
            .await
            .is_err());
        // And store the log's tree nodes (two of 1,024 leaves and the one above them).
        let events: Vec<LineageEvent> = (30..30 + 2048).map(event).collect();
        store.commit_batch(&events).await?;
        assert_eq!(geoprov::tlog_service::materialize_nodes(&store).await?, 3);
        // A proof read through those nodes is the one the leaves give.
        write_checkpoint(&store, &signer).await.map_err(service)?;
        let size = store.tree_head().await?.size;
        let leaves = store.leaf_hashes(0, size).await?;
        let first = store.scan(5, 1).await?.remove(0);
        let proof =
            geoprov::tlog_service::inclusion_proof(&store, &first.event_id.parse().expect("id"))
                .await
                .map_err(service)?;
        let expected: Vec<String> = geoprov::tlog::inclusion_proof(5, size, &leaves)
            .expect("proof")
            .iter()
            .map(hex::encode)
            .collect();
        assert_eq!(proof.audit_path, expected);
        Ok::<_, geoprov::store::StoreError>(size)
    }
    .await;
    let _ = raw
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await;
    assert_eq!(result.expect("worker role"), 30 + 2048);
    let checkpoints = pg::number(&raw, "SELECT count(*) FROM log_checkpoints").await;
    assert_eq!(checkpoints, 4);
}

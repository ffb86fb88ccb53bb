//! The transparency log on the PostgreSQL store, through the real `geoprov` binary with
//! `--store postgres://...?schema=...` (each test in a schema of its own): `geoprov verify` on an
//! intact log and on every kind of tampering (done with direct SQL after disabling the
//! append-only triggers, as the owner of the tables can), three worker processes appending to one
//! log, inclusion and consistency proofs checked offline, the migration that gives a schema-1 log
//! its leaf hashes, and adoption of the reference task's rows into the log.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use geoprov::config::default_key_path;
use geoprov::event::LineageEvent;
use geoprov::store::postgres::PostgresStore;
use geoprov::store::{Store, TransparencyLog};
use geoprov::tlog::{event_leaf_hash, format_recorded_at, CompactRange, Signer};
use geoprov::tlog_service::{write_checkpoint, write_key_file};

use crate::support::pg::{self, TestSchema, WorkerProcess};
use crate::support::tlog::{event, flip, geoprov, terminate, text, verify_fails, verify_ok};

/// A PostgreSQL log of 40 events in a schema of its own, with signed checkpoints at tree sizes
/// 10, 20 and 30 (the last 10 events are not covered yet), and a data dir holding the signing
/// key at its default place (where `verify` finds its verifier key).
struct Fixture {
    schema: TestSchema,
    dir: tempfile::TempDir,
    signer: Signer,
}

impl Fixture {
    /// `None` (after a skip) without a server.
    async fn new() -> Option<Fixture> {
        let schema = TestSchema::create().await?;
        let dir = tempfile::tempdir().expect("temp dir");
        let signer = Signer::generate("geoprov/test-log").expect("signer");
        write_key_file(&default_key_path(dir.path()), &signer, false).expect("key file");
        let store = PostgresStore::open_and_migrate(&schema.url())
            .await
            .expect("store");
        for batch in 0..4 {
            let events: Vec<LineageEvent> = (0..10).map(|i| event(batch * 10 + i)).collect();
            let report = store.commit_batch(&events).await.expect("commit");
            assert_eq!(report.inserted, 10);
            if batch < 3 {
                let written = write_checkpoint(&store, &signer).await.expect("checkpoint");
                assert_eq!(written, Some(report.log_size));
            }
        }
        Some(Fixture {
            schema,
            dir,
            signer,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        self.schema.url()
    }

    /// `geoprov verify --store URL EXTRA...`, expected to fail; its stderr.
    fn verify_fails(&self, extra: &[&str]) -> String {
        let url = self.url();
        let mut args = vec!["--store", url.as_str()];
        args.extend_from_slice(extra);
        verify_fails(self.path(), &args)
    }

    /// `geoprov verify --store URL EXTRA...`, expected to pass; (stdout, stderr).
    fn verify_ok(&self, extra: &[&str]) -> (String, String) {
        let url = self.url();
        let mut args = vec!["--store", url.as_str()];
        args.extend_from_slice(extra);
        verify_ok(self.path(), &args)
    }

    /// A raw connection to the schema with every user trigger of the log's tables disabled:
    /// what an attacker who owns the tables can do.
    async fn attacker(&self) -> tokio_postgres::Client {
        let raw = self.schema.raw().await;
        raw.batch_execute(
            "ALTER TABLE lineage_events DISABLE TRIGGER USER;
             ALTER TABLE log_checkpoints DISABLE TRIGGER USER;",
        )
        .await
        .expect("disable triggers");
        raw
    }

    async fn event_id_at(&self, position: i64) -> String {
        self.schema
            .raw()
            .await
            .query_one(
                "SELECT event_id FROM lineage_events WHERE log_position = $1",
                &[&position],
            )
            .await
            .expect("event at position")
            .get(0)
    }

    async fn note_at(&self, size: i64) -> String {
        self.schema
            .raw()
            .await
            .query_one(
                "SELECT note FROM log_checkpoints WHERE tree_size = $1",
                &[&size],
            )
            .await
            .expect("checkpoint")
            .get(0)
    }
}

/// Inserts `event` as a fully consistent row at `position` (with its correct leaf hash), as an
/// attacker who knows the leaf format would.
async fn insert_forged(
    raw: &tokio_postgres::Client,
    position: i64,
    event: &LineageEvent,
    recorded_at: DateTime<Utc>,
) {
    let id = event.event_id.to_hex();
    let leaf = event_leaf_hash(
        u64::try_from(position).expect("position"),
        &id,
        &format_recorded_at(recorded_at),
        &event.payload_json,
    )
    .expect("leaf");
    raw.execute(
        "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, crs_to, \
         processor_id, \"timestamp\", payload_json, log_position, leaf_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &id,
            &event.dataset_uuid.to_string(),
            &event.operation,
            &event.crs_from,
            &event.crs_to,
            &event.processor_id,
            &recorded_at,
            &event.payload_json,
            &position,
            &&leaf[..],
        ],
    )
    .await
    .expect("insert forged row");
}

/// Moves every row at `from` or later one position up (through a large offset, for the unique
/// index and the `log_position >= 0` check).
async fn make_room(raw: &tokio_postgres::Client, from: i64) {
    raw.execute(
        "UPDATE lineage_events SET log_position = log_position + 1000000 \
         WHERE log_position >= $1",
        &[&from],
    )
    .await
    .expect("renumber up");
    raw.batch_execute(
        "UPDATE lineage_events SET log_position = log_position - 999999 \
         WHERE log_position >= 1000000",
    )
    .await
    .expect("renumber down");
}

/// Recomputes every row's leaf hash and the log head from the rows, as a thorough attacker
/// would after renumbering.
async fn rebuild_log(raw: &tokio_postgres::Client) {
    let rows = raw
        .query(
            "SELECT log_position, event_id, \"timestamp\", payload_json FROM lineage_events \
             ORDER BY log_position",
            &[],
        )
        .await
        .expect("rows");
    let mut range = CompactRange::new();
    for row in &rows {
        let position: i64 = row.get(0);
        let id: String = row.get(1);
        let recorded_at: DateTime<Utc> = row.get(2);
        let payload: String = row.get(3);
        let leaf = event_leaf_hash(
            u64::try_from(position).expect("position"),
            &id,
            &format_recorded_at(recorded_at),
            &payload,
        )
        .expect("leaf");
        raw.execute(
            "UPDATE lineage_events SET leaf_hash = $1 WHERE log_position = $2",
            &[&&leaf[..], &position],
        )
        .await
        .expect("update leaf");
        range.append(leaf);
    }
    raw.execute(
        "UPDATE log_head SET size = $1, frontier = $2 WHERE id = 0",
        &[
            &i64::try_from(range.size()).expect("size"),
            &range.hashes().concat(),
        ],
    )
    .await
    .expect("update head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_log_verifies_and_reports_uncovered_events() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let (stdout, stderr) = f.verify_ok(&[]);
    assert!(stdout.contains("OK: 40 events"), "{stdout}");
    assert!(stdout.contains("3 checkpoints checked"), "{stdout}");
    assert!(
        stderr.contains("10 events (positions 30..39) are not yet covered by a checkpoint"),
        "{stderr}"
    );
    // The verifier key given explicitly, and an external checkpoint kept outside the database.
    let key = f.signer.verifier_key_text();
    let note = f.path().join("checkpoint-20.txt");
    std::fs::write(&note, f.note_at(20).await).expect("write note");
    let note = note.to_string_lossy().into_owned();
    let (stdout, _) = f.verify_ok(&["--key", &key, "--checkpoint", &note]);
    assert!(stdout.contains("external checkpoint matches"), "{stdout}");
    // The root verify prints is the store's own tree head.
    let store = PostgresStore::open(&f.url()).await.expect("open");
    let head = store.tree_head().await.expect("head");
    assert!(stdout.contains(&hex::encode(head.root)), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_columns_are_named_by_position() {
    tamper_is_named(
        "UPDATE lineage_events SET operation = 'tile' WHERE log_position = 17",
        17,
        "column operation",
    )
    .await;
    tamper_is_named(
        "UPDATE lineage_events SET payload_json = replace(payload_json, 'reproject', \
         'reprojekt') WHERE log_position = 13",
        13,
        "payload_json does not hash to event_id",
    )
    .await;
    // One microsecond is enough: the leaf covers the record time as stored.
    tamper_is_named(
        "UPDATE lineage_events SET \"timestamp\" = \"timestamp\" + interval '1 microsecond' \
         WHERE log_position = 21",
        21,
        "the stored leaf_hash does not match",
    )
    .await;
    // The event times are derived from the payload too.
    tamper_is_named(
        "UPDATE lineage_events SET started_at = '2020-01-01T00:00:00Z' WHERE log_position = 8",
        8,
        "column started_at",
    )
    .await;
}

/// On a fresh fixture, the attacker runs `sql`; verify must fail with one line naming
/// `position`, its event id and `why`.
async fn tamper_is_named(sql: &str, position: i64, why: &str) {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let id = f.event_id_at(position).await;
    f.attacker().await.batch_execute(sql).await.expect("tamper");
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains(&format!("verify: position {position} (event {id}): {why}")),
        "{stderr}"
    );
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
        let Some(f) = Fixture::new().await else {
            return;
        };
        f.verify_ok(&[]);
        f.schema
            .raw()
            .await
            .batch_execute(&format!(
                "ALTER TABLE lineage_events DISABLE TRIGGER lineage_events_append_only; {sql}"
            ))
            .await
            .expect("tamper");
        let stderr = f.verify_fails(&[]);
        assert!(
            stderr.contains("the lineage edges do not match the payloads in the log"),
            "{sql}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_a_missing_position() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    f.attacker()
        .await
        .batch_execute("DELETE FROM lineage_events WHERE log_position = 5")
        .await
        .expect("tamper");
    let stderr = f.verify_fails(&[]);
    assert!(stderr.contains("verify: position 5 is missing"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inserted_row_is_named() {
    let forged_at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    // The thorough attacker recomputes every leaf hash and the log head too, so every row is
    // self-consistent: only the signed checkpoint at 20 can tell.
    let Some(f) = Fixture::new().await else {
        return;
    };
    let raw = f.attacker().await;
    make_room(&raw, 12).await;
    insert_forged(&raw, 12, &event(1000), forged_at).await;
    rebuild_log(&raw).await;
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains(
            "verify: checkpoint at tree size 20: root does not match the log (first divergence \
             between positions 10 and 19)"
        ),
        "{stderr}"
    );

    // The lazy attacker (no leaf hashes recomputed) is caught at the first renumbered row.
    let Some(f) = Fixture::new().await else {
        return;
    };
    let moved = f.event_id_at(12).await;
    let raw = f.attacker().await;
    make_room(&raw, 12).await;
    insert_forged(&raw, 12, &event(1001), forged_at).await;
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains(&format!(
            "verify: position 13 (event {moved}): the stored leaf_hash does not match"
        )),
        "{stderr}"
    );

    // A row appended beyond the head, with a correct leaf hash.
    let Some(f) = Fixture::new().await else {
        return;
    };
    let forged = event(2000);
    insert_forged(&f.attacker().await, 40, &forged, forged_at).await;
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains(&format!(
            "verify: position 40 (event {}): the row is beyond the log head (size 40)",
            forged.event_id
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_positions_are_named() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let at_7 = f.event_id_at(7).await;
    f.attacker()
        .await
        .batch_execute(
            "UPDATE lineage_events SET log_position = 1000000 WHERE log_position = 3;
             UPDATE lineage_events SET log_position = 3 WHERE log_position = 7;
             UPDATE lineage_events SET log_position = 7 WHERE log_position = 1000000;",
        )
        .await
        .expect("swap");
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains(&format!(
            "verify: position 3 (event {at_7}): the stored leaf_hash does not match"
        )),
        "{stderr}"
    );
}

/// Replaces the note and stored root of the checkpoint at `size`.
async fn replace_checkpoint(f: &Fixture, size: i64, note: &str, root: &[u8]) {
    f.attacker()
        .await
        .execute(
            "UPDATE log_checkpoints SET note = $1, root_hash = $2 WHERE tree_size = $3",
            &[&note, &root, &size],
        )
        .await
        .expect("tamper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_with_a_forged_root_is_named() {
    let forged_root = [7u8; 32];
    let forged = |signer: &Signer| {
        signer
            .sign(&geoprov::tlog::Checkpoint {
                origin: "geoprov/test-log".into(),
                size: 20,
                root_hash: forged_root,
            })
            .expect("sign")
    };

    // The note's root line rewritten, its signature kept.
    let Some(f) = Fixture::new().await else {
        return;
    };
    let note = f.note_at(20).await;
    let mut lines: Vec<String> = note.split('\n').map(str::to_owned).collect();
    lines[2] = BASE64.encode(forged_root);
    replace_checkpoint(&f, 20, &lines.join("\n"), &forged_root).await;
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains("verify: checkpoint at tree size 20: signature does not verify with key"),
        "{stderr}"
    );

    // The forged root re-signed with another key of the same name.
    let Some(f) = Fixture::new().await else {
        return;
    };
    let other = Signer::generate("geoprov/test-log").expect("other key");
    replace_checkpoint(&f, 20, &forged(&other), &forged_root).await;
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains("verify: checkpoint at tree size 20: signature does not verify with key"),
        "{stderr}"
    );

    // A forged root signed with the log's own key (a stolen key) still does not match the rows.
    let Some(f) = Fixture::new().await else {
        return;
    };
    replace_checkpoint(&f, 20, &forged(&f.signer), &forged_root).await;
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains(
            "verify: checkpoint at tree size 20: root does not match the log (first divergence \
             between positions 10 and 19)"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_signed_by_another_key_is_named() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let raw = f.attacker().await;
    let root: Vec<u8> = raw
        .query_one(
            "SELECT root_hash FROM log_checkpoints WHERE tree_size = 30",
            &[],
        )
        .await
        .expect("root")
        .get(0);
    let other = Signer::generate("geoprov/other-log").expect("other key");
    let note = other
        .sign(&geoprov::tlog::Checkpoint {
            origin: "geoprov/other-log".into(),
            size: 30,
            root_hash: root.try_into().expect("32 bytes"),
        })
        .expect("sign");
    raw.execute(
        "UPDATE log_checkpoints SET note = $1 WHERE tree_size = 30",
        &[&note],
    )
    .await
    .expect("tamper");
    let stderr = f.verify_fails(&[]);
    assert!(
        stderr.contains(&format!(
            "verify: checkpoint at tree size 30: signature does not verify with key {}",
            f.signer.verifier_key_text()
        )),
        "{stderr}"
    );
    // Verified against the other key instead, the first checkpoint (by the real key) fails.
    let stderr = f.verify_fails(&["--key", &other.verifier_key_text()]);
    assert!(
        stderr.contains("checkpoint at tree size 10: signature does not verify with key"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_verify_offline_and_tampered_ones_do_not() {
    let Some(f) = Fixture::new().await else {
        return;
    };
    let url = f.url();
    let key = f.signer.verifier_key_text();
    let id = f.event_id_at(13).await;

    let out = geoprov(f.path(), &["prove", &id, "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).expect("proof JSON");
    assert_eq!(proof["leaf_index"], 13);
    assert_eq!(proof["tree_size"], 30);
    assert_eq!(proof["event_id"], id.as_str());
    assert!(proof["checkpoint"]
        .as_str()
        .is_some_and(|n| n.starts_with("geoprov/test-log\n30\n")));
    assert_eq!(proof["audit_path"].as_array().map(Vec::len), Some(5));

    // Offline: no data dir, no store.
    let empty = tempfile::tempdir().expect("temp dir");
    let file = empty.path().join("proof.json");
    let file_arg = file.to_string_lossy().into_owned();
    std::fs::write(&file, proof.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!empty.path().join("lineage.db").exists(), "no store opened");

    // One byte of one audit path entry changed.
    let mut bad = proof.clone();
    bad["audit_path"][2] = flip(proof["audit_path"][2].as_str().expect("hex")).into();
    std::fs::write(&file, bad.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));

    // Consistency between the checkpoints at 10 and 30.
    let out = geoprov(
        f.path(),
        &["prove", "--consistency", "10", "30", "--store", &url],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).expect("proof JSON");
    std::fs::write(&file, proof.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut bad = proof.clone();
    bad["proof"][0] = flip(proof["proof"][0].as_str().expect("hex")).into();
    std::fs::write(&file, bad.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(1));

    // An event after the latest checkpoint has no proof yet.
    let uncovered = f.event_id_at(35).await;
    let out = geoprov(f.path(), &["prove", &uncovered, "--store", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not covered"),
        "{}",
        text(&out.stderr)
    );
}

/// Checkpoints are append-only on PostgreSQL (the trait's contract is in `tlog_suite.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_refuse_update_delete_and_truncate() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("store");
    store.commit_batch(&[event(0)]).await.expect("commit");
    let head = store.tree_head().await.expect("head");
    assert!(
        geoprov::tlog_service::add_checkpoint(&store, 1, head.root, "n")
            .await
            .expect("add")
    );
    // Append-only.
    let raw = schema.raw().await;
    for sql in [
        "UPDATE log_checkpoints SET note = 'x'",
        "DELETE FROM log_checkpoints",
        "TRUNCATE log_checkpoints",
    ] {
        let err = raw.batch_execute(sql).await.expect_err(sql);
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_else(|| err.to_string());
        assert!(message.contains("is append-only"), "{sql}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_backfills_the_leaves_of_a_version_1_log() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let raw = schema.raw().await;
    // A log written by a schema-1 geoprov: rows with positions but no leaf hashes.
    pg::create_schema_1(&raw).await;
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for i in 0..25_i64 {
        let e = event(usize::try_from(i).expect("small"));
        // Distinct microseconds, so the backfill has to keep them exactly.
        let at = base + chrono::Duration::microseconds(i * 1_000_001 + 7);
        raw.execute(
            "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, crs_to, \
             processor_id, \"timestamp\", payload_json, log_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &e.event_id.to_hex(),
                &e.dataset_uuid.to_string(),
                &e.operation,
                &e.crs_from,
                &e.crs_to,
                &e.processor_id,
                &at,
                &e.payload_json,
                &i,
            ],
        )
        .await
        .expect("row");
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

    let store = PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("migrate");
    let head = store.tree_head().await.expect("head");
    assert_eq!(head.size, 25);
    let leaves = store.leaf_hashes(0, 25).await.expect("leaves");
    assert_eq!(head.root, geoprov::tlog::root_from_leaf_hashes(&leaves));
    store.commit_batch(&[event(99)]).await.expect("append");
    let dir = tempfile::tempdir().expect("temp dir");
    let (stdout, _) = verify_ok(dir.path(), &["--store", &schema.url()]);
    assert!(stdout.contains("OK: 26 events"), "{stdout}");
    // The append-only trigger is back.
    assert!(raw
        .batch_execute("UPDATE lineage_events SET leaf_hash = NULL")
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopted_rows_join_the_log_with_their_leaves() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let raw = schema.raw().await;
    raw.batch_execute(
        "CREATE TABLE lineage_events (event_id text PRIMARY KEY, dataset_uuid text, \
         operation text, crs_from text, crs_to text, processor_id text, \
         timestamp timestamptz, payload_json text)",
    )
    .await
    .expect("reference table");
    // Rows written by the reference task, with microsecond timestamps.
    let insert = |e: LineageEvent, at: DateTime<Utc>| {
        let raw = &raw;
        async move {
            raw.execute(
                "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, \
                 crs_to, processor_id, timestamp, payload_json) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &e.event_id.to_hex(),
                    &e.dataset_uuid.to_string(),
                    &e.operation,
                    &e.crs_from,
                    &e.crs_to,
                    &e.processor_id,
                    &at,
                    &e.payload_json,
                ],
            )
            .await
            .expect("seed row");
        }
    };
    let base = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
    for i in 0..30_i64 {
        insert(
            event(usize::try_from(i).expect("small")),
            base + chrono::Duration::microseconds(i * 333_333),
        )
        .await;
    }
    let store = PostgresStore::open_and_migrate(&schema.url())
        .await
        .expect("adopt");
    let head = store.tree_head().await.expect("head");
    assert_eq!(head.size, 30);
    let leaves = store.leaf_hashes(0, 30).await.expect("leaves");
    assert_eq!(head.root, geoprov::tlog::root_from_leaf_hashes(&leaves));
    store
        .commit_batch(&(100..110).map(event).collect::<Vec<_>>())
        .await
        .expect("commit");
    // A late row of the reference task, adopted by the next migrate.
    insert(event(200), Utc::now()).await;
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
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, events.join("\n")).expect("events file");
    let input = input.to_string_lossy().into_owned();
    let out = geoprov(dir.path(), &["emit", &input, "--broker", "embedded"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

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
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|i| WorkerProcess::start(dir.path(), &url, &format!("worker-{i}.log"), &args))
        .collect();
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
            workers
                .iter()
                .map(WorkerProcess::log_text)
                .collect::<Vec<_>>()
                .join("\n")
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
    let checkpoints: i64 = raw
        .query_one("SELECT count(*) FROM log_checkpoints", &[])
        .await
        .expect("count")
        .get(0);
    assert!(checkpoints >= 2, "{checkpoints} checkpoints");
    let (stdout, stderr) = verify_ok(dir.path(), &["--store", &url]);
    assert!(stdout.contains(&format!("OK: {EVENTS} events")), "{stdout}");
    assert!(!stderr.contains("not yet covered"), "{stderr}");
    assert!(
        stdout.contains(&format!("latest at tree size {EVENTS}")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_log_endpoints() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = crate::support::Server::start(
        dir.path(),
        &["--store", &url, "--checkpoint-interval", "100ms"],
    );
    let client = ::reqwest::Client::new();
    let base = server.url();
    let resp = client
        .get(format!("{base}/v1/log/checkpoint"))
        .send()
        .await
        .expect("GET checkpoint");
    assert_eq!(resp.status().as_u16(), 404, "no checkpoint yet");
    let events = crate::support::valid_events(50, "tlog-pg-http");
    let (status, answer) =
        crate::support::post_events(&base, format!("[{}]", events.join(","))).await;
    assert_eq!(status, 202, "{answer}");
    let first = answer["event_ids"][0].as_str().expect("id").to_owned();
    let raw = schema.raw().await;
    assert!(
        pg::wait_for(Duration::from_secs(30), || async {
            raw.query_one("SELECT max(tree_size) FROM log_checkpoints", &[])
                .await
                .is_ok_and(|r| r.get::<_, Option<i64>>(0) == Some(50))
        })
        .await,
        "no checkpoint at 50"
    );
    let note = client
        .get(format!("{base}/v1/log/checkpoint"))
        .send()
        .await
        .expect("GET checkpoint")
        .text()
        .await
        .expect("note");
    assert!(note.contains("\n50\n"), "{note}");
    let resp = client
        .get(format!("{base}/v1/log/proof/{first}"))
        .send()
        .await
        .expect("GET proof");
    assert_eq!(resp.status().as_u16(), 200);
    let proof: serde_json::Value = resp.json().await.expect("proof JSON");
    assert_eq!(proof["tree_size"], 50);
    assert_eq!(proof["checkpoint"].as_str(), Some(note.as_str()));
    // The proof checks offline with the key the server created at first start.
    let file = dir.path().join("proof.json");
    std::fs::write(&file, proof.to_string()).expect("write proof");
    let key = dir.path().join("log-signing.key");
    let empty = tempfile::tempdir().expect("temp dir");
    let out = geoprov(
        empty.path(),
        &[
            "verify-proof",
            &file.to_string_lossy(),
            "--key",
            &key.to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
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
    let checkpoints: i64 = raw
        .query_one("SELECT count(*) FROM log_checkpoints", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(checkpoints, 4);
}

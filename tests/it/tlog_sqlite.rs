//! The transparency log on the SQLite store, through the real `geoprov` binary: checkpoints
//! written by a worker (and a final one on SIGTERM), `geoprov verify` on an intact log and on
//! every kind of tampering (done with direct SQL after dropping the append-only triggers),
//! inclusion and consistency proofs checked offline, and the HTTP log endpoints.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use geoprov::config::default_key_path;
use geoprov::event::EventId;
use geoprov::event::LineageEvent;
use geoprov::store::sqlite::SqliteStore;
use geoprov::store::{Store, TransparencyLog};
use geoprov::tlog::{event_leaf_hash, CompactRange, Signer};
use geoprov::tlog_service::{
    consistency_proof, inclusion_proof, materialize_nodes, write_checkpoint, write_key_file,
    ConsistencyProof, InclusionProof,
};
use rusqlite::{params, Connection};

use crate::support::tlog::{event, flip, geoprov, terminate, text, verify_fails, verify_ok};
use crate::support::{geoprov_bin, valid_events, wait_until, Server};

/// A data dir holding a SQLite log of 40 events with signed checkpoints at tree sizes 10, 20
/// and 30 (the last 10 events are not covered yet) and the signing key at its default place.
struct Fixture {
    dir: tempfile::TempDir,
    signer: Signer,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let signer = Signer::generate("geoprov/test-log").expect("signer");
        write_key_file(&default_key_path(dir.path()), &signer, false).expect("key file");
        let store = SqliteStore::open_and_migrate(dir.path().join("lineage.db"))
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
        Fixture { dir, signer }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A raw connection with every append-only trigger dropped: what an attacker with write
    /// access to the file can do.
    fn attacker(&self) -> Connection {
        let conn = Connection::open(self.path().join("lineage.db")).expect("raw connection");
        conn.execute_batch(
            "DROP TRIGGER lineage_events_no_update;
             DROP TRIGGER lineage_events_no_delete;
             DROP TRIGGER log_checkpoints_no_update;
             DROP TRIGGER log_checkpoints_no_delete;",
        )
        .expect("drop triggers");
        conn
    }

    fn event_id_at(&self, position: i64) -> String {
        let conn = Connection::open(self.path().join("lineage.db")).expect("raw connection");
        conn.query_row(
            "SELECT event_id FROM lineage_events WHERE log_position = ?1",
            [position],
            |r| r.get(0),
        )
        .expect("event at position")
    }

    fn note_at(&self, size: i64) -> String {
        let conn = Connection::open(self.path().join("lineage.db")).expect("raw connection");
        conn.query_row(
            "SELECT note FROM log_checkpoints WHERE tree_size = ?1",
            [size],
            |r| r.get(0),
        )
        .expect("checkpoint")
    }
}

/// Inserts `event` as a fully consistent row at `position` (with its correct leaf hash), as an
/// attacker who knows the leaf format would.
fn insert_forged(conn: &Connection, position: u64, event: &LineageEvent, recorded_at: &str) {
    let id = event.event_id.to_hex();
    let leaf = event_leaf_hash(position, &id, recorded_at, &event.payload_json).expect("leaf");
    conn.execute(
        "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, crs_to, \
         processor_id, timestamp, payload_json, log_position, leaf_hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            event.dataset_uuid.to_string(),
            event.operation,
            event.crs_from,
            event.crs_to,
            event.processor_id,
            recorded_at,
            event.payload_json,
            i64::try_from(position).expect("position"),
            &leaf[..],
        ],
    )
    .expect("insert forged row");
}

/// Recomputes every row's leaf hash and the log head from the rows, as a thorough attacker
/// would after renumbering.
fn rebuild_log(conn: &Connection) {
    let rows: Vec<(i64, String, String, String)> = conn
        .prepare(
            "SELECT log_position, event_id, timestamp, payload_json FROM lineage_events \
             ORDER BY log_position",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut range = CompactRange::new();
    for (position, id, recorded_at, payload) in rows {
        let p = u64::try_from(position).expect("position");
        let leaf = event_leaf_hash(p, &id, &recorded_at, &payload).expect("leaf");
        conn.execute(
            "UPDATE lineage_events SET leaf_hash = ?1 WHERE log_position = ?2",
            params![&leaf[..], position],
        )
        .expect("update leaf");
        range.append(leaf);
    }
    conn.execute(
        "UPDATE log_head SET size = ?1, frontier = ?2 WHERE id = 0",
        params![
            i64::try_from(range.size()).expect("size"),
            range.hashes().concat()
        ],
    )
    .expect("update head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_log_verifies_and_reports_uncovered_events() {
    let f = Fixture::new().await;
    let (stdout, stderr) = verify_ok(f.path(), &[]);
    assert!(stdout.contains("OK: 40 events"), "{stdout}");
    assert!(stdout.contains("3 checkpoints checked"), "{stdout}");
    assert!(
        stderr.contains("10 events (positions 30..39) are not yet covered by a checkpoint"),
        "{stderr}"
    );
    // The verifier key given explicitly, and an external checkpoint kept outside the database.
    let key = f.signer.verifier_key_text();
    let note = f.path().join("checkpoint-20.txt");
    std::fs::write(&note, f.note_at(20)).expect("write note");
    let note = note.to_string_lossy().into_owned();
    let (stdout, _) = verify_ok(f.path(), &["--key", &key, "--checkpoint", &note]);
    assert!(stdout.contains("external checkpoint matches"), "{stdout}");
    // Another key: every stored checkpoint fails, the first one is named.
    let other = Signer::generate("geoprov/test-log").expect("other key");
    let stderr = verify_fails(f.path(), &["--key", &other.verifier_key_text()]);
    assert!(
        stderr.contains("checkpoint at tree size 10: signature does not verify with key"),
        "{stderr}"
    );
}

/// On a fresh fixture, the attacker runs `sql`; verify must fail with one line naming
/// `position`, its event id and `why`.
async fn tamper_is_named(sql: &str, position: i64, why: &str) {
    let f = Fixture::new().await;
    let id = f.event_id_at(position);
    f.attacker().execute_batch(sql).expect("tamper");
    let stderr = verify_fails(f.path(), &[]);
    assert!(
        stderr.contains(&format!("verify: position {position} (event {id}): {why}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_payload_is_named_by_position() {
    tamper_is_named(
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
        let f = Fixture::new().await;
        verify_ok(f.path(), &[]);
        f.attacker().execute_batch(sql).expect("tamper");
        let stderr = verify_fails(f.path(), &[]);
        assert!(stderr.contains(want), "{sql}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_event_time_is_named_by_position() {
    tamper_is_named(
        "UPDATE lineage_events SET ended_at = '2020-01-01T00:00:00.000000Z' \
         WHERE log_position = 9",
        9,
        "column ended_at",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_a_missing_position() {
    let f = Fixture::new().await;
    f.attacker()
        .execute("DELETE FROM lineage_events WHERE log_position = 5", [])
        .expect("tamper");
    let stderr = verify_fails(f.path(), &[]);
    assert!(stderr.contains("verify: position 5 is missing"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_inside_the_log_breaks_the_next_checkpoint() {
    let f = Fixture::new().await;
    let conn = f.attacker();
    // Make room at position 12: move 12.. up by one (through negatives, for the UNIQUE index).
    conn.execute_batch(
        "UPDATE lineage_events SET log_position = -(log_position + 1) WHERE log_position >= 12;
         UPDATE lineage_events SET log_position = -log_position WHERE log_position < 0;",
    )
    .expect("renumber");
    insert_forged(&conn, 12, &event(1000), "2026-01-01T00:00:00.000000Z");
    // The thorough attacker recomputes every leaf hash and the log head too, so every row is
    // self-consistent: only the signed checkpoint at 20 can tell.
    rebuild_log(&conn);
    drop(conn);
    let stderr = verify_fails(f.path(), &[]);
    assert!(
        stderr.contains(
            "verify: checkpoint at tree size 20: root does not match the log (first divergence \
             between positions 10 and 19)"
        ),
        "{stderr}"
    );

    // The lazy attacker (no leaf hashes recomputed) is caught at the first renumbered row.
    let f = Fixture::new().await;
    let moved = f.event_id_at(12);
    let conn = f.attacker();
    conn.execute_batch(
        "UPDATE lineage_events SET log_position = -(log_position + 1) WHERE log_position >= 12;
         UPDATE lineage_events SET log_position = -log_position WHERE log_position < 0;",
    )
    .expect("renumber");
    insert_forged(&conn, 12, &event(1001), "2026-01-01T00:00:00.000000Z");
    drop(conn);
    let stderr = verify_fails(f.path(), &[]);
    assert!(
        stderr.contains(&format!(
            "verify: position 13 (event {moved}): the stored leaf_hash does not match"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_appended_beyond_the_head_is_named() {
    let f = Fixture::new().await;
    let forged = event(2000);
    insert_forged(&f.attacker(), 40, &forged, "2026-01-01T00:00:00.000000Z");
    let stderr = verify_fails(f.path(), &[]);
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
    let f = Fixture::new().await;
    let at_7 = f.event_id_at(7);
    f.attacker()
        .execute_batch(
            "UPDATE lineage_events SET log_position = -1 WHERE log_position = 3;
             UPDATE lineage_events SET log_position = 3 WHERE log_position = 7;
             UPDATE lineage_events SET log_position = 7 WHERE log_position = -1;",
        )
        .expect("swap");
    let stderr = verify_fails(f.path(), &[]);
    assert!(
        stderr.contains(&format!(
            "verify: position 3 (event {at_7}): the stored leaf_hash does not match"
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_with_a_forged_root_is_named() {
    // The note's root line rewritten, its signature kept.
    let f = Fixture::new().await;
    let note = f.note_at(20);
    let forged_root = [7u8; 32];
    let mut lines: Vec<String> = note.split('\n').map(str::to_owned).collect();
    lines[2] = BASE64.encode(forged_root);
    let forged_note = lines.join("\n");
    f.attacker()
        .execute(
            "UPDATE log_checkpoints SET note = ?1, root_hash = ?2 WHERE tree_size = 20",
            params![forged_note, &forged_root[..]],
        )
        .expect("tamper");
    let stderr = verify_fails(f.path(), &[]);
    assert!(
        stderr.contains("verify: checkpoint at tree size 20: signature does not verify with key"),
        "{stderr}"
    );

    // The forged root re-signed with another key of the same name.
    let f = Fixture::new().await;
    let other = Signer::generate("geoprov/test-log").expect("other key");
    let forged_note = other
        .sign(&geoprov::tlog::Checkpoint {
            origin: "geoprov/test-log".into(),
            size: 20,
            root_hash: forged_root,
        })
        .expect("sign");
    f.attacker()
        .execute(
            "UPDATE log_checkpoints SET note = ?1, root_hash = ?2 WHERE tree_size = 20",
            params![forged_note, &forged_root[..]],
        )
        .expect("tamper");
    let stderr = verify_fails(f.path(), &[]);
    assert!(
        stderr.contains("verify: checkpoint at tree size 20: signature does not verify with key"),
        "{stderr}"
    );

    // A forged root signed with the log's own key (a stolen key) still does not match the rows.
    let f = Fixture::new().await;
    let forged_note = f
        .signer
        .sign(&geoprov::tlog::Checkpoint {
            origin: "geoprov/test-log".into(),
            size: 20,
            root_hash: forged_root,
        })
        .expect("sign");
    f.attacker()
        .execute(
            "UPDATE log_checkpoints SET note = ?1, root_hash = ?2 WHERE tree_size = 20",
            params![forged_note, &forged_root[..]],
        )
        .expect("tamper");
    let stderr = verify_fails(f.path(), &[]);
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
    let f = Fixture::new().await;
    let conn = f.attacker();
    let root: Vec<u8> = conn
        .query_row(
            "SELECT root_hash FROM log_checkpoints WHERE tree_size = 30",
            [],
            |r| r.get(0),
        )
        .expect("root");
    let other = Signer::generate("geoprov/other-log").expect("other key");
    let note = other
        .sign(&geoprov::tlog::Checkpoint {
            origin: "geoprov/other-log".into(),
            size: 30,
            root_hash: root.try_into().expect("32 bytes"),
        })
        .expect("sign");
    conn.execute(
        "UPDATE log_checkpoints SET note = ?1 WHERE tree_size = 30",
        [note],
    )
    .expect("tamper");
    drop(conn);
    let stderr = verify_fails(f.path(), &[]);
    assert!(
        stderr.contains(&format!(
            "verify: checkpoint at tree size 30: signature does not verify with key {}",
            f.signer.verifier_key_text()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_verify_offline_and_tampered_ones_do_not() {
    let f = Fixture::new().await;
    let key = f.signer.verifier_key_text();
    let id = f.event_id_at(13);

    let out = geoprov(f.path(), &["prove", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).expect("proof JSON");
    assert_eq!(proof["leaf_index"], 13);
    assert_eq!(proof["tree_size"], 30);
    assert_eq!(proof["event_id"], id.as_str());
    assert!(proof["checkpoint"]
        .as_str()
        .is_some_and(|n| n.starts_with("geoprov/test-log\n30\n")));
    assert_eq!(proof["audit_path"].as_array().map(Vec::len), Some(5));

    let file = f.path().join("proof.json");
    let file_arg = file.to_string_lossy().into_owned();
    std::fs::write(&file, proof.to_string()).expect("write proof");
    // Offline: no data dir, no store.
    let empty = tempfile::tempdir().expect("temp dir");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!empty.path().join("lineage.db").exists(), "no store opened");

    // One byte of one audit path entry changed.
    let mut bad = proof.clone();
    bad["audit_path"][2] = flip(proof["audit_path"][2].as_str().expect("hex")).into();
    std::fs::write(&file, bad.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // The event content changed: the leaf data no longer hashes to leaf_hash.
    let mut bad = proof.clone();
    bad["recorded_at"] = "2020-01-01T00:00:00.000000Z".into();
    std::fs::write(&file, bad.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    // Another key.
    std::fs::write(&file, proof.to_string()).expect("write proof");
    let other = Signer::generate("geoprov/test-log").expect("other");
    let out = geoprov(
        empty.path(),
        &[
            "verify-proof",
            &file_arg,
            "--key",
            &other.verifier_key_text(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));

    // An event after the latest checkpoint has no proof yet.
    let uncovered = f.event_id_at(35);
    let out = geoprov(f.path(), &["prove", &uncovered]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not covered"),
        "{}",
        text(&out.stderr)
    );

    // Consistency between the checkpoints at 10 and 30.
    let out = geoprov(f.path(), &["prove", "--consistency", "10", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).expect("proof JSON");
    assert_eq!(proof["old_size"], 10);
    assert_eq!(proof["new_size"], 30);
    std::fs::write(&file, proof.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut bad = proof.clone();
    bad["proof"][0] = flip(proof["proof"][0].as_str().expect("hex")).into();
    std::fs::write(&file, bad.to_string()).expect("write proof");
    let out = geoprov(empty.path(), &["verify-proof", &file_arg, "--key", &key]);
    assert_eq!(out.status.code(), Some(1));
    // A size with no stored checkpoint.
    let out = geoprov(f.path(), &["prove", "--consistency", "10", "25"]);
    assert_eq!(out.status.code(), Some(1));
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

#[test]
fn a_worker_writes_checkpoints_and_a_final_one_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = valid_events(3000, "tlog-worker");
    let input = dir.path().join("events.ndjson");
    std::fs::write(&input, events.join("\n")).expect("events file");
    let input = input.to_string_lossy().into_owned();
    let out = geoprov(dir.path(), &["emit", &input]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let log = std::fs::File::create(dir.path().join("worker.log")).expect("log");
    let mut worker = Command::new(geoprov_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "worker",
            "--rate-limit",
            "2000/s",
            "--checkpoint-interval",
            "200ms",
            "--checkpoint-every",
            "1000000",
        ])
        .env("GEOPROV_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn worker");
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
    let more = valid_events(500, "tlog-worker-2");
    let input = dir.path().join("more.ndjson");
    std::fs::write(&input, more.join("\n")).expect("events file");
    let input = input.to_string_lossy().into_owned();
    let out = geoprov(dir.path(), &["emit", &input]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log = std::fs::File::create(dir.path().join("worker2.log")).expect("log");
    let mut worker = Command::new(geoprov_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["worker", "--checkpoint-interval", "1h"])
        .env("GEOPROV_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn worker");
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
async fn serve_answers_the_log_endpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), &["--checkpoint-interval", "100ms"]);
    let client = ::reqwest::Client::new();
    let resp = client
        .get(format!("{}/v1/log/checkpoint", server.url()))
        .send()
        .await
        .expect("GET checkpoint");
    assert_eq!(resp.status().as_u16(), 404, "no checkpoint yet");
    let events = valid_events(50, "tlog-http");
    let (status, answer) =
        crate::support::post_events(&server.url(), format!("[{}]", events.join(","))).await;
    assert_eq!(status, 202, "{answer}");
    let first = answer["event_ids"][0].as_str().expect("id").to_owned();
    assert!(wait_until(Duration::from_secs(30), || checkpoint_sizes(
        dir.path()
    )
    .last()
    .copied()
        == Some(50)));
    let resp = client
        .get(format!("{}/v1/log/checkpoint", server.url()))
        .send()
        .await
        .expect("GET checkpoint");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain")));
    let note = resp.text().await.expect("note");
    assert!(note.contains("\n50\n"), "{note}");
    let resp = client
        .get(format!("{}/v1/log/proof/{first}", server.url()))
        .send()
        .await
        .expect("GET proof");
    assert_eq!(resp.status().as_u16(), 200);
    let proof: serde_json::Value = resp.json().await.expect("proof JSON");
    assert_eq!(proof["tree_size"], 50);
    assert_eq!(proof["checkpoint"].as_str(), Some(note.as_str()));
    let resp = client
        .get(format!("{}/v1/log/proof/{}", server.url(), "ab".repeat(32)))
        .send()
        .await
        .expect("GET proof");
    assert_eq!(resp.status().as_u16(), 404);
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
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lineage.db");
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
    let store = SqliteStore::open_and_migrate(&path).await.expect("migrate");
    let head = store.tree_head().await.expect("head");
    assert_eq!(head.size, 25);
    let leaves = store.leaf_hashes(0, 25).await.expect("leaves");
    assert_eq!(head.root, geoprov::tlog::root_from_leaf_hashes(&leaves));
    store.commit_batch(&[event(99)]).await.expect("append");
    drop(store);
    let (stdout, _) = verify_ok(dir.path(), &[]);
    assert!(stdout.contains("OK: 26 events"), "{stdout}");
    // The append-only trigger is back.
    let conn = Connection::open(&path).expect("raw connection");
    assert!(conn
        .execute("UPDATE lineage_events SET operation = 'x'", [])
        .is_err());
}

//! Transparency-log helpers shared by the SQLite and PostgreSQL log tests: the real `geoprov`
//! binary on a data dir, `geoprov verify` expected to pass or to fail with one line, distinct
//! events, a one-digit change of a hex hash, and a log on either backend ([`LogDir`], the
//! signed 40-event [`Fixture`]) with the backend's own SQL for tampering with it ([`Attacker`]).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use geoprov::config::default_key_path;
use geoprov::event::LineageEvent;
use geoprov::store::postgres::PostgresStore;
use geoprov::store::sqlite::SqliteStore;
use geoprov::store::{transparency_log, Store};
use geoprov::tlog::Signer;
use geoprov::tlog::{event_leaf_hash, format_recorded_at, root_from_leaf_hashes, CompactRange};
use geoprov::tlog_service::{write_checkpoint, write_key_file};
use rusqlite::Connection;

use super::pg::TestSchema;
use crate::store_suite::event_from;

/// Runs `geoprov --data-dir DIR ARGS...` and returns its output. The broker and store come from
/// `ARGS` (or the data dir's defaults), never from the environment.
pub fn geoprov(dir: &Path, args: &[&str]) -> Output {
    Command::new(super::geoprov_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("GEOPROV_LOG", "warn")
        .env_remove("GEOPROV_STORE")
        .env_remove("GEOPROV_BROKER")
        .stdin(Stdio::null())
        .output()
        .expect("run geoprov")
}

/// Enqueues the NDJSON `payloads` on the embedded broker of `data_dir` with `geoprov emit`.
pub fn emit(data_dir: &Path, payloads: &[String]) {
    let file = data_dir.join(format!("emit-{}.ndjson", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, payloads.join("\n")).expect("write events");
    let file = file.to_string_lossy();
    let out = geoprov(data_dir, &["emit", &file, "--broker", "embedded"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "emit failed: {stderr}");
}

/// Lossy UTF-8 text of a child's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `geoprov verify ARGS...`, asserting it exits 1 with exactly one `verify: ` line; returns its
/// stderr.
pub fn verify_fails(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let out = geoprov(dir, &args);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify should fail; stdout: {} stderr: {stderr}",
        text(&out.stdout)
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("verify: ")).count(),
        1,
        "one line naming the failure: {stderr}"
    );
    stderr
}

/// `geoprov verify ARGS...`, asserting it exits 0; returns (stdout, stderr).
pub fn verify_ok(dir: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let out = geoprov(dir, &args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify should pass; stdout: {stdout} stderr: {stderr}"
    );
    (stdout, stderr)
}

/// The event with sequence number `i` (distinct payloads, all valid).
pub fn event(i: usize) -> LineageEvent {
    event_from(&serde_json::json!({
        "dataset_uuid": uuid::Uuid::new_v4(),
        "operation": "reproject",
        "crs_from": "EPSG:32633",
        "crs_to": "EPSG:3857",
        "processor_id": "tlog-test",
        "inputs": [uuid::Uuid::new_v4()],
        "sequence": i,
    }))
}

/// Flips the first hex digit of `hash` (a different byte, same length).
pub fn flip(hash: &str) -> String {
    let mut chars: Vec<char> = hash.chars().collect();
    chars[0] = if chars[0] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

/// SIGTERM a child and wait (up to 30 s) for its exit code; SIGKILL it if it does not stop.
pub fn terminate(child: &mut Child) -> Option<i32> {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    for _ in 0..1500 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// Which store a log test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// The SQLite file of the data dir (`lineage.db`, the default store).
    Sqlite,
    /// A schema of its own on the shared PostgreSQL server, named with `--store`.
    Postgres,
}

/// A data dir and the store a log test writes: the SQLite file in the dir, or a PostgreSQL
/// schema of its own (dropped with it).
pub struct LogDir {
    dir: tempfile::TempDir,
    /// The PostgreSQL schema holding the log; `None` for the SQLite file of the data dir.
    pub schema: Option<TestSchema>,
}

impl LogDir {
    /// An empty data dir on `backend`; `None` (after a skip) without a PostgreSQL server.
    pub async fn new(backend: Backend) -> Option<LogDir> {
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestSchema::create().await?),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        Some(LogDir { dir, schema })
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store flags every `geoprov` command of the test needs: none for the data dir's own
    /// SQLite file, `--store URL` for PostgreSQL.
    pub fn store_args(&self) -> Vec<String> {
        self.schema
            .iter()
            .flat_map(|schema| ["--store".to_owned(), schema.url()])
            .collect()
    }

    /// `geoprov --data-dir DIR ARGS... [--store URL]`.
    pub fn geoprov(&self, args: &[&str]) -> Output {
        let store = self.store_args();
        let mut all = args.to_vec();
        all.extend(store.iter().map(String::as_str));
        geoprov(self.path(), &all)
    }

    /// `geoprov verify` on this log, expected to fail with one line; its stderr.
    pub fn verify_fails(&self, extra: &[&str]) -> String {
        let store = self.store_args();
        let mut args: Vec<&str> = store.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        verify_fails(self.path(), &args)
    }

    /// `geoprov verify` on this log, expected to fail with one line; its stderr must name `want`.
    pub fn verify_names(&self, want: &str) {
        let stderr = self.verify_fails(&[]);
        assert!(stderr.contains(want), "{stderr}");
    }

    /// `geoprov verify` on this log, expected to pass; (stdout, stderr).
    pub fn verify_ok(&self, extra: &[&str]) -> (String, String) {
        let store = self.store_args();
        let mut args: Vec<&str> = store.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        verify_ok(self.path(), &args)
    }

    /// The store, migrated.
    pub async fn store(&self) -> Arc<dyn Store> {
        let store = self.open().await;
        store.migrate().await.expect("migrate");
        store
    }

    /// The store as it is (not migrated).
    pub async fn open(&self) -> Arc<dyn Store> {
        match &self.schema {
            None => Arc::new(
                SqliteStore::open(self.path().join("lineage.db"))
                    .await
                    .expect("open"),
            ),
            Some(schema) => Arc::new(PostgresStore::open(&schema.url()).await.expect("open")),
        }
    }

    /// A raw connection to the store, as an operator's shell would have.
    pub async fn raw(&self) -> Attacker {
        match &self.schema {
            None => Attacker::Sqlite(
                Connection::open(self.path().join("lineage.db")).expect("raw connection"),
            ),
            Some(schema) => Attacker::Postgres(schema.raw().await),
        }
    }

    /// A raw connection with the append-only triggers of the rows and checkpoints out of the
    /// way: what an attacker with write access to the file, or who owns the tables, can do.
    pub async fn attacker(&self) -> Attacker {
        let raw = self.raw().await;
        raw.run(match &raw {
            Attacker::Sqlite(_) => {
                "DROP TRIGGER IF EXISTS lineage_events_no_update;
                 DROP TRIGGER IF EXISTS lineage_events_no_delete;
                 DROP TRIGGER IF EXISTS log_checkpoints_no_update;
                 DROP TRIGGER IF EXISTS log_checkpoints_no_delete;"
            }
            Attacker::Postgres(_) => {
                "ALTER TABLE lineage_events DISABLE TRIGGER USER;
                 ALTER TABLE log_checkpoints DISABLE TRIGGER USER;"
            }
        })
        .await;
        raw
    }

    /// The event id stored at `position`.
    pub async fn event_id_at(&self, position: i64) -> String {
        let sql = format!("SELECT event_id FROM lineage_events WHERE log_position = {position}");
        self.raw().await.text(&sql).await
    }

    /// The note of the stored checkpoint at tree size `size`.
    pub async fn note_at(&self, size: i64) -> String {
        let sql = format!("SELECT note FROM log_checkpoints WHERE tree_size = {size}");
        self.raw().await.text(&sql).await
    }
}

/// A log of 40 events with signed checkpoints at tree sizes 10, 20 and 30 (the last 10 events
/// are not covered yet), and a data dir holding the signing key at its default place (where
/// `verify` finds its verifier key).
pub struct Fixture {
    /// The data dir and the store.
    pub log: LogDir,
    /// The log's signing key.
    pub signer: Signer,
}

impl Fixture {
    /// `None` (after a skip) without a PostgreSQL server.
    pub async fn new(backend: Backend) -> Option<Fixture> {
        let log = LogDir::new(backend).await?;
        let signer = Signer::generate("geoprov/test-log").expect("signer");
        write_key_file(&default_key_path(log.path()), &signer, false).expect("key file");
        let store = log.store().await;
        let tlog = transparency_log(store.as_ref()).expect("a transparency log");
        for batch in 0..4 {
            let events: Vec<LineageEvent> = (0..10).map(|i| event(batch * 10 + i)).collect();
            let report = store.commit_batch(&events).await.expect("commit");
            assert_eq!(report.inserted, 10);
            if batch < 3 {
                let written = write_checkpoint(tlog, &signer).await.expect("checkpoint");
                assert_eq!(written, Some(report.log_size));
            }
        }
        Some(Fixture { log, signer })
    }

    /// Another fresh fixture on the same backend.
    pub async fn again(&self) -> Fixture {
        let backend = match self.log.schema {
            None => Backend::Sqlite,
            Some(_) => Backend::Postgres,
        };
        Fixture::new(backend).await.expect("the server went away")
    }
}

impl std::ops::Deref for Fixture {
    type Target = LogDir;

    fn deref(&self) -> &LogDir {
        &self.log
    }
}

/// A raw connection of [`LogDir::attacker`], with the backend's own SQL for each kind of
/// tampering.
pub enum Attacker {
    /// A `rusqlite` connection to the data dir's file.
    Sqlite(Connection),
    /// A client whose `search_path` is the test schema.
    Postgres(tokio_postgres::Client),
}

impl Attacker {
    /// Runs `sql` (one or more statements).
    pub async fn run(&self, sql: &str) {
        match self {
            Attacker::Sqlite(conn) => conn.execute_batch(sql).expect("tamper"),
            Attacker::Postgres(raw) => raw.batch_execute(sql).await.expect("tamper"),
        }
    }

    /// The one text value `sql` selects.
    async fn text(&self, sql: &str) -> String {
        match self {
            Attacker::Sqlite(conn) => conn.query_row(sql, [], |r| r.get(0)).expect(sql),
            Attacker::Postgres(raw) => raw.query_one(sql, &[]).await.expect(sql).get(0),
        }
    }

    /// Moves every row at `from` or later one position up (through negatives on SQLite, through
    /// a large offset on PostgreSQL, for the unique index and the `log_position >= 0` check).
    pub async fn make_room(&self, from: i64) {
        let (away, back) = match self {
            Attacker::Sqlite(_) => (
                "-(log_position + 1)",
                "-log_position WHERE log_position < 0",
            ),
            Attacker::Postgres(_) => (
                "log_position + 1000000",
                "log_position - 999999 WHERE log_position >= 1000000",
            ),
        };
        self.run(&format!(
            "UPDATE lineage_events SET log_position = {away} WHERE log_position >= {from};
             UPDATE lineage_events SET log_position = {back};"
        ))
        .await;
    }

    /// Inserts `event` as a fully consistent row at `position` (with its correct leaf hash), as
    /// an attacker who knows the leaf format would.
    pub async fn insert_forged(&self, position: i64, event: &LineageEvent, at: DateTime<Utc>) {
        let id = event.event_id.to_hex();
        let recorded_at = format_recorded_at(at);
        let leaf = event_leaf_hash(
            u64::try_from(position).expect("position"),
            &id,
            &recorded_at,
            &event.payload_json,
        )
        .expect("leaf");
        let dataset = event.dataset_uuid.to_string();
        match self {
            Attacker::Sqlite(conn) => {
                conn.execute(
                    "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, \
                     crs_to, processor_id, timestamp, payload_json, log_position, leaf_hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    rusqlite::params![
                        id,
                        dataset,
                        event.operation,
                        event.crs_from,
                        event.crs_to,
                        event.processor_id,
                        recorded_at,
                        event.payload_json,
                        position,
                        &leaf[..],
                    ],
                )
                .expect("insert forged row");
            }
            Attacker::Postgres(raw) => {
                raw.execute(
                    "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, \
                     crs_to, processor_id, \"timestamp\", payload_json, log_position, leaf_hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    &[
                        &id,
                        &dataset,
                        &event.operation,
                        &event.crs_from,
                        &event.crs_to,
                        &event.processor_id,
                        &at,
                        &event.payload_json,
                        &position,
                        &&leaf[..],
                    ],
                )
                .await
                .expect("insert forged row");
            }
        }
    }

    /// Every row's (position, event id, record time, payload), in log order.
    async fn leaf_data(&self) -> Vec<(i64, String, String, String)> {
        let sql = "SELECT log_position, event_id, \"timestamp\", payload_json FROM lineage_events \
                   ORDER BY log_position";
        match self {
            Attacker::Sqlite(conn) => conn
                .prepare(sql)
                .expect("prepare")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows"),
            Attacker::Postgres(raw) => raw
                .query(sql, &[])
                .await
                .expect("rows")
                .iter()
                .map(|r| {
                    let at: DateTime<Utc> = r.get(2);
                    (r.get(0), r.get(1), format_recorded_at(at), r.get(3))
                })
                .collect(),
        }
    }

    /// Recomputes every row's leaf hash and the log head from the rows, as a thorough attacker
    /// would after renumbering.
    pub async fn rebuild_log(&self) {
        let mut range = CompactRange::new();
        for (position, id, recorded_at, payload) in self.leaf_data().await {
            let p = u64::try_from(position).expect("position");
            let leaf = event_leaf_hash(p, &id, &recorded_at, &payload).expect("leaf");
            self.run(&format!(
                "UPDATE lineage_events SET leaf_hash = {} WHERE log_position = {position}",
                self.bytes(&leaf)
            ))
            .await;
            range.append(leaf);
        }
        let size = range.size();
        self.run(&format!(
            "UPDATE log_head SET size = {size}, frontier = {} WHERE id = 0",
            self.bytes(&range.hashes().concat())
        ))
        .await;
    }

    /// Replaces the note and stored root of the checkpoint at `size`.
    pub async fn replace_checkpoint(&self, size: i64, note: &str, root: &[u8]) {
        match self {
            Attacker::Sqlite(conn) => {
                conn.execute(
                    "UPDATE log_checkpoints SET note = ?1, root_hash = ?2 WHERE tree_size = ?3",
                    rusqlite::params![note, root, size],
                )
                .expect("tamper");
            }
            Attacker::Postgres(raw) => {
                raw.execute(
                    "UPDATE log_checkpoints SET note = $1, root_hash = $2 WHERE tree_size = $3",
                    &[&note, &root, &size],
                )
                .await
                .expect("tamper");
            }
        }
    }

    /// The stored root of the checkpoint at `size`.
    pub async fn checkpoint_root(&self, size: i64) -> Vec<u8> {
        let sql = format!("SELECT root_hash FROM log_checkpoints WHERE tree_size = {size}");
        match self {
            Attacker::Sqlite(conn) => conn.query_row(&sql, [], |r| r.get(0)).expect("root"),
            Attacker::Postgres(raw) => raw.query_one(&sql, &[]).await.expect("root").get(0),
        }
    }

    /// `bytes` as a literal of the backend's SQL.
    fn bytes(&self, bytes: &[u8]) -> String {
        match self {
            Attacker::Sqlite(_) => format!("X'{}'", hex::encode(bytes)),
            Attacker::Postgres(_) => format!("'\\x{}'::bytea", hex::encode(bytes)),
        }
    }
}

/// The store's log head covers `size` leaves, and its root is the root of the stored leaves.
pub async fn head_covers_the_leaves(store: &dyn Store, size: u64) {
    let log = transparency_log(store).expect("a transparency log");
    let head = log.tree_head().await.expect("head");
    assert_eq!(head.size, size);
    let leaves = log.leaf_hashes(0, size).await.expect("leaves");
    assert_eq!(head.root, root_from_leaf_hashes(&leaves));
}

/// A log of 25 rows in the shape of schema 1 (positions, no leaf hashes), just written into
/// `log` by hand: `migrate` gives the rows their leaves, the head covers them, one more event
/// appends and verify passes on all 26.
pub async fn a_backfilled_log_verifies(log: &LogDir) {
    let store = log.store().await;
    head_covers_the_leaves(store.as_ref(), 25).await;
    store.commit_batch(&[event(99)]).await.expect("append");
    drop(store);
    let (stdout, _) = log.verify_ok(&[]);
    assert!(stdout.contains("OK: 26 events"), "{stdout}");
}

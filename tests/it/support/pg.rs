//! PostgreSQL helpers: the shared server's URL (or a clear skip), a schema of its own per test
//! dropped on drop, a private PostgreSQL instance per test (initdb + pg_ctl as the `postgres` OS
//! user, on a spare port) that a test may stop, restart or give TLS, raw SQL access (rows as
//! another writer inserts them, the edge view, the append-only triggers), and worker processes.

use super::require_or_skip;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use geoprov::event::LineageEvent;
use geoprov::store::postgres::PostgresStore;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// The reference table, as the seed's operators created it (no geoprov column yet).
pub const REFERENCE_TABLE: &str = "CREATE TABLE lineage_events (event_id text PRIMARY KEY, \
    dataset_uuid text, operation text, crs_from text, crs_to text, processor_id text, \
    \"timestamp\" timestamptz, payload_json text)";

/// The shared server, from `GEOPROV_TEST_POSTGRES` or the local default.
pub fn server_url() -> String {
    std::env::var("GEOPROV_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A plain (no TLS) connection for the test's own SQL; the connection task runs in the
/// background of the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The URL with one more query parameter.
pub fn with_param(url: &str, param: &str) -> String {
    if url.contains('?') {
        format!("{url}&{param}")
    } else {
        format!("{url}?{param}")
    }
}

/// A schema of its own on the shared server, dropped (with everything in it) on drop.
pub struct TestSchema {
    /// The server URL, without the schema.
    pub server: String,
    /// `geoprov_test_<random>`.
    pub name: String,
}

impl TestSchema {
    /// Create a fresh schema, or `None` (after printing "skipped: ...") when there is no server.
    pub async fn create() -> Option<TestSchema> {
        let server = server_url();
        let client = match tokio::time::timeout(Duration::from_secs(5), connect(&server)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                require_or_skip(&format!("no server at {server} ({e})"));
                return None;
            }
            Err(_) => {
                require_or_skip(&format!("no server at {server} (timed out)"));
                return None;
            }
        };
        let name = format!("geoprov_test_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create the test schema");
        Some(TestSchema { server, name })
    }

    /// A fresh schema with a store migrated into it; `None` (after a skip) without a server.
    pub async fn with_store() -> Option<(TestSchema, PostgresStore)> {
        let schema = TestSchema::create().await?;
        let store = PostgresStore::open_and_migrate(&schema.url())
            .await
            .expect("store");
        Some((schema, store))
    }

    /// A fresh schema holding the [`REFERENCE_TABLE`], and a raw connection to it; `None`
    /// (after a skip) without a server.
    pub async fn with_reference_table() -> Option<(TestSchema, tokio_postgres::Client)> {
        let schema = TestSchema::create().await?;
        let raw = schema.raw().await;
        raw.batch_execute(REFERENCE_TABLE)
            .await
            .expect("reference table");
        Some((schema, raw))
    }

    /// The store URL for this schema.
    pub fn url(&self) -> String {
        with_param(&self.server, &format!("schema={}", self.name))
    }

    /// A raw connection whose `search_path` is this schema.
    pub async fn raw(&self) -> tokio_postgres::Client {
        let client = connect(&self.server).await.expect("raw connection");
        client
            .batch_execute(&format!("SET search_path TO {}", self.name))
            .await
            .expect("set search_path");
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop may run inside a runtime, which cannot block: use a thread with its own.
        let server = self.server.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = connect(&server).await {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A private PostgreSQL instance in a temporary folder, owned by the `postgres` OS user (the
/// server refuses to run as root), on a spare port; stopped (immediate) and removed on drop.
pub struct LocalPg {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl LocalPg {
    /// `initdb` a new cluster (trust auth, fsync off: these tests are about the client) with
    /// `extra_conf` appended to its postgresql.conf. `None` (after a skip) when the binaries or
    /// `runuser` are missing.
    pub fn init(extra_conf: &str) -> Option<LocalPg> {
        let Some(bin) = pg_bin_dir() else {
            require_or_skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin");
            return None;
        };
        if Command::new("runuser").arg("--help").output().is_err() {
            require_or_skip("no runuser to run PostgreSQL as the postgres user");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("geoprov-pg-")
            .tempdir()
            .expect("temp dir");
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()),
        );
        let data = dir.path().join("data");
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "-D",
                ])
                .arg(&data),
        );
        let conf = format!(
            "\nlisten_addresses = 'localhost'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 50\n{extra_conf}\n"
        );
        append(&data.join("postgresql.conf"), &conf);
        let port = crate::support::free_port();
        Some(LocalPg { dir, port, bin })
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Write a file into the data directory, owned by postgres with mode 0600.
    pub fn put_file(&self, name: &str, contents: &[u8]) {
        let path = self.data().join(name);
        std::fs::write(&path, contents).expect("write file");
        run_ok(Command::new("chown").arg("postgres:postgres").arg(&path));
        run_ok(Command::new("chmod").arg("600").arg(&path));
    }

    /// Start and wait until it accepts connections.
    pub fn start(&self) {
        let log = self.dir.path().join("server.log");
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {} -k {}", self.port, self.dir.path().display()))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stop with `-m fast` (sessions are terminated, the server shuts down cleanly).
    pub fn stop(&self) {
        self.pg_ctl_stop("fast");
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "60", "-m", mode, "stop"])
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl stop")
    }

    /// The store URL (database `postgres`), with `params` appended.
    pub fn url(&self, host: &str, params: &str) -> String {
        let base = format!("postgres://postgres@{host}:{}/postgres", self.port);
        if params.is_empty() {
            base
        } else {
            format!("{base}?{params}")
        }
    }
}

impl Drop for LocalPg {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
    }
}

/// `/usr/lib/postgresql/<newest version>/bin`, if there is one.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Runs `cmd` (no stdin) and asserts it succeeds, printing its output when it does not.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(text.as_bytes()).expect("append");
}

/// Poll `f` (async) every 50ms until it returns true or `within` passes.
pub async fn wait_for<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

/// The one number `sql` selects.
pub async fn number(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Inserts the seed columns of `e`, recorded at `at`, as a writer other than geoprov does
/// (the reference task, or a geoprov of an older schema when `position` is given).
pub async fn insert_row(
    client: &impl GenericClient,
    e: &LineageEvent,
    at: DateTime<Utc>,
    position: Option<i64>,
) {
    let (id, dataset) = (e.event_id.to_hex(), e.dataset_uuid.to_string());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &id,
        &dataset,
        &e.operation,
        &e.crs_from,
        &e.crs_to,
        &e.processor_id,
        &at,
        &e.payload_json,
    ];
    let sql = match &position {
        None => {
            "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, crs_to, \
             processor_id, \"timestamp\", payload_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        }
        Some(position) => {
            params.push(position);
            "INSERT INTO lineage_events (event_id, dataset_uuid, operation, crs_from, crs_to, \
             processor_id, \"timestamp\", payload_json, log_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        }
    };
    client.execute(sql, &params).await.expect("row");
}

/// Every (from, to, event_id, operation) the `lineage_edges` view lists, sorted.
pub async fn edges(client: &tokio_postgres::Client) -> Vec<(Uuid, Uuid, String, String)> {
    let mut edges: Vec<(Uuid, Uuid, String, String)> = client
        .query(
            "SELECT from_uuid, to_uuid, event_id, operation FROM lineage_edges",
            &[],
        )
        .await
        .expect("edges")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    edges.sort();
    edges
}

/// Each of `sqls` is refused by an append-only trigger (its message says so).
pub async fn assert_append_only(client: &tokio_postgres::Client, sqls: &[&str]) {
    for &sql in sqls {
        let err = client.batch_execute(sql).await.expect_err(sql);
        let message = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_else(|| err.to_string());
        assert!(message.contains("is append-only"), "{sql}: {message}");
    }
}

/// Rows, distinct ids, and whether positions are exactly 0..n-1, read with raw SQL.
pub async fn rows_distinct_dense(client: &tokio_postgres::Client) -> (i64, i64, bool) {
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT event_id), min(log_position), max(log_position), \
                    count(DISTINCT log_position) FROM lineage_events",
            &[],
        )
        .await
        .expect("count rows");
    let n: i64 = row.get(0);
    let distinct: i64 = row.get(1);
    let min: Option<i64> = row.get(2);
    let max: Option<i64> = row.get(3);
    let positions: i64 = row.get(4);
    let dense = n == 0 || (min == Some(0) && max == Some(n - 1) && positions == n);
    (n, distinct, dense)
}

/// The tables a schema-1 geoprov created (migration 0001 as shipped), recorded as version 1, in
/// the client's current schema: the starting point of the upgrade tests.
pub async fn create_schema_1(client: &tokio_postgres::Client) {
    client
        .batch_execute(include_str!(
            "../../../src/store/postgres/migrations/0001_init.sql"
        ))
        .await
        .expect("schema 1");
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO schema_migrations (version, name) VALUES (1, '0001_init');",
        )
        .await
        .expect("version 1");
}

/// A `geoprov worker` child process on the embedded broker of a data dir and the given store,
/// logging to a file in that dir (appended to, so a restarted worker keeps one log); SIGKILLed
/// when dropped.
pub struct WorkerProcess {
    /// The process, for waiting on it or signalling it.
    pub child: std::process::Child,
    log: std::path::PathBuf,
}

impl WorkerProcess {
    /// `geoprov worker --broker embedded --store STORE EXTRA...` on `data_dir`, logging to
    /// `log_name` there.
    pub fn start(
        data_dir: &std::path::Path,
        store: &str,
        log_name: &str,
        extra: &[&str],
    ) -> WorkerProcess {
        let log = data_dir.join(log_name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = std::process::Command::new(crate::support::geoprov_bin())
            .arg("worker")
            .args(["--broker", "embedded", "--store", store])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("GEOPROV_LOG", "info")
            .env_remove("GEOPROV_BROKER")
            .env_remove("GEOPROV_STORE")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn geoprov worker");
        WorkerProcess { child, log }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Worker number `i` of a fleet on one data dir and store, logging to `worker-<i>.log`
    /// (so that a restarted worker goes on in its predecessor's log).
    pub fn numbered(i: usize, data_dir: &Path, store: &str, extra: &[&str]) -> WorkerProcess {
        WorkerProcess::start(data_dir, store, &format!("worker-{i}.log"), extra)
    }

    /// Enqueues `payloads` on the embedded broker of `data_dir`, then starts `n` numbered
    /// workers on it and `store`.
    pub fn fleet(
        n: usize,
        data_dir: &Path,
        store: &str,
        payloads: &[String],
        extra: &[&str],
    ) -> Vec<WorkerProcess> {
        super::tlog::emit(data_dir, payloads);
        (0..n)
            .map(|i| WorkerProcess::numbered(i, data_dir, store, extra))
            .collect()
    }

    /// Everything a fleet logged so far, one worker after the other.
    pub fn logs(workers: &[WorkerProcess]) -> String {
        workers
            .iter()
            .map(WorkerProcess::log_text)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

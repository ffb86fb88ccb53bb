//! Shared helpers for the integration tests: a real `geoprov serve` child process on a temporary
//! data dir that binds port 0 and reports its address, event generators, direct reads of the
//! SQLite store, and [`require_or_skip`] for tests that need something outside the repository.

#![allow(dead_code)]

pub mod log_cases;
pub mod pg;
pub mod stamp;
pub mod tlog;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The geoprov binary built for these tests.
pub fn geoprov_bin() -> &'static str {
    env!("CARGO_BIN_EXE_geoprov")
}

/// Whether a missing server or tool must fail the test rather than skip it
/// (`GEOPROV_REQUIRE_SERVICES=1`, as `.ci/run` sets).
pub fn services_required() -> bool {
    std::env::var("GEOPROV_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// For a test that cannot run without `what`: returns `true` after printing
/// `skipped: <what>` when it may be skipped, and panics with `what` under
/// `GEOPROV_REQUIRE_SERVICES=1`.
pub fn require_or_skip(what: &str) -> bool {
    assert!(
        !services_required(),
        "{what} (GEOPROV_REQUIRE_SERVICES=1: required)"
    );
    eprintln!("skipped: {what}");
    true
}

/// The folder of third-party JSON Schemas (OpenLineage, STAC extensions) that export tests
/// validate against, from `GEOPROV_SCHEMAS`; `None` after [`require_or_skip`] when it is not set
/// or not a folder (the project does not ship them).
pub fn schemas_dir() -> Option<PathBuf> {
    match std::env::var_os("GEOPROV_SCHEMAS").map(PathBuf::from) {
        Some(dir) if dir.is_dir() => Some(dir),
        Some(dir) => {
            require_or_skip(&format!(
                "GEOPROV_SCHEMAS={} is not a folder of JSON Schemas",
                dir.display()
            ));
            None
        }
        None => {
            require_or_skip("no third-party JSON Schemas (set GEOPROV_SCHEMAS to their folder)");
            None
        }
    }
}

/// A free TCP port on 127.0.0.1, for third-party servers the tests start (Redis, PostgreSQL,
/// RabbitMQ), which cannot report a port they chose. geoprov's own servers bind port 0 and
/// report theirs ([`Server::start`]).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `geoprov serve` child process; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Start `geoprov serve` on `data_dir` with extra flags, listening on a port the system
    /// chooses (`--listen 127.0.0.1:0`, read back from `--ready-file`), and wait until /healthz
    /// answers.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let log = data_dir.join(format!("serve-{run}.log"));
        let ready = data_dir.join(format!("serve-{run}.ready"));
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(geoprov_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .args(extra)
            .env("GEOPROV_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn geoprov serve");
        let port = wait_ready(&mut child, &ready, &log, Duration::from_secs(60));
        let server = Server {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        };
        server.wait_healthy(Duration::from_secs(30));
        server
    }

    /// Base URL, e.g. `http://127.0.0.1:4321`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Block until /healthz answers 200.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(resp) = get_status(&format!("{}/healthz", self.url())) {
                if resp == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "geoprov serve did not become healthy; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM the process and wait for its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        tlog::terminate(&mut self.child)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Waits for `geoprov serve --ready-file READY` to write its address; its port. Panics with the
/// log when the process exits first or `within` passes.
pub fn wait_ready(child: &mut Child, ready: &Path, log: &Path, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            if let Ok(address) = text.trim().parse::<std::net::SocketAddr>() {
                return address.port();
            }
        }
        let exited = child.try_wait().ok().flatten();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "geoprov serve did not report its address ({}); log:\n{}",
            exited.map_or_else(|| "timed out".to_string(), |s| s.to_string()),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// GET `url` from synchronous code and return the status code.
pub fn get_status(url: &str) -> Result<u16, String> {
    // A plain HTTP/1.1 GET over std's TcpStream: callable from sync code and from inside async
    // tests alike (a nested Tokio runtime is not).
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = std::net::TcpStream::connect(host).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "malformed HTTP status line".to_string())
}

/// POST a body to /v1/events and return (status, JSON answer).
pub async fn post_events(base: &str, body: String) -> (u16, serde_json::Value) {
    let resp = ::reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /v1/events");
    let status = resp.status().as_u16();
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// `n` distinct valid event payloads as JSON text; `tag` keeps sets from different tests apart.
pub fn valid_events(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ds = uuid::Uuid::new_v4();
            format!(
                r#"{{"dataset_uuid": "{ds}", "operation": "reproject", "crs_from": "EPSG:32633", "crs_to": "EPSG:3857", "processor_id": "test-{tag}", "sequence": {i}, "parameters": {{"resampling": "bilinear", "target_resolution": 10.0}}}}"#
            )
        })
        .collect()
}

/// Open the SQLite store of a data dir read-only-ish and count the rows.
pub fn sqlite_row_count(data_dir: &Path) -> u64 {
    let conn = rusqlite::Connection::open(data_dir.join("lineage.db")).expect("open store");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    conn.query_row("SELECT count(*) FROM lineage_events", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap_or(0))
    .unwrap_or(0)
}

/// Distinct event ids and whether log positions are exactly 0..n-1.
pub fn sqlite_distinct_and_dense(data_dir: &Path) -> (u64, bool) {
    let conn = rusqlite::Connection::open(data_dir.join("lineage.db")).expect("open store");
    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
    let (distinct, n, min, max): (i64, i64, Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT count(DISTINCT event_id), count(*), min(log_position), max(log_position) FROM lineage_events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("query");
    let dense = n == 0 || (min == Some(0) && max == Some(n - 1));
    (u64::try_from(distinct).unwrap_or(0), dense)
}

/// Poll `f` until it returns true or `within` passes.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Enqueue `bodies` on `broker` through a fresh producer.
pub async fn enqueue(broker: &dyn geoprov::broker::Broker, bodies: &[bytes::Bytes]) {
    broker
        .producer()
        .await
        .expect("producer")
        .enqueue(bodies)
        .await
        .expect("enqueue");
}

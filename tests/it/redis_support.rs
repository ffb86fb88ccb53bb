//! Helpers for the broker tests against real servers (Redis and RabbitMQ): finding a server (or
//! skipping), per-test key prefixes with cleanup, a throwaway `redis-server` of the test's own,
//! test certificates, `geoprov worker` child processes interrupted mid-stream, and the Python
//! reference client.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use geoprov::broker::BrokerError;

use super::support::{free_port, geoprov_bin, require_or_skip, wait_until};
use crate::broker_suite::{MalformedId, Traits};

/// The Redis URL to test against (`GEOPROV_TEST_REDIS`, default `redis://127.0.0.1:6379/0`),
/// or `None` after printing why the test is skipped.
pub fn redis_url() -> Option<String> {
    let url = std::env::var("GEOPROV_TEST_REDIS")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_string());
    let ok = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok();
    reachable("Redis", url, ok)
}

/// `url` when the `what` server there answered (`ok`), or `None` after printing why the test is
/// skipped; a failure instead when services are required.
pub fn reachable(what: &str, url: String, ok: bool) -> Option<String> {
    if ok {
        return Some(url);
    }
    require_or_skip(&format!("no {what} server at {url}"));
    None
}

/// The suite's traits both Redis backends share: their dead letters are a stream (dead-lettering
/// again adds another entry; ids are entry ids, which Redis itself checks).
pub fn redis_traits(visibility: Duration, slack: Duration) -> Traits {
    Traits {
        dead_letter_twice_adds_nothing: false,
        malformed_dead_letter_id: Some(MalformedId {
            id: "abc",
            refused_with: |e| matches!(e, BrokerError::Protocol(_)),
        }),
        ..Traits::strict(visibility, slack, "1-1")
    }
}

/// A unique name for one test's keys and queues.
pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Deletes every key matching its patterns when dropped.
pub struct KeyCleanup {
    pub url: String,
    pub patterns: Vec<String>,
}

impl Drop for KeyCleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        for pattern in &self.patterns {
            let keys: Vec<Vec<u8>> = match conn.scan_match::<_, Vec<u8>>(pattern) {
                Ok(iter) => iter.collect(),
                Err(_) => continue,
            };
            for key in keys {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(&mut conn);
            }
        }
    }
}

use redis::Commands as _;

/// A synchronous connection for assertions.
pub fn sync_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("connection")
}

/// A `geoprov worker` child process, SIGKILLed when dropped.
pub struct WorkerProc {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProc {
    /// Start `geoprov worker` on `data_dir` with these flags; stderr goes to a log file.
    pub fn start(data_dir: &Path, args: &[&str]) -> WorkerProc {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let log = data_dir.join(format!("worker-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(geoprov_bin())
            .arg("worker")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env("GEOPROV_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn geoprov worker");
        WorkerProc { child, log }
    }

    /// `geoprov worker` consuming geoprov's own events from `queue` at `broker`, with `extra`
    /// flags (separated by spaces).
    pub fn native(data_dir: &Path, broker: &str, queue: &str, extra: &str) -> WorkerProc {
        let mut args = vec!["--broker", broker, "--queue", queue];
        args.extend(extra.split_whitespace());
        WorkerProc::start(data_dir, &args)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (up to 30 s) for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        crate::support::tlog::terminate(&mut self.child)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `redis-server` of the test's own on a spare port, with AOF persistence in a temp dir;
/// shut down when dropped.
pub struct OwnRedis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl OwnRedis {
    /// Start one (`None`, after printing why, when redis-server is not installed).
    pub fn start(extra: &[&str]) -> Option<OwnRedis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            require_or_skip("no redis-server binary to start a server of our own");
            return None;
        }
        let mut me = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
        };
        me.spawn();
        Some(me)
    }

    /// Plain URL of DB 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("log");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--appendonly")
            .arg("yes")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(self.dir.path());
        if self.extra.iter().any(|a| a == "--tls-port") {
            cmd.arg("--port").arg("0");
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        if !self.extra.iter().any(|a| a == "--tls-port") {
            let url = self.url();
            assert!(
                wait_until(Duration::from_secs(20), || {
                    redis::Client::open(url.as_str())
                        .and_then(|c| c.get_connection())
                        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                        .is_ok()
                }),
                "own redis-server did not start"
            );
        }
    }

    /// Stop it gracefully (SIGTERM: the AOF is flushed), wait, and start it again on the same
    /// port and directory after `down`.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Python with Celery installed (`GEOPROV_PYTHON`, else the venv `.ci/python-setup`
/// makes), or `None` after printing why the test is skipped.
pub fn python() -> Option<PathBuf> {
    let path = match std::env::var("GEOPROV_PYTHON") {
        Ok(p) => PathBuf::from(p),
        Err(_) => {
            let venv = std::env::var("GEOPROV_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                        .join(".cache/geoprov-venv")
                });
            venv.join("bin/python")
        }
    };
    let ok = Command::new(&path)
        .args(["-c", "import celery, redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(path);
    }
    require_or_skip(&format!(
        "no Python with Celery at {} (run .ci/python-setup)",
        path.display()
    ));
    None
}

/// The `db_uri` the Python client passes: a password that must never reach a log.
pub const SECRET_DB_URI: &str = "postgresql://lineage:Sup3rS3cret-pw@db.invalid:5432/lineage";

/// Directory of the Python test modules.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// Environment for the reference Celery app.
pub struct CeleryEnv {
    pub broker: String,
    pub queue: String,
    pub prefix: String,
    pub result_backend: Option<String>,
    pub visibility_timeout: Option<u64>,
}

impl CeleryEnv {
    /// Celery on the Redis at `url`, with a key prefix and a queue of its own; the guard
    /// deletes every key under the prefix.
    pub fn on_redis(url: &str, name: &str) -> (CeleryEnv, KeyCleanup) {
        let prefix = format!("{}:", unique(name));
        let cleanup = KeyCleanup {
            url: url.to_string(),
            patterns: vec![format!("{prefix}*")],
        };
        let env = CeleryEnv {
            broker: url.to_string(),
            queue: unique(name),
            prefix,
            result_backend: None,
            visibility_timeout: None,
        };
        (env, cleanup)
    }

    /// A command running the Python reference tools with this environment.
    pub fn command(&self, python: &Path) -> Command {
        let mut cmd = Command::new(python);
        cmd.current_dir(python_dir())
            .env("PYTHONPATH", python_dir())
            .env("LINEAGE_BROKER", &self.broker)
            .env("LINEAGE_QUEUE", &self.queue)
            .env("LINEAGE_KEYPREFIX", &self.prefix)
            .env(
                "LINEAGE_RESULT_BACKEND",
                self.result_backend.clone().unwrap_or_default(),
            );
        if let Some(vt) = self.visibility_timeout {
            cmd.env("LINEAGE_VISIBILITY_TIMEOUT", vt.to_string());
        }
        cmd
    }

    /// Run `celery_tool.py ARGS` to completion and return its stdout lines.
    pub fn tool(&self, python: &Path, args: &[&str]) -> Vec<String> {
        let out = self
            .command(python)
            .arg("celery_tool.py")
            .args(args)
            .output()
            .expect("run celery_tool.py");
        assert!(
            out.status.success(),
            "celery_tool.py {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The flags a geoprov worker needs to consume this queue.
    /// (`--celery-key-prefix` only when there is a prefix.)
    pub fn geoprov_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = vec![
            "--broker".into(),
            self.broker.clone(),
            "--celery".into(),
            "--queue".into(),
            self.queue.clone(),
        ];
        if !self.prefix.is_empty() {
            flags.extend(["--celery-key-prefix".into(), self.prefix.clone()]);
        }
        flags
    }

    /// A geoprov worker on this queue, with `extra` flags (separated by spaces), storing into
    /// `data`.
    pub fn start_geoprov_worker(&self, data: &Path, extra: &str) -> WorkerProc {
        let mut args = self.geoprov_flags();
        args.extend(extra.split_whitespace().map(str::to_owned));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        WorkerProc::start(data, &refs)
    }
}

/// Assert that `data`'s store holds exactly the events `expected` names (the ids Python
/// computed), each once.
pub fn assert_same_ids(data: &Path, expected: &[String], log: &str) {
    let stored = stored_ids(data);
    let set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), set.len(), "no duplicate rows");
    let want: HashSet<&String> = expected.iter().collect();
    assert_eq!(want.len(), expected.len(), "Python made distinct payloads");
    assert_eq!(set.len(), want.len(), "row count; log:\n{log}");
    assert!(set == want, "stored event ids are the ones Python computes");
}

/// Let `worker` store at least `progress` events (within 60 s), then `interrupt` it (kill it,
/// restart its server, ...): the interruption must come before all `total` are stored. Returns
/// how many were stored by then.
pub fn interrupt_mid_stream(
    data: &Path,
    worker: &mut WorkerProc,
    progress: usize,
    total: usize,
    interrupt: impl FnOnce(&mut WorkerProc),
) -> usize {
    assert!(
        wait_until(Duration::from_secs(60), || stored_ids(data).len()
            >= progress),
        "no progress:\n{}",
        worker.log_text()
    );
    interrupt(worker);
    let stored = stored_ids(data).len();
    assert!(
        stored < total,
        "interrupted mid-stream ({stored} of {total} stored)"
    );
    stored
}

/// Whether `data`'s store reaches `n` events within `within`.
pub fn stores(data: &Path, n: usize, within: Duration) -> bool {
    wait_until(within, || stored_ids(data).len() >= n)
}

/// Make, with the openssl CLI in `dir`: a throwaway CA (`ca.pem`), a server certificate for
/// localhost and 127.0.0.1 (`server.pem`, `server.key`), a client certificate (`client.pem`,
/// `client.key`), and another CA that signed neither (`other.pem`).
pub fn make_certs(dir: &Path) -> Result<(), String> {
    let leaf = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n";
    let files = [
        (
            "server.ext",
            format!(
                "{leaf}subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
            ),
        ),
        ("client.ext", format!("{leaf}extendedKeyUsage=clientAuth\n")),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=geoprov-test-CA",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext",
        "req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=geoprov-worker",
        "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext",
        "req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.pem -days 2 -subj /CN=some-other-CA",
    ];
    for step in steps {
        let out = Command::new("openssl")
            .args(step.split_whitespace())
            .current_dir(dir)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl {step}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// Every event id stored in a data dir's SQLite store (with repeats, if any).
pub fn stored_ids(data_dir: &Path) -> Vec<String> {
    let Ok(conn) = rusqlite::Connection::open(data_dir.join("lineage.db")) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let Ok(mut stmt) = conn.prepare("SELECT event_id FROM lineage_events") else {
        return Vec::new();
    };
    let rows = stmt
        .query_map([], |r| {
            // event_id may be stored as text or as a blob, depending on the schema.
            let v: rusqlite::types::Value = r.get(0)?;
            Ok(match v {
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Blob(b) => hex::encode(b),
                other => format!("{other:?}"),
            })
        })
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default();
    rows
}

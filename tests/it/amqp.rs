//! RabbitMQ against a real server (`GEOPROV_TEST_AMQP`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`): the `Broker` contract (the shared suite) in native
//! and Celery mode; publisher confirms, dead letters' headers; against the real Python Celery
//! client 5,000 `.delay()` calls, a SIGKILLed worker, poison and foreign messages, results for
//! `AsyncResult.get()`, `countdown`; `amqps://` with a private CA and a client certificate, and a
//! restart, on a RabbitMQ node the test starts itself.
//!
//! Every test uses its own queue names and deletes its queues and exchanges when it ends.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use geoprov::broker::amqp::{HEADER_ATTEMPTS, HEADER_DEAD_AT, HEADER_DEAD_ID, HEADER_REASON};
use geoprov::broker::{self, Broker, BrokerOptions, ConsumerOptions, TlsFiles};
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeleteOptions};
use lapin::types::AMQPValue;
use lapin::{Connection, ConnectionProperties};

use super::redis_support::{
    interrupt_mid_stream, make_certs, python, reachable, redis_url, stored_ids, stores, unique,
    CeleryEnv, WorkerProc,
};
use super::support::{free_port, valid_events, wait_until};
use crate::broker_suite::{broker_suite, celery, Backend, Lapse, Traits, Wire};

/// Run a future on a runtime of its own, on a thread of its own (usable from sync tests, async
/// tests and `Drop`).
fn block_on<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .ok()
            .map(|rt| rt.block_on(f))
    })
    .join()
    .ok()
    .flatten()
}

async fn raw_connect(url: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    Connection::connect(url, properties).await
}

/// The RabbitMQ URL to test against, or `None` after printing why the test is skipped.
fn amqp_url() -> Option<String> {
    let url = std::env::var("GEOPROV_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let probe = url.clone();
    let ok = block_on(async move {
        match tokio::time::timeout(Duration::from_secs(5), raw_connect(&probe)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close(200, "probe").await;
                true
            }
            _ => false,
        }
    })
    .unwrap_or(false);
    reachable("RabbitMQ", url, ok)
}

/// Deletes a test's queues and exchanges when dropped.
struct AmqpCleanup {
    url: String,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl AmqpCleanup {
    /// geoprov's queues for `queue`, plus Celery's queue and exchange of that name when
    /// `celery`.
    fn new(url: &str, queue: &str, celery: bool) -> AmqpCleanup {
        let mut queues = vec![
            format!("geoprov.{queue}.delay"),
            format!("geoprov.{queue}.dead"),
        ];
        let mut exchanges = Vec::new();
        if celery {
            queues.push(queue.to_owned());
            exchanges.push(queue.to_owned());
        } else {
            queues.push(format!("geoprov.{queue}"));
        }
        AmqpCleanup {
            url: url.to_owned(),
            queues,
            exchanges,
        }
    }
}

impl Drop for AmqpCleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let _ = block_on(async move {
            let Ok(conn) = raw_connect(&url).await else {
                return;
            };
            for q in &queues {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch.queue_delete(q, QueueDeleteOptions::default()).await;
                }
            }
            for e in &exchanges {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch.exchange_delete(e, Default::default()).await;
                }
            }
            let _ = conn.close(200, "cleanup").await;
        });
    }
}

async fn open(url: &str, queue: &str, celery: bool) -> Arc<dyn Broker> {
    let options = BrokerOptions {
        queue: Some(queue.to_owned()),
        celery,
        ..BrokerOptions::default()
    };
    broker::open(&url.parse().unwrap(), &options)
        .await
        .expect("open amqp broker")
}

/// A native queue of the test's own on the RabbitMQ server (URL, queue name, cleanup guard and
/// a broker on it), or `None` after printing why the test is skipped.
async fn native_queue(name: &str) -> Option<(String, String, AmqpCleanup, Arc<dyn Broker>)> {
    let url = amqp_url()?;
    let queue = unique(name);
    let cleanup = AmqpCleanup::new(&url, &queue, false);
    let broker = open(&url, &queue, false).await;
    Some((url, queue, cleanup, broker))
}

fn consumer_options(name: &str, prefetch: u16) -> ConsumerOptions {
    ConsumerOptions {
        name: unique(name),
        prefetch,
        ..ConsumerOptions::default()
    }
}

fn bodies(n: usize, tag: &str) -> Vec<Bytes> {
    valid_events(n, tag).into_iter().map(Bytes::from).collect()
}

/// A RabbitMQ queue of the test's own (native, or Celery's), deleted at the end, for the shared
/// suite.
async fn backend(celery: bool) -> Option<Backend> {
    let url = amqp_url()?;
    let queue = unique("suite");
    let cleanup = AmqpCleanup::new(&url, &queue, celery);
    Some(Backend {
        url: url.parse().unwrap(),
        options: BrokerOptions {
            queue: Some(queue),
            celery,
            ..BrokerOptions::default()
        },
        wire: if celery { Wire::Celery } else { Wire::Native },
        traits: Traits {
            opaque_bodies: !celery,
            // Deliveries are pushed ahead (prefetch), not pulled by `receive`.
            pull: false,
            // `depth` is the ready messages of the main and delay queues.
            depth_counts_in_flight: false,
            // No leases in AMQP: a held delivery comes back when its channel closes.
            lapse: Lapse::ChannelClose,
            drop_returns_at_once: true,
            // The visibility timeout is unused by AMQP; it paces the extend test.
            ..Traits::strict(
                Duration::from_secs(1),
                Duration::from_secs(8),
                &uuid::Uuid::new_v4().to_string(),
            )
        },
        _cleanup: Box::new(cleanup),
    })
}

async fn native_backend() -> Option<Backend> {
    backend(false).await
}

async fn celery_backend() -> Option<Backend> {
    backend(true).await
}

broker_suite!(conformance, super::native_backend);
broker_suite!(celery_conformance, super::celery_backend);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_confirms_fail_when_the_queue_is_gone() {
    let Some((url, queue, cleanup, broker)) = native_queue("confirm").await else {
        return;
    };
    let producer = broker.producer().await.unwrap();
    producer.enqueue(&bodies(500, "confirm")).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(500));
    // Delete the queue behind the broker's back: a publish is now unroutable, and enqueue
    // must say so instead of reporting a message RabbitMQ dropped as durable.
    let conn = raw_connect(&url).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(&format!("geoprov.{queue}"), QueueDeleteOptions::default())
        .await
        .unwrap();
    let err = producer.enqueue(&bodies(3, "lost")).await.unwrap_err();
    assert!(err.to_string().contains("could not route"), "{err}");
    let _ = conn.close(200, "done").await;
    drop(cleanup);
}

/// What a dead letter is on the wire: the original body, the reason and geoprov's bookkeeping in
/// headers, persistent (listing, replay and purge are checked by the shared suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_reason_headers() {
    let Some((url, queue, _cleanup, broker)) = native_queue("dlq").await else {
        return;
    };
    let sent = bodies(1, "dlq");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = broker.consumer(consumer_options("c", 10)).await.unwrap();
    let got = consumer.receive(10, Duration::from_secs(2)).await.unwrap();
    let reason = "reason number 0".to_owned();
    consumer
        .dead_letter(&[(got[0].clone(), reason)])
        .await
        .unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));

    // The raw message: original body, reason and bookkeeping in headers.
    let conn = raw_connect(&url).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let raw = ch
        .basic_get(
            &format!("geoprov.{queue}.dead"),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(raw.delivery.data, sent[0].to_vec());
    let headers = raw.delivery.properties.headers().clone().unwrap();
    let text = |k: &str| match headers.inner().get(k) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("header {k}: {other:?}"),
    };
    assert_eq!(text(HEADER_REASON), "reason number 0");
    assert!(chrono::DateTime::parse_from_rfc3339(&text(HEADER_DEAD_AT)).is_ok());
    assert!(uuid::Uuid::parse_str(&text(HEADER_DEAD_ID)).is_ok());
    assert!(matches!(
        headers.inner().get(HEADER_ATTEMPTS),
        Some(AMQPValue::LongLongInt(1))
    ));
    assert_eq!(raw.delivery.properties.delivery_mode(), &Some(2));
    ch.basic_nack(
        raw.delivery.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .unwrap();
    let _ = conn.close(200, "done").await;
}

/// The reference Celery app on this RabbitMQ, with a queue of its own.
fn celery_env(url: &str, name: &str) -> (CeleryEnv, AmqpCleanup) {
    let queue = unique(name);
    let cleanup = AmqpCleanup::new(url, &queue, true);
    let env = CeleryEnv {
        broker: url.to_string(),
        queue,
        prefix: String::new(),
        result_backend: None,
        visibility_timeout: None,
    };
    (env, cleanup)
}

/// The RabbitMQ server, the Python with Celery, and a Celery queue of the test's own (with its
/// cleanup guard), or `None` after printing why the test is skipped.
fn python_celery(name: &str) -> Option<(String, PathBuf, CeleryEnv, AmqpCleanup)> {
    let url = amqp_url()?;
    let py = python()?;
    let (env, cleanup) = celery_env(&url, name);
    Some((url, py, env, cleanup))
}

/// What `rabbitmqctl` says about the queues whose names contain `queue` and about every
/// channel, for a failure message (empty when rabbitmqctl is not on this machine).
fn rabbitmq_state(queue: &str) -> String {
    let run = |args: &[&str]| {
        Command::new("rabbitmqctl")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let queues = run(&[
        "list_queues",
        "-q",
        "name",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
    ]);
    let queues: String = queues
        .lines()
        .filter(|l| l.contains(queue))
        .map(|l| format!("{l}\n"))
        .collect();
    let channels = run(&[
        "list_channels",
        "-q",
        "connection",
        "pid",
        "consumer_count",
        "messages_unacknowledged",
    ]);
    format!("{queues}channels:\n{channels}")
}

/// Ready messages in a queue (passive declare).
fn ready(url: &str, queue: &str) -> u32 {
    let (url, queue) = (url.to_owned(), queue.to_owned());
    block_on(async move {
        let conn = raw_connect(&url).await.ok()?;
        let ch = conn.create_channel().await.ok()?;
        let q = ch
            .queue_declare(
                &queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .ok()?;
        let _ = conn.close(200, "counted").await;
        Some(q.message_count())
    })
    .flatten()
    .unwrap_or(u32::MAX)
}

#[test]
fn python_celery_client_5000_delay_calls_over_rabbitmq_are_stored_with_python_event_ids() {
    let Some((url, py, env, _cleanup)) = python_celery("py5k") else {
        return;
    };
    celery::delay_calls_are_stored_with_python_event_ids(&env, &py, 5000, || {
        assert_eq!(
            ready(&url, &env.queue),
            5000,
            "Celery declared and filled its queue"
        );
    });
    assert_eq!(ready(&url, &env.queue), 0);
    assert_eq!(ready(&url, &format!("geoprov.{}.dead", env.queue)), 0);
}

#[test]
fn celery_worker_killed_mid_stream_then_restarted_stores_every_event_once_over_rabbitmq() {
    let Some((url, py, env, _cleanup)) = python_celery("crash") else {
        return;
    };
    celery::killed_worker_then_restarted_stores_every_event_once(
        &env,
        &py,
        "",
        || ready(&url, &env.queue) == 0,
        || {
            format!(
                "{} ready in the queue; rabbitmqctl:\n{}",
                ready(&url, &env.queue),
                rabbitmq_state(&env.queue)
            )
        },
    );
}

#[test]
fn poison_and_foreign_messages_over_rabbitmq_become_dead_letters_with_reasons() {
    let Some((url, py, env, _cleanup)) = python_celery("poison") else {
        return;
    };
    let dead = format!("geoprov.{}.dead", env.queue);
    let options = BrokerOptions {
        queue: Some(env.queue.clone()),
        celery: true,
        ..BrokerOptions::default()
    };
    let letters = celery::poison_and_foreign_messages_become_dead_letters(
        &env,
        &py,
        || u64::from(ready(&url, &dead)),
        &options,
        &[],
    );
    let malformed = letters
        .iter()
        .find(|l| l.body.as_ref() == b"{this is not json")
        .expect("the malformed body, byte for byte");
    assert!(
        malformed.reason.contains("celery message"),
        "{}",
        malformed.reason
    );
}

#[test]
fn results_of_rabbitmq_tasks_reach_python_async_result_get_through_redis() {
    let Some((_url, py, mut env, _cleanup)) = python_celery("res") else {
        return;
    };
    let Some(redis) = redis_url() else { return };
    env.result_backend = Some(redis.clone());
    celery::results_reach_python_async_result_get(&env, &py, &redis);
}

#[test]
fn countdown_tasks_over_rabbitmq_are_not_stored_before_their_eta() {
    let Some((url, py, env, _cleanup)) = python_celery("eta") else {
        return;
    };
    // Declare the queue first (as Celery would) so the worker can start before the client.
    let (broker_url, queue) = (url.clone(), env.queue.clone());
    block_on(async move {
        open(&broker_url, &queue, true).await;
    });
    celery::countdown_tasks_are_not_stored_before_their_eta(&env, &py, "");
}

/// A RabbitMQ node of the test's own on spare ports, with its data and logs in a temporary
/// directory: plain AMQP, or only a TLS listener with mutual TLS required. It can be stopped
/// and started again (same node, ports and data); it is killed when dropped.
struct OwnRabbit {
    dir: tempfile::TempDir,
    server: String,
    node: String,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
}

impl OwnRabbit {
    /// Start one, or `None` (after printing why) when rabbitmq-server or openssl is missing.
    fn start(tls: bool) -> Option<OwnRabbit> {
        let server = ["/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"]
            .into_iter()
            .find(|p| {
                Path::new(p).exists()
                    || Command::new("which")
                        .arg(p)
                        .stdout(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
            });
        let openssl = !tls
            || Command::new("openssl")
                .arg("version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        let (Some(server), true) = (server, openssl) else {
            crate::support::require_or_skip(
                "no rabbitmq-server or openssl to start a node of our own",
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = free_port();
        let config = if tls {
            make_certs(d).expect("test certificates");
            format!(
                "listeners.tcp = none\n\
                 listeners.ssl.default = {port}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = true\n",
                ca = d.join("ca.pem").display(),
                cert = d.join("server.pem").display(),
                key = d.join("server.key").display(),
            )
        } else {
            format!("listeners.tcp.default = {port}\n")
        };
        std::fs::write(d.join("rabbitmq.conf"), config).expect("config");
        std::fs::write(d.join("enabled_plugins"), "[].\n").expect("plugins file");
        let mut me = OwnRabbit {
            dir,
            server: server.to_owned(),
            node: format!(
                "geoprovit{}@localhost",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            port,
            dist_port: free_port(),
            child: None,
        };
        me.spawn();
        Some(me)
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("out.log"))
            .expect("log");
        let child = Command::new(&self.server)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", d.join("plugins-expand"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            // Crash dumps (erl_crash.dump, MnesiaCore.*) land in the temporary directory.
            .env("ERL_CRASH_DUMP", d.join("erl_crash.dump"))
            .current_dir(d)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn rabbitmq-server");
        self.child = Some(child);
        let port = self.port;
        let up = wait_until(Duration::from_secs(90), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "own RabbitMQ node did not start:\n{}",
            std::fs::read_to_string(d.join("out.log")).unwrap_or_default()
        );
    }

    /// The Erlang VM's OS pid, from the pid file the node writes once it runs. Only this
    /// process and the start script are ever signalled: never a process group.
    fn vm_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.file("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|pid| *pid > 1)
    }

    /// Stop the node gracefully (SIGTERM to the start script, which stops the VM) and wait
    /// for it to exit; SIGKILL the VM if it is still there after 30 s.
    fn stop(&mut self) {
        let vm = self.vm_pid();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_vm(vm);
        let _ = std::fs::remove_file(self.file("pid"));
    }

    /// Stop it, wait `down`, start it again on the same ports and data.
    fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.spawn();
    }

    fn url(&self, tls: bool) -> String {
        if tls {
            format!("amqps://guest:guest@localhost:{}/%2f", self.port)
        } else {
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for OwnRabbit {
    fn drop(&mut self) {
        kill_vm(self.vm_pid());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGKILL the node's Erlang VM, if it has one.
fn kill_vm(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// Open `url` for `options`, retrying while the node finishes booting (it may accept TCP a
/// moment before AMQP is ready).
async fn open_when_ready(url: &str, options: &BrokerOptions) -> Arc<dyn Broker> {
    let mut last = None;
    for _ in 0..60 {
        match broker::open(&url.parse().unwrap(), options).await {
            Ok(b) => return b,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("cannot open {url}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_and_a_client_certificate() {
    let Some(node) = OwnRabbit::start(true) else {
        return;
    };
    let url = node.url(true);
    let queue = unique("tls");
    let tls = TlsFiles {
        ca: Some(node.file("ca.pem")),
        cert: Some(node.file("client.pem")),
        key: Some(node.file("client.key")),
    };
    let options = BrokerOptions {
        queue: Some(queue.clone()),
        tls: tls.clone(),
        ..BrokerOptions::default()
    };
    let broker = open_when_ready(&url, &options).await;
    let sent = bodies(20, "tls");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = broker.consumer(consumer_options("c", 50)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        let more = consumer.receive(50, Duration::from_secs(2)).await.unwrap();
        assert!(!more.is_empty());
        got.extend(more);
    }
    assert_eq!(got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(), sent);
    let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
    consumer.ack(&tags).await.unwrap();

    // No client certificate: the server (fail_if_no_peer_cert) refuses.
    let no_cert = BrokerOptions {
        queue: Some(queue.clone()),
        tls: TlsFiles {
            ca: Some(node.file("ca.pem")),
            ..TlsFiles::default()
        },
        ..BrokerOptions::default()
    };
    assert!(broker::open(&url.parse().unwrap(), &no_cert).await.is_err());
    // A CA that did not sign the server's certificate: the client refuses.
    let wrong_ca = BrokerOptions {
        queue: Some(queue.clone()),
        tls: TlsFiles {
            ca: Some(node.file("other.pem")),
            ..tls
        },
        ..BrokerOptions::default()
    };
    let err = broker::open(&url.parse().unwrap(), &wrong_ca)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("certificate"), "{err}");
    // TLS files with a plain amqp:// URL are a configuration error.
    let plain = url.replacen("amqps://", "amqp://", 1);
    assert!(matches!(
        broker::open(&plain.parse().unwrap(), &wrong_ca).await.err(),
        Some(broker::BrokerError::Config(_))
    ));
}

#[test]
fn worker_and_producer_reconnect_by_themselves_after_a_rabbitmq_restart() {
    let Some(mut node) = OwnRabbit::start(false) else {
        return;
    };
    let url = node.url(false);
    let queue = unique("restart");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = BrokerOptions {
        queue: Some(queue.clone()),
        ..BrokerOptions::default()
    };
    let broker = rt.block_on(open_when_ready(&url, &options));
    let producer = rt.block_on(broker.producer()).unwrap();
    let first = bodies(1500, "restart-a");
    rt.block_on(producer.enqueue(&first)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut worker = WorkerProc::native(
        data.path(),
        &url,
        &queue,
        "--rate-limit 500/s --batch-size 100",
    );
    interrupt_mid_stream(data.path(), &mut worker, 300, 1500, |_| {
        node.restart(Duration::from_secs(1));
    });
    // The same producer publishes again once RabbitMQ is back (its next call reconnects).
    let second = bodies(300, "restart-b");
    let mut sent = false;
    for _ in 0..60 {
        if rt.block_on(producer.enqueue(&second)).is_ok() {
            sent = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(sent, "the producer reconnected");
    let done = stores(data.path(), 1800, Duration::from_secs(120));
    assert!(
        done,
        "not all stored after the restart; log:\n{}",
        worker.log_text()
    );
    // Each worker task says so when its own next attempt succeeds, which may come after the
    // other task drained the queue (its backoff grew during the outage).
    let recovered = wait_until(Duration::from_secs(60), || {
        worker.log_text().contains("Broker available again")
    });
    assert!(
        recovered,
        "the worker saw the outage and recovered by itself; log:\n{}",
        worker.log_text()
    );
    let code = worker.terminate();
    assert_eq!(
        code,
        Some(0),
        "exit on SIGTERM; log:\n{}",
        worker.log_text()
    );
    let stored = stored_ids(data.path());
    let set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored.len(), 1800);
    assert_eq!(set.len(), 1800, "no duplicate rows");
    drop(broker);
    drop(rt);
}

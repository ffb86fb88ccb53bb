//! Native Redis broker (Redis Streams) against a real server: round trip, ack, redelivery by
//! XAUTOCLAIM after the visibility timeout, retry_later, dead letters, a SIGKILLed worker, a
//! restarted Redis, and TLS (`rediss://`) against a redis-server of the test's own.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use geoprov::broker::{self, Broker, BrokerOptions, ConsumerOptions, TlsFiles};

use super::redis_support::{
    redis_url, stored_ids, sync_conn, unique, KeyCleanup, OwnRedis, WorkerProc,
};
use super::support::{valid_events, wait_until};

/// A broker on a unique queue, with its keys deleted at the end.
async fn open_unique(url: &str, name: &str) -> (Arc<dyn Broker>, KeyCleanup, String) {
    let queue = unique(name);
    let options = BrokerOptions {
        queue: Some(queue.clone()),
        ..BrokerOptions::default()
    };
    let broker = broker::open(&url.parse().unwrap(), &options)
        .await
        .expect("open redis broker");
    let cleanup = KeyCleanup {
        url: url.to_string(),
        patterns: vec![format!("geoprov:{queue}*")],
    };
    (broker, cleanup, queue)
}

fn consumer_options(name: &str, vt: Duration) -> ConsumerOptions {
    ConsumerOptions {
        visibility_timeout: vt,
        name: unique(name),
        ..ConsumerOptions::default()
    }
}

fn bodies(n: usize, tag: &str) -> Vec<Bytes> {
    valid_events(n, tag).into_iter().map(Bytes::from).collect()
}

#[tokio::test]
async fn streams_roundtrip_in_order_and_ack_removes() {
    let Some(url) = redis_url() else { return };
    let (broker, _cleanup, _) = open_unique(&url, "rt").await;
    let sent = bodies(25, "rt");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    assert_eq!(broker.depth().await.unwrap(), Some(25));
    let mut consumer = broker
        .consumer(consumer_options("c", Duration::from_secs(30)))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 25 {
        let batch = consumer
            .receive(10, Duration::from_millis(500))
            .await
            .unwrap();
        assert!(!batch.is_empty(), "stream ran dry early");
        got.extend(batch);
    }
    let received: Vec<Bytes> = got.iter().map(|d| d.body.clone()).collect();
    assert_eq!(received, sent, "FIFO, bytes unchanged");
    assert!(got.iter().all(|d| d.attempt == 1));
    let tags: Vec<_> = got.iter().map(|d| d.tag.clone()).collect();
    consumer.ack(&tags).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0), "ack = XACK + XDEL");
    assert!(consumer
        .receive(10, Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn streams_unacked_entries_are_reclaimed_after_the_visibility_timeout() {
    let Some(url) = redis_url() else { return };
    let (broker, _cleanup, _) = open_unique(&url, "claim").await;
    crate::support::enqueue(broker.as_ref(), &bodies(5, "claim")).await;
    let vt = Duration::from_secs(1);
    let mut dead_worker = broker.consumer(consumer_options("a", vt)).await.unwrap();
    let taken = dead_worker
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(taken.len(), 5);
    // Another consumer sees nothing while the entries are within their visibility timeout.
    let mut other = broker.consumer(consumer_options("b", vt)).await.unwrap();
    assert!(other
        .receive(10, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut again = Vec::new();
    for _ in 0..10 {
        again.extend(other.receive(10, Duration::from_millis(200)).await.unwrap());
        if again.len() >= 5 {
            break;
        }
    }
    assert_eq!(again.len(), 5, "reclaimed by XAUTOCLAIM");
    assert!(
        again.iter().all(|d| d.attempt == 2),
        "delivery count from the PEL"
    );
    let tags: Vec<_> = again.iter().map(|d| d.tag.clone()).collect();
    other.ack(&tags).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));
}

#[tokio::test]
async fn streams_extend_keeps_and_retry_later_returns() {
    let Some(url) = redis_url() else { return };
    let (broker, _cleanup, _) = open_unique(&url, "ext").await;
    crate::support::enqueue(broker.as_ref(), &bodies(2, "ext")).await;
    let vt = Duration::from_millis(1500);
    let mut a = broker.consumer(consumer_options("a", vt)).await.unwrap();
    let mut b = broker.consumer(consumer_options("b", vt)).await.unwrap();
    let taken = a.receive(10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(taken.len(), 2);
    let tags: Vec<_> = taken.iter().map(|d| d.tag.clone()).collect();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.extend(&tags).await.unwrap();
        assert!(b
            .receive(10, Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty());
    }
    // Given back with no delay: the next claim takes them, as attempt 2.
    a.retry_later(&tags, Duration::ZERO).await.unwrap();
    let again = b.receive(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|d| d.attempt == 2));
}

#[tokio::test]
async fn streams_dead_letters_keep_body_and_reason_and_replay() {
    let Some(url) = redis_url() else { return };
    let (broker, _cleanup, _) = open_unique(&url, "dlq").await;
    let producer = broker.producer().await.unwrap();
    producer
        .enqueue(&[Bytes::from_static(b"{not json"), Bytes::from_static(b"[1]")])
        .await
        .unwrap();
    let mut consumer = broker
        .consumer(consumer_options("c", Duration::from_secs(30)))
        .await
        .unwrap();
    let got = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let items: Vec<_> = got
        .into_iter()
        .enumerate()
        .map(|(i, d)| (d, format!("reason {i}")))
        .collect();
    consumer.dead_letter(&items).await.unwrap();
    assert_eq!(broker.depth().await.unwrap(), Some(0));
    let dlq = broker.dead_letters().await.unwrap();
    assert_eq!(dlq.count().await.unwrap(), 2);
    let listed = dlq.list(10).await.unwrap();
    assert_eq!(listed[0].body, Bytes::from_static(b"{not json"));
    assert_eq!(listed[0].reason, "reason 0");
    assert_eq!(listed[1].attempts, 1);
    // Replay one, purge the other.
    let one = vec![listed[0].id.clone()];
    assert_eq!(dlq.replay(Some(&one)).await.unwrap(), 1);
    assert_eq!(broker.depth().await.unwrap(), Some(1));
    let back = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(back[0].body, Bytes::from_static(b"{not json"));
    assert_eq!(dlq.purge(None).await.unwrap(), 1);
    assert_eq!(dlq.count().await.unwrap(), 0);
}

/// Enqueue `events` on a native stream through the broker API.
async fn enqueue_all(url: &str, queue: &str, events: &[String]) {
    let options = BrokerOptions {
        queue: Some(queue.to_string()),
        ..BrokerOptions::default()
    };
    let broker = broker::open(&url.parse().unwrap(), &options)
        .await
        .expect("open");
    let producer = broker.producer().await.expect("producer");
    let bodies: Vec<Bytes> = events.iter().cloned().map(Bytes::from).collect();
    for chunk in bodies.chunks(500) {
        producer.enqueue(chunk).await.expect("enqueue");
    }
}

fn expected_ids(events: &[String]) -> HashSet<String> {
    events
        .iter()
        .map(|e| {
            geoprov::event::parse_event(e.as_bytes(), 1 << 20)
                .expect("valid")
                .event_id
                .to_hex()
        })
        .collect()
}

fn assert_exactly_once(data_dir: &Path, expected: &HashSet<String>, log: &str) {
    let ids = stored_ids(data_dir);
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), set.len(), "no duplicate rows");
    assert_eq!(set.len(), expected.len(), "every event stored; log:\n{log}");
    assert!(set == *expected, "the stored ids are the expected ones");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_worker_killed_mid_stream_loses_and_duplicates_nothing() {
    let Some(url) = redis_url() else { return };
    let queue = unique("crash");
    let _cleanup = KeyCleanup {
        url: url.clone(),
        patterns: vec![format!("geoprov:{queue}*")],
    };
    let events = valid_events(3000, "crash");
    let expected = expected_ids(&events);
    enqueue_all(&url, &queue, &events).await;
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--broker",
        url.as_str(),
        "--queue",
        queue.as_str(),
        "--rate-limit",
        "1500/s",
        "--batch-size",
        "200",
        "--visibility-timeout",
        "2s",
    ];
    let mut first = WorkerProc::start(data.path(), &flags);
    assert!(
        wait_until(Duration::from_secs(60), || stored_ids(data.path()).len()
            >= 600),
        "first worker made no progress:\n{}",
        first.log_text()
    );
    first.kill9();
    let at_kill = stored_ids(data.path()).len();
    assert!(at_kill < 3000, "killed mid-stream ({at_kill} stored)");
    let mut second = WorkerProc::start(
        data.path(),
        &[
            "--broker",
            url.as_str(),
            "--queue",
            queue.as_str(),
            "--visibility-timeout",
            "2s",
        ],
    );
    let done = wait_until(Duration::from_secs(90), || {
        stored_ids(data.path()).len() >= 3000
    });
    let log = second.log_text();
    assert!(done, "not every event stored after restart; log:\n{log}");
    // The batch the first worker stored but never acknowledged is still pending for it; the
    // second worker claims it once the visibility timeout has passed, finds it stored, and
    // acknowledges it. Only then is the stream empty.
    let mut conn = sync_conn(&url);
    let mut len: u64 = u64::MAX;
    let drained = wait_until(Duration::from_secs(30), || {
        len = redis::cmd("XLEN")
            .arg(format!("geoprov:{queue}"))
            .query(&mut conn)
            .unwrap();
        len == 0
    });
    assert!(drained, "every entry acknowledged and deleted ({len} left)");
    assert_eq!(second.terminate(), Some(0));
    assert_exactly_once(data.path(), &expected, &log);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_worker_survives_a_redis_restart() {
    let Some(mut redis) = OwnRedis::start(&[]) else {
        return;
    };
    let url = redis.url();
    let queue = unique("restart");
    let events = valid_events(4000, "restart");
    let expected = expected_ids(&events);
    enqueue_all(&url, &queue, &events[..3000]).await;
    let data = tempfile::tempdir().unwrap();
    let mut worker = WorkerProc::start(
        data.path(),
        &[
            "--broker",
            url.as_str(),
            "--queue",
            queue.as_str(),
            "--rate-limit",
            "600/s",
            "--batch-size",
            "100",
            "--visibility-timeout",
            "3s",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), || stored_ids(data.path()).len()
            >= 500),
        "no progress before the restart:\n{}",
        worker.log_text()
    );
    redis.restart(Duration::from_secs(2));
    assert!(
        stored_ids(data.path()).len() < 3000,
        "the restart happened mid-stream"
    );
    // More events after the restart, through a fresh producer.
    enqueue_all(&url, &queue, &events[3000..]).await;
    let done = wait_until(Duration::from_secs(120), || {
        stored_ids(data.path()).len() >= 4000
    });
    let log = worker.log_text();
    assert!(
        done,
        "not every event stored after the restart; log:\n{log}"
    );
    assert!(
        log.contains("Broker available again"),
        "the worker saw the outage and recovered by itself; log:\n{log}"
    );
    assert_eq!(worker.terminate(), Some(0), "log:\n{log}");
    assert_exactly_once(data.path(), &expected, &log);
}

/// Make a throwaway CA, a server certificate for 127.0.0.1 and a client certificate with the
/// openssl CLI.
fn make_certs(dir: &Path) -> bool {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=geoprov-test-CA",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf",
        "req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=geoprov-worker",
        "x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile ext.cnf",
    ];
    steps.iter().all(|step| {
        Command::new("openssl")
            .args(step.split_whitespace())
            .current_dir(dir)
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_over_mutual_tls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    if !make_certs(certs.path()) {
        assert!(
            !super::redis_support::required(),
            "openssl could not make test certificates"
        );
        eprintln!("skipped: openssl could not make test certificates");
        return;
    }
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls_port = super::support::free_port().to_string();
    let Some(_redis) = OwnRedis::start(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &p("server.crt"),
        "--tls-key-file",
        &p("server.key"),
        "--tls-ca-cert-file",
        &p("ca.crt"),
        "--tls-auth-clients",
        "yes",
    ]) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let options = BrokerOptions {
        queue: Some("tls".into()),
        tls: TlsFiles {
            ca: Some(certs.path().join("ca.crt")),
            cert: Some(certs.path().join("client.crt")),
            key: Some(certs.path().join("client.key")),
        },
        ..BrokerOptions::default()
    };
    // The server needs a moment to listen.
    let mut opened = Err(String::new());
    for _ in 0..100 {
        match broker::open(&url.parse().unwrap(), &options).await {
            Ok(b) => {
                opened = Ok(b);
                break;
            }
            Err(e) => {
                opened = Err(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let broker = match opened {
        Ok(b) => b,
        Err(e) => panic!("mutual TLS with the private CA and a client cert failed: {e}"),
    };
    let sent = bodies(3, "tls");
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = broker
        .consumer(consumer_options("tls", Duration::from_secs(30)))
        .await
        .unwrap();
    let got = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(), sent);

    // Without the CA, the server's certificate is not trusted.
    let untrusted = BrokerOptions {
        queue: Some("tls".into()),
        ..BrokerOptions::default()
    };
    assert!(
        broker::open(&url.parse().unwrap(), &untrusted)
            .await
            .is_err(),
        "a certificate from an unknown CA must be refused"
    );
    // Without a client certificate, the server refuses us.
    let anonymous = BrokerOptions {
        queue: Some("tls".into()),
        tls: TlsFiles {
            ca: Some(certs.path().join("ca.crt")),
            ..TlsFiles::default()
        },
        ..BrokerOptions::default()
    };
    assert!(
        broker::open(&url.parse().unwrap(), &anonymous)
            .await
            .is_err(),
        "the server requires a client certificate"
    );
    // Half a client identity is a configuration error.
    let half = BrokerOptions {
        tls: TlsFiles {
            cert: Some(certs.path().join("client.crt")),
            ..TlsFiles::default()
        },
        ..BrokerOptions::default()
    };
    assert!(matches!(
        broker::open(&url.parse().unwrap(), &half).await,
        Err(geoprov::broker::BrokerError::Config(_))
    ));
}

//! Native Redis broker (Redis Streams) against a real server: the `Broker` contract (the shared
//! suite), a SIGKILLed worker, a restarted Redis, and TLS (`rediss://`) against a redis-server
//! of the test's own.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use geoprov::broker::{self, BrokerOptions, ConsumerOptions, DeliveryTag, TlsFiles};

use super::redis_support::{
    interrupt_mid_stream, make_certs, redis_traits, redis_url, stored_ids, stores, sync_conn,
    unique, KeyCleanup, OwnRedis, WorkerProc,
};
use super::support::{valid_events, wait_until};
use crate::broker_suite::{broker_suite, Backend, Traits, Wire};

/// A stream of the test's own, with its keys deleted at the end, for the shared suite.
async fn streams_backend() -> Option<Backend> {
    let url = redis_url()?;
    let queue = unique("suite");
    let cleanup = KeyCleanup {
        url: url.clone(),
        patterns: vec![format!("geoprov:{queue}*")],
    };
    Some(Backend {
        url: url.parse().unwrap(),
        options: BrokerOptions {
            queue: Some(queue),
            ..BrokerOptions::default()
        },
        wire: Wire::Native,
        traits: Traits {
            foreign_tag: Some(DeliveryTag::Text("not-an-entry-id".to_owned())),
            // XAUTOCLAIM runs after an empty read (at most 5 s of blocking) or every 3 s.
            ..redis_traits(Duration::from_secs(1), Duration::from_secs(8))
        },
        _cleanup: Box::new(cleanup),
    })
}

broker_suite!(conformance, super::streams_backend);

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
    let both = "--visibility-timeout 2s";
    let throttled = format!("{both} --rate-limit 1500/s --batch-size 200");
    let mut first = WorkerProc::native(data.path(), &url, &queue, &throttled);
    interrupt_mid_stream(data.path(), &mut first, 600, 3000, |w| w.kill9());
    let mut second = WorkerProc::native(data.path(), &url, &queue, both);
    let done = stores(data.path(), 3000, Duration::from_secs(90));
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
    let mut worker = WorkerProc::native(
        data.path(),
        &url,
        &queue,
        "--rate-limit 600/s --batch-size 100 --visibility-timeout 3s",
    );
    interrupt_mid_stream(data.path(), &mut worker, 500, 3000, |_| {
        redis.restart(Duration::from_secs(2));
    });
    // More events after the restart, through a fresh producer.
    enqueue_all(&url, &queue, &events[3000..]).await;
    let done = stores(data.path(), 4000, Duration::from_secs(120));
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

#[tokio::test(flavor = "multi_thread")]
async fn streams_over_mutual_tls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    if let Err(error) = make_certs(certs.path()) {
        crate::support::require_or_skip(&format!(
            "openssl could not make test certificates: {error}"
        ));
        return;
    }
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls_port = super::support::free_port().to_string();
    let Some(_redis) = OwnRedis::start(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &p("server.pem"),
        "--tls-key-file",
        &p("server.key"),
        "--tls-ca-cert-file",
        &p("ca.pem"),
        "--tls-auth-clients",
        "yes",
    ]) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{tls_port}/0");
    let file = |name: &str| Some(certs.path().join(name));
    let with_tls = |tls: TlsFiles| BrokerOptions {
        queue: Some("tls".into()),
        tls,
        ..BrokerOptions::default()
    };
    let options = with_tls(TlsFiles {
        ca: file("ca.pem"),
        cert: file("client.pem"),
        key: file("client.key"),
    });
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
    let sent: Vec<Bytes> = valid_events(3, "tls")
        .into_iter()
        .map(Bytes::from)
        .collect();
    crate::support::enqueue(broker.as_ref(), &sent).await;
    let mut consumer = broker
        .consumer(ConsumerOptions {
            name: unique("tls"),
            ..ConsumerOptions::default()
        })
        .await
        .unwrap();
    let got = consumer
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|d| d.body.clone()).collect::<Vec<_>>(), sent);

    // Without the CA, the server's certificate is not trusted; without a client certificate,
    // the server refuses us.
    let anonymous = TlsFiles {
        ca: file("ca.pem"),
        ..TlsFiles::default()
    };
    for (tls, why) in [
        (
            TlsFiles::default(),
            "a certificate from an unknown CA must be refused",
        ),
        (anonymous, "the server requires a client certificate"),
    ] {
        let refused = broker::open(&url.parse().unwrap(), &with_tls(tls)).await;
        assert!(refused.is_err(), "{why}");
    }
    // Half a client identity is a configuration error.
    let half = with_tls(TlsFiles {
        cert: file("client.pem"),
        ..TlsFiles::default()
    });
    assert!(matches!(
        broker::open(&url.parse().unwrap(), &half).await,
        Err(geoprov::broker::BrokerError::Config(_))
    ));
}

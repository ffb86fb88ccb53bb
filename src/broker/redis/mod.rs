//! Redis, two ways: native Redis Streams ([`RedisStreamsBroker`], `streams`) and Celery's kombu
//! lists ([`RedisCeleryBroker`], `celery`, with kombu's unacked bookkeeping in `unacked`), plus
//! Celery's result backend ([`RedisCeleryResults`], `results`).
//!
//! This module holds what they share: connecting (plain or TLS through rustls, with automatic
//! reconnection), classifying Redis errors, reading stream entries, and the dead-letter stream
//! (`dead_letters`).
//!
//! Not for: anything about streams or kombu lists themselves (see `streams` and `celery`).

mod celery;
mod dead_letters;
mod results;
mod streams;
mod unacked;

pub use celery::{
    RedisCeleryBroker, RedisCeleryConsumer, RedisCeleryProducer, DEFAULT_CELERY_QUEUE,
};
pub use results::RedisCeleryResults;
pub use streams::{
    RedisStreamsBroker, RedisStreamsConsumer, RedisStreamsProducer, DEFAULT_QUEUE, GROUP,
};

use std::time::Duration;

use chrono::Utc;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Value};

use super::{BrokerError, DeliveryTag, TlsFiles};
use crate::url::BrokerUrl;

/// Build a client for `url`, with the CA and client certificate from `tls` for `rediss://`.
fn client(url: &BrokerUrl, tls: &TlsFiles) -> Result<redis::Client, BrokerError> {
    let bad_url = |e: RedisError| BrokerError::Config(format!("broker URL '{url}': {e}"));
    if tls.is_empty() {
        return redis::Client::open(url.as_str()).map_err(bad_url);
    }
    if !url.is_tls() {
        return Err(BrokerError::Config(
            "--tls-ca/--tls-cert/--tls-key need a rediss:// broker URL".into(),
        ));
    }
    let root_cert = tls.read_ca()?;
    let client_tls = tls.read_identity()?.map(|identity| redis::ClientTlsConfig {
        client_cert: identity.cert,
        client_key: identity.key,
    });
    redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(bad_url)
}

/// A multiplexed connection that reconnects by itself after the server restarts. Each
/// consumer gets its own, because a blocking read (XREADGROUP BLOCK) holds its connection.
async fn connect(client: &redis::Client) -> Result<ConnectionManager, BrokerError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(5))
        .set_response_timeout(Duration::from_secs(30))
        .set_number_of_retries(3)
        .set_factor(100)
        .set_max_delay(2000);
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(map_err)
}

/// Redis error → [`BrokerError`]: connection trouble and a server still loading its data are
/// transient, everything else is a protocol error.
fn map_err(e: RedisError) -> BrokerError {
    let transient = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError | ErrorKind::TryAgain | ErrorKind::ClusterDown
        )
        || e.code() == Some("MASTERDOWN");
    if transient {
        BrokerError::Unavailable(format!("redis: {e}"))
    } else {
        BrokerError::Protocol(format!("redis: {e}"))
    }
}

/// Wall-clock seconds since the epoch as a float, the score kombu writes.
fn now_secs() -> f64 {
    let now = Utc::now();
    let micros = now.timestamp_micros();
    #[allow(clippy::cast_precision_loss)]
    let secs = micros as f64 / 1e6;
    secs
}

/// Milliseconds of a duration as u64, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Delivery tags as the text Redis knows them by.
fn tag_texts(tags: &[DeliveryTag]) -> Vec<String> {
    tags.iter()
        .map(|t| match t {
            DeliveryTag::Text(s) => s.clone(),
            DeliveryTag::Int(n) => n.to_string(),
        })
        .collect()
}

/// One stream entry: id and field/value pairs.
type Entry = (String, Vec<(String, Vec<u8>)>);

/// Parse an XRANGE / XREADGROUP / XAUTOCLAIM entry list.
fn parse_entries(value: &Value) -> Vec<Entry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { continue };
        let (Some(id), Some(fields)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let Some(id) = value_text(id) else { continue };
        let mut kv = Vec::new();
        if let Value::Array(fields) = fields {
            for chunk in fields.chunks(2) {
                if let [k, v] = chunk {
                    if let (Some(k), Some(v)) = (value_text(k), value_bytes(v)) {
                        kv.push((k, v));
                    }
                }
            }
        }
        out.push((id, kv));
    }
    out
}

/// A bulk or simple string as text.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A bulk or simple string as bytes.
fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// The value of field `name` of an entry.
fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

//! What the two Redis backends share: connecting (plain or TLS through rustls, with automatic
//! reconnection), classifying Redis errors, and the dead-letter stream.
//!
//! Not for: anything about streams or kombu lists themselves (see `redis_streams` and
//! `redis_celery`).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Value};

use super::{BrokerError, DeadLetter, DeadLetterQueue, TlsFiles};
use crate::url::{redact_url, BrokerUrl};

/// Build a client for `url`, with the CA and client certificate from `tls` for `rediss://`.
pub(crate) fn client(url: &str, tls: &TlsFiles) -> Result<redis::Client, BrokerError> {
    let bad_url =
        |e: RedisError| BrokerError::Config(format!("broker URL '{}': {e}", redact_url(url)));
    let has_tls_files = tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some();
    if !has_tls_files {
        return redis::Client::open(url).map_err(bad_url);
    }
    if !BrokerUrl::Redis(url.to_owned()).is_tls() {
        return Err(BrokerError::Config(
            "--tls-ca/--tls-cert/--tls-key need a rediss:// broker URL".into(),
        ));
    }
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            BrokerError::Config(format!(
                "cannot read the TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    let root_cert = match &tls.ca {
        Some(path) => Some(read(path, "CA file")?),
        None => None,
    };
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert, "client certificate")?,
            client_key: read(key, "client key")?,
        }),
        (None, None) => None,
        _ => {
            return Err(BrokerError::Config(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ))
        }
    };
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(bad_url)
}

/// A multiplexed connection that reconnects by itself after the server restarts. Each
/// consumer gets its own, because a blocking read (XREADGROUP BLOCK) holds its connection.
pub(crate) async fn connect(client: &redis::Client) -> Result<ConnectionManager, BrokerError> {
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
pub(crate) fn map_err(e: RedisError) -> BrokerError {
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
pub(crate) fn now_secs() -> f64 {
    let now = Utc::now();
    let micros = now.timestamp_micros();
    #[allow(clippy::cast_precision_loss)]
    let secs = micros as f64 / 1e6;
    secs
}

/// Milliseconds of a duration as u64, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where `dlq replay` puts a dead letter's body back.
#[derive(Debug, Clone)]
pub(crate) enum ReplayTarget {
    /// XADD the body (field `body`) to this stream.
    Stream(String),
    /// LPUSH the body to this list (kombu's queue, so it joins the back of the FIFO).
    List(String),
}

/// Add one dead letter (fields `body`, `reason`, `attempts`, `time`) to a pipeline.
pub(crate) fn add_dead_letter(
    pipe: &mut redis::Pipeline,
    dead_key: &str,
    body: &[u8],
    reason: &str,
    attempts: u32,
) {
    pipe.cmd("XADD")
        .arg(dead_key)
        .arg("*")
        .arg("body")
        .arg(body)
        .arg("reason")
        .arg(reason)
        .arg("attempts")
        .arg(attempts)
        .arg("time")
        .arg(Utc::now().to_rfc3339())
        .ignore();
}

/// The dead-letter stream `<key>:dead`: one entry per dead letter, oldest first.
pub(crate) struct RedisDeadLetters {
    pub(crate) conn: ConnectionManager,
    pub(crate) dead_key: String,
    pub(crate) target: ReplayTarget,
}

/// One stream entry: id and field/value pairs.
pub(crate) type Entry = (String, Vec<(String, Vec<u8>)>);

/// Parse an XRANGE / XREADGROUP / XAUTOCLAIM entry list.
pub(crate) fn parse_entries(value: &Value) -> Vec<Entry> {
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
pub(crate) fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A bulk or simple string as bytes.
pub(crate) fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

/// The value of field `name` of an entry.
pub(crate) fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn to_dead_letter((id, fields): Entry) -> DeadLetter {
    let text = |name: &str| field(&fields, name).map(|v| String::from_utf8_lossy(v).into_owned());
    DeadLetter {
        body: Bytes::from(field(&fields, "body").unwrap_or_default().to_vec()),
        reason: text("reason").unwrap_or_default(),
        attempts: text("attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or_default(),
        dead_lettered_at: text("time")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
        id,
    }
}

impl RedisDeadLetters {
    async fn range(&self, start: &str, limit: usize) -> Result<Vec<Entry>, BrokerError> {
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd("XRANGE")
            .arg(&self.dead_key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(parse_entries(&value))
    }

    /// Every entry, or those ids.
    async fn entries(&self, ids: Option<&[String]>) -> Result<Vec<Entry>, BrokerError> {
        match ids {
            Some(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    let mut conn = self.conn.clone();
                    let value: Value = redis::cmd("XRANGE")
                        .arg(&self.dead_key)
                        .arg(id)
                        .arg(id)
                        .query_async(&mut conn)
                        .await
                        .map_err(map_err)?;
                    out.extend(parse_entries(&value));
                }
                Ok(out)
            }
            None => {
                let mut out: Vec<Entry> = Vec::new();
                let mut start = "-".to_string();
                loop {
                    let page = self.range(&start, 500).await?;
                    let Some((last, _)) = page.last() else { break };
                    start = format!("({last}");
                    let full = page.len() == 500;
                    out.extend(page);
                    if !full {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }
}

#[async_trait]
impl DeadLetterQueue for RedisDeadLetters {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        Ok(self
            .range("-", limit.max(1))
            .await?
            .into_iter()
            .map(to_dead_letter)
            .collect())
    }

    async fn replay(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        let entries = self.entries(ids).await?;
        let mut replayed = 0u64;
        for chunk in entries.chunks(200) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (id, fields) in chunk {
                let body = field(fields, "body").unwrap_or_default();
                match &self.target {
                    ReplayTarget::Stream(key) => {
                        pipe.cmd("XADD").arg(key).arg("*").arg("body").arg(body);
                    }
                    ReplayTarget::List(key) => {
                        pipe.cmd("LPUSH").arg(key).arg(body);
                    }
                }
                pipe.ignore();
                pipe.cmd("XDEL").arg(&self.dead_key).arg(id).ignore();
            }
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn).await.map_err(map_err)?;
            replayed += chunk.len() as u64;
        }
        Ok(replayed)
    }

    async fn purge(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        let mut conn = self.conn.clone();
        match ids {
            None => {
                let (n, _): (u64, i64) = redis::pipe()
                    .atomic()
                    .cmd("XLEN")
                    .arg(&self.dead_key)
                    .cmd("DEL")
                    .arg(&self.dead_key)
                    .query_async(&mut conn)
                    .await
                    .map_err(map_err)?;
                Ok(n)
            }
            Some([]) => Ok(0),
            Some(ids) => redis::cmd("XDEL")
                .arg(&self.dead_key)
                .arg(ids)
                .query_async(&mut conn)
                .await
                .map_err(map_err),
        }
    }

    async fn count(&self) -> Result<u64, BrokerError> {
        let mut conn = self.conn.clone();
        redis::cmd("XLEN")
            .arg(&self.dead_key)
            .query_async(&mut conn)
            .await
            .map_err(map_err)
    }
}

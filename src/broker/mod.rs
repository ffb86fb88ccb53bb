//! Brokers: where events wait between the pipeline that emits them and the worker that stores
//! them. Emitting is an enqueue into a durable broker, never a database write.
//!
//! Not for: decoding payloads (see `event`), or deciding retry vs dead letter (see `worker`).
//!
//! Backends: [`embedded::EmbeddedBroker`] (an on-disk queue under the data dir),
//! [`redis_streams::RedisStreamsBroker`] (native Redis Streams) and
//! [`redis_celery::RedisCeleryBroker`] (Celery/kombu lists on Redis). The URL and
//! [`BrokerOptions`] pick one at run time through [`open`].

pub mod embedded;
pub mod redis_celery;
mod redis_common;
pub mod redis_streams;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

/// What went wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker cannot be reached or is busy right now; retrying later will work.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The URL or options are wrong; retrying will not help.
    #[error("broker configuration: {0}")]
    Config(String),
    /// The broker refused or failed the request.
    #[error("broker error: {0}")]
    Protocol(String),
}

impl BrokerError {
    /// True when the same request may succeed later without any change.
    pub fn is_transient(&self) -> bool {
        matches!(self, BrokerError::Unavailable(_))
    }
}

/// Identifies a delivery to the consumer that received it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeliveryTag {
    /// A numeric id (embedded queue row id, AMQP delivery tag).
    Int(u64),
    /// A textual id (Redis stream entry id, kombu delivery tag).
    Text(String),
}

/// A message handed to the worker. It stays owned by the consumer until it is acknowledged,
/// retried or dead-lettered; if the worker dies first, the broker redelivers it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// How to acknowledge this delivery.
    pub tag: DeliveryTag,
    /// The message bytes exactly as the producer sent them.
    pub body: Bytes,
    /// 1 on first delivery; counts every delivery including redeliveries after a crash.
    pub attempt: u32,
}

/// A message that could not be stored, kept with its original bytes and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// Broker-specific id, used by `dlq replay --id`.
    pub id: String,
    /// The original message bytes, as UTF-8 where they are (lossy otherwise).
    #[serde(serialize_with = "serialize_lossy")]
    pub body: Bytes,
    /// A human-readable reason.
    pub reason: String,
    /// How many deliveries were attempted.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
}

fn serialize_lossy<S: serde::Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

/// Puts messages on the broker.
#[async_trait]
pub trait Producer: Send + Sync {
    /// Durably enqueue every body, in order. MUST NOT return `Ok` before the broker holds them
    /// durably (fsynced file, publisher confirm, ...).
    async fn enqueue(&self, bodies: &[Bytes]) -> Result<(), BrokerError>;
}

/// Takes messages from the broker on behalf of one worker task.
///
/// Contract: a delivery MUST stay invisible to other consumers until it is acked, retried or
/// dead-lettered, or until the visibility timeout passes without [`Consumer::extend`]; after that
/// it MUST be delivered again with a higher `attempt`.
#[async_trait]
pub trait Consumer: Send {
    /// Wait up to `wait` for messages and return between 0 and `max` of them.
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError>;
    /// Forget these deliveries for good. The worker MUST call this only after the batch holding
    /// them is committed in the store.
    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError>;
    /// Keep holding these deliveries (reset their visibility timeout), e.g. during a store outage.
    async fn extend(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError>;
    /// Give these deliveries back, to be delivered again after `delay`.
    async fn retry_later(
        &mut self,
        tags: &[DeliveryTag],
        delay: Duration,
    ) -> Result<(), BrokerError>;
    /// Move deliveries to the dead letters with their original bytes and a reason, and ack them,
    /// atomically where the broker allows.
    async fn dead_letter(&mut self, items: &[(Delivery, String)]) -> Result<(), BrokerError>;
}

/// Lists, replays and purges a broker's dead letters.
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    /// Up to `limit` dead letters, oldest first.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError>;
    /// Put dead letters back on the queue (all, or those ids); returns how many.
    async fn replay(&self, ids: Option<&[String]>) -> Result<u64, BrokerError>;
    /// Delete dead letters (all, or those ids); returns how many.
    async fn purge(&self, ids: Option<&[String]>) -> Result<u64, BrokerError>;
    /// How many dead letters there are.
    async fn count(&self) -> Result<u64, BrokerError>;
}

/// Options every consumer honours.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// How long a delivery stays invisible before it is redelivered. Defaults to 30s.
    pub visibility_timeout: Duration,
    /// A name for this consumer, unique per process and task (used in logs and by brokers with
    /// consumer groups).
    pub name: String,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            name: format!("geoprov-{}", std::process::id()),
        }
    }
}

/// A connected broker: a factory for producers, consumers and the dead-letter queue.
#[async_trait]
pub trait Broker: Send + Sync {
    /// A producer sharing this broker's connection(s).
    async fn producer(&self) -> Result<Arc<dyn Producer>, BrokerError>;
    /// A new consumer.
    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, BrokerError>;
    /// The dead-letter queue.
    async fn dead_letters(&self) -> Result<Arc<dyn DeadLetterQueue>, BrokerError>;
    /// How many messages wait (ready + in flight), where the broker can tell cheaply.
    async fn depth(&self) -> Result<Option<u64>, BrokerError>;
}

/// Files for TLS connections (`rediss://`): a CA bundle to trust instead of the system roots,
/// and a client certificate and key for mutual TLS. All PEM.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificate(s) to trust. Defaults to the webpki roots.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (mutual TLS); needs `key` too.
    pub cert: Option<std::path::PathBuf>,
    /// Client private key (mutual TLS); needs `cert` too.
    pub key: Option<std::path::PathBuf>,
}

/// Everything [`open`] needs besides the URL.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Directory of the embedded queue.
    pub data_dir: std::path::PathBuf,
    /// Queue name. Defaults to `geoprov` (native) or `celery` (`celery`).
    pub queue: Option<String>,
    /// Read and write Celery protocol messages (kombu lists on Redis) instead of native events.
    pub celery: bool,
    /// The Celery task to process. Defaults to [`crate::celery::DEFAULT_TASK_NAME`].
    pub celery_task: Option<String>,
    /// kombu's `global_keyprefix` transport option: prefixes every Redis key. Defaults to none.
    pub key_prefix: Option<String>,
    /// TLS files for `rediss://`.
    pub tls: TlsFiles,
}

impl BrokerOptions {
    /// Options for the embedded broker under `data_dir`, everything else default.
    pub fn new(data_dir: &std::path::Path) -> Self {
        BrokerOptions {
            data_dir: data_dir.to_path_buf(),
            ..BrokerOptions::default()
        }
    }
}

/// Open the broker a URL names: `embedded` (an on-disk queue under `options.data_dir`),
/// `redis://` / `rediss://` (Redis Streams, or kombu lists when `options.celery` is set).
pub async fn open(url: &str, options: &BrokerOptions) -> Result<Arc<dyn Broker>, BrokerError> {
    if url == "embedded" {
        if options.celery {
            return Err(BrokerError::Config(
                "--celery needs a Celery broker: use --broker redis://host:port/db".into(),
            ));
        }
        let broker = embedded::EmbeddedBroker::open(&options.data_dir.join("queue.db")).await?;
        return Ok(Arc::new(broker));
    }
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        if options.celery {
            let broker = redis_celery::RedisCeleryBroker::open(url, options).await?;
            return Ok(Arc::new(broker));
        }
        let broker = redis_streams::RedisStreamsBroker::open(url, options).await?;
        return Ok(Arc::new(broker));
    }
    Err(BrokerError::Config(format!(
        "unsupported broker URL '{}': expected 'embedded', redis://... or rediss://...",
        crate::config::redact_url(url)
    )))
}

//! Brokers: where events wait between the pipeline that emits them and the worker that stores
//! them. Emitting is an enqueue into a durable broker, never a database write.
//!
//! Not for: decoding payloads (see `event`), or deciding retry vs dead letter (see `worker`).
//!
//! Backends: [`embedded::EmbeddedBroker`] (an on-disk queue under the data dir),
//! [`redis::RedisStreamsBroker`] (native Redis Streams),
//! [`redis::RedisCeleryBroker`] (Celery/kombu lists on Redis) and
//! [`amqp::AmqpBroker`] (RabbitMQ, native or Celery). The URL and [`BrokerOptions`] pick one at
//! run time through [`open`].

pub mod amqp;
pub mod embedded;
pub mod redis;
pub mod results;

pub use results::ResultBackend;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::url::BrokerUrl;

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
    /// Transport metadata that travels beside the body, for decoders that need more than the
    /// bytes (a Celery task on RabbitMQ keeps its name and id in AMQP headers). `None` where
    /// the body says everything (embedded, Redis).
    pub properties: Option<Arc<MessageProperties>>,
}

/// The AMQP properties of a delivery that a decoder may need, headers as JSON.
///
/// `Debug` lists the header names only: Celery's `argsrepr` header repeats the task's `db_uri`.
#[derive(Clone, Default)]
pub struct MessageProperties {
    /// The `content_type` property.
    pub content_type: Option<String>,
    /// The `content_encoding` property.
    pub content_encoding: Option<String>,
    /// The `application_headers` table as a JSON object (void values are `null`).
    pub headers: Option<serde_json::Value>,
    /// The `priority` property.
    pub priority: Option<u8>,
    /// The broker's own delivery tag on its channel.
    pub delivery_tag: Option<u64>,
    /// The broker's `redelivered` flag.
    pub redelivered: bool,
}

impl std::fmt::Debug for MessageProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .headers
            .as_ref()
            .and_then(serde_json::Value::as_object)
            .map(|h| h.keys().map(String::as_str).collect())
            .unwrap_or_default();
        f.debug_struct("MessageProperties")
            .field("content_type", &self.content_type)
            .field("content_encoding", &self.content_encoding)
            .field("header_names", &names)
            .field("priority", &self.priority)
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .finish()
    }
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

/// Event `n` of a slice, parsed as the payload of a Celery task message (the Celery producers
/// publish what a Python client's `.delay(payload)` would).
pub(crate) fn celery_payload(
    n: usize,
    body: &[u8],
) -> Result<crate::event::python_json::PyValue, BrokerError> {
    crate::event::python_json::parse(body).map_err(|e| {
        BrokerError::Protocol(format!(
            "event {n} of the slice is not JSON, cannot wrap it in a Celery message: {}",
            e.reason()
        ))
    })
}

/// Options every consumer honours.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// How long a delivery stays invisible before it is redelivered. Defaults to 30s.
    pub visibility_timeout: Duration,
    /// A name for this consumer, unique per process and task (used in logs and by brokers with
    /// consumer groups).
    pub name: String,
    /// Most unacknowledged deliveries the broker may push ahead (AMQP `basic.qos`); the worker
    /// sets its batch size. Defaults to 1000.
    pub prefetch: u16,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            name: format!("geoprov-{}", std::process::id()),
            prefetch: 1000,
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

/// Files for TLS connections (`rediss://`, `amqps://`): a CA bundle to trust instead of the system roots,
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

impl TlsFiles {
    /// True when no file is given (a `rediss://` or `amqps://` URL then trusts the webpki roots).
    pub(crate) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The CA file's bytes, if one is given.
    pub(crate) fn read_ca(&self) -> Result<Option<Vec<u8>>, BrokerError> {
        self.ca
            .as_deref()
            .map(|path| read_tls_file(path, "CA file"))
            .transpose()
    }

    /// The client certificate's and key's bytes, if given. One without the other is a
    /// configuration error.
    pub(crate) fn read_identity(&self) -> Result<Option<ClientIdentity>, BrokerError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(ClientIdentity {
                cert: read_tls_file(cert, "client certificate")?,
                key: read_tls_file(key, "client key")?,
            })),
            (None, None) => Ok(None),
            _ => Err(BrokerError::Config(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            )),
        }
    }
}

/// A client certificate and its private key, as read from [`TlsFiles`] (PEM bytes).
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    /// The certificate.
    pub(crate) cert: Vec<u8>,
    /// Its private key.
    pub(crate) key: Vec<u8>,
}

/// Read one TLS file; a file that cannot be read is a configuration error.
fn read_tls_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| {
        BrokerError::Config(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

/// Everything [`open`] needs besides the URL.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// The embedded queue's file ([`crate::config::queue_db_path`] of the data dir).
    pub embedded_queue: std::path::PathBuf,
    /// Queue name. Defaults to `geoprov` (native) or `celery` (`celery`).
    pub queue: Option<String>,
    /// Read and write Celery protocol messages (kombu lists on Redis, Celery's queue on
    /// RabbitMQ) instead of native events.
    pub celery: bool,
    /// The Celery task to process. Defaults to [`crate::celery::DEFAULT_TASK_NAME`].
    pub celery_task: Option<String>,
    /// kombu's `global_keyprefix` transport option: prefixes every Redis key. Defaults to none.
    pub key_prefix: Option<String>,
    /// TLS files for `rediss://` and `amqps://`.
    pub tls: TlsFiles,
}

impl BrokerOptions {
    /// Options for the embedded broker of `data_dir`, everything else default.
    pub fn new(data_dir: &std::path::Path) -> Self {
        BrokerOptions {
            embedded_queue: crate::config::queue_db_path(data_dir),
            ..BrokerOptions::default()
        }
    }
}

/// Open the broker a URL names: `embedded` (the on-disk queue `options.embedded_queue`),
/// `redis://` / `rediss://` (Redis Streams, or kombu lists when `options.celery` is set),
/// `amqp://` / `amqps://` (RabbitMQ: geoprov's durable queue, or Celery's queue when
/// `options.celery` is set).
pub async fn open(
    url: &BrokerUrl,
    options: &BrokerOptions,
) -> Result<Arc<dyn Broker>, BrokerError> {
    match url {
        BrokerUrl::Embedded => {
            if options.celery {
                return Err(BrokerError::Config(
                "--celery needs a Celery broker: use --broker redis://host:port/db or amqp://..."
                    .into(),
            ));
            }
            Ok(Arc::new(
                embedded::EmbeddedBroker::open(&options.embedded_queue).await?,
            ))
        }
        BrokerUrl::Redis(_) if options.celery => Ok(Arc::new(
            redis::RedisCeleryBroker::open(url, options).await?,
        )),
        BrokerUrl::Redis(_) => Ok(Arc::new(
            redis::RedisStreamsBroker::open(url, options).await?,
        )),
        BrokerUrl::Amqp(_) => Ok(Arc::new(amqp::AmqpBroker::open(url, options).await?)),
    }
}

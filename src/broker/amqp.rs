//! RabbitMQ (AMQP 0-9-1, through lapin on the tokio runtime): geoprov's own durable queue, or
//! the queue a Python Celery 5 application publishes to (`--celery`,
//! `shared/docs/celery-wire.md` §3).
//!
//! Not for: decoding Celery task messages (that is [`crate::celery`], called by the worker's
//! [`crate::worker::CeleryDecoder`] with the AMQP headers this module puts in
//! [`Delivery::properties`]); deciding retry vs dead letter (see [`crate::worker`]).
//!
//! # Queues
//!
//! | queue | mode | declared as | what |
//! |---|---|---|---|
//! | `geoprov.<queue>` (default `geoprov.geoprov`) | native | durable, no arguments | the events |
//! | `<queue>` (default `celery`) | `--celery` | **exactly as Celery does, or passively** | Celery's task messages |
//! | `geoprov.<queue>.delay` | both | durable, `x-dead-letter-exchange ""`, `x-dead-letter-routing-key` = the main queue | messages waiting out a per-message TTL (`expiration`) |
//! | `geoprov.<queue>.dead` | both | durable, no arguments | dead letters |
//!
//! In Celery mode the queue is first declared **passively**. Only when it does not exist is it
//! created the way Celery itself would (exchange `<queue>`, direct, durable; queue `<queue>`,
//! durable, arguments `{}`; a binding with key `<queue>`). It is never declared with other
//! arguments: a queue Celery created as a quorum queue or with `x-max-priority` is consumed
//! as it is, and a `406 PRECONDITION_FAILED - inequivalent arg` cannot happen.
//!
//! # Publishing
//!
//! Every publish (enqueue, retry, dead letter, replay) goes through a channel in
//! publisher-confirm mode with `mandatory` set, persistent (`delivery_mode` 2): a slice is
//! published pipelined, then every confirm is awaited, and `Ok` means RabbitMQ confirmed every
//! message as routed to a queue.
//!
//! # Consuming
//!
//! Each consumer has a connection of its own, `basic.qos(prefetch)` (the worker's batch size)
//! and a manual-ack `basic.consume`. Acknowledgements use `multiple` for the run of tags below
//! every tag still held, and single acks for the rest. If the connection or channel dies, the
//! next `receive` reconnects; acks for deliveries of the dead channel are dropped (RabbitMQ has
//! already requeued them, and the store dedupes their redelivery by `event_id`).
//!
//! `attempt` = the `x-geoprov-attempts` header (1 when absent) + 1 if RabbitMQ's `redelivered`
//! bit is set.
//!
//! # Holding and retrying: no leases in AMQP
//!
//! AMQP has no visibility timeout: an unacknowledged delivery stays with its channel until it
//! is acked or rejected, or until the channel closes (then RabbitMQ requeues it with
//! `redelivered`). [`Consumer::extend`] is therefore a no-op, and safe: nothing is redelivered
//! to anyone else while the channel lives. The bound is RabbitMQ's `consumer_timeout` (30 min
//! by default since 3.8.15): a delivery held longer makes the server close the channel with
//! `PRECONDITION_FAILED`, the messages are requeued and redelivered, and the worker reconnects.
//! A store outage longer than that costs a redelivery, never a loss.
//!
//! [`Consumer::retry_later`] never holds: it re-publishes a copy (same body bytes, same
//! properties and headers, `x-geoprov-attempts` + 1) with confirms, then acks the original.
//! With a zero delay the copy goes straight back to the main queue (its tail); otherwise to
//! `geoprov.<queue>.delay` with `expiration` = the delay in milliseconds, and RabbitMQ
//! dead-letters it back to the main queue when it expires (it drops the `expiration` then, and
//! adds an `x-death` header). This is how a Celery task's future `eta` is honoured: it is never
//! persisted before it. A TTL only expires at the head of a queue, so a copy may wait longer
//! than its delay behind one with a longer delay: the delay is a lower bound.
//!
//! # Dead letters, policy-free
//!
//! [`Consumer::dead_letter`] publishes the original body with its original properties to
//! `geoprov.<queue>.dead` with the headers `x-geoprov-reason`, `x-geoprov-attempts`,
//! `x-geoprov-dead-lettered-at` (RFC 3339) and `x-geoprov-id` (a UUID, the id `dlq replay --id`
//! takes), waits for the confirm, then acks the original. No RabbitMQ policy or queue argument
//! is needed, so Celery's queue keeps its arguments.
//!
//! The dead-letter queue is browsed with `basic.get` (no auto-ack) on a channel of its own:
//! `list` takes up to `limit` messages and then requeues them all (`basic.nack` multiple,
//! requeue), so they keep their order; a `list` running while another one or a replay holds
//! messages does not see those. `replay` re-publishes (confirmed) to the main queue with the
//! `x-geoprov-*` headers removed (a fresh retry budget) and acks each dead letter; `purge`
//! without ids is `queue.purge`, with ids it acks those and requeues the rest. `count` and the
//! broker's `depth` are the `message_count` of a passive declare (ready messages: main + delay
//! queue for `depth`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use super::amqp_common::{
    self, close_later, confirm_channel, header_text, header_u32, is_not_found, map_err,
    publish_confirmed, table_to_json, text_value, Endpoint, Link, Outgoing,
};
use super::{
    Broker, BrokerError, BrokerOptions, Consumer, ConsumerOptions, DeadLetter, DeadLetterQueue,
    Delivery, DeliveryTag, MessageProperties, Producer,
};
use crate::event::python_json;

/// Default queue name in native mode (the RabbitMQ queue is `geoprov.geoprov`).
pub const DEFAULT_QUEUE: &str = "geoprov";
/// Default queue name in Celery mode, as Celery's.
pub const DEFAULT_CELERY_QUEUE: &str = "celery";

/// Header: deliveries the next delivery will count (set on every re-publish).
pub const HEADER_ATTEMPTS: &str = "x-geoprov-attempts";
/// Header: why a message was dead-lettered.
pub const HEADER_REASON: &str = "x-geoprov-reason";
/// Header: when a message was dead-lettered (RFC 3339).
pub const HEADER_DEAD_AT: &str = "x-geoprov-dead-lettered-at";
/// Header: the dead letter's id (a UUID).
pub const HEADER_DEAD_ID: &str = "x-geoprov-id";

/// Dead letters moved per round of `replay` / `purge --id`.
const PAGE: usize = 500;

/// The queues of one geoprov queue name.
#[derive(Debug, Clone)]
struct Names {
    /// The queue consumed (and published to, through the default exchange).
    main: String,
    /// Messages waiting out a delay.
    delay: String,
    /// Dead letters.
    dead: String,
}

impl Names {
    fn new(queue: &str, celery: bool) -> Names {
        Names {
            main: if celery {
                queue.to_owned()
            } else {
                format!("geoprov.{queue}")
            },
            delay: format!("geoprov.{queue}.delay"),
            dead: format!("geoprov.{queue}.dead"),
        }
    }
}

/// What the queue carries.
#[derive(Debug, Clone)]
enum Mode {
    /// geoprov events as JSON bodies.
    Native,
    /// Celery protocol v2 task messages for this task.
    Celery { task: String },
}

/// A RabbitMQ broker: one shared connection for producing, browsing dead letters and depth,
/// one connection per consumer.
pub struct AmqpBroker {
    link: Arc<Link>,
    names: Names,
    mode: Mode,
}

impl AmqpBroker {
    /// Connect to `url` (`amqp://user:pass@host:port/vhost` or `amqps://...`) and declare the
    /// queues (see the module docs). The queue is `options.queue`, or `geoprov` (native) /
    /// `celery` (`options.celery`).
    pub async fn open(url: &str, options: &BrokerOptions) -> Result<Self, BrokerError> {
        let queue = options.queue.as_deref().unwrap_or(if options.celery {
            DEFAULT_CELERY_QUEUE
        } else {
            DEFAULT_QUEUE
        });
        if queue.is_empty() {
            return Err(BrokerError::Config("--queue must not be empty".into()));
        }
        let endpoint = Endpoint::new(url, &options.tls)?;
        let names = Names::new(queue, options.celery);
        let mode = if options.celery {
            Mode::Celery {
                task: options
                    .celery_task
                    .clone()
                    .unwrap_or_else(|| crate::celery::DEFAULT_TASK_NAME.to_owned()),
            }
        } else {
            Mode::Native
        };
        let broker = AmqpBroker {
            link: Arc::new(Link::new(endpoint)),
            names,
            mode,
        };
        broker.declare().await?;
        Ok(broker)
    }

    /// The queue names: main, delay, dead letters.
    pub fn queue_names(&self) -> (&str, &str, &str) {
        (&self.names.main, &self.names.delay, &self.names.dead)
    }

    async fn declare(&self) -> Result<(), BrokerError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        match self.mode {
            Mode::Native => {
                let ch = self.link.scratch_channel().await?;
                ch.queue_declare(&self.names.main, durable, FieldTable::default())
                    .await
                    .map_err(map_err)?;
                let _ = ch.close(200, "declared").await;
            }
            Mode::Celery { .. } => self.declare_celery_queue().await?,
        }
        let ch = self.link.scratch_channel().await?;
        let mut delay_args = FieldTable::default();
        delay_args.insert("x-dead-letter-exchange".into(), text_value(""));
        delay_args.insert(
            "x-dead-letter-routing-key".into(),
            text_value(&self.names.main),
        );
        ch.queue_declare(&self.names.delay, durable, delay_args)
            .await
            .map_err(map_err)?;
        ch.queue_declare(&self.names.dead, durable, FieldTable::default())
            .await
            .map_err(map_err)?;
        let _ = ch.close(200, "declared").await;
        Ok(())
    }

    /// Celery's queue: passively; created the way Celery would only if it does not exist.
    async fn declare_celery_queue(&self) -> Result<(), BrokerError> {
        let queue = self.names.main.as_str();
        let ch = self.link.scratch_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match ch
            .queue_declare(queue, passive, FieldTable::default())
            .await
        {
            Ok(_) => {
                let _ = ch.close(200, "declared").await;
                return Ok(());
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(map_err(e)),
        }
        // The failed passive declare closed that channel.
        let ch = self.link.scratch_channel().await?;
        ch.exchange_declare(
            queue,
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(map_err)?;
        ch.queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(map_err)?;
        ch.queue_bind(
            queue,
            queue,
            queue,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(map_err)?;
        let _ = ch.close(200, "declared").await;
        tracing::info!(
            message = "Declared the Celery queue as Celery would (it did not exist).",
            queue
        );
        Ok(())
    }
}

/// Ready messages in `queue` (passive declare); 0 if it does not exist.
async fn message_count(link: &Link, queue: &str) -> Result<u64, BrokerError> {
    let ch = link.scratch_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(queue, passive, FieldTable::default())
        .await
    {
        Ok(q) => {
            let _ = ch.close(200, "counted").await;
            Ok(u64::from(q.message_count()))
        }
        Err(e) if is_not_found(&e) => Ok(0),
        Err(e) => Err(map_err(e)),
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn producer(&self) -> Result<Arc<dyn Producer>, BrokerError> {
        Ok(Arc::new(AmqpProducer {
            link: self.link.clone(),
            queue: self.names.main.clone(),
            mode: self.mode.clone(),
        }))
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        let mut consumer = AmqpConsumer {
            endpoint: self.link.endpoint().clone(),
            names: self.names.clone(),
            celery: matches!(self.mode, Mode::Celery { .. }),
            prefetch: options.prefetch.max(1),
            tag: options.name,
            session: None,
            held: HashMap::new(),
            next_id: 1,
        };
        consumer.session().await?;
        Ok(Box::new(consumer))
    }

    async fn dead_letters(&self) -> Result<Arc<dyn DeadLetterQueue>, BrokerError> {
        Ok(Arc::new(AmqpDeadLetters {
            link: self.link.clone(),
            names: self.names.clone(),
        }))
    }

    async fn depth(&self) -> Result<Option<u64>, BrokerError> {
        let main = message_count(&self.link, &self.names.main).await?;
        let delayed = message_count(&self.link, &self.names.delay).await?;
        Ok(Some(main + delayed))
    }
}

/// Publishes to the main queue through the default exchange, persistent, with publisher
/// confirms. In Celery mode each event becomes a task message
/// ([`crate::celery::build_amqp_message`]), as a Python client's `.delay(payload)` would send.
pub struct AmqpProducer {
    link: Arc<Link>,
    queue: String,
    mode: Mode,
}

/// A body and its properties, ready to publish.
struct Prepared {
    body: Vec<u8>,
    properties: BasicProperties,
}

impl AmqpProducer {
    fn prepare(&self, bodies: &[Bytes]) -> Result<Vec<Prepared>, BrokerError> {
        let mut out = Vec::with_capacity(bodies.len());
        for (n, body) in bodies.iter().enumerate() {
            match &self.mode {
                Mode::Native => out.push(Prepared {
                    body: body.to_vec(),
                    properties: BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type(ShortString::from("application/json")),
                }),
                Mode::Celery { task } => {
                    let payload = python_json::parse(body).map_err(|e| {
                        BrokerError::Protocol(format!(
                            "event {n} of the slice is not JSON, cannot wrap it in a Celery \
                             message: {}",
                            e.reason()
                        ))
                    })?;
                    let task_id = uuid::Uuid::new_v4().to_string();
                    let msg = crate::celery::build_amqp_message(&payload, task, &task_id);
                    out.push(Prepared {
                        properties: BasicProperties::default()
                            .with_content_type(msg.content_type.into())
                            .with_content_encoding(msg.content_encoding.into())
                            .with_correlation_id(msg.correlation_id.as_str().into())
                            .with_headers(amqp_common::json_to_table(&msg.headers))
                            .with_delivery_mode(2)
                            .with_priority(0),
                        body: msg.body,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Producer for AmqpProducer {
    async fn enqueue(&self, bodies: &[Bytes]) -> Result<(), BrokerError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let prepared = self.prepare(bodies)?;
        let channel = self.link.channel().await?;
        let messages = prepared
            .iter()
            .map(|p| Outgoing {
                exchange: "",
                routing_key: &self.queue,
                body: &p.body,
                properties: p.properties.clone(),
            })
            .collect();
        publish_confirmed(&channel, messages).await
    }
}

/// A consumer's live connection.
struct Session {
    conn: Connection,
    /// Consumes, acks and (in confirm mode) re-publishes.
    channel: Channel,
    stream: lapin::Consumer,
}

/// A delivery taken and not yet acked, retried or dead-lettered.
struct Held {
    /// RabbitMQ's delivery tag on the session's channel.
    amqp_tag: u64,
    body: Bytes,
    properties: BasicProperties,
    attempt: u32,
}

/// One worker task's consumer: a connection and a manual-ack consumer of its own.
pub struct AmqpConsumer {
    endpoint: Endpoint,
    names: Names,
    celery: bool,
    prefetch: u16,
    /// The consumer tag.
    tag: String,
    session: Option<Session>,
    /// Held deliveries by geoprov's tag ([`DeliveryTag::Int`]), which stays unique across
    /// reconnections (RabbitMQ's restart at 1 on every channel). Cleared when the session dies.
    held: HashMap<u64, Held>,
    next_id: u64,
}

impl AmqpConsumer {
    /// The live session, connecting (connection, confirm-mode channel, qos, consume) if needed.
    async fn session(&mut self) -> Result<&mut Session, BrokerError> {
        let alive = self
            .session
            .as_ref()
            .is_some_and(|s| s.conn.status().connected() && s.channel.status().connected());
        if !alive {
            self.drop_session();
            let conn = self.endpoint.connect().await?;
            let opened = async {
                let channel = confirm_channel(&conn).await?;
                channel
                    .basic_qos(self.prefetch, BasicQosOptions::default())
                    .await
                    .map_err(map_err)?;
                let stream = channel
                    .basic_consume(
                        &self.names.main,
                        &self.tag,
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(map_err)?;
                Ok::<_, BrokerError>((channel, stream))
            };
            // A node that goes down between the handshake and the consume can leave these
            // requests unanswered: bounded, like the connect, so the caller retries.
            let opened = tokio::time::timeout(amqp_common::CONNECT_TIMEOUT, opened)
                .await
                .unwrap_or_else(|_| {
                    Err(BrokerError::Unavailable(format!(
                        "rabbitmq: the consumer channel did not open within {}s",
                        amqp_common::CONNECT_TIMEOUT.as_secs()
                    )))
                });
            match opened {
                Ok((channel, stream)) => {
                    self.session = Some(Session {
                        conn,
                        channel,
                        stream,
                    });
                }
                Err(e) => {
                    close_later(conn);
                    return Err(e);
                }
            }
        }
        self.session
            .as_mut()
            .ok_or_else(|| BrokerError::Unavailable("rabbitmq: no session".into()))
    }

    /// Forget the session (RabbitMQ requeues whatever it held) and every held delivery.
    fn drop_session(&mut self) {
        self.held.clear();
        if let Some(s) = self.session.take() {
            close_later(s.conn);
        }
    }

    /// The session's channel, if there is a live one.
    fn channel(&self) -> Option<Channel> {
        self.session.as_ref().map(|s| s.channel.clone())
    }

    fn take(&mut self, d: lapin::message::Delivery) -> Delivery {
        let headers = d.properties.headers().as_ref();
        let attempt = header_u32(headers, HEADER_ATTEMPTS)
            .unwrap_or(1)
            .max(1)
            .saturating_add(u32::from(d.redelivered));
        let id = self.next_id;
        self.next_id += 1;
        let body = Bytes::from(d.data);
        let properties = self.celery.then(|| {
            Arc::new(MessageProperties {
                content_type: d
                    .properties
                    .content_type()
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                content_encoding: d
                    .properties
                    .content_encoding()
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                headers: headers.map(table_to_json),
                priority: *d.properties.priority(),
                delivery_tag: Some(d.delivery_tag),
                redelivered: d.redelivered,
            })
        });
        self.held.insert(
            id,
            Held {
                amqp_tag: d.delivery_tag,
                body: body.clone(),
                properties: d.properties,
                attempt,
            },
        );
        Delivery {
            tag: DeliveryTag::Int(id),
            body,
            attempt,
            properties,
        }
    }

    /// Ack these held ids: one `multiple` ack for those below every other held tag, single
    /// acks for the rest. Ids not held (a dead session's) are skipped.
    async fn ack_ids(&mut self, ids: &[u64]) -> Result<(), BrokerError> {
        let mut acking: Vec<u64> = ids
            .iter()
            .filter_map(|id| self.held.get(id).map(|h| h.amqp_tag))
            .collect();
        if acking.is_empty() {
            return Ok(());
        }
        let Some(channel) = self.channel() else {
            return Ok(());
        };
        acking.sort_unstable();
        acking.dedup();
        let ids_set: HashSet<u64> = ids.iter().copied().collect();
        let lowest_kept = self
            .held
            .iter()
            .filter(|(id, _)| !ids_set.contains(id))
            .map(|(_, h)| h.amqp_tag)
            .min();
        let split = acking.partition_point(|t| lowest_kept.is_none_or(|k| *t < k));
        let result = async {
            if split > 0 {
                channel
                    .basic_ack(acking[split - 1], BasicAckOptions { multiple: true })
                    .await
                    .map_err(map_err)?;
            }
            for tag in &acking[split..] {
                channel
                    .basic_ack(*tag, BasicAckOptions { multiple: false })
                    .await
                    .map_err(map_err)?;
            }
            Ok::<(), BrokerError>(())
        }
        .await;
        if result.is_err() {
            // The channel is gone: RabbitMQ requeues everything it held.
            self.drop_session();
        } else {
            for id in ids {
                self.held.remove(id);
            }
        }
        result
    }

    /// Publish these (confirmed) on the session's channel, then ack the originals.
    async fn move_then_ack(
        &mut self,
        messages: Vec<(u64, String, Bytes, BasicProperties)>,
    ) -> Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        let Some(channel) = self.channel() else {
            return Ok(());
        };
        let outgoing = messages
            .iter()
            .map(|(_, queue, body, properties)| Outgoing {
                exchange: "",
                routing_key: queue,
                body,
                properties: properties.clone(),
            })
            .collect();
        if let Err(e) = publish_confirmed(&channel, outgoing).await {
            // Not moved: drop the session so that RabbitMQ requeues the originals (a copy that
            // did get through is deduplicated by event_id).
            self.drop_session();
            return Err(e);
        }
        let ids: Vec<u64> = messages.iter().map(|(id, ..)| *id).collect();
        self.ack_ids(&ids).await
    }
}

/// geoprov's ids in these tags.
fn ids_of(tags: &[DeliveryTag]) -> Vec<u64> {
    tags.iter()
        .filter_map(|t| match t {
            DeliveryTag::Int(n) => Some(*n),
            DeliveryTag::Text(s) => s.parse().ok(),
        })
        .collect()
}

/// The properties geoprov re-publishes a message with (retry, dead letter, replay): the
/// original ones, persistent, with `headers` changed by `edit`, and without `expiration` (a
/// dead letter must not vanish with a Celery task's TTL; an expired task is better dead-lettered
/// as such than dropped) and `user_id` (RabbitMQ refuses a `user_id` other than the
/// connection's).
fn with_headers(
    properties: &BasicProperties,
    edit: impl FnOnce(&mut BTreeMap<ShortString, AMQPValue>),
) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    edit(&mut headers);
    let p = properties;
    let mut out = BasicProperties::default()
        .with_headers(FieldTable::from(headers))
        .with_delivery_mode(2);
    let text = |v: &Option<ShortString>| v.clone();
    if let Some(v) = text(p.content_type()) {
        out = out.with_content_type(v);
    }
    if let Some(v) = text(p.content_encoding()) {
        out = out.with_content_encoding(v);
    }
    if let Some(v) = *p.priority() {
        out = out.with_priority(v);
    }
    if let Some(v) = text(p.correlation_id()) {
        out = out.with_correlation_id(v);
    }
    if let Some(v) = text(p.reply_to()) {
        out = out.with_reply_to(v);
    }
    if let Some(v) = text(p.message_id()) {
        out = out.with_message_id(v);
    }
    if let Some(v) = *p.timestamp() {
        out = out.with_timestamp(v);
    }
    if let Some(v) = text(p.kind()) {
        out = out.with_type(v);
    }
    if let Some(v) = text(p.app_id()) {
        out = out.with_app_id(v);
    }
    if let Some(v) = text(p.cluster_id()) {
        out = out.with_cluster_id(v);
    }
    out
}

/// Milliseconds, rounded up, as the text `expiration` wants; at least 1.
fn expiration_ms(delay: Duration) -> String {
    let ms = delay.as_micros().div_ceil(1000).max(1);
    ms.to_string()
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let max = max.max(1);
        let session = self.session().await?;
        let first = match tokio::time::timeout(wait, session.stream.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => {
                self.drop_session();
                return Err(map_err(e));
            }
            Ok(None) => {
                self.drop_session();
                return Err(BrokerError::Unavailable(
                    "rabbitmq: the consumer was cancelled (queue deleted?)".into(),
                ));
            }
        };
        let mut raw = vec![first];
        let mut failed = None;
        while raw.len() < max {
            match session.stream.next().now_or_never() {
                Some(Some(Ok(d))) => raw.push(d),
                Some(Some(Err(e))) => {
                    failed = Some(map_err(e));
                    break;
                }
                Some(None) | None => break,
            }
        }
        if let Some(e) = failed {
            // The channel died under these deliveries; RabbitMQ requeues them.
            self.drop_session();
            return Err(e);
        }
        Ok(raw.into_iter().map(|d| self.take(d)).collect())
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        let ids = ids_of(tags);
        self.ack_ids(&ids).await
    }

    /// A no-op: an unacked delivery is never given to another consumer while this channel
    /// lives (bounded by RabbitMQ's `consumer_timeout`; see the module docs).
    async fn extend(&mut self, _tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn retry_later(
        &mut self,
        tags: &[DeliveryTag],
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let expiration = (!delay.is_zero()).then(|| expiration_ms(delay));
        let target = if expiration.is_some() {
            self.names.delay.clone()
        } else {
            self.names.main.clone()
        };
        let mut messages = Vec::new();
        for id in ids_of(tags) {
            let Some(held) = self.held.get(&id) else {
                continue;
            };
            let next = held.attempt.saturating_add(1);
            let mut properties = with_headers(&held.properties, |h| {
                h.insert(
                    HEADER_ATTEMPTS.into(),
                    AMQPValue::LongLongInt(i64::from(next)),
                );
            });
            if let Some(ms) = &expiration {
                properties = properties.with_expiration(ms.as_str().into());
            }
            messages.push((id, target.clone(), held.body.clone(), properties));
        }
        self.move_then_ack(messages).await
    }

    async fn dead_letter(&mut self, items: &[(Delivery, String)]) -> Result<(), BrokerError> {
        let now = Utc::now().to_rfc3339();
        let mut messages = Vec::new();
        for (delivery, reason) in items {
            let Some(id) = ids_of(std::slice::from_ref(&delivery.tag)).first().copied() else {
                continue;
            };
            let Some(held) = self.held.get(&id) else {
                continue;
            };
            let properties = with_headers(&held.properties, |h| {
                h.insert(HEADER_REASON.into(), text_value(reason));
                h.insert(
                    HEADER_ATTEMPTS.into(),
                    AMQPValue::LongLongInt(i64::from(delivery.attempt)),
                );
                h.insert(HEADER_DEAD_AT.into(), text_value(&now));
                h.insert(
                    HEADER_DEAD_ID.into(),
                    text_value(&uuid::Uuid::new_v4().to_string()),
                );
            });
            messages.push((
                id,
                self.names.dead.clone(),
                delivery.body.clone(),
                properties,
            ));
        }
        self.move_then_ack(messages).await
    }
}

impl Drop for AmqpConsumer {
    /// Close the connection: RabbitMQ requeues whatever is still held (redelivered).
    fn drop(&mut self) {
        self.held.clear();
        if let Some(s) = self.session.take() {
            amqp_common::close_now(s.conn);
        }
    }
}

/// `geoprov.<queue>.dead`, browsed with `basic.get`.
pub struct AmqpDeadLetters {
    link: Arc<Link>,
    names: Names,
}

/// One dead letter as `basic.get` returned it.
struct Fetched {
    amqp_tag: u64,
    letter: DeadLetter,
    properties: BasicProperties,
}

fn to_fetched(d: lapin::message::Delivery) -> Fetched {
    let headers = d.properties.headers().as_ref();
    let id = header_text(headers, HEADER_DEAD_ID)
        .or_else(|| {
            d.properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
        })
        .unwrap_or_else(|| format!("tag-{}", d.delivery_tag));
    let letter = DeadLetter {
        id,
        reason: header_text(headers, HEADER_REASON).unwrap_or_default(),
        attempts: header_u32(headers, HEADER_ATTEMPTS).unwrap_or(0),
        dead_lettered_at: header_text(headers, HEADER_DEAD_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
        body: Bytes::from(d.data),
    };
    Fetched {
        amqp_tag: d.delivery_tag,
        letter,
        properties: d.properties,
    }
}

impl AmqpDeadLetters {
    /// Up to `limit` dead letters, held unacked on `ch`.
    async fn fetch(&self, ch: &Channel, limit: usize) -> Result<Vec<Fetched>, BrokerError> {
        let mut out = Vec::new();
        while out.len() < limit {
            let got = ch
                .basic_get(&self.names.dead, BasicGetOptions { no_ack: false })
                .await
                .map_err(map_err)?;
            let Some(message) = got else { break };
            out.push(to_fetched(message.delivery));
        }
        Ok(out)
    }

    /// Walk every dead letter on a channel of its own: those `ids` names (all when `None`) are
    /// handed to `act` page by page and then acked; the others are requeued at the end.
    async fn sweep(&self, ids: Option<&[String]>, replay: bool) -> Result<u64, BrokerError> {
        let conn_channel = self.link.scratch_channel().await?;
        let ch = conn_channel;
        if replay {
            ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .map_err(map_err)?;
        }
        let wanted: Option<HashSet<&str>> = ids.map(|ids| ids.iter().map(String::as_str).collect());
        let mut moved = 0u64;
        let result = async {
            loop {
                let page = self.fetch(&ch, PAGE).await?;
                if page.is_empty() {
                    break;
                }
                let chosen: Vec<&Fetched> = page
                    .iter()
                    .filter(|f| {
                        wanted
                            .as_ref()
                            .is_none_or(|w| w.contains(f.letter.id.as_str()))
                    })
                    .collect();
                if replay {
                    let outgoing = chosen
                        .iter()
                        .map(|f| Outgoing {
                            exchange: "",
                            routing_key: &self.names.main,
                            body: &f.letter.body,
                            properties: with_headers(&f.properties, |h| {
                                h.retain(|k, _| !k.as_str().starts_with("x-geoprov-"));
                            }),
                        })
                        .collect();
                    publish_confirmed(&ch, outgoing).await?;
                }
                for f in &chosen {
                    ch.basic_ack(f.amqp_tag, BasicAckOptions { multiple: false })
                        .await
                        .map_err(map_err)?;
                }
                moved += chosen.len() as u64;
            }
            Ok::<(), BrokerError>(())
        }
        .await;
        // Requeue what was not chosen (closing the channel would too).
        let _ = ch
            .basic_nack(
                0,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await;
        let _ = ch.close(200, "done").await;
        result.map(|()| moved)
    }
}

#[async_trait]
impl DeadLetterQueue for AmqpDeadLetters {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let ch = self.link.scratch_channel().await?;
        let fetched = self.fetch(&ch, limit.max(1)).await;
        let _ = ch
            .basic_nack(
                0,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await;
        let _ = ch.close(200, "listed").await;
        Ok(fetched?.into_iter().map(|f| f.letter).collect())
    }

    async fn replay(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        if ids.is_some_and(<[String]>::is_empty) {
            return Ok(0);
        }
        self.sweep(ids, true).await
    }

    async fn purge(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        match ids {
            None => {
                let ch = self.link.scratch_channel().await?;
                let n = ch
                    .queue_purge(&self.names.dead, QueuePurgeOptions::default())
                    .await
                    .map_err(map_err);
                let _ = ch.close(200, "purged").await;
                Ok(u64::from(n?))
            }
            Some([]) => Ok(0),
            Some(ids) => self.sweep(Some(ids), false).await,
        }
    }

    async fn count(&self) -> Result<u64, BrokerError> {
        message_count(&self.link, &self.names.dead).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_per_mode() {
        let n = Names::new("geoprov", false);
        assert_eq!(
            (n.main.as_str(), n.delay.as_str(), n.dead.as_str()),
            (
                "geoprov.geoprov",
                "geoprov.geoprov.delay",
                "geoprov.geoprov.dead"
            )
        );
        let c = Names::new("celery", true);
        assert_eq!(
            (c.main.as_str(), c.delay.as_str(), c.dead.as_str()),
            ("celery", "geoprov.celery.delay", "geoprov.celery.dead")
        );
    }

    #[test]
    fn expiration_rounds_up_to_whole_milliseconds() {
        assert_eq!(expiration_ms(Duration::from_micros(1)), "1");
        assert_eq!(expiration_ms(Duration::from_micros(1500)), "2");
        assert_eq!(expiration_ms(Duration::from_secs(3)), "3000");
    }

    #[test]
    fn headers_are_edited_on_a_copy_without_ttl_or_user() {
        let mut t = FieldTable::default();
        t.insert("task".into(), text_value("x"));
        let p = BasicProperties::default()
            .with_headers(t)
            .with_expiration("60000".into())
            .with_user_id("someone".into())
            .with_correlation_id("cid".into())
            .with_priority(3)
            .with_content_type("application/json".into());
        let q = with_headers(&p, |h| {
            h.insert(HEADER_ATTEMPTS.into(), AMQPValue::LongLongInt(2));
        });
        assert_eq!(header_u32(q.headers().as_ref(), HEADER_ATTEMPTS), Some(2));
        assert_eq!(
            header_text(q.headers().as_ref(), "task").as_deref(),
            Some("x")
        );
        assert_eq!(header_u32(p.headers().as_ref(), HEADER_ATTEMPTS), None);
        assert_eq!(q.expiration(), &None);
        assert_eq!(q.user_id(), &None);
        assert_eq!(q.delivery_mode(), &Some(2));
        assert_eq!(q.priority(), &Some(3));
        assert_eq!(
            q.correlation_id().as_ref().map(ShortString::as_str),
            Some("cid")
        );
        assert_eq!(
            q.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
    }
}

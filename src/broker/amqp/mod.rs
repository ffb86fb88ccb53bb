//! RabbitMQ (AMQP 0-9-1, through lapin on the tokio runtime): geoprov's own durable queue, or
//! the queue a Python Celery 5 application publishes to (`--celery`,
//! `shared/docs/celery-wire.md` §3).
//!
//! Not for: decoding Celery task messages (that is [`crate::celery`], called by the worker's
//! [`crate::worker::CeleryDecoder`] with the AMQP headers this module puts in
//! [`Delivery::properties`](crate::broker::Delivery::properties)); deciding retry vs dead letter (see [`crate::worker`]).
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
//!
//! # Files
//!
//! `connection` (endpoint, TLS, the shared reconnecting link), `publish` (confirmed publishing,
//! re-publish properties), `fields` (field tables and JSON), `producer`, `consumer`, `delay`
//! (the delay queue), `celery` (what `--celery` changes) and `dead_letters`.

mod celery;
mod connection;
mod consumer;
mod dead_letters;
mod delay;
mod fields;
mod producer;
mod publish;

pub use consumer::AmqpConsumer;
pub use dead_letters::AmqpDeadLetters;
pub use producer::AmqpProducer;

use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::{
    Broker, BrokerError, BrokerOptions, Consumer, ConsumerOptions, DeadLetterQueue, Producer,
};
use crate::url::BrokerUrl;
use connection::{is_not_found, map_err, Endpoint, Link};

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
    pub async fn open(url: &BrokerUrl, options: &BrokerOptions) -> Result<Self, BrokerError> {
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
            Mode::Celery { .. } => {
                celery::declare_celery_queue(&self.link, &self.names.main).await?
            }
        }
        let ch = self.link.scratch_channel().await?;
        let delay_args = delay::delay_queue_arguments(&self.names.main);
        ch.queue_declare(&self.names.delay, durable, delay_args)
            .await
            .map_err(map_err)?;
        ch.queue_declare(&self.names.dead, durable, FieldTable::default())
            .await
            .map_err(map_err)?;
        let _ = ch.close(200, "declared").await;
        Ok(())
    }
}

/// Ready messages in `queue` (passive declare); 0 if it does not exist.
async fn message_count(link: &Link, queue: &str) -> Result<u64, BrokerError> {
    Ok(passive_declare(link, queue).await?.map_or(0, u64::from))
}

/// Declare `queue` passively on a channel of its own: its ready messages, or `None` if it does
/// not exist.
async fn passive_declare(link: &Link, queue: &str) -> Result<Option<u32>, BrokerError> {
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
            let _ = ch.close(200, "declared").await;
            Ok(Some(q.message_count()))
        }
        // The failed passive declare closed that channel.
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(map_err(e)),
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn producer(&self) -> Result<Arc<dyn Producer>, BrokerError> {
        Ok(Arc::new(AmqpProducer::new(
            self.link.clone(),
            self.names.main.clone(),
            self.mode.clone(),
        )))
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        let consumer = AmqpConsumer::open(
            self.link.endpoint().clone(),
            self.names.clone(),
            matches!(self.mode, Mode::Celery { .. }),
            options,
        )
        .await?;
        Ok(Box::new(consumer))
    }

    async fn dead_letters(&self) -> Result<Arc<dyn DeadLetterQueue>, BrokerError> {
        Ok(Arc::new(AmqpDeadLetters::new(
            self.link.clone(),
            self.names.clone(),
        )))
    }

    async fn depth(&self) -> Result<Option<u64>, BrokerError> {
        let main = message_count(&self.link, &self.names.main).await?;
        let delayed = message_count(&self.link, &self.names.delay).await?;
        Ok(Some(main + delayed))
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
}

//! Consuming from RabbitMQ for one worker task: a connection and a manual-ack consumer of its
//! own, acknowledgements (`multiple` where it can), and giving deliveries back or moving them
//! to the dead letters by re-publishing a copy, confirmed, before acking the original.
//!
//! Not for: browsing the dead letters (see `dead_letters`) or the delay queue's declaration
//! (see `delay`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

use super::connection::{
    close_later, close_now, confirm_channel, map_err, Endpoint, CONNECT_TIMEOUT,
};
use super::fields::{header_u32, text_value};
use super::publish::{publish_confirmed, with_headers, Outgoing};
use super::{celery, delay, Names, HEADER_ATTEMPTS, HEADER_DEAD_AT, HEADER_DEAD_ID, HEADER_REASON};
use crate::broker::{BrokerError, Consumer, ConsumerOptions, Delivery, DeliveryTag};

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
    /// A consumer of `names.main`, connected (its own connection, `basic.qos(prefetch)`, a
    /// manual-ack `basic.consume`) before it is returned.
    pub(super) async fn open(
        endpoint: Endpoint,
        names: Names,
        celery: bool,
        options: ConsumerOptions,
    ) -> Result<Self, BrokerError> {
        let mut consumer = AmqpConsumer {
            endpoint,
            names,
            celery,
            prefetch: options.prefetch.max(1),
            tag: options.name,
            session: None,
            held: HashMap::new(),
            next_id: 1,
        };
        consumer.session().await?;
        Ok(consumer)
    }

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
            let opened = tokio::time::timeout(CONNECT_TIMEOUT, opened)
                .await
                .unwrap_or_else(|_| {
                    Err(BrokerError::Unavailable(format!(
                        "rabbitmq: the consumer channel did not open within {}s",
                        CONNECT_TIMEOUT.as_secs()
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
        let properties = self.celery.then(|| celery::delivery_properties(&d));
        let id = self.next_id;
        self.next_id += 1;
        let body = Bytes::from(d.data);
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
        let (target, expiration) = delay::retry_route(&self.names, delay);
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
            close_now(s.conn);
        }
    }
}

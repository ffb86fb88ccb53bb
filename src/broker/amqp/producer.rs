//! Publishing events to RabbitMQ: to the main queue through the default exchange, persistent,
//! with publisher confirms; in Celery mode as task messages (see `celery`).
//!
//! Not for: re-publishing deliveries (retry, dead letter, replay: see `consumer` and
//! `dead_letters`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use lapin::types::ShortString;
use lapin::BasicProperties;

use super::connection::Link;
use super::publish::{publish_confirmed, Outgoing};
use super::{celery, Mode};
use crate::broker::{BrokerError, Producer};

/// Publishes to the main queue through the default exchange, persistent, with publisher
/// confirms. In Celery mode each event becomes a task message
/// ([`crate::celery::build_amqp_message`]), as a Python client's `.delay(payload)` would send.
pub struct AmqpProducer {
    link: Arc<Link>,
    queue: String,
    mode: Mode,
}

/// A body and its properties, ready to publish.
pub(super) struct Prepared {
    pub(super) body: Vec<u8>,
    pub(super) properties: BasicProperties,
}

impl AmqpProducer {
    /// A producer publishing to `queue` on `link`.
    pub(super) fn new(link: Arc<Link>, queue: String, mode: Mode) -> Self {
        AmqpProducer { link, queue, mode }
    }

    fn prepare(&self, bodies: &[Bytes]) -> Result<Vec<Prepared>, BrokerError> {
        bodies
            .iter()
            .enumerate()
            .map(|(n, body)| match &self.mode {
                Mode::Native => Ok(Prepared {
                    body: body.to_vec(),
                    properties: BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type(ShortString::from("application/json")),
                }),
                Mode::Celery { task } => celery::task_message(n, body, task),
            })
            .collect()
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

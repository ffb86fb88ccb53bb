//! What `--celery` changes on RabbitMQ: Celery's queue is declared passively (or, when it does
//! not exist, the way Celery itself would), events are published as the task messages a Python
//! client's `.delay(payload)` sends, and deliveries carry their AMQP properties for the Celery
//! decoder.
//!
//! Not for: building or decoding the task message itself (see [`crate::celery`]).

use std::sync::Arc;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

use super::connection::{map_err, Link};
use super::fields::{json_to_table, table_to_json};
use super::passive_declare;
use super::producer::Prepared;
use crate::broker::{celery_payload, BrokerError, MessageProperties};

/// Celery's queue: passively; created the way Celery would only if it does not exist.
pub(super) async fn declare_celery_queue(link: &Link, queue: &str) -> Result<(), BrokerError> {
    if passive_declare(link, queue).await?.is_some() {
        return Ok(());
    }
    let ch = link.scratch_channel().await?;
    let exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let no_arguments = FieldTable::default;
    ch.exchange_declare(queue, ExchangeKind::Direct, exchange, no_arguments())
        .await
        .map_err(map_err)?;
    ch.queue_declare(queue, durable, no_arguments())
        .await
        .map_err(map_err)?;
    let binding = QueueBindOptions::default();
    ch.queue_bind(queue, queue, queue, binding, no_arguments())
        .await
        .map_err(map_err)?;
    let _ = ch.close(200, "declared").await;
    tracing::info!(
        message = "Declared the Celery queue as Celery would (it did not exist).",
        queue
    );
    Ok(())
}

/// Event `n` of a slice as the Celery task message for `task`, persistent, priority 0.
pub(super) fn task_message(n: usize, body: &[u8], task: &str) -> Result<Prepared, BrokerError> {
    let payload = celery_payload(n, body)?;
    let task_id = uuid::Uuid::new_v4().to_string();
    let msg = crate::celery::build_amqp_message(&payload, task, &task_id);
    Ok(Prepared {
        properties: BasicProperties::default()
            .with_content_type(msg.content_type.into())
            .with_content_encoding(msg.content_encoding.into())
            .with_correlation_id(msg.correlation_id.as_str().into())
            .with_headers(json_to_table(&msg.headers))
            .with_delivery_mode(2)
            .with_priority(0),
        body: msg.body,
    })
}

/// The AMQP properties of a delivery that the Celery decoder reads (headers as JSON).
pub(super) fn delivery_properties(d: &lapin::message::Delivery) -> Arc<MessageProperties> {
    let text = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    Arc::new(MessageProperties {
        content_type: text(d.properties.content_type()),
        content_encoding: text(d.properties.content_encoding()),
        headers: d.properties.headers().as_ref().map(table_to_json),
        priority: *d.properties.priority(),
        delivery_tag: Some(d.delivery_tag),
        redelivered: d.redelivered,
    })
}

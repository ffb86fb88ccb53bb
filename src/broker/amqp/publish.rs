//! Publishing to RabbitMQ with publisher confirms, and the properties geoprov re-publishes a
//! delivery with (retry, dead letter, replay).
//!
//! Not for: what is published where (see `producer`, `consumer` and `dead_letters`).

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

use super::connection::map_err;
use crate::broker::BrokerError;

/// How long publisher confirms may take before the publish counts as failed (the channel is
/// then presumed dead; the caller reconnects).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// One message to publish.
pub(super) struct Outgoing<'a> {
    pub(super) exchange: &'a str,
    pub(super) routing_key: &'a str,
    pub(super) body: &'a [u8],
    pub(super) properties: BasicProperties,
}

/// Publish every message pipelined (`mandatory`, so an unroutable message comes back), then
/// wait for every publisher confirm. `Ok` only when the broker confirmed them all as routed.
pub(super) async fn publish_confirmed(
    channel: &Channel,
    messages: Vec<Outgoing<'_>>,
) -> Result<(), BrokerError> {
    let mut confirms: Vec<PublisherConfirm> = Vec::with_capacity(messages.len());
    for m in messages {
        let confirm = channel
            .basic_publish(
                m.exchange,
                m.routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                m.body,
                m.properties,
            )
            .await
            .map_err(map_err)?;
        confirms.push(confirm);
    }
    let mut failed: Option<BrokerError> = None;
    let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
    for confirm in confirms {
        let outcome = match tokio::time::timeout_at(deadline, confirm).await {
            Ok(outcome) => outcome.map_err(map_err),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "rabbitmq: no publisher confirm within {}s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
        };
        let problem = match outcome {
            Ok(Confirmation::Ack(None)) => None,
            Ok(Confirmation::Ack(Some(returned))) => Some(BrokerError::Protocol(format!(
                "RabbitMQ could not route a message to '{}' ({}): does the queue exist?",
                returned.delivery.routing_key, returned.reply_text
            ))),
            Ok(Confirmation::Nack(_)) => Some(BrokerError::Unavailable(
                "RabbitMQ refused a message (publisher nack)".into(),
            )),
            Ok(Confirmation::NotRequested) => Some(BrokerError::Protocol(
                "the channel is not in confirm mode".into(),
            )),
            Err(e) => Some(e),
        };
        if failed.is_none() {
            failed = problem;
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The properties geoprov re-publishes a message with (retry, dead letter, replay): the
/// original ones, persistent, with `headers` changed by `edit`, and without `expiration` (a
/// dead letter must not vanish with a Celery task's TTL; an expired task is better dead-lettered
/// as such than dropped) and `user_id` (RabbitMQ refuses a `user_id` other than the
/// connection's).
pub(super) fn with_headers(
    properties: &BasicProperties,
    edit: impl FnOnce(&mut BTreeMap<ShortString, AMQPValue>),
) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    edit(&mut headers);
    let mut out = BasicProperties::default()
        .with_headers(FieldTable::from(headers))
        .with_delivery_mode(2);
    // Every other property the original has, except `expiration` and `user_id`.
    macro_rules! keep {
        ($($get:ident => $set:ident),* $(,)?) => {
            $(if let Some(v) = properties.$get().clone() {
                out = out.$set(v);
            })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::amqp::fields::{header_text, header_u32, text_value};
    use crate::broker::amqp::HEADER_ATTEMPTS;

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

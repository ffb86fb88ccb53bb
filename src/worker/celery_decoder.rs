//! The Celery wire format for the worker: a kombu Redis envelope, or a RabbitMQ delivery whose
//! [`Delivery::properties`] carry the AMQP headers, → the task's lineage payload
//! → a validated event, or the reason to dead-letter it, or how long to wait for its `eta`.
//!
//! Mapping (`shared/docs/celery-wire.md` §5): the configured task decodes to an event; any other
//! task, protocol v1, pickle / yaml / msgpack and every other non-JSON content type, undecodable
//! bodies, bad shapes and expired tasks are dead-lettered with the reason; a future `eta`
//! defers the message so that it is never persisted before it. The task's `db_uri` argument is
//! dropped by [`crate::celery`] and never reaches this module.

use chrono::Utc;

use super::pipeline::{Decoded, Decoder};
use crate::broker::Delivery;
use crate::celery::TaskRef;
use crate::celery::{decode_amqp, decode_redis_envelope, AmqpDelivery, CeleryErrorKind};
use crate::event::validate::event_from_value;

/// Decodes Celery protocol v2 messages taken from kombu's Redis lists or from RabbitMQ.
#[derive(Debug, Clone)]
pub struct CeleryDecoder {
    /// The only task processed. Defaults to `lineage_tasks.record_lineage_event`.
    pub task: String,
    /// Largest body accepted after decompression, in bytes. Defaults to 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for CeleryDecoder {
    fn default() -> Self {
        CeleryDecoder {
            task: crate::celery::DEFAULT_TASK_NAME.to_owned(),
            max_body_bytes: crate::celery::DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl Decoder for CeleryDecoder {
    fn decode(&self, delivery: &Delivery) -> Decoded {
        let now = Utc::now();
        let decoded = match &delivery.properties {
            Some(p) => decode_amqp(
                &AmqpDelivery {
                    body: &delivery.body,
                    content_type: p.content_type.as_deref(),
                    content_encoding: p.content_encoding.as_deref(),
                    headers: p.headers.as_ref(),
                    priority: p.priority,
                    delivery_tag: p.delivery_tag,
                    redelivered: p.redelivered,
                },
                &self.task,
                self.max_body_bytes,
                now,
            ),
            None => decode_redis_envelope(&delivery.body, &self.task, self.max_body_bytes, now),
        };
        match decoded {
            Ok(task) => {
                if let Some(eta) = task.eta {
                    if let Ok(wait) = (eta - now).to_std() {
                        if !wait.is_zero() {
                            return Decoded::Defer(wait);
                        }
                    }
                }
                match event_from_value(&task.payload) {
                    Ok(event) => Decoded::Event {
                        event: Box::new(event),
                        task: Some(TaskRef {
                            id: task.id,
                            ignore_result: task.ignore_result,
                        }),
                    },
                    Err(e) => Decoded::Reject(format!("celery task {}: {}", task.id, e.reason)),
                }
            }
            Err(e) => {
                let what = match e.kind() {
                    CeleryErrorKind::UnknownTask => "not this worker's task",
                    CeleryErrorKind::Expired => "expired",
                    CeleryErrorKind::ContentDisallowed => "content refused",
                    CeleryErrorKind::Unsupported => "unsupported",
                    CeleryErrorKind::InvalidTask => "invalid task",
                    _ => "undecodable",
                };
                Decoded::Reject(format!("celery message {what}: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::DeliveryTag;
    use crate::event::python_json;
    use bytes::Bytes;

    fn delivery(body: String) -> Delivery {
        Delivery {
            tag: DeliveryTag::Text("t".into()),
            body: Bytes::from(body),
            attempt: 1,
            properties: None,
        }
    }

    const PAYLOAD: &str = r#"{"dataset_uuid": "0b7e9a52-4c52-4c38-9d7e-1f1f0c6e2a11", "operation": "reproject", "crs_from": "EPSG:4326", "crs_to": "EPSG:3857", "processor_id": "p1"}"#;

    #[test]
    fn the_configured_task_decodes_to_an_event() {
        let payload = python_json::parse(PAYLOAD.as_bytes()).unwrap();
        let env = crate::celery::build_redis_envelope(
            &payload,
            crate::celery::DEFAULT_TASK_NAME,
            "celery",
            "id1",
            "tag1",
        );
        let d = CeleryDecoder::default();
        let Decoded::Event { event, task } = d.decode(&delivery(env)) else {
            panic!("expected an event")
        };
        assert_eq!(
            task,
            Some(TaskRef {
                id: "id1".into(),
                ignore_result: false
            })
        );
        let (id, _) = crate::event::event_id::event_id_of(&payload);
        assert_eq!(event.event_id, id);
    }

    #[test]
    fn other_tasks_and_garbage_are_rejected_with_reasons() {
        let payload = python_json::parse(PAYLOAD.as_bytes()).unwrap();
        let env = crate::celery::build_redis_envelope(&payload, "other.task", "celery", "i", "t");
        let d = CeleryDecoder::default();
        match d.decode(&delivery(env)) {
            Decoded::Reject(r) => assert!(r.contains("not this worker's task"), "{r}"),
            other => panic!("expected a reject, got {other:?}"),
        }
        match d.decode(&delivery("nope".into())) {
            Decoded::Reject(r) => assert!(r.contains("undecodable"), "{r}"),
            other => panic!("expected a reject, got {other:?}"),
        }
    }
}

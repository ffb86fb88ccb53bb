//! Decoding: a broker delivery's bytes → a validated event, or the reason it must be
//! dead-lettered. Pure and synchronous; the worker calls it for every message.

use crate::broker::Delivery;
use crate::celery::TaskRef;
use crate::event::{parse_event, LineageEvent};

/// What the worker does with one delivery.
#[derive(Debug)]
pub enum Decoded {
    /// Store this event; `task` is the Celery task that carried it, if any, so that its
    /// result can be written after the commit without decoding the message again.
    Event {
        event: Box<LineageEvent>,
        task: Option<TaskRef>,
    },
    /// Dead-letter at once, with this human-readable reason.
    Reject(String),
    /// Not yet: give the message back to be delivered again after this long (a Celery task
    /// whose `eta` is in the future). It MUST NOT be persisted before then.
    Defer(std::time::Duration),
}

/// Turns deliveries into events. One implementation per wire format (native JSON, Celery).
pub trait Decoder: Send + Sync {
    /// Decode one delivery. MUST NOT panic on any input.
    fn decode(&self, delivery: &Delivery) -> Decoded;
}

/// geoprov's native format: the message body is the event's JSON payload.
#[derive(Debug, Clone)]
pub struct NativeDecoder {
    /// Largest payload accepted, in bytes. Defaults to 1 MiB.
    pub max_payload_bytes: usize,
}

impl Default for NativeDecoder {
    fn default() -> Self {
        NativeDecoder {
            max_payload_bytes: crate::event::DEFAULT_MAX_PAYLOAD_BYTES,
        }
    }
}

impl Decoder for NativeDecoder {
    fn decode(&self, delivery: &Delivery) -> Decoded {
        match parse_event(&delivery.body, self.max_payload_bytes) {
            Ok(event) => Decoded::Event {
                event: Box::new(event),
                task: None,
            },
            Err(e) => Decoded::Reject(e.reason),
        }
    }
}

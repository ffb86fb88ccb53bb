//! Celery 5 / kombu wire format: task messages in, result records out.
//!
//! This module turns the bytes a Python Celery client publishes with
//! `record_lineage_event.delay(payload, db_uri)` into a [`CeleryTask`], and writes the JSON
//! records Celery's Redis result backend stores. It is **pure**: no `async`, no I/O, no broker
//! client. The Redis and RabbitMQ backends in `broker/` fetch the bytes, call
//! [`decode_redis_envelope`] or [`decode_amqp`], and act on the result or on the error's
//! [`CeleryError::kind`]. `shared/docs/celery-wire.md` describes the formats; the raw captures in
//! `tests/fixtures/celery/` are decoded by this module's tests.
//!
//! Not for: popping, acking, requeueing, dead-lettering or storing anything; validating the
//! lineage payload itself (that is [`crate::event`]).
//!
//! # What is accepted
//!
//! - **Protocol v2 only**, recognised by its `task` header. A protocol v1 message (no `task`
//!   header, a body dict with `task`/`id`/`args`) is refused with [`CeleryError::ProtocolV1`].
//! - **JSON only** (`application/json`, utf-8). Pickle (`application/x-python-serialize`),
//!   `application/x-yaml`, `application/x-msgpack` and every other content type are refused
//!   before a single body byte is looked at: pickle is never deserialized.
//! - **Compression** (`compression` header, as in `kombu/compression.py`): `application/x-gzip`
//!   (aliases `gzip`, `zlib`; a zlib RFC 1950 stream, not gzip), `application/x-bz2` (`bzip2`,
//!   `bzip`), `application/x-lzma` (`lzma`, `xz`; the `.xz` container that Python's
//!   `lzma.compress` writes, or legacy `.lzma`) and `application/zstd` (`zstd`, `zstandard`).
//!   `application/x-brotli` is refused as unsupported. Every decompressor writes into a buffer
//!   capped at `max_body` bytes, so a compression bomb fails fast.
//! - **Body** `[args, kwargs, embed]`: the payload is `args[0]` or `kwargs["payload"]`.
//!   A non-null `embed` (callbacks, errbacks, chain, chord) is refused.
//! - **Task name**: only `expected_task` is decoded; any other name is
//!   [`CeleryError::UnknownTask`], checked from the headers before the body is touched, so the
//!   caller can requeue another application's task on a shared queue without judging its body.
//! - **`eta` / `expires`**: ISO-8601, a naive value is UTC (Celery's default app timezone). A
//!   task whose `expires` is before `now` is [`CeleryError::Expired`]. A future `eta` is returned
//!   in [`CeleryTask::eta`]; honouring it is the caller's job.
//!
//! # The `db_uri` argument
//!
//! The reference task's second argument is a database URL with a password in it. It is read
//! past and dropped: it is not in [`CeleryTask`], no error message quotes an argument value, and
//! the `argsrepr`/`kwargsrepr` headers (which repeat it) are never read. The builders never
//! write one.
//!
//! # kombu tagged values and the event id
//!
//! kombu's JSON encoder writes Python values JSON lacks as `{"__type__": T, "__value__": V}`
//! (`kombu/utils/json.py`). The reference task receives them as Python objects and crashes when
//! it hashes the payload, losing the event. geoprov replaces each tag by a plain JSON value with
//! [`untag_kombu_values`] before anything else sees the payload:
//!
//! | `__type__` | `__value__` as kombu writes it | replaced by |
//! |---|---|---|
//! | `datetime`, `date`, `time` | `isoformat()` text | that string |
//! | `decimal` | `str(Decimal)` text | that string (not a number: no precision is lost) |
//! | `uuid` | `{"hex": "<32 hex digits>"}` (kombu ≥ 5.3) or a string | the canonical `8-4-4-4-12` lowercase string |
//! | `bytes` | the bytes decoded as utf-8 | that string |
//! | `base64` | base64 of bytes that are not utf-8 | the base64 string, unchanged |
//!
//! Only an object with exactly the two keys `__type__` and `__value__`, a known type and a value
//! of the expected shape is replaced; anything else is left as it is. The event id is computed
//! over the payload **after** untagging, so an event whose `started_at` was a tagged `datetime`
//! gets the same `event_id` as the same event sent with the ISO string (what Python's
//! `json.dumps(payload, sort_keys=True)` would hash had the publisher sent `.isoformat()`).
//!
//! # Numbers
//!
//! The body is parsed with [`crate::event::python_json::parse`], so numbers keep their exact
//! Python text and the `event_id` equals the one Python computes. The envelope and the headers,
//! which are never hashed, are plain [`serde_json::Value`]s: that is also the input type the
//! RabbitMQ backend maps lapin's `FieldTable` into (see [`AmqpDelivery`]).
//!
//! # Results
//!
//! [`result_key`], [`result_meta_success`], [`result_meta_failure`] and [`result_meta_revoked`]
//! produce the key and the JSON Celery's Redis result backend writes, so that Python's
//! `AsyncResult.get()` returns `"SUCCESS:<event_id>"`. The caller runs `SET key value EX 86400`
//! and `PUBLISH key value` in one `MULTI`.
//!
//! # Building messages
//!
//! [`build_redis_envelope`] and [`build_amqp_message`] write protocol v2 messages the way
//! Celery 5.7 does, for tests and for `geoprov emit --celery`; `args` is `[payload]` only.

mod build;
mod compression;
mod decode;
mod error;
mod kombu;
mod result;

#[cfg(test)]
mod tests;

pub use build::{build_amqp_message, build_redis_envelope, AmqpTaskMessage};
pub use decode::{
    decode_amqp, decode_redis_envelope, peek_redis_envelope, AmqpDelivery, RedisEnvelopeInfo,
};
pub use error::{CeleryError, CeleryErrorKind};
pub use kombu::untag_kombu_values;
pub use result::{
    result_key, result_meta_failure, result_meta_revoked, result_meta_success, TaskRef,
};

use chrono::{DateTime, Utc};

use crate::event::python_json::PyValue;

/// The task name the seed application registers: `lineage_tasks.record_lineage_event`.
pub const DEFAULT_TASK_NAME: &str = "lineage_tasks.record_lineage_event";

/// The body size limit the design asks for (1 MiB), after decompression.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// One decoded protocol v2 task message for the configured task.
///
/// Built only by [`decode_redis_envelope`] and [`decode_amqp`]. It deliberately has no field for
/// the task's `db_uri` argument, nor for the `argsrepr`/`kwargsrepr` headers that repeat it, so
/// neither can reach a log line through `Debug`.
#[derive(Debug, Clone, PartialEq)]
pub struct CeleryTask {
    /// The task id (`id` header, also the AMQP `correlation_id`). A retry keeps the same id, and
    /// the result backend key is built from it.
    pub id: String,
    /// The task name (`task` header); always equal to the expected task.
    pub task: String,
    /// How many times Celery already retried the task (`retries` header, 0 on first publish).
    pub retries: u32,
    /// Not before this instant (`eta` header, set by `countdown`/`eta`). The caller holds or
    /// re-publishes the task until then; `None` means run now.
    pub eta: Option<DateTime<Utc>>,
    /// Not after this instant (`expires` header). Already checked against `now` on decode; the
    /// caller checks again before running a task it held.
    pub expires: Option<DateTime<Utc>>,
    /// The lineage payload, `args[0]` or `kwargs["payload"]`, after [`untag_kombu_values`].
    pub payload: PyValue,
    /// `ignore_result` header: when true the caller MUST NOT write a result record.
    pub ignore_result: bool,
    /// Message priority (Redis: `properties.priority`; AMQP: the `priority` property), 0 if
    /// absent, clamped to 0..=255.
    pub priority: u8,
    /// The broker's delivery tag: kombu's publisher-chosen UUID string on Redis (the key of the
    /// `unacked` hash), the channel's delivery tag as decimal text on AMQP.
    pub delivery_tag: Option<String>,
    /// The broker says this is not the first delivery (kombu's restore flags, the AMQP
    /// `redelivered` bit, or an `x-delivery-count` above 0). Dedupe by `event_id` either way.
    pub redelivered: bool,
}

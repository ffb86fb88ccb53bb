//! Why a message is not a task this worker can run.

use chrono::{DateTime, Utc};

/// Why a broker message could not be turned into a [`super::CeleryTask`].
///
/// The `Display` text is the human reason written into the dead letter. It never quotes an
/// argument value (the task's `db_uri` is one), only header values, clipped to a few hundred
/// characters. Decide what to do with [`CeleryError::kind`], never by reading the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CeleryError {
    /// The Redis envelope is not a JSON object.
    #[error("envelope is not a JSON object: {0}")]
    EnvelopeNotJson(String),
    /// A field of the Redis envelope has the wrong type.
    #[error("envelope field '{0}' has the wrong type")]
    BadEnvelopeField(&'static str),
    /// The headers (envelope `headers` or AMQP `application_headers`) are not a mapping.
    #[error("headers are not a mapping")]
    HeadersNotMapping,
    /// A non-JSON serializer; the body was not deserialized.
    #[error("content type {0} refused: only JSON is accepted (pickle is never deserialized)")]
    ContentDisallowed(String),
    /// A JSON body in a character encoding other than utf-8.
    #[error("content encoding {0} unsupported: JSON bodies must be utf-8")]
    ContentEncodingUnsupported(String),
    /// kombu's `body_encoding` is neither `base64` nor absent.
    #[error("body encoding '{0}' unsupported (only base64 or none)")]
    BodyEncodingUnsupported(String),
    /// The base64 body text does not decode.
    #[error("body is not valid base64")]
    BadBase64,
    /// The `compression` header names a codec this worker does not decode.
    #[error("unsupported compression '{0}'")]
    UnsupportedCompression(String),
    /// The compressed body is corrupt or truncated.
    #[error("{codec} body does not decompress")]
    Decompress {
        /// The codec's MIME type.
        codec: &'static str,
    },
    /// Decompression produced more than the limit (a compression bomb, or just too big).
    #[error("decompressed body over the {limit}-byte limit")]
    DecompressedTooLarge {
        /// The `max_body` limit in bytes.
        limit: usize,
    },
    /// The body, before decompression, is already over the limit.
    #[error("body is {size} bytes, over the {limit}-byte limit")]
    BodyTooLarge {
        /// The body size in bytes (estimated from the base64 text on Redis).
        size: usize,
        /// The `max_body` limit in bytes.
        limit: usize,
    },
    /// The (decompressed) body is not JSON. The parser's message is left out on purpose: it
    /// could quote body text, and the body carries `db_uri`.
    #[error("body is not valid JSON")]
    BodyNotJson,
    /// A protocol v1 message (no `task` header, the task in the body dict).
    #[error("protocol v1 message unsupported")]
    ProtocolV1,
    /// Neither a v2 message (`task` header) nor a v1 body.
    #[error("not a Celery task message: no task header and no protocol v1 body")]
    NotATask,
    /// A header Celery always sends is missing or malformed (`task`, `id`, `retries`, `eta`,
    /// `expires`).
    #[error("header '{name}' invalid: {reason}")]
    InvalidHeader {
        /// The header name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Another task's message. On a queue of its own the caller dead-letters it; on a queue
    /// shared with Python workers it requeues it.
    #[error("unknown task '{task}' (this worker runs '{expected}')")]
    UnknownTask {
        /// The message's task name (clipped).
        task: String,
        /// The task this worker runs.
        expected: String,
        /// The message's task id, when the `id` header is a string (for a `NotRegistered`
        /// result record).
        id: Option<String>,
    },
    /// The body is not `[args, kwargs, embed]`.
    #[error("body is not a list [args, kwargs, embed]")]
    BadBodyShape,
    /// `args` is not a list.
    #[error("args is not a list")]
    ArgsNotList,
    /// `kwargs` is not a mapping.
    #[error("kwargs is not a mapping")]
    KwargsNotMapping,
    /// `embed` is neither null nor a mapping.
    #[error("embed is not a mapping")]
    EmbedNotMapping,
    /// A callback, errback, chain or chord is attached: not supported.
    #[error("embed (callbacks/chain/chord) not supported: '{0}' is set")]
    EmbedUnsupported(&'static str),
    /// The arguments do not fit `record_lineage_event(payload, db_uri)` (what Python would
    /// raise as a `TypeError`). Never quotes a value.
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// The task's `expires` is before the time of decoding. Celery stores REVOKED
    /// (`TaskRevokedError('expired')`) for it.
    #[error("task expired at {}", super::result::isoformat(.expires))]
    Expired {
        /// The task id (for the REVOKED result record).
        id: String,
        /// The `expires` header.
        expires: DateTime<Utc>,
    },
}

/// What kind of failure a [`CeleryError`] is: the caller's branch point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CeleryErrorKind {
    /// The bytes do not decode (envelope, base64, compression, JSON, size). Celery logs and
    /// acks these; geoprov dead-letters the original bytes with the reason.
    Undecodable,
    /// A serializer other than JSON (pickle, yaml, msgpack, ...). Never deserialized;
    /// dead-letter.
    ContentDisallowed,
    /// A well-formed Celery message using something geoprov does not implement (protocol v1,
    /// embed, brotli, a non-utf-8 encoding); dead-letter.
    Unsupported,
    /// Celery's `InvalidTaskError`: bad headers, bad body shape, bad arguments; dead-letter.
    InvalidTask,
    /// Another task's message: dead-letter on a dedicated queue, requeue on a shared one.
    UnknownTask,
    /// `expires` has passed: dead-letter with that reason (and store REVOKED if results are on).
    Expired,
}

impl CeleryError {
    /// Classify the error; see [`CeleryErrorKind`].
    #[must_use]
    pub fn kind(&self) -> CeleryErrorKind {
        match self {
            CeleryError::EnvelopeNotJson(_)
            | CeleryError::BadEnvelopeField(_)
            | CeleryError::BadBase64
            | CeleryError::Decompress { .. }
            | CeleryError::DecompressedTooLarge { .. }
            | CeleryError::BodyTooLarge { .. }
            | CeleryError::BodyNotJson => CeleryErrorKind::Undecodable,
            CeleryError::ContentDisallowed(_) => CeleryErrorKind::ContentDisallowed,
            CeleryError::ContentEncodingUnsupported(_)
            | CeleryError::BodyEncodingUnsupported(_)
            | CeleryError::UnsupportedCompression(_)
            | CeleryError::ProtocolV1
            | CeleryError::EmbedUnsupported(_) => CeleryErrorKind::Unsupported,
            CeleryError::HeadersNotMapping
            | CeleryError::NotATask
            | CeleryError::InvalidHeader { .. }
            | CeleryError::BadBodyShape
            | CeleryError::ArgsNotList
            | CeleryError::KwargsNotMapping
            | CeleryError::EmbedNotMapping
            | CeleryError::BadArguments(_) => CeleryErrorKind::InvalidTask,
            CeleryError::UnknownTask { .. } => CeleryErrorKind::UnknownTask,
            CeleryError::Expired { .. } => CeleryErrorKind::Expired,
        }
    }

    /// The task id, for the errors that carry one (unknown task, expired), so the caller can
    /// write Celery's `NotRegistered` / `REVOKED` result record.
    #[must_use]
    pub fn task_id(&self) -> Option<&str> {
        match self {
            CeleryError::UnknownTask { id, .. } => id.as_deref(),
            CeleryError::Expired { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Clip text taken from a message (header values) so that a reason stays one short line.
pub(crate) fn clip(s: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max_chars {
            out.push('…');
            return out;
        }
        // Control characters would break a one-line reason; show them escaped.
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

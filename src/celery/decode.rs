//! Redis envelope / AMQP delivery → [`CeleryTask`].

use std::borrow::Cow;

use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use super::compression::{self, Codec};
use super::error::clip;
use super::{untag_kombu_values, CeleryError, CeleryTask};
use crate::event::python_json::{self, PyValue};

/// One RabbitMQ delivery, as the AMQP backend hands it to [`decode_amqp`].
///
/// The backend maps lapin's properties field by field; `headers` is the
/// `application_headers` table converted to a [`serde_json::Value`] object (py-amqp's `S` →
/// string, `t` → bool, `I`/`L` → integer, `d` → float, `V` → null, `A` → array, `F` → object).
/// `Debug` shows the body's length only: the body and the `argsrepr` header carry `db_uri`.
#[derive(Clone, Copy)]
pub struct AmqpDelivery<'a> {
    /// The message body: the serialized (possibly compressed) task body, no envelope.
    pub body: &'a [u8],
    /// The `content_type` property.
    pub content_type: Option<&'a str>,
    /// The `content_encoding` property.
    pub content_encoding: Option<&'a str>,
    /// The `application_headers` property as a JSON value; `None` if the message has none.
    pub headers: Option<&'a Value>,
    /// The `priority` property.
    pub priority: Option<u8>,
    /// The channel's delivery tag.
    pub delivery_tag: Option<u64>,
    /// The AMQP `redelivered` bit.
    pub redelivered: bool,
}

impl std::fmt::Debug for AmqpDelivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpDelivery")
            .field("body_len", &self.body.len())
            .field("content_type", &self.content_type)
            .field("content_encoding", &self.content_encoding)
            .field("priority", &self.priority)
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// The routing facts of a kombu Redis envelope, readable even when the message is poison.
///
/// The Redis backend needs the delivery tag to ack (ZREM/HDEL) or dead-letter a message that
/// [`decode_redis_envelope`] refused, and the routing key to requeue it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisEnvelopeInfo {
    /// `properties.delivery_tag`: the key of kombu's `unacked` hash.
    pub delivery_tag: Option<String>,
    /// `properties.delivery_info.exchange` (`""` for Celery's default route).
    pub exchange: Option<String>,
    /// `properties.delivery_info.routing_key` (the queue name for exchange `""`).
    pub routing_key: Option<String>,
    /// The `task` header.
    pub task: Option<String>,
    /// The `id` header.
    pub task_id: Option<String>,
}

/// Read the routing facts of a Redis envelope without decoding its body; `None` if `raw` is not
/// a JSON object.
#[must_use]
pub fn peek_redis_envelope(raw: &[u8]) -> Option<RedisEnvelopeInfo> {
    let envelope: Value = serde_json::from_slice(raw).ok()?;
    let envelope = envelope.as_object()?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let properties = envelope.get("properties").and_then(Value::as_object);
    let delivery_info = properties
        .and_then(|p| p.get("delivery_info"))
        .and_then(Value::as_object);
    let headers = envelope.get("headers").and_then(Value::as_object);
    Some(RedisEnvelopeInfo {
        delivery_tag: properties.and_then(|p| tag_text(p.get("delivery_tag"))),
        exchange: text(delivery_info.and_then(|d| d.get("exchange"))),
        routing_key: text(delivery_info.and_then(|d| d.get("routing_key"))),
        task: text(headers.and_then(|h| h.get("task"))),
        task_id: text(headers.and_then(|h| h.get("id"))),
    })
}

/// Decode one message popped from a kombu Redis list (the JSON envelope, as LPUSHed).
///
/// Steps: parse the envelope; check the headers are a mapping and the task is protocol v2 and
/// is `expected_task`; refuse any content type but JSON without deserializing it; base64-decode
/// the body when `properties.body_encoding` is `base64`; decompress it per the `compression`
/// header into at most `max_body` bytes; parse `[args, kwargs, embed]`; check `eta`,
/// `expires` (against `now`), `embed` and the arguments; untag the payload.
///
/// # Errors
///
/// A [`CeleryError`] whose [`kind`](CeleryError::kind) tells the caller whether to dead-letter
/// or requeue.
pub fn decode_redis_envelope(
    raw: &[u8],
    expected_task: &str,
    max_body: usize,
    now: DateTime<Utc>,
) -> Result<CeleryTask, CeleryError> {
    let envelope: Value =
        serde_json::from_slice(raw).map_err(|e| CeleryError::EnvelopeNotJson(e.to_string()))?;
    let Value::Object(envelope) = envelope else {
        return Err(CeleryError::EnvelopeNotJson(format!(
            "found {}",
            json_type(&envelope)
        )));
    };
    let empty = Map::new();
    let properties = match envelope.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(CeleryError::BadEnvelopeField("properties")),
    };
    let text = match envelope.get("body") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(CeleryError::BadEnvelopeField("body")),
    };
    let body = match properties.get("body_encoding") {
        None | Some(Value::Null) => Body::Raw(text.as_bytes()),
        Some(Value::String(e)) if e == "base64" => Body::Base64(text),
        Some(Value::String(e)) => Body::UnsupportedEncoding(clip(e, 50)),
        Some(_) => return Err(CeleryError::BadEnvelopeField("properties.body_encoding")),
    };
    let content_type = optional_str(&envelope, "content-type")?;
    let content_encoding = optional_str(&envelope, "content-encoding")?;
    let headers = envelope.get("headers");
    let redelivered = is_true(headers.and_then(|h| h.get("redelivered")))
        || is_true(
            properties
                .get("delivery_info")
                .and_then(|d| d.get("redelivered")),
        );
    decode_message(
        &Message {
            headers,
            content_type,
            content_encoding,
            body,
            priority: priority_of(properties.get("priority")),
            delivery_tag: tag_text(properties.get("delivery_tag")),
            redelivered,
        },
        expected_task,
        max_body,
        now,
    )
}

/// Decode one RabbitMQ delivery (raw body, properties and `application_headers`).
///
/// The same checks as [`decode_redis_envelope`], minus the envelope and base64 layers.
/// `redelivered` is the AMQP bit, or an `x-delivery-count` header above 0 (quorum queues).
///
/// # Errors
///
/// A [`CeleryError`] whose [`kind`](CeleryError::kind) tells the caller whether to dead-letter
/// or requeue.
pub fn decode_amqp(
    delivery: &AmqpDelivery<'_>,
    expected_task: &str,
    max_body: usize,
    now: DateTime<Utc>,
) -> Result<CeleryTask, CeleryError> {
    let counted = delivery
        .headers
        .and_then(|h| h.get("x-delivery-count"))
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 0);
    decode_message(
        &Message {
            headers: delivery.headers,
            content_type: delivery.content_type,
            content_encoding: delivery.content_encoding,
            body: Body::Raw(delivery.body),
            priority: delivery.priority.unwrap_or(0),
            delivery_tag: delivery.delivery_tag.map(|t| t.to_string()),
            redelivered: delivery.redelivered || counted,
        },
        expected_task,
        max_body,
        now,
    )
}

/// The transport-independent view of a message.
struct Message<'a> {
    headers: Option<&'a Value>,
    content_type: Option<&'a str>,
    content_encoding: Option<&'a str>,
    body: Body<'a>,
    priority: u8,
    delivery_tag: Option<String>,
    redelivered: bool,
}

/// The body as the transport delivered it; decoded only after the content type passed.
enum Body<'a> {
    /// Bytes as they are (AMQP, or a Redis envelope without `body_encoding`).
    Raw(&'a [u8]),
    /// kombu's default Redis `body_encoding`.
    Base64(&'a str),
    /// A `body_encoding` kombu supports but geoprov does not.
    UnsupportedEncoding(String),
}

fn decode_message(
    msg: &Message<'_>,
    expected_task: &str,
    max_body: usize,
    now: DateTime<Utc>,
) -> Result<CeleryTask, CeleryError> {
    let empty = Map::new();
    let headers = match msg.headers {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(h)) => h,
        Some(_) => return Err(CeleryError::HeadersNotMapping),
    };
    // Protocol v2 is marked by the `task` header (Celery reads `message.headers['task']`).
    let task = match headers.get("task") {
        None | Some(Value::Null) => {
            let body = body_value(msg, headers, max_body)?;
            return Err(if is_v1_body(&body) {
                CeleryError::ProtocolV1
            } else {
                CeleryError::NotATask
            });
        }
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(invalid("task", "not a string")),
    };
    let id = headers
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty());
    if task != expected_task {
        return Err(CeleryError::UnknownTask {
            task: clip(task, 200),
            expected: expected_task.to_owned(),
            id: id.map(str::to_owned),
        });
    }
    let id = id.ok_or_else(|| invalid("id", "missing or not a non-empty string"))?;

    let body = body_value(msg, headers, max_body)?;
    let (args, kwargs, embed) = split_body(body)?;

    let retries = match headers.get("retries") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid("retries", "not a non-negative integer"))?,
    };
    let eta = time_header(headers, "eta")?;
    let expires = time_header(headers, "expires")?;
    check_embed(embed)?;
    let payload = payload_of(args, kwargs)?;
    if let Some(expires) = expires {
        if expires < now {
            return Err(CeleryError::Expired {
                id: id.to_owned(),
                expires,
            });
        }
    }
    Ok(CeleryTask {
        id: id.to_owned(),
        task: task.to_owned(),
        retries,
        eta,
        expires,
        payload: untag_kombu_values(payload),
        ignore_result: is_true(headers.get("ignore_result")),
        priority: msg.priority,
        delivery_tag: msg.delivery_tag.clone(),
        redelivered: msg.redelivered,
    })
}

/// Content type and encoding checks, then base64, size limit, decompression and JSON.
fn body_value(
    msg: &Message<'_>,
    headers: &Map<String, Value>,
    max_body: usize,
) -> Result<PyValue, CeleryError> {
    let content_type = msg.content_type.unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media_type != "application/json" {
        let shown = if content_type.is_empty() {
            "(none)".to_owned()
        } else {
            clip(content_type, 100)
        };
        return Err(CeleryError::ContentDisallowed(shown));
    }
    if let Some(encoding) = msg.content_encoding {
        let e = encoding.trim().to_ascii_lowercase();
        if !(e.is_empty() || e == "utf-8" || e == "utf8") {
            return Err(CeleryError::ContentEncodingUnsupported(clip(encoding, 50)));
        }
    }
    let bytes: Cow<'_, [u8]> = match &msg.body {
        Body::Raw(b) => Cow::Borrowed(b),
        Body::Base64(text) => {
            // Refuse before allocating: base64 text is 4/3 of the bytes it carries.
            let size = text.len() / 4 * 3;
            if size > max_body.saturating_add(3) {
                return Err(CeleryError::BodyTooLarge {
                    size,
                    limit: max_body,
                });
            }
            Cow::Owned(
                base64_engine()
                    .decode(text)
                    .map_err(|_| CeleryError::BadBase64)?,
            )
        }
        Body::UnsupportedEncoding(e) => {
            return Err(CeleryError::BodyEncodingUnsupported(e.clone()))
        }
    };
    if bytes.len() > max_body {
        return Err(CeleryError::BodyTooLarge {
            size: bytes.len(),
            limit: max_body,
        });
    }
    let bytes = match headers.get("compression") {
        None | Some(Value::Null) => bytes,
        Some(Value::String(name)) => Cow::Owned(compression::decompress(
            Codec::from_header(name)?,
            &bytes,
            max_body,
        )?),
        Some(_) => return Err(invalid("compression", "not a string")),
    };
    python_json::parse(&bytes).map_err(|_| CeleryError::BodyNotJson)
}

/// Python's `base64.b64decode` accepts missing padding only when it is not needed; be as
/// lenient on padding and strict on the alphabet.
fn base64_engine() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// A protocol v1 body: a dict naming the task (`{task, id, args, kwargs, ...}`).
fn is_v1_body(body: &PyValue) -> bool {
    matches!(body, PyValue::Object(fields) if fields.iter().any(|(k, _)| k == "task"))
}

type Parts = (Vec<PyValue>, Vec<(String, PyValue)>, PyValue);

/// `[args, kwargs, embed]` with the types Celery's `InvalidTaskError` checks.
fn split_body(body: PyValue) -> Result<Parts, CeleryError> {
    let PyValue::Array(parts) = body else {
        return Err(CeleryError::BadBodyShape);
    };
    let Ok::<[PyValue; 3], _>([args, kwargs, embed]) = parts.try_into() else {
        return Err(CeleryError::BadBodyShape);
    };
    let PyValue::Array(args) = args else {
        return Err(CeleryError::ArgsNotList);
    };
    let PyValue::Object(kwargs) = kwargs else {
        return Err(CeleryError::KwargsNotMapping);
    };
    Ok((args, kwargs, embed))
}

/// Links, chains and chords would need geoprov to publish follow-up tasks: refuse them.
fn check_embed(embed: PyValue) -> Result<(), CeleryError> {
    let fields = match embed {
        PyValue::Null => return Ok(()),
        PyValue::Object(fields) => fields,
        _ => return Err(CeleryError::EmbedNotMapping),
    };
    for (key, value) in &fields {
        let name = match key.as_str() {
            "callbacks" => "callbacks",
            "errbacks" => "errbacks",
            "chain" => "chain",
            "chord" => "chord",
            _ => continue,
        };
        let empty = match value {
            PyValue::Null => true,
            PyValue::Array(items) => items.is_empty(),
            PyValue::Object(items) => items.is_empty(),
            _ => false,
        };
        if !empty {
            return Err(CeleryError::EmbedUnsupported(name));
        }
    }
    Ok(())
}

/// Bind the arguments the way Python binds `record_lineage_event(payload, db_uri)` and keep only
/// the payload. `db_uri` is dropped unread, and no error quotes an argument value.
fn payload_of(args: Vec<PyValue>, kwargs: Vec<(String, PyValue)>) -> Result<PyValue, CeleryError> {
    if args.len() > 2 {
        return Err(CeleryError::BadArguments(format!(
            "record_lineage_event takes 2 positional arguments (payload, db_uri) but {} were given",
            args.len()
        )));
    }
    let positional_db_uri = args.len() == 2;
    let positional_payload = args.into_iter().next();
    // Python's json keeps the last of duplicate keys.
    let mut keyword_payload = None;
    let mut keyword_db_uri = false;
    for (key, value) in kwargs {
        match key.as_str() {
            "payload" => keyword_payload = Some(value),
            "db_uri" => keyword_db_uri = true,
            // Name the keyword only when it is an identifier: a key could be anything,
            // even the connection string itself.
            other if is_identifier(other) => {
                return Err(CeleryError::BadArguments(format!(
                    "unexpected keyword argument '{}'",
                    clip(other, 64)
                )))
            }
            _ => {
                return Err(CeleryError::BadArguments(
                    "unexpected keyword argument (not an identifier)".into(),
                ))
            }
        }
    }
    if positional_db_uri && keyword_db_uri {
        return Err(CeleryError::BadArguments(
            "got multiple values for argument 'db_uri'".into(),
        ));
    }
    match (positional_payload, keyword_payload) {
        (Some(_), Some(_)) => Err(CeleryError::BadArguments(
            "got multiple values for argument 'payload'".into(),
        )),
        (Some(p), None) | (None, Some(p)) => Ok(p),
        (None, None) => Err(CeleryError::BadArguments(
            "missing required argument 'payload'".into(),
        )),
    }
}

/// A Python identifier (ASCII subset): `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An `eta`/`expires` header: null, or ISO-8601 (a naive value is UTC).
fn time_header(
    headers: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<DateTime<Utc>>, CeleryError> {
    match headers.get(name) {
        None | Some(Value::Null) => Ok(None),
        // The value is not quoted: reasons quote only names (task, content type, codec).
        Some(Value::String(s)) => parse_iso8601(s)
            .map(Some)
            .ok_or_else(|| invalid(name, "not an ISO-8601 datetime")),
        Some(_) => Err(invalid(name, "not a string")),
    }
}

/// Python's `datetime.isoformat()` output (and `fromisoformat` input): `T` or space between
/// date and time, optional fraction, optional `Z`/`±HH:MM` offset; no offset means UTC.
pub(crate) fn parse_iso8601(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    None
}

fn invalid(name: &'static str, reason: &str) -> CeleryError {
    CeleryError::InvalidHeader {
        name,
        reason: reason.to_owned(),
    }
}

fn optional_str<'a>(
    envelope: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, CeleryError> {
    match envelope.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CeleryError::BadEnvelopeField(field)),
    }
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Bool(true)))
}

/// A priority clamped into 0..=255; anything but a number counts as 0.
fn priority_of(v: Option<&Value>) -> u8 {
    match v {
        Some(Value::Number(n)) => n.as_u64().map_or(0, |p| u8::try_from(p).unwrap_or(u8::MAX)),
        _ => 0,
    }
}

/// kombu's delivery tag is a UUID string; accept a number too.
fn tag_text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

//! Protocol v2 messages as Celery 5.7 publishes them (`celery/app/amqp.py` `as_task_v2`).

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::event::python_json::{self, PyValue};

/// Celery's `argsrepr`/`kwargsrepr` limit (`argsrepr_maxsize`).
const REPR_MAX_CHARS: usize = 1024;

/// What the AMQP backend publishes for one task: body and properties.
#[derive(Debug, Clone, PartialEq)]
pub struct AmqpTaskMessage {
    /// The JSON body `[[payload], {}, {embed}]`, uncompressed.
    pub body: Vec<u8>,
    /// `content_type` property: `application/json`.
    pub content_type: &'static str,
    /// `content_encoding` property: `utf-8`.
    pub content_encoding: &'static str,
    /// `correlation_id` property: the task id.
    pub correlation_id: String,
    /// `application_headers`, the §1 headers (void values as `Value::Null`).
    pub headers: Map<String, Value>,
}

/// A kombu Redis envelope for `task(payload)`, as Celery LPUSHes it to the list `queue`
/// (exchange `""`, priority 0, `body_encoding` base64).
///
/// `args` is `[payload]`: no `db_uri` is ever written. Celery's per-process values differ:
/// `origin` is `geoprov`, and `reply_to` (used only by the `rpc://` result backend) is left out.
#[must_use]
pub fn build_redis_envelope(
    payload: &PyValue,
    task: &str,
    queue: &str,
    task_id: &str,
    delivery_tag: &str,
) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(task_body(payload));
    let s = |v: &str| PyValue::Str(v.to_owned());
    let envelope = PyValue::Object(vec![
        ("body".into(), PyValue::Str(body)),
        ("content-encoding".into(), s("utf-8")),
        ("content-type".into(), s("application/json")),
        (
            "headers".into(),
            PyValue::Object(headers(payload, task, task_id)),
        ),
        (
            "properties".into(),
            PyValue::Object(vec![
                ("correlation_id".into(), s(task_id)),
                ("delivery_mode".into(), PyValue::Int("2".into())),
                (
                    "delivery_info".into(),
                    PyValue::Object(vec![
                        ("exchange".into(), s("")),
                        ("routing_key".into(), s(queue)),
                    ]),
                ),
                ("priority".into(), PyValue::Int("0".into())),
                ("body_encoding".into(), s("base64")),
                ("delivery_tag".into(), s(delivery_tag)),
            ]),
        ),
    ]);
    python_json::dumps(&envelope)
}

/// The body and properties of a protocol v2 message for `task(payload)` on RabbitMQ.
///
/// As for [`build_redis_envelope`], `args` is `[payload]` and no `db_uri` is written.
#[must_use]
pub fn build_amqp_message(payload: &PyValue, task: &str, task_id: &str) -> AmqpTaskMessage {
    AmqpTaskMessage {
        body: task_body(payload).into_bytes(),
        content_type: "application/json",
        content_encoding: "utf-8",
        correlation_id: task_id.to_owned(),
        headers: headers(payload, task, task_id)
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect(),
    }
}

/// `[[payload], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`.
fn task_body(payload: &PyValue) -> String {
    let embed = ["callbacks", "errbacks", "chain", "chord"]
        .into_iter()
        .map(|k| (k.to_owned(), PyValue::Null))
        .collect();
    python_json::dumps(&PyValue::Array(vec![
        PyValue::Array(vec![payload.clone()]),
        PyValue::Object(Vec::new()),
        PyValue::Object(embed),
    ]))
}

/// The headers in the order Celery 5.7 writes them.
fn headers(payload: &PyValue, task: &str, task_id: &str) -> Vec<(String, PyValue)> {
    let s = |v: &str| PyValue::Str(v.to_owned());
    let mut argsrepr = String::from("(");
    py_repr(payload, &mut argsrepr);
    argsrepr.push_str(",)");
    vec![
        ("lang".into(), s("py")),
        ("task".into(), s(task)),
        ("id".into(), s(task_id)),
        ("shadow".into(), PyValue::Null),
        ("eta".into(), PyValue::Null),
        ("expires".into(), PyValue::Null),
        ("group".into(), PyValue::Null),
        ("group_index".into(), PyValue::Null),
        ("retries".into(), PyValue::Int("0".into())),
        (
            "timelimit".into(),
            PyValue::Array(vec![PyValue::Null, PyValue::Null]),
        ),
        ("root_id".into(), s(task_id)),
        ("parent_id".into(), PyValue::Null),
        ("argsrepr".into(), PyValue::Str(clip_repr(argsrepr))),
        ("kwargsrepr".into(), s("{}")),
        ("origin".into(), s("geoprov")),
        ("ignore_result".into(), PyValue::Bool(false)),
        ("replaced_task_nesting".into(), PyValue::Int("0".into())),
        ("stamped_headers".into(), PyValue::Null),
        ("stamps".into(), PyValue::Object(Vec::new())),
    ]
}

/// Cut a repr to Celery's limit (an approximation of `saferepr`; it is for logs only).
fn clip_repr(repr: String) -> String {
    if repr.chars().count() <= REPR_MAX_CHARS {
        return repr;
    }
    let mut out: String = repr.chars().take(REPR_MAX_CHARS - 3).collect();
    out.push_str("...");
    out
}

/// Python's `repr()` of the value `json.loads` would give.
fn py_repr(v: &PyValue, out: &mut String) {
    match v {
        PyValue::Null => out.push_str("None"),
        PyValue::Bool(true) => out.push_str("True"),
        PyValue::Bool(false) => out.push_str("False"),
        PyValue::Int(text) => out.push_str(text),
        PyValue::Float(_) => {
            let text = python_json::dumps(v);
            out.push_str(match text.as_str() {
                "NaN" => "nan",
                "Infinity" => "inf",
                "-Infinity" => "-inf",
                other => other,
            });
        }
        PyValue::Str(s) => repr_str(s, out),
        PyValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                py_repr(item, out);
            }
            out.push(']');
        }
        PyValue::Object(fields) => {
            out.push('{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_str(key, out);
                out.push_str(": ");
                py_repr(value, out);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(str)`: single quotes unless the text has a `'` and no `"`.
fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if u32::from(c) < 0x100 && c.is_control() => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// A header value as the AMQP table wants it (only the types [`headers`] writes matter).
fn to_json(v: &PyValue) -> Value {
    match v {
        PyValue::Null => Value::Null,
        PyValue::Bool(b) => Value::Bool(*b),
        PyValue::Int(text) => text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.clone()), Value::from),
        PyValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        PyValue::Str(s) => Value::String(s.clone()),
        PyValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        PyValue::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
    }
}

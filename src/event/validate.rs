//! Validation: raw payload bytes (or an already parsed payload) → [`LineageEvent`], or a
//! [`ValidationError`] whose reason names the field and what was wrong.
//!
//! The rules are those of `design.md` ("Events"): the payload is a JSON object within the size
//! limit; `dataset_uuid` is a UUID; `operation` and `processor_id` are non-blank strings;
//! `crs_from`/`crs_to` are strings when present; `inputs`/`outputs` are arrays of UUIDs when
//! present; `started_at`/`ended_at` are RFC 3339 when present, and do not run backwards. `null`
//! counts as absent for every optional field. Unknown fields are kept: they are part of
//! `payload_json`, which is the whole payload in Python's canonical form.
//!
//! Not for: Celery envelopes (see `celery`) or anything that would fetch or connect: a payload's
//! `db_uri` or URIs are data, never followed.

use chrono::{DateTime, FixedOffset};
use uuid::Uuid;

use super::event_id::event_id_of;
use super::python_json::{self, PyValue};
use super::LineageEvent;

/// Default payload size limit: 1 MiB.
/// Most lineage edges (inputs x outputs) one event may create. Each edge is a stored row, so
/// this bounds what a single payload can make the store write.
pub const MAX_EDGES_PER_EVENT: usize = 10_000;

pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Why a payload was refused. Every refusal is final: the worker dead-letters the message with
/// [`ValidationError::reason`]; retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ValidationError {
    /// Which rule failed, for metrics labels and tests; never parse `reason` instead.
    pub kind: ValidationErrorKind,
    /// Human-readable reason, naming the field and what was wrong.
    pub reason: String,
}

/// The rule a payload broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationErrorKind {
    /// Over the size limit (checked before parsing).
    TooLarge,
    /// Not JSON as Python's `json.loads` reads it.
    NotJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// The named field is missing or has a bad value.
    InvalidField(&'static str),
}

impl ValidationErrorKind {
    /// A short stable label: `too_large`, `not_json`, `not_an_object` or `invalid_field`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ValidationErrorKind::TooLarge => "too_large",
            ValidationErrorKind::NotJson => "not_json",
            ValidationErrorKind::NotAnObject => "not_an_object",
            ValidationErrorKind::InvalidField(_) => "invalid_field",
        }
    }
}

impl ValidationError {
    fn new(kind: ValidationErrorKind, reason: String) -> ValidationError {
        ValidationError { kind, reason }
    }

    fn field(field: &'static str, what: impl std::fmt::Display) -> ValidationError {
        ValidationError::new(
            ValidationErrorKind::InvalidField(field),
            format!("{field}: {what}"),
        )
    }

    /// The field at fault, when one is.
    pub fn field_name(&self) -> Option<&'static str> {
        match self.kind {
            ValidationErrorKind::InvalidField(field) => Some(field),
            _ => None,
        }
    }
}

/// Raw payload bytes → event. The size is checked before any parsing, against `max_bytes`
/// (usually [`DEFAULT_MAX_PAYLOAD_BYTES`]).
///
/// # Errors
///
/// A [`ValidationError`] when the payload is too large, is not JSON, is not an object, or breaks
/// a field rule (see the module docs).
pub fn parse_event(bytes: &[u8], max_bytes: usize) -> Result<LineageEvent, ValidationError> {
    if bytes.len() > max_bytes {
        return Err(ValidationError::new(
            ValidationErrorKind::TooLarge,
            format!(
                "payload is {} bytes, over the {max_bytes}-byte limit",
                bytes.len()
            ),
        ));
    }
    let value = python_json::parse(bytes).map_err(|e| {
        ValidationError::new(ValidationErrorKind::NotJson, format!("not valid JSON: {e}"))
    })?;
    event_from_value(&value)
}

/// Parsed payload → event, for payloads taken out of a Celery envelope (whose size was already
/// checked).
///
/// # Errors
///
/// A [`ValidationError`] when `v` is not an object or breaks a field rule (see the module docs).
pub fn event_from_value(v: &PyValue) -> Result<LineageEvent, ValidationError> {
    if !matches!(v, PyValue::Object(_)) {
        return Err(ValidationError::new(
            ValidationErrorKind::NotAnObject,
            format!("payload is {}, expected an object", describe(v)),
        ));
    }
    let dataset_uuid = match v.get("dataset_uuid") {
        None => return Err(ValidationError::field("dataset_uuid", "missing")),
        Some(PyValue::Str(s)) => parse_uuid(s).ok_or_else(|| {
            ValidationError::field("dataset_uuid", format!("{} is not a UUID", quote(s)))
        })?,
        Some(other) => {
            return Err(ValidationError::field(
                "dataset_uuid",
                format!("expected a UUID string, got {}", describe(other)),
            ))
        }
    };
    let operation = required_text(v, "operation")?;
    let processor_id = required_text(v, "processor_id")?;
    let crs_from = optional_string(v, "crs_from")?;
    let crs_to = optional_string(v, "crs_to")?;
    let inputs = optional_uuids(v, "inputs")?.unwrap_or_default();
    let outputs = optional_uuids(v, "outputs")?.unwrap_or_else(|| vec![dataset_uuid]);
    if inputs.len().saturating_mul(outputs.len()) > MAX_EDGES_PER_EVENT {
        return Err(ValidationError::field(
            "inputs",
            format!(
                "{} inputs x {} outputs make {} lineage edges, over the limit of {MAX_EDGES_PER_EVENT} per event: split the event",
                inputs.len(),
                outputs.len(),
                inputs.len().saturating_mul(outputs.len())
            ),
        ));
    }
    let started_at = optional_time(v, "started_at")?;
    let ended_at = optional_time(v, "ended_at")?;
    if let (Some(start), Some(end)) = (started_at, ended_at) {
        if end < start {
            return Err(ValidationError::field(
                "ended_at",
                format!(
                    "{} is before started_at {}",
                    end.to_rfc3339(),
                    start.to_rfc3339()
                ),
            ));
        }
    }
    let (event_id, payload_json) = event_id_of(v);
    Ok(LineageEvent {
        event_id,
        dataset_uuid,
        operation,
        crs_from,
        crs_to,
        processor_id,
        inputs,
        outputs,
        started_at,
        ended_at,
        payload_json,
    })
}

/// A string that is not blank; kept as sent (untrimmed).
fn required_text(v: &PyValue, field: &'static str) -> Result<String, ValidationError> {
    match v.get(field) {
        None => Err(ValidationError::field(field, "missing")),
        Some(PyValue::Str(s)) if s.trim().is_empty() => Err(ValidationError::field(
            field,
            format!("{} is empty or only whitespace", quote(s)),
        )),
        Some(PyValue::Str(s)) => Ok(s.clone()),
        Some(other) => Err(ValidationError::field(
            field,
            format!("expected a string, got {}", describe(other)),
        )),
    }
}

fn optional_string(v: &PyValue, field: &'static str) -> Result<Option<String>, ValidationError> {
    match v.get(field) {
        None | Some(PyValue::Null) => Ok(None),
        Some(PyValue::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ValidationError::field(
            field,
            format!("expected a string or null, got {}", describe(other)),
        )),
    }
}

fn optional_uuids(v: &PyValue, field: &'static str) -> Result<Option<Vec<Uuid>>, ValidationError> {
    let items = match v.get(field) {
        None | Some(PyValue::Null) => return Ok(None),
        Some(PyValue::Array(items)) => items,
        Some(other) => {
            return Err(ValidationError::field(
                field,
                format!("expected an array of UUID strings, got {}", describe(other)),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            PyValue::Str(s) => parse_uuid(s).ok_or_else(|| {
                ValidationError::field(field, format!("item {i}: {} is not a UUID", quote(s)))
            }),
            other => Err(ValidationError::field(
                field,
                format!("item {i}: expected a UUID string, got {}", describe(other)),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn optional_time(
    v: &PyValue,
    field: &'static str,
) -> Result<Option<DateTime<FixedOffset>>, ValidationError> {
    match v.get(field) {
        None | Some(PyValue::Null) => Ok(None),
        // chrono reads RFC 3339 with either case of 'T' and 'Z', as the RFC allows.
        Some(PyValue::Str(s)) => DateTime::parse_from_rfc3339(s).map(Some).map_err(|e| {
            ValidationError::field(
                field,
                format!(
                    "{} is not an RFC 3339 date-time like 2024-03-01T12:00:00Z ({e})",
                    quote(s)
                ),
            )
        }),
        Some(other) => Err(ValidationError::field(
            field,
            format!("expected an RFC 3339 string, got {}", describe(other)),
        )),
    }
}

/// A UUID in its hyphenated form (`8-4-4-4-12` hex digits, either case). The simple, braced and
/// URN forms `uuid` also reads are refused: they are not how datasets are named.
fn parse_uuid(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    let hyphenated = b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-');
    if !hyphenated {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// `value` for a message: quoted, control characters escaped, cut to 64 characters.
fn quote(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::from("'");
    for (i, c) in value.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('\'');
    out
}

/// A value's JSON type with its article, for messages ("a JSON array", "null").
fn describe(v: &PyValue) -> String {
    match v {
        PyValue::Null => "null".to_owned(),
        PyValue::Bool(b) => format!("a boolean ({b})"),
        PyValue::Int(i) if i.len() <= 24 => format!("an integer ({i})"),
        PyValue::Int(_) => "an integer".to_owned(),
        PyValue::Float(_) => format!("a float ({})", python_json::dumps(v)),
        PyValue::Str(s) => format!("a string ({})", quote(s)),
        PyValue::Array(_) => "a JSON array".to_owned(),
        PyValue::Object(_) => "a JSON object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID_A: &str = "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11";
    const UUID_B: &str = "201f0631-848a-48c5-8e46-b5103ac3aeaf";
    const UUID_C: &str = "33708700-6a37-4282-b8d5-f553a9f33434";

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("dataset_uuid", format!("\"{UUID_A}\"")),
            ("operation", "\"reproject\"".to_owned()),
            ("crs_from", "\"EPSG:4326\"".to_owned()),
            ("crs_to", "\"EPSG:3857\"".to_owned()),
            ("processor_id", "\"etl-worker-07\"".to_owned()),
        ]
    }

    /// The base payload with `changes` applied: `Some(json)` sets a field, `None` removes it.
    fn payload(changes: &[(&'static str, Option<&str>)]) -> String {
        let mut fields = base();
        for (name, change) in changes {
            fields.retain(|(n, _)| n != name);
            if let Some(json) = change {
                fields.push((name, (*json).to_owned()));
            }
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(n, v)| format!("\"{n}\": {v}"))
            .collect();
        format!("{{{}}}", body.join(", "))
    }

    fn event(changes: &[(&'static str, Option<&str>)]) -> LineageEvent {
        let text = payload(changes);
        parse_event(text.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES)
            .unwrap_or_else(|e| panic!("{text} should be valid: {e}"))
    }

    /// Asserts that the payload fails on `field`, with a reason naming it and containing `hint`.
    fn refused(changes: &[(&'static str, Option<&str>)], field: &str, hint: &str) {
        let text = payload(changes);
        let err = parse_event(text.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES)
            .expect_err(&format!("{text} should be refused"));
        assert_eq!(err.field_name(), Some(field), "{text}: {err}");
        assert_eq!(err.kind.as_str(), "invalid_field");
        assert!(
            err.reason.starts_with(&format!("{field}: ")),
            "{text}: reason {:?} should name {field}",
            err.reason
        );
        assert!(
            err.reason.contains(hint),
            "{text}: reason {:?} should mention {hint:?}",
            err.reason
        );
    }

    #[test]
    fn minimal_event_has_defaults() {
        let ev = event(&[]);
        assert_eq!(ev.dataset_uuid, Uuid::parse_str(UUID_A).expect("uuid"));
        assert_eq!(ev.operation, "reproject");
        assert_eq!(ev.processor_id, "etl-worker-07");
        assert_eq!(ev.crs_from.as_deref(), Some("EPSG:4326"));
        assert_eq!(ev.crs_to.as_deref(), Some("EPSG:3857"));
        assert!(ev.inputs.is_empty());
        assert_eq!(ev.outputs, vec![ev.dataset_uuid]);
        assert_eq!(ev.started_at, None);
        assert_eq!(ev.ended_at, None);
        // Same id as the `required_fields_only` fixture vector (Python-made).
        assert_eq!(
            ev.event_id.to_hex(),
            "b29f8cc3ce280627675025985721b2fd6ac902503722eecb31d5093cbb4f0e09"
        );
        assert_eq!(
            ev.event_id,
            super::super::EventId::of_canonical_json(&ev.payload_json)
        );
        assert!(ev
            .payload_json
            .starts_with("{\"crs_from\": \"EPSG:4326\", \"crs_to\""));
    }

    #[test]
    fn full_event_keeps_everything() {
        let ev = event(&[
            ("crs_from", Some("null")),
            (
                "inputs",
                Some(&format!("[\"{UUID_B}\", \"{}\"]", UUID_C.to_uppercase())),
            ),
            ("outputs", Some(&format!("[\"{UUID_C}\"]"))),
            ("started_at", Some("\"2024-03-01T00:00:40.076931z\"")),
            ("ended_at", Some("\"2024-03-01t02:00:00+01:00\"")),
            (
                "parameters",
                Some("{\"nodata\": -9999, \"z\": [1.0, 1e16]}"),
            ),
            ("db_uri", Some("\"postgresql://x\"")),
        ]);
        assert_eq!(ev.crs_from, None);
        assert_eq!(ev.inputs.len(), 2);
        assert_eq!(ev.inputs[1].to_string(), UUID_C);
        // Outputs kept as sent, even without dataset_uuid.
        assert_eq!(ev.outputs, vec![Uuid::parse_str(UUID_C).expect("uuid")]);
        assert!(ev.started_at.is_some() && ev.ended_at.is_some());
        assert!(ev.payload_json.contains("\"db_uri\": \"postgresql://x\""));
        assert!(ev
            .payload_json
            .contains("\"parameters\": {\"nodata\": -9999, \"z\": [1.0, 1e+16]}"));
        assert!(ev.payload_json.contains(&UUID_C.to_uppercase()));
    }

    #[test]
    fn uppercase_dataset_uuid_and_absent_crs_accepted() {
        let upper = format!("\"{}\"", UUID_A.to_uppercase());
        let ev = event(&[
            ("dataset_uuid", Some(&upper)),
            ("crs_from", None),
            ("crs_to", None),
        ]);
        assert_eq!(ev.dataset_uuid.to_string(), UUID_A);
        assert_eq!((ev.crs_from, ev.crs_to), (None, None));
    }

    #[test]
    fn equal_times_and_null_times_accepted() {
        let t = "\"2024-03-01T00:00:00Z\"";
        let ev = event(&[
            ("started_at", Some(t)),
            ("ended_at", Some("\"2024-03-01T01:00:00+01:00\"")),
        ]);
        assert_eq!(ev.started_at, ev.ended_at);
        let ev = event(&[("started_at", Some("null")), ("ended_at", Some(t))]);
        assert_eq!(ev.started_at, None);
    }

    #[test]
    fn dataset_uuid_refusals() {
        refused(&[("dataset_uuid", None)], "dataset_uuid", "missing");
        refused(
            &[("dataset_uuid", Some("null"))],
            "dataset_uuid",
            "expected a UUID string, got null",
        );
        refused(
            &[("dataset_uuid", Some("\"abc\""))],
            "dataset_uuid",
            "'abc' is not a UUID",
        );
        refused(
            &[("dataset_uuid", Some("42"))],
            "dataset_uuid",
            "got an integer (42)",
        );
        refused(
            &[("dataset_uuid", Some("\"6f1c2a9e3b7d4c1e9a550d2f7e8b4c11\""))],
            "dataset_uuid",
            "is not a UUID",
        );
        refused(
            &[(
                "dataset_uuid",
                Some("\"{6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11}\""),
            )],
            "dataset_uuid",
            "is not a UUID",
        );
        refused(
            &[(
                "dataset_uuid",
                Some("\"6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c1g\""),
            )],
            "dataset_uuid",
            "is not a UUID",
        );
        refused(
            &[(
                "dataset_uuid",
                Some("\"6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c1\u{e9}\""),
            )],
            "dataset_uuid",
            "is not a UUID",
        );
    }

    #[test]
    fn text_field_refusals() {
        for field in ["operation", "processor_id"] {
            refused(&[(field, None)], field, "missing");
            refused(
                &[(field, Some("null"))],
                field,
                "expected a string, got null",
            );
            refused(&[(field, Some("\"\""))], field, "empty or only whitespace");
            refused(
                &[(field, Some("\" \\t\\n\""))],
                field,
                "empty or only whitespace",
            );
            refused(
                &[(field, Some("[\"x\"]"))],
                field,
                "expected a string, got a JSON array",
            );
            refused(&[(field, Some("true"))], field, "got a boolean (true)");
        }
        for field in ["crs_from", "crs_to"] {
            refused(&[(field, Some("4326"))], field, "expected a string or null");
            refused(&[(field, Some("{\"a\": 1}"))], field, "got a JSON object");
        }
    }

    #[test]
    fn uuid_list_refusals() {
        for field in ["inputs", "outputs"] {
            refused(
                &[(field, Some(&format!("\"{UUID_B}\"")))],
                field,
                "expected an array",
            );
            refused(
                &[(field, Some(&format!("[\"{UUID_B}\", \"nope\"]")))],
                field,
                "item 1: 'nope' is not a UUID",
            );
            refused(
                &[(field, Some("[1.5]"))],
                field,
                "item 0: expected a UUID string, got a float (1.5)",
            );
        }
    }

    #[test]
    fn time_refusals() {
        refused(
            &[("started_at", Some("\"yesterday\""))],
            "started_at",
            "'yesterday' is not an RFC 3339",
        );
        refused(
            &[("ended_at", Some("\"2024-03-01T00:00:00\""))],
            "ended_at",
            "RFC 3339",
        );
        refused(
            &[("ended_at", Some("\"2024-02-30T00:00:00Z\""))],
            "ended_at",
            "RFC 3339",
        );
        refused(
            &[("started_at", Some("1709251200"))],
            "started_at",
            "expected an RFC 3339 string",
        );
        refused(
            &[
                ("started_at", Some("\"2024-03-01T00:00:01Z\"")),
                ("ended_at", Some("\"2024-03-01T00:00:00Z\"")),
            ],
            "ended_at",
            "is before started_at 2024-03-01T00:00:01+00:00",
        );
    }

    #[test]
    fn payload_level_refusals() {
        let big = vec![b' '; DEFAULT_MAX_PAYLOAD_BYTES + 1];
        let err = parse_event(&big, DEFAULT_MAX_PAYLOAD_BYTES).expect_err("too big");
        assert_eq!(err.kind, ValidationErrorKind::TooLarge);
        assert_eq!(
            err.reason,
            "payload is 1048577 bytes, over the 1048576-byte limit"
        );

        let text = payload(&[]);
        let err = parse_event(text.as_bytes(), 10).expect_err("over a small limit");
        assert_eq!(err.kind, ValidationErrorKind::TooLarge);
        assert!(
            parse_event(text.as_bytes(), text.len()).is_ok(),
            "the limit is inclusive"
        );

        let err = parse_event(b"[1, 2]", 100).expect_err("array");
        assert_eq!(err.kind, ValidationErrorKind::NotAnObject);
        assert_eq!(err.reason, "payload is a JSON array, expected an object");
        let err = parse_event(b"null", 100).expect_err("null");
        assert_eq!(err.reason, "payload is null, expected an object");

        let err = parse_event(b"{\"dataset_uuid\": 1 2}", 100).expect_err("bad JSON");
        assert_eq!(err.kind, ValidationErrorKind::NotJson);
        assert_eq!(
            err.reason,
            "not valid JSON: expected ',' or '}' at line 1 column 20 (byte 19)"
        );
        assert_eq!(err.to_string(), err.reason);
    }

    #[test]
    fn long_values_are_cut_in_reasons() {
        let long = format!("\"{}\"", "x".repeat(10_000));
        let text = payload(&[("dataset_uuid", Some(&long))]);
        let err = parse_event(text.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES).expect_err("long");
        assert!(err.reason.len() < 200, "{}", err.reason);
        assert!(err.reason.contains("...' is not a UUID"), "{}", err.reason);
    }

    #[test]
    fn event_from_value_matches_parse_event() {
        let text = payload(&[("inputs", Some(&format!("[\"{UUID_B}\"]")))]);
        let value = python_json::parse(text.as_bytes()).expect("json");
        let from_value = event_from_value(&value).expect("valid");
        let from_bytes = parse_event(text.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES).expect("valid");
        assert_eq!(from_value, from_bytes);
    }

    #[test]
    fn duplicate_keys_resolve_like_python_dict() {
        // Python: the last value wins, so this is valid and hashes like the deduplicated object.
        let text = format!(
            "{{\"dataset_uuid\": \"bad\", \"operation\": \"tile\", \"processor_id\": \"p\", \
             \"dataset_uuid\": \"{UUID_A}\"}}"
        );
        let ev = parse_event(text.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES).expect("valid");
        assert_eq!(
            ev.payload_json,
            format!("{{\"dataset_uuid\": \"{UUID_A}\", \"operation\": \"tile\", \"processor_id\": \"p\"}}")
        );
    }
}

#[cfg(test)]
mod edge_limit_tests {
    use super::*;

    #[test]
    fn too_many_edges_are_refused_with_a_reason() {
        let ids: Vec<String> = (0..101)
            .map(|i| format!("\"00000000-0000-4000-8000-{i:012}\""))
            .collect();
        let list = ids.join(", ");
        let payload = format!(
            r#"{{"dataset_uuid": "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11", "operation": "mosaic", "processor_id": "p", "inputs": [{list}], "outputs": [{list}]}}"#
        );
        let err = parse_event(payload.as_bytes(), DEFAULT_MAX_PAYLOAD_BYTES).unwrap_err();
        assert!(err.reason.contains("lineage edges"), "{}", err.reason);
        assert_eq!(err.field_name(), Some("inputs"));
    }
}

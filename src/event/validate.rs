//! PLACEHOLDER (being replaced): validation.
use super::python_json::{self, PyValue};
use super::{EventId, LineageEvent};

/// Default payload size limit.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ValidationError {
    /// Human-readable reason.
    pub reason: String,
}

/// Raw bytes → event.
pub fn parse_event(bytes: &[u8], max_bytes: usize) -> Result<LineageEvent, ValidationError> {
    if bytes.len() > max_bytes {
        return Err(ValidationError {
            reason: format!(
                "payload is {} bytes, over the {max_bytes}-byte limit",
                bytes.len()
            ),
        });
    }
    let v = python_json::parse(bytes).map_err(|e| ValidationError {
        reason: format!("not JSON: {e}"),
    })?;
    event_from_value(&v)
}

/// Parsed value → event.
pub fn event_from_value(v: &PyValue) -> Result<LineageEvent, ValidationError> {
    let PyValue::Object(fields) = v else {
        return Err(ValidationError {
            reason: "payload is not a JSON object".into(),
        });
    };
    let get = |k: &str| fields.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v);
    let s = |k: &str| match get(k) {
        Some(PyValue::Str(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(ValidationError {
            reason: format!("{k} missing or not a non-empty string"),
        }),
    };
    let dataset_uuid = uuid::Uuid::parse_str(&s("dataset_uuid")?).map_err(|_| ValidationError {
        reason: "dataset_uuid is not a UUID".into(),
    })?;
    let payload_json = python_json::dumps_sorted(v);
    Ok(LineageEvent {
        event_id: EventId::of_canonical_json(&payload_json),
        dataset_uuid,
        operation: s("operation")?,
        crs_from: s("crs_from").ok(),
        crs_to: s("crs_to").ok(),
        processor_id: s("processor_id")?,
        inputs: vec![],
        outputs: vec![dataset_uuid],
        started_at: None,
        ended_at: None,
        payload_json,
    })
}

//! Ingest: turns a request or file body (one JSON object, a JSON array, or NDJSON) into payloads
//! ready to enqueue, each validated, with a reason for every item that is refused.
//!
//! Used by `geoprov emit` and `POST /v1/events`. Not for: enqueueing (the caller hands the
//! accepted bytes to a `Producer`).

use bytes::Bytes;

use crate::event::python_json::{self, PyValue};
use crate::event::validate::event_from_value;
use crate::event::EventId;

/// One item of a body after validation.
#[derive(Debug, Clone)]
pub enum IngestItem {
    /// A valid event: its id and the bytes to enqueue (Python's `json.dumps` of the payload).
    Accepted { event_id: EventId, body: Bytes },
    /// An item that was refused, with why.
    Rejected { index: usize, reason: String },
}

/// The outcome of splitting and validating a body.
#[derive(Debug, Clone, Default)]
pub struct IngestBatch {
    /// Every item, in body order.
    pub items: Vec<IngestItem>,
}

impl IngestBatch {
    /// The bytes of the accepted items, in order.
    pub fn accepted_bodies(&self) -> Vec<Bytes> {
        self.items
            .iter()
            .filter_map(|i| match i {
                IngestItem::Accepted { body, .. } => Some(body.clone()),
                IngestItem::Rejected { .. } => None,
            })
            .collect()
    }

    /// How many items were accepted.
    pub fn accepted_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, IngestItem::Accepted { .. }))
            .count()
    }
}

/// Split `body` into documents and validate each one; items larger than `max_item_bytes` are
/// refused.
///
/// A body that parses as one JSON value is an object (one event) or an array (many events);
/// anything else is read as NDJSON, one document per non-blank line.
pub fn prepare(body: &[u8], max_item_bytes: usize) -> IngestBatch {
    let items = split(body)
        .into_iter()
        .enumerate()
        .map(|(index, doc)| match doc {
            Err(reason) => IngestItem::Rejected { index, reason },
            Ok(value) => validate_item(index, &value, max_item_bytes),
        })
        .collect();
    IngestBatch { items }
}

fn validate_item(index: usize, value: &PyValue, max_item_bytes: usize) -> IngestItem {
    let text = python_json::dumps(value);
    if text.len() > max_item_bytes {
        return IngestItem::Rejected {
            index,
            reason: format!(
                "payload is {} bytes, over the {max_item_bytes}-byte limit",
                text.len()
            ),
        };
    }
    match event_from_value(value) {
        Ok(event) => IngestItem::Accepted {
            event_id: event.event_id,
            body: Bytes::from(text),
        },
        Err(e) => IngestItem::Rejected {
            index,
            reason: e.reason,
        },
    }
}

/// Split a body into parsed documents (see [`prepare`]).
pub fn split(body: &[u8]) -> Vec<Result<PyValue, String>> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Vec::new();
    }
    match python_json::parse(trimmed) {
        Ok(PyValue::Array(items)) => items.into_iter().map(Ok).collect(),
        Ok(value) => vec![Ok(value)],
        Err(whole_err) => {
            let lines: Vec<(usize, &[u8])> = trimmed
                .split(|b| *b == b'\n')
                .enumerate()
                .filter(|(_, l)| !l.trim_ascii().is_empty())
                .collect();
            if lines.len() <= 1 {
                return vec![Err(format!("not valid JSON: {whole_err}"))];
            }
            lines
                .into_iter()
                .map(|(n, line)| {
                    python_json::parse(line.trim_ascii())
                        .map_err(|e| format!("line {}: not valid JSON: {e}", n + 1))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"dataset_uuid": "6f1c2a9e-3b7d-4c1e-9a55-0d2f7e8b4c11", "operation": "tile", "processor_id": "p1"}"#;

    #[test]
    fn object_array_and_ndjson() {
        assert_eq!(prepare(GOOD.as_bytes(), 1 << 20).accepted_count(), 1);
        let arr = format!("[{GOOD}, {GOOD}, 3]");
        let b = prepare(arr.as_bytes(), 1 << 20);
        assert_eq!(b.accepted_count(), 2);
        assert!(
            matches!(&b.items[2], IngestItem::Rejected { index: 2, reason } if reason.contains("object"))
        );
        let nd = format!("{GOOD}\n\n{{oops\n{GOOD}\n");
        let b = prepare(nd.as_bytes(), 1 << 20);
        assert_eq!(b.items.len(), 3);
        assert_eq!(b.accepted_count(), 2);
        assert!(
            matches!(&b.items[1], IngestItem::Rejected { reason, .. } if reason.contains("line 3"))
        );
    }

    #[test]
    fn oversized_items_are_refused() {
        let b = prepare(GOOD.as_bytes(), 10);
        assert!(
            matches!(&b.items[0], IngestItem::Rejected { reason, .. } if reason.contains("limit"))
        );
    }

    #[test]
    fn empty_body_has_no_items() {
        assert!(prepare(b"  \n", 100).items.is_empty());
    }
}

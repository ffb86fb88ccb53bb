//! PROV identifiers: qualified names for datasets, activities and agents, blank nodes for
//! relations, and the percent-encoding that keeps any text a valid local name.
//!
//! Not for: attribute values (`literal.rs`).

use serde_json::{json, Value};
use uuid::Uuid;

use crate::records::StoredEvent;

pub(super) fn dataset_id(dataset: Uuid) -> String {
    format!("dataset:{}", dataset.hyphenated())
}

pub(super) fn activity_id(event: &StoredEvent) -> String {
    format!("geoprov:event/{}", local_name(&event.event_id))
}

pub(super) fn agent_id(event: &StoredEvent) -> String {
    format!("geoprov:processor/{}", local_name(&event.processor_id))
}

/// A relation's blank-node identifier: `_:<kind>-<event_id>[-<n>]`.
pub(super) fn relation_id(kind: char, event: &StoredEvent, n: Option<u64>) -> String {
    let event_id = local_name(&event.event_id);
    match n {
        Some(n) => format!("_:{kind}-{event_id}-{n}"),
        None => format!("_:{kind}-{event_id}"),
    }
}

/// A value typed `xsd:QName`, the submission's form for a qualified name as a value.
pub(super) fn qname(name: &str) -> Value {
    json!({"$": name, "type": "xsd:QName"})
}

/// `raw` made safe as (part of) the local part of a qualified name: every byte but ASCII
/// letters, digits, `_`, `~`, and `-`/`.` inside the text is percent-encoded (`%2F`), so names
/// stay valid in PROV-N and XML and distinct texts stay distinct.
#[must_use]
pub fn local_name(raw: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &byte) in bytes.iter().enumerate() {
        let inner = i > 0 && i + 1 < bytes.len();
        let keep = byte.is_ascii_alphanumeric()
            || byte == b'_'
            || byte == b'~'
            || (inner && (byte == b'-' || byte == b'.'));
        if keep {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

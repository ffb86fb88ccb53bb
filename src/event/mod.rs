//! Lineage events: the pure part of the pipeline that turns raw payload bytes into a validated
//! [`LineageEvent`] with its deterministic [`EventId`].
//!
//! Not for: I/O of any kind. Nothing here is async or touches a broker or a store.
//!
//! - [`python_json`]: a JSON reader and writer that reproduce Python's `json` module byte for byte
//!   (number text, `NaN`/`Infinity`, `ensure_ascii`), which `serde_json` cannot do.
//! - [`event_id`]: `event_id = sha256(json.dumps(payload, sort_keys=True))`, the reference scheme.
//! - [`validate`]: raw bytes → [`LineageEvent`] or a [`ValidationError`] with a human reason.

pub mod event_id;
pub mod python_json;
pub mod validate;

pub use event_id::EventId;
pub use validate::{parse_event, ValidationError, DEFAULT_MAX_PAYLOAD_BYTES};

use chrono::{DateTime, FixedOffset};
use uuid::Uuid;

/// A payload that passed validation, ready to be stored.
///
/// Only values built by [`parse_event`] exist, so everything past `event/` can trust the fields
/// ("parse, don't validate").
#[derive(Debug, Clone, PartialEq)]
pub struct LineageEvent {
    /// SHA-256 of [`LineageEvent::payload_json`]; the idempotency key.
    pub event_id: EventId,
    /// The dataset this event produced (the seed's single output).
    pub dataset_uuid: Uuid,
    /// What was done: `reproject`, `tile`, `mosaic`, ... Never empty.
    pub operation: String,
    /// Source CRS as sent (`EPSG:32633`, WKT, ...), if any.
    pub crs_from: Option<String>,
    /// Target CRS as sent, if any.
    pub crs_to: Option<String>,
    /// Which processor (host, job, service) ran the operation. Never empty.
    pub processor_id: String,
    /// Datasets read by the operation (lineage edges point from these).
    pub inputs: Vec<Uuid>,
    /// Datasets written by the operation; `[dataset_uuid]` when the payload names none.
    pub outputs: Vec<Uuid>,
    /// Event time: when the operation started, if sent.
    pub started_at: Option<DateTime<FixedOffset>>,
    /// Event time: when the operation ended, if sent.
    pub ended_at: Option<DateTime<FixedOffset>>,
    /// Python's `json.dumps(payload, sort_keys=True)`: the exact bytes the id is the hash of.
    /// Stored verbatim so that `verify` can recompute the id from the row.
    pub payload_json: String,
}

impl LineageEvent {
    /// The event's lineage edges as their two ends: its distinct inputs and its distinct outputs,
    /// each sorted. The edges are every input x every output (a repeated id makes one edge, not
    /// two); the stores write exactly these, and `verify` expects exactly these.
    pub fn edge_ends(&self) -> (Vec<Uuid>, Vec<Uuid>) {
        let distinct = |ids: &[Uuid]| {
            let mut out = ids.to_vec();
            out.sort_unstable();
            out.dedup();
            out
        };
        (distinct(&self.inputs), distinct(&self.outputs))
    }
}

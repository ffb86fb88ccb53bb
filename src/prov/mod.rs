//! W3C PROV-JSON export of stored lineage events, streamed in flat memory.
//!
//! The output follows the PROV-JSON submission (<https://www.w3.org/submissions/prov-json/>):
//! one JSON object with a `prefix` map and one object per record kind, each mapping a record
//! identifier to its attributes.
//!
//! Not for: choosing the events (filters such as `--dataset`, `--since` and `--until` are the
//! caller's: the source yields only the selected events), reading the store, or showing
//! progress. Pure: no async and no I/O except into the [`Write`] it is given.
//!
//! # Mapping
//!
//! | PROV record | one per | identifier |
//! |---|---|---|
//! | `entity` | distinct dataset UUID (`dataset_uuid`, `inputs`, `outputs`) | `dataset:<uuid>` |
//! | `activity` | event | `geoprov:event/<event_id>` |
//! | `agent` | distinct `processor_id` | `geoprov:processor/<processor_id, percent-encoded>` |
//! | `used` | (event, input) | `_:u-<event_id>-<n>` |
//! | `wasGeneratedBy` | (event, output) | `_:g-<event_id>-<n>` |
//! | `wasAssociatedWith` | event | `_:a-<event_id>` |
//! | `wasDerivedFrom` | (event, output, input) | `_:d-<event_id>-<n>` |
//!
//! The outputs of an event are its payload's `outputs`, or its `dataset_uuid` when the payload
//! names none (as in [`crate::event::LineageEvent::outputs`]); a dataset listed twice counts once.
//! `used` carries `prov:time` = the event's `started_at` and `wasGeneratedBy` its `ended_at`,
//! where the payload has them. Relation identifiers are blank
//! nodes derived from the event id and a 1-based index, so exporting the same events again gives
//! the same document byte for byte.
//!
//! Attribute forms are the submission's: `prov:startTime`, `prov:endTime` and `prov:time` are
//! `xsd:dateTime` strings; other typed values are `{"$": ..., "type": ...}` objects
//! (`prov:type` is an `xsd:QName`, `geoprov:recorded_at` an `xsd:dateTime`); plain strings are
//! `xsd:string`. Payload sub-objects (`parameters`, `bbox`, `checksums`) become JSON text in a
//! string, because PROV attribute values are literals. That text is standard JSON: the
//! non-finite floats Python writes as bare `NaN`/`Infinity` become the strings `"NaN"`,
//! `"Infinity"` and `"-Infinity"`.
//!
//! # Streaming
//!
//! PROV-JSON groups records by kind, so the writer asks for the events once per section
//! ([`Section::ALL`], seven passes) and keeps nothing of an event once it is written. Memory is
//! flat in the number of events except for the two de-duplication sets, which hold one entry per
//! *distinct* dataset (a 16-byte UUID, about 20 to 40 bytes with the hash table's overhead) during
//! the entity pass, and one per distinct processor id (its text) during the agent pass; each is
//! freed when its pass ends. Beyond those, one parsed payload is held at a time: nothing grows
//! with the size of `parameters` or other payload fields. A million events over a
//! million datasets costs tens of megabytes at the peak; a million events from a few thousand
//! datasets costs well under one.
//!
//! # Files
//!
//! `mod.rs` (the namespaces, sections and counts, [`ProvDocument`]), `writer.rs`
//! ([`ProvJsonWriter`]), `payload.rs` (an event's fields), `names.rs` (identifiers),
//! `literal.rs` (attribute values).

mod literal;
mod names;
mod payload;
mod writer;

#[cfg(test)]
mod tests;

pub use literal::json_text;
pub use names::local_name;
pub use writer::ProvJsonWriter;

use std::io::{self, Write};

use crate::records::StoredEvent;

/// The W3C PROV namespace, prefix `prov`.
pub const PROV_NAMESPACE: &str = "http://www.w3.org/ns/prov#";

/// XML Schema datatypes, prefix `xsd`.
pub const XSD_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema#";

/// geoprov's own namespace for geospatial attributes, operations and identifiers, prefix
/// `geoprov`.
pub const GEOPROV_NAMESPACE: &str = "https://geoprov.dev/ns#";

/// Datasets are named by their UUID URN, prefix `dataset`: `dataset:<uuid>` is `urn:uuid:<uuid>`.
pub const DATASET_NAMESPACE: &str = "urn:uuid:";

/// The `prefix` map of every exported document, in the order written.
pub const PREFIXES: [(&str, &str); 4] = [
    ("prov", PROV_NAMESPACE),
    ("xsd", XSD_NAMESPACE),
    ("geoprov", GEOPROV_NAMESPACE),
    ("dataset", DATASET_NAMESPACE),
];

/// One record kind of the document: one pass over the events writes one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// `entity`: one per distinct dataset.
    Entity,
    /// `activity`: one per event.
    Activity,
    /// `agent`: one per distinct processor.
    Agent,
    /// `used`: activity read an input dataset.
    Used,
    /// `wasGeneratedBy`: output dataset produced by the activity.
    WasGeneratedBy,
    /// `wasAssociatedWith`: activity run by the processor.
    WasAssociatedWith,
    /// `wasDerivedFrom`: output dataset derived from an input dataset through the activity.
    WasDerivedFrom,
}

impl Section {
    /// Every section, in the order a document is written.
    pub const ALL: [Section; 7] = [
        Section::Entity,
        Section::Activity,
        Section::Agent,
        Section::Used,
        Section::WasGeneratedBy,
        Section::WasAssociatedWith,
        Section::WasDerivedFrom,
    ];

    /// The PROV-JSON key of the section (`entity`, `wasGeneratedBy`, ...).
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Section::Entity => "entity",
            Section::Activity => "activity",
            Section::Agent => "agent",
            Section::Used => "used",
            Section::WasGeneratedBy => "wasGeneratedBy",
            Section::WasAssociatedWith => "wasAssociatedWith",
            Section::WasDerivedFrom => "wasDerivedFrom",
        }
    }
}

/// How many records of each kind a document holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProvCounts {
    /// Events read (in each pass).
    pub events: u64,
    /// `entity` records (distinct datasets).
    pub entities: u64,
    /// `activity` records (events).
    pub activities: u64,
    /// `agent` records (distinct processors).
    pub agents: u64,
    /// `used` records.
    pub used: u64,
    /// `wasGeneratedBy` records.
    pub generations: u64,
    /// `wasAssociatedWith` records.
    pub associations: u64,
    /// `wasDerivedFrom` records.
    pub derivations: u64,
}

impl ProvCounts {
    /// All relation records together.
    #[must_use]
    pub fn relations(&self) -> u64 {
        self.used + self.generations + self.associations + self.derivations
    }
}

/// Receives the events of one pass; see [`ProvDocument::write`].
pub type EventSink<'a> = dyn FnMut(&StoredEvent) -> io::Result<()> + 'a;

/// Hands every selected event to the sink, once per pass; see [`ProvDocument::write`].
pub type EventSource<'a> = dyn FnMut(&mut EventSink<'_>) -> io::Result<()> + 'a;

/// The one-call export.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProvDocument;

impl ProvDocument {
    /// Write the PROV-JSON document for the events `source` yields into `out`.
    ///
    /// `source` is called once per [`Section`] (seven times) and each time MUST hand every
    /// selected event, once each, to the sink it is given; it MUST yield the same events every
    /// time (bound a store scan to the log size read before the first pass). A pass that yields
    /// a different set of events fails the export. Errors from `source` or the sink abort it.
    ///
    /// `out` is buffered here; the written bytes are flushed before this returns.
    ///
    /// # Errors
    ///
    /// Any I/O error of `out` or `source`; [`io::ErrorKind::InvalidData`] when a stored event
    /// cannot be mapped (its payload does not parse, a UUID or time does not parse) or the
    /// passes disagree.
    pub fn write<W: Write>(out: W, source: &mut EventSource<'_>) -> io::Result<ProvCounts> {
        let mut writer = ProvJsonWriter::new(io::BufWriter::new(out))?;
        for section in Section::ALL {
            writer.begin_section(section)?;
            source(&mut |event| writer.push(event))?;
            writer.end_section()?;
        }
        let (mut out, counts) = writer.finish()?;
        out.flush()?;
        Ok(counts)
    }
}

pub(crate) fn bad_event(event: &StoredEvent, reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "event {} at log position {}: {reason}",
            event.event_id, event.position
        ),
    )
}

pub(crate) fn misuse(message: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("ProvJsonWriter: {message}"),
    )
}

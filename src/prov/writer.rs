//! The streaming writer: one section of the PROV-JSON document per pass over the events, with
//! a fingerprint that proves every pass saw the same events.
//!
//! Not for: reading a payload's fields (`payload.rs`) or naming records (`names.rs`).

use std::collections::HashSet;
use std::io::{self, Write};

use chrono::SecondsFormat;
use serde_json::{json, Value};
use uuid::Uuid;

use super::literal::json_text;
use super::names::{activity_id, agent_id, dataset_id, local_name, qname, relation_id};
use super::payload::{dataset_uuid, Payload};
use super::{misuse, ProvCounts, Section, PREFIXES};
use crate::records::StoredEvent;

/// A streaming PROV-JSON writer, driven one section at a time.
///
/// [`ProvDocument::write`](super::ProvDocument::write) drives it from a re-runnable source; a caller that pages through a
/// store asynchronously drives it directly:
///
/// ```text
/// let mut w = ProvJsonWriter::new(out)?;            // writes the prefix map
/// for section in Section::ALL {
///     w.begin_section(section)?;
///     for event in /* every selected event, same set each pass */ { w.push(&event)?; }
///     w.end_section()?;
/// }
/// let (out, counts) = w.finish()?;                   // closes the document
/// ```
///
/// Sections MUST be written in [`Section::ALL`] order, each exactly once; calls out of order
/// fail with [`io::ErrorKind::InvalidInput`] and leave the output incomplete.
#[derive(Debug)]
pub struct ProvJsonWriter<W: Write> {
    /// Where the document goes; not buffered here.
    out: W,
    /// Index in [`Section::ALL`] of the next section to begin.
    next: usize,
    /// The section between `begin_section` and `end_section`, if any.
    current: Option<Section>,
    /// Records written in the current section. The section's key is written with its first
    /// record, so a section without records is left out of the document.
    in_section: u64,
    /// Datasets already written as entities (entity pass only; emptied after it).
    seen_datasets: HashSet<Uuid>,
    /// Processors already written as agents (agent pass only; emptied after it).
    seen_agents: HashSet<Box<str>>,
    /// What the first pass saw; every later pass must see the same.
    first_pass: Option<PassFingerprint>,
    /// What the current pass has seen so far.
    this_pass: PassFingerprint,
    counts: ProvCounts,
}

impl<W: Write> ProvJsonWriter<W> {
    /// Start a document: writes its opening and the `prefix` map.
    ///
    /// # Errors
    ///
    /// Any I/O error of `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"{\n  \"prefix\": {")?;
        for (i, (prefix, namespace)) in PREFIXES.iter().enumerate() {
            out.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
            serde_json::to_writer(&mut out, prefix)?;
            out.write_all(b": ")?;
            serde_json::to_writer(&mut out, namespace)?;
        }
        out.write_all(b"\n  }")?;
        Ok(ProvJsonWriter {
            out,
            next: 0,
            current: None,
            in_section: 0,
            seen_datasets: HashSet::new(),
            seen_agents: HashSet::new(),
            first_pass: None,
            this_pass: PassFingerprint::default(),
            counts: ProvCounts::default(),
        })
    }

    /// Begin the pass that writes `section`, which MUST be the next one in [`Section::ALL`].
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when a section is open or `section` is not the next one.
    pub fn begin_section(&mut self, section: Section) -> io::Result<()> {
        if let Some(open) = self.current {
            return Err(misuse(format!(
                "begin_section({}) while section {} is open",
                section.key(),
                open.key()
            )));
        }
        match Section::ALL.get(self.next) {
            Some(&expected) if expected == section => {}
            Some(&expected) => {
                return Err(misuse(format!(
                    "begin_section({}): the next section is {}",
                    section.key(),
                    expected.key()
                )))
            }
            None => {
                return Err(misuse(format!(
                    "begin_section({}): every section is already written",
                    section.key()
                )))
            }
        }
        self.current = Some(section);
        self.in_section = 0;
        self.this_pass = PassFingerprint::default();
        Ok(())
    }

    /// Write the records of the current section that come from `event`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] outside a section; [`io::ErrorKind::InvalidData`] when
    /// the event cannot be mapped; any I/O error of the output.
    pub fn push(&mut self, event: &StoredEvent) -> io::Result<()> {
        let Some(section) = self.current else {
            return Err(misuse("push outside a section".to_owned()));
        };
        self.this_pass.add(event);
        match section {
            Section::Entity => self.push_entities(event),
            Section::Activity => self.push_activity(event),
            Section::Agent => self.push_agent(event),
            Section::Used => self.push_used(event),
            Section::WasGeneratedBy => self.push_generations(event),
            Section::WasAssociatedWith => self.push_association(event),
            Section::WasDerivedFrom => self.push_derivations(event),
        }
    }

    /// End the current section.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when no section is open; [`io::ErrorKind::InvalidData`]
    /// when this pass saw other events than the first pass; any I/O error of the output.
    pub fn end_section(&mut self) -> io::Result<()> {
        let Some(section) = self.current.take() else {
            return Err(misuse("end_section without begin_section".to_owned()));
        };
        if self.in_section > 0 {
            self.out.write_all(b"\n  }")?;
        }
        match self.first_pass {
            None => {
                self.first_pass = Some(self.this_pass);
                self.counts.events = self.this_pass.events;
            }
            Some(first) if first != self.this_pass => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the event source yielded other events in the {} pass ({} events) than \
                         in the first pass ({} events); it must yield the same events every time",
                        section.key(),
                        self.this_pass.events,
                        first.events
                    ),
                ));
            }
            Some(_) => {}
        }
        // The sets only serve their own pass; give the memory back at once.
        self.seen_datasets = HashSet::new();
        self.seen_agents = HashSet::new();
        self.next += 1;
        Ok(())
    }

    /// Close the document and hand back the output and the record counts.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] unless every section was written; any I/O error of the
    /// output (which is flushed).
    pub fn finish(mut self) -> io::Result<(W, ProvCounts)> {
        if let Some(open) = self.current {
            return Err(misuse(format!(
                "finish while section {} is open",
                open.key()
            )));
        }
        if let Some(missing) = Section::ALL.get(self.next) {
            return Err(misuse(format!("finish before section {}", missing.key())));
        }
        self.out.write_all(b"\n}\n")?;
        self.out.flush()?;
        Ok((self.out, self.counts))
    }

    fn push_entities(&mut self, event: &StoredEvent) -> io::Result<()> {
        let payload = Payload::parse(event)?;
        let mut datasets = vec![dataset_uuid(event)?];
        datasets.extend(payload.inputs(event)?);
        datasets.extend(payload.outputs(event)?);
        for dataset in datasets {
            if self.seen_datasets.insert(dataset) {
                let attributes = [("prov:type", qname("geoprov:Dataset"))];
                self.write_record(&dataset_id(dataset), &attributes)?;
                self.counts.entities += 1;
            }
        }
        Ok(())
    }

    fn push_activity(&mut self, event: &StoredEvent) -> io::Result<()> {
        let payload = Payload::parse(event)?;
        let mut attributes = vec![(
            "prov:type",
            qname(&format!("geoprov:{}", local_name(&event.operation))),
        )];
        if let Some(start) = payload.time(event, "started_at")? {
            attributes.push(("prov:startTime", Value::String(start)));
        }
        if let Some(end) = payload.time(event, "ended_at")? {
            attributes.push(("prov:endTime", Value::String(end)));
        }
        attributes.push(("geoprov:event_id", Value::String(event.event_id.clone())));
        attributes.push(("geoprov:operation", Value::String(event.operation.clone())));
        if let Some(crs) = &event.crs_from {
            attributes.push(("geoprov:crs_from", Value::String(crs.clone())));
        }
        if let Some(crs) = &event.crs_to {
            attributes.push(("geoprov:crs_to", Value::String(crs.clone())));
        }
        attributes.push((
            "geoprov:recorded_at",
            json!({
                "$": event.recorded_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                "type": "xsd:dateTime",
            }),
        ));
        for (field, attribute) in [
            ("parameters", "geoprov:parameters"),
            ("bbox", "geoprov:bbox"),
            ("checksums", "geoprov:checksums"),
        ] {
            if let Some(value) = payload.field(field) {
                attributes.push((attribute, Value::String(json_text(value)?)));
            }
        }
        self.write_record(&activity_id(event), &attributes)?;
        self.counts.activities += 1;
        Ok(())
    }

    fn push_agent(&mut self, event: &StoredEvent) -> io::Result<()> {
        if self.seen_agents.contains(event.processor_id.as_str()) {
            return Ok(());
        }
        self.seen_agents.insert(event.processor_id.as_str().into());
        let attributes = [
            ("prov:type", qname("prov:SoftwareAgent")),
            (
                "geoprov:processor_id",
                Value::String(event.processor_id.clone()),
            ),
        ];
        self.write_record(&agent_id(event), &attributes)?;
        self.counts.agents += 1;
        Ok(())
    }

    fn push_used(&mut self, event: &StoredEvent) -> io::Result<()> {
        let payload = Payload::parse(event)?;
        let time = payload.time(event, "started_at")?;
        let inputs = payload.inputs(event)?;
        self.counts.used += self.push_dataset_relations(event, 'u', time, inputs, |a, e| {
            [("prov:activity", a), ("prov:entity", e)]
        })?;
        Ok(())
    }

    fn push_generations(&mut self, event: &StoredEvent) -> io::Result<()> {
        let payload = Payload::parse(event)?;
        let time = payload.time(event, "ended_at")?;
        let outputs = payload.outputs(event)?;
        self.counts.generations +=
            self.push_dataset_relations(event, 'g', time, outputs, |a, e| {
                [("prov:entity", e), ("prov:activity", a)]
            })?;
        Ok(())
    }

    /// One `kind` relation (`u` used, `g` generation) between the event's activity and each of
    /// `datasets`, numbered from 1, with `prov:time` when the event has that time; `pair` puts
    /// the activity and entity attributes in the order that relation lists them. Returns how many
    /// were written.
    fn push_dataset_relations(
        &mut self,
        event: &StoredEvent,
        kind: char,
        time: Option<String>,
        datasets: Vec<Uuid>,
        pair: fn(Value, Value) -> [(&'static str, Value); 2],
    ) -> io::Result<u64> {
        let activity = activity_id(event);
        let mut written = 0;
        for (n, dataset) in (1u64..).zip(datasets) {
            let mut attributes = pair(
                Value::String(activity.clone()),
                Value::String(dataset_id(dataset)),
            )
            .to_vec();
            if let Some(time) = &time {
                attributes.push(("prov:time", Value::String(time.clone())));
            }
            self.write_record(&relation_id(kind, event, Some(n)), &attributes)?;
            written += 1;
        }
        Ok(written)
    }

    fn push_association(&mut self, event: &StoredEvent) -> io::Result<()> {
        let attributes = [
            ("prov:activity", Value::String(activity_id(event))),
            ("prov:agent", Value::String(agent_id(event))),
        ];
        self.write_record(&relation_id('a', event, None), &attributes)?;
        self.counts.associations += 1;
        Ok(())
    }

    fn push_derivations(&mut self, event: &StoredEvent) -> io::Result<()> {
        let payload = Payload::parse(event)?;
        let inputs = payload.inputs(event)?;
        if inputs.is_empty() {
            return Ok(());
        }
        let activity = activity_id(event);
        let mut n = 0u64;
        for output in payload.outputs(event)? {
            for &input in &inputs {
                n += 1;
                let attributes = [
                    ("prov:generatedEntity", Value::String(dataset_id(output))),
                    ("prov:usedEntity", Value::String(dataset_id(input))),
                    ("prov:activity", Value::String(activity.clone())),
                ];
                self.write_record(&relation_id('d', event, Some(n)), &attributes)?;
                self.counts.derivations += 1;
            }
        }
        Ok(())
    }

    /// Write `"id": {attributes}` as the next record of the current section, one per line.
    fn write_record(&mut self, id: &str, attributes: &[(&str, Value)]) -> io::Result<()> {
        if self.in_section == 0 {
            let key = self.current.map_or("", Section::key);
            self.out.write_all(b",\n  ")?;
            serde_json::to_writer(&mut self.out, key)?;
            self.out.write_all(b": {\n    ")?;
        } else {
            self.out.write_all(b",\n    ")?;
        }
        self.in_section += 1;
        serde_json::to_writer(&mut self.out, id)?;
        self.out.write_all(b": {")?;
        for (i, (name, value)) in attributes.iter().enumerate() {
            if i > 0 {
                self.out.write_all(b", ")?;
            }
            serde_json::to_writer(&mut self.out, name)?;
            self.out.write_all(b": ")?;
            serde_json::to_writer(&mut self.out, value)?;
        }
        self.out.write_all(b"}")
    }
}

/// Which events a pass saw, order aside: their number and a sum of 64-bit hashes of
/// `(position, event_id)`. Two passes over the same events always agree; a pass that misses,
/// repeats or adds an event disagrees (but for a 2^-64 accident).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PassFingerprint {
    events: u64,
    hash_sum: u64,
}

impl PassFingerprint {
    fn add(&mut self, event: &StoredEvent) {
        // FNV-1a: stable across runs and platforms, unlike std's randomly keyed hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in event
            .position
            .to_le_bytes()
            .iter()
            .chain(event.event_id.as_bytes())
        {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.events += 1;
        self.hash_sum = self.hash_sum.wrapping_add(hash);
    }
}

//! An event's payload as the writer reads it: the top-level fields, the datasets it uses and
//! generates, its event times.
//!
//! Not for: validating events (that is [`crate::event`]; stored payloads were validated once).

use std::collections::HashSet;
use std::io;

use chrono::{DateTime, SecondsFormat};
use uuid::Uuid;

use super::bad_event;
use super::literal::short_text;
use crate::event::python_json::{self, PyValue};
use crate::records::StoredEvent;

/// The fields of an event's payload, parsed once per event and pass.
pub(super) struct Payload {
    fields: Vec<(String, PyValue)>,
}

impl Payload {
    pub(super) fn parse(event: &StoredEvent) -> io::Result<Payload> {
        match python_json::parse(event.payload_json.as_bytes()) {
            Ok(PyValue::Object(fields)) => Ok(Payload { fields }),
            Ok(_) => Err(bad_event(event, "payload_json is not a JSON object")),
            Err(error) => Err(bad_event(
                event,
                &format!("payload_json does not parse: {error}"),
            )),
        }
    }

    /// The value of a top-level field; the last one wins, as in Python's `json.loads`. A JSON
    /// `null` counts as absent.
    pub(super) fn field(&self, name: &str) -> Option<&PyValue> {
        self.fields
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .filter(|value| !matches!(value, PyValue::Null))
    }

    /// The payload's `inputs`, each dataset once, in the order first listed.
    pub(super) fn inputs(&self, event: &StoredEvent) -> io::Result<Vec<Uuid>> {
        self.uuid_list(event, "inputs")
    }

    /// The payload's `outputs`, each dataset once, or `[dataset_uuid]` when it names none.
    pub(super) fn outputs(&self, event: &StoredEvent) -> io::Result<Vec<Uuid>> {
        let outputs = self.uuid_list(event, "outputs")?;
        if outputs.is_empty() {
            return Ok(vec![dataset_uuid(event)?]);
        }
        Ok(outputs)
    }

    pub(super) fn uuid_list(&self, event: &StoredEvent, name: &str) -> io::Result<Vec<Uuid>> {
        let Some(value) = self.field(name) else {
            return Ok(Vec::new());
        };
        let PyValue::Array(items) = value else {
            return Err(bad_event(event, &format!("{name} is not an array")));
        };
        let mut seen = HashSet::with_capacity(items.len());
        let mut list = Vec::with_capacity(items.len());
        for item in items {
            let uuid = match item {
                PyValue::Str(text) => Uuid::parse_str(text).ok(),
                _ => None,
            };
            let Some(uuid) = uuid else {
                return Err(bad_event(
                    event,
                    &format!("{name} holds {}, not a UUID", short_text(item)),
                ));
            };
            if seen.insert(uuid) {
                list.push(uuid);
            }
        }
        Ok(list)
    }

    /// An RFC 3339 event time, rewritten in the `xsd:dateTime` form (`T`, `Z` for UTC, the
    /// sender's offset otherwise).
    pub(super) fn time(&self, event: &StoredEvent, name: &str) -> io::Result<Option<String>> {
        let Some(value) = self.field(name) else {
            return Ok(None);
        };
        let parsed = match value {
            PyValue::Str(text) => DateTime::parse_from_rfc3339(text).ok(),
            _ => None,
        };
        match parsed {
            Some(time) => Ok(Some(time.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
            None => Err(bad_event(
                event,
                &format!("{name} is {}, not an RFC 3339 time", short_text(value)),
            )),
        }
    }
}

/// The canonical UUID of the event's `dataset_uuid` column.
pub(super) fn dataset_uuid(event: &StoredEvent) -> io::Result<Uuid> {
    Uuid::parse_str(&event.dataset_uuid).map_err(|_| {
        bad_event(
            event,
            &format!("dataset_uuid {:?} is not a UUID", event.dataset_uuid),
        )
    })
}

//! The event id: `sha256(json.dumps(payload, sort_keys=True))`, the reference Celery task's
//! idempotency key, so that geoprov and a Python worker agree on every id.
//!
//! Not for: producing the canonical text (that is [`python_json::dumps_sorted`]) or deciding
//! whether a payload is an event (that is [`super::validate`]).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::python_json::{self, PyValue};

/// The deterministic id of an event: the SHA-256 of its canonical JSON text.
///
/// Shown, serialized and parsed as 64 hex digits (written lowercase, read in either case).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId([u8; 32]);

impl EventId {
    /// The id of an event whose canonical text (`json.dumps(payload, sort_keys=True)`) is
    /// `canonical`: the SHA-256 of its UTF-8 bytes.
    pub fn of_canonical_json(canonical: &str) -> EventId {
        EventId(Sha256::digest(canonical.as_bytes()).into())
    }

    /// Wraps a raw 32-byte digest, e.g. one read back from a store column.
    pub const fn from_bytes(bytes: [u8; 32]) -> EventId {
        EventId(bytes)
    }

    /// Parses exactly 64 hex digits (upper or lower case); anything else is `None`.
    pub fn from_hex(s: &str) -> Option<EventId> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(EventId(out))
    }

    /// The 64 lowercase hex digits, as Python's `hexdigest()` prints them.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32-byte digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The id of a stored payload text, by the definition of the id:
/// `sha256(json.dumps(json.loads(text), sort_keys=True))`.
///
/// The stored text need not be the sorted dump: the reference Python task stores
/// `json.dumps(payload)` in insertion order while it hashes the sorted dump, so rows it wrote
/// (and geoprov adopted) hash only through this re-parse, never as they are stored.
///
/// # Errors
///
/// When `text` is not JSON that Python's `json.loads` would read.
pub fn event_id_of_payload_json(text: &str) -> Result<EventId, python_json::PyJsonError> {
    Ok(event_id_of(&python_json::parse(text.as_bytes())?).0)
}

/// The id of a parsed payload and the canonical text it is the hash of.
pub fn event_id_of(v: &PyValue) -> (EventId, String) {
    let canonical = python_json::dumps_sorted(v);
    (EventId::of_canonical_json(&canonical), canonical)
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// Why a string is not an [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is 64 hexadecimal digits; got {shown:?}")]
pub struct ParseEventIdError {
    /// The offending text, cut to a readable length.
    shown: String,
}

impl FromStr for EventId {
    type Err = ParseEventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventId::from_hex(s).ok_or_else(|| ParseEventIdError {
            shown: s.chars().take(80).collect(),
        })
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HexVisitor;

        impl Visitor<'_> for HexVisitor {
            type Value = EventId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event id of 64 hexadecimal digits")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<EventId, E> {
                EventId::from_hex(s).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }

        deserializer.deserialize_str(HexVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sha256(b"{}")`, from `hashlib.sha256(json.dumps({}, sort_keys=True).encode()).hexdigest()`.
    const EMPTY_OBJECT_ID: &str =
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn a_payload_in_insertion_order_has_the_id_of_its_sorted_dump() {
        // json.dumps({"b": 1, "a": "Zürich"}) and its sorted dump name one event.
        let unsorted = r#"{"b": 1.5, "a": "Z\u00fcrich", "c": {"y": [1, 2], "x": null}}"#;
        let sorted = r#"{"a": "Z\u00fcrich", "b": 1.5, "c": {"x": null, "y": [1, 2]}}"#;
        let id = event_id_of_payload_json(unsorted).expect("JSON");
        assert_eq!(id, EventId::of_canonical_json(sorted));
        assert_ne!(id, EventId::of_canonical_json(unsorted));
        assert!(event_id_of_payload_json("{").is_err());
    }

    #[test]
    fn id_of_empty_object_matches_python() {
        let (id, canonical) = event_id_of(&PyValue::Object(Vec::new()));
        assert_eq!(canonical, "{}");
        assert_eq!(id.to_hex(), EMPTY_OBJECT_ID);
        assert_eq!(id, EventId::of_canonical_json("{}"));
    }

    #[test]
    fn hex_round_trips_in_either_case() {
        let id = EventId::from_hex(EMPTY_OBJECT_ID).expect("valid hex");
        assert_eq!(id.to_string(), EMPTY_OBJECT_ID);
        assert_eq!(format!("{id:?}"), format!("EventId({EMPTY_OBJECT_ID})"));
        let upper = EMPTY_OBJECT_ID.to_ascii_uppercase();
        assert_eq!(EventId::from_hex(&upper), Some(id));
        assert_eq!(upper.parse::<EventId>(), Ok(id));
        assert_eq!(EventId::from_bytes(*id.as_bytes()), id);
    }

    #[test]
    fn from_hex_refuses_anything_but_64_hex_digits() {
        for bad in [
            "",
            &EMPTY_OBJECT_ID[..63],
            &format!("{EMPTY_OBJECT_ID}0"),
            &format!("{}g", &EMPTY_OBJECT_ID[..63]),
            &format!(" {}", &EMPTY_OBJECT_ID[..63]),
            &format!("0x{}", &EMPTY_OBJECT_ID[..62]),
            "é".repeat(32).as_str(),
        ] {
            assert_eq!(EventId::from_hex(bad), None, "{bad:?}");
            let err = bad.parse::<EventId>().expect_err(bad);
            assert!(err.to_string().contains("64 hexadecimal digits"), "{err}");
        }
    }

    #[test]
    fn serde_uses_the_hex_string() {
        let id = EventId::of_canonical_json("{}");
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{EMPTY_OBJECT_ID}\""));
        let back: EventId = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, id);
        // An escaped string cannot be borrowed; the visitor must still accept it.
        let escaped = format!("\"\\u0034{}\"", &EMPTY_OBJECT_ID[1..]);
        let back: EventId = serde_json::from_str(&escaped).expect("deserialize escaped");
        assert_eq!(back, id);
        let err = serde_json::from_str::<EventId>("\"abc\"").expect_err("short");
        assert!(err.to_string().contains("64 hexadecimal digits"), "{err}");
        assert!(serde_json::from_str::<EventId>("42").is_err());
    }

    #[test]
    fn ids_order_by_bytes() {
        let low = EventId::from_bytes([0; 32]);
        let high = EventId::from_bytes([0xff; 32]);
        assert!(low < high);
        assert_eq!(high.to_hex(), "f".repeat(64));
    }
}

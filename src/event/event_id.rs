//! PLACEHOLDER (being replaced): the event id type.
use sha2::{Digest, Sha256};

/// The deterministic id of an event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId([u8; 32]);

impl EventId {
    /// SHA-256 of the canonical JSON text.
    pub fn of_canonical_json(canonical: &str) -> EventId {
        EventId(Sha256::digest(canonical.as_bytes()).into())
    }
    /// Parse 64 hex characters.
    pub fn from_hex(s: &str) -> Option<EventId> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(EventId(out))
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl std::fmt::Debug for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventId({})", self.to_hex())
    }
}

//! The canonical leaf encoding of a stored event: the exact bytes whose [`leaf_hash`](super::leaf_hash) is the
//! event's leaf in the log. Writers (the store's commit path) and verifiers (`geoprov verify`,
//! an offline auditor re-implementing this in another language) MUST produce the same bytes,
//! so the format is fixed here, byte for byte.
//!
//! # Format `geoprov/leaf/v1`
//!
//! ```text
//! leaf_data = "geoprov/leaf/v1"                       15 ASCII bytes, no length, no terminator
//!             || u64be(position)                      the row's log position, 8 bytes
//!             || u32be(len(event_id))   || event_id   lowercase hex SHA-256, 64 bytes
//!             || u32be(len(recorded_at)) || recorded_at
//!             || u32be(len(payload_json)) || payload_json
//! ```
//!
//! - `u64be(x)` / `u32be(x)` are `x` as an 8- / 4-byte big-endian unsigned integer; a `u32be`
//!   prefix is the length in **bytes** of the UTF-8 string that follows (not in characters).
//! - `position` is the row's `log_position` (0-based). It is also the leaf's index in the tree;
//!   putting it in the leaf as well makes every stored row self-describing, so a row moved to
//!   another position (two positions swapped, a row inserted and the later ones renumbered) no
//!   longer matches its own stored `leaf_hash`, and `verify` names the exact position.
//! - `event_id` is the stored `event_id` column as stored (lowercase hex, see the design's
//!   Events section).
//! - `recorded_at` is the row's record timestamp (the seed's `timestamp` column, when the row
//!   was written, not the event's own time) rendered by [`format_recorded_at`]: RFC 3339 in
//!   UTC with exactly six fractional digits and a `Z`, e.g. `2024-05-06T07:08:09.123456Z`.
//!   Sub-microsecond digits are truncated. The verifier formats the value the store returns,
//!   so a writer MUST hash exactly the timestamp it stores: truncate it to microseconds (what
//!   PostgreSQL `timestamptz` keeps) before both storing and hashing.
//! - `payload_json` is the stored `payload_json` column, byte for byte as stored (no
//!   re-serialisation: whatever text the row holds is what is hashed).
//!
//! Every field is length-prefixed (the position has a fixed width), so no two different
//! `(position, event_id, recorded_at, payload_json)` tuples encode to the same bytes.
//!
//! # What is covered, and how
//!
//! The leaf covers *everything stored for the event*. The seed columns `dataset_uuid`,
//! `operation`, `crs_from`, `crs_to` and `processor_id` (and geoprov's `started_at`,
//! `ended_at` and the lineage edges) are not hashed on their own: they are derived from
//! `payload_json`, so a verifier can re-derive them from the payload (with
//! `crate::event::parse_event`) and compare them with the stored columns; `geoprov verify` does
//! so for all of them. `event_id` is both hashed here and checked against
//! `SHA-256(payload_json)`.
//!
//! Not here: reading rows, deciding the record time, hashing the payload into `event_id`.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use super::merkle::LEAF_PREFIX;
use super::{Hash, TlogError};

/// The version tag every `geoprov/leaf/v1` leaf starts with. A future encoding MUST use a
/// different tag.
pub const LEAF_VERSION_TAG: &str = "geoprov/leaf/v1";

/// Formats a record timestamp the one way leaves use: RFC 3339, UTC, microseconds, `Z`
/// (`2024-05-06T07:08:09.123456Z`). Sub-microsecond digits are truncated, not rounded.
#[must_use]
pub fn format_recorded_at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The u32 length prefix of a leaf field.
fn field_len(name: &str, field: &str) -> Result<u32, TlogError> {
    u32::try_from(field.len()).map_err(|_| {
        TlogError::InvalidArgument(format!(
            "leaf field {name} is {} bytes, more than a u32 length can say",
            field.len()
        ))
    })
}

/// Appends `u32be(len(field)) || field` to `out`.
fn push_field(out: &mut Vec<u8>, name: &str, field: &str) -> Result<(), TlogError> {
    let len = field_len(name, field)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field.as_bytes());
    Ok(())
}

/// The `geoprov/leaf/v1` bytes of a stored event (format in the module doc).
///
/// `position` is the row's log position; `recorded_at` MUST come from [`format_recorded_at`];
/// `event_id_hex` and `payload_json` MUST be the stored column values, unchanged.
///
/// # Errors
///
/// [`TlogError::InvalidArgument`] when a field is 4 GiB or longer (its length does not fit the
/// u32 prefix). Validated payloads are far below that (1 MiB by default).
pub fn leaf_data(
    position: u64,
    event_id_hex: &str,
    recorded_at: &str,
    payload_json: &str,
) -> Result<Vec<u8>, TlogError> {
    let mut out = Vec::with_capacity(
        LEAF_VERSION_TAG.len() + 20 + event_id_hex.len() + recorded_at.len() + payload_json.len(),
    );
    out.extend_from_slice(LEAF_VERSION_TAG.as_bytes());
    out.extend_from_slice(&position.to_be_bytes());
    push_field(&mut out, "event_id", event_id_hex)?;
    push_field(&mut out, "recorded_at", recorded_at)?;
    push_field(&mut out, "payload_json", payload_json)?;
    Ok(out)
}

/// `leaf_hash(leaf_data(...))`: the Merkle leaf hash of a stored event.
///
/// The leaf bytes are streamed into the hash rather than built first, so the payload is not
/// copied: this runs for every event while a PostgreSQL commit holds the log lock.
///
/// # Errors
///
/// As [`leaf_data`].
pub fn event_leaf_hash(
    position: u64,
    event_id_hex: &str,
    recorded_at: &str,
    payload_json: &str,
) -> Result<Hash, TlogError> {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(LEAF_VERSION_TAG.as_bytes());
    h.update(position.to_be_bytes());
    for (name, field) in [
        ("event_id", event_id_hex),
        ("recorded_at", recorded_at),
        ("payload_json", payload_json),
    ] {
        h.update(field_len(name, field)?.to_be_bytes());
        h.update(field.as_bytes());
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::super::merkle::leaf_hash;
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_streamed_leaf_hash_is_the_hash_of_the_leaf_bytes() {
        for (position, payload) in [(0, "{}"), (7, "{\"a\": 1}"), (u64::MAX, "")] {
            let id = "ab".repeat(32);
            let at = "2024-05-06T07:08:09.123456Z";
            let bytes = leaf_data(position, &id, at, payload).expect("bytes");
            assert_eq!(
                event_leaf_hash(position, &id, at, payload).expect("hash"),
                leaf_hash(&bytes)
            );
        }
    }

    #[test]
    fn recorded_at_is_rfc3339_utc_micros_z() {
        let t = Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(format_recorded_at(t), "2024-05-06T07:08:09.123456Z");
        let whole = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(format_recorded_at(whole), "2024-01-02T03:04:05.000000Z");
        // Truncated, never rounded up into the next second.
        let late = whole + chrono::Duration::nanoseconds(999_999_999);
        assert_eq!(format_recorded_at(late), "2024-01-02T03:04:05.999999Z");
    }

    #[test]
    fn leaf_data_layout_is_exactly_as_documented() {
        let got = leaf_data(
            0x0102_0304_0506_0708,
            "ab",
            "2024-01-02T03:04:05.000000Z",
            "{\"a\": \"é\"}",
        )
        .unwrap();
        let mut want = b"geoprov/leaf/v1".to_vec();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&[0, 0, 0, 2]);
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&[0, 0, 0, 27]);
        want.extend_from_slice(b"2024-01-02T03:04:05.000000Z");
        // 'é' is two UTF-8 bytes: the prefix counts bytes.
        want.extend_from_slice(&[0, 0, 0, 11]);
        want.extend_from_slice("{\"a\": \"é\"}".as_bytes());
        assert_eq!(got, want);
    }

    #[test]
    fn golden_leaf_hash_is_stable() {
        // Golden value: if this changes, every existing log stops verifying. Never edit it;
        // introduce geoprov/leaf/v2 instead.
        let event_id = "5e8f2ad8bbd0f0d4f7bd6fd0cd1e6fbd43ad1b6a1f0ac1d4e9fcb1b55d7f0b1a";
        let payload = r#"{"crs_from": "EPSG:4326", "crs_to": "EPSG:3857", "dataset_uuid": "0b5c3a4e-8d2f-4e1a-9c7b-2f6d8e9a1b3c", "operation": "reproject", "processor_id": "gdalwarp"}"#;
        let hash = event_leaf_hash(1234, event_id, "2024-05-06T07:08:09.123456Z", payload).unwrap();
        // Computed independently with Python 3's hashlib:
        //   f = lambda s: struct.pack(">I", len(s.encode())) + s.encode()
        //   data = b"geoprov/leaf/v1" + struct.pack(">Q", 1234) + f(event_id) + f(ts) + f(payload)
        //   hashlib.sha256(b"\x00" + data).hexdigest()
        assert_eq!(
            hex::encode(hash),
            "15561fd0ffa03e14497468ce9ec9a9c52754882eb9e5eb29ac99bfca696308b8"
        );
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        // Moving bytes from one field to the next changes the encoding.
        let a = leaf_data(0, "ab", "c", "d").unwrap();
        let b = leaf_data(0, "a", "bc", "d").unwrap();
        let c = leaf_data(0, "a", "b", "cd").unwrap();
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_ne!(a, c);
    }

    #[test]
    fn the_position_is_part_of_the_leaf() {
        // A row moved to another position no longer matches its leaf hash.
        let a = event_leaf_hash(7, "ab", "c", "d").unwrap();
        let b = event_leaf_hash(8, "ab", "c", "d").unwrap();
        assert_ne!(a, b);
    }
}

//! The text form of the `timestamp`, `started_at` and `ended_at` columns: RFC 3339 in UTC with
//! exactly six fractional digits and `Z`, so that text order is time order.
//!
//! Not for: the leaf encoding's time text (that is [`crate::tlog::format_recorded_at`], which
//! renders the same instant the same way).

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};

/// Write `t` as the `timestamp`, `started_at` and `ended_at` columns hold it: RFC 3339 in UTC,
/// always six fractional digits and `Z` (`2024-05-01T10:00:00.250000Z`), so that text order is
/// time order. Hand-rolled because it runs twice per event and chrono's `format` re-parses its
/// pattern on every call.
pub(super) fn write_timestamp(out: &mut String, t: DateTime<Utc>) {
    // A leap second reports 1,000,000 or more microseconds; keep the fixed width.
    let micros = t.timestamp_subsec_micros().min(999_999);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

/// [`write_timestamp`] into a new string.
pub(super) fn timestamp_text(t: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(27);
    write_timestamp(&mut out, t);
    out
}

/// Read a `timestamp` column: RFC 3339 as geoprov writes it, or a naive ISO 8601 time
/// (Python's `datetime.isoformat()`, with `T` or a space), taken as UTC.
pub(super) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let t = DateTime::parse_from_rfc3339("2024-05-01T12:00:00.5+02:00")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let text = t.map(timestamp_text);
        assert_eq!(text.as_deref(), Some("2024-05-01T10:00:00.500000Z"));
        assert_eq!(
            text.as_deref().and_then(parse_timestamp),
            t,
            "geoprov's own format reads back"
        );
        for secs in [0_i64, 1, 951_782_400, 1_714_557_600, 4_102_444_799] {
            let t = DateTime::from_timestamp(secs, 123_456_789).unwrap_or_default();
            assert_eq!(
                timestamp_text(t),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
        }
        assert!(parse_timestamp("2024-05-01 10:00:00.123456").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }
}

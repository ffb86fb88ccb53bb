//! Event search as users ask for it: filters given as text (flags of `geoprov search`, query
//! parameters of `GET /v1/events`) parsed once into an [`EventQuery`], and the page cursor as
//! the opaque text both edges hand back.
//!
//! Not for: running the query (that is `Store::search_events`) or printing results (the edges).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::records::EventQuery;

/// Events per page when none is asked for.
pub const DEFAULT_LIMIT: usize = 50;
/// The most events one page may hold.
pub const MAX_LIMIT: usize = 1000;

/// The filters as text, as a user gives them; `None` for a filter not given.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SearchText {
    /// A dataset UUID.
    pub dataset: Option<String>,
    /// An event id or a prefix of at least 8 hex digits.
    pub id: Option<String>,
    /// An operation, exactly.
    pub operation: Option<String>,
    /// A processor, exactly.
    pub processor: Option<String>,
    /// A CRS (`EPSG:32633`), matched against `crs_from` and `crs_to`.
    pub crs: Option<String>,
    /// RFC 3339.
    pub since: Option<String>,
    /// RFC 3339.
    pub until: Option<String>,
    /// Events per page.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An RFC 3339 time, or why not (naming `what` as the user wrote it: `--since`, `since`).
pub fn parse_time(what: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{what} '{text}' is not an RFC 3339 time like 2026-01-31T00:00:00Z"))
}

/// The text of a page cursor (what `next_cursor` holds).
pub fn cursor_text(next: Option<u64>) -> Option<String> {
    next.map(|n| n.to_string())
}

impl SearchText {
    /// Parse every filter; `prefix` is how the edge names its parameters (`--` for flags,
    /// empty for query parameters), so a reason names exactly what to fix.
    ///
    /// # Errors
    ///
    /// One line naming the first filter that does not parse, or `since` after `until`.
    pub fn parse(&self, prefix: &str) -> Result<EventQuery, String> {
        let dataset = self
            .dataset
            .as_deref()
            .map(|d| Uuid::parse_str(d).map_err(|_| format!("{prefix}dataset '{d}' is not a UUID")))
            .transpose()?;
        let id_prefix = self
            .id
            .as_deref()
            .map(|id| {
                let lower = id.to_ascii_lowercase();
                if (1..=64).contains(&lower.len()) && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(lower)
                } else {
                    Err(format!(
                        "{prefix}id '{id}' is not an event id or a prefix of one (hex digits)"
                    ))
                }
            })
            .transpose()?;
        let since = self
            .since
            .as_deref()
            .map(|t| parse_time(&format!("{prefix}since"), t))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|t| parse_time(&format!("{prefix}until"), t))
            .transpose()?;
        if let (Some(since), Some(until)) = (since, until) {
            if since > until {
                return Err(format!(
                    "{prefix}since ({}) is later than {prefix}until ({})",
                    since.to_rfc3339(),
                    until.to_rfc3339()
                ));
            }
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(format!(
                "{prefix}limit {limit} is out of range: 1 to {MAX_LIMIT}"
            ));
        }
        let before = self
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<u64>().map_err(|_| {
                    format!("{prefix}cursor '{c}' is not a cursor this server gave (next_cursor)")
                })
            })
            .transpose()?;
        let text = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
        Ok(EventQuery {
            dataset,
            id_prefix,
            operation: text(&self.operation),
            processor: text(&self.processor),
            crs: text(&self.crs),
            since,
            until,
            before,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_say_which_is_wrong() {
        let q = SearchText {
            dataset: Some("ef9a8eca-f983-44f4-8dfd-2ccc8a745f35".into()),
            id: Some("AB12CD34".into()),
            operation: Some("tile".into()),
            since: Some("2026-01-01T00:00:00Z".into()),
            cursor: Some("42".into()),
            ..SearchText::default()
        }
        .parse("--")
        .unwrap();
        assert_eq!(q.id_prefix.as_deref(), Some("ab12cd34"));
        assert_eq!((q.before, q.limit), (Some(42), DEFAULT_LIMIT));
        let bad = |t: SearchText| t.parse("").unwrap_err();
        assert!(bad(SearchText {
            dataset: Some("x".into()),
            ..Default::default()
        })
        .contains("dataset"));
        assert!(bad(SearchText {
            id: Some("xyz".into()),
            ..Default::default()
        })
        .contains("id"));
        assert!(bad(SearchText {
            limit: Some(0),
            ..Default::default()
        })
        .contains("limit"));
        assert!(bad(SearchText {
            cursor: Some("-1".into()),
            ..Default::default()
        })
        .contains("cursor"));
        let backwards = SearchText {
            since: Some("2026-02-01T00:00:00Z".into()),
            until: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert!(bad(backwards).contains("later than"));
    }
}

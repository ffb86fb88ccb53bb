//! Drives the pure PROV-JSON writer ([`crate::prov`]) over the store, page by page, so that an
//! export of any size runs in flat memory. Used by `geoprov export prov` and
//! `GET /v1/export/prov`.
//!
//! Filters: `dataset` (that dataset and its whole upstream), `since`/`until` (on the time the
//! event was recorded, inclusive `since`, exclusive `until`).

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::prov::{ProvCounts, ProvJsonWriter, Section};
use crate::store::{Direction, Store, StoreError, StoredEvent};

/// Rows read per store round trip.
const PAGE: usize = 5000;
/// Deepest upstream walk for `--dataset` (far beyond any real pipeline).
const MAX_UPSTREAM_DEPTH: u32 = 10_000;

/// Which events an export covers.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Only this dataset and its whole upstream.
    pub dataset: Option<Uuid>,
    /// Only events recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this time.
    pub until: Option<DateTime<Utc>>,
}

impl ExportFilter {
    /// Parse the filter as a user gives it (a UUID, RFC 3339 times). `prefix` is how the edge
    /// names its parameters (`--` for flags, empty for query parameters), so the reason names
    /// exactly what to fix.
    pub fn parse(
        dataset: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        prefix: &str,
    ) -> Result<ExportFilter, String> {
        let time = |name: &str, t: Option<&str>| {
            t.map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| {
                        format!("{prefix}{name} '{t}' is not an RFC 3339 time like 2026-01-31T00:00:00Z")
                    })
            })
            .transpose()
        };
        Ok(ExportFilter {
            dataset: dataset
                .map(|d| {
                    Uuid::parse_str(d).map_err(|_| format!("{prefix}dataset '{d}' is not a UUID"))
                })
                .transpose()?,
            since: time("since", since)?,
            until: time("until", until)?,
        })
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the document failed (or a stored row could not be mapped).
    #[error("export failed: {0}")]
    Io(#[from] io::Error),
}

/// Where the document's bytes go, chunk by chunk.
pub type ChunkSink<'a> = dyn FnMut(Vec<u8>) -> BoxFuture<'static, io::Result<()>> + Send + 'a;

/// Called after each page with (events read in this pass, pass number 1..=7, events in the log).
pub type Progress<'a> = dyn FnMut(u64, usize, u64) + Send + 'a;

/// A `Write` whose bytes are taken out between pages.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("export buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn take(&self) -> io::Result<Vec<u8>> {
        Ok(std::mem::take(
            &mut *self
                .0
                .lock()
                .map_err(|_| io::Error::other("export buffer poisoned"))?,
        ))
    }
}

/// The selection a filter makes, resolved once before the passes.
struct Selection {
    filter: ExportFilter,
    /// With `dataset`: the upstream datasets and the events on the walked edges.
    upstream: Option<(HashSet<String>, HashSet<String>)>,
}

impl Selection {
    fn keeps(&self, e: &StoredEvent) -> bool {
        if self.filter.since.is_some_and(|t| e.recorded_at < t) {
            return false;
        }
        if self.filter.until.is_some_and(|t| e.recorded_at >= t) {
            return false;
        }
        match &self.upstream {
            None => true,
            Some((datasets, events)) => {
                datasets.contains(&e.dataset_uuid) || events.contains(&e.event_id)
            }
        }
    }
}

/// Write the PROV-JSON document of the selected events to `sink`.
pub async fn export_prov(
    store: &dyn Store,
    filter: &ExportFilter,
    sink: &mut ChunkSink<'_>,
    progress: &mut Progress<'_>,
) -> Result<ProvCounts, ExportError> {
    let upstream = match filter.dataset {
        None => None,
        Some(root) => {
            let graph = crate::lineage::walk(
                store,
                root,
                Direction::Upstream,
                MAX_UPSTREAM_DEPTH,
                crate::lineage::WalkLimits::default(),
            )
            .await?;
            let mut datasets: HashSet<String> =
                graph.nodes.iter().map(|(id, _)| id.to_string()).collect();
            datasets.insert(root.to_string());
            let events = graph.edges.iter().map(|e| e.event_id.clone()).collect();
            Some((datasets, events))
        }
    };
    let selection = Selection {
        filter: filter.clone(),
        upstream,
    };
    // Bound every pass to the log size seen now, so all passes see the same events.
    let size = store.count().await?;
    let buf = SharedBuf::default();
    let mut writer = ProvJsonWriter::new(buf.clone())?;
    for (pass, section) in Section::ALL.into_iter().enumerate() {
        writer.begin_section(section)?;
        let mut from = 0u64;
        while from < size {
            let rows = store.scan(from, PAGE).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                if row.position >= size {
                    break;
                }
                if selection.keeps(row) {
                    writer.push(row)?;
                }
            }
            from = rows.last().map_or(size, |r| r.position + 1);
            progress(from.min(size), pass + 1, size);
            let chunk = buf.take()?;
            if !chunk.is_empty() {
                sink(chunk).await?;
            }
        }
        writer.end_section()?;
    }
    let (_, counts) = writer.finish()?;
    let chunk = buf.take()?;
    if !chunk.is_empty() {
        sink(chunk).await?;
    }
    Ok(counts)
}

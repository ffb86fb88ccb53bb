//! The lineage edge check: the stored edges must be exactly those the payloads in the log name,
//! compared as order-independent keyed digests ([`EdgeSum`]) in flat memory.
//!
//! Not for: reading rows (`rows.rs`).

use std::hash::BuildHasher;
use std::sync::Arc;

use super::{tampered, VerifyError};
use crate::event::LineageEvent;
use crate::store::Store;

/// Edges (or, on PostgreSQL, events' worth of edges) read per store call.
pub(super) const EDGE_PAGE: usize = 10_000;

/// The key of [`EdgeSum`]'s hash: std's SipHash with keys drawn at random for each run.
pub(super) type EdgeKey = std::collections::hash_map::RandomState;

/// An order-independent digest of a multiset of lineage edges: how many, and the wrapping sum
/// of a keyed 64-bit hash of each `(event_id, from, to)`. The edges the payloads name and the
/// edges the store holds are each summed as they stream by (flat memory, any order), and must
/// give the same digest. The key is drawn at random when `verify` runs, after any tampering,
/// so a changed, added or removed edge changes the digest except with probability about 2^-64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct EdgeSum {
    count: u64,
    sum: u128,
}

impl EdgeSum {
    pub(super) fn add(&mut self, key: &EdgeKey, event_id: &str, from: &str, to: &str) {
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(u128::from(key.hash_one((event_id, from, to))));
    }

    pub(super) fn merge(&mut self, other: EdgeSum) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// The edges `event` names ([`LineageEvent::edge_ends`]), stored under `event_id`.
    pub(super) fn of_event(key: &EdgeKey, event_id: &str, event: &LineageEvent) -> EdgeSum {
        let text = |ids: Vec<uuid::Uuid>| ids.iter().map(uuid::Uuid::to_string).collect::<Vec<_>>();
        let (inputs, outputs) = event.edge_ends();
        let (inputs, outputs) = (text(inputs), text(outputs));
        let mut sum = EdgeSum::default();
        for from in &inputs {
            for to in &outputs {
                sum.add(key, event_id, from, to);
            }
        }
        sum
    }
}

/// The digest of the stored lineage edges of the events at positions below `size`; an edge
/// whose event is not stored at all is reported as such. Edges of events committed after the
/// rows were read (positions `size` and up) are skipped. Runs beside the row pass.
pub(super) async fn stored_edges(
    store: Arc<dyn Store>,
    size: u64,
    key: Arc<EdgeKey>,
) -> Result<EdgeSum, VerifyError> {
    let mut stored = EdgeSum::default();
    let mut cursor = 0u64;
    loop {
        let page = store.edges(cursor, EDGE_PAGE).await?;
        for edge in &page.edges {
            match edge.position {
                None => {
                    return Err(tampered(format!(
                        "lineage edge {} -> {} names event {}, which is not in the log",
                        edge.from, edge.to, edge.event_id
                    )))
                }
                Some(position) if position >= size => {}
                Some(_) => stored.add(&key, &edge.event_id, &edge.from, &edge.to),
            }
        }
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    Ok(stored)
}

/// The stored edges (`stored`) must be exactly the edges the payloads in the log name (`named`).
pub(super) fn check_edges(stored: EdgeSum, named: EdgeSum) -> Result<(), VerifyError> {
    if stored != named {
        let what = if stored.count == named.count {
            "an edge was changed".to_string()
        } else {
            format!(
                "{} stored, {} named by the payloads",
                stored.count, named.count
            )
        };
        return Err(tampered(format!(
            "the lineage edges do not match the payloads in the log ({what})"
        )));
    }
    Ok(())
}

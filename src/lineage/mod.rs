//! Lineage walks: the part of the lineage graph reachable from one dataset, upstream or
//! downstream, breadth-first with caps ([`walk`]), and its presentations ([`present`]).
//!
//! The walk is written once, above the store seam: a backend answers one level with an indexed
//! lookup ([`Store::neighbours`]) and this module keeps the visited set, the depths and the
//! caps. Each dataset is expanded exactly once, at its smallest depth, so the work is linear in
//! the edges reached whatever the cycles, diamonds or depth bound, and a walk of depth `d` costs
//! at most `d` lookups. A recursive SQL query cannot do this: SQLite's and PostgreSQL's
//! recursive CTEs have no visited set across paths (PostgreSQL's `CYCLE` only stops a path from
//! revisiting its own nodes), so diamonds multiply the rows they produce and a CTE carrying the
//! depth re-expands a dataset at every depth it is reachable at.
//!
//! Each level is its own read. The log is append-only, so a walk running beside commits can
//! only see more of the graph at a later level, never an edge that was removed.
//!
//! Not for: storage (that is [`crate::store`]).

pub mod present;

pub use present::{graph_dot, graph_json, graph_text};

use std::collections::HashMap;

use uuid::Uuid;

use crate::records::{Direction, LineageEdge};
use crate::store::{Store, StoreError};

/// Default cap on the datasets one walk may reach before it is refused.
///
/// 100,000 nodes is a few megabytes of JSON and a fraction of a second of store work; a walk
/// that reaches more (typically "downstream of a base layer everything uses") is an error that
/// asks for a smaller depth rather than an unbounded answer. Edges are capped at
/// [`EDGES_PER_NODE_LIMIT`] times this number.
pub const DEFAULT_MAX_LINEAGE_NODES: usize = 100_000;

/// A walk may traverse at most this many edges per allowed node (see
/// [`DEFAULT_MAX_LINEAGE_NODES`]); several events can link the same two datasets.
pub const EDGES_PER_NODE_LIMIT: usize = 4;

/// Caps on one walk: beyond either, the walk is refused rather than answered in part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkLimits {
    /// Datasets the walk may reach, the root included.
    pub max_nodes: usize,
    /// Edges the walk may traverse.
    pub max_edges: usize,
}

impl WalkLimits {
    /// At most `max_nodes` datasets (at least 1) and [`EDGES_PER_NODE_LIMIT`] times as many
    /// edges.
    pub fn nodes(max_nodes: usize) -> WalkLimits {
        let max_nodes = max_nodes.max(1);
        WalkLimits {
            max_nodes,
            max_edges: max_nodes.saturating_mul(EDGES_PER_NODE_LIMIT),
        }
    }
}

impl Default for WalkLimits {
    /// [`DEFAULT_MAX_LINEAGE_NODES`] datasets.
    fn default() -> Self {
        WalkLimits::nodes(DEFAULT_MAX_LINEAGE_NODES)
    }
}

/// The part of the lineage graph reached by a walk.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LineageGraph {
    /// The dataset the walk started from.
    pub root: Option<Uuid>,
    /// Every dataset reached, with its distance (in edges) from the root; the root has depth 0.
    /// Sorted by depth, then id.
    pub nodes: Vec<(Uuid, u32)>,
    /// Every edge traversed, sorted by (from, to, event id).
    pub edges: Vec<LineageEdge>,
}

/// Walks the lineage graph from `root`, at most `depth` edges away, safe on cycles.
///
/// # Errors
///
/// The store's error; [`StoreError::Query`] naming the cap when the walk would reach more
/// datasets or edges than `limits` allow (ask for a smaller depth).
pub async fn walk(
    store: &dyn Store,
    root: Uuid,
    direction: Direction,
    depth: u32,
    limits: WalkLimits,
) -> Result<LineageGraph, StoreError> {
    let mut depths: HashMap<Uuid, u32> = HashMap::new();
    depths.insert(root, 0);
    let mut edges: Vec<LineageEdge> = Vec::new();
    let mut frontier = vec![root];
    let mut level = 0_u32;
    while level < depth && !frontier.is_empty() {
        // One more than the edges still allowed, to tell "exactly at the cap" from "over".
        let room = limits
            .max_edges
            .saturating_sub(edges.len())
            .saturating_add(1);
        let found = store.neighbours(&frontier, direction, room).await?;
        let mut next = Vec::new();
        for edge in found {
            if edges.len() >= limits.max_edges {
                return Err(too_large(root, limits, "edges"));
            }
            let other = match direction {
                Direction::Upstream => edge.from,
                Direction::Downstream => edge.to,
            };
            edges.push(edge);
            if !depths.contains_key(&other) {
                if depths.len() >= limits.max_nodes {
                    return Err(too_large(root, limits, "datasets"));
                }
                depths.insert(other, level + 1);
                next.push(other);
            }
        }
        frontier = next;
        level += 1;
    }
    let mut nodes: Vec<(Uuid, u32)> = depths.into_iter().collect();
    nodes.sort_unstable_by_key(|&(id, d)| (d, id));
    edges.sort_unstable_by(|a, b| (a.from, a.to, &a.event_id).cmp(&(b.from, b.to, &b.event_id)));
    Ok(LineageGraph {
        root: Some(root),
        nodes,
        edges,
    })
}

/// [`walk`], or `None` when no stored event mentions `root` at all (an unknown dataset, told
/// apart from a source dataset, which is mentioned but reaches nothing).
///
/// # Errors
///
/// As [`walk`].
pub async fn walk_known(
    store: &dyn Store,
    root: Uuid,
    direction: Direction,
    depth: u32,
    limits: WalkLimits,
) -> Result<Option<LineageGraph>, StoreError> {
    let graph = walk(store, root, direction, depth, limits).await?;
    if graph.edges.is_empty() && !store.mentions_dataset(root).await? {
        return Ok(None);
    }
    Ok(Some(graph))
}

/// The one-line reason for a dataset no stored event mentions.
pub fn unknown_dataset(root: Uuid) -> String {
    format!("no event mentions dataset {root}")
}

fn too_large(root: Uuid, limits: WalkLimits, what: &str) -> StoreError {
    StoreError::Query(format!(
        "the lineage walk from {root} reaches more than {} {what} (the limit is {} datasets and \
         {} edges); ask for a smaller depth",
        if what == "edges" {
            limits.max_edges
        } else {
            limits.max_nodes
        },
        limits.max_nodes,
        limits.max_edges
    ))
}

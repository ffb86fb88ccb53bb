//! Presenting a lineage walk: the [`LineageGraph`] of [`super::walk`] as JSON, text or Graphviz
//! DOT.
//!
//! Not for: walking (that is [`super::walk`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use uuid::Uuid;

use super::LineageGraph;
use crate::records::Direction;

/// The JSON answer of `GET /v1/datasets/{uuid}/lineage` and `lineage --format json`.
pub fn graph_json(graph: &LineageGraph, direction: Direction) -> serde_json::Value {
    serde_json::json!({
        "root": graph.root,
        "direction": direction,
        "nodes": graph.nodes.iter().map(|(id, depth)| serde_json::json!({"dataset_uuid": id, "depth": depth})).collect::<Vec<_>>(),
        "edges": graph.edges.iter().map(|e| serde_json::json!({
            "from": e.from, "to": e.to, "event_id": e.event_id, "operation": e.operation,
        })).collect::<Vec<_>>(),
    })
}

/// A human-readable listing: the datasets by distance, then each edge.
pub fn graph_text(graph: &LineageGraph, direction: Direction) -> String {
    let mut out = String::new();
    let word = match direction {
        Direction::Upstream => "upstream of",
        Direction::Downstream => "downstream of",
    };
    if let Some(root) = graph.root {
        let _ = writeln!(
            out,
            "{} dataset(s) {word} {root} ({} edge(s))",
            graph.nodes.len().saturating_sub(1),
            graph.edges.len()
        );
    }
    let mut by_depth: BTreeMap<u32, Vec<Uuid>> = BTreeMap::new();
    for (id, depth) in &graph.nodes {
        by_depth.entry(*depth).or_default().push(*id);
    }
    for (depth, ids) in by_depth {
        for id in ids {
            let _ = writeln!(out, "  depth {depth}: {id}");
        }
    }
    for e in &graph.edges {
        let _ = writeln!(
            out,
            "  {} --{}--> {}  (event {})",
            e.from,
            e.operation,
            e.to,
            &e.event_id[..e.event_id.len().min(12)]
        );
    }
    out
}

/// Graphviz DOT: datasets as nodes, operations as labelled edges.
pub fn graph_dot(graph: &LineageGraph) -> String {
    let mut out = String::from("digraph lineage {\n  rankdir=LR;\n  node [shape=box];\n");
    for (id, depth) in &graph.nodes {
        let style = if Some(*id) == graph.root {
            ", style=bold"
        } else {
            ""
        };
        let _ = writeln!(out, "  \"{id}\" [label=\"{id}\\ndepth {depth}\"{style}];");
    }
    for e in &graph.edges {
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{}\"];",
            e.from,
            e.to,
            dot_escape(&e.operation)
        );
    }
    out.push_str("}\n");
    out
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

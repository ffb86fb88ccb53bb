//! Presenting a lineage walk: the [`LineageGraph`] of [`super::walk`] as JSON, text or Graphviz
//! DOT.
//!
//! Not for: walking (that is [`super::walk`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use chrono::SecondsFormat;
use uuid::Uuid;

use super::LineageGraph;
use crate::records::{Direction, LineageEdge};

/// The JSON answer of `GET /v1/datasets/{uuid}/lineage` and `lineage --format json`.
pub fn graph_json(graph: &LineageGraph, direction: Direction) -> serde_json::Value {
    serde_json::json!({
        "root": graph.root,
        "direction": direction,
        "nodes": graph.nodes.iter().map(|(id, depth)| serde_json::json!({"dataset_uuid": id, "depth": depth})).collect::<Vec<_>>(),
        "edges": graph.edges.iter().map(|e| serde_json::json!({
            "from": e.from, "to": e.to, "event_id": e.event_id, "operation": e.operation,
            "processor_id": e.processor_id, "time": e.time,
        })).collect::<Vec<_>>(),
    })
}

/// A human-readable listing: the datasets by distance, then each edge in pipeline order
/// ([`pipeline_order`]) with its operation, processor and time.
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
    for e in pipeline_order(graph) {
        let time = e.time.map_or_else(
            || "no time".to_owned(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        let _ = writeln!(
            out,
            "  {} --{}--> {}  ({}, {time}; event {})",
            e.from,
            e.operation,
            e.to,
            e.processor_id,
            &e.event_id[..e.event_id.len().min(12)]
        );
    }
    out
}

/// The edges in the order the pipeline ran them: by the topological rank of their output (a
/// dataset comes after every dataset it was derived from; datasets on a cycle share the rank at
/// which the cycle was entered), then by time, then by input and event id.
pub fn pipeline_order(graph: &LineageGraph) -> Vec<&LineageEdge> {
    // Kahn's algorithm over the datasets, a level at a time: a level's datasets share a rank.
    let mut indegree: HashMap<Uuid, usize> = graph.nodes.iter().map(|(id, _)| (*id, 0)).collect();
    let mut out_edges: HashMap<Uuid, Vec<&LineageEdge>> = HashMap::new();
    for e in &graph.edges {
        *indegree.entry(e.to).or_default() += 1;
        indegree.entry(e.from).or_default();
        out_edges.entry(e.from).or_default().push(e);
    }
    let mut rank: HashMap<Uuid, usize> = HashMap::new();
    let mut ready: BTreeSet<Uuid> = indegree
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    let mut next_rank = 0;
    while rank.len() < indegree.len() {
        if ready.is_empty() {
            // A cycle: enter it at its smallest unranked dataset.
            let Some(entry) = indegree.keys().filter(|id| !rank.contains_key(id)).min() else {
                break;
            };
            ready.insert(*entry);
        }
        let level: Vec<Uuid> = std::mem::take(&mut ready).into_iter().collect();
        for id in level {
            if rank.contains_key(&id) {
                continue;
            }
            rank.insert(id, next_rank);
            for e in out_edges.get(&id).map(Vec::as_slice).unwrap_or_default() {
                if let Some(n) = indegree.get_mut(&e.to) {
                    *n = n.saturating_sub(1);
                    if *n == 0 && !rank.contains_key(&e.to) {
                        ready.insert(e.to);
                    }
                }
            }
        }
        next_rank += 1;
    }
    let mut edges: Vec<&LineageEdge> = graph.edges.iter().collect();
    edges.sort_by(|a, b| {
        (rank.get(&a.to), a.time, a.from, &a.event_id).cmp(&(
            rank.get(&b.to),
            b.time,
            b.from,
            &b.event_id,
        ))
    });
    edges
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn edge(from: u128, to: u128, minute: u32) -> LineageEdge {
        LineageEdge {
            from: Uuid::from_u128(from),
            to: Uuid::from_u128(to),
            event_id: format!("{from}-{to}"),
            operation: "op".into(),
            processor_id: "p".into(),
            time: Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).single(),
        }
    }

    #[test]
    fn edges_come_in_pipeline_order_then_time_and_cycles_do_not_break_it() {
        // 1 -> 2 -> 4, 1 -> 3 -> 4 (3's edge earlier), and a cycle 4 -> 5 -> 4.
        let edges = vec![
            edge(4, 5, 9),
            edge(2, 4, 3),
            edge(1, 2, 2),
            edge(3, 4, 4),
            edge(1, 3, 1),
            edge(5, 4, 8),
        ];
        let nodes = (1..=5).map(|i| (Uuid::from_u128(i), 0)).collect();
        let graph = LineageGraph {
            root: Some(Uuid::from_u128(4)),
            nodes,
            edges,
        };
        let order: Vec<&str> = pipeline_order(&graph)
            .into_iter()
            .map(|e| e.event_id.as_str())
            .collect();
        assert_eq!(order, ["1-3", "1-2", "2-4", "3-4", "5-4", "4-5"]);
    }
}

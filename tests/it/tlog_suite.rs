//! The conformance suite for the [`TransparencyLog`] trait: every backend that keeps a log runs
//! every case, stamped by `stamp_suite!` (`support/stamp.rs`) from the same per-backend factories
//! as the store suite (`store_suite::Fresh`), a fresh database per case.
//!
//! What `geoprov verify` and the proofs make of a log (tampering named by position, proofs
//! checked offline) is tested per backend in `tlog_sqlite.rs` and `tlog_postgres.rs`, because
//! tampering needs the backend's own SQL.

use std::sync::Arc;

use geoprov::event::LineageEvent;
use geoprov::store::{transparency_log, Store, StoreError, TransparencyLog};
use geoprov::tlog::{empty_root, event_leaf_hash, format_recorded_at, root_from_leaf_hashes};
use geoprov::tlog_service::add_checkpoint;

use crate::support::tlog::event;

fn log(store: &Arc<dyn Store>) -> &dyn TransparencyLog {
    transparency_log(store.as_ref()).expect("this store keeps a transparency log")
}

/// The head and the stored leaf hashes follow the rows: duplicates get no position and no
/// leaf, each leaf is the hash of its row's leaf encoding, the root is the root of the leaves,
/// and positions beyond the log are refused as corrupt rather than made up.
pub async fn tree_head_and_leaf_hashes_follow_the_rows(store: Arc<dyn Store>) {
    let log = log(&store);
    let head = log.tree_head().await.expect("head");
    assert_eq!((head.size, head.root), (0, empty_root()));
    let events: Vec<LineageEvent> = (0..37).map(event).collect();
    store.commit_batch(&events[..20]).await.expect("commit");
    store.commit_batch(&events[10..]).await.expect("commit");
    let head = log.tree_head().await.expect("head");
    assert_eq!(head.size, 37);
    let leaves = log.leaf_hashes(0, 37).await.expect("leaves");
    assert_eq!(leaves.len(), 37);
    assert_eq!(head.root, root_from_leaf_hashes(&leaves));
    assert_eq!(log.leaf_hashes(5, 9).await.expect("range"), leaves[5..9]);
    for (position, row) in store.scan(0, 100).await.expect("scan").iter().enumerate() {
        let recomputed = event_leaf_hash(
            row.position,
            &row.event_id,
            &format_recorded_at(row.recorded_at),
            &row.payload_json,
        )
        .expect("leaf");
        assert_eq!(leaves[position], recomputed, "position {position}");
    }
    assert!(
        matches!(log.leaf_hashes(30, 38).await, Err(StoreError::Corrupt(_))),
        "beyond the log"
    );
}

/// Checkpoints: one per size, idempotent for the same root, never beyond the log, never another
/// root for the log's own size or for a stored size; listed ascending and paged; the latest one
/// is the largest.
pub async fn checkpoints_are_kept_once_per_size_and_listed_in_order(store: Arc<dyn Store>) {
    let log = log(&store);
    let events: Vec<LineageEvent> = (0..37).map(event).collect();
    store.commit_batch(&events).await.expect("commit");
    let head = log.tree_head().await.expect("head");
    let leaves = log.leaf_hashes(0, 37).await.expect("leaves");
    assert!(log.latest_checkpoint().await.expect("latest").is_none());
    assert!(add_checkpoint(log, 37, head.root, "n").await.expect("add"));
    assert!(!add_checkpoint(log, 37, head.root, "n2")
        .await
        .expect("again"));
    assert!(add_checkpoint(log, 38, head.root, "n").await.is_err());
    assert!(add_checkpoint(log, 37, [0; 32], "n").await.is_err());
    let small = root_from_leaf_hashes(&leaves[..5]);
    assert!(add_checkpoint(log, 5, small, "five").await.expect("add"));
    assert!(add_checkpoint(log, 5, [1; 32], "five").await.is_err());
    assert_eq!(
        log.insert_checkpoint(5, [1; 32], "other")
            .await
            .expect("insert"),
        Some(small),
        "a stored size keeps its checkpoint and names its root"
    );
    let latest = log.latest_checkpoint().await.expect("latest").expect("one");
    assert_eq!((latest.tree_size, latest.note.as_str()), (37, "n"));
    assert!(latest.created_at.ends_with('Z'), "{}", latest.created_at);
    let all = log.checkpoints(0, 10).await.expect("list");
    assert_eq!(
        all.iter().map(|c| c.tree_size).collect::<Vec<_>>(),
        vec![5, 37],
        "ascending"
    );
    assert_eq!((all[0].root_hash, all[0].note.as_str()), (small, "five"));
    assert_eq!(log.checkpoints(6, 10).await.expect("list").len(), 1);
    assert_eq!(log.checkpoints(0, 1).await.expect("list").len(), 1);
    assert!(log.checkpoints(38, 10).await.expect("list").is_empty());
}

/// Interior tree nodes: stored once each (a node stored again keeps its first hash), read back
/// by height and index range with the ones not stored left out, and `tree_nodes_end` is one past
/// the largest stored index.
pub async fn tree_nodes_are_kept_once_and_read_by_range(store: Arc<dyn Store>) {
    let log = log(&store);
    assert_eq!(log.tree_nodes_end(10).await.expect("end"), 0);
    assert!(log.tree_nodes(10, 0, 10).await.expect("none").is_empty());
    log.add_tree_nodes(10, &[(0, [1; 32]), (1, [2; 32]), (3, [4; 32])])
        .await
        .expect("add");
    log.add_tree_nodes(10, &[(1, [9; 32])])
        .await
        .expect("again");
    log.add_tree_nodes(11, &[(0, [7; 32])]).await.expect("add");
    log.add_tree_nodes(12, &[]).await.expect("nothing");
    assert_eq!(
        log.tree_nodes(10, 0, 10).await.expect("read"),
        vec![(0, [1; 32]), (1, [2; 32]), (3, [4; 32])]
    );
    assert_eq!(
        log.tree_nodes(10, 1, 3).await.expect("range"),
        vec![(1, [2; 32])]
    );
    assert_eq!(log.tree_nodes_end(10).await.expect("end"), 4);
    assert_eq!(log.tree_nodes_end(11).await.expect("end"), 1);
    assert_eq!(log.tree_nodes_end(12).await.expect("end"), 0);
}

// One test per case on every backend: `tlog_suite::sqlite::tree_head_...`, ...
crate::support::stamp::stamp_suite!(
    tree_head_and_leaf_hashes_follow_the_rows,
    checkpoints_are_kept_once_per_size_and_listed_in_order,
    tree_nodes_are_kept_once_and_read_by_range,
);

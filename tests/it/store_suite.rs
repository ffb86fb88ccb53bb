//! The conformance suite for the [`Store`] trait: every backend runs every case.
//!
//! Each case is a plain `async fn` that takes a freshly migrated, empty store as
//! `Arc<dyn Store>` and panics on failure. `stamp_suite!` (in `support/stamp.rs`, at the end of
//! this file) stamps one `#[tokio::test]` per case onto every backend, from the backend's factory
//! (a fresh database per case, so cases run in parallel); the backends are listed there once, so
//! a new backend gets the whole contract by adding one line. Backend-specific behaviour (triggers seen through raw SQL, locks,
//! schema versions) is tested in the backend's own module, not here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use geoprov::event::{parse_event, LineageEvent, DEFAULT_MAX_PAYLOAD_BYTES};
use geoprov::lineage::{LineageGraph, WalkLimits};
use geoprov::store::{CommitReport, Direction, Store, StoreError};
use serde_json::json;
use uuid::Uuid;

/// An event built the way the worker builds them: payload bytes through `parse_event`.
pub fn event_from(payload: &serde_json::Value) -> LineageEvent {
    let bytes = serde_json::to_vec(payload).expect("serialize payload");
    parse_event(&bytes, DEFAULT_MAX_PAYLOAD_BYTES)
        .unwrap_or_else(|e| panic!("suite payload refused: {e}: {payload}"))
}

/// A transformation reading `inputs` and writing `outputs` (the first output is the seed's
/// `dataset_uuid`). A fresh `run` id makes every call a distinct event.
pub fn step(operation: &str, inputs: &[Uuid], outputs: &[Uuid]) -> LineageEvent {
    let payload = json!({
        "dataset_uuid": outputs[0],
        "operation": operation,
        "processor_id": "store-suite",
        "crs_from": "EPSG:32633",
        "crs_to": "EPSG:3857",
        "inputs": inputs,
        "outputs": outputs,
        "run": Uuid::new_v4(),
    });
    let event = event_from(&payload);
    assert_eq!(event.inputs, inputs, "parse_event keeps the inputs");
    assert_eq!(event.outputs, outputs, "parse_event keeps the outputs");
    event
}

/// `n` distinct single-output events with no inputs.
pub fn sources(n: usize) -> Vec<LineageEvent> {
    (0..n)
        .map(|_| step("ingest", &[], &[Uuid::new_v4()]))
        .collect()
}

fn ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

/// `N` fresh dataset ids.
fn fresh<const N: usize>() -> [Uuid; N] {
    std::array::from_fn(|_| Uuid::new_v4())
}

/// A chain `a[0]` → `a[1]` → … → `a[n - 1]` of derivations, committed; the datasets and the
/// events.
async fn chain(store: &Arc<dyn Store>, n: usize) -> (Vec<Uuid>, Vec<LineageEvent>) {
    let a = ids(n);
    let batch: Vec<LineageEvent> = (1..n)
        .map(|i| step("derive", &[a[i - 1]], &[a[i]]))
        .collect();
    commit(store, &batch).await;
    (a, batch)
}

/// `nodes` at depths 0, 1, 2, … in order.
fn at_depths<'a>(nodes: impl IntoIterator<Item = &'a Uuid>) -> Vec<(Uuid, u32)> {
    nodes.into_iter().copied().zip(0..).collect()
}

/// Commits `event` alone.
pub async fn commit_one(store: &dyn Store, event: &LineageEvent) {
    store
        .commit_batch(std::slice::from_ref(event))
        .await
        .expect("commit");
}

async fn commit(store: &Arc<dyn Store>, batch: &[LineageEvent]) -> CommitReport {
    store.commit_batch(batch).await.expect("commit_batch")
}

/// The lineage walk from `root`, with the default limits.
pub async fn walk(store: &dyn Store, root: Uuid, direction: Direction, depth: u32) -> LineageGraph {
    geoprov::lineage::walk(
        store,
        root,
        direction,
        depth,
        geoprov::lineage::WalkLimits::default(),
    )
    .await
    .expect("lineage walk")
}

/// The walk's nodes as a map dataset → depth (and no node listed twice).
fn depths(graph: &LineageGraph) -> BTreeMap<Uuid, u32> {
    let map: BTreeMap<Uuid, u32> = graph.nodes.iter().copied().collect();
    assert_eq!(map.len(), graph.nodes.len(), "a node is listed twice");
    map
}

/// The walk's edges as (from, to) pairs (and no edge listed twice).
fn edge_pairs(graph: &LineageGraph) -> BTreeSet<(Uuid, Uuid)> {
    let set: BTreeSet<(Uuid, Uuid)> = graph.edges.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(set.len(), graph.edges.len(), "an edge is listed twice");
    set
}

fn expect_nodes(graph: &LineageGraph, expected: &[(Uuid, u32)]) {
    let expected: BTreeMap<Uuid, u32> = expected.iter().copied().collect();
    assert_eq!(depths(graph), expected);
}

/// The event each backend's `geoprov_columns_and_edges_are_stored` commits: a mosaic of `a` and
/// `b` (`a` named twice) into `out`, with event times given in another zone.
pub fn mosaic_of(a: Uuid, b: Uuid, out: Uuid) -> LineageEvent {
    event_from(&json!({
        "dataset_uuid": out,
        "operation": "mosaic",
        "processor_id": "p",
        "inputs": [a, b, a],
        "outputs": [out],
        "started_at": "2024-05-01T12:00:00.25+02:00",
        "ended_at": "2024-05-01T10:00:03Z",
    }))
}

/// After a backend refused every change to `event` (a derivation of `b`), it is still stored
/// as it was and its one edge is still walked.
pub async fn still_stored_and_walked(store: &dyn Store, event: &LineageEvent, b: Uuid) {
    let stored = store
        .get_event(&event.event_id)
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(stored.operation, "derive");
    let graph = walk(store, b, Direction::Upstream, 1).await;
    assert_eq!(graph.edges.len(), 1);
}

/// A store whose schema a newer geoprov migrated: `migrate` names it, and writes and reads are
/// refused as schema errors too.
pub async fn refuses_a_newer_schema(store: &dyn Store) {
    let err = store.migrate().await.expect_err("newer schema");
    assert!(
        matches!(&err, StoreError::Schema(m) if m.contains("newer")),
        "{err}"
    );
    assert!(!err.is_transient());
    let err = store
        .commit_batch(&sources(1))
        .await
        .expect_err("no writes to a newer schema");
    assert!(matches!(err, StoreError::Schema(_)), "{err}");
    let err = store.count().await.expect_err("no reads of a newer schema");
    assert!(matches!(err, StoreError::Schema(_)), "{err}");
}

/// `events` committed at once in overlapping batches of 50 (each also repeats the first event
/// of the whole set, so that commits race on it, as on a message redelivered to several
/// workers): each is stored once and positions are dense.
pub async fn concurrent_commits_keep_positions_dense(
    store: Arc<dyn Store>,
    events: &[LineageEvent],
) {
    let mut tasks = Vec::new();
    for chunk in events.chunks(50) {
        let store = Arc::clone(&store);
        let mut batch = chunk.to_vec();
        batch.push(events[0].clone());
        tasks.push(tokio::spawn(
            async move { store.commit_batch(&batch).await },
        ));
    }
    let mut inserted = 0;
    for task in tasks {
        inserted += task.await.expect("join").expect("commit").inserted;
    }
    let n = events.len() as u64;
    assert_eq!(inserted, n);
    let rows = store.scan(0, 1000).await.expect("scan");
    let positions: Vec<u64> = rows.iter().map(|r| r.position).collect();
    assert_eq!(positions, (0..n).collect::<Vec<_>>());
}

/// Every column of a committed event reads back as it was written.
pub async fn roundtrip(store: Arc<dyn Store>) {
    let full = event_from(&json!({
        "dataset_uuid": Uuid::new_v4(),
        "operation": "reproject",
        "processor_id": "gdalwarp@host-1",
        "crs_from": "EPSG:32633",
        "crs_to": "EPSG:3857",
        "parameters": {"resampling": "bilinear", "nodata": -9999},
        "note": "non-ASCII: Zürich, 東京, 🌍",
    }));
    let bare = event_from(&json!({
        "dataset_uuid": Uuid::new_v4(),
        "operation": "ingest",
        "processor_id": "scanner",
    }));
    let before = Utc::now().trunc_subsecs(6);
    let report = commit(&store, &[full.clone(), bare.clone()]).await;
    let after = Utc::now();
    assert_eq!(
        report,
        CommitReport {
            inserted: 2,
            duplicates: 0,
            log_size: 2
        }
    );

    for (position, event) in [(0_u64, &full), (1, &bare)] {
        let row = store
            .get_event(&event.event_id)
            .await
            .expect("get_event")
            .expect("the committed event is stored");
        assert_eq!(row.position, position);
        assert_eq!(row.event_id, event.event_id.to_hex());
        assert_eq!(row.dataset_uuid, event.dataset_uuid.to_string());
        assert_eq!(row.operation, event.operation);
        assert_eq!(row.crs_from, event.crs_from);
        assert_eq!(row.crs_to, event.crs_to);
        assert_eq!(row.processor_id, event.processor_id);
        assert_eq!(row.payload_json, event.payload_json);
        assert!(
            before <= row.recorded_at && row.recorded_at <= after,
            "recorded_at {} is not between {before} and {after}",
            row.recorded_at
        );
        // The payload text is stored byte for byte, so the id can be recomputed from the row.
        assert_eq!(
            geoprov::event::EventId::of_canonical_json(&row.payload_json),
            event.event_id
        );
    }
    assert_eq!(full.crs_from.as_deref(), Some("EPSG:32633"));
    assert_eq!(bare.crs_from, None);

    let unknown = event_from(&json!({
        "dataset_uuid": Uuid::new_v4(), "operation": "never", "processor_id": "stored",
    }));
    assert_eq!(store.get_event(&unknown.event_id).await.expect("get"), None);
}

/// Duplicates, stored before or repeated inside a batch, are counted and never an error.
pub async fn duplicates_are_counted(store: Arc<dyn Store>) {
    let events = sources(20);
    let first = commit(&store, &events[..10]).await;
    assert_eq!(
        (first.inserted, first.duplicates, first.log_size),
        (10, 0, 10)
    );

    // The same batch again: all duplicates.
    let again = commit(&store, &events[..10]).await;
    assert_eq!(
        (again.inserted, again.duplicates, again.log_size),
        (0, 10, 10)
    );

    // Five old, ten new, and three of the new ones repeated inside the batch.
    let mut mixed: Vec<LineageEvent> = events[5..20].to_vec();
    mixed.extend_from_slice(&events[12..15]);
    let report = commit(&store, &mixed).await;
    assert_eq!(
        (report.inserted, report.duplicates, report.log_size),
        (10, 8, 20)
    );
    assert_eq!(store.count().await.expect("count"), 20);

    // An empty batch changes nothing.
    let empty = commit(&store, &[]).await;
    assert_eq!(
        (empty.inserted, empty.duplicates, empty.log_size),
        (0, 0, 20)
    );
}

/// Positions are 0..n-1, without gaps, in the order events were first committed.
pub async fn positions_are_dense_in_commit_order(store: Arc<dyn Store>) {
    let events = sources(40);
    let batches: [&[LineageEvent]; 4] = [
        &events[0..7],
        &events[3..20],
        &events[20..21],
        &events[15..40],
    ];
    let mut expected_order = Vec::new();
    for batch in batches {
        commit(&store, batch).await;
        for event in batch {
            let hex = event.event_id.to_hex();
            if !expected_order.contains(&hex) {
                expected_order.push(hex);
            }
        }
    }
    let rows = store.scan(0, 1000).await.expect("scan");
    let positions: Vec<u64> = rows.iter().map(|r| r.position).collect();
    assert_eq!(positions, (0..40).collect::<Vec<u64>>());
    let order: Vec<String> = rows.into_iter().map(|r| r.event_id).collect();
    assert_eq!(order, expected_order);
}

/// `scan` pages through the log in position order.
pub async fn scan_pages(store: Arc<dyn Store>) {
    let events = sources(25);
    commit(&store, &events[..12]).await;
    commit(&store, &events[12..]).await;

    let mut all = Vec::new();
    let mut from = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.scan(from, 10).await.expect("scan");
        if page.is_empty() {
            break;
        }
        pages.push(page.len());
        from = page.last().map(|r| r.position + 1).expect("non-empty page");
        all.extend(page);
    }
    assert_eq!(pages, vec![10, 10, 5]);
    let got: Vec<String> = all.iter().map(|r| r.event_id.clone()).collect();
    let want: Vec<String> = events.iter().map(|e| e.event_id.to_hex()).collect();
    assert_eq!(got, want);

    let middle = store.scan(7, 3).await.expect("scan");
    assert_eq!(
        middle.iter().map(|r| r.position).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    assert!(store.scan(25, 10).await.expect("scan").is_empty());
    assert!(store.scan(u64::MAX, 10).await.expect("scan").is_empty());
    assert!(store.scan(0, 0).await.expect("scan").is_empty());
    assert_eq!(store.scan(20, usize::MAX).await.expect("scan").len(), 5);
}

/// `count` is the log size and matches every commit report.
pub async fn count_is_log_size(store: Arc<dyn Store>) {
    assert_eq!(store.count().await.expect("count"), 0);
    let events = sources(30);
    let mut stored = 0;
    for chunk in events.chunks(7) {
        let report = commit(&store, chunk).await;
        stored += chunk.len() as u64;
        assert_eq!(report.log_size, stored);
        assert_eq!(store.count().await.expect("count"), stored);
    }
    commit(&store, &events).await;
    assert_eq!(store.count().await.expect("count"), 30);
}

/// A chain a0 → a1 → … → a5, walked both ways, with depth bounds.
pub async fn lineage_chain(store: Arc<dyn Store>) {
    let (a, batch) = chain(&store, 6).await;

    let up = walk(store.as_ref(), a[5], Direction::Upstream, 10).await;
    assert_eq!(up.root, Some(a[5]));
    expect_nodes(&up, &at_depths(a.iter().rev()));
    let expected_edges: BTreeSet<(Uuid, Uuid)> = (1..6).map(|i| (a[i - 1], a[i])).collect();
    assert_eq!(edge_pairs(&up), expected_edges);
    for edge in &up.edges {
        assert_eq!(edge.operation, "derive");
        assert!(batch.iter().any(|e| e.event_id.to_hex() == edge.event_id));
    }

    let down = walk(store.as_ref(), a[0], Direction::Downstream, 10).await;
    expect_nodes(&down, &at_depths(&a));
    assert_eq!(edge_pairs(&down), expected_edges);

    let mid_up = walk(store.as_ref(), a[3], Direction::Upstream, 10).await;
    expect_nodes(&mid_up, &[(a[3], 0), (a[2], 1), (a[1], 2), (a[0], 3)]);
    let mid_down = walk(store.as_ref(), a[3], Direction::Downstream, 10).await;
    expect_nodes(&mid_down, &[(a[3], 0), (a[4], 1), (a[5], 2)]);
}

/// The depth bound: depth 0 is the root alone; depth n stops n edges away, with only the edges
/// leaving nodes closer than n.
pub async fn lineage_depth_bound(store: Arc<dyn Store>) {
    let (a, _) = chain(&store, 6).await;

    let zero = walk(store.as_ref(), a[5], Direction::Upstream, 0).await;
    expect_nodes(&zero, &[(a[5], 0)]);
    assert!(zero.edges.is_empty());

    let two = walk(store.as_ref(), a[5], Direction::Upstream, 2).await;
    expect_nodes(&two, &[(a[5], 0), (a[4], 1), (a[3], 2)]);
    assert_eq!(
        edge_pairs(&two),
        BTreeSet::from([(a[4], a[5]), (a[3], a[4])])
    );

    let down = walk(store.as_ref(), a[0], Direction::Downstream, 1).await;
    expect_nodes(&down, &[(a[0], 0), (a[1], 1)]);

    // A dataset nothing mentions is a graph of its root alone.
    let stranger = Uuid::new_v4();
    let alone = walk(store.as_ref(), stranger, Direction::Upstream, 5).await;
    expect_nodes(&alone, &[(stranger, 0)]);
    assert!(alone.edges.is_empty());
}

/// A diamond: top feeds left and right, which both feed bottom.
pub async fn lineage_diamond(store: Arc<dyn Store>) {
    let [top, left, right, bottom] = fresh();
    commit(
        &store,
        &[
            step("reproject", &[top], &[left]),
            step("tile", &[top], &[right]),
            step("mosaic", &[left, right], &[bottom]),
        ],
    )
    .await;
    let all_edges = BTreeSet::from([(top, left), (top, right), (left, bottom), (right, bottom)]);

    let up = walk(store.as_ref(), bottom, Direction::Upstream, 10).await;
    expect_nodes(&up, &[(bottom, 0), (left, 1), (right, 1), (top, 2)]);
    assert_eq!(edge_pairs(&up), all_edges);

    let down = walk(store.as_ref(), top, Direction::Downstream, 10).await;
    expect_nodes(&down, &[(top, 0), (left, 1), (right, 1), (bottom, 2)]);
    assert_eq!(edge_pairs(&down), all_edges);

    let ops: BTreeSet<&str> = up.edges.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(ops, BTreeSet::from(["mosaic", "reproject", "tile"]));
}

/// A cycle a → b → c → a (plus a tail into a) terminates with the right node set, whatever the
/// depth asked for.
pub async fn lineage_cycle(store: Arc<dyn Store>) {
    let [a, b, c, tail] = fresh();
    commit(
        &store,
        &[
            step("derive", &[a], &[b]),
            step("derive", &[b], &[c]),
            step("derive", &[c], &[a]),
            step("derive", &[tail], &[a]),
            // A dataset that is its own input.
            step("patch", &[b], &[b]),
        ],
    )
    .await;

    for depth in [3, 100, u32::MAX] {
        let up = walk(store.as_ref(), a, Direction::Upstream, depth).await;
        expect_nodes(&up, &[(a, 0), (c, 1), (tail, 1), (b, 2)]);
        assert_eq!(
            edge_pairs(&up),
            BTreeSet::from([(c, a), (tail, a), (b, c), (a, b), (b, b)])
        );

        let down = walk(store.as_ref(), a, Direction::Downstream, depth).await;
        expect_nodes(&down, &[(a, 0), (b, 1), (c, 2)]);
        assert_eq!(
            edge_pairs(&down),
            BTreeSet::from([(a, b), (b, c), (c, a), (b, b)])
        );
    }
    let short = walk(store.as_ref(), a, Direction::Downstream, 1).await;
    expect_nodes(&short, &[(a, 0), (b, 1)]);
}

/// A fan-out of 10,000 (one source read by 10,000 events) and a fan-in of 10,000 (one event
/// reading 10,000 inputs) give exactly the expected nodes.
pub async fn lineage_wide_fan_out(store: Arc<dyn Store>) {
    const WIDTH: usize = 10_000;
    let root = Uuid::new_v4();
    let children = ids(WIDTH);
    let fan_out: Vec<LineageEvent> = children
        .iter()
        .map(|child| step("tile", &[root], &[*child]))
        .collect();
    for chunk in fan_out.chunks(1000) {
        commit(&store, chunk).await;
    }
    let down = walk(store.as_ref(), root, Direction::Downstream, 3).await;
    assert_eq!(down.nodes.len(), WIDTH + 1);
    assert_eq!(down.edges.len(), WIDTH);
    let reached = depths(&down);
    assert_eq!(reached.get(&root), Some(&0));
    assert!(children.iter().all(|c| reached.get(c) == Some(&1)));

    let mosaic = Uuid::new_v4();
    let report = commit(&store, &[step("mosaic", &children, &[mosaic])]).await;
    assert_eq!(report.inserted, 1);
    let up = walk(store.as_ref(), mosaic, Direction::Upstream, 1).await;
    assert_eq!(up.nodes.len(), WIDTH + 1);
    assert_eq!(up.edges.len(), WIDTH);
    let up2 = walk(store.as_ref(), mosaic, Direction::Upstream, 2).await;
    assert_eq!(up2.nodes.len(), WIDTH + 2, "the root is two levels up");
    assert_eq!(depths(&up2).get(&root), Some(&2));
    assert_eq!(up2.edges.len(), 2 * WIDTH);
}

/// `migrate` on an up-to-date store changes nothing and returns the same version.
pub async fn migrate_is_idempotent(store: Arc<dyn Store>) {
    let events = sources(5);
    commit(&store, &events).await;
    let first = store.migrate().await.expect("migrate");
    let second = store.migrate().await.expect("migrate again");
    assert!(first >= 1);
    assert_eq!(first, second);
    assert_eq!(store.count().await.expect("count"), 5);
    let report = commit(&store, &events).await;
    assert_eq!((report.inserted, report.duplicates), (0, 5));
}

/// A walk that would reach more datasets than its cap is refused, naming the cap; a smaller
/// walk from the same store is answered.
pub async fn lineage_walk_past_the_node_cap_is_refused(store: Arc<dyn Store>) {
    let root = Uuid::new_v4();
    let batch: Vec<LineageEvent> = (0..60)
        .map(|_| step("tile", &[root], &[Uuid::new_v4()]))
        .collect();
    commit(&store, &batch).await;
    let err = geoprov::lineage::walk(
        store.as_ref(),
        root,
        Direction::Downstream,
        1,
        WalkLimits::nodes(50),
    )
    .await
    .expect_err("over the cap");
    assert!(
        matches!(&err, StoreError::Query(m) if m.contains("50")),
        "{err}"
    );
    let upstream = walk(store.as_ref(), root, Direction::Upstream, 5).await;
    assert_eq!(upstream.nodes, vec![(root, 0)]);
}

/// `edges` pages through every stored edge exactly once, each with its event's position.
pub async fn edges_page_through_every_stored_edge_once(store: Arc<dyn Store>) {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut events = sources(3);
    events.push(step("mosaic", &[a, b], &[c]));
    events.push(step("tile", &[c], &[a, b]));
    for i in 0..20 {
        events.push(step("reproject", &[a], &[Uuid::from_u128(i + 1)]));
    }
    commit(&store, &events).await;
    let mut want = BTreeSet::new();
    for e in &events {
        let (inputs, outputs) = e.edge_ends();
        for from in &inputs {
            for to in &outputs {
                want.insert((e.event_id.to_hex(), from.to_string(), to.to_string()));
            }
        }
    }
    let positions: BTreeMap<String, u64> = store
        .scan(0, 100)
        .await
        .expect("scan")
        .into_iter()
        .map(|r| (r.event_id, r.position))
        .collect();
    let mut got = Vec::new();
    let mut cursor = Some(0);
    let mut pages = 0;
    while let Some(at) = cursor {
        let page = store.edges(at, 4).await.expect("edges page");
        for edge in page.edges {
            assert_eq!(edge.position, positions.get(&edge.event_id).copied());
            got.push((edge.event_id, edge.from, edge.to));
        }
        cursor = page.next;
        pages += 1;
        assert!(pages < 100, "the pages end");
    }
    assert!(pages > 1, "small pages");
    let distinct: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(distinct.len(), got.len(), "every edge once");
    assert_eq!(distinct, want);
}

/// A fresh, migrated, empty store of one backend, and what keeps its database alive (dropped
/// after the case); `None` when the backend's server is absent and the case is skipped.
pub type Fresh = Option<(Arc<dyn Store>, Box<dyn std::any::Any + Send>)>;

/// `search_events` applies every filter, newest first, and pages through all matches once.
pub async fn search_filters_and_pages_newest_first(store: Arc<dyn Store>) {
    use geoprov::store::EventQuery;
    let (scene, warped, tiles) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let event = |op: &str, proc_: &str, crs: &str, inputs: &[Uuid], out: Uuid, day: u32| {
        event_from(&json!({
            "dataset_uuid": out, "operation": op, "processor_id": proc_, "crs_to": crs,
            "inputs": inputs, "run": Uuid::new_v4(),
            "started_at": format!("2026-03-{day:02}T10:00:00Z"),
            "ended_at": format!("2026-03-{day:02}T11:00:00Z"),
        }))
    };
    let mut events = vec![
        event("ingest", "loader", "EPSG:4326", &[], scene, 1),
        event("reproject", "gdalwarp", "EPSG:3857", &[scene], warped, 2),
        event("tile", "tiler", "EPSG:3857", &[warped], tiles, 3),
    ];
    for i in 0..20 {
        events.push(event(
            "tile",
            "tiler",
            "EPSG:3857",
            &[warped],
            Uuid::new_v4(),
            4 + i % 10,
        ));
    }
    commit(&store, &events).await;
    let search = |q: EventQuery| {
        let store = store.clone();
        async move { store.search_events(&q).await.expect("search") }
    };
    let all = search(EventQuery {
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(all.events.len(), 23);
    assert!(all.next.is_none(), "one page holds them all");
    let positions: Vec<u64> = all.events.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "newest first: {positions:?}"
    );

    // The dataset filter: produced it (even with no inputs), or used it.
    let of_scene = search(EventQuery {
        dataset: Some(scene),
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    let ops: Vec<&str> = of_scene
        .events
        .iter()
        .map(|e| e.operation.as_str())
        .collect();
    assert_eq!(ops, ["reproject", "ingest"]);
    let of_warped = search(EventQuery {
        dataset: Some(warped),
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(of_warped.events.len(), 22);
    let none = search(EventQuery {
        dataset: Some(Uuid::new_v4()),
        limit: 10,
        ..EventQuery::default()
    })
    .await;
    assert!(none.events.is_empty() && none.next.is_none());

    // Operation, processor, CRS (from or to), id prefix.
    let tiled = search(EventQuery {
        operation: Some("tile".into()),
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(tiled.events.len(), 21);
    let warp = search(EventQuery {
        processor: Some("gdalwarp".into()),
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(warp.events.len(), 1);
    let wgs84 = search(EventQuery {
        crs: Some("EPSG:4326".into()),
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(wgs84.events.len(), 1);
    let id = events[1].event_id.to_hex();
    let by_prefix = search(EventQuery {
        id_prefix: Some(id[..10].to_owned()),
        limit: 5,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(by_prefix.events.len(), 1);
    assert_eq!(by_prefix.events[0].event_id, id);

    // Time: intervals that overlap [since, until], bounds included.
    let at = |day: u32, hour: u32| {
        chrono::DateTime::parse_from_rfc3339(&format!("2026-03-{day:02}T{hour:02}:00:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    };
    let day2 = search(EventQuery {
        since: Some(at(2, 11)),
        until: Some(at(2, 23)),
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    let ops: Vec<&str> = day2.events.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(ops, ["reproject"], "the interval touching the bound counts");
    let late = search(EventQuery {
        since: Some(at(12, 0)),
        limit: 100,
        ..EventQuery::default()
    })
    .await;
    assert_eq!(late.events.len(), 4, "days 12 and 13");

    // Filters combine; pages of 5 partition the matches, newest first, once each.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = search(EventQuery {
            operation: Some("tile".into()),
            dataset: Some(warped),
            before,
            limit: 5,
            ..EventQuery::default()
        })
        .await;
        assert!(page.events.len() <= 5);
        seen.extend(page.events.iter().map(|e| e.position));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 21);
    assert!(seen.windows(2).all(|w| w[0] > w[1]));
}

// One test per case on every backend: `store_suite::sqlite::roundtrip`, ...
crate::support::stamp::stamp_suite!(
    roundtrip,
    duplicates_are_counted,
    positions_are_dense_in_commit_order,
    scan_pages,
    count_is_log_size,
    lineage_chain,
    lineage_depth_bound,
    lineage_diamond,
    lineage_cycle,
    lineage_wide_fan_out,
    lineage_walk_past_the_node_cap_is_refused,
    edges_page_through_every_stored_edge_once,
    search_filters_and_pages_newest_first,
    migrate_is_idempotent,
);

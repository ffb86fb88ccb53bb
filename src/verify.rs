//! `geoprov verify`: recompute the whole log from the stored rows and check it against the
//! stored (and optionally an external) signed checkpoints, reporting the first divergence.
//!
//! Not for: printing or exit codes (that is `cli/verify.rs`), nor the Merkle math
//! ([`crate::tlog`]).
//!
//! # What is checked, in log order
//!
//! For every row, position by position from 0 (the first failure is reported, naming the
//! position and its event id):
//! 1. positions are dense: a position with no row is reported as missing;
//! 2. `event_id` is the id the payload defines: SHA-256 of Python's
//!    `json.dumps(json.loads(payload_json), sort_keys=True)`, not of the stored text as it is.
//!    geoprov stores that sorted dump itself, but the reference Python task stores
//!    `json.dumps(payload)` in insertion order, and rows it wrote are adopted unchanged; the leaf
//!    hash (5.) still covers the stored text byte for byte, so changing it stays detectable;
//! 3. `payload_json` is a valid event ([`crate::event::parse_event`]);
//! 4. the seed columns `dataset_uuid`, `operation`, `crs_from`, `crs_to` and `processor_id`
//!    equal the values derived from the payload, and so do the event times `started_at` and
//!    `ended_at` (to the microsecond the stores keep);
//! 5. the stored `leaf_hash` equals `leaf_hash(leaf_data(position, event_id, recorded_at,
//!    payload_json))` recomputed from the row (`geoprov/leaf/v1`);
//! 6. the recomputed leaf is appended to a [`CompactRange`], and at the size of every stored
//!    checkpoint the recomputed root MUST equal the checkpoint's root, the checkpoint's note
//!    MUST carry a valid signature by the verifier key and MUST state the same size and root as
//!    its row.
//!
//! Every checkpoint is compared with the *same* recomputed tree, so two checkpoints that both
//! match are consistent with each other (the smaller tree is a prefix of the larger one) without
//! a separate consistency proof. When a checkpoint's root does not match, the divergence lies
//! after the previous matching checkpoint: the report names that range of positions.
//!
//! After the rows: the recomputed root at the log head's size MUST equal the root of the stored
//! frontier (`log_head`); the stored lineage edges of those rows MUST be exactly the edges their
//! payloads name (each distinct input x each distinct output), compared as order-independent
//! keyed digests ([`EdgeSum`]), so an edge added, removed or changed is caught without holding
//! the edges in memory, and an edge naming an event that is not stored is named; no row may
//! exist beyond the head; no checkpoint may be beyond the log; every stored tree node
//! (`log_nodes`, the proofs' cache) MUST equal the root recomputed from the leaves under it, and
//! none may cover positions beyond the log.
//! Rows after the latest checkpoint are intact as far as the rows go, but nothing signed covers
//! them yet: they are reported as a warning, not a failure.
//!
//! # Memory and speed
//!
//! Rows are read in pages ([`VerifyOptions::page_size`]) while the previous page is checked, and
//! the per-row checks of a page run on all cores; only the frontier (O(log n) hashes) and one
//! or two pages are in memory at a time, however long the log.

use std::hash::BuildHasher;
use std::sync::Arc;

use crate::event::event_id::event_id_of_payload_json;
use crate::event::{parse_event, EventId, LineageEvent};
use crate::store::{transparency_log, Store, StoreError, StoredCheckpoint, StoredEvent};
use crate::tlog::{
    event_leaf_hash, format_recorded_at, node_hash, Checkpoint, CompactRange, Hash, TlogError,
    Verifier,
};
use crate::tlog_service::NODE_MIN_HEIGHT;

/// Rows per page by default.
pub const DEFAULT_PAGE_SIZE: usize = 20_000;

/// Checkpoints read per store call.
const CHECKPOINT_PAGE: usize = 1_000;

/// Edges (or, on PostgreSQL, events' worth of edges) read per store call.
const EDGE_PAGE: usize = 10_000;

/// The key of [`EdgeSum`]'s hash: std's SipHash with keys drawn at random for each run.
type EdgeKey = std::collections::hash_map::RandomState;

/// An order-independent digest of a multiset of lineage edges: how many, and the wrapping sum
/// of a keyed 64-bit hash of each `(event_id, from, to)`. The edges the payloads name and the
/// edges the store holds are each summed as they stream by (flat memory, any order), and must
/// give the same digest. The key is drawn at random when `verify` runs, after any tampering,
/// so a changed, added or removed edge changes the digest except with probability about 2^-64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EdgeSum {
    count: u64,
    sum: u128,
}

impl EdgeSum {
    fn add(&mut self, key: &EdgeKey, event_id: &str, from: &str, to: &str) {
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(u128::from(key.hash_one((event_id, from, to))));
    }

    fn merge(&mut self, other: EdgeSum) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// The edges `event` names ([`LineageEvent::edge_ends`]), stored under `event_id`.
    fn of_event(key: &EdgeKey, event_id: &str, event: &LineageEvent) -> EdgeSum {
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

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The key the checkpoints must be signed by. Required when the store holds checkpoints.
    pub verifier: Option<Verifier>,
    /// A signed checkpoint note kept outside the store, checked with `verifier` too.
    pub external_checkpoint: Option<String>,
    /// Rows per page. Defaults to [`DEFAULT_PAGE_SIZE`].
    pub page_size: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            verifier: None,
            external_checkpoint: None,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// What an intact log looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows verified (the log head's size when verification started).
    pub size: u64,
    /// The recomputed root at that size.
    pub root: Hash,
    /// Stored checkpoints checked.
    pub checkpoints: u64,
    /// The size of the latest checkpoint checked (0 when none).
    pub covered: u64,
    /// Whether an external checkpoint was checked.
    pub external_checked: bool,
    /// Things that are not failures but deserve a line (uncovered rows, concurrent growth).
    pub warnings: Vec<String>,
}

/// Why verification did not say "intact".
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log is not intact: one line naming the first bad position or checkpoint.
    #[error("{0}")]
    Tampered(String),
    /// Verification could not be carried out as asked (no key for the checkpoints, a malformed
    /// external checkpoint): the user must act.
    #[error("{0}")]
    Usage(String),
    /// The store failed (other than data that does not read back, which is [`Self::Tampered`]).
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for VerifyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(detail) => VerifyError::Tampered(detail),
            other => VerifyError::Store(other),
        }
    }
}

fn tampered(text: String) -> VerifyError {
    VerifyError::Tampered(text)
}

/// One page as read from the store: the rows and, per row, its stored leaf hash (`None` when
/// missing or malformed).
struct Page {
    rows: Vec<StoredEvent>,
    stored: Vec<Option<Hash>>,
}

/// Reads the rows of positions `from..end` (at most `limit`) and their stored leaf hashes.
async fn read_page(
    store: Arc<dyn Store>,
    from: u64,
    end: u64,
    limit: usize,
) -> Result<Page, StoreError> {
    let want = usize::try_from(end - from).unwrap_or(usize::MAX).min(limit);
    let mut rows = store.scan(from, want).await?;
    rows.retain(|r| r.position < end);
    let log = transparency_log(store.as_ref())?;
    let dense = rows
        .iter()
        .enumerate()
        .all(|(i, r)| Some(r.position) == from.checked_add(i as u64));
    let stored = match (dense, rows.last()) {
        (_, None) => Vec::new(),
        (true, Some(last)) => match log.leaf_hashes(from, last.position + 1).await {
            Ok(hashes) => hashes.into_iter().map(Some).collect(),
            Err(StoreError::Corrupt(_)) => per_row_hashes(store.as_ref(), &rows).await?,
            Err(e) => return Err(e),
        },
        (false, Some(_)) => per_row_hashes(store.as_ref(), &rows).await?,
    };
    Ok(Page { rows, stored })
}

/// The slow path, for a page with a gap or a bad stored hash: each row's hash on its own.
async fn per_row_hashes(
    store: &dyn Store,
    rows: &[StoredEvent],
) -> Result<Vec<Option<Hash>>, StoreError> {
    let log = transparency_log(store)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        match log.leaf_hashes(row.position, row.position + 1).await {
            Ok(hashes) => out.push(hashes.first().copied()),
            Err(StoreError::Corrupt(_)) => out.push(None),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Checks one row against its payload and stored leaf hash; returns the recomputed leaf hash and
/// the digest of the edges its payload names, or why the row is bad.
fn check_row(
    row: &StoredEvent,
    stored: Option<&Hash>,
    key: &EdgeKey,
) -> Result<(Hash, EdgeSum), String> {
    let event = parse_event(row.payload_json.as_bytes(), usize::MAX);
    let derived_id = match &event {
        Ok(e) => e.event_id,
        Err(_) => event_id_of_payload_json(&row.payload_json)
            .map_err(|e| format!("payload_json is not JSON: {e}"))?,
    };
    // Case is not checked here: the event_id text is hashed into the leaf.
    if EventId::from_hex(&row.event_id) != Some(derived_id) {
        return Err("payload_json does not hash to event_id".into());
    }
    let event = event.map_err(|e| format!("payload_json is not a valid event: {e}"))?;
    let mut buf = uuid::Uuid::encode_buffer();
    let dataset_uuid: &str = event.dataset_uuid.hyphenated().encode_lower(&mut buf);
    let columns: [(&str, Option<&str>, Option<&str>); 5] = [
        ("dataset_uuid", Some(&row.dataset_uuid), Some(dataset_uuid)),
        ("operation", Some(&row.operation), Some(&event.operation)),
        (
            "crs_from",
            row.crs_from.as_deref(),
            event.crs_from.as_deref(),
        ),
        ("crs_to", row.crs_to.as_deref(), event.crs_to.as_deref()),
        (
            "processor_id",
            Some(&row.processor_id),
            Some(&event.processor_id),
        ),
    ];
    for (name, stored_value, derived) in columns {
        if stored_value != derived {
            return Err(format!(
                "column {name} ({stored_value:?}) does not match payload_json ({derived:?})"
            ));
        }
    }
    let times = [
        ("started_at", row.started_at, event.started_at),
        ("ended_at", row.ended_at, event.ended_at),
    ];
    for (name, stored_value, derived) in times {
        // The stores keep microseconds, and may round or truncate a finer time: equal within 1.
        let same = match (stored_value, derived) {
            (None, None) => true,
            (Some(a), Some(b)) => (a.timestamp_micros() - b.timestamp_micros()).abs() <= 1,
            _ => false,
        };
        if !same {
            return Err(format!(
                "column {name} ({stored_value:?}) does not match payload_json ({derived:?})"
            ));
        }
    }
    let leaf = event_leaf_hash(
        row.position,
        &row.event_id,
        &format_recorded_at(row.recorded_at),
        &row.payload_json,
    )
    .map_err(|e| e.to_string())?;
    match stored {
        None => Err("the stored leaf_hash is missing or malformed".into()),
        Some(hash) if *hash != leaf => Err(format!(
            "the stored leaf_hash does not match the row (recomputed {})",
            hex::encode(leaf)
        )),
        Some(_) => Ok((leaf, EdgeSum::of_event(key, &row.event_id, &event))),
    }
}

/// Each row's leaf hash and edge digest, or the first bad row's index and reason.
type RowChecks = Result<Vec<(Hash, EdgeSum)>, (usize, String)>;

/// Checks a page's rows on all cores; returns their leaf hashes and edge digests, or the first
/// bad row's index and reason.
fn check_page(page: &Page, key: &EdgeKey) -> RowChecks {
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1);
    let n = page.rows.len();
    let chunk = n.div_ceil(threads).max(256);
    let check = |start: usize, end: usize| -> RowChecks {
        (start..end)
            .map(|i| check_row(&page.rows[i], page.stored[i].as_ref(), key).map_err(|e| (i, e)))
            .collect()
    };
    if n <= chunk {
        return check(0, n);
    }
    let results: Vec<RowChecks> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let end = (start + chunk).min(n);
                scope.spawn(move || check(start, end))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(k, h)| {
                h.join()
                    .unwrap_or_else(|_| Err((k * chunk, "the row check panicked".into())))
            })
            .collect()
    });
    let mut leaves = Vec::with_capacity(n);
    for result in results {
        leaves.extend(result?);
    }
    Ok(leaves)
}

/// The next stored checkpoints, read in pages.
struct CheckpointCursor {
    buffer: std::collections::VecDeque<StoredCheckpoint>,
    next_from: u64,
    exhausted: bool,
}

impl CheckpointCursor {
    fn new() -> Self {
        CheckpointCursor {
            buffer: std::collections::VecDeque::new(),
            next_from: 0,
            exhausted: false,
        }
    }

    /// The next checkpoint not yet taken, if any.
    async fn peek(&mut self, store: &dyn Store) -> Result<Option<&StoredCheckpoint>, StoreError> {
        if self.buffer.is_empty() && !self.exhausted {
            let log = transparency_log(store)?;
            let page = log.checkpoints(self.next_from, CHECKPOINT_PAGE).await?;
            if page.len() < CHECKPOINT_PAGE {
                self.exhausted = true;
            }
            if let Some(last) = page.last() {
                self.next_from = last.tree_size + 1;
            }
            self.buffer.extend(page);
        }
        Ok(self.buffer.front())
    }

    fn take(&mut self) -> Option<StoredCheckpoint> {
        self.buffer.pop_front()
    }
}

/// The state of the recomputation while streaming.
struct Walk {
    range: CompactRange,
    /// The leaves of the current block of `1 << NODE_MIN_HEIGHT` positions.
    block: CompactRange,
    /// The recomputed roots of the complete blocks so far: the lowest stored tree nodes must
    /// equal them (32 bytes per 1,024 events in memory).
    lowest_nodes: Vec<Hash>,
    /// Size of the last checkpoint whose root matched (the start of any divergence).
    last_good: u64,
    /// Size of the latest stored checkpoint checked.
    covered: u64,
    checkpoints: u64,
}

impl Walk {
    fn append(&mut self, leaf: Hash) {
        self.range.append(leaf);
        self.block.append(leaf);
        if self.block.size() == 1 << NODE_MIN_HEIGHT {
            self.lowest_nodes.push(self.block.root());
            self.block = CompactRange::new();
        }
    }

    fn check_stored(
        &mut self,
        checkpoint: &StoredCheckpoint,
        verifier: &Verifier,
    ) -> Result<(), VerifyError> {
        let size = checkpoint.tree_size;
        let note = open_note(verifier, &checkpoint.note)
            .map_err(|why| tampered(format!("checkpoint at tree size {size}: {why}")))?;
        if note.size != size || note.root_hash != checkpoint.root_hash {
            return Err(tampered(format!(
                "checkpoint at tree size {size}: the signed note (tree size {}) does not match \
                 its stored size and root",
                note.size
            )));
        }
        self.check_root(size, &note.root_hash, "checkpoint")?;
        self.checkpoints += 1;
        self.covered = size;
        Ok(())
    }

    fn check_root(&mut self, size: u64, root: &Hash, what: &str) -> Result<(), VerifyError> {
        if self.range.root() != *root {
            return Err(tampered(format!(
                "{what} at tree size {size}: root does not match the log (first divergence \
                 between positions {} and {})",
                self.last_good,
                size.saturating_sub(1)
            )));
        }
        self.last_good = size;
        Ok(())
    }
}

/// Opens a note with `verifier`, turning the error into the report's wording.
fn open_note(verifier: &Verifier, note: &str) -> Result<Checkpoint, String> {
    verifier.verify_note(note).map_err(|e| match e {
        TlogError::InvalidSignature(_) | TlogError::UnverifiedNote(_) => {
            format!("signature does not verify with key {}", verifier.key_text())
        }
        other => other.to_string(),
    })
}

/// The digest of the stored lineage edges of the events at positions below `size`; an edge
/// whose event is not stored at all is reported as such. Edges of events committed after the
/// rows were read (positions `size` and up) are skipped. Runs beside the row pass.
async fn stored_edges(
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
fn check_edges(stored: EdgeSum, named: EdgeSum) -> Result<(), VerifyError> {
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

/// Verifies the whole log of `store` (see the module documentation).
///
/// # Errors
///
/// [`VerifyError::Tampered`] with one line naming the first bad position or checkpoint;
/// [`VerifyError::Usage`] when checkpoints exist but no verifier key was given, or the external
/// checkpoint is unusable; [`VerifyError::Store`] when the store fails.
pub async fn verify_log(
    store: Arc<dyn Store>,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let log = transparency_log(store.as_ref()).map_err(VerifyError::Store)?;
    let head = log.tree_head().await?;
    let size = head.size;
    let page_size = options.page_size.max(1);
    let mut warnings = Vec::new();

    let external = match &options.external_checkpoint {
        None => None,
        Some(note) => {
            let verifier = options.verifier.as_ref().ok_or_else(|| {
                VerifyError::Usage("--checkpoint needs --key PUB to check its signature".into())
            })?;
            let checkpoint = open_note(verifier, note)
                .map_err(|why| tampered(format!("external checkpoint: {why}")))?;
            if checkpoint.size > size {
                return Err(tampered(format!(
                    "external checkpoint at tree size {}: the log holds only {size} events \
                     (rows were removed, or the checkpoint is of another log)",
                    checkpoint.size
                )));
            }
            Some(checkpoint)
        }
    };
    let mut cursor = CheckpointCursor::new();
    if cursor.peek(store.as_ref()).await?.is_some() && options.verifier.is_none() {
        return Err(VerifyError::Usage(
            "the store holds signed checkpoints but no verifier key was found: pass --key PUB \
             (or keep the log signing key at --log-key)"
                .into(),
        ));
    }

    let mut walk = Walk {
        range: CompactRange::new(),
        block: CompactRange::new(),
        lowest_nodes: Vec::new(),
        last_good: 0,
        covered: 0,
        checkpoints: 0,
    };
    let mut external_checked = false;
    // Checkpoints due at the current size (size 0 before any row).
    let check_due = |walk: &mut Walk,
                     due: Option<StoredCheckpoint>,
                     external_checked: &mut bool|
     -> Result<(), VerifyError> {
        if let (Some(checkpoint), Some(verifier)) = (due, options.verifier.as_ref()) {
            walk.check_stored(&checkpoint, verifier)?;
        }
        if let Some(ext) = &external {
            if !*external_checked && ext.size == walk.range.size() {
                walk.check_root(ext.size, &ext.root_hash, "external checkpoint")?;
                *external_checked = true;
            }
        }
        Ok(())
    };
    let due = next_due(&mut cursor, store.as_ref(), 0).await?;
    check_due(&mut walk, due, &mut external_checked)?;

    let edge_key = Arc::new(EdgeKey::new());
    let mut named_edges = EdgeSum::default();
    let edge_scan = tokio::spawn(stored_edges(
        Arc::clone(&store),
        size,
        Arc::clone(&edge_key),
    ));
    let mut from = 0u64;
    let mut pending =
        (from < size).then(|| tokio::spawn(read_page(Arc::clone(&store), from, size, page_size)));
    while let Some(task) = pending.take() {
        let page = task.await.map_err(|e| {
            VerifyError::Store(StoreError::Query(format!("read task failed: {e}")))
        })??;
        // Positions: dense from `from`.
        let mut dense_len = page.rows.len();
        for (i, row) in page.rows.iter().enumerate() {
            if row.position != from + i as u64 {
                dense_len = i;
                break;
            }
        }
        let next_from = from + page.rows.len() as u64;
        if dense_len == page.rows.len() && !page.rows.is_empty() && next_from < size {
            pending = Some(tokio::spawn(read_page(
                Arc::clone(&store),
                next_from,
                size,
                page_size,
            )));
        }
        let page = Arc::new(page);
        let checked = {
            let page = Arc::clone(&page);
            let key = Arc::clone(&edge_key);
            tokio::task::spawn_blocking(move || check_page(&page, &key))
                .await
                .map_err(|e| {
                    VerifyError::Store(StoreError::Query(format!("check task failed: {e}")))
                })?
        };
        let (leaves, failure) = match checked {
            Ok(leaves) => (leaves, None),
            Err((index, why)) => {
                // Re-check the rows before the failure to get their leaves.
                let leaves = (0..index)
                    .filter_map(|i| {
                        check_row(&page.rows[i], page.stored[i].as_ref(), &edge_key).ok()
                    })
                    .collect::<Vec<_>>();
                (leaves, Some((index, why)))
            }
        };
        let first_bad = failure.as_ref().map_or(usize::MAX, |f| f.0);
        for (i, (leaf, edges)) in leaves.into_iter().enumerate() {
            if i >= dense_len || i >= first_bad {
                break;
            }
            walk.append(leaf);
            named_edges.merge(edges);
            let due = next_due(&mut cursor, store.as_ref(), walk.range.size()).await?;
            check_due(&mut walk, due, &mut external_checked)?;
        }
        if dense_len < page.rows.len() && dense_len <= first_bad {
            let missing = from + dense_len as u64;
            return Err(tampered(format!("position {missing} is missing")));
        }
        if let Some((index, why)) = failure {
            let row = &page.rows[index];
            return Err(tampered(format!(
                "position {} (event {}): {why}",
                row.position, row.event_id
            )));
        }
        if page.rows.is_empty() {
            break;
        }
        // Free the page's strings off this task's thread, beside the next page's checks.
        drop(tokio::task::spawn_blocking(move || drop(page)));
        from = next_from;
    }
    if walk.range.size() < size {
        return Err(tampered(format!(
            "position {} is missing (the log head says {size} events)",
            walk.range.size()
        )));
    }
    if walk.range.root() != head.root {
        return Err(tampered(format!(
            "log head at tree size {size}: the stored frontier's root does not match the log"
        )));
    }
    let stored = edge_scan.await.map_err(|e| {
        VerifyError::Store(StoreError::Query(format!("edge scan task failed: {e}")))
    })??;
    check_edges(stored, named_edges)?;
    check_tree_nodes(log, std::mem::take(&mut walk.lowest_nodes)).await?;

    // Nothing beyond the head: a row there must be a concurrent commit, which moves the head.
    let head_now = log.tree_head().await?;
    if let Some(row) = store.scan(head_now.size, 1).await?.into_iter().next() {
        let head_after = log.tree_head().await?;
        if row.position >= head_after.size {
            return Err(tampered(format!(
                "position {} (event {}): the row is beyond the log head (size {})",
                row.position, row.event_id, head_after.size
            )));
        }
    }
    // No checkpoint beyond the log.
    if let Some(checkpoint) = cursor.peek(store.as_ref()).await? {
        let beyond = checkpoint.tree_size;
        if beyond > log.tree_head().await?.size {
            return Err(tampered(format!(
                "checkpoint at tree size {beyond}: the log holds only {} events (rows were \
                 removed?)",
                log.tree_head().await?.size
            )));
        }
        warnings.push(format!(
            "checkpoints from tree size {beyond} on were written while verifying and are not \
             checked"
        ));
    }
    if let Some(ext) = &external {
        if !external_checked {
            return Err(tampered(format!(
                "external checkpoint at tree size {}: not reached in the log",
                ext.size
            )));
        }
    }
    let covered = walk.covered;
    if size > covered {
        warnings.push(format!(
            "{} events (positions {covered}..{}) are not yet covered by a checkpoint",
            size - covered,
            size - 1
        ));
    }
    Ok(VerifyReport {
        size,
        root: walk.range.root(),
        checkpoints: walk.checkpoints,
        covered,
        external_checked,
        warnings,
    })
}

/// Stored tree nodes read per store call.
const NODE_PAGE: u64 = 10_000;

/// Every stored tree node (`log_nodes`) of the verified part of the log MUST equal the root
/// recomputed from the leaves under it, `lowest` being the recomputed roots of the complete
/// blocks of `1 << NODE_MIN_HEIGHT` leaves in order; a node may be missing (they are a cache the
/// checkpointer fills), and a node over leaves stored after the walk began is not checked, but
/// one over leaves that do not exist is reported.
async fn check_tree_nodes(
    log: &dyn crate::store::TransparencyLog,
    lowest: Vec<Hash>,
) -> Result<(), VerifyError> {
    let mut expected = lowest;
    for height in NODE_MIN_HEIGHT..64 {
        let end = log.tree_nodes_end(height).await?;
        if end == 0 && expected.is_empty() {
            break;
        }
        let known = expected.len() as u64;
        if end > known {
            let leaves_end = end.saturating_mul(1u64 << height);
            let head = log.tree_head().await?.size;
            if leaves_end > head {
                return Err(tampered(format!(
                    "tree node {height}/{}: it covers positions up to {}, beyond the log (size \
                     {head})",
                    end - 1,
                    leaves_end - 1
                )));
            }
        }
        let mut from = 0;
        while from < end.min(known) {
            let to = end.min(known).min(from + NODE_PAGE);
            for (index, hash) in log.tree_nodes(height, from, to).await? {
                let recomputed = usize::try_from(index).ok().and_then(|i| expected.get(i));
                if recomputed != Some(&hash) {
                    let first = index << height;
                    return Err(tampered(format!(
                        "tree node {height}/{index}: its hash does not match positions {first} \
                         to {} (log_nodes was changed)",
                        ((index + 1) << height) - 1
                    )));
                }
            }
            from = to;
        }
        expected = expected
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    Ok(())
}

/// Takes the stored checkpoint of exactly `size`, if it is the next one; a checkpoint of a
/// size that was skipped cannot exist (sizes grow one at a time), so the cursor only moves on.
async fn next_due(
    cursor: &mut CheckpointCursor,
    store: &dyn Store,
    size: u64,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    match cursor.peek(store).await? {
        Some(c) if c.tree_size == size => Ok(cursor.take()),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// The leaf hash `check_row` recomputes, or its reason.
    fn leaf_of(row: &StoredEvent, stored: Option<&Hash>) -> Result<Hash, String> {
        check_row(row, stored, &EdgeKey::new()).map(|(leaf, _)| leaf)
    }

    fn row(position: u64, payload: &str) -> (StoredEvent, Hash) {
        let event = parse_event(payload.as_bytes(), usize::MAX).unwrap();
        let recorded_at = Utc::now();
        let id = event.event_id.to_hex();
        let leaf = event_leaf_hash(
            position,
            &id,
            &format_recorded_at(recorded_at),
            &event.payload_json,
        )
        .unwrap();
        let stored = StoredEvent {
            position,
            event_id: id,
            dataset_uuid: event.dataset_uuid.to_string(),
            operation: event.operation.clone(),
            crs_from: event.crs_from.clone(),
            crs_to: event.crs_to.clone(),
            processor_id: event.processor_id.clone(),
            recorded_at,
            payload_json: event.payload_json.clone(),
            started_at: event.started_at.map(|t| t.with_timezone(&chrono::Utc)),
            ended_at: event.ended_at.map(|t| t.with_timezone(&chrono::Utc)),
        };
        (stored, leaf)
    }

    const PAYLOAD: &str = r#"{"dataset_uuid": "0b5c3a4e-8d2f-4e1a-9c7b-2f6d8e9a1b3c", "operation": "tile", "processor_id": "p", "crs_from": "EPSG:4326"}"#;

    #[test]
    fn an_intact_row_yields_its_leaf() {
        let (stored, leaf) = row(3, PAYLOAD);
        assert_eq!(leaf_of(&stored, Some(&leaf)), Ok(leaf));
    }

    #[test]
    fn each_kind_of_change_is_named() {
        let (good, leaf) = row(3, PAYLOAD);
        let mut r = good.clone();
        r.payload_json = r.payload_json.replace("tile", "tilf");
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("does not hash"));
        let mut r = good.clone();
        r.operation = "mosaic".into();
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column operation"));
        let mut r = good.clone();
        r.crs_to = Some("EPSG:3857".into());
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column crs_to"));
        let mut r = good.clone();
        r.position = 4;
        assert!(leaf_of(&r, Some(&leaf)).unwrap_err().contains("leaf_hash"));
        assert!(leaf_of(&good, None).unwrap_err().contains("missing"));
        let mut r = good;
        r.recorded_at += chrono::Duration::seconds(1);
        assert!(leaf_of(&r, Some(&leaf)).unwrap_err().contains("leaf_hash"));
    }

    #[test]
    fn event_times_are_checked_to_the_microsecond() {
        let payload = r#"{"dataset_uuid": "0b5c3a4e-8d2f-4e1a-9c7b-2f6d8e9a1b3c", "ended_at": "2024-05-01T10:00:03.1234567+02:00", "operation": "tile", "processor_id": "p", "started_at": "2024-05-01T07:00:00Z"}"#;
        let (good, leaf) = row(3, payload);
        assert_eq!(leaf_of(&good, Some(&leaf)), Ok(leaf));
        // A store keeps microseconds: the truncated time still matches.
        let mut r = good.clone();
        r.ended_at = r.ended_at.map(|t| t - chrono::Duration::nanoseconds(700));
        assert_eq!(leaf_of(&r, Some(&leaf)), Ok(leaf));
        let mut r = good.clone();
        r.started_at = r.started_at.map(|t| t + chrono::Duration::seconds(1));
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column started_at"));
        let mut r = good;
        r.ended_at = None;
        assert!(leaf_of(&r, Some(&leaf))
            .unwrap_err()
            .contains("column ended_at"));
    }

    #[test]
    fn a_page_reports_its_first_bad_row() {
        let rows: Vec<(StoredEvent, Hash)> = (0..1000)
            .map(|i| {
                row(
                    i,
                    &format!(
                        r#"{{"dataset_uuid": "0b5c3a4e-8d2f-4e1a-9c7b-2f6d8e9a1b3c", "operation": "tile", "processor_id": "p", "n": {i}}}"#
                    ),
                )
            })
            .collect();
        let mut page = Page {
            rows: rows.iter().map(|r| r.0.clone()).collect(),
            stored: rows.iter().map(|r| Some(r.1)).collect(),
        };
        assert_eq!(check_page(&page, &EdgeKey::new()).unwrap().len(), 1000);
        page.rows[700].processor_id = "q".into();
        page.rows[900].processor_id = "q".into();
        assert_eq!(check_page(&page, &EdgeKey::new()).unwrap_err().0, 700);
    }
}

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
//! 6. the recomputed leaf is appended to a [`CompactRange`](crate::tlog::CompactRange), and at the size of every stored
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
//! keyed digests (`EdgeSum`), so an edge added, removed or changed is caught without holding
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
//!
//! # Files
//!
//! `mod.rs` (the steps in order), `rows.rs` (reading and checking rows), `checkpoints.rs` (the
//! recomputed tree and the stored checkpoints), `edges.rs` (the edge digests), `nodes.rs` (the
//! stored tree nodes).

mod checkpoints;
mod edges;
mod nodes;
mod rows;

use std::sync::Arc;

use self::checkpoints::{next_due, open_note, CheckpointCursor, Walk};
use self::edges::{check_edges, stored_edges, EdgeKey, EdgeSum};
use self::nodes::check_tree_nodes;
use self::rows::{check_page, check_row, read_page, Page};
use crate::store::{transparency_log, Store, StoreError};
use crate::tlog::{Checkpoint, Hash, Verifier};

/// Rows per page by default.
pub const DEFAULT_PAGE_SIZE: usize = 20_000;

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
    let external = external_checkpoint(options, size)?;
    let mut pass = RowPass {
        store: Arc::clone(&store),
        verifier: options.verifier.as_ref(),
        external: external.as_ref(),
        external_checked: false,
        cursor: CheckpointCursor::new(),
        walk: Walk::new(),
        edge_key: Arc::new(EdgeKey::new()),
        named_edges: EdgeSum::default(),
    };
    if pass.cursor.peek(store.as_ref()).await?.is_some() && options.verifier.is_none() {
        return Err(VerifyError::Usage(
            "the store holds signed checkpoints but no verifier key was found: pass --key PUB \
             (or keep the log signing key at --log-key)"
                .into(),
        ));
    }
    let edge_scan = tokio::spawn(stored_edges(
        Arc::clone(&store),
        size,
        Arc::clone(&pass.edge_key),
    ));
    pass.run(size, options.page_size.max(1)).await?;
    if pass.walk.range.size() < size {
        return Err(tampered(format!(
            "position {} is missing (the log head says {size} events)",
            pass.walk.range.size()
        )));
    }
    if pass.walk.range.root() != head.root {
        return Err(tampered(format!(
            "log head at tree size {size}: the stored frontier's root does not match the log"
        )));
    }
    let stored = edge_scan.await.map_err(|e| {
        VerifyError::Store(StoreError::Query(format!("edge scan task failed: {e}")))
    })??;
    check_edges(stored, pass.named_edges)?;
    check_tree_nodes(log, std::mem::take(&mut pass.walk.lowest_nodes)).await?;
    let mut warnings = check_beyond_the_log(&mut pass).await?;
    if let Some(ext) = &external {
        if !pass.external_checked {
            return Err(tampered(format!(
                "external checkpoint at tree size {}: not reached in the log",
                ext.size
            )));
        }
    }
    let covered = pass.walk.covered;
    if size > covered {
        warnings.push(format!(
            "{} events (positions {covered}..{}) are not yet covered by a checkpoint",
            size - covered,
            size - 1
        ));
    }
    Ok(VerifyReport {
        size,
        root: pass.walk.range.root(),
        checkpoints: pass.walk.checkpoints,
        covered,
        external_checked: pass.external_checked,
        warnings,
    })
}

/// The external checkpoint of `options`, opened with its verifier key and not beyond a log of
/// `size` events.
fn external_checkpoint(
    options: &VerifyOptions,
    size: u64,
) -> Result<Option<Checkpoint>, VerifyError> {
    let Some(note) = &options.external_checkpoint else {
        return Ok(None);
    };
    let verifier = options.verifier.as_ref().ok_or_else(|| {
        VerifyError::Usage("--checkpoint needs --key PUB to check its signature".into())
    })?;
    let checkpoint =
        open_note(verifier, note).map_err(|why| tampered(format!("external checkpoint: {why}")))?;
    if checkpoint.size > size {
        return Err(tampered(format!(
            "external checkpoint at tree size {}: the log holds only {size} events (rows were \
             removed, or the checkpoint is of another log)",
            checkpoint.size
        )));
    }
    Ok(Some(checkpoint))
}

/// After the rows: nothing beyond the head (a row there must be a concurrent commit, which
/// moves the head) and no checkpoint beyond the log; returns the warnings for checkpoints
/// written meanwhile.
async fn check_beyond_the_log(pass: &mut RowPass<'_>) -> Result<Vec<String>, VerifyError> {
    let store = Arc::clone(&pass.store);
    let log = transparency_log(store.as_ref())?;
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
    let mut warnings = Vec::new();
    if let Some(checkpoint) = pass.cursor.peek(store.as_ref()).await? {
        let beyond = checkpoint.tree_size;
        let size_now = log.tree_head().await?.size;
        if beyond > size_now {
            return Err(tampered(format!(
                "checkpoint at tree size {beyond}: the log holds only {size_now} events (rows \
                 were removed?)"
            )));
        }
        warnings.push(format!(
            "checkpoints from tree size {beyond} on were written while verifying and are not \
             checked"
        ));
    }
    Ok(warnings)
}

/// The row pass: every row in position order, read a page ahead and checked on all cores, each
/// leaf appended to the recomputed tree and the checkpoints due at each size compared with it.
struct RowPass<'a> {
    store: Arc<dyn Store>,
    verifier: Option<&'a Verifier>,
    external: Option<&'a Checkpoint>,
    external_checked: bool,
    cursor: CheckpointCursor,
    walk: Walk,
    edge_key: Arc<EdgeKey>,
    /// The digest of the edges the checked payloads name.
    named_edges: EdgeSum,
}

impl RowPass<'_> {
    /// Reads and checks positions `0..size`, `page_size` rows at a time.
    async fn run(&mut self, size: u64, page_size: usize) -> Result<(), VerifyError> {
        self.check_due().await?;
        let mut from = 0u64;
        let store = Arc::clone(&self.store);
        let mut pending = (from < size)
            .then(|| tokio::spawn(read_page(Arc::clone(&store), from, size, page_size)));
        while let Some(task) = pending.take() {
            let page = task.await.map_err(|e| {
                VerifyError::Store(StoreError::Query(format!("read task failed: {e}")))
            })??;
            let dense_len = page
                .rows
                .iter()
                .enumerate()
                .position(|(i, row)| row.position != from + i as u64)
                .unwrap_or(page.rows.len());
            let next_from = from + page.rows.len() as u64;
            if dense_len == page.rows.len() && !page.rows.is_empty() && next_from < size {
                pending = Some(tokio::spawn(read_page(
                    Arc::clone(&store),
                    next_from,
                    size,
                    page_size,
                )));
            }
            if page.rows.is_empty() {
                break;
            }
            self.take_page(page, from, dense_len).await?;
            from = next_from;
        }
        Ok(())
    }

    /// Checks one page read from `from` whose first `dense_len` rows have dense positions, and
    /// appends its good rows; fails at the first gap or bad row.
    async fn take_page(
        &mut self,
        page: Page,
        from: u64,
        dense_len: usize,
    ) -> Result<(), VerifyError> {
        let page = Arc::new(page);
        let checked = {
            let page = Arc::clone(&page);
            let key = Arc::clone(&self.edge_key);
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
                        check_row(&page.rows[i], page.stored[i].as_ref(), &self.edge_key).ok()
                    })
                    .collect::<Vec<_>>();
                (leaves, Some((index, why)))
            }
        };
        let first_bad = failure.as_ref().map_or(usize::MAX, |f| f.0);
        for (leaf, edges) in leaves.into_iter().take(dense_len.min(first_bad)) {
            self.walk.append(leaf);
            self.named_edges.merge(edges);
            self.check_due().await?;
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
        // Free the page's strings off this task's thread, beside the next page's checks.
        drop(tokio::task::spawn_blocking(move || drop(page)));
        Ok(())
    }

    /// Compares the checkpoints due at the recomputed tree's current size (the stored one of
    /// exactly that size, and the external one) with it.
    async fn check_due(&mut self) -> Result<(), VerifyError> {
        let size = self.walk.range.size();
        let due = next_due(&mut self.cursor, self.store.as_ref(), size).await?;
        if let (Some(checkpoint), Some(verifier)) = (due, self.verifier) {
            self.walk.check_stored(&checkpoint, verifier)?;
        }
        if let Some(ext) = self.external {
            if !self.external_checked && ext.size == size {
                self.walk
                    .check_root(ext.size, &ext.root_hash, "external checkpoint")?;
                self.external_checked = true;
            }
        }
        Ok(())
    }
}

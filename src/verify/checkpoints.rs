//! The recomputed tree while the rows stream by ([`Walk`]), and the stored checkpoints it is
//! compared with at their sizes ([`CheckpointCursor`]).
//!
//! Not for: checking rows (`rows.rs`).

use super::{tampered, VerifyError};
use crate::store::{transparency_log, Store, StoreError, StoredCheckpoint};
use crate::tlog::{Checkpoint, CompactRange, Hash, TlogError, Verifier};
use crate::tlog_service::NODE_MIN_HEIGHT;

/// Checkpoints read per store call.
pub(super) const CHECKPOINT_PAGE: usize = 1_000;

/// The next stored checkpoints, read in pages.
pub(super) struct CheckpointCursor {
    buffer: std::collections::VecDeque<StoredCheckpoint>,
    next_from: u64,
    exhausted: bool,
}

impl CheckpointCursor {
    pub(super) fn new() -> Self {
        CheckpointCursor {
            buffer: std::collections::VecDeque::new(),
            next_from: 0,
            exhausted: false,
        }
    }

    /// The next checkpoint not yet taken, if any.
    pub(super) async fn peek(
        &mut self,
        store: &dyn Store,
    ) -> Result<Option<&StoredCheckpoint>, StoreError> {
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

    pub(super) fn take(&mut self) -> Option<StoredCheckpoint> {
        self.buffer.pop_front()
    }
}

/// The state of the recomputation while streaming.
pub(super) struct Walk {
    pub(super) range: CompactRange,
    /// The leaves of the current block of `1 << NODE_MIN_HEIGHT` positions.
    pub(super) block: CompactRange,
    /// The recomputed roots of the complete blocks so far: the lowest stored tree nodes must
    /// equal them (32 bytes per 1,024 events in memory).
    pub(super) lowest_nodes: Vec<Hash>,
    /// Size of the last checkpoint whose root matched (the start of any divergence).
    pub(super) last_good: u64,
    /// Size of the latest stored checkpoint checked.
    pub(super) covered: u64,
    pub(super) checkpoints: u64,
}

impl Walk {
    /// The empty tree, nothing checked yet.
    pub(super) fn new() -> Walk {
        Walk {
            range: CompactRange::new(),
            block: CompactRange::new(),
            lowest_nodes: Vec::new(),
            last_good: 0,
            covered: 0,
            checkpoints: 0,
        }
    }

    pub(super) fn append(&mut self, leaf: Hash) {
        self.range.append(leaf);
        self.block.append(leaf);
        if self.block.size() == 1 << NODE_MIN_HEIGHT {
            self.lowest_nodes.push(self.block.root());
            self.block = CompactRange::new();
        }
    }

    pub(super) fn check_stored(
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

    pub(super) fn check_root(
        &mut self,
        size: u64,
        root: &Hash,
        what: &str,
    ) -> Result<(), VerifyError> {
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
pub(super) fn open_note(verifier: &Verifier, note: &str) -> Result<Checkpoint, String> {
    verifier.verify_note(note).map_err(|e| match e {
        TlogError::InvalidSignature(_) | TlogError::UnverifiedNote(_) => {
            format!("signature does not verify with key {}", verifier.key_text())
        }
        other => other.to_string(),
    })
}

/// Takes the stored checkpoint of exactly `size`, if it is the next one; a checkpoint of a
/// size that was skipped cannot exist (sizes grow one at a time), so the cursor only moves on.
pub(super) async fn next_due(
    cursor: &mut CheckpointCursor,
    store: &dyn Store,
    size: u64,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    match cursor.peek(store).await? {
        Some(c) if c.tree_size == size => Ok(cursor.take()),
        _ => Ok(None),
    }
}

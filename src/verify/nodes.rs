//! The check of the stored interior tree nodes (`log_nodes`, the proofs' cache) against the
//! roots recomputed from the leaves.
//!
//! Not for: building proofs (that is `tlog_service`).

use super::{tampered, VerifyError};
use crate::store::TransparencyLog;
use crate::tlog::{node_hash, Hash};
use crate::tlog_service::NODE_MIN_HEIGHT;

/// Stored tree nodes read per store call.
pub(super) const NODE_PAGE: u64 = 10_000;

/// Every stored tree node (`log_nodes`) of the verified part of the log MUST equal the root
/// recomputed from the leaves under it, `lowest` being the recomputed roots of the complete
/// blocks of `1 << NODE_MIN_HEIGHT` leaves in order; a node may be missing (they are a cache the
/// checkpointer fills), and a node over leaves stored after the walk began is not checked, but
/// one over leaves that do not exist is reported.
pub(super) async fn check_tree_nodes(
    log: &dyn TransparencyLog,
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

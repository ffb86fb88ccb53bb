//! The checkpointer: a task beside the workers of `serve` and `worker` that signs the log's
//! tree head and stores it as a checkpoint, every `--checkpoint-interval` or as soon as the log
//! grew by `--checkpoint-every` events since the last checkpoint, and once more on shutdown
//! after the workers stopped (so the last committed events are covered).
//!
//! Not for: the signing itself or the key file (see [`crate::tlog_service`]).
//!
//! After each checkpoint it also stores the interior tree nodes the log gained
//! ([`materialize_nodes`]), which keeps proofs at O(log n) reads.
//!
//! Several processes may write checkpoints to one store: checkpoints are idempotent per tree
//! size, and each one is taken from one consistent read of the head (size and root together).
//! Nodes are idempotent too.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::shutdown::Shutdown;
use crate::store::{transparency_log, Store, StoreError};
use crate::tlog::Signer;
use crate::tlog_service::{materialize_nodes, write_checkpoint};

/// When checkpoints are written.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointOptions {
    /// Write once the log grew by this many events since the last checkpoint. Defaults to
    /// 10,000.
    pub every: u64,
    /// Write at least this often while the log grows. Defaults to 10s.
    pub interval: Duration,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            every: 10_000,
            interval: Duration::from_secs(10),
        }
    }
}

/// Longest pause between two looks at the tree head (an O(1) read), so that
/// [`CheckpointOptions::every`] is honoured promptly.
const MAX_POLL: Duration = Duration::from_millis(500);

/// Signs and stores checkpoints of one store's log (see the module documentation).
pub struct Checkpointer {
    store: Arc<dyn Store>,
    signer: Signer,
    options: CheckpointOptions,
    /// Set once storing tree nodes failed for a reason other than an outage (a role without
    /// INSERT on `log_nodes`, say): said once, then proofs read leaves where nodes are missing.
    nodes_given_up: bool,
}

impl Checkpointer {
    /// A checkpointer for `store`'s log, signing with `signer` (whose name is the origin).
    pub fn new(store: Arc<dyn Store>, signer: Signer, options: CheckpointOptions) -> Self {
        Checkpointer {
            store,
            signer,
            options,
            nodes_given_up: false,
        }
    }

    /// Stores the tree nodes the log gained since the last call (see the module documentation).
    /// Errors are logged, never fatal.
    pub async fn store_nodes(&mut self) {
        if self.nodes_given_up {
            return;
        }
        let Ok(log) = transparency_log(self.store.as_ref()) else {
            return;
        };
        match materialize_nodes(log).await {
            Ok(added) => {
                if added > 0 {
                    tracing::debug!(message = "Stored tree nodes.", added);
                }
            }
            Err(StoreError::Unavailable(error)) => {
                tracing::debug!(message = "Storing tree nodes failed; will retry.", %error);
            }
            Err(error) => {
                self.nodes_given_up = true;
                tracing::warn!(
                    message = "Cannot store the log's tree nodes; proofs will read the leaf \
                               hashes instead, which is slower on large logs.",
                    %error
                );
            }
        }
    }

    /// Writes a checkpoint of the current head now, if it is not checkpointed yet; returns the
    /// size written. Errors are logged, never fatal.
    pub async fn checkpoint_now(&self) -> Option<u64> {
        let log = match transparency_log(self.store.as_ref()) {
            Ok(log) => log,
            Err(error) => {
                tracing::warn!(message = "No checkpoint written.", %error);
                return None;
            }
        };
        match write_checkpoint(log, &self.signer).await {
            Ok(size) => size,
            Err(error) => {
                tracing::warn!(message = "Writing a checkpoint failed; will retry.", %error);
                None
            }
        }
    }

    /// Runs until `stop` resolves, then writes a final checkpoint. Trigger `stop` only after
    /// the workers have stopped, so that the final checkpoint covers everything they committed.
    pub async fn run(mut self, mut stop: Shutdown) {
        let poll = self
            .options
            .interval
            .min(MAX_POLL)
            .max(Duration::from_millis(10));
        let mut last_size = match transparency_log(self.store.as_ref()) {
            Ok(log) => match log.latest_checkpoint().await {
                Ok(latest) => latest.map_or(0, |c| c.tree_size),
                Err(_) => 0,
            },
            Err(error) => {
                tracing::warn!(message = "Checkpointer not started.", %error);
                return;
            }
        };
        let mut last_time = Instant::now();
        loop {
            tokio::select! {
                () = stop.requested() => break,
                () = tokio::time::sleep(poll) => {}
            }
            let Ok(log) = transparency_log(self.store.as_ref()) else {
                return;
            };
            let size = match log.tree_head().await {
                Ok(head) => head.size,
                Err(error) => {
                    tracing::debug!(message = "Reading the tree head failed.", %error);
                    continue;
                }
            };
            let due = last_time.elapsed() >= self.options.interval
                || size.saturating_sub(last_size) >= self.options.every;
            if size > last_size && due {
                // None: another process checkpointed this size already, or the write failed
                // (logged); either way look again later.
                if let Some(written) = self.checkpoint_now().await {
                    last_size = written;
                }
                self.store_nodes().await;
                last_time = Instant::now();
            }
        }
        if let Some(size) = self.checkpoint_now().await {
            tracing::info!(message = "Final checkpoint written.", tree_size = size);
        }
        self.store_nodes().await;
    }
}

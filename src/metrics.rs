//! Every metric geoprov exports, defined in one place: each observable event has one function
//! that bumps its metric (and, where useful, logs key=value fields). No raw metric names appear
//! anywhere else.
//!
//! Exported in the Prometheus text format at `GET /metrics` through [`install`]. Clippy's
//! `disallowed-macros` (`clippy.toml`) refuses the `metrics` macros everywhere but here.

// The one module allowed to use the metrics macros (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const RECEIVED: &str = "geoprov_events_received_total";
const PERSISTED: &str = "geoprov_events_persisted_total";
const DUPLICATES: &str = "geoprov_events_duplicate_total";
const DEAD_LETTERED: &str = "geoprov_events_dead_lettered_total";
const RETRIES: &str = "geoprov_commit_retries_total";
const QUEUE_DEPTH: &str = "geoprov_queue_depth";
const STORE_UP: &str = "geoprov_store_up";
const BATCH_SECONDS: &str = "geoprov_batch_commit_seconds";
const INGESTED: &str = "geoprov_ingest_accepted_total";
const INGEST_REJECTED: &str = "geoprov_ingest_rejected_total";
const CHECKPOINTS: &str = "geoprov_checkpoints_written_total";
const CHECKPOINT_SIZE: &str = "geoprov_checkpoint_tree_size";

/// Install the process-wide Prometheus recorder once and return a handle that renders it.
/// Later calls return a handle to the same recorder.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(BATCH_SECONDS.to_string()),
                    &[
                        0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (e.g. in tests): then this handle
            // renders nothing, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(RECEIVED, "Messages taken from the broker by workers.");
    metrics::describe_counter!(PERSISTED, "Events newly stored.");
    metrics::describe_counter!(
        DUPLICATES,
        "Events skipped because their event_id was stored."
    );
    metrics::describe_counter!(DEAD_LETTERED, "Messages moved to the dead letters.");
    metrics::describe_counter!(RETRIES, "Failed batch commits that were retried.");
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Messages waiting in the broker (ready + in flight)."
    );
    metrics::describe_gauge!(
        STORE_UP,
        "1 while the store accepts commits, 0 during an outage."
    );
    metrics::describe_histogram!(BATCH_SECONDS, "Time to commit one batch in the store.");
    metrics::describe_counter!(INGESTED, "Events accepted and enqueued by the HTTP ingest.");
    metrics::describe_counter!(INGEST_REJECTED, "Items refused by the HTTP ingest.");
    metrics::describe_counter!(CHECKPOINTS, "Signed log checkpoints written to the store.");
    metrics::describe_gauge!(
        CHECKPOINT_SIZE,
        "Tree size of the latest checkpoint this process wrote."
    );
}

/// Workers took `n` messages from the broker.
pub fn messages_received(n: usize) {
    counter!(RECEIVED).increment(n as u64);
}

/// A batch was committed: `inserted` new rows, `duplicates` skipped, in `took`.
pub fn batch_committed(inserted: u64, duplicates: u64, took: Duration) {
    counter!(PERSISTED).increment(inserted);
    counter!(DUPLICATES).increment(duplicates);
    histogram!(BATCH_SECONDS).record(took.as_secs_f64());
    tracing::debug!(
        message = "Batch committed.",
        inserted,
        duplicates,
        took_ms = took.as_millis()
    );
}

/// A message was dead-lettered for `reason`.
pub fn dead_lettered(reason: &str) {
    counter!(DEAD_LETTERED).increment(1);
    tracing::warn!(message = "Message dead-lettered.", reason);
}

/// A batch commit failed and will be retried after `delay`.
pub fn commit_retry(error: &dyn std::fmt::Display, delay: Duration) {
    counter!(RETRIES).increment(1);
    tracing::debug!(message = "Batch commit failed; retrying.", %error, delay_ms = delay.as_millis());
}

/// The store went down (`up == false`) or came back. Logged once per change, not per attempt.
pub fn store_state_changed(up: bool, detail: &str) {
    gauge!(STORE_UP).set(if up { 1.0 } else { 0.0 });
    if up {
        tracing::info!(message = "Store available again; resuming.", detail);
    } else {
        tracing::warn!(
            message = "Store unavailable; holding the batch and retrying with backoff.",
            detail
        );
    }
}

/// The broker reported `depth` waiting messages.
pub fn queue_depth(depth: u64) {
    // Precision loss above 2^53 messages is irrelevant for a gauge.
    #[allow(clippy::cast_precision_loss)]
    gauge!(QUEUE_DEPTH).set(depth as f64);
}

/// The HTTP ingest accepted `accepted` events and refused `rejected` items.
pub fn ingested(accepted: usize, rejected: usize) {
    counter!(INGESTED).increment(accepted as u64);
    counter!(INGEST_REJECTED).increment(rejected as u64);
}

/// A signed checkpoint of the log at `size` was stored.
pub fn checkpoint_written(size: u64) {
    counter!(CHECKPOINTS).increment(1);
    // Precision loss above 2^53 events is irrelevant for a gauge.
    #[allow(clippy::cast_precision_loss)]
    gauge!(CHECKPOINT_SIZE).set(size as f64);
    tracing::debug!(message = "Checkpoint written.", tree_size = size);
}

//! geoprov records the lineage (provenance) of geospatial data asynchronously.
//!
//! # Data flow (one direction)
//!
//! ```text
//!  cli emit / http POST ──> Producer ──> broker ──> Consumer ──> worker ──> Store::commit_batch ──> ack
//!                                                     decode → validate → hash       │
//!                                                     bad input → dead letters        v
//!                                  lineage / prov export / verify / http GET  <── store reads
//! ```
//!
//! # Layout
//!
//! - [`event`] (pure): raw payload → validated [`event::LineageEvent`] with its `event_id`.
//! - [`broker`]: the `Broker`/`Producer`/`Consumer` traits and their backends.
//! - [`store`]: the `Store` trait and its backends.
//! - [`worker`]: the consume → validate → batch → commit → ack loop; knows only the traits.
//! - [`ingest`]: splits a request or file body (object, array, NDJSON) into payloads.
//! - [`lineage`]: lineage walks presented as JSON, text or Graphviz DOT.
//! - [`http`]: the axum router (`POST /v1/events`, reads, `/metrics`, `/healthz`).
//! - [`metrics`]: every metric name, one function per observable event.
//! - [`config`]: flags > environment > defaults, validated once.
//! - [`cli`]: the command line; the only place that prints and picks concrete backends.
//! - [`shutdown`]: SIGINT/SIGTERM → a shared signal every task listens to.

pub mod broker;
pub mod cli;
pub mod config;
pub mod event;
pub mod http;
pub mod ingest;
pub mod lineage;
pub mod metrics;
pub mod shutdown;
pub mod store;
pub mod worker;

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
//! - [`celery`] (pure): Celery protocol v2 messages (kombu Redis envelope, AMQP delivery) →
//!   [`celery::CeleryTask`]; result backend records; refuses pickle, v1 and foreign tasks.
//! - [`store`]: the `Store` trait and its backends.
//! - [`tlog`] (pure): RFC 6962/9162 Merkle tree (leaf hashes, compact range, inclusion and
//!   consistency proofs), the `geoprov/leaf/v1` leaf encoding, C2SP checkpoints signed as
//!   Ed25519 signed notes. No storage, no HTTP.
//! - [`tlog_service`]: the log signing key file, signed checkpoints of the store's tree head,
//!   inclusion and consistency proofs (built from the store, checked offline).
//! - [`verify`]: re-checks every stored row, the Merkle tree and every checkpoint (`geoprov
//!   verify`), streaming in flat memory.
//! - [`worker`]: the consume → validate → batch → commit → ack loop; knows only the traits.
//! - [`ingest`]: splits a request or file body (object, array, NDJSON) into payloads.
//! - [`lineage`]: lineage walks presented as JSON, text or Graphviz DOT.
//! - [`prov`] (pure): stored events → W3C PROV-JSON, streamed one section per pass in flat memory.
//! - [`sample`]: the bundled sample pipeline (Sentinel-2 scenes → reproject → tile → mosaic →
//!   validate → publish) as lineage event payloads.
//! - [`export`]: drives the PROV-JSON writer over store pages (flat memory, filters).
//! - [`http`]: the axum router (`POST /v1/events`, reads, `/metrics`, `/healthz`).
//! - [`metrics`]: every metric name, one function per observable event.
//! - [`url`]: broker and store URLs parsed once into typed values; password redaction.
//! - [`config`]: flags > environment > defaults, validated once; the data dir's layout.
//! - [`cause`]: an error's whole text, causes included, for the one line a user sees.
//! - [`cli`]: the command line; the only place that prints and picks concrete backends.
//! - [`status`]: the health of a deployment in one value (`geoprov status`, `GET /v1/status`).
//! - [`shutdown`]: SIGINT/SIGTERM → a shared signal every task listens to.

pub mod broker;
pub mod cause;
pub mod celery;
pub mod cli;
pub mod config;
pub mod event;
pub mod export;
pub mod http;
pub mod ingest;
pub mod lineage;
pub mod metrics;
pub mod prov;
pub mod records;
pub mod sample;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod tlog;
pub mod tlog_service;
pub mod url;
pub mod verify;
pub mod worker;

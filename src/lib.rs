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
//! ```text
//! src/
//!   main.rs            parse args -> cli::main -> exit code 0/1/2
//!   lib.rs             this map
//!   url.rs             BrokerUrl / StoreUrl parsed once; password redaction (no crate deps)
//!   config.rs          flags > env > defaults -> Config; the data dir's layout
//!   cause.rs           an error's whole text, causes included
//!   event/             pure: validate.rs (bytes -> LineageEvent), event_id.rs,
//!                      python_json/ {parse, dumps, float_repr} (Python's json, byte for byte)
//!   celery/            pure: kombu/Celery envelopes -> tasks; results; refuses pickle
//!   broker/            mod.rs (Broker/Producer/Consumer/DeadLetterQueue traits, open)
//!     embedded/        on-disk queue {schema, consumer, dead_letters}
//!     redis/           {streams, celery (kombu lists), unacked, dead_letters, results}
//!     amqp/            {connection, publish, producer, consumer, delay, celery, dead_letters}
//!   worker/            consume -> decode -> validate -> batch -> commit -> ack; retry, rate
//!                      limit, checkpointer; tests.rs drives it with a paused clock
//!   records.rs         pure: the rows stores hand back (StoredEvent, TreeHead, ...)
//!   store/             mod.rs (Store/TransparencyLog traits, open), migration.rs, rows.rs
//!     sqlite/          {connection, migrate, commit, read, timestamp, error}, migrations/
//!     postgres/        {connect, tls, migrate, adopt, commit, copy_rows, read, log, error},
//!                      migrations/
//!   tlog/              pure: merkle.rs (RFC 6962/9162), leaf.rs, checkpoint.rs (signed notes)
//!   tlog_service.rs    signing key files, checkpoints, proofs from a store
//!   verify/            geoprov verify: {rows, checkpoints, edges, nodes}
//!   lineage/           the walk over Store::neighbours; present.rs (JSON, text, DOT)
//!   prov/              pure: PROV-JSON {writer, payload, names, literal}
//!   export.rs          the PROV-JSON writer over store pages
//!   ingest.rs          a request or file body -> payloads
//!   sample.rs          the bundled sample pipeline
//!   status.rs          the health of a deployment (geoprov status, GET /v1/status)
//!   http/              the axum router, one file per resource, error.rs (JSON errors)
//!   metrics.rs         every metric, one function each (clippy.toml enforces it)
//!   shutdown.rs        SIGINT/SIGTERM -> one signal every task listens to
//!   cli/               one file per command; args.rs (flag groups), wiring.rs (backends)
//! tests/it/            one binary: support/, *_suite.rs (one conformance suite per trait,
//!                      stamped onto every backend), one file per backend and feature
//! tests/fixtures/      captures made by the real reference tools
//! tests/python/        the reference Celery app and tools the interoperability tests drive
//! benches/             cargo bench --bench pg_copy
//! deploy/              image, Kubernetes, systemd
//! examples/            events.ndjson
//! ```
//!
//! - [`url`], [`config`], [`cause`]: typed URLs, validated configuration, error text.
//! - [`event`] (pure): raw payload → validated [`event::LineageEvent`] with its `event_id`.
//! - [`celery`] (pure): Celery protocol v2 messages → [`celery::CeleryTask`]; result records.
//! - [`broker`]: the `Broker`/`Producer`/`Consumer` traits and their backends.
//! - [`worker`]: the consume → validate → batch → commit → ack loop; knows only the traits.
//! - [`records`] (pure): the values stores hand back.
//! - [`store`]: the `Store` and `TransparencyLog` traits and their backends; a backend writes
//!   queries only.
//! - [`tlog`] (pure): RFC 6962/9162 Merkle tree, the `geoprov/leaf/v1` leaf encoding, C2SP
//!   checkpoints signed as Ed25519 signed notes.
//! - [`tlog_service`]: key files, signed checkpoints of the store's tree head, proofs.
//! - [`verify`]: re-checks every stored row, the tree and every checkpoint, in flat memory.
//! - [`lineage`]: walks over [`store::Store::neighbours`] and their presentations.
//! - [`prov`] (pure) and [`export`]: W3C PROV-JSON, streamed over store pages.
//! - [`search`]: event search filters as users give them → `records::EventQuery`.
//! - [`ingest`], [`sample`], [`status`], [`metrics`], [`shutdown`]: request bodies, the sample
//!   pipeline, deployment health, every metric, the stop signal.
//! - [`http`] and [`cli`]: the edges; only `cli` prints and picks concrete backends.

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
pub mod search;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod tlog;
pub mod tlog_service;
pub mod url;
pub mod verify;
pub mod worker;

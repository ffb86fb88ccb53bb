//! The embedded broker: a durable on-disk queue in one SQLite database file (WAL mode) under the
//! data dir. It is the default (`--broker embedded`), so `geoprov serve` needs no other server.
//!
//! Not for: a queue shared between machines (the file must be on a local disk; SQLite's WAL mode
//! needs shared memory between the processes using it), or fan-out to several consumer groups.
//! Use Redis or RabbitMQ for those.
//!
//! # Why SQLite in WAL mode
//!
//! - **Crash-safe.** Every operation is one SQLite transaction. A process killed at any instant
//!   (kill -9, in the middle of a write) leaves the file at its last committed transaction: the
//!   frames of an unfinished transaction in the WAL are ignored when the file is opened next.
//! - **Many processes at once.** Several processes may open the same file: `geoprov emit
//!   --broker embedded` from another shell while `geoprov serve` runs, or several workers.
//!   SQLite's file locks serialize the writers, WAL lets readers run beside them, and every
//!   connection waits up to [`BUSY_TIMEOUT`] for the write lock before giving up with
//!   [`BrokerError::Unavailable`] (transient: the worker retries).
//! - **One small dependency we already have.** The SQLite store uses the same bundled `rusqlite`,
//!   so the embedded default adds no code to the binary and no server to run.
//! - **Easy to inspect.** `sqlite3 geoprov-data/queue.db 'SELECT id, attempts, visible_at FROM
//!   messages LIMIT 10'` shows exactly what waits, what is in flight and what was dead-lettered.
//!
//! The file layout (tables, statements, opening and migrating) is in `schema`; leasing,
//! acknowledging and giving back in `consumer`; the dead-letter table in `dead_letters`.
//!
//! # How a message moves
//!
//! - **enqueue** inserts every message of the slice (a `messages` row with `visible_at = now`
//!   and its body) in one transaction.
//! - **receive** leases up to `max` visible messages, oldest first, with one statement,
//!   `UPDATE messages SET visible_at = now + visibility_timeout, attempts = attempts + 1 WHERE id
//!   IN (SELECT id FROM messages WHERE visible_at <= now ORDER BY visible_at, id LIMIT max)
//!   RETURNING id, attempts`, and reads their bodies in the same transaction. The lease *is* the
//!   `visible_at` in the future: no other consumer, in this process or another, sees the message
//!   until it passes. `receive` returns as soon as one message is leased. "Oldest first" means in
//!   the order messages became ready: enqueue order for new messages (id breaks ties within a
//!   millisecond), and a redelivered or retried message queues behind those already waiting.
//!   Ordering by `(visible_at, id)` lets the lease read the first `max` entries of the index and
//!   stop, however many messages wait or are in flight (`ORDER BY id` would scan past every
//!   in-flight message first).
//! - **ack** deletes the rows and their bodies; **extend** pushes `visible_at` another visibility
//!   timeout away; **retry_later** sets `visible_at = now + delay` (the attempt is already
//!   counted);
//!   **dead_letter** copies the message (original bytes, attempts) with the reason and the time
//!   into `dead_letters` and deletes it from `messages` and `message_bodies`, in one transaction.
//! - **Redelivery after a crash.** A consumer that leased messages and died (kill -9, power cut,
//!   or simply dropped without acking) leaves them with `visible_at` in the future. Once the
//!   visibility timeout passes they match `visible_at <= now` again and the next `receive` leases
//!   them with `attempt` one higher. Nothing else is needed: there is no consumer registry to clean
//!   up. The same holds for a `receive` future dropped while its lease was being written: the
//!   messages it leased come back after the visibility timeout.
//!
//! # Guarantees
//!
//! - `enqueue` returns `Ok` only after the transaction is committed with `synchronous = FULL`:
//!   the WAL is fsynced, so the messages survive kill -9 and a power cut. The whole slice is
//!   enqueued or none of it is.
//! - `receive`, `extend`, `retry_later` and `ack` commit without an fsync (`synchronous =
//!   NORMAL`, still safe against kill -9): a power cut may undo the last of them, which can only
//!   make a message visible again, never lose one (see `Durability`).
//! - At-least-once delivery: a message leaves `messages` only through `ack` or `dead_letter`.
//!   A message may be delivered twice (a lease expires while a slow worker still holds it; a lease
//!   is fsynced but then its worker dies), which the idempotent store absorbs.
//! - A delivery is invisible to every other consumer until it is acked, retried, dead-lettered,
//!   or its visibility timeout passes without `extend`.
//! - Leases are keyed on the message id only: a worker whose lease expired can still ack or
//!   extend it. This is harmless for acks (the worker acks only after its batch is committed) and
//!   for dead letters (only a message still in `messages` is moved, so it is dead-lettered once).
//! - Visibility uses the wall clock: a clock jumping back delays redelivery by the jump; a clock
//!   jumping forward makes in-flight leases expire early (a duplicate delivery, never a loss).
//!
//! # Concurrency inside one process
//!
//! Each [`EmbeddedBroker`] owns one SQLite connection, shared by its producer, its consumers and
//! its dead-letter queue. SQLite runs one write transaction at a time per file anyway, so more
//! connections would only add lock contention (and SQLite's sleeping busy handler) between tasks
//! of the same process; one connection behind a mutex hands the write lock from task to task
//! without sleeping. The SQLite work runs in `tokio::task::spawn_blocking`. In-process consumers
//! are woken at once by the producer of the same broker; messages from other processes are found
//! by polling (5ms, growing to 50ms while idle).

mod consumer;
mod dead_letters;
mod schema;

pub use consumer::EmbeddedConsumer;
pub use dead_letters::EmbeddedDeadLetters;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, ErrorCode, Transaction, TransactionBehavior};
use tokio::sync::Notify;

use super::{
    Broker, BrokerError, Consumer, ConsumerOptions, DeadLetterQueue, DeliveryTag, Producer,
};
use schema::{INSERT_BODY, INSERT_MESSAGE};

/// How long a connection waits for another connection (often another process) to release the
/// write lock before the operation fails with [`BrokerError::Unavailable`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The durable on-disk queue (see the module documentation). Cheap to share: producers,
/// consumers and the dead-letter queue it hands out all use its one connection.
pub struct EmbeddedBroker {
    shared: Arc<Shared>,
}

/// What the broker and everything it hands out share.
struct Shared {
    /// The database file, for error messages.
    path: PathBuf,
    /// The one connection. A `std::sync::Mutex`, not Tokio's: it is locked only inside
    /// `spawn_blocking` closures and never held across an `.await`, so it cannot block the
    /// runtime, and the std lock is cheaper.
    conn: Mutex<ConnectionState>,
    /// Fired after every enqueue and replay so that this process's waiting consumers lease at
    /// once instead of at their next poll.
    wakeup: Notify,
}

/// `Debug` for the handles that share one file: their type name and the file.
fn debug_path(f: &mut fmt::Formatter<'_>, name: &str, shared: &Shared) -> fmt::Result {
    f.debug_struct(name)
        .field("path", &shared.path)
        .finish_non_exhaustive()
}

impl fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_path(f, "EmbeddedBroker", &self.shared)
    }
}

impl EmbeddedBroker {
    /// Open the queue file at `path`, creating its directory, the file and the schema as needed,
    /// and switching it to WAL mode. Several brokers (in this or other processes) may open the
    /// same file.
    pub async fn open(path: &Path) -> Result<Self, BrokerError> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || schema::open_connection(&opened))
            .await
            .map_err(|e| {
                BrokerError::Protocol(format!("embedded queue: open task failed: {e}"))
            })??;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                conn: Mutex::new(ConnectionState {
                    conn,
                    durability: Durability::Synced,
                }),
                wakeup: Notify::new(),
            }),
        })
    }

    /// The database file this broker uses.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// A producer on this broker's connection.
    pub fn embedded_producer(&self) -> EmbeddedProducer {
        EmbeddedProducer {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A consumer on this broker's connection.
    pub fn embedded_consumer(&self, options: ConsumerOptions) -> EmbeddedConsumer {
        EmbeddedConsumer::new(Arc::clone(&self.shared), options)
    }

    /// The dead-letter queue on this broker's connection.
    pub fn embedded_dead_letters(&self) -> EmbeddedDeadLetters {
        EmbeddedDeadLetters::new(Arc::clone(&self.shared))
    }

    /// How many messages the file holds, ready and in flight.
    pub async fn message_count(&self) -> Result<u64, BrokerError> {
        self.shared
            .run("depth", Durability::Synced, |conn| {
                conn.query_row("SELECT COUNT(*) FROM messages", [], |row| row.get(0))
                    .map(count_from_sql)
            })
            .await
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn producer(&self) -> Result<Arc<dyn Producer>, BrokerError> {
        Ok(Arc::new(self.embedded_producer()))
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        Ok(Box::new(self.embedded_consumer(options)))
    }

    async fn dead_letters(&self) -> Result<Arc<dyn DeadLetterQueue>, BrokerError> {
        Ok(Arc::new(self.embedded_dead_letters()))
    }

    async fn depth(&self) -> Result<Option<u64>, BrokerError> {
        self.message_count().await.map(Some)
    }
}

/// Enqueues onto an [`EmbeddedBroker`]'s file.
pub struct EmbeddedProducer {
    shared: Arc<Shared>,
}

impl fmt::Debug for EmbeddedProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_path(f, "EmbeddedProducer", &self.shared)
    }
}

#[async_trait]
impl Producer for EmbeddedProducer {
    /// One transaction for the whole slice; `Ok` means committed and fsynced.
    async fn enqueue(&self, bodies: &[Bytes]) -> Result<(), BrokerError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let bodies = bodies.to_vec();
        self.shared
            .run(
                "enqueue",
                Durability::Synced,
                in_transaction(move |tx| {
                    // Taken once the write lock is held, so that across processes `visible_at`
                    // grows with the id as long as the clock does.
                    let now = now_ms();
                    {
                        let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
                        let mut insert_body = tx.prepare_cached(INSERT_BODY)?;
                        for body in &bodies {
                            insert.execute(params![now])?;
                            insert_body.execute(params![tx.last_insert_rowid(), body.as_ref()])?;
                        }
                    }
                    Ok(())
                }),
            )
            .await?;
        self.shared.wakeup.notify_waiters();
        Ok(())
    }
}

/// How far a write must have reached when its operation returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// The commit fsyncs the WAL (`synchronous = FULL`): the write survives a power cut. For
    /// whatever brings a message in or takes one out for good without a store commit behind it
    /// (enqueue, dead letters, replay, purge).
    Synced,
    /// No fsync at commit (`synchronous = NORMAL`, which in WAL mode still survives kill -9 and
    /// keeps the file consistent): a power cut may undo the last of these writes, and that can
    /// only ever make a message visible again (a lease, a retry delay, an ack of a batch the
    /// store already holds), which redelivery and the idempotent store absorb. The next synced
    /// commit makes them durable too, since the WAL is one sequential file. For receive, extend,
    /// retry and ack, which happen for every message: each would otherwise wait for an fsync
    /// while holding the queue's one connection.
    Relaxed,
}

/// The connection and the `synchronous` setting it is at (changed only when an operation needs
/// another one).
struct ConnectionState {
    conn: Connection,
    durability: Durability,
}

impl Shared {
    /// Run `work` on the connection in the blocking pool, with `durability` for what it commits
    /// (see [`Durability`]; reads pass [`Durability::Synced`]), and classify its error.
    async fn run<T, F>(
        self: &Arc<Self>,
        operation: &'static str,
        durability: Durability,
        work: F,
    ) -> Result<T, BrokerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held cannot leave a transaction open (the
            // `Transaction` guard rolls back as it unwinds), so a poisoned lock is still usable.
            let mut state = shared.conn.lock().unwrap_or_else(PoisonError::into_inner);
            let classified = |error: rusqlite::Error| classify(&shared.path, operation, &error);
            if state.durability != durability {
                let level = match durability {
                    Durability::Synced => "FULL",
                    Durability::Relaxed => "NORMAL",
                };
                state
                    .conn
                    .pragma_update(None, "synchronous", level)
                    .map_err(classified)?;
                state.durability = durability;
            }
            work(&mut state.conn).map_err(classified)
        })
        .await
        .map_err(|e| {
            BrokerError::Protocol(format!("embedded queue: {operation} task failed: {e}"))
        })?
    }
}

/// `work` in one `BEGIN IMMEDIATE` transaction (the write lock taken first), committed when it
/// succeeds: for [`Shared::run`].
fn in_transaction<T>(
    work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> impl FnOnce(&mut Connection) -> rusqlite::Result<T> {
    move |conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done = work(&tx)?;
        tx.commit()?;
        Ok(done)
    }
}

/// The one place SQLite errors become [`BrokerError`]s. Lock contention that outlasted
/// [`BUSY_TIMEOUT`], and resource exhaustion that may clear, are transient
/// ([`BrokerError::Unavailable`]); a file that cannot be opened or is not a database is a
/// configuration error; everything else is [`BrokerError::Protocol`].
fn classify(path: &Path, operation: &str, error: &rusqlite::Error) -> BrokerError {
    let message = format!("embedded queue {}: {operation}: {error}", path.display());
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory
            | ErrorCode::SystemIoFailure
            | ErrorCode::OperationInterrupted,
        ) => BrokerError::Unavailable(message),
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::NotADatabase
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::NoLargeFileSupport,
        ) => BrokerError::Config(message),
        _ => BrokerError::Protocol(message),
    }
}

/// The `messages` row id a delivery tag names.
fn message_id(tag: &DeliveryTag) -> Result<i64, BrokerError> {
    match tag {
        DeliveryTag::Int(id) => i64::try_from(*id).map_err(|_| {
            BrokerError::Protocol(format!("delivery tag {id} is not an embedded queue id"))
        }),
        DeliveryTag::Text(text) => Err(BrokerError::Protocol(format!(
            "delivery tag '{text}' is not an embedded queue id"
        ))),
    }
}

fn message_ids(tags: &[DeliveryTag]) -> Result<Vec<i64>, BrokerError> {
    tags.iter().map(message_id).collect()
}

/// The wall clock in Unix milliseconds (0 before 1970, `i64::MAX` in the far future).
fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    duration_ms(since_epoch)
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A `COUNT(*)` result as `u64` (never negative in practice; 0 if it were).
fn count_from_sql(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

//! The embedded queue's file: its tables, every SQL statement run on them, and opening a file
//! (WAL mode, pragmas, creating or checking the schema).
//!
//! Not for: when a statement runs or in which transaction (see `consumer`, `dead_letters` and
//! the producer in the parent module), or classifying errors (`classify` in the parent module).
//!
//! # Schema
//!
//! ```sql
//! messages(id INTEGER PRIMARY KEY AUTOINCREMENT, enqueued_at INTEGER NOT NULL,
//!          visible_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)
//!          -- index messages_visible_at (visible_at, id)
//! message_bodies(id INTEGER PRIMARY KEY, body BLOB NOT NULL)          -- id = messages.id
//! dead_letters(id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL, reason TEXT NOT NULL,
//!              attempts INTEGER NOT NULL, dead_lettered_at INTEGER NOT NULL)
//! ```
//!
//! The bodies live in their own table, written once at enqueue and deleted at ack, because SQLite
//! rewrites a whole row (and so its whole page) when one column changes: with the bodies inline,
//! every lease rewrote every byte of every leased message into the WAL. Kept apart, a lease
//! rewrites only the narrow `messages` rows.
//!
//! Times are Unix milliseconds of the wall clock (the only clock several processes share).
//! `AUTOINCREMENT` guarantees an id is never reused, so a late `ack` from a consumer whose lease
//! expired can never delete a newer message that happened to get the same id. `PRAGMA
//! user_version` records the schema version; opening a file written by a newer geoprov fails with
//! [`BrokerError::Config`] instead of guessing.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{classify, BrokerError, BUSY_TIMEOUT};

/// The schema version this code writes and understands (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Keeps the WAL file from staying large after a burst (it is truncated to this at checkpoints).
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    enqueued_at INTEGER NOT NULL,
    visible_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_visible_at ON messages (visible_at, id);
CREATE TABLE IF NOT EXISTS message_bodies (
    id   INTEGER PRIMARY KEY,
    body BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    body             BLOB    NOT NULL,
    reason           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL
);
";

pub(super) const INSERT_MESSAGE: &str =
    "INSERT INTO messages (enqueued_at, visible_at, attempts) VALUES (?1, ?1, 0)";

pub(super) const INSERT_BODY: &str = "INSERT INTO message_bodies (id, body) VALUES (?1, ?2)";

pub(super) const SELECT_BODY: &str = "SELECT body FROM message_bodies WHERE id = ?1";

pub(super) const LEASE: &str = "
UPDATE messages SET visible_at = ?1, attempts = attempts + 1
WHERE id IN (SELECT id FROM messages WHERE visible_at <= ?2 ORDER BY visible_at, id LIMIT ?3)
RETURNING id, attempts";

pub(super) const DELETE_MESSAGE: &str = "DELETE FROM messages WHERE id = ?1";

pub(super) const DELETE_BODY: &str = "DELETE FROM message_bodies WHERE id = ?1";

pub(super) const SET_VISIBLE_AT: &str = "UPDATE messages SET visible_at = ?2 WHERE id = ?1";

/// A body missing from `message_bodies` (only possible if the file was edited by hand) becomes
/// an empty body rather than an error that would block the queue.
pub(super) const DEAD_LETTER: &str = "
INSERT INTO dead_letters (body, reason, attempts, dead_lettered_at)
SELECT coalesce(b.body, x''), ?2, m.attempts, ?3
FROM messages AS m LEFT JOIN message_bodies AS b ON b.id = m.id
WHERE m.id = ?1";

pub(super) const DELETE_DEAD_LETTER: &str = "DELETE FROM dead_letters WHERE id = ?1";

/// Open one connection to `path`: create the directory and file, WAL mode, `synchronous =
/// FULL`, busy timeout, and the schema.
pub(super) fn open_connection(path: &Path) -> Result<Connection, BrokerError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            BrokerError::Config(format!(
                "embedded queue: cannot create directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let classified = |error: rusqlite::Error| classify(path, "open", &error);
    let mut conn = Connection::open(path).map_err(classified)?;
    // Before anything that may need a lock another process holds.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(classified)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(classified)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BrokerError::Config(format!(
            "embedded queue {}: cannot switch to WAL mode (journal mode is '{mode}')",
            path.display()
        )));
    }
    // In WAL mode, FULL fsyncs the WAL at every commit: `Ok` from enqueue means durable even
    // across a power cut, not only across a process crash (which NORMAL would already survive).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(classified)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(classified)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Create the schema if the file has none; refuse a schema newer than this code.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), BrokerError> {
    let classified = |error: rusqlite::Error| classify(path, "open", &error);
    // IMMEDIATE: two processes opening a new file at once create the schema one after the other.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classified)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(classified)?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA).map_err(classified)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(classified)?;
        }
        SCHEMA_VERSION => {
            // Still confirm the tables are there (a file with user_version 1 from elsewhere,
            // e.g. `--data-dir` pointing at some other SQLite database).
            let tables: i64 = tx
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                     AND name IN ('messages', 'message_bodies', 'dead_letters')",
                    [],
                    |row| row.get(0),
                )
                .map_err(classified)?;
            if tables != 3 {
                return Err(BrokerError::Config(format!(
                    "embedded queue {}: not a geoprov queue file (its tables are missing)",
                    path.display()
                )));
            }
        }
        newer => {
            return Err(BrokerError::Config(format!(
                "embedded queue {}: schema version {newer} is newer than this geoprov supports \
                 ({SCHEMA_VERSION}); upgrade geoprov",
                path.display()
            )));
        }
    }
    tx.commit().map_err(classified)
}

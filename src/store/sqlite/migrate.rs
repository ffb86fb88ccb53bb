//! The SQLite store's schema: its migrations (`migrations/sqlite/NNNN_*.sql`, compiled in), how
//! they are applied under the write lock, and the leaf backfill of migration 2.
//!
//! Not for: the bookkeeping every backend shares (that is [`crate::store::migration`]).

use chrono::Utc;
use rusqlite::{params, Connection, TransactionBehavior};

use super::commit::write_log_head;
use super::error::classify;
use super::read::{log_size, scan};
use super::timestamp::timestamp_text;
use super::{to_sql_int, Inner};
use crate::store::migration::{self, Migration};
use crate::store::StoreError;
use crate::tlog::{event_leaf_hash, CompactRange};

/// Every migration this binary knows, oldest first. Never edit one that has shipped; append.
pub(super) const MIGRATIONS: &[Migration] = migration::migrations![
    1 => "0001_init",
    2 => "0002_tlog",
    3 => "0003_log_nodes",
];

/// The schema version this binary reads and writes (the newest migration it knows).
pub const SCHEMA_VERSION: u32 = migration::newest(MIGRATIONS);

impl Inner {
    pub(super) fn migrate(&self) -> Result<u32, StoreError> {
        let mut conn = self.writer();
        let describe = self.path.display().to_string();
        let current = schema_version(&conn)?;
        migration::refuse_newer(&describe, current, SCHEMA_VERSION)?;
        for migration in migration::pending(MIGRATIONS, current) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(classify)?;
            // Look again under the write lock: another process may have migrated meanwhile.
            let now = schema_version(&tx)?;
            migration::refuse_newer(&describe, now, SCHEMA_VERSION)?;
            if now >= migration.version {
                continue;
            }
            if now == 0 && table_exists(&tx, "lineage_events")? {
                return Err(StoreError::Schema(format!(
                    "{} already has a lineage_events table that geoprov did not create (no \
                     schema_migrations table); adopting an existing table is not supported by \
                     the SQLite store: use a new file and replay the events with `geoprov emit`",
                    self.path.display()
                )));
            }
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (\
                     version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
            )
            .map_err(classify)?;
            tx.execute_batch(migration.sql)
                .map_err(|e| migration::failed(migration, &describe, classify(e)))?;
            if migration.version == 2 {
                backfill_leaves(&tx)?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![migration.version, timestamp_text(Utc::now())],
            )
            .map_err(classify)?;
            tx.commit().map_err(classify)?;
            migration::applied(migration, &describe);
        }
        let version = schema_version(&conn)?;
        if version == SCHEMA_VERSION {
            self.schema.open();
        }
        Ok(version)
    }
}

/// Rows read per step while backfilling leaf hashes.
pub(super) const BACKFILL_PAGE: usize = 10_000;

/// Migration 2 on a log written before it: gives every row its leaf hash and builds the
/// frontier, inside the migration's transaction (the update trigger is dropped and recreated
/// around it, as the 0001 migration foresees).
pub(super) fn backfill_leaves(tx: &Connection) -> Result<(), StoreError> {
    let size = log_size(tx)?;
    if size == 0 {
        return Ok(());
    }
    tx.execute_batch("DROP TRIGGER lineage_events_no_update")
        .map_err(classify)?;
    let mut range = CompactRange::new();
    while range.size() < size {
        let rows = scan(tx, range.size(), BACKFILL_PAGE)?;
        if rows.is_empty() {
            break;
        }
        let mut update = tx
            .prepare_cached("UPDATE lineage_events SET leaf_hash = ?1 WHERE log_position = ?2")
            .map_err(classify)?;
        for row in rows {
            if row.position != range.size() {
                return Err(StoreError::Corrupt(format!(
                    "log position {} is missing; cannot build the log",
                    range.size()
                )));
            }
            let leaf = event_leaf_hash(
                row.position,
                &row.event_id,
                &timestamp_text(row.recorded_at),
                &row.payload_json,
            )
            .map_err(|e| StoreError::Query(e.to_string()))?;
            update
                .execute(params![
                    &leaf[..],
                    to_sql_int(row.position, "log position")?
                ])
                .map_err(classify)?;
            range.append(leaf);
        }
    }
    if range.size() != size {
        return Err(StoreError::Corrupt(format!(
            "log_head.size is {size} but the log holds {} rows",
            range.size()
        )));
    }
    write_log_head(tx, &range)?;
    tx.execute_batch(
        "CREATE TRIGGER lineage_events_no_update BEFORE UPDATE ON lineage_events \
         BEGIN SELECT RAISE(ABORT, 'lineage_events is append-only'); END;",
    )
    .map_err(classify)?;
    Ok(())
}

/// The newest applied migration, or 0 for a database geoprov never migrated.
pub(super) fn schema_version(conn: &Connection) -> Result<u32, StoreError> {
    if !table_exists(conn, "schema_migrations")? {
        return Ok(0);
    }
    let version: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
            row.get(0)
        })
        .map_err(classify)?;
    migration::version_from_column(version.unwrap_or(0))
}

pub(super) fn table_exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |row| row.get(0),
    )
    .map_err(classify)
}

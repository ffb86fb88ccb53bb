//! The PostgreSQL store's schema: its migrations (`migrations/NNNN_*.sql`, compiled in),
//! applied in one transaction under a transaction-scoped advisory lock; the check that a
//! `lineage_events` table found in place can be adopted; and the leaf backfill of migration 2.
//!
//! Not for: the bookkeeping every backend shares ([`crate::store::migration`]) or giving
//! adopted rows their positions (`adopt.rs`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::adopt::stored_leaf_hash;
use super::commit::write_log_head;
use super::commit::LOCK_LOG_HEAD;
use super::error::{classify, corrupt};
use super::read::query_value;
use super::{to_sql_int, PostgresStore};
use crate::store::migration::{self, Migration};
use crate::store::StoreError;
use crate::tlog::CompactRange;

/// Every migration this binary knows, oldest first. Never edit one that has shipped; append.
pub(super) const MIGRATIONS: &[Migration] = migration::migrations![
    1 => "0001_init",
    2 => "0002_tlog",
    3 => "0003_edge_columns",
    4 => "0004_log_nodes",
];

/// The schema version this binary reads and writes (the newest migration it knows).
pub const SCHEMA_VERSION: u32 = migration::newest(MIGRATIONS);

/// The first key of the advisory lock `migrate` takes (`gprv`); the second is a hash of the
/// schema, so that stores in different schemas of one database do not wait for each other.
pub(super) const MIGRATION_LOCK_CLASS: i32 = 0x6770_7276;

/// The seed's columns and the types `migrate` accepts for them in a table it adopts. Text
/// columns may also be `character varying`.
pub(super) const SEED_COLUMNS: &[(&str, &str)] = &[
    ("event_id", "text"),
    ("dataset_uuid", "text"),
    ("operation", "text"),
    ("crs_from", "text"),
    ("crs_to", "text"),
    ("processor_id", "text"),
    ("timestamp", "timestamp with time zone"),
    ("payload_json", "text"),
];

/// geoprov's columns and their types, for a table that already has some of them.
pub(super) const GEOPROV_COLUMNS: &[(&str, &str)] = &[
    ("log_position", "bigint"),
    ("started_at", "timestamp with time zone"),
    ("ended_at", "timestamp with time zone"),
    ("leaf_hash", "bytea"),
    ("inputs", "uuid[]"),
    ("outputs", "uuid[]"),
];

impl PostgresStore {
    /// Apply the missing migrations in one transaction under the migration lock; returns the
    /// version now in force.
    pub(super) async fn apply_migrations(
        &self,
        client: &mut deadpool_postgres::Object,
    ) -> Result<u32, StoreError> {
        let tx = client.transaction().await.map_err(classify)?;
        self.lock_migrations(&tx).await?;
        if let Some(schema) = &self.schema {
            let exists: bool = query_value(
                &tx,
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[schema],
            )
            .await?;
            if !exists {
                // The name was checked to be a plain identifier when the URL was parsed.
                tx.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
                    .await
                    .map_err(classify)?;
            }
        }
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version integer PRIMARY KEY, \
                 name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(classify)?;
        let current = schema_version(&tx).await?;
        migration::refuse_newer(&self.describe, current, SCHEMA_VERSION)?;
        for migration in migration::pending(MIGRATIONS, current) {
            if migration.version == 1 {
                check_adoptable(&tx).await?;
            }
            tx.batch_execute(migration.sql)
                .await
                .map_err(|e| migration::failed(migration, &self.describe, classify(e)))?;
            if migration.version == 2 {
                backfill_leaves(&tx).await?;
            }
            let version = i32::try_from(migration.version).map_err(|_| {
                StoreError::Schema(format!("migration version {} too large", migration.version))
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&version, &migration.name],
            )
            .await
            .map_err(classify)?;
            migration::applied(migration, &self.describe);
        }
        tx.commit().await.map_err(classify)?;
        Ok(SCHEMA_VERSION)
    }

    /// `pg_advisory_xact_lock` for this store's schema: released when `tx` ends.
    pub(super) async fn lock_migrations(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext(coalesce($2::text, current_schema(), '')))",
            &[&MIGRATION_LOCK_CLASS, &self.schema],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }
}

/// The newest applied migration, or 0 for a database (or schema) geoprov never migrated.
pub(super) async fn schema_version<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
) -> Result<u32, StoreError> {
    let exists: bool = query_value(
        client,
        "SELECT to_regclass('schema_migrations') IS NOT NULL",
        &[],
    )
    .await?;
    if !exists {
        return Ok(0);
    }
    let version: i64 = query_value(
        client,
        "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
        &[],
    )
    .await?;
    migration::version_from_column(version)
}

/// Refuse to adopt a `lineage_events` table whose columns or key are not the reference
/// schema's (or geoprov's). Nothing to check when the table does not exist.
pub(super) async fn check_adoptable(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(), StoreError> {
    let rows = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass('lineage_events') AND a.attnum > 0 \
               AND NOT a.attisdropped",
            &[],
        )
        .await
        .map_err(classify)?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut types = HashMap::new();
    for row in &rows {
        let name: String = row.try_get(0).map_err(classify)?;
        let ty: String = row.try_get(1).map_err(classify)?;
        types.insert(name, ty);
    }
    let mut problems = Vec::new();
    for &(column, want) in SEED_COLUMNS {
        match types.get(column) {
            None => problems.push(format!("column {column} is missing")),
            Some(ty) if ty == want || (want == "text" && ty.starts_with("character varying")) => {}
            Some(ty) => problems.push(format!("column {column} is {ty}, not {want}")),
        }
    }
    for &(column, want) in GEOPROV_COLUMNS {
        if let Some(ty) = types.get(column) {
            if ty != want {
                problems.push(format!("column {column} is {ty}, not {want}"));
            }
        }
    }
    let unique_id: bool = query_value(
        tx,
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
         WHERE i.indrelid = to_regclass('lineage_events') AND i.indisunique \
           AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = 'event_id')",
        &[],
    )
    .await?;
    if !unique_id {
        problems.push("event_id is not its primary key".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "the existing lineage_events table cannot be adopted: {}; geoprov adopts only the \
             reference schema (event_id text primary key, dataset_uuid, operation, crs_from, \
             crs_to, processor_id text, timestamp timestamptz, payload_json text)",
            problems.join(", ")
        )))
    }
}

/// Rows read per step while backfilling leaf hashes.
pub(super) const BACKFILL_PAGE: i64 = 10_000;

/// Migration 2 on a log written before it: gives every row that has a position its leaf hash,
/// in position order, and builds the frontier, inside the migration's transaction (which holds
/// the migration lock; the log head is locked too). The append-only trigger is disabled around
/// the update and enabled again before the transaction ends, so nobody ever sees it off.
pub(super) async fn backfill_leaves(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(), StoreError> {
    let head = tx.query_one(LOCK_LOG_HEAD, &[]).await.map_err(classify)?;
    let size: i64 = head.try_get(0).map_err(corrupt)?;
    let size =
        u64::try_from(size).map_err(|_| StoreError::Corrupt(format!("log_head.size is {size}")))?;
    if size == 0 {
        return Ok(());
    }
    tx.batch_execute("ALTER TABLE lineage_events DISABLE TRIGGER lineage_events_append_only")
        .await
        .map_err(classify)?;
    let select = tx
        .prepare(
            "SELECT log_position, event_id, \"timestamp\", payload_json FROM lineage_events \
             WHERE log_position >= $1 ORDER BY log_position LIMIT $2",
        )
        .await
        .map_err(classify)?;
    let update = tx
        .prepare(
            "UPDATE lineage_events AS e SET leaf_hash = u.leaf_hash \
             FROM unnest($1::bigint[], $2::bytea[]) AS u(position, leaf_hash) \
             WHERE e.log_position = u.position",
        )
        .await
        .map_err(classify)?;
    let mut range = CompactRange::new();
    while range.size() < size {
        let from = to_sql_int(range.size())?;
        let rows = tx
            .query(&select, &[&from, &BACKFILL_PAGE])
            .await
            .map_err(classify)?;
        if rows.is_empty() {
            break;
        }
        let mut positions = Vec::with_capacity(rows.len());
        let mut leaves = Vec::with_capacity(rows.len());
        for row in &rows {
            let position: i64 = row.try_get(0).map_err(corrupt)?;
            if u64::try_from(position).ok() != Some(range.size()) {
                return Err(StoreError::Corrupt(format!(
                    "log position {} is missing; cannot build the log",
                    range.size()
                )));
            }
            let event_id: String = row.try_get(1).map_err(corrupt)?;
            let recorded_at: Option<DateTime<Utc>> = row.try_get(2).map_err(corrupt)?;
            let payload: Option<&str> = row.try_get(3).map_err(corrupt)?;
            let leaf = stored_leaf_hash(position, &event_id, recorded_at, payload)?;
            range.append(leaf);
            positions.push(position);
            leaves.push(leaf.to_vec());
        }
        tx.execute(&update, &[&positions, &leaves])
            .await
            .map_err(classify)?;
    }
    if range.size() != size {
        return Err(StoreError::Corrupt(format!(
            "log_head.size is {size} but the log holds {} rows",
            range.size()
        )));
    }
    write_log_head(tx, &range).await?;
    tx.batch_execute("ALTER TABLE lineage_events ENABLE TRIGGER lineage_events_append_only")
        .await
        .map_err(classify)?;
    Ok(())
}

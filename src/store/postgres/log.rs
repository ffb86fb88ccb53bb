//! The transparency log half of the PostgreSQL store ([`TransparencyLog`]): the log head, leaf
//! hashes, interior tree nodes and checkpoints.
//!
//! Not for: whether a checkpoint may be stored (that is `tlog_service::add_checkpoint`, above
//! the store seam) or the Merkle math (`crate::tlog`).

use async_trait::async_trait;

use super::error::{classify, corrupt};
use super::read::{log_head_from_row, read_checkpoint_row, SELECT_LOG_HEAD};
use super::{to_sql_int, PostgresStore};
use crate::store::rows;
use crate::store::{StoreError, StoredCheckpoint, TransparencyLog, TreeHead};
use crate::tlog::Hash;

#[async_trait]
impl TransparencyLog for PostgresStore {
    async fn tree_head(&self) -> Result<TreeHead, StoreError> {
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(SELECT_LOG_HEAD)
            .await
            .map_err(classify)?;
        let row = client.query_one(&stmt, &[]).await.map_err(classify)?;
        Ok(rows::tree_head(&log_head_from_row(&row)?))
    }

    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let (lo, hi) = (to_sql_int(from)?, to_sql_int(to)?);
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT log_position, leaf_hash FROM lineage_events \
                 WHERE log_position >= $1 AND log_position < $2 ORDER BY log_position",
            )
            .await
            .map_err(classify)?;
        let leaves = client.query(&stmt, &[&lo, &hi]).await.map_err(classify)?;
        rows::dense_leaf_hashes(
            from,
            to,
            leaves.iter().map(|row| {
                let position: i64 = row.try_get(0).map_err(corrupt)?;
                let hash: Option<&[u8]> = row.try_get(1).map_err(corrupt)?;
                Ok((position, hash))
            }),
        )
    }

    async fn tree_nodes(
        &self,
        height: u32,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Hash)>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let (lo, hi) = (to_sql_int(from)?, to_sql_int(to)?);
        let height = node_height(height)?;
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT node_index, hash FROM log_nodes \
                 WHERE height = $1 AND node_index >= $2 AND node_index < $3 ORDER BY node_index",
            )
            .await
            .map_err(classify)?;
        let nodes = client
            .query(&stmt, &[&height, &lo, &hi])
            .await
            .map_err(classify)?;
        nodes
            .iter()
            .map(|row| {
                let index: i64 = row.try_get(0).map_err(corrupt)?;
                rows::tree_node(height, index, row.try_get(1).map_err(corrupt)?)
            })
            .collect()
    }

    async fn tree_nodes_end(&self, height: u32) -> Result<u64, StoreError> {
        let height = node_height(height)?;
        let client = self.ready_client().await?;
        let row = client
            .query_one(
                "SELECT max(node_index) FROM log_nodes WHERE height = $1",
                &[&height],
            )
            .await
            .map_err(classify)?;
        Ok(rows::tree_nodes_end(row.try_get(0).map_err(corrupt)?))
    }

    /// One `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`: checkpointers of several
    /// processes may store the same nodes at once.
    async fn add_tree_nodes(&self, height: u32, nodes: &[(u64, Hash)]) -> Result<(), StoreError> {
        if nodes.is_empty() {
            return Ok(());
        }
        let height = node_height(height)?;
        let indexes = nodes
            .iter()
            .map(|(index, _)| to_sql_int(*index))
            .collect::<Result<Vec<i64>, _>>()?;
        let hashes: Vec<&[u8]> = nodes.iter().map(|(_, hash)| &hash[..]).collect();
        let client = self.ready_client().await?;
        client
            .execute(
                "INSERT INTO log_nodes (height, node_index, hash) \
                 SELECT $1, i, h FROM unnest($2::bigint[], $3::bytea[]) AS n(i, h) \
                 ON CONFLICT DO NOTHING",
                &[&height, &indexes, &hashes],
            )
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// One statement that cannot lose a race: `INSERT ... ON CONFLICT DO NOTHING`, then, when
    /// the size was taken, a look at the root stored for it.
    async fn insert_checkpoint(
        &self,
        tree_size: u64,
        root_hash: Hash,
        note: &str,
    ) -> Result<Option<Hash>, StoreError> {
        let size = to_sql_int(tree_size)?;
        let mut client = self.ready_client().await?;
        let tx = client.transaction().await.map_err(classify)?;
        let inserted = tx
            .execute(
                "INSERT INTO log_checkpoints (tree_size, root_hash, note, created_at) \
                 VALUES ($1, $2, $3, clock_timestamp()) ON CONFLICT (tree_size) DO NOTHING",
                &[&size, &&root_hash[..], &note],
            )
            .await
            .map_err(classify)?;
        let stored = if inserted == 0 {
            let stored: Vec<u8> = tx
                .query_one(
                    "SELECT root_hash FROM log_checkpoints WHERE tree_size = $1",
                    &[&size],
                )
                .await
                .map_err(classify)?
                .try_get(0)
                .map_err(corrupt)?;
            Some(Hash::try_from(stored.as_slice()).map_err(|_| {
                StoreError::Corrupt(format!(
                    "the checkpoint at tree size {tree_size} has a root_hash that is not 32 bytes"
                ))
            })?)
        } else {
            None
        };
        tx.commit().await.map_err(classify)?;
        Ok(stored)
    }

    async fn checkpoints(
        &self,
        from_size: u64,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.read_paged(
            "SELECT tree_size, root_hash, note, created_at FROM log_checkpoints \
             WHERE tree_size >= $1 ORDER BY tree_size LIMIT $2",
            from_size,
            limit,
            read_checkpoint_row,
        )
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let client = self.ready_client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT tree_size, root_hash, note, created_at FROM log_checkpoints \
                 ORDER BY tree_size DESC LIMIT 1",
            )
            .await
            .map_err(classify)?;
        let row = client.query_opt(&stmt, &[]).await.map_err(classify)?;
        row.as_ref().map(read_checkpoint_row).transpose()
    }
}

/// A `u64` counter as a PostgreSQL `bigint`; refuses the impossible overflow.
/// A node height as the `smallint` column stores it.
fn node_height(height: u32) -> Result<i16, StoreError> {
    i16::try_from(height)
        .ok()
        .filter(|h| (1..=63).contains(h))
        .ok_or_else(|| StoreError::Query(format!("no tree node height {height}")))
}

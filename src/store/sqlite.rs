//! PLACEHOLDER (being replaced by the SQLite store).
use async_trait::async_trait;
use uuid::Uuid;

use super::{CommitReport, Direction, LineageGraph, Store, StoreError, StoredEvent};
use crate::event::{EventId, LineageEvent};

/// SQLite store.
pub struct SqliteStore;

impl SqliteStore {
    /// Open (and create) the database file.
    pub async fn open(_path: &str) -> Result<Self, StoreError> {
        Ok(SqliteStore)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<u32, StoreError> {
        Err(StoreError::Schema("placeholder".into()))
    }
    async fn commit_batch(&self, _batch: &[LineageEvent]) -> Result<CommitReport, StoreError> {
        Err(StoreError::Schema("placeholder".into()))
    }
    async fn get_event(&self, _id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        Err(StoreError::Schema("placeholder".into()))
    }
    async fn scan(&self, _from: u64, _limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        Err(StoreError::Schema("placeholder".into()))
    }
    async fn count(&self) -> Result<u64, StoreError> {
        Err(StoreError::Schema("placeholder".into()))
    }
    async fn lineage(&self, _root: Uuid, _d: Direction, _depth: u32) -> Result<LineageGraph, StoreError> {
        Err(StoreError::Schema("placeholder".into()))
    }
}

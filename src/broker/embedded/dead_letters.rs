//! The embedded queue's dead letters: listing, replaying and purging the `dead_letters` table.
//!
//! Not for: moving a delivery to the dead letters (that is the consumer's `dead_letter`, in
//! `consumer`).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::schema::{DELETE_DEAD_LETTER, INSERT_BODY, INSERT_MESSAGE};
use super::{count_from_sql, debug_path, in_transaction, now_ms, Durability, Shared};
use crate::broker::{BrokerError, DeadLetter, DeadLetterQueue};

/// Lists, replays and purges the dead letters of an [`EmbeddedBroker`](super::EmbeddedBroker)'s file. Ids are the
/// `dead_letters` row ids in decimal.
pub struct EmbeddedDeadLetters {
    shared: Arc<Shared>,
}

impl EmbeddedDeadLetters {
    /// The dead letters of `shared`'s file.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        EmbeddedDeadLetters { shared }
    }
}

impl fmt::Debug for EmbeddedDeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_path(f, "EmbeddedDeadLetters", &self.shared)
    }
}

#[async_trait]
impl DeadLetterQueue for EmbeddedDeadLetters {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.shared
            .run("dlq list", Durability::Synced, move |conn| {
                let mut select = conn.prepare_cached(
                    "SELECT id, body, reason, attempts, dead_lettered_at FROM dead_letters \
                     ORDER BY id LIMIT ?1",
                )?;
                let rows = select.query_map(params![limit], |row| {
                    Ok(DeadLetter {
                        id: row.get::<_, i64>(0)?.to_string(),
                        body: Bytes::from(row.get::<_, Vec<u8>>(1)?),
                        reason: row.get(2)?,
                        attempts: u32::try_from(row.get::<_, i64>(3)?.max(0)).unwrap_or(u32::MAX),
                        dead_lettered_at: DateTime::<Utc>::from_timestamp_millis(row.get(4)?)
                            .unwrap_or_default(),
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// Moves dead letters back to the end of the queue with their attempt count reset to 0, in
    /// one transaction. Unknown ids are skipped (not counted).
    async fn replay(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        let ids = ids.map(dead_letter_ids).transpose()?;
        let replayed = self
            .shared
            .run(
                "dlq replay",
                Durability::Synced,
                in_transaction(move |tx| {
                    let now = now_ms();
                    let chosen: Vec<i64> = match ids {
                        Some(ids) => ids,
                        None => {
                            let mut all = tx.prepare("SELECT id FROM dead_letters ORDER BY id")?;
                            let rows = all.query_map([], |row| row.get(0))?;
                            rows.collect::<Result<_, _>>()?
                        }
                    };
                    let mut moved: u64 = 0;
                    {
                        let mut select =
                            tx.prepare_cached("SELECT body FROM dead_letters WHERE id = ?1")?;
                        let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
                        let mut insert_body = tx.prepare_cached(INSERT_BODY)?;
                        let mut delete = tx.prepare_cached(DELETE_DEAD_LETTER)?;
                        for id in chosen {
                            let body: Option<Vec<u8>> =
                                select.query_row(params![id], |row| row.get(0)).optional()?;
                            let Some(body) = body else { continue };
                            insert.execute(params![now])?;
                            insert_body.execute(params![tx.last_insert_rowid(), body])?;
                            delete.execute(params![id])?;
                            moved += 1;
                        }
                    }
                    Ok(moved)
                }),
            )
            .await?;
        if replayed > 0 {
            self.shared.wakeup.notify_waiters();
        }
        Ok(replayed)
    }

    async fn purge(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        let ids = ids.map(dead_letter_ids).transpose()?;
        self.shared
            .run(
                "dlq purge",
                Durability::Synced,
                in_transaction(move |tx| {
                    let purged = match &ids {
                        None => tx.execute("DELETE FROM dead_letters", [])?,
                        Some(ids) => {
                            let mut purged = 0;
                            let mut delete = tx.prepare_cached(DELETE_DEAD_LETTER)?;
                            for id in ids {
                                purged += delete.execute(params![id])?;
                            }
                            purged
                        }
                    };
                    Ok(u64::try_from(purged).unwrap_or(u64::MAX))
                }),
            )
            .await
    }

    async fn count(&self) -> Result<u64, BrokerError> {
        self.shared
            .run("dlq count", Durability::Synced, |conn| {
                conn.query_row("SELECT COUNT(*) FROM dead_letters", [], |row| row.get(0))
                    .map(count_from_sql)
            })
            .await
    }
}

/// Parse dead-letter ids as printed by `geoprov dlq list`.
fn dead_letter_ids(ids: &[String]) -> Result<Vec<i64>, BrokerError> {
    ids.iter()
        .map(|id| {
            id.trim().parse::<i64>().map_err(|_| {
                BrokerError::Config(format!(
                    "dead letter id '{id}' is not a number (see `geoprov dlq list`)"
                ))
            })
        })
        .collect()
}

//! The dead-letter stream both Redis backends keep: writing dead letters (in the same MULTI
//! as the acknowledgement) and listing, replaying and purging them.
//!
//! Not for: deciding what is dead-lettered (see `worker`), or the keys of the queue itself (see
//! `streams` and `celery`).

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::Value;

use super::{field, map_err, parse_entries, tag_texts, Entry};
use crate::broker::{BrokerError, DeadLetter, DeadLetterQueue, Delivery};

/// Where `dlq replay` puts a dead letter's body back.
#[derive(Debug, Clone)]
pub(super) enum ReplayTarget {
    /// XADD the body (field `body`) to this stream.
    Stream(String),
    /// LPUSH the body to this list (kombu's queue, so it joins the back of the FIFO).
    List(String),
}

/// An atomic pipeline that adds one dead letter (fields `body`, `reason`, `attempts`, `time`)
/// to `dead_key` per item, and the items' delivery tags as text: the caller appends the
/// commands that forget those tags, so that moving and acknowledging are one MULTI.
pub(super) fn dead_letter_pipe(
    dead_key: &str,
    items: &[(Delivery, String)],
) -> (redis::Pipeline, Vec<String>) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (delivery, reason) in items {
        pipe.cmd("XADD")
            .arg(dead_key)
            .arg("*")
            .arg("body")
            .arg(delivery.body.as_ref())
            .arg("reason")
            .arg(reason)
            .arg("attempts")
            .arg(delivery.attempt)
            .arg("time")
            .arg(Utc::now().to_rfc3339())
            .ignore();
    }
    let tags = items.iter().map(|(delivery, _)| delivery.tag.clone());
    (pipe, tag_texts(&tags.collect::<Vec<_>>()))
}

/// The dead-letter stream `<key>:dead`: one entry per dead letter, oldest first.
pub(super) struct RedisDeadLetters {
    pub(super) conn: ConnectionManager,
    pub(super) dead_key: String,
    pub(super) target: ReplayTarget,
}

fn to_dead_letter((id, fields): Entry) -> DeadLetter {
    let text = |name: &str| field(&fields, name).map(|v| String::from_utf8_lossy(v).into_owned());
    DeadLetter {
        body: Bytes::from(field(&fields, "body").unwrap_or_default().to_vec()),
        reason: text("reason").unwrap_or_default(),
        attempts: text("attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or_default(),
        dead_lettered_at: text("time")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
        id,
    }
}

impl RedisDeadLetters {
    async fn range(&self, start: &str, limit: usize) -> Result<Vec<Entry>, BrokerError> {
        let mut conn = self.conn.clone();
        let value: Value = redis::cmd("XRANGE")
            .arg(&self.dead_key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(parse_entries(&value))
    }

    /// Every entry, or those ids.
    async fn entries(&self, ids: Option<&[String]>) -> Result<Vec<Entry>, BrokerError> {
        match ids {
            Some(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    let mut conn = self.conn.clone();
                    let value: Value = redis::cmd("XRANGE")
                        .arg(&self.dead_key)
                        .arg(id)
                        .arg(id)
                        .query_async(&mut conn)
                        .await
                        .map_err(map_err)?;
                    out.extend(parse_entries(&value));
                }
                Ok(out)
            }
            None => {
                let mut out: Vec<Entry> = Vec::new();
                let mut start = "-".to_string();
                loop {
                    let page = self.range(&start, 500).await?;
                    let Some((last, _)) = page.last() else { break };
                    start = format!("({last}");
                    let full = page.len() == 500;
                    out.extend(page);
                    if !full {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }
}

#[async_trait]
impl DeadLetterQueue for RedisDeadLetters {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        Ok(self
            .range("-", limit.max(1))
            .await?
            .into_iter()
            .map(to_dead_letter)
            .collect())
    }

    async fn replay(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        let entries = self.entries(ids).await?;
        let mut replayed = 0u64;
        for chunk in entries.chunks(200) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (id, fields) in chunk {
                let body = field(fields, "body").unwrap_or_default();
                match &self.target {
                    ReplayTarget::Stream(key) => {
                        pipe.cmd("XADD").arg(key).arg("*").arg("body").arg(body);
                    }
                    ReplayTarget::List(key) => {
                        pipe.cmd("LPUSH").arg(key).arg(body);
                    }
                }
                pipe.ignore();
                pipe.cmd("XDEL").arg(&self.dead_key).arg(id).ignore();
            }
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn).await.map_err(map_err)?;
            replayed += chunk.len() as u64;
        }
        Ok(replayed)
    }

    async fn purge(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        let mut conn = self.conn.clone();
        match ids {
            None => {
                let (n, _): (u64, i64) = redis::pipe()
                    .atomic()
                    .cmd("XLEN")
                    .arg(&self.dead_key)
                    .cmd("DEL")
                    .arg(&self.dead_key)
                    .query_async(&mut conn)
                    .await
                    .map_err(map_err)?;
                Ok(n)
            }
            Some([]) => Ok(0),
            Some(ids) => redis::cmd("XDEL")
                .arg(&self.dead_key)
                .arg(ids)
                .query_async(&mut conn)
                .await
                .map_err(map_err),
        }
    }

    async fn count(&self) -> Result<u64, BrokerError> {
        let mut conn = self.conn.clone();
        redis::cmd("XLEN")
            .arg(&self.dead_key)
            .query_async(&mut conn)
            .await
            .map_err(map_err)
    }
}

//! Native Redis broker: one Redis Stream per queue, read through a consumer group.
//!
//! # Data structures
//!
//! | key | type | what |
//! |---|---|---|
//! | `geoprov:<queue>` | stream | one entry per event, field `body` (the JSON payload); an entry given back for later also has field `attempt` |
//! | consumer group `geoprov` on it | group | every worker is a consumer named after its process and task |
//! | `geoprov:<queue>:dead` | stream | dead letters: fields `body`, `reason`, `attempts`, `time` (RFC 3339) |
//!
//! The queue name is `--queue` (default `geoprov`). `MAXLEN` is never set: nothing is trimmed,
//! an entry leaves the stream only when it is acknowledged (XACK + XDEL) or dead-lettered.
//!
//! # Delivery and redelivery
//!
//! - **enqueue**: one pipelined round trip of XADD per slice.
//! - **receive**: `XREADGROUP GROUP geoprov <consumer> COUNT max BLOCK wait STREAMS key >`.
//!   Entries pending on a consumer for longer than the visibility timeout (a worker that died)
//!   are taken over with `XAUTOCLAIM` whenever the consumer's own read came back empty, and at
//!   least every few seconds while it is busy. The attempt number is the entry's delivery count
//!   in the group's pending entries list (PEL), so it survives crashes.
//! - **ack**: `XACK` + `XDEL` in one MULTI.
//! - **extend**: `XCLAIM ... 0 <ids> JUSTID` by the same consumer, which resets the idle time.
//! - **retry_later(delay)**: streams cannot delay an entry, so the entry stays pending and its
//!   idle time is set with `XCLAIM ... IDLE <visibility − delay>` so that `XAUTOCLAIM` takes it
//!   again about `delay` later (never later than the visibility timeout; `delay` 0 means at the
//!   next claim).
//! - **dead_letter**: XADD to the dead stream + XACK + XDEL in one MULTI.
//!
//! Every process joins the group under new consumer names; members that hold nothing and were
//! idle for an hour are removed (`XGROUP DELCONSUMER`) by the claim scan every five minutes.
//!
//! Durability is Redis's: `enqueue` returns when Redis has applied the XADDs. Run Redis with
//! `appendonly yes` for a broker that survives a restart (with the default `appendfsync
//! everysec`, a power loss can cost the last second; `appendfsync always` closes that). A
//! Redis that lost its data (or the group) on restart is handled: the group is recreated.
//! Connections reconnect by themselves; while Redis is down, calls fail as
//! [`BrokerError::Unavailable`] and the worker backs off.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::Value;
use tokio::time::Instant;

use super::dead_letters::{dead_letter_pipe, RedisDeadLetters, ReplayTarget};
use super::{field, map_err, millis, parse_entries, tag_texts, value_text, Entry};
use crate::broker::{
    Broker, BrokerError, BrokerOptions, Consumer, ConsumerOptions, DeadLetterQueue, Delivery,
    DeliveryTag, Producer,
};
use crate::url::BrokerUrl;

/// Default queue name: stream key `geoprov:geoprov`.
pub const DEFAULT_QUEUE: &str = "geoprov";
/// The consumer group every geoprov worker joins.
pub const GROUP: &str = "geoprov";
/// How often a busy consumer still looks for abandoned entries.
const CLAIM_INTERVAL: Duration = Duration::from_secs(3);
/// Longest single blocking read, so a dead connection is noticed.
const MAX_BLOCK: Duration = Duration::from_secs(5);
/// How often a consumer removes group members that hold nothing and were idle for
/// [`STALE_CONSUMER_IDLE`] (workers that stopped or died: every process adds new names).
const STALE_SCAN_INTERVAL: Duration = Duration::from_secs(300);
/// Idle time after which a member holding nothing is removed. Harmless if it was alive: a
/// consumer is re-created by its next read.
const STALE_CONSUMER_IDLE: Duration = Duration::from_secs(3600);

/// A Redis server used as a stream broker.
pub struct RedisStreamsBroker {
    client: redis::Client,
    conn: ConnectionManager,
    stream: String,
    dead: String,
}

impl RedisStreamsBroker {
    /// Connect to `url` (`redis://` or `rediss://`) and make sure the stream and group exist.
    pub async fn open(url: &BrokerUrl, options: &BrokerOptions) -> Result<Self, BrokerError> {
        let queue = options.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
        let prefix = options.key_prefix.as_deref().unwrap_or("");
        let client = super::client(url, &options.tls)?;
        let conn = super::connect(&client).await?;
        let stream = format!("{prefix}geoprov:{queue}");
        let broker = RedisStreamsBroker {
            client,
            conn,
            dead: format!("{stream}:dead"),
            stream,
        };
        ensure_group(&mut broker.conn.clone(), &broker.stream).await?;
        Ok(broker)
    }

    /// The stream key (`geoprov:<queue>`).
    pub fn stream_key(&self) -> &str {
        &self.stream
    }

    /// The dead-letter stream key (`geoprov:<queue>:dead`).
    pub fn dead_key(&self) -> &str {
        &self.dead
    }
}

/// `XGROUP CREATE key geoprov 0 MKSTREAM`, tolerating an existing group.
async fn ensure_group(conn: &mut ConnectionManager, stream: &str) -> Result<(), BrokerError> {
    let result: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

#[async_trait]
impl Broker for RedisStreamsBroker {
    async fn producer(&self) -> Result<Arc<dyn Producer>, BrokerError> {
        Ok(Arc::new(RedisStreamsProducer {
            conn: self.conn.clone(),
            stream: self.stream.clone(),
        }))
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        let conn = super::connect(&self.client).await?;
        Ok(Box::new(RedisStreamsConsumer {
            conn,
            stream: self.stream.clone(),
            dead: self.dead.clone(),
            name: options.name,
            visibility_timeout: options.visibility_timeout,
            claim_cursor: "0-0".into(),
            last_claim: None,
            want_claim: true,
            last_stale_scan: None,
        }))
    }

    async fn dead_letters(&self) -> Result<Arc<dyn DeadLetterQueue>, BrokerError> {
        Ok(Arc::new(RedisDeadLetters {
            conn: self.conn.clone(),
            dead_key: self.dead.clone(),
            target: ReplayTarget::Stream(self.stream.clone()),
        }))
    }

    async fn depth(&self) -> Result<Option<u64>, BrokerError> {
        let mut conn = self.conn.clone();
        let n: u64 = redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await
            .map_err(map_err)?;
        Ok(Some(n))
    }
}

/// Appends events to the stream, one pipelined round trip per slice.
pub struct RedisStreamsProducer {
    conn: ConnectionManager,
    stream: String,
}

#[async_trait]
impl Producer for RedisStreamsProducer {
    async fn enqueue(&self, bodies: &[Bytes]) -> Result<(), BrokerError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for body in bodies {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("body")
                .arg(body.as_ref())
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(map_err)
    }
}

/// One worker task's member of the consumer group.
pub struct RedisStreamsConsumer {
    /// Its own connection: XREADGROUP BLOCK holds it while waiting.
    conn: ConnectionManager,
    stream: String,
    dead: String,
    name: String,
    visibility_timeout: Duration,
    /// Where the next XAUTOCLAIM scan starts (`0-0` after a full pass).
    claim_cursor: String,
    last_claim: Option<Instant>,
    /// The last read came back empty: look for abandoned entries first.
    want_claim: bool,
    last_stale_scan: Option<Instant>,
}

impl RedisStreamsConsumer {
    /// Turn entries into deliveries; `counts` are their PEL delivery counts, if known.
    fn deliveries(entries: Vec<Entry>, counts: &[u32]) -> Vec<Delivery> {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, (id, fields))| {
                // An entry given back by an older geoprov carries the attempts it already had.
                let base: u32 = field(&fields, "attempt")
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
                let count = counts.get(i).copied().unwrap_or(1).max(1);
                let body = match field(&fields, "body") {
                    Some(b) => Bytes::from(b.to_vec()),
                    // Written by someone else: show its fields, so the dead letter says what came.
                    None => Bytes::from(fields_as_json(&fields)),
                };
                Delivery {
                    tag: DeliveryTag::Text(id),
                    body,
                    attempt: base.saturating_add(count),
                    properties: None,
                }
            })
            .collect()
    }

    /// XAUTOCLAIM entries idle longer than the visibility timeout, with their delivery counts.
    async fn claim(&mut self, max: usize) -> Result<Vec<Delivery>, BrokerError> {
        self.last_claim = Some(Instant::now());
        self.want_claim = false;
        let value: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&self.name)
            .arg(millis(self.visibility_timeout))
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(max)
            .query_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        let Value::Array(parts) = value else {
            return Ok(Vec::new());
        };
        if let Some(next) = parts.first().and_then(value_text) {
            self.claim_cursor = next;
        }
        if self.claim_cursor == "0-0"
            && self
                .last_stale_scan
                .is_none_or(|t| t.elapsed() >= STALE_SCAN_INTERVAL)
        {
            self.last_stale_scan = Some(Instant::now());
            self.remove_stale_consumers().await?;
        }
        let entries = parts.get(1).map(parse_entries).unwrap_or_default();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (id, _) in &entries {
            pipe.cmd("XPENDING")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let replies: Vec<Value> = pipe.query_async(&mut self.conn).await.map_err(map_err)?;
        let counts: Vec<u32> = replies.iter().map(pending_count).collect();
        Ok(Self::deliveries(entries, &counts))
    }

    /// `XGROUP DELCONSUMER` every other member with no pending entries, idle for an hour.
    async fn remove_stale_consumers(&mut self) -> Result<(), BrokerError> {
        let info: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.stream)
            .arg(GROUP)
            .query_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        let Value::Array(members) = info else {
            return Ok(());
        };
        let idle_limit = i64::try_from(millis(STALE_CONSUMER_IDLE)).unwrap_or(i64::MAX);
        for member in &members {
            let fields: Vec<(String, &Value)> = match member {
                Value::Array(kv) => kv
                    .chunks(2)
                    .filter_map(|c| match c {
                        [k, v] => value_text(k).map(|k| (k, v)),
                        _ => None,
                    })
                    .collect(),
                Value::Map(kv) => kv
                    .iter()
                    .filter_map(|(k, v)| value_text(k).map(|k| (k, v)))
                    .collect(),
                _ => continue,
            };
            let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let (Some(name), Some(Value::Int(pending)), Some(Value::Int(idle))) = (
                get("name").and_then(value_text),
                get("pending"),
                get("idle"),
            ) else {
                continue;
            };
            if name != self.name && *pending == 0 && *idle > idle_limit {
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(&name)
                    .query_async::<Value>(&mut self.conn)
                    .await
                    .map_err(map_err)?;
            }
        }
        Ok(())
    }

    /// `XCLAIM` these entries for this consumer (`JUSTID`), which resets their idle time to 0,
    /// or to `idle` when given.
    async fn reclaim(
        &mut self,
        tags: &[DeliveryTag],
        idle: Option<Duration>,
    ) -> Result<(), BrokerError> {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.stream)
            .arg(GROUP)
            .arg(&self.name)
            .arg(0)
            .arg(tag_texts(tags));
        if let Some(idle) = idle {
            cmd.arg("IDLE").arg(millis(idle));
        }
        cmd.arg("JUSTID")
            .query_async::<Value>(&mut self.conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// `XREADGROUP` new entries, blocking up to `wait` (at most [`MAX_BLOCK`]).
    async fn read_new(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let block = millis(wait.min(MAX_BLOCK));
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(max);
        if block > 0 {
            cmd.arg("BLOCK").arg(block);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(">");
        let value: Value = match cmd.query_async(&mut self.conn).await {
            Ok(v) => v,
            Err(e) if e.code() == Some("NOGROUP") => {
                // The server lost the group (restarted without persistence): make it again.
                ensure_group(&mut self.conn, &self.stream).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(map_err(e)),
        };
        // Reply: [[stream, [entries]]] (RESP2), or nil on timeout.
        let entries = match &value {
            Value::Array(streams) => streams
                .first()
                .and_then(|s| match s {
                    Value::Array(pair) => pair.get(1).map(parse_entries),
                    _ => None,
                })
                .unwrap_or_default(),
            Value::Map(streams) => streams
                .first()
                .map(|(_, v)| parse_entries(v))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(Self::deliveries(entries, &[]))
    }
}

/// The delivery count in an `XPENDING key group id id 1` reply.
fn pending_count(v: &Value) -> u32 {
    let Value::Array(rows) = v else { return 1 };
    let Some(Value::Array(row)) = rows.first() else {
        return 1;
    };
    match row.get(3) {
        Some(Value::Int(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        _ => 1,
    }
}

/// An entry without a `body` field, rendered as a JSON object of its fields (lossy UTF-8).
fn fields_as_json(fields: &[(String, Vec<u8>)]) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string().into_bytes()
}

#[async_trait]
impl Consumer for RedisStreamsConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let max = max.max(1);
        let claim_due = self
            .last_claim
            .is_none_or(|t| t.elapsed() >= CLAIM_INTERVAL);
        if self.want_claim || claim_due {
            let claimed = self.claim(max).await?;
            if !claimed.is_empty() {
                return Ok(claimed);
            }
        }
        let fresh = self.read_new(max, wait).await?;
        if fresh.is_empty() {
            self.want_claim = true;
        }
        Ok(fresh)
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        let ids = tag_texts(tags);
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(&ids)
            .ignore()
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(map_err)
    }

    async fn extend(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        self.reclaim(tags, None).await
    }

    async fn retry_later(
        &mut self,
        tags: &[DeliveryTag],
        delay: Duration,
    ) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        // Pretend the entries have been idle for (visibility − delay): XAUTOCLAIM, which takes
        // entries idle longer than the visibility timeout, picks them up after `delay`.
        let idle = self.visibility_timeout.saturating_sub(delay);
        self.reclaim(tags, Some(idle)).await?;
        self.want_claim = true;
        Ok(())
    }

    async fn dead_letter(&mut self, items: &[(Delivery, String)]) -> Result<(), BrokerError> {
        if items.is_empty() {
            return Ok(());
        }
        let (mut pipe, ids) = dead_letter_pipe(&self.dead, items);
        pipe.cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&ids)
            .ignore();
        pipe.cmd("XDEL").arg(&self.stream).arg(&ids).ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(map_err)
    }
}

//! Celery-compatible Redis broker: consumes the task messages a Python Celery 5 client LPUSHes
//! to kombu's lists, with kombu's own unacked bookkeeping, so that geoprov workers and Python
//! Celery workers can share a queue during a migration (`shared/docs/celery-wire.md` §2).
//!
//! Not for: decoding the task message (that is [`crate::celery`], called by the worker's
//! [`crate::worker::CeleryDecoder`]); native geoprov events (see `streams`); Celery's result
//! backend (see `results`). Restoring unacked messages and the visibility sweep are in
//! `unacked`.
//!
//! # Keys (every one prefixed with kombu's `global_keyprefix` when set)
//!
//! | key | type | written by | what |
//! |---|---|---|---|
//! | `<queue>`, `<queue>\x06\x163`, `<queue>\x06\x166`, `<queue>\x06\x169` | list | Celery clients (LPUSH) | priority 0–2, 3–5, 6–8, 9; **0 is served first** |
//! | `unacked_index` | zset | kombu and geoprov | delivery tag → wall-clock seconds it was taken (or last extended) |
//! | `unacked` | hash | kombu and geoprov | delivery tag → `[envelope, exchange, routing_key]` |
//! | `unacked_mutex` | string | kombu and geoprov | lock around the visibility sweep |
//! | `geoprov:<queue>:dead` | stream | geoprov | dead letters: `body` (the envelope as popped), `reason`, `attempts`, `time` |
//! | `geoprov:<queue>:attempts` | hash | geoprov | delivery tag → deliveries so far (kombu keeps no count) |
//!
//! # Taking a message
//!
//! One Lua script RPOPs up to N messages from the four priority lists in order and, **in the
//! same atomic call**, registers each exactly as kombu does (`ZADD unacked_index <now> <tag>`,
//! `HSET unacked <tag> '['..raw..','..exchange..','..routing_key..']'`, the envelope kept byte
//! for byte). kombu has a window between its BRPOP and that registration where a crash loses
//! the message; this script has none. A popped value that is not a kombu envelope (not JSON,
//! or no `properties.delivery_tag`) cannot be registered, so the script moves it to the
//! dead-letter stream in the same call: nothing is ever lost. The queue is polled with a short
//! sleep when empty.
//!
//! # Acknowledging, holding, giving back
//!
//! | action | Redis commands |
//! |---|---|
//! | ack | MULTI `ZREM unacked_index`, `HDEL unacked`, `HDEL attempts` |
//! | extend | `ZADD unacked_index XX <now> <tags…>` |
//! | retry_later(0) | restore now with RPUSH (consumed next), like kombu at a clean shutdown |
//! | retry_later(delay) | `ZADD unacked_index XX <now + delay − visibility> <tag>`: the message stays unacked and the sweep below returns it about `delay` later (within the ~10 s sweep period). This is how a future `eta` is honoured: never persisted before it |
//! | dead_letter | MULTI `XADD dead`, `ZREM`, `HDEL`, `HDEL attempts` |
//!
//! A restore is a compare-and-set Lua script (the hash value must still be the one read), like
//! kombu's WATCH transaction: it sets `headers.redelivered` and
//! `properties.delivery_info.redelivered`, removes the tag from `unacked*` and pushes the
//! envelope to the priority list its routing key and priority name (exchange `""` → the routing
//! key; another exchange → the queues bound in `_kombu.binding.<exchange>`; none found → this
//! worker's queue, so a message is never silently lost).
//!
//! # Durability
//!
//! As for the native backend: run Redis with `appendonly yes`; connections reconnect by
//! themselves, and the scripts are re-sent (EVALSHA falls back to EVAL) after a restart.
//! kombu keeps no delivery count, so geoprov keeps one (`geoprov:<queue>:attempts`, deleted on
//! ack); a message a Python worker acks after geoprov gave it back leaves its small counter
//! behind.
//!
//! # Visibility sweep
//!
//! Like kombu's `restore_visible`, at start-up and every 10 s: take `unacked_mutex`
//! (`SET NX PX 300000`), restore with RPUSH every tag whose score is older than
//! `now − visibility_timeout`, release the lock only if it still holds our token. Like kombu's,
//! it ignores ownership, so **every worker on the database (Python and geoprov) must use the same
//! visibility timeout**. A clean shutdown holds nothing: the worker acks its batch in hand or
//! gives it back with `retry_later(0)`; a consumer dropped while still holding messages gives
//! them back with RPUSH, as kombu does at shutdown (best effort, the sweep being the backstop).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use redis::aio::ConnectionManager;
use redis::Value;
use tokio::time::Instant;

use super::dead_letters::{dead_letter_pipe, RedisDeadLetters, ReplayTarget};
use super::unacked::{Push, UnackedRestorer};
use super::{map_err, now_secs, tag_texts, value_bytes, value_text};
use crate::broker::{
    celery_payload, Broker, BrokerError, BrokerOptions, Consumer, ConsumerOptions, DeadLetterQueue,
    Delivery, DeliveryTag, Producer,
};
use crate::url::BrokerUrl;

/// Default queue name, as Celery's.
pub const DEFAULT_CELERY_QUEUE: &str = "celery";
/// kombu's priority separator.
pub(super) const SEP: &str = "\x06\x16";
/// kombu's priority steps on Redis.
const STEPS: [u8; 4] = [0, 3, 6, 9];
/// How often the visibility sweep runs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How long an empty queue is left alone between two polls.
const POLL_SLEEP: Duration = Duration::from_millis(50);

/// Pop up to ARGV[1] messages from KEYS[5..] in order and register each as unacked.
const POP_SCRIPT: &str = r"
local max = tonumber(ARGV[1])
local now = ARGV[2]
local out = {}
local n = 0
for i = 5, #KEYS do
  while n < max do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    local ok, env = pcall(cjson.decode, raw)
    local tag = nil
    local ex, rk = '', ''
    if ok and type(env) == 'table' then
      local p = env['properties']
      if type(p) == 'table' then
        local t = p['delivery_tag']
        if type(t) == 'string' and t ~= '' then tag = t end
        local di = p['delivery_info']
        if type(di) == 'table' then
          if type(di['exchange']) == 'string' then ex = di['exchange'] end
          if type(di['routing_key']) == 'string' then rk = di['routing_key'] end
        end
      end
    end
    if tag then
      redis.call('ZADD', KEYS[1], now, tag)
      redis.call('HSET', KEYS[2], tag, '[' .. raw .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
      local a = redis.call('HINCRBY', KEYS[4], tag, 1)
      out[#out + 1] = tag
      out[#out + 1] = raw
      out[#out + 1] = a
      n = n + 1
    else
      local reason = 'not a kombu message: the envelope is not a JSON object'
      if ok and type(env) == 'table' then
        reason = 'not a kombu message: no properties.delivery_tag'
      end
      redis.call('XADD', KEYS[3], '*', 'body', raw, 'reason', reason, 'attempts', '1', 'time', ARGV[3])
    end
  end
end
return out
";

/// Every key this backend touches.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// kombu's `global_keyprefix` (may be empty).
    pub(super) prefix: String,
    /// The queue name, unprefixed.
    pub(super) queue: String,
    /// The four priority lists, served in this order.
    pub(super) lists: [String; 4],
    /// `unacked_index`.
    pub(super) index: String,
    /// `unacked`.
    pub(super) unacked: String,
    /// `unacked_mutex`.
    pub(super) mutex: String,
    /// `geoprov:<queue>:dead`.
    pub(super) dead: String,
    /// `geoprov:<queue>:attempts`.
    pub(super) attempts: String,
}

impl Keys {
    fn new(prefix: &str, queue: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            queue: queue.to_owned(),
            lists: STEPS.map(|s| list_key(prefix, queue, s)),
            index: format!("{prefix}unacked_index"),
            unacked: format!("{prefix}unacked"),
            mutex: format!("{prefix}unacked_mutex"),
            dead: format!("{prefix}geoprov:{queue}:dead"),
            attempts: format!("{prefix}geoprov:{queue}:attempts"),
        }
    }
}

/// kombu's `_q_for_pri`: the list of a queue for a priority step.
pub(super) fn list_key(prefix: &str, queue: &str, step: u8) -> String {
    if step == 0 {
        format!("{prefix}{queue}")
    } else {
        format!("{prefix}{queue}{SEP}{step}")
    }
}

/// kombu's `priority()`: the largest step not above `priority`.
pub(super) fn step_of(priority: i64) -> u8 {
    STEPS
        .iter()
        .rev()
        .copied()
        .find(|s| i64::from(*s) <= priority)
        .unwrap_or(0)
}

/// A Redis server holding Celery's kombu lists.
pub struct RedisCeleryBroker {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    task: String,
}

impl RedisCeleryBroker {
    /// Connect to `url` (`redis://` or `rediss://`); the queue is `options.queue` or `celery`.
    pub async fn open(url: &BrokerUrl, options: &BrokerOptions) -> Result<Self, BrokerError> {
        let queue = options.queue.as_deref().unwrap_or(DEFAULT_CELERY_QUEUE);
        if queue.is_empty() {
            return Err(BrokerError::Config("--queue must not be empty".into()));
        }
        let client = super::client(url, &options.tls)?;
        let conn = super::connect(&client).await?;
        Ok(RedisCeleryBroker {
            client,
            conn,
            keys: Keys::new(options.key_prefix.as_deref().unwrap_or(""), queue),
            task: options
                .celery_task
                .clone()
                .unwrap_or_else(|| crate::celery::DEFAULT_TASK_NAME.to_owned()),
        })
    }

    /// The dead-letter stream key (`geoprov:<queue>:dead`, prefixed).
    pub fn dead_key(&self) -> &str {
        &self.keys.dead
    }
}

#[async_trait]
impl Broker for RedisCeleryBroker {
    async fn producer(&self) -> Result<Arc<dyn Producer>, BrokerError> {
        Ok(Arc::new(RedisCeleryProducer {
            conn: self.conn.clone(),
            list: self.keys.lists[0].clone(),
            queue: self.keys.queue.clone(),
            task: self.task.clone(),
        }))
    }

    async fn consumer(&self, options: ConsumerOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        let conn = super::connect(&self.client).await?;
        Ok(Box::new(RedisCeleryConsumer {
            conn: conn.clone(),
            keys: self.keys.clone(),
            visibility_timeout: options.visibility_timeout,
            pop: redis::Script::new(POP_SCRIPT),
            restorer: UnackedRestorer::new(conn, self.keys.clone()),
            last_sweep: None,
            held: HashSet::new(),
        }))
    }

    async fn dead_letters(&self) -> Result<Arc<dyn DeadLetterQueue>, BrokerError> {
        Ok(Arc::new(RedisDeadLetters {
            conn: self.conn.clone(),
            dead_key: self.keys.dead.clone(),
            target: ReplayTarget::List(self.keys.lists[0].clone()),
        }))
    }

    async fn depth(&self) -> Result<Option<u64>, BrokerError> {
        let mut pipe = redis::pipe();
        for list in &self.keys.lists {
            pipe.cmd("LLEN").arg(list);
        }
        let mut conn = self.conn.clone();
        let lens: Vec<u64> = pipe.query_async(&mut conn).await.map_err(map_err)?;
        Ok(Some(lens.iter().sum()))
    }
}

/// Publishes events as Celery task messages (`record_lineage_event(payload)`), the way a Python
/// client's `.delay(payload)` would: LPUSH of a kombu envelope to the queue's priority-0 list,
/// one round trip per slice. Used by `geoprov emit --celery` and `geoprov bench --celery`.
pub struct RedisCeleryProducer {
    conn: ConnectionManager,
    list: String,
    queue: String,
    task: String,
}

#[async_trait]
impl Producer for RedisCeleryProducer {
    async fn enqueue(&self, bodies: &[Bytes]) -> Result<(), BrokerError> {
        let envelopes = bodies
            .iter()
            .enumerate()
            .map(|(n, body)| {
                let payload = celery_payload(n, body)?;
                let task_id = uuid::Uuid::new_v4().to_string();
                let tag = uuid::Uuid::new_v4().to_string();
                Ok(crate::celery::build_redis_envelope(
                    &payload,
                    &self.task,
                    &self.queue,
                    &task_id,
                    &tag,
                ))
            })
            .collect::<Result<Vec<_>, BrokerError>>()?;
        if envelopes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("LPUSH")
            .arg(&self.list)
            .arg(&envelopes)
            .query_async::<()>(&mut conn)
            .await
            .map_err(map_err)
    }
}

/// One worker task's consumer of the kombu lists.
pub struct RedisCeleryConsumer {
    conn: ConnectionManager,
    keys: Keys,
    visibility_timeout: Duration,
    pop: redis::Script,
    restorer: UnackedRestorer,
    last_sweep: Option<Instant>,
    /// Tags taken and neither acked, given back nor dead-lettered: restored with RPUSH if the
    /// consumer is dropped while holding them.
    held: HashSet<String>,
}

impl RedisCeleryConsumer {
    /// Run `pipe` (atomic) with what forgets these tags for good added to it (`ZREM
    /// unacked_index`, `HDEL unacked`, `HDEL attempts`), then stop holding them.
    async fn forget(
        &mut self,
        mut pipe: redis::Pipeline,
        tags: Vec<String>,
    ) -> Result<(), BrokerError> {
        pipe.cmd("ZREM").arg(&self.keys.index).arg(&tags).ignore();
        pipe.cmd("HDEL").arg(&self.keys.unacked).arg(&tags).ignore();
        pipe.cmd("HDEL")
            .arg(&self.keys.attempts)
            .arg(&tags)
            .ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(map_err)?;
        for t in &tags {
            self.held.remove(t);
        }
        Ok(())
    }

    /// `ZADD unacked_index XX <score> <tag>…`: the time these tags count as taken at (wall-clock
    /// seconds), which the visibility sweep compares with `now − visibility_timeout`.
    async fn rescore(&mut self, score: f64, tags: &[String]) -> Result<(), BrokerError> {
        let score = format!("{score:.6}");
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&self.keys.index).arg("XX");
        for t in tags {
            cmd.arg(&score).arg(t);
        }
        cmd.query_async::<()>(&mut self.conn).await.map_err(map_err)
    }

    /// Run the pop script once.
    async fn pop(&mut self, max: usize) -> Result<Vec<Delivery>, BrokerError> {
        let mut invocation = self.pop.prepare_invoke();
        invocation
            .key(&self.keys.index)
            .key(&self.keys.unacked)
            .key(&self.keys.dead)
            .key(&self.keys.attempts);
        for list in &self.keys.lists {
            invocation.key(list);
        }
        invocation
            .arg(max)
            .arg(format!("{:.6}", now_secs()))
            .arg(Utc::now().to_rfc3339());
        let value: Value = invocation
            .invoke_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        let Value::Array(items) = value else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(items.len() / 3);
        for chunk in items.chunks(3) {
            let [tag, raw, attempts] = chunk else {
                continue;
            };
            let (Some(tag), Some(raw)) = (value_text(tag), value_bytes(raw)) else {
                continue;
            };
            let attempt = match attempts {
                Value::Int(n) => u32::try_from(*n).unwrap_or(u32::MAX),
                _ => 1,
            };
            self.held.insert(tag.clone());
            out.push(Delivery {
                tag: DeliveryTag::Text(tag),
                body: Bytes::from(raw),
                attempt: attempt.max(1),
                properties: None,
            });
        }
        Ok(out)
    }
}

impl Drop for RedisCeleryConsumer {
    /// Like kombu at a clean shutdown: give back, with RPUSH (consumed next), whatever is still
    /// held. Best effort on the running runtime; the visibility sweep covers a failure.
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tags: Vec<String> = self.held.drain().collect();
        let mut restorer = self.restorer.clone();
        runtime.spawn(async move {
            for tag in tags {
                if let Err(error) = restorer.restore_tag(&tag, Push::Front).await {
                    tracing::warn!(message = "Could not give back a held Celery message; the visibility sweep will.", %error);
                    return;
                }
            }
        });
    }
}

#[async_trait]
impl Consumer for RedisCeleryConsumer {
    async fn receive(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BrokerError> {
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        loop {
            if self
                .last_sweep
                .is_none_or(|t| t.elapsed() >= SWEEP_INTERVAL)
            {
                self.last_sweep = Some(Instant::now());
                self.restorer.sweep(self.visibility_timeout).await?;
            }
            let got = self.pop(max).await?;
            if !got.is_empty() {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            tokio::time::sleep(left.min(POLL_SLEEP)).await;
        }
    }

    async fn ack(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.forget(pipe, tag_texts(tags)).await
    }

    async fn extend(&mut self, tags: &[DeliveryTag]) -> Result<(), BrokerError> {
        if tags.is_empty() {
            return Ok(());
        }
        self.rescore(now_secs(), &tag_texts(tags)).await
    }

    async fn retry_later(
        &mut self,
        tags: &[DeliveryTag],
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let tags = tag_texts(tags);
        if tags.is_empty() {
            return Ok(());
        }
        if delay.is_zero() {
            for t in &tags {
                self.restorer.restore_tag(t, Push::Front).await?;
                self.held.remove(t);
            }
            return Ok(());
        }
        // Stay unacked; the sweep takes entries older than now − visibility, so this score
        // makes it come back `delay` from now.
        let score = now_secs() + delay.as_secs_f64() - self.visibility_timeout.as_secs_f64();
        self.rescore(score, &tags).await?;
        for t in &tags {
            self.held.remove(t);
        }
        Ok(())
    }

    async fn dead_letter(&mut self, items: &[(Delivery, String)]) -> Result<(), BrokerError> {
        if items.is_empty() {
            return Ok(());
        }
        let (pipe, tags) = dead_letter_pipe(&self.keys.dead, items);
        self.forget(pipe, tags).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_steps_match_kombu() {
        assert_eq!(step_of(0), 0);
        assert_eq!(step_of(2), 0);
        assert_eq!(step_of(3), 3);
        assert_eq!(step_of(5), 3);
        assert_eq!(step_of(8), 6);
        assert_eq!(step_of(9), 9);
        assert_eq!(step_of(200), 9);
        assert_eq!(step_of(-1), 0);
        assert_eq!(list_key("", "celery", 3), "celery\x06\x163");
        assert_eq!(list_key("p:", "celery", 0), "p:celery");
    }
}

//! kombu's unacked bookkeeping on Redis, seen from the side that gives messages back: restoring
//! one unacked message to the queue it came from (kombu's restore transaction, as a
//! compare-and-set Lua script), and the visibility sweep (kombu's `restore_visible`) that
//! restores every message held past the visibility timeout.
//!
//! Not for: taking, acknowledging or dead-lettering messages (see `celery`), or the key names
//! (`Keys` in `celery`).

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::celery::{list_key, step_of, Keys, SEP};
use super::{map_err, now_secs};
use crate::broker::BrokerError;

/// Restore one tag if its `unacked` value is still ARGV[2]: ZREM, HDEL, push ARGV[3] to
/// KEYS[3..] (LPUSH when ARGV[4] is `L`, else RPUSH).
const RESTORE_SCRIPT: &str = r"
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
for i = 3, #KEYS do
  if ARGV[4] == 'L' then
    redis.call('LPUSH', KEYS[i], ARGV[3])
  else
    redis.call('RPUSH', KEYS[i], ARGV[3])
  end
end
return 1
";

/// Delete KEYS[1] only if it holds ARGV[1].
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Where and how to push a restored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Push {
    /// LPUSH: the back of the FIFO (kombu's reject-with-requeue).
    Back,
    /// RPUSH: consumed next (kombu's shutdown restore and visibility sweep).
    Front,
}

/// Puts unacked messages back on their queues, one at a time or by the visibility sweep.
#[derive(Clone)]
pub(super) struct UnackedRestorer {
    conn: ConnectionManager,
    keys: Keys,
    /// [`RESTORE_SCRIPT`].
    script: redis::Script,
    /// [`RELEASE_SCRIPT`].
    release: redis::Script,
}

impl UnackedRestorer {
    /// A restorer for the keys of one queue, on `conn`.
    pub(super) fn new(conn: ConnectionManager, keys: Keys) -> Self {
        UnackedRestorer {
            conn,
            keys,
            script: redis::Script::new(RESTORE_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
        }
    }

    /// kombu's `restore_visible`, guarded by `unacked_mutex`. Returns how many were restored.
    /// Like kombu's, it ignores ownership: every worker on the database must use the same
    /// `visibility_timeout`.
    pub(super) async fn sweep(
        &mut self,
        visibility_timeout: Duration,
    ) -> Result<usize, BrokerError> {
        let token = uuid::Uuid::new_v4().to_string();
        let got: Option<String> = redis::cmd("SET")
            .arg(&self.keys.mutex)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(300_000)
            .query_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        if got.is_none() {
            return Ok(0);
        }
        let ceiling = now_secs() - visibility_timeout.as_secs_f64();
        let result = async {
            let tags: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&self.keys.index)
                .arg("-inf")
                .arg(format!("{ceiling:.6}"))
                .query_async(&mut self.conn)
                .await
                .map_err(map_err)?;
            let mut restored = 0;
            for tag in &tags {
                if self.restore_tag(tag, Push::Front).await? {
                    restored += 1;
                }
            }
            Ok::<usize, BrokerError>(restored)
        }
        .await;
        let released: Result<i64, _> = self
            .release
            .key(&self.keys.mutex)
            .arg(&token)
            .invoke_async(&mut self.conn)
            .await;
        if let Err(e) = released {
            tracing::warn!(message = "Could not release unacked_mutex; it expires by itself.", error = %e);
        }
        let restored = result?;
        if restored > 0 {
            tracing::info!(
                message = "Restored unacknowledged Celery messages past the visibility timeout.",
                restored
            );
        }
        Ok(restored)
    }

    /// Put one unacked message back on its queue (compare-and-set). False if it was no longer
    /// unacked (someone acked or restored it first).
    pub(super) async fn restore_tag(&mut self, tag: &str, push: Push) -> Result<bool, BrokerError> {
        let value: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&self.keys.unacked)
            .arg(tag)
            .query_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        let Some(value) = value else {
            // An index entry without its hash entry: drop it, as kombu does.
            redis::cmd("ZREM")
                .arg(&self.keys.index)
                .arg(tag)
                .query_async::<()>(&mut self.conn)
                .await
                .map_err(map_err)?;
            return Ok(false);
        };
        let Some((envelope, exchange, routing_key, priority)) = parse_unacked(&value) else {
            tracing::warn!(
                message = "Unacked entry is not [envelope, exchange, routing_key]; left in place.",
                tag
            );
            return Ok(false);
        };
        let queues = self.lookup(&exchange, &routing_key).await?;
        let step = step_of(priority);
        let mut invocation = self.script.prepare_invoke();
        invocation.key(&self.keys.index).key(&self.keys.unacked);
        for q in &queues {
            invocation.key(list_key(&self.keys.prefix, q, step));
        }
        invocation
            .arg(tag)
            .arg(&value)
            .arg(envelope)
            .arg(if push == Push::Back { "L" } else { "R" });
        let done: i64 = invocation
            .invoke_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        Ok(done == 1)
    }

    /// The queues a message goes back to: exchange `""` → the routing key; otherwise the queues
    /// bound to the exchange with that routing key; none found → this worker's queue.
    async fn lookup(
        &mut self,
        exchange: &str,
        routing_key: &str,
    ) -> Result<Vec<String>, BrokerError> {
        if exchange.is_empty() {
            if routing_key.is_empty() {
                return Ok(vec![self.keys.queue.clone()]);
            }
            return Ok(vec![routing_key.to_owned()]);
        }
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}_kombu.binding.{exchange}", self.keys.prefix))
            .query_async(&mut self.conn)
            .await
            .map_err(map_err)?;
        let mut queues: Vec<String> = Vec::new();
        for member in &members {
            let parts: Vec<&str> = member.split(SEP).collect();
            if let [rk, _pattern, queue] = parts.as_slice() {
                if *rk == routing_key && !queues.iter().any(|q| q == queue) {
                    queues.push((*queue).to_owned());
                }
            }
        }
        if queues.is_empty() {
            queues.push(self.keys.queue.clone());
        }
        Ok(queues)
    }
}

/// Parse kombu's unacked value `[envelope, exchange, routing_key]`; returns the envelope with
/// its redelivered flags set, the exchange, the routing key and the priority.
fn parse_unacked(value: &[u8]) -> Option<(String, String, String, i64)> {
    let parsed: serde_json::Value = serde_json::from_slice(value).ok()?;
    let serde_json::Value::Array(mut parts) = parsed else {
        return None;
    };
    if parts.len() != 3 {
        return None;
    }
    let routing_key = parts[2].as_str().unwrap_or_default().to_owned();
    let exchange = parts[1].as_str().unwrap_or_default().to_owned();
    let mut envelope = parts.swap_remove(0);
    let object = envelope.as_object_mut()?;
    if let Some(serde_json::Value::Object(headers)) = object.get_mut("headers") {
        headers.insert("redelivered".into(), serde_json::Value::Bool(true));
    }
    let mut priority = 0;
    if let Some(serde_json::Value::Object(properties)) = object.get_mut("properties") {
        priority = properties
            .get("priority")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        if let Some(serde_json::Value::Object(info)) = properties.get_mut("delivery_info") {
            info.insert("redelivered".into(), serde_json::Value::Bool(true));
        }
    }
    Some((envelope.to_string(), exchange, routing_key, priority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacked_value_restores_with_redelivered_flags() {
        let raw = br#"[{"body": "e30=", "headers": {"id": "x"}, "properties": {"priority": 6, "delivery_info": {"exchange": "", "routing_key": "q"}, "delivery_tag": "t"}}, "", "q"]"#;
        let (env, ex, rk, pri) = parse_unacked(raw).unwrap();
        assert_eq!((ex.as_str(), rk.as_str(), pri), ("", "q", 6));
        let v: serde_json::Value = serde_json::from_str(&env).unwrap();
        assert_eq!(v["headers"]["redelivered"], true);
        assert_eq!(v["properties"]["delivery_info"]["redelivered"], true);
        assert!(parse_unacked(b"not json").is_none());
        assert!(parse_unacked(b"[1, 2]").is_none());
    }
}

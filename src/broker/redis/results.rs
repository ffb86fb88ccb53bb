//! Celery's Redis result backend, written for tasks geoprov committed, so that a Python
//! caller's `AsyncResult.get()` sees `SUCCESS:<event_id>` (the [`ResultBackend`] hook).
//!
//! Not for: reading results, or failure records (lineage never fails a task: bad input becomes
//! a dead letter, see `worker`).

use async_trait::async_trait;
use chrono::Utc;
use redis::aio::ConnectionManager;

use super::map_err;
use crate::broker::{BrokerError, ResultBackend, TlsFiles};
use crate::celery::TaskRef;
use crate::event::LineageEvent;
use crate::url::{redact_url, BrokerUrl};

/// Celery's `result_expires` default: one day.
const RESULT_EXPIRES_SECS: u64 = 86_400;

/// Celery's Redis result backend: `SET celery-task-meta-<id> <json> EX 86400` and
/// `PUBLISH` of the same JSON in one MULTI, so that Python's `AsyncResult.get()` returns
/// `SUCCESS:<event_id>`. Tasks sent with `ignore_result` get no record.
pub struct RedisCeleryResults {
    conn: ConnectionManager,
}

impl RedisCeleryResults {
    /// Connect to the result backend URL (`redis://` or `rediss://`; may differ from the
    /// broker's).
    pub async fn open(url: &str, tls: &TlsFiles) -> Result<Self, BrokerError> {
        let url = match url.parse() {
            Ok(url @ BrokerUrl::Redis(_)) => url,
            _ => {
                return Err(BrokerError::Config(format!(
                    "--result-backend '{}' is not a redis:// or rediss:// URL",
                    redact_url(url)
                )))
            }
        };
        let client = super::client(&url, tls)?;
        Ok(RedisCeleryResults {
            conn: super::connect(&client).await?,
        })
    }
}

#[async_trait]
impl ResultBackend for RedisCeleryResults {
    async fn store_success(
        &self,
        committed: &[(&TaskRef, &LineageEvent)],
    ) -> Result<(), BrokerError> {
        if committed.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (task, event) in committed {
            let key = crate::celery::result_key(&task.id);
            let meta = crate::celery::result_meta_success(
                &task.id,
                &format!("SUCCESS:{}", event.event_id.to_hex()),
                now,
            );
            pipe.cmd("SET")
                .arg(&key)
                .arg(&meta)
                .arg("EX")
                .arg(RESULT_EXPIRES_SECS)
                .ignore();
            pipe.cmd("PUBLISH").arg(&key).arg(&meta).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(map_err)
    }
}

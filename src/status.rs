//! The health of a deployment in one value ([`Status`]): whether the broker and the store
//! answer, the queue depth and dead letters, the events stored, the log's size and the age of
//! its latest checkpoint. `geoprov status` prints it; `GET /v1/status` serves it.
//!
//! Every probe is bounded ([`PROBE_TIMEOUT`]), so a broker or store that hangs makes the status
//! say so instead of hanging too.
//!
//! Not for: opening backends (the caller hands them in) or deciding the exit code (the CLI).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::broker::Broker;
use crate::store::Store;

/// How long one probe (a depth, a count, a checkpoint read) may take before it counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a broker said about itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BrokerStatus {
    /// The broker URL, password hidden.
    pub url: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Messages waiting (ready, and in flight where the broker can tell), if it can count them.
    pub queue_depth: Option<u64>,
    /// Messages in the dead letters.
    pub dead_letters: Option<u64>,
    /// Why it is not reachable, or what else is worth a line.
    pub error: Option<String>,
}

/// What a store said about itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoreStatus {
    /// The store URL, password hidden.
    pub url: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Events stored (the log's size).
    pub events: Option<u64>,
    /// The tree size of the latest signed checkpoint.
    pub last_checkpoint_size: Option<u64>,
    /// When the latest checkpoint was signed.
    pub last_checkpoint_at: Option<String>,
    /// Seconds since then.
    pub last_checkpoint_age_seconds: Option<i64>,
    /// Events not yet covered by a checkpoint.
    pub uncovered_events: Option<u64>,
    /// Why it is not reachable.
    pub error: Option<String>,
}

/// The whole picture.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// `true` when the broker and the store both answered.
    pub healthy: bool,
    /// The broker, when there is one to ask.
    pub broker: Option<BrokerStatus>,
    /// The store.
    pub store: StoreStatus,
}

/// Runs `probe` for at most [`PROBE_TIMEOUT`]; `Err` with why when it failed or hung.
async fn bounded<T, E: std::fmt::Display>(
    probe: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// Asks `broker` (shown as `url`) for its depth and dead letters.
pub async fn broker_status(broker: &dyn Broker, url: String) -> BrokerStatus {
    let depth = bounded(broker.depth()).await;
    let dead = match bounded(broker.dead_letters()).await {
        Ok(queue) => bounded(queue.count()).await,
        Err(e) => Err(e),
    };
    let error = depth.as_ref().err().or(dead.as_ref().err()).cloned();
    BrokerStatus {
        url,
        reachable: depth.is_ok(),
        queue_depth: depth.ok().flatten(),
        dead_letters: dead.ok(),
        error,
    }
}

/// The status of a broker that could not be opened.
pub fn broker_down(url: String, error: String) -> BrokerStatus {
    BrokerStatus {
        url,
        reachable: false,
        queue_depth: None,
        dead_letters: None,
        error: Some(error),
    }
}

/// Asks `store` (shown as `url`) for its size and latest checkpoint.
pub async fn store_status(store: &dyn Store, url: String) -> StoreStatus {
    let events = bounded(store.count()).await;
    let latest = match store.transparency_log() {
        Some(log) => bounded(log.latest_checkpoint()).await.ok().flatten(),
        None => None,
    };
    let at = latest.as_ref().map(|c| c.created_at.clone());
    let age = at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_seconds());
    let size = latest.as_ref().map(|c| c.tree_size);
    StoreStatus {
        url,
        reachable: events.is_ok(),
        uncovered_events: events
            .as_ref()
            .ok()
            .map(|n| n.saturating_sub(size.unwrap_or(0))),
        events: events.as_ref().ok().copied(),
        last_checkpoint_size: size,
        last_checkpoint_at: at,
        last_checkpoint_age_seconds: age,
        error: events.err(),
    }
}

/// The status of a store that could not be opened.
pub fn store_down(url: String, error: String) -> StoreStatus {
    StoreStatus {
        url,
        reachable: false,
        events: None,
        last_checkpoint_size: None,
        last_checkpoint_at: None,
        last_checkpoint_age_seconds: None,
        uncovered_events: None,
        error: Some(error),
    }
}

impl Status {
    /// The picture from its parts; healthy when everything asked answered.
    pub fn new(broker: Option<BrokerStatus>, store: StoreStatus) -> Status {
        let healthy = store.reachable && broker.as_ref().is_none_or(|b| b.reachable);
        Status {
            healthy,
            broker,
            store,
        }
    }

    /// A few lines for people.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "geoprov is {}\n",
            if self.healthy { "healthy" } else { "degraded" }
        );
        if let Some(b) = &self.broker {
            let mut line = format!(
                "broker  {}: {}",
                b.url,
                if b.reachable { "reachable" } else { "DOWN" }
            );
            if let Some(depth) = b.queue_depth {
                line.push_str(&format!(", {depth} queued"));
            }
            if let Some(dead) = b.dead_letters {
                line.push_str(&format!(", {dead} dead letter(s)"));
            }
            if let Some(e) = &b.error {
                line.push_str(&format!(" ({e})"));
            }
            out.push_str(&line);
            out.push('\n');
        }
        let s = &self.store;
        let mut line = format!(
            "store   {}: {}",
            s.url,
            if s.reachable { "reachable" } else { "DOWN" }
        );
        if let Some(n) = s.events {
            line.push_str(&format!(", {n} events"));
        }
        match (s.last_checkpoint_size, s.last_checkpoint_age_seconds) {
            (Some(size), Some(age)) => line.push_str(&format!(
                ", last checkpoint at size {size}, {age} s ago ({} events not yet covered)",
                s.uncovered_events.unwrap_or(0)
            )),
            _ if s.reachable => line.push_str(", no checkpoint yet"),
            _ => {}
        }
        if let Some(e) = &s.error {
            line.push_str(&format!(" ({e})"));
        }
        out.push_str(&line);
        out.push('\n');
        out
    }
}

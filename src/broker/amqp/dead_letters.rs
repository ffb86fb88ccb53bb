//! The dead-letter queue `geoprov.<queue>.dead` on RabbitMQ, browsed with `basic.get`: listing
//! (and requeueing), replaying to the main queue, purging (see "Dead letters, policy-free" in
//! the parent module).
//!
//! Not for: moving a delivery to the dead letters (the consumer's `dead_letter`, in
//! `consumer`).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Channel};

use super::connection::{map_err, Link};
use super::fields::{header_text, header_u32};
use super::publish::{publish_confirmed, with_headers, Outgoing};
use super::{message_count, Names, HEADER_ATTEMPTS, HEADER_DEAD_AT, HEADER_DEAD_ID, HEADER_REASON};
use crate::broker::{BrokerError, DeadLetter, DeadLetterQueue};

/// Dead letters moved per round of `replay` / `purge --id`.
const PAGE: usize = 500;

/// `geoprov.<queue>.dead`, browsed with `basic.get`.
pub struct AmqpDeadLetters {
    link: Arc<Link>,
    names: Names,
}

impl AmqpDeadLetters {
    /// The dead letters of `names`, on `link`.
    pub(super) fn new(link: Arc<Link>, names: Names) -> Self {
        AmqpDeadLetters { link, names }
    }
}

/// One dead letter as `basic.get` returned it.
struct Fetched {
    amqp_tag: u64,
    letter: DeadLetter,
    properties: BasicProperties,
}

fn to_fetched(d: lapin::message::Delivery) -> Fetched {
    let headers = d.properties.headers().as_ref();
    let id = header_text(headers, HEADER_DEAD_ID)
        .or_else(|| {
            d.properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str().to_owned())
        })
        .unwrap_or_else(|| format!("tag-{}", d.delivery_tag));
    let letter = DeadLetter {
        id,
        reason: header_text(headers, HEADER_REASON).unwrap_or_default(),
        attempts: header_u32(headers, HEADER_ATTEMPTS).unwrap_or(0),
        dead_lettered_at: header_text(headers, HEADER_DEAD_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
        body: Bytes::from(d.data),
    };
    Fetched {
        amqp_tag: d.delivery_tag,
        letter,
        properties: d.properties,
    }
}

/// Give back every dead letter `ch` holds (`basic.nack` multiple, requeue: they keep their
/// places) and close it. Best effort: closing the channel requeues them too.
async fn requeue_and_close(ch: &Channel) {
    let requeue = BasicNackOptions {
        multiple: true,
        requeue: true,
    };
    let _ = ch.basic_nack(0, requeue).await;
    let _ = ch.close(200, "done").await;
}

impl AmqpDeadLetters {
    /// Up to `limit` dead letters, held unacked on `ch`.
    async fn fetch(&self, ch: &Channel, limit: usize) -> Result<Vec<Fetched>, BrokerError> {
        let mut out = Vec::new();
        while out.len() < limit {
            let got = ch
                .basic_get(&self.names.dead, BasicGetOptions { no_ack: false })
                .await
                .map_err(map_err)?;
            let Some(message) = got else { break };
            out.push(to_fetched(message.delivery));
        }
        Ok(out)
    }

    /// Walk every dead letter on a channel of its own: those `ids` names (all when `None`) are
    /// handed to `act` page by page and then acked; the others are requeued at the end.
    async fn sweep(&self, ids: Option<&[String]>, replay: bool) -> Result<u64, BrokerError> {
        let conn_channel = self.link.scratch_channel().await?;
        let ch = conn_channel;
        if replay {
            ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .map_err(map_err)?;
        }
        let wanted: Option<HashSet<&str>> = ids.map(|ids| ids.iter().map(String::as_str).collect());
        let mut moved = 0u64;
        let result = async {
            loop {
                let page = self.fetch(&ch, PAGE).await?;
                if page.is_empty() {
                    break;
                }
                let chosen: Vec<&Fetched> = page
                    .iter()
                    .filter(|f| {
                        wanted
                            .as_ref()
                            .is_none_or(|w| w.contains(f.letter.id.as_str()))
                    })
                    .collect();
                if replay {
                    let outgoing = chosen
                        .iter()
                        .map(|f| Outgoing {
                            exchange: "",
                            routing_key: &self.names.main,
                            body: &f.letter.body,
                            properties: with_headers(&f.properties, |h| {
                                h.retain(|k, _| !k.as_str().starts_with("x-geoprov-"));
                            }),
                        })
                        .collect();
                    publish_confirmed(&ch, outgoing).await?;
                }
                for f in &chosen {
                    ch.basic_ack(f.amqp_tag, BasicAckOptions { multiple: false })
                        .await
                        .map_err(map_err)?;
                }
                moved += chosen.len() as u64;
            }
            Ok::<(), BrokerError>(())
        }
        .await;
        // Requeue what was not chosen (closing the channel would too).
        requeue_and_close(&ch).await;
        result.map(|()| moved)
    }
}

#[async_trait]
impl DeadLetterQueue for AmqpDeadLetters {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let ch = self.link.scratch_channel().await?;
        let fetched = self.fetch(&ch, limit.max(1)).await;
        requeue_and_close(&ch).await;
        Ok(fetched?.into_iter().map(|f| f.letter).collect())
    }

    async fn replay(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        if ids.is_some_and(<[String]>::is_empty) {
            return Ok(0);
        }
        self.sweep(ids, true).await
    }

    async fn purge(&self, ids: Option<&[String]>) -> Result<u64, BrokerError> {
        match ids {
            None => {
                let ch = self.link.scratch_channel().await?;
                let n = ch
                    .queue_purge(&self.names.dead, QueuePurgeOptions::default())
                    .await
                    .map_err(map_err);
                let _ = ch.close(200, "purged").await;
                Ok(u64::from(n?))
            }
            Some([]) => Ok(0),
            Some(ids) => self.sweep(Some(ids), false).await,
        }
    }

    async fn count(&self) -> Result<u64, BrokerError> {
        message_count(&self.link, &self.names.dead).await
    }
}

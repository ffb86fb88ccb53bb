//! PLACEHOLDER (being replaced by the embedded on-disk queue).
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Broker, BrokerError, Consumer, ConsumerOptions, DeadLetterQueue, Producer};

/// Embedded broker.
pub struct EmbeddedBroker;

impl EmbeddedBroker {
    /// Open (and create) the queue file.
    pub async fn open(_path: &std::path::Path) -> Result<Self, BrokerError> {
        Ok(EmbeddedBroker)
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn producer(&self) -> Result<Arc<dyn Producer>, BrokerError> {
        Err(BrokerError::Config("placeholder".into()))
    }
    async fn consumer(&self, _o: ConsumerOptions) -> Result<Box<dyn Consumer>, BrokerError> {
        Err(BrokerError::Config("placeholder".into()))
    }
    async fn dead_letters(&self) -> Result<Arc<dyn DeadLetterQueue>, BrokerError> {
        Err(BrokerError::Config("placeholder".into()))
    }
    async fn depth(&self) -> Result<Option<u64>, BrokerError> {
        let _ = Duration::ZERO;
        Ok(None)
    }
}

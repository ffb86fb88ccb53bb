//! `geoprov status`: whether the broker and the store answer, the queue depth and dead letters,
//! the events stored and the age of the latest checkpoint; exit 0 when healthy, 1 when not.
//! Reads only: creates nothing, and every probe is bounded.

use std::process::ExitCode;

use clap::Args;

use super::{BrokerArgs, CliError};
use crate::config::Config;
use crate::status::{self, Status, PROBE_TIMEOUT};
use crate::url::{BrokerUrl, StoreUrl};

/// Flags of `geoprov status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(super) broker: BrokerArgs,
}

/// Print the status; exit 0 when healthy, 1 when degraded.
pub async fn run(config: &Config, args: StatusArgs) -> Result<ExitCode, CliError> {
    let status = Status::new(Some(broker(config).await), store(config).await);
    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string(&status).map_err(|e| CliError::Failed(e.to_string()))?
        )
    } else {
        status.to_text()
    };
    super::print_stdout(&text)?;
    Ok(if status.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn broker(config: &Config) -> status::BrokerStatus {
    let url = config.broker.to_string();
    if config.broker == BrokerUrl::Embedded {
        let queue = crate::config::queue_db_path(&config.data_dir);
        if !queue.is_file() {
            return status::BrokerStatus {
                url,
                reachable: true,
                queue_depth: Some(0),
                dead_letters: Some(0),
                error: Some(format!("no queue file yet at {}", queue.display())),
            };
        }
    }
    let options = super::wiring::broker_options(config);
    match tokio::time::timeout(PROBE_TIMEOUT, crate::broker::open(&config.broker, &options)).await {
        Ok(Ok(broker)) => status::broker_status(broker.as_ref(), url).await,
        Ok(Err(e)) => status::broker_down(url, e.to_string()),
        Err(_) => status::broker_down(
            url,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ),
    }
}

async fn store(config: &Config) -> status::StoreStatus {
    let url = config.store.to_string();
    if let StoreUrl::Sqlite(path) = &config.store {
        if !path.is_file() {
            return status::store_down(url, format!("no store at {}", path.display()));
        }
    }
    match tokio::time::timeout(PROBE_TIMEOUT, crate::store::open(&config.store)).await {
        Ok(Ok(store)) => status::store_status(store.as_ref(), url).await,
        Ok(Err(e)) => status::store_down(url, e.to_string()),
        Err(_) => status::store_down(
            url,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ),
    }
}

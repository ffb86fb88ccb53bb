//! `geoprov dlq list|replay|purge`: the broker's dead letters.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{open_broker, CliError};
use crate::config::Config;

/// Flags of `geoprov dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    action: DlqAction,
    #[command(flatten)]
    pub(super) broker: super::BrokerArgs,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Print dead letters as NDJSON (id, reason, attempts, time, original body), oldest first.
    List {
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on the queue: all of them, or those given with --id.
    Replay {
        /// Only these ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
    },
    /// Delete dead letters: --all, or those given with --id.
    Purge {
        /// Only these ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        /// Delete every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// Run the action.
pub async fn run(config: &Config, args: DlqArgs) -> Result<ExitCode, CliError> {
    let queue = crate::config::queue_db_path(&config.data_dir);
    if config.broker == crate::url::BrokerUrl::Embedded && !queue.is_file() {
        return Err(CliError::Failed(format!(
            "no embedded queue at {}: nothing was queued with this data dir ({}, relative to the \
             working directory); point at the right one with --data-dir or GEOPROV_DATA_DIR, or \
             at a broker with --broker",
            queue.display(),
            config.data_dir.display()
        )));
    }
    let broker = open_broker(config).await?;
    let dlq = broker.dead_letters().await?;
    match args.action {
        DlqAction::List { limit } => {
            let mut out = String::new();
            for letter in dlq.list(limit).await? {
                out.push_str(
                    &serde_json::to_string(&letter).map_err(|e| CliError::Failed(e.to_string()))?,
                );
                out.push('\n');
            }
            print!("{out}");
            eprintln!("geoprov: {} dead letter(s) in all", dlq.count().await?);
        }
        DlqAction::Replay { ids } => {
            let only = (!ids.is_empty()).then_some(ids.as_slice());
            let n = dlq.replay(only).await?;
            eprintln!("geoprov: replayed {n} dead letter(s)");
        }
        DlqAction::Purge { ids, all } => {
            if ids.is_empty() && !all {
                return Err(CliError::Usage(
                    "dlq purge needs --all or at least one --id".into(),
                ));
            }
            let only = (!ids.is_empty()).then_some(ids.as_slice());
            let n = dlq.purge(only).await?;
            eprintln!("geoprov: purged {n} dead letter(s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

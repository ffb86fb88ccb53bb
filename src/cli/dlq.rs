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
    let ids = match &args.action {
        DlqAction::Replay { ids } | DlqAction::Purge { ids, .. } => ids.as_slice(),
        DlqAction::List { .. } => &[],
    };
    check_ids(&config.broker, ids)?;
    let queue = crate::config::queue_db_path(&config.data_dir);
    if config.broker == crate::url::BrokerUrl::Embedded
        && !config.broker_settings.celery
        && !queue.is_file()
    {
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

/// Refuses a `--id` that cannot name a dead letter of this broker, saying what one looks like
/// (the ids `dlq list` prints): a number on the embedded queue, a stream entry id
/// (`1714557600000-0`) on Redis, a UUID on RabbitMQ.
fn check_ids(broker: &crate::url::BrokerUrl, ids: &[String]) -> Result<(), CliError> {
    use crate::url::BrokerUrl;
    let (well_formed, shape): (fn(&str) -> bool, &str) = match broker {
        BrokerUrl::Embedded => (
            |id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
            "a number, e.g. 42",
        ),
        BrokerUrl::Redis(_) => (
            |id| {
                id.split_once('-').is_some_and(|(ms, seq)| {
                    [ms, seq]
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
            },
            "a stream entry id, e.g. 1714557600000-0",
        ),
        BrokerUrl::Amqp(_) => (
            |id| uuid::Uuid::parse_str(id).is_ok(),
            "a UUID, e.g. 7c1f3a52-0b7e-4d7c-9d3e-2b8f0e6a9c41",
        ),
    };
    match ids.iter().find(|id| !well_formed(id)) {
        Some(bad) => Err(CliError::Usage(format!(
            "--id '{bad}' is not a dead letter id of this broker: one is {shape} (`geoprov dlq \
             list` prints them)"
        ))),
        None => Ok(()),
    }
}

//! `geoprov worker`: consume from `--broker`, persist to `--store`, until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Args;

use super::{
    open_broker, open_store_for_workers, spawn_workers, start_checkpointer, CliError, WorkerArgs,
};
use crate::config::Config;

/// Flags of `geoprov worker`.
#[derive(Debug, Args)]
pub struct WorkerCmdArgs {
    #[command(flatten)]
    worker: WorkerArgs,
}

/// Run workers until a signal; the batch in hand is committed and acknowledged, then exit 0.
pub async fn run(config: &Config, args: WorkerCmdArgs) -> Result<ExitCode, CliError> {
    let broker = open_broker(config).await?;
    let store = open_store_for_workers(config, &args.worker).await?;
    store.migrate().await?;
    let (trigger, shutdown) = crate::shutdown::channel();
    let mut workers = spawn_workers(config, &broker, &store, &args.worker, &shutdown).await?;
    let checkpointer = start_checkpointer(config, &store, &args.worker)?;
    tracing::info!(
        message = "geoprov worker started.",
        broker = %crate::config::redact_url(&config.broker_url),
        store = %crate::config::redact_url(&config.store_url),
        concurrency = workers.len(),
    );
    let had_workers = !workers.is_empty();
    let workers_gave_up = tokio::select! {
        _ = crate::shutdown::os_signal() => false,
        _ = async { while workers.join_next().await.is_some() {} }, if had_workers => true,
    };
    if !workers_gave_up {
        tracing::info!(message = "Shutdown requested; finishing the batches in hand.");
    }
    trigger.trigger();
    while workers.join_next().await.is_some() {}
    if let Some(checkpointer) = checkpointer {
        checkpointer.finish().await;
    }
    if workers_gave_up {
        return Err(CliError::Failed(
            "every worker stopped because the store cannot accept events (see the log above)"
                .into(),
        ));
    }
    tracing::info!(message = "Stopped cleanly.");
    Ok(ExitCode::SUCCESS)
}

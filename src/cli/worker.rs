//! `geoprov worker`: consume from `--broker`, persist to `--store`, until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Args;

use super::{
    open_broker_until, open_store_for_workers, spawn_workers, start_checkpointer, BrokerArgs,
    CliError, KeyArgs, WorkerArgs,
};
use crate::config::Config;

/// Flags of `geoprov worker`.
#[derive(Debug, Args)]
pub struct WorkerCmdArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    pub(super) broker: BrokerArgs,
    #[command(flatten)]
    pub(super) signing_key: KeyArgs,
}

/// Run workers until a signal; the batch in hand is committed and acknowledged, then exit 0.
pub async fn run(config: &Config, args: WorkerCmdArgs) -> Result<ExitCode, CliError> {
    // First of all, so that SIGTERM while waiting for the broker is a clean stop.
    let (trigger, shutdown) = crate::shutdown::on_os_signal();
    let Some(broker) = open_broker_until(config, Some(&shutdown)).await? else {
        tracing::info!(message = "Stopped before the broker was reachable.");
        return Ok(ExitCode::SUCCESS);
    };
    let store = open_store_for_workers(config, &args.worker).await?;
    store.migrate().await?;
    let mut workers = spawn_workers(config, &broker, &store, &args.worker, &shutdown).await?;
    let checkpointer = start_checkpointer(config, &store, &args.worker)?;
    tracing::info!(
        message = "geoprov worker started.",
        broker = %config.broker,
        store = %config.store,
        concurrency = workers.len(),
    );
    let stop = super::run_until_stopped(&mut workers, &trigger, &shutdown, checkpointer).await;
    stop?;
    tracing::info!(message = "Stopped cleanly.");
    Ok(ExitCode::SUCCESS)
}

//! `geoprov serve`: HTTP ingest + workers + query API + `/metrics` in one process.

use std::process::ExitCode;

use clap::Args;

use super::{
    open_store_for_workers, spawn_workers, start_checkpointer, BrokerArgs, CliError, HttpArgs,
    KeyArgs, WorkerArgs,
};
use crate::config::Config;
use crate::http::{router, AppState};

/// Flags of `geoprov serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    pub(super) broker: BrokerArgs,
    #[command(flatten)]
    pub(super) http: HttpArgs,
    #[command(flatten)]
    pub(super) signing_key: KeyArgs,
    /// Run only the HTTP API (ingest and reads), no workers.
    #[arg(long)]
    no_workers: bool,
    /// Load the bundled sample pipeline (Sentinel-2 scenes → reproject → tile → mosaic →
    /// validate topology → publish) at start, so there is a real graph to look at.
    #[arg(long)]
    demo: bool,
    /// Once listening, write the bound address (`127.0.0.1:43117`, one line) to this file, so
    /// that a supervisor or a test that asked for `--listen 127.0.0.1:0` learns the port. The
    /// file appears whole (written beside it, then renamed).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<std::path::PathBuf>,
}

/// Run until SIGINT/SIGTERM; workers finish and acknowledge their batch, then exit 0.
pub async fn run(config: &Config, args: ServeArgs) -> Result<ExitCode, CliError> {
    config.check_listen_is_safe()?;
    let metrics = crate::metrics::install();
    // The port first: a second `serve` on the same port fails before touching anything.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another process listens there: stop it, or pick another address with \
                 --listen, e.g. --listen 127.0.0.1:8701)"
            } else {
                ""
            };
            CliError::Failed(format!("cannot listen on {}: {e}{hint}", config.listen))
        })?;
    // The bound address: with port 0 in --listen, the port the system chose.
    let listening = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("cannot read the bound address: {e}")))?;
    super::ensure_data_dir(config)?;
    // Before waiting for anything, so that SIGTERM while waiting for the broker is a clean stop.
    let (trigger, shutdown) = crate::shutdown::on_os_signal();
    let Some(broker) = super::open_broker_until(config, Some(&shutdown)).await? else {
        tracing::info!(message = "Stopped before the broker was reachable.");
        return Ok(ExitCode::SUCCESS);
    };
    let store = open_store_for_workers(config, &args.worker).await?;
    store.migrate().await?;
    let producer = super::retry_transient(
        "Broker unavailable; retrying to start the producer.",
        Some(&shutdown),
        || broker.producer(),
    )
    .await?;
    let Some(producer) = producer else {
        tracing::info!(message = "Stopped before the broker was reachable.");
        return Ok(ExitCode::SUCCESS);
    };
    if args.demo {
        let sample = crate::sample::sample_ndjson();
        let batch = crate::ingest::prepare(sample.as_bytes(), args.worker.max_payload_bytes);
        producer.enqueue(&batch.accepted_bodies()).await?;
        tracing::info!(
            message = "Sample pipeline enqueued.",
            events = batch.accepted_count(),
            try_this = %format!("geoprov lineage {} --upstream", crate::sample::PUBLISHED),
        );
    }

    let mut workers = if args.no_workers {
        tokio::task::JoinSet::new()
    } else {
        spawn_workers(config, &broker, &store, &args.worker, &shutdown).await?
    };
    let checkpointer = if args.no_workers {
        None
    } else {
        start_checkpointer(config, &store, &args.worker)?
    };

    let state = AppState {
        producer,
        broker: broker.clone(),
        store: store.clone(),
        metrics,
        token: config.token.clone(),
        max_payload_bytes: args.worker.max_payload_bytes,
        broker_url: config.broker.to_string(),
        store_url: config.store.to_string(),
    };
    tracing::info!(
        message = "geoprov serving.",
        listen = %listening,
        broker = %config.broker,
        store = %config.store,
        workers = workers.len(),
    );
    if let Some(path) = &args.ready_file {
        write_ready_file(path, listening)?;
    }
    let mut http_shutdown = shutdown.clone();
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { http_shutdown.requested().await });
    let server = tokio::spawn(async move { server.await });

    let stop = super::run_until_stopped(&mut workers, &trigger, &shutdown, checkpointer).await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(CliError::Failed(format!("HTTP server failed: {e}"))),
        Err(e) => return Err(CliError::Failed(format!("HTTP server task failed: {e}"))),
    }
    stop?;
    tracing::info!(message = "Stopped cleanly.");
    Ok(ExitCode::SUCCESS)
}

/// Writes `address` and a newline to `path` whole: into a file beside it, then renamed over it.
fn write_ready_file(path: &std::path::Path, address: std::net::SocketAddr) -> Result<(), CliError> {
    let fail = |e: std::io::Error| {
        CliError::Failed(format!(
            "cannot write the ready file {}: {e}",
            path.display()
        ))
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, format!("{address}\n")).map_err(fail)?;
    std::fs::rename(&partial, path).map_err(fail)
}

//! Wiring for the commands: opening the configured broker and store (waiting for a broker that
//! is down at start-up), starting workers and the checkpointer, and stopping them cleanly.
//!
//! Not for: parsing flags (`args.rs`) or printing (the commands).

use std::sync::Arc;

use super::{CliError, WorkerArgs};
use crate::broker::{self, Broker, BrokerError, ConsumerOptions};
use crate::config::{self, Config};
use crate::shutdown::Shutdown;
use crate::store::{self, Store};
use crate::worker::{
    CeleryDecoder, Decoder, NativeDecoder, RateLimiter, ResultBackend, Worker, WorkerOptions,
};

/// Open the configured broker.
pub(super) async fn open_broker(config: &Config) -> Result<Arc<dyn Broker>, CliError> {
    open_broker_until(config, None)
        .await?
        .ok_or_else(|| CliError::Failed("stopped before the broker was open".into()))
}

/// Open the configured broker, waiting for it as long as it is down; `None` when `stop` is
/// requested first (SIGTERM while `serve` or `worker` starts).
pub(super) async fn open_broker_until(
    config: &Config,
    stop: Option<&Shutdown>,
) -> Result<Option<Arc<dyn Broker>>, CliError> {
    if config.broker == crate::url::BrokerUrl::Embedded {
        ensure_data_dir(config)?;
    }
    let options = broker_options(config);
    retry_transient("Broker unavailable at start-up; retrying.", stop, || {
        broker::open(&config.broker, &options)
    })
    .await
}

/// Run `op` until it succeeds or fails for good: a broker that is down while geoprov starts
/// (or restarts at that very moment) is waited for with capped backoff, never a reason to exit.
/// Configuration errors still fail at once. `None` when `stop` is requested first, even in the
/// middle of an attempt.
pub(super) async fn retry_transient<T, F, Fut>(
    what: &'static str,
    stop: Option<&Shutdown>,
    mut op: F,
) -> Result<Option<T>, CliError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BrokerError>>,
{
    let backoff = crate::worker::Backoff::default();
    let mut attempt = 0u32;
    let stopped = || async {
        match stop {
            Some(stop) => stop.clone().requested().await,
            None => std::future::pending().await,
        }
    };
    loop {
        let result = tokio::select! {
            result = op() => result,
            () = stopped() => return Ok(None),
        };
        match result {
            Ok(value) => return Ok(Some(value)),
            Err(error) if error.is_transient() => {
                if attempt == 0 {
                    tracing::warn!(message = what, %error);
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.delay(attempt)) => {}
                    () = stopped() => return Ok(None),
                }
                attempt = attempt.saturating_add(1);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The broker options the configuration names.
pub(super) fn broker_options(config: &Config) -> broker::BrokerOptions {
    let s = &config.broker_settings;
    broker::BrokerOptions {
        embedded_queue: config::queue_db_path(&config.data_dir),
        queue: s.queue.clone(),
        celery: s.celery,
        celery_task: s.celery_task.clone(),
        key_prefix: s.key_prefix.clone(),
        tls: broker::TlsFiles {
            ca: s.tls_ca.clone(),
            cert: s.tls_cert.clone(),
            key: s.tls_key.clone(),
        },
    }
}

/// Open the configured store (without migrating it).
pub(super) async fn open_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    open_store_with(config, &store::OpenOptions::default()).await
}

/// Open the store for `serve`/`worker`/`bench`: one PostgreSQL connection per worker task,
/// plus two for the checkpointer and readers (a `pool_size=N` URL parameter still wins).
pub(super) async fn open_store_for_workers(
    config: &Config,
    args: &WorkerArgs,
) -> Result<Arc<dyn Store>, CliError> {
    let options = store::OpenOptions {
        pool_size: Some(args.concurrency.saturating_add(2)),
    };
    open_store_with(config, &options).await
}

/// [`open_store`] with options.
pub(super) async fn open_store_with(
    config: &Config,
    options: &store::OpenOptions,
) -> Result<Arc<dyn Store>, CliError> {
    if matches!(config.store, crate::url::StoreUrl::Sqlite(_)) {
        ensure_data_dir(config)?;
    }
    Ok(store::open_with(&config.store, options).await?)
}

/// Start `args.concurrency` workers consuming `broker` into `store`; returns their handles.
pub(super) async fn spawn_workers(
    config: &Config,
    broker: &Arc<dyn Broker>,
    store: &Arc<dyn Store>,
    args: &WorkerArgs,
    shutdown: &Shutdown,
) -> Result<tokio::task::JoinSet<()>, CliError> {
    if args.concurrency == 0 || args.batch_size == 0 {
        return Err(CliError::Usage(
            "--concurrency and --batch-size must be at least 1".into(),
        ));
    }
    let options = WorkerOptions {
        batch_size: args.batch_size,
        linger: args.batch_linger,
        max_retries: args.max_retries,
        visibility_timeout: args.visibility_timeout,
        ..WorkerOptions::default()
    };
    let settings = &config.broker_settings;
    let decoder: Arc<dyn Decoder> = if settings.celery {
        Arc::new(CeleryDecoder {
            task: settings
                .celery_task
                .clone()
                .unwrap_or_else(|| crate::celery::DEFAULT_TASK_NAME.to_owned()),
            max_body_bytes: args.max_payload_bytes,
        })
    } else {
        Arc::new(NativeDecoder {
            max_payload_bytes: args.max_payload_bytes,
        })
    };
    let results: Option<Arc<dyn ResultBackend>> = match &settings.result_backend {
        Some(url) => {
            let tls = broker_options(config).tls;
            Some(Arc::new(
                broker::redis::RedisCeleryResults::open(url, &tls).await?,
            ))
        }
        None => None,
    };
    let limiter = args.rate_limit.map(|r| Arc::new(RateLimiter::new(r)));
    let mut set = tokio::task::JoinSet::new();
    for n in 0..args.concurrency {
        let consumer_options = ConsumerOptions {
            visibility_timeout: args.visibility_timeout,
            name: format!("geoprov-{}-{n}", std::process::id()),
            prefetch: u16::try_from(args.batch_size).unwrap_or(u16::MAX),
        };
        let consumer = retry_transient(
            "Broker unavailable; retrying to start a consumer.",
            Some(shutdown),
            || broker.consumer(consumer_options.clone()),
        )
        .await?;
        let Some(consumer) = consumer else {
            // Stop requested while starting: the workers started so far finish their batch.
            break;
        };
        let mut worker = Worker::new(
            consumer,
            store.clone(),
            decoder.clone(),
            options.clone(),
            shutdown.clone(),
        );
        if let Some(l) = &limiter {
            worker = worker.with_rate_limiter(l.clone());
        }
        if let Some(r) = &results {
            worker = worker.with_results(r.clone());
        }
        set.spawn(worker.run());
    }
    Ok(set)
}

/// A running checkpointer and the trigger that stops it (it then writes a final checkpoint).
pub(super) struct CheckpointerHandle {
    stop: crate::shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl CheckpointerHandle {
    /// Stop it and wait for its final checkpoint. Call after the workers stopped.
    pub(super) async fn finish(self) {
        self.stop.trigger();
        let _ = self.task.await;
    }
}

/// Run until SIGINT/SIGTERM, or until every worker stopped by itself (the store cannot accept
/// events); then stop the rest, let them finish and acknowledge their batch, and write the final
/// checkpoint. Errs when the workers gave up, so the process exits 1.
pub(super) async fn run_until_stopped(
    workers: &mut tokio::task::JoinSet<()>,
    trigger: &crate::shutdown::ShutdownTrigger,
    shutdown: &Shutdown,
    checkpointer: Option<CheckpointerHandle>,
) -> Result<(), CliError> {
    let had_workers = !workers.is_empty();
    let mut requested = shutdown.clone();
    tokio::select! {
        () = requested.requested() => {}
        () = async { while workers.join_next().await.is_some() {} }, if had_workers => {}
    }
    // The workers also stop on the request (maybe before this task sees it): they gave up only
    // when they all stopped without one.
    let workers_gave_up = !shutdown.is_requested();
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
    Ok(())
}

/// Start the checkpointer of `serve`/`worker`/`bench`: loads the log signing key (creating it
/// at the default location on first start, and logging its verifier key then). `None` when
/// the store keeps no transparency log.
pub(super) fn start_checkpointer(
    config: &Config,
    store: &Arc<dyn Store>,
    args: &WorkerArgs,
) -> Result<Option<CheckpointerHandle>, CliError> {
    if store.transparency_log().is_none() {
        tracing::warn!(
            message = "This store keeps no transparency log yet; no checkpoints are written.",
            store = %config.store,
        );
        return Ok(None);
    }
    let (path, is_default) = config.log_key_path();
    let (signer, created) = crate::tlog_service::load_or_create_signer(&path, is_default)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if created {
        tracing::info!(
            message = "Created the log signing key; give auditors its verifier key.",
            path = %path.display(),
            verifier_key = %signer.verifier_key_text(),
        );
    }
    let options = crate::worker::CheckpointOptions {
        every: args.checkpoint_every.max(1),
        interval: args.checkpoint_interval,
    };
    let checkpointer = crate::worker::Checkpointer::new(store.clone(), signer, options);
    let (stop, stopped) = crate::shutdown::channel();
    let task = tokio::spawn(checkpointer.run(stopped));
    Ok(Some(CheckpointerHandle { stop, task }))
}

/// Creates the data dir if it is missing (only it: its parent must exist), for the commands
/// that write into it.
pub(super) fn ensure_data_dir(config: &Config) -> Result<(), CliError> {
    let created = config::ensure_dir(&config.data_dir).map_err(CliError::Usage)?;
    if created {
        tracing::info!(message = "Created the data dir.", path = %config.data_dir.display());
    }
    Ok(())
}

/// Opens the configured store for a command that only reads: never creates anything. A SQLite
/// file that does not exist is an error naming the path looked at and how to point elsewhere.
pub(super) async fn open_store_to_read(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    if let crate::url::StoreUrl::Sqlite(path) = &config.store {
        if !path.is_file() {
            return Err(CliError::Failed(format!(
                "no store at {}: nothing has been stored with this data dir ({}, relative to \
                 the working directory); point at the right one with --data-dir, --store or \
                 GEOPROV_DATA_DIR",
                path.display(),
                config.data_dir.display()
            )));
        }
    }
    Ok(store::open(&config.store).await?)
}

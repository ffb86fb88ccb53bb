//! The command line: clap types, one file per subcommand. The only place that prints to the
//! user and that picks concrete backends (through `broker::open` and `store::open`).
//!
//! Errors from the library become one line on stderr here, with exit code 2 for usage or
//! configuration errors and 1 for failed checks or operations.

mod bench;
mod dlq;
mod emit;
mod event_id;
mod export;
mod keygen;
mod lineage;
mod migrate;
mod prove;
mod serve;
mod verify;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::broker::{self, Broker, BrokerError, ConsumerOptions};
use crate::config::{self, Config, ConfigError, Rate};
use crate::shutdown::Shutdown;
use crate::store::{self, Store, StoreError};
use crate::worker::{
    CeleryDecoder, Decoder, NativeDecoder, RateLimiter, ResultBackend, Worker, WorkerOptions,
};

/// geoprov: asynchronous, tamper-evident lineage for geospatial pipelines.
#[derive(Debug, Parser)]
#[command(name = "geoprov", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command understands (flags win over environment variables).
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Broker URL: embedded, redis://host:port/db, rediss://..., amqp://..., amqps://...
    /// [default: embedded]
    #[arg(long, env = "GEOPROV_BROKER", global = true)]
    broker: Option<String>,
    /// Store URL: sqlite://PATH or postgres://... [default: sqlite://<data dir>/lineage.db]
    #[arg(long, env = "GEOPROV_STORE", global = true)]
    store: Option<String>,
    /// Directory for the embedded queue, the SQLite store and keys [default: ./geoprov-data]
    #[arg(long, env = "GEOPROV_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8700]
    #[arg(long, env = "GEOPROV_LISTEN", global = true)]
    listen: Option<String>,
    /// Bearer token required by the HTTP API (required to listen on a non-loopback address)
    #[arg(long, env = "GEOPROV_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Log filter, e.g. info, debug, geoprov=debug [default: info]
    #[arg(long, env = "GEOPROV_LOG", global = true)]
    log: Option<String>,
    /// Queue name [default: geoprov, or celery with --celery]
    #[arg(long, env = "GEOPROV_QUEUE", global = true)]
    queue: Option<String>,
    /// Read and write Celery task messages (kombu lists on redis://, Celery's queue on amqp://)
    #[arg(long, env = "GEOPROV_CELERY", global = true)]
    celery: bool,
    /// The Celery task processed with --celery [default: lineage_tasks.record_lineage_event]
    #[arg(long, env = "GEOPROV_CELERY_TASK", global = true)]
    celery_task: Option<String>,
    /// kombu's global_keyprefix, if the Celery app sets one [default: none]
    #[arg(long, env = "GEOPROV_CELERY_KEY_PREFIX", global = true)]
    celery_key_prefix: Option<String>,
    /// Celery result backend (redis://...): store SUCCESS:<event_id> per task [default: none]
    #[arg(long, env = "GEOPROV_RESULT_BACKEND", global = true)]
    result_backend: Option<String>,
    /// CA certificate file (PEM) trusted for rediss:// and amqps:// [default: webpki roots]
    #[arg(long, env = "GEOPROV_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate file (PEM) for mutual TLS
    #[arg(long, env = "GEOPROV_TLS_CERT", global = true)]
    tls_cert: Option<PathBuf>,
    /// Client private key file (PEM) for mutual TLS
    #[arg(long, env = "GEOPROV_TLS_KEY", global = true)]
    tls_key: Option<PathBuf>,
    /// Log signing key file (checkpoints) [default: <data dir>/log-signing.key]
    #[arg(long, env = "GEOPROV_LOG_KEY", global = true)]
    log_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// HTTP ingest + worker(s) + query API + /metrics in one process.
    Serve(serve::ServeArgs),
    /// Consume from --broker and persist to --store.
    Worker(worker::WorkerCmdArgs),
    /// Enqueue events (one JSON object, an array, or NDJSON) from FILE or stdin.
    Emit(emit::EmitArgs),
    /// Print the event_id of each payload read from FILE or stdin, one per line.
    EventId(event_id::EventIdArgs),
    /// Create or upgrade the store schema.
    Migrate,
    /// Walk the lineage graph from a dataset.
    Lineage(lineage::LineageArgs),
    /// Export the lineage (W3C PROV-JSON).
    Export(export::ExportArgs),
    /// Dead letters: list, replay, purge.
    Dlq(dlq::DlqArgs),
    /// End-to-end throughput and latency on the configured broker and store.
    Bench(bench::BenchArgs),
    /// Write a new log signing key and print its verifier key.
    Keygen(keygen::KeygenArgs),
    /// Recheck every stored row, the Merkle tree and every checkpoint; exit 0 only when intact.
    Verify(verify::VerifyArgs),
    /// Print an inclusion proof of an event (or --consistency OLD NEW) as JSON.
    Prove(prove::ProveArgs),
    /// Check an inclusion or consistency proof offline, with no store.
    VerifyProof(verify::VerifyProofArgs),
}

/// Worker tuning shared by `serve`, `worker` and `bench`.
#[derive(Debug, Args, Clone)]
struct WorkerArgs {
    /// Worker tasks in this process.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Most events per store transaction. Large batches matter under backlog: SQLite and
    /// PostgreSQL write each index page a transaction touches once, whatever the number of rows.
    #[arg(long, default_value_t = 5000)]
    batch_size: usize,
    /// How long a batch may wait to fill (seconds or 20ms, 1s, ...).
    #[arg(long, default_value = "20ms", value_parser = parse_duration_arg)]
    batch_linger: std::time::Duration,
    /// Cap on persisted events: N/s, N/m or N/h.
    #[arg(long, value_parser = parse_rate_arg)]
    rate_limit: Option<Rate>,
    /// Failed deliveries before a message is dead-lettered.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// How long a taken message stays invisible before it is redelivered (seconds or 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    visibility_timeout: std::time::Duration,
    /// Largest event payload accepted, in bytes.
    #[arg(long, default_value_t = crate::event::DEFAULT_MAX_PAYLOAD_BYTES)]
    max_payload_bytes: usize,
    /// Write a signed checkpoint once the log grew by this many events.
    #[arg(long, env = "GEOPROV_CHECKPOINT_EVERY", default_value_t = 10_000)]
    checkpoint_every: u64,
    /// Write a signed checkpoint at least this often while the log grows (seconds or 10s, 1m).
    #[arg(long, env = "GEOPROV_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_duration_arg)]
    checkpoint_interval: std::time::Duration,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).map_err(|e| e.0)
}

fn parse_rate_arg(s: &str) -> Result<Rate, String> {
    config::parse_rate(s).map_err(|e| e.0)
}

/// An error at the edge: what to print and which exit code to use.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage or configuration: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The check or operation failed: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Usage(e.0)
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Config(_) => CliError::Usage(e.to_string()),
            StoreError::Schema(_) => CliError::Failed(format!("{e} (run `geoprov migrate`?)")),
            _ => CliError::Failed(e.to_string()),
        }
    }
}

impl From<BrokerError> for CliError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Config(_) => CliError::Usage(e.to_string()),
            _ => CliError::Failed(e.to_string()),
        }
    }
}

/// Parse the command line, run the command, and turn the result into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.log.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geoprov: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(CliError::Usage(msg)) => {
            eprintln!("geoprov: {msg}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("geoprov: {msg}");
            ExitCode::from(1)
        }
    }
}

/// The log filter when `--log`/`GEOPROV_LOG` is not given. lapin logs the broker's expected
/// "queue not found" answer to a passive declare as an error, so it is kept to warnings.
const DEFAULT_LOG_FILTER: &str = "info,lapin=warn";

fn init_logging(filter: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or(DEFAULT_LOG_FILTER))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let g = cli.global;
    let mut config = Config::new(g.broker, g.store, g.data_dir, g.listen, g.token)?;
    config.broker_settings = config::BrokerSettings {
        queue: g.queue,
        celery: g.celery,
        celery_task: g.celery_task,
        key_prefix: g.celery_key_prefix,
        result_backend: g.result_backend,
        tls_ca: g.tls_ca,
        tls_cert: g.tls_cert,
        tls_key: g.tls_key,
    };
    config.log_key = g.log_key;
    match cli.command {
        Command::Serve(args) => serve::run(&config, args).await,
        Command::Worker(args) => worker::run(&config, args).await,
        Command::Emit(args) => emit::run(&config, args).await,
        Command::EventId(args) => event_id::run(args),
        Command::Migrate => migrate::run(&config).await,
        Command::Lineage(args) => lineage::run(&config, args).await,
        Command::Export(args) => export::run(&config, args).await,
        Command::Dlq(args) => dlq::run(&config, args).await,
        Command::Bench(args) => bench::run(&config, args).await,
        Command::Keygen(args) => keygen::run(&config, args),
        Command::Verify(args) => verify::run(&config, args).await,
        Command::Prove(args) => prove::run(&config, args).await,
        Command::VerifyProof(args) => verify::run_verify_proof(&config, args),
    }
}

/// Open the configured broker.
async fn open_broker(config: &Config) -> Result<Arc<dyn Broker>, CliError> {
    open_broker_until(config, None)
        .await?
        .ok_or_else(|| CliError::Failed("stopped before the broker was open".into()))
}

/// Open the configured broker, waiting for it as long as it is down; `None` when `stop` is
/// requested first (SIGTERM while `serve` or `worker` starts).
async fn open_broker_until(
    config: &Config,
    stop: Option<&Shutdown>,
) -> Result<Option<Arc<dyn Broker>>, CliError> {
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
async fn retry_transient<T, F, Fut>(
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
fn broker_options(config: &Config) -> broker::BrokerOptions {
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
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, CliError> {
    open_store_with(config, &store::OpenOptions::default()).await
}

/// Open the store for `serve`/`worker`/`bench`: one PostgreSQL connection per worker task,
/// plus two for the checkpointer and readers (a `pool_size=N` URL parameter still wins).
async fn open_store_for_workers(
    config: &Config,
    args: &WorkerArgs,
) -> Result<Arc<dyn Store>, CliError> {
    let options = store::OpenOptions {
        pool_size: Some(args.concurrency.saturating_add(2)),
    };
    open_store_with(config, &options).await
}

/// [`open_store`] with options.
async fn open_store_with(
    config: &Config,
    options: &store::OpenOptions,
) -> Result<Arc<dyn Store>, CliError> {
    if matches!(config.store, crate::url::StoreUrl::Sqlite(_)) {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            CliError::Failed(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
    }
    Ok(store::open_with(&config.store, options).await?)
}

/// Read FILE, or stdin for `-` or no file.
fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    match file {
        Some(path) if path.as_os_str() != "-" => std::fs::read(path)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display()))),
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::Failed(format!("cannot read stdin: {e}")))?;
            Ok(buf)
        }
    }
}

/// Start `args.concurrency` workers consuming `broker` into `store`; returns their handles.
async fn spawn_workers(
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
struct CheckpointerHandle {
    stop: crate::shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
}

impl CheckpointerHandle {
    /// Stop it and wait for its final checkpoint. Call after the workers stopped.
    async fn finish(self) {
        self.stop.trigger();
        let _ = self.task.await;
    }
}

/// Run until SIGINT/SIGTERM, or until every worker stopped by itself (the store cannot accept
/// events); then stop the rest, let them finish and acknowledge their batch, and write the final
/// checkpoint. Errs when the workers gave up, so the process exits 1.
async fn run_until_stopped(
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
fn start_checkpointer(
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

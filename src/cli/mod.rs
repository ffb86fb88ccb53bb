//! The command line: clap types, one file per subcommand, the shared flag groups in `args.rs`
//! and the wiring of backends and workers in `wiring.rs`. The only place that prints to the user
//! and that picks concrete backends (through `broker::open` and `store::open`).
//!
//! Errors from the library become one line on stderr here, with exit code 2 for usage or
//! configuration errors and 1 for failed checks or operations.

mod args;
mod bench;
mod checkpoints;
mod dlq;
mod emit;
mod event_id;
mod export;
mod key;
mod keygen;
mod lineage;
mod migrate;
mod prove;
mod search;
mod serve;
mod status;
mod verify;
mod wiring;
mod worker;

use self::args::{BrokerArgs, GlobalArgs, HttpArgs, KeyArgs, LogFormat, WorkerArgs};
use self::wiring::{
    ensure_data_dir, open_broker, open_broker_until, open_store, open_store_for_workers,
    open_store_to_read, retry_transient, run_until_stopped, spawn_workers, start_checkpointer,
};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::broker::BrokerError;
use crate::config::{self, Config, ConfigError};
use crate::store::StoreError;

/// geoprov: asynchronous, tamper-evident lineage for geospatial pipelines.
#[derive(Debug, Parser)]
#[command(name = "geoprov", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
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
    /// Find events by dataset, id prefix, operation, processor, CRS and time, newest first.
    Search(search::SearchArgs),
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
    /// Is everything up: broker and store reachable, queue depth, dead letters, events stored,
    /// age of the latest checkpoint. Exit 0 when healthy, 1 when degraded.
    Status(status::StatusArgs),
    /// Print the verifier key of the log signing key (for `verify --key` and auditors).
    Key(key::KeyCmdArgs),
    /// List the stored signed checkpoints (tree size, time, root).
    Checkpoints(checkpoints::CheckpointsArgs),
    /// Print a shell completion script: `geoprov completions bash > /etc/bash_completion.d/geoprov`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The shared flag groups a command takes ([`args`]); `None` for those it does not.
#[derive(Default)]
struct Groups<'a> {
    broker: Option<&'a BrokerArgs>,
    http: Option<&'a HttpArgs>,
    key: Option<&'a KeyArgs>,
}

impl<'a> Groups<'a> {
    fn broker(mut self, broker: &'a BrokerArgs) -> Self {
        self.broker = Some(broker);
        self
    }

    fn http(mut self, http: &'a HttpArgs) -> Self {
        self.http = Some(http);
        self
    }

    fn key(mut self, key: &'a KeyArgs) -> Self {
        self.key = Some(key);
        self
    }
}

impl Command {
    fn groups(&self) -> Groups<'_> {
        let none = Groups::default();
        match self {
            Command::Serve(a) => none.broker(&a.broker).http(&a.http).key(&a.signing_key),
            Command::Worker(a) => none.broker(&a.broker).key(&a.signing_key),
            Command::Bench(a) => none.broker(&a.broker).key(&a.signing_key),
            Command::Emit(a) => none.broker(&a.broker),
            Command::Dlq(a) => none.broker(&a.broker),
            Command::Status(a) => none.broker(&a.broker),
            Command::Keygen(a) => none.key(&a.signing_key),
            Command::Verify(a) => none.key(&a.signing_key),
            Command::Key(a) => none.key(&a.signing_key),
            Command::EventId(_)
            | Command::Migrate
            | Command::Lineage(_)
            | Command::Search(_)
            | Command::Export(_)
            | Command::Prove(_)
            | Command::VerifyProof(_)
            | Command::Checkpoints(_)
            | Command::Completions { .. } => none,
        }
    }
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
            StoreError::Schema(ref why) if why.contains("geoprov migrate") => {
                CliError::Failed(e.to_string())
            }
            StoreError::Schema(_) => CliError::Failed(format!("{e} (run `geoprov migrate`?)")),
            _ => CliError::Failed(e.to_string()),
        }
    }
}

impl From<crate::store::IdLookupError> for CliError {
    fn from(e: crate::store::IdLookupError) -> Self {
        use crate::store::IdLookupError;
        match e {
            IdLookupError::Malformed(_) => CliError::Usage(e.to_string()),
            IdLookupError::Store(e) => e.into(),
            IdLookupError::NotFound(_) | IdLookupError::Ambiguous(_) => {
                CliError::Failed(e.to_string())
            }
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
    if let Err(e) = init_logging(&cli.global.log, cli.global.log_format) {
        eprintln!("geoprov: {e}");
        return ExitCode::from(2);
    }
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

/// Logs to stderr with `filter`, as text (coloured only on a terminal) or one JSON object per
/// line.
///
/// # Errors
///
/// A filter that does not parse, with the reason (never a silent fallback).
fn init_logging(filter: &str, format: LogFormat) -> Result<(), CliError> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map_err(|e| {
            CliError::Usage(format!(
                "--log '{filter}' is not a log filter ({e}); use e.g. info, debug or \
                 geoprov=debug,info"
            ))
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let g = cli.global;
    let groups = cli.command.groups();
    let broker = groups.broker.cloned().unwrap_or_default();
    let http = groups.http.cloned().unwrap_or_default();
    let mut config = Config::new(broker.broker, g.store, g.data_dir, http.listen, http.token)?;
    config.broker_settings = config::BrokerSettings {
        queue: broker.queue,
        celery: broker.celery,
        celery_task: broker.celery_task,
        key_prefix: broker.celery_key_prefix,
        result_backend: broker.result_backend,
        tls_ca: broker.tls_ca,
        tls_cert: broker.tls_cert,
        tls_key: broker.tls_key,
    };
    config.log_key = groups.key.and_then(|k| k.log_key.clone());
    match cli.command {
        Command::Serve(args) => serve::run(&config, args).await,
        Command::Worker(args) => worker::run(&config, args).await,
        Command::Emit(args) => emit::run(&config, args).await,
        Command::EventId(args) => event_id::run(args),
        Command::Migrate => migrate::run(&config).await,
        Command::Lineage(args) => lineage::run(&config, args).await,
        Command::Search(args) => search::run(&config, args).await,
        Command::Export(args) => export::run(&config, args).await,
        Command::Dlq(args) => dlq::run(&config, args).await,
        Command::Bench(args) => bench::run(&config, args).await,
        Command::Keygen(args) => keygen::run(&config, args),
        Command::Verify(args) => verify::run(&config, args).await,
        Command::Prove(args) => prove::run(&config, args).await,
        Command::VerifyProof(args) => verify::run_verify_proof(&config, args),
        Command::Key(_) => key::run(&config),
        Command::Status(args) => status::run(&config, args).await,
        Command::Checkpoints(args) => checkpoints::run(&config, args).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "geoprov", &mut out);
            print_stdout(&String::from_utf8_lossy(&out))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes `text` to stdout. A closed stdout (`geoprov ... | head -1`) ends the command quietly:
/// exit 0, nothing more written, no panic.
pub(super) fn print_stdout(text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("cannot write to stdout: {e}"))),
    }
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

//! The flags several commands share, in groups that each command flattens into its own
//! arguments, so that `--help` lists a command's own flags first and then only the groups it
//! uses, each under its heading (a broker's flags never show on `event-id` or `verify-proof`).
//!
//! Not for: turning the values into a validated [`crate::config::Config`] (that is `mod.rs`).

use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};

use crate::config::{self, Rate};

/// Flags every command understands, given before or after the command name.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(super) struct GlobalArgs {
    /// Directory for the embedded queue, the SQLite store and the signing key, relative to the
    /// working directory unless absolute [default: ./geoprov-data]
    #[arg(long, env = "GEOPROV_DATA_DIR", global = true, value_name = "DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// Store URL: sqlite://PATH or postgres://... [default: sqlite://<data dir>/lineage.db]
    #[arg(long, env = "GEOPROV_STORE", global = true, value_name = "URL")]
    pub(super) store: Option<String>,
    /// Log filter, e.g. info, debug, geoprov=debug (Celery's `-l INFO` works too)
    #[arg(
        short = 'l',
        long,
        env = "GEOPROV_LOG",
        global = true,
        value_name = "FILTER",
        default_value = DEFAULT_LOG_FILTER
    )]
    pub(super) log: String,
    /// Log line format: text for people, json (one object per line) for log shippers
    #[arg(
        long,
        env = "GEOPROV_LOG_FORMAT",
        global = true,
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub(super) log_format: LogFormat,
}

/// The log filter when `--log`/`GEOPROV_LOG` is not given. lapin logs the broker's expected
/// "queue not found" answer to a passive declare as an error, so it is kept to warnings.
pub(super) const DEFAULT_LOG_FILTER: &str = "info,lapin=warn";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum LogFormat {
    /// Human-readable lines (colour only when stderr is a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// Where events wait, and how to read them: the commands that use a broker.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Broker")]
pub(super) struct BrokerArgs {
    /// Broker URL: embedded, redis://host:port/db, rediss://..., amqp://..., amqps://...
    /// [default: embedded]
    #[arg(long, env = "GEOPROV_BROKER", value_name = "URL")]
    pub(super) broker: Option<String>,
    /// Queue name [default: geoprov, or celery with --celery]
    #[arg(short = 'Q', long, env = "GEOPROV_QUEUE", value_name = "NAME")]
    pub(super) queue: Option<String>,
    /// Read and write Celery task messages (kombu lists on redis://, Celery's queue on
    /// amqp://); the environment variable takes 1/0, true/false, yes/no
    #[arg(
        long,
        env = "GEOPROV_CELERY",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub(super) celery: bool,
    /// The Celery task processed with --celery [default: lineage_tasks.record_lineage_event]
    #[arg(long, env = "GEOPROV_CELERY_TASK", value_name = "NAME")]
    pub(super) celery_task: Option<String>,
    /// kombu's global_keyprefix, if the Celery app sets one [default: none]
    #[arg(long, env = "GEOPROV_CELERY_KEY_PREFIX", value_name = "PREFIX")]
    pub(super) celery_key_prefix: Option<String>,
    /// Celery result backend (redis://...): store SUCCESS:<event_id> per task [default: none]
    #[arg(long, env = "GEOPROV_RESULT_BACKEND", value_name = "URL")]
    pub(super) result_backend: Option<String>,
    /// CA certificate file (PEM) trusted for rediss:// and amqps:// [default: webpki roots]
    #[arg(long, env = "GEOPROV_TLS_CA", value_name = "FILE")]
    pub(super) tls_ca: Option<PathBuf>,
    /// Client certificate file (PEM) for mutual TLS with the broker
    #[arg(long, env = "GEOPROV_TLS_CERT", value_name = "FILE")]
    pub(super) tls_cert: Option<PathBuf>,
    /// Client private key file (PEM) for mutual TLS with the broker
    #[arg(long, env = "GEOPROV_TLS_KEY", value_name = "FILE")]
    pub(super) tls_key: Option<PathBuf>,
}

/// The HTTP listener of `serve`.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "HTTP")]
pub(super) struct HttpArgs {
    /// HTTP listen address: host:port, a host name resolving to loopback, or port 0 for one the
    /// system picks [default: 127.0.0.1:8700]
    #[arg(long, env = "GEOPROV_LISTEN", value_name = "ADDR")]
    pub(super) listen: Option<String>,
    /// Bearer token required by the HTTP API (required to listen on a non-loopback address)
    #[arg(long, env = "GEOPROV_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
}

/// The log signing key (checkpoints).
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Signing key")]
pub(super) struct KeyArgs {
    /// Log signing key file [default: <data dir>/log-signing.key]
    #[arg(long, env = "GEOPROV_LOG_KEY", value_name = "FILE")]
    pub(super) log_key: Option<PathBuf>,
}

/// Worker tuning shared by `serve`, `worker` and `bench`.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Worker")]
pub(super) struct WorkerArgs {
    /// Worker tasks in this process.
    #[arg(short = 'c', long, default_value_t = 2)]
    pub(super) concurrency: usize,
    /// Most events per store transaction. Large batches matter under backlog: SQLite and
    /// PostgreSQL write each index page a transaction touches once, whatever the number of rows.
    #[arg(long, default_value_t = 5000)]
    pub(super) batch_size: usize,
    /// How long a batch may wait to fill (seconds or 20ms, 1s, ...).
    #[arg(long, default_value = "20ms", value_parser = parse_duration_arg)]
    pub(super) batch_linger: std::time::Duration,
    /// Cap on persisted events: N/s, N/m or N/h.
    #[arg(long, value_parser = parse_rate_arg)]
    pub(super) rate_limit: Option<Rate>,
    /// Failed deliveries before a message is dead-lettered.
    #[arg(long, default_value_t = 5)]
    pub(super) max_retries: u32,
    /// How long a taken message stays invisible before it is redelivered (seconds or 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    pub(super) visibility_timeout: std::time::Duration,
    /// Largest event payload accepted, in bytes.
    #[arg(long, default_value_t = crate::event::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub(super) max_payload_bytes: usize,
    /// Write a signed checkpoint once the log grew by this many events.
    #[arg(long, env = "GEOPROV_CHECKPOINT_EVERY", default_value_t = 10_000)]
    pub(super) checkpoint_every: u64,
    /// Write a signed checkpoint at least this often while the log grows (seconds or 10s, 1m).
    #[arg(long, env = "GEOPROV_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_duration_arg)]
    pub(super) checkpoint_interval: std::time::Duration,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).map_err(|e| e.0)
}

fn parse_rate_arg(s: &str) -> Result<Rate, String> {
    config::parse_rate(s).map_err(|e| e.0)
}

//! `geoprov emit`: validate and enqueue events on `--broker`, or POST them to `--server`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{open_broker, read_input, BrokerArgs, CliError};
use crate::config::Config;
use crate::ingest::{self, IngestItem};

/// Flags of `geoprov emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// A file holding one JSON object, an array, or NDJSON; `-` or nothing reads stdin.
    file: Option<PathBuf>,
    /// POST to a running `geoprov serve` (e.g. http://127.0.0.1:8700) instead of the broker.
    #[arg(long)]
    server: Option<String>,
    /// Events per enqueue call.
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Largest event payload accepted, in bytes.
    #[arg(long, default_value_t = crate::event::DEFAULT_MAX_PAYLOAD_BYTES)]
    max_payload_bytes: usize,
    /// Bearer token of the server `--server` names.
    #[arg(
        long,
        env = "GEOPROV_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    token: Option<String>,
    #[command(flatten)]
    pub(super) broker: BrokerArgs,
}

/// Enqueue the valid events, print their ids on stdout and a reason per refused item on stderr.
/// Exit 1 when any item was refused.
pub async fn run(config: &Config, args: EmitArgs) -> Result<ExitCode, CliError> {
    let input = read_input(args.file.as_ref())?;
    if let Some(server) = &args.server {
        return post(server, args.token.clone(), input).await;
    }
    let batch = ingest::prepare(&input, args.max_payload_bytes);
    let mut rejected = 0usize;
    let mut ids = String::new();
    for item in &batch.items {
        match item {
            IngestItem::Accepted { event_id, .. } => {
                ids.push_str(&event_id.to_hex());
                ids.push('\n');
            }
            IngestItem::Rejected { index, reason } => {
                rejected += 1;
                eprintln!("geoprov: item {index} refused: {reason}");
            }
        }
    }
    let bodies = batch.accepted_bodies();
    if !bodies.is_empty() {
        let broker = open_broker(config).await?;
        let producer = broker.producer().await?;
        for chunk in bodies.chunks(args.chunk.max(1)) {
            producer.enqueue(chunk).await?;
        }
    }
    print!("{ids}");
    eprintln!(
        "geoprov: enqueued {} event(s), refused {rejected}",
        bodies.len()
    );
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn post(server: &str, token: Option<String>, input: Vec<u8>) -> Result<ExitCode, CliError> {
    // A bare host:port means plain HTTP, as curl reads it.
    let base = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let url = format!("{}/v1/events", base.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut req = client
        .post(&url)
        .header("content-type", "application/json")
        .body(input);
    if let Some(token) = &token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| {
        CliError::Failed(format!("cannot POST to {url}: {}", crate::cause::chain(&e)))
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| {
        CliError::Failed(format!(
            "{url} answered {status} with a body that is not JSON: {}",
            crate::cause::chain(&e)
        ))
    })?;
    if let Some(ids) = body.get("event_ids").and_then(|v| v.as_array()) {
        for id in ids {
            println!("{}", id.as_str().unwrap_or_default());
        }
    }
    let rejected = body
        .get("rejected")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    for r in &rejected {
        eprintln!(
            "geoprov: item {} refused: {}",
            r.get("index").unwrap_or(&serde_json::Value::Null),
            r.get("reason").and_then(|v| v.as_str()).unwrap_or("?")
        );
    }
    if status.is_success() && rejected.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else if status.is_success() || status.as_u16() == 422 {
        Ok(ExitCode::from(1))
    } else {
        Err(CliError::Failed(format!(
            "{url} answered {status}: {}",
            body.get("error").and_then(|v| v.as_str()).unwrap_or("")
        )))
    }
}

//! `geoprov bench`: pushes N realistic geospatial lineage events through the configured broker
//! and store with in-process workers, and prints ingest and end-to-end throughput with p50/p99
//! latency.
//!
//! Latency is measured from the moment the chunk holding an event was durably enqueued to the
//! first poll (every 2ms) at which the store's log size covers that event; it assumes the FIFO
//! order the brokers give, so it is accurate to a few milliseconds.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    open_broker, open_store_for_workers, spawn_workers, start_checkpointer, CliError, WorkerArgs,
};
use crate::config::{self, Config};
use crate::url::StoreUrl;

/// Flags of `geoprov bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events to push through.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per enqueue call (one HTTP request or one `emit` chunk).
    #[arg(long, default_value_t = 1000)]
    chunk: usize,
    /// Use the configured data dir for the embedded broker and SQLite store instead of a fresh
    /// temporary one (the default, so that a benchmark never pollutes a real lineage log).
    #[arg(long)]
    in_place: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    pub(super) broker: super::BrokerArgs,
    #[command(flatten)]
    pub(super) signing_key: super::KeyArgs,
}

/// Run the benchmark.
pub async fn run(config: &Config, args: BenchArgs) -> Result<ExitCode, CliError> {
    let _tmp;
    let mut config = config.clone();
    if !args.in_place {
        let dir = tempfile::tempdir()
            .map_err(|e| CliError::Failed(format!("cannot create a temporary dir: {e}")))?;
        let default_store = StoreUrl::Sqlite(config::store_db_path(&config.data_dir));
        if config.store == default_store {
            config.store = StoreUrl::Sqlite(config::store_db_path(dir.path()));
        }
        config.data_dir = dir.path().to_path_buf();
        _tmp = dir;
    }
    let broker = open_broker(&config).await?;
    let store = open_store_for_workers(&config, &args.worker).await?;
    store.migrate().await?;
    let producer = broker.producer().await?;
    let base = store.count().await?;
    let n = args.events;
    let bodies = generate_events(n, 42);
    let mean_bytes = bodies.iter().map(Bytes::len).sum::<usize>() / n.max(1);

    let (trigger, shutdown) = crate::shutdown::channel();
    let mut workers = spawn_workers(&config, &broker, &store, &args.worker, &shutdown).await?;
    let checkpointer = start_checkpointer(&config, &store, &args.worker)?;

    let start = Instant::now();
    let chunk = args.chunk.max(1);
    let ingest = {
        let producer = producer.clone();
        let bodies = Arc::new(bodies);
        tokio::spawn(async move {
            let mut marks: Vec<(usize, Duration)> = Vec::new();
            let mut sent = 0usize;
            for part in bodies.chunks(chunk) {
                producer.enqueue(part).await?;
                sent += part.len();
                marks.push((sent, start.elapsed()));
            }
            Ok::<_, crate::broker::BrokerError>(marks)
        })
    };

    // Poll the log size until every event is stored.
    let mut progress: Vec<(u64, Duration)> = Vec::new();
    let mut last_change = Instant::now();
    let mut last = base;
    let target = base + n as u64;
    while last < target {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let now_count = store.count().await?;
        if now_count != last {
            progress.push((now_count - base, start.elapsed()));
            last = now_count;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(60) {
            trigger.trigger();
            return Err(CliError::Failed(format!(
                "no progress for 60s: {} of {n} events stored",
                last - base
            )));
        }
    }
    let end_to_end = start.elapsed();
    let marks = ingest
        .await
        .map_err(|e| CliError::Failed(format!("ingest task failed: {e}")))??;
    let ingest_time = marks.last().map_or(Duration::ZERO, |m| m.1);
    trigger.trigger();
    while workers.join_next().await.is_some() {}
    if let Some(checkpointer) = checkpointer {
        checkpointer.finish().await;
    }

    let mut latencies = latencies(&marks, &progress, n);
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let idx = (((latencies.len() - 1) as f64) * p).round() as usize;
        latencies[idx].as_secs_f64() * 1000.0
    };
    #[allow(clippy::cast_precision_loss)]
    let (ingest_rate, e2e_rate) = (
        n as f64 / ingest_time.as_secs_f64().max(1e-9),
        n as f64 / end_to_end.as_secs_f64().max(1e-9),
    );
    let result = serde_json::json!({
        "broker": config.broker.to_string(),
        "store": config.store.to_string(),
        "events": n,
        "mean_payload_bytes": mean_bytes,
        "concurrency": args.worker.concurrency,
        "batch_size": args.worker.batch_size,
        "ingest_events_per_s": ingest_rate.round(),
        "end_to_end_events_per_s": e2e_rate.round(),
        "ingest_seconds": ingest_time.as_secs_f64(),
        "end_to_end_seconds": end_to_end.as_secs_f64(),
        "latency_p50_ms": pct(0.50),
        "latency_p99_ms": pct(0.99),
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "geoprov bench: {n} events (~{mean_bytes} B each), broker {}, store {}",
            result["broker"].as_str().unwrap_or(""),
            result["store"].as_str().unwrap_or("")
        );
        println!(
            "  workers: {} x batch {}",
            args.worker.concurrency, args.worker.batch_size
        );
        println!(
            "  ingest:      {ingest_rate:>10.0} events/s ({:.2}s)",
            ingest_time.as_secs_f64()
        );
        println!(
            "  end to end:  {e2e_rate:>10.0} events/s ({:.2}s)",
            end_to_end.as_secs_f64()
        );
        println!(
            "  latency:     p50 {:.1} ms, p99 {:.1} ms",
            pct(0.50),
            pct(0.99)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// For each event i: enqueue time of its chunk → first time the stored count exceeded i.
fn latencies(marks: &[(usize, Duration)], progress: &[(u64, Duration)], n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    let mut m = 0usize;
    let mut p = 0usize;
    for i in 0..n {
        while m < marks.len() && marks[m].0 <= i {
            m += 1;
        }
        while p < progress.len() && progress[p].0 <= i as u64 {
            p += 1;
        }
        if let (Some(sent), Some(stored)) = (marks.get(m), progress.get(p)) {
            out.push(stored.1.saturating_sub(sent.1));
        }
    }
    out
}

const OPERATIONS: &[&str] = &[
    "ingest",
    "reproject",
    "tile",
    "mosaic",
    "validate_topology",
    "simplify",
    "clip",
    "publish",
];
const CRS_PAIRS: &[(&str, &str)] = &[
    ("EPSG:32633", "EPSG:3857"),
    ("EPSG:4326", "EPSG:3857"),
    ("EPSG:4269", "EPSG:3413"),
    ("EPSG:27700", "EPSG:27700"),
    ("EPSG:32618", "EPSG:32618"),
    ("EPSG:25832", "EPSG:4326"),
];

/// `n` realistic, distinct events (400-600 bytes) whose inputs chain to earlier outputs.
pub fn generate_events(n: usize, seed: u64) -> Vec<Bytes> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outputs: Vec<uuid::Uuid> = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let dataset = uuid::Builder::from_random_bytes(rng.gen()).into_uuid();
        let op = OPERATIONS[rng.gen_range(0..OPERATIONS.len())];
        let (from, to) = CRS_PAIRS[rng.gen_range(0..CRS_PAIRS.len())];
        let n_inputs = if outputs.is_empty() {
            0
        } else {
            rng.gen_range(1..=3)
        };
        let inputs: Vec<String> = (0..n_inputs)
            .map(|_| {
                let back = rng.gen_range(1..=outputs.len().min(50));
                format!("\"{}\"", outputs[outputs.len() - back])
            })
            .collect();
        let lon: f64 = rng.gen_range(-180.0..170.0);
        let lat: f64 = rng.gen_range(-80.0..70.0);
        let secs = i % 86_400;
        let body = format!(
            concat!(
                "{{\"dataset_uuid\": \"{ds}\", \"operation\": \"{op}\", \"crs_from\": \"{from}\", ",
                "\"crs_to\": \"{to}\", \"processor_id\": \"etl-worker-{worker:02}\", ",
                "\"started_at\": \"2026-03-01T{h:02}:{m:02}:{s:02}.{us:06}Z\", \"inputs\": [{inputs}], ",
                "\"parameters\": {{\"resampling\": \"bilinear\", \"target_resolution\": {res}, \"nodata\": -9999}}, ",
                "\"bbox\": [{lon:.6}, {lat:.6}, {lon2:.6}, {lat2:.6}], ",
                "\"output_uri\": \"s3://geo-lake-curated/{op}/{short}.tif\", ",
                "\"software\": {{\"gdal\": \"3.6.2\", \"pipeline\": \"geo-etl/2.4.{minor}\"}}, \"sequence\": {i}}}"
            ),
            ds = dataset,
            op = op,
            from = from,
            to = to,
            worker = rng.gen_range(1..=24),
            h = secs / 3600,
            m = (secs / 60) % 60,
            s = secs % 60,
            us = rng.gen_range(0..1_000_000),
            inputs = inputs.join(", "),
            res = [10.0, 30.0, 250.0, 0.5][rng.gen_range(0..4)],
            lon = lon,
            lat = lat,
            lon2 = lon + rng.gen_range(0.01..3.0),
            lat2 = lat + rng.gen_range(0.01..3.0),
            short = &dataset.to_string()[..8],
            minor = rng.gen_range(0..10),
            i = i,
        );
        outputs.push(dataset);
        out.push(Bytes::from(body));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_are_valid_and_realistic() {
        let events = generate_events(500, 7);
        for e in &events {
            assert!((380..=650).contains(&e.len()), "{} bytes", e.len());
            crate::event::parse_event(e, 1 << 20).expect("valid");
        }
    }
}

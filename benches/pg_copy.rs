//! `geoprov bench` on PostgreSQL beside a plain text COPY of the same rows, in one run on one
//! server, with the ratio of the two rates (issue 4, "Fast idempotent writes").
//!
//! ```text
//! cargo bench --bench pg_copy
//! GEOPROV_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/test GEOPROV_BENCH_EVENTS=200000 \
//!     GEOPROV_BENCH_ARGS="--concurrency 4 --batch-size 1000" cargo bench --bench pg_copy
//! ```
//!
//! 1. `geoprov bench --store postgres://...?schema=<scratch>&pool_size=6&sslmode=disable --events N
//!    $GEOPROV_BENCH_ARGS` (default `--concurrency 4`) pushes N events through the embedded
//!    broker and the worker tasks into a fresh schema, end to end.
//! 2. The rows it stored are read back as COPY text, in log order, and written again with plain
//!    `COPY ... FROM STDIN` (one transaction, one fsync, text format), each baseline twice into a
//!    fresh table, the mean used:
//!    - **the same rows, primary key only**: the 14 columns geoprov stored (the seed's eight,
//!      `log_position`, `started_at`, `ended_at`, `leaf_hash`, `inputs`, `outputs`) into a table
//!      with `event_id text primary key` and no other index. This is "a plain COPY of the same
//!      rows" of issue 4, and the ratio the issue asks for;
//!    - **seed-shaped rows, primary key only**: only the seed's eight columns and the three
//!      times/position, the reference table's shape. Less data than geoprov writes (no leaf hash,
//!      no edge arrays), so a stricter yardstick, printed for reference;
//!    - **the same rows, every index of `lineage_events`** (unique `log_position`, the partial
//!      index, the GIN indexes of the edges): what the server alone needs for what geoprov stores.
//! 3. It prints geoprov's rate, each COPY rate and geoprov's share of each.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it does nothing.

use std::process::Command;
use std::time::Instant;

use futures::{SinkExt, StreamExt};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("pg_copy: a measurement; run it with `cargo bench --bench pg_copy`");
        return;
    }
    let server = std::env::var("GEOPROV_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let events: usize = std::env::var("GEOPROV_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (client, connection) = match tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => {
            println!("skipped: no server at {server} ({e})");
            return;
        }
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let schema = format!("geoprov_bench_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let result = run(&client, &server, &schema, events).await;
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    if let Err(e) = result {
        eprintln!("pg_copy failed: {e}");
        std::process::exit(1);
    }
}

async fn run(
    client: &tokio_postgres::Client,
    server: &str,
    schema: &str,
    events: usize,
) -> Result<(), String> {
    let separator = if server.contains('?') { '&' } else { '?' };
    // Without TLS unless the server URL asks for it, like the COPY connection below (NoTls).
    let tls = if server.contains("sslmode=") {
        ""
    } else {
        "&sslmode=disable"
    };
    let store = format!("{server}{separator}schema={schema}&pool_size=6{tls}");
    // Four worker tasks by default: on PostgreSQL a worker task spends most of a batch on the
    // broker (take, decode, acknowledge) and the commit's lock is held only for the COPY of the
    // events, so more tasks than the default two keep the database busy.
    let bench_args =
        std::env::var("GEOPROV_BENCH_ARGS").unwrap_or_else(|_| "--concurrency 4".into());
    let data_dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    // 1. Migrate (the bench would too; done apart so that its time is not counted).
    let migrate = Command::new(env!("CARGO_BIN_EXE_geoprov"))
        .args(["migrate", "--store", &store])
        .output()
        .map_err(|e| e.to_string())?;
    if !migrate.status.success() {
        return Err(String::from_utf8_lossy(&migrate.stderr).into_owned());
    }

    // 2. The end-to-end bench.
    let bench = Command::new(env!("CARGO_BIN_EXE_geoprov"))
        .args([
            "bench",
            "--json",
            "--events",
            &events.to_string(),
            "--store",
            &store,
        ])
        .args(bench_args.split_whitespace())
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("GEOPROV_LOG", "warn")
        .output()
        .map_err(|e| e.to_string())?;
    if !bench.status.success() {
        return Err(String::from_utf8_lossy(&bench.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&bench.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no JSON in the bench output: {stdout}"))?;
    let geoprov_rate = report["end_to_end_events_per_s"].as_f64().unwrap_or(0.0);

    // 3. The same rows as COPY text.
    let columns = "event_id, dataset_uuid, operation, crs_from, crs_to, processor_id, \
                   \"timestamp\", payload_json, log_position, started_at, ended_at";
    let all_columns = format!("{columns}, leaf_hash, inputs, outputs");
    let text = copy_out(client, schema, columns).await?;
    let complete = copy_out(client, schema, &all_columns).await?;
    let rows: usize = text
        .iter()
        .map(|c| c.iter().filter(|&&b| b == b'\n').count())
        .sum();
    let bytes: usize = complete.iter().map(bytes::Bytes::len).sum();

    // 4. The COPY baselines, each into a fresh table, each twice (the mean is used).
    let seed_columns = "event_id text PRIMARY KEY, dataset_uuid text, operation text, \
                        crs_from text, crs_to text, processor_id text, \"timestamp\" timestamptz, \
                        payload_json text, log_position bigint, started_at timestamptz, \
                        ended_at timestamptz";
    let seed_table = format!("({seed_columns})");
    let complete_table =
        format!("({seed_columns}, leaf_hash bytea, inputs uuid[], outputs uuid[])");
    let same_indexes = format!("(LIKE {schema}.lineage_events INCLUDING ALL)");
    let baselines: [(&str, &str, &str, &[bytes::Bytes]); 3] = [
        (
            "the same rows (all 14 columns geoprov stored), primary key only",
            &complete_table,
            &all_columns,
            &complete,
        ),
        (
            "seed-shaped rows (11 columns, no leaf hash or edges), primary key only",
            &seed_table,
            columns,
            &text,
        ),
        (
            "the same rows, every index of lineage_events",
            &same_indexes,
            &all_columns,
            &complete,
        ),
    ];
    println!(
        "rows: {rows} ({} bytes of COPY text, {:.0} B/row)",
        bytes,
        bytes as f64 / rows.max(1) as f64
    );
    println!(
        "geoprov bench (embedded broker, {} x batch {}, end to end): {geoprov_rate:.0} events/s",
        report["concurrency"], report["batch_size"]
    );
    for (round, (what, shape, columns, text)) in baselines.iter().enumerate() {
        let mut rates = Vec::new();
        for run in 0..2 {
            let table = format!("{schema}.copy_scratch_{round}_{run}");
            client
                .batch_execute(&format!("CREATE TABLE {table} {shape}"))
                .await
                .map_err(|e| e.to_string())?;
            rates.push(copy_in(client, &table, columns, text).await?);
        }
        let rate = rates.iter().sum::<f64>() / rates.len() as f64;
        println!(
            "plain text COPY, one transaction, {what}: {rate:.0} rows/s (runs: {}); \
             ratio geoprov / COPY: {:.2}",
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            geoprov_rate / rate.max(1e-9)
        );
    }
    Ok(())
}

/// COPY `text` into `table` in one transaction; the rate in rows/s.
async fn copy_in(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &str,
    text: &[bytes::Bytes],
) -> Result<f64, String> {
    let started = Instant::now();
    let sink = client
        .copy_in(&format!("COPY {table} ({columns}) FROM STDIN"))
        .await
        .map_err(|e| e.to_string())?;
    futures::pin_mut!(sink);
    for chunk in text {
        sink.send(chunk.clone()).await.map_err(|e| e.to_string())?;
    }
    let copied = sink.finish().await.map_err(|e| e.to_string())?;
    #[allow(clippy::cast_precision_loss)]
    Ok(copied as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// `columns` of every stored row, in log order, as COPY text chunks.
async fn copy_out(
    client: &tokio_postgres::Client,
    schema: &str,
    columns: &str,
) -> Result<Vec<bytes::Bytes>, String> {
    let out = client
        .copy_out(&format!(
            "COPY (SELECT {columns} FROM {schema}.lineage_events ORDER BY log_position) TO STDOUT"
        ))
        .await
        .map_err(|e| e.to_string())?;
    futures::pin_mut!(out);
    let mut text = Vec::new();
    while let Some(chunk) = out.next().await {
        text.push(chunk.map_err(|e| e.to_string())?);
    }
    Ok(text)
}

//! `geoprov search`: the logged events that match filters (dataset, id prefix, operation,
//! processor, CRS, time), newest first, a page at a time; the same search as `GET /v1/events`.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{open_store_to_read, print_stdout, CliError};
use crate::config::Config;
use crate::search::SearchText;

/// Output formats of `geoprov search`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One line per event: position, time, operation, processor, dataset, short id.
    Text,
    /// The page as `GET /v1/events` answers it (`events`, `next_cursor`).
    Json,
    /// One event per line, in the shape `GET /v1/events/{id}` answers.
    Ndjson,
}

/// Flags of `geoprov search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Events that name this dataset (as output, input or dataset_uuid).
    #[arg(long, value_name = "UUID")]
    dataset: Option<String>,
    /// Events whose id starts with these hex digits.
    #[arg(long, value_name = "HEX")]
    id: Option<String>,
    /// Events of this operation.
    #[arg(long, value_name = "OP")]
    operation: Option<String>,
    /// Events of this processor.
    #[arg(long, value_name = "P")]
    processor: Option<String>,
    /// Events from or to this CRS, e.g. EPSG:32633.
    #[arg(long, value_name = "CRS")]
    crs: Option<String>,
    /// Events whose time interval ends at or after this RFC 3339 time.
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Events whose time interval starts at or before this RFC 3339 time.
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// Events per page (1 to 1000).
    #[arg(long, default_value_t = crate::search::DEFAULT_LIMIT)]
    limit: usize,
    /// Continue after a previous page (its next_cursor).
    #[arg(long)]
    cursor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Print one page; the next page's cursor goes to stderr in text form.
pub async fn run(config: &Config, args: SearchArgs) -> Result<ExitCode, CliError> {
    let query = SearchText {
        dataset: args.dataset,
        id: args.id,
        operation: args.operation,
        processor: args.processor,
        crs: args.crs,
        since: args.since,
        until: args.until,
        limit: Some(args.limit),
        cursor: args.cursor,
    }
    .parse("--")
    .map_err(CliError::Usage)?;
    let store = open_store_to_read(config).await?;
    let page = store.search_events(&query).await?;
    let mut out = String::new();
    match args.format {
        Format::Json => {
            out = crate::http::search_page_json(&page).to_string();
            out.push('\n');
        }
        Format::Ndjson => {
            for event in &page.events {
                out.push_str(&crate::http::stored_event_json(event).to_string());
                out.push('\n');
            }
        }
        Format::Text => {
            for e in &page.events {
                let time = e
                    .ended_at
                    .or(e.started_at)
                    .unwrap_or(e.recorded_at)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                out.push_str(&format!(
                    "{:>8}  {time}  {:<18} {:<20} {}  {}\n",
                    e.position,
                    e.operation,
                    e.processor_id,
                    e.dataset_uuid,
                    &e.event_id[..e.event_id.len().min(12)]
                ));
            }
        }
    }
    print_stdout(&out)?;
    if let (Format::Text, Some(next)) = (args.format, page.next) {
        eprintln!("geoprov: more: --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

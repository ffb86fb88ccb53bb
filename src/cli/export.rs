//! `geoprov export prov`: the lineage as a W3C PROV-JSON document on stdout.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use futures::FutureExt;

use super::{open_store_to_read, CliError};
use crate::config::Config;
use crate::export::{export_prov, ExportFilter};

/// Flags of `geoprov export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    format: ExportFormat,
}

#[derive(Debug, Subcommand)]
enum ExportFormat {
    /// W3C PROV-JSON on stdout (streamed; a progress bar on stderr when it is a terminal).
    Prov {
        /// Only this dataset and its whole upstream.
        #[arg(long)]
        dataset: Option<String>,
        /// Only events recorded at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events recorded before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
    },
}

/// Write the document to stdout.
pub async fn run(config: &Config, args: ExportArgs) -> Result<ExitCode, CliError> {
    let ExportFormat::Prov {
        dataset,
        since,
        until,
    } = args.format;
    let filter = ExportFilter::parse(dataset.as_deref(), since.as_deref(), until.as_deref(), "--")
        .map_err(CliError::Usage)?;
    let store = open_store_to_read(config).await?;
    if let Some(root) = filter.dataset {
        if !store.mentions_dataset(root).await? {
            return Err(CliError::Failed(crate::lineage::unknown_dataset(root)));
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |done: u64, pass: usize, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(format!("pass {pass}/7"));
        }
    };
    let mut sink = |chunk: Vec<u8>| {
        async move {
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk)?;
            out.flush()
        }
        .boxed()
    };
    let counts = export_prov(store.as_ref(), &filter, &mut sink, &mut progress)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
        eprintln!(
            "geoprov: exported {} entities, {} activities, {} agents, {} relations",
            counts.entities,
            counts.activities,
            counts.agents,
            counts.relations()
        );
    }
    Ok(ExitCode::SUCCESS)
}

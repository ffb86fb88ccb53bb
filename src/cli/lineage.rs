//! `geoprov lineage UUID`: walk the lineage graph from a dataset.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use uuid::Uuid;

use super::{open_store_to_read, CliError};
use crate::config::Config;
use crate::lineage::WalkLimits;
use crate::store::Direction;

/// Output formats of `geoprov lineage`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Human-readable listing.
    Text,
    /// JSON (the HTTP API's shape).
    Json,
    /// Graphviz DOT.
    Dot,
}

/// Flags of `geoprov lineage`.
#[derive(Debug, Args)]
pub struct LineageArgs {
    /// The dataset to start from.
    uuid: String,
    /// Walk towards the inputs (the default).
    #[arg(long, conflicts_with = "downstream")]
    upstream: bool,
    /// Walk towards the outputs.
    #[arg(long)]
    downstream: bool,
    /// Most edges away from the dataset.
    #[arg(long, default_value_t = 10)]
    depth: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Print the walk.
pub async fn run(config: &Config, args: LineageArgs) -> Result<ExitCode, CliError> {
    let root = Uuid::parse_str(&args.uuid)
        .map_err(|_| CliError::Usage(format!("'{}' is not a dataset UUID", args.uuid)))?;
    let direction = if args.downstream {
        Direction::Downstream
    } else {
        Direction::Upstream
    };
    let store = open_store_to_read(config).await?;
    let graph = crate::lineage::walk_known(
        store.as_ref(),
        root,
        direction,
        args.depth,
        WalkLimits::default(),
    )
    .await?
    .ok_or_else(|| CliError::Failed(crate::lineage::unknown_dataset(root)))?;
    let text = match args.format {
        Format::Text => crate::lineage::graph_text(&graph, direction),
        Format::Json => {
            let mut s = crate::lineage::graph_json(&graph, direction).to_string();
            s.push('\n');
            s
        }
        Format::Dot => crate::lineage::graph_dot(&graph),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

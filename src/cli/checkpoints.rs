//! `geoprov checkpoints`: list the stored signed checkpoints (tree size, time, root), so a user
//! can pick sizes for `geoprov prove --consistency OLD NEW`.

use std::process::ExitCode;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use clap::Args;

use super::{open_store_to_read, CliError};
use crate::config::Config;
use crate::store::transparency_log;

/// Flags of `geoprov checkpoints`.
#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// Only checkpoints of at least this tree size.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Most checkpoints listed.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// One JSON object per line (tree_size, created_at, root_hash, note) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Print the checkpoints, smallest tree size first.
pub async fn run(config: &Config, args: CheckpointsArgs) -> Result<ExitCode, CliError> {
    let store = open_store_to_read(config).await?;
    let log = transparency_log(store.as_ref())?;
    let checkpoints = log.checkpoints(args.from, args.limit).await?;
    let mut out = String::new();
    if !args.json {
        out.push_str("tree_size  created_at                   root_hash\n");
    }
    for c in &checkpoints {
        let root = BASE64.encode(c.root_hash);
        if args.json {
            out.push_str(
                &serde_json::json!({
                    "tree_size": c.tree_size,
                    "created_at": c.created_at,
                    "root_hash": root,
                    "note": c.note,
                })
                .to_string(),
            );
            out.push('\n');
        } else {
            out.push_str(&format!(
                "{:>9}  {:<27}  {root}\n",
                c.tree_size, c.created_at
            ));
        }
    }
    super::print_stdout(&out)?;
    if checkpoints.is_empty() && !args.json {
        eprintln!(
            "geoprov: no checkpoints yet (serve and worker sign one every --checkpoint-interval \
             while the log grows)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

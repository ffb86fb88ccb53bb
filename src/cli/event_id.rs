//! `geoprov event-id`: print the reference `event_id` of each payload, one per line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{read_input, CliError};
use crate::event::python_json;
use crate::event::EventId;
use crate::ingest;

/// Flags of `geoprov event-id`.
#[derive(Debug, Args)]
pub struct EventIdArgs {
    /// A file holding one JSON object, an array, or NDJSON; `-` or nothing reads stdin.
    file: Option<PathBuf>,
}

/// Print ids; an item that is not JSON gets a line on stderr and makes the exit code 1.
pub fn run(args: EventIdArgs) -> Result<ExitCode, CliError> {
    let input = read_input(args.file.as_ref())?;
    let mut failed = 0usize;
    let mut out = String::new();
    for (index, doc) in ingest::split(&input).into_iter().enumerate() {
        match doc {
            Ok(value) => {
                out.push_str(
                    &EventId::of_canonical_json(&python_json::dumps_sorted(&value)).to_hex(),
                );
                out.push('\n');
            }
            Err(reason) => {
                failed += 1;
                eprintln!("geoprov: item {index}: {reason}");
            }
        }
    }
    print!("{out}");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

//! `geoprov migrate`: create or upgrade the store schema.

use std::process::ExitCode;

use super::{open_store, CliError};
use crate::config::Config;

/// Apply missing migrations and print the schema version.
pub async fn run(config: &Config) -> Result<ExitCode, CliError> {
    let store = open_store(config).await?;
    let version = store.migrate().await?;
    println!("store {} is at schema version {version}", config.store);
    Ok(ExitCode::SUCCESS)
}

//! `geoprov keygen`: write a new log signing key (mode 0600) and print its verifier key.

use std::process::ExitCode;

use clap::Args;

use super::CliError;
use crate::config::Config;
use crate::tlog::Signer;
use crate::tlog_service::{default_key_name, write_key_file, LogServiceError};

/// Flags of `geoprov keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Key name, which is also the checkpoints' origin line [default: geoprov/<hostname>]
    #[arg(long)]
    name: Option<String>,
    /// Replace an existing key file (checkpoints signed with the old key then verify only with
    /// the old verifier key).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    pub(super) signing_key: super::KeyArgs,
}

/// Write the key to `--log-key` (default `<data dir>/log-signing.key`) and print the verifier
/// key on stdout.
pub fn run(config: &Config, args: KeygenArgs) -> Result<ExitCode, CliError> {
    let name = args.name.unwrap_or_else(default_key_name);
    let signer = Signer::generate(&name).map_err(|e| CliError::Usage(e.to_string()))?;
    let (path, _) = config.log_key_path();
    write_key_file(&path, &signer, args.force).map_err(|e| match e {
        LogServiceError::Key(msg) => CliError::Usage(msg),
        other => CliError::Failed(other.to_string()),
    })?;
    eprintln!("geoprov: wrote the log signing key to {}", path.display());
    println!("{}", signer.verifier_key_text());
    Ok(ExitCode::SUCCESS)
}

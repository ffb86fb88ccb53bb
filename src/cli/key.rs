//! `geoprov key`: print the verifier key of the current log signing key, the text auditors pass
//! to `verify --key` and `verify-proof --key`.

use std::process::ExitCode;

use clap::Args;

use super::{CliError, KeyArgs};
use crate::config::Config;
use crate::tlog_service::load_signer;

/// Flags of `geoprov key`.
#[derive(Debug, Args)]
pub struct KeyCmdArgs {
    #[command(flatten)]
    pub(super) signing_key: KeyArgs,
}

/// Print `<name>+<id>+<base64 key>` on stdout.
pub fn run(config: &Config) -> Result<ExitCode, CliError> {
    let (path, is_default) = config.log_key_path();
    if !path.is_file() {
        let hint = if is_default {
            "it is created by the first `geoprov serve` or `geoprov worker`, or by `geoprov \
             keygen`; point at another data dir with --data-dir, or at the key with --log-key"
        } else {
            "check --log-key (or GEOPROV_LOG_KEY)"
        };
        return Err(CliError::Failed(format!(
            "no log signing key at {}: {hint}",
            path.display()
        )));
    }
    let signer = load_signer(&path).map_err(|e| CliError::Usage(e.to_string()))?;
    println!("{}", signer.verifier_key_text());
    Ok(ExitCode::SUCCESS)
}

//! `geoprov verify` (the whole log against its rows and checkpoints) and `geoprov verify-proof`
//! (one proof, offline). The checks themselves live in [`crate::verify`] and
//! [`crate::tlog_service::verify_proof`]; this file only wires and prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::{open_store_to_read, read_input, CliError};
use crate::config::Config;
use crate::tlog::Verifier;
use crate::tlog_service::{load_signer, parse_verifier, verify_proof};
use crate::verify::{verify_log, VerifyError, VerifyOptions, DEFAULT_PAGE_SIZE};

/// Flags of `geoprov verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verifier key the checkpoints must be signed by: key text (<name>+<id>+<base64>) or a
    /// file holding it [default: the public half of the local log signing key]
    #[arg(long)]
    key: Option<String>,
    /// A signed checkpoint kept outside the database (a note file) to check the log against
    /// too; needs --key.
    #[arg(long, requires = "key")]
    checkpoint: Option<PathBuf>,
    /// Rows read per page.
    #[arg(long, default_value_t = DEFAULT_PAGE_SIZE, hide = true)]
    page_size: usize,
    #[command(flatten)]
    pub(super) signing_key: super::KeyArgs,
}

/// Flags of `geoprov verify-proof`.
#[derive(Debug, Args)]
pub struct VerifyProofArgs {
    /// The proof (JSON from `geoprov prove`), or - for stdin.
    file: Option<PathBuf>,
    /// Verifier key the checkpoint notes must be signed by: key text or a file holding it.
    #[arg(long)]
    key: String,
}

fn key_error(e: crate::tlog_service::LogServiceError) -> CliError {
    CliError::Usage(e.to_string())
}

/// The verifier `verify` uses: `--key`, else the local signing key's public half, if any.
fn verifier_for(config: &Config, key: Option<&str>) -> Result<Option<Verifier>, CliError> {
    if let Some(key) = key {
        return parse_verifier(key).map(Some).map_err(key_error);
    }
    let (path, _) = config.log_key_path();
    if path.exists() {
        return load_signer(&path)
            .map(|s| Some(s.verifier()))
            .map_err(key_error);
    }
    Ok(None)
}

/// Verify the log; exit 0 when intact (warnings included), 1 with one line naming the first
/// divergence.
pub async fn run(config: &Config, args: VerifyArgs) -> Result<ExitCode, CliError> {
    let verifier = verifier_for(config, args.key.as_deref())?;
    let external = match &args.checkpoint {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the checkpoint {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let store = open_store_to_read(config).await?;
    let options = VerifyOptions {
        verifier,
        external_checkpoint: external,
        page_size: args.page_size,
    };
    let started = Instant::now();
    match verify_log(store, &options).await {
        Ok(report) => {
            let secs = started.elapsed().as_secs_f64();
            for warning in &report.warnings {
                eprintln!("verify: warning: {warning}");
            }
            #[allow(clippy::cast_precision_loss)]
            let rate = report.size as f64 / secs.max(1e-9);
            println!(
                "verify: OK: {} events, root {}, {} checkpoints checked (latest at tree size \
                 {}){}; {secs:.2}s, {rate:.0} events/s",
                report.size,
                hex::encode(report.root),
                report.checkpoints,
                report.covered,
                if report.external_checked {
                    ", external checkpoint matches"
                } else {
                    ""
                },
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Tampered(line)) => {
            eprintln!("verify: {line}");
            Ok(ExitCode::from(1))
        }
        Err(VerifyError::Usage(msg)) => Err(CliError::Usage(msg)),
        Err(VerifyError::Store(e)) => Err(e.into()),
    }
}

/// Check one proof offline: no store is opened.
pub fn run_verify_proof(_config: &Config, args: VerifyProofArgs) -> Result<ExitCode, CliError> {
    let verifier = parse_verifier(&args.key).map_err(key_error)?;
    let bytes = read_input(args.file.as_ref())?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::Failed("the proof is not UTF-8 text".into()))?;
    match verify_proof(&text, &verifier) {
        Ok(summary) => {
            println!("verify-proof: {summary}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("verify-proof: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

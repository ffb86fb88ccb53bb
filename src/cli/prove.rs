//! `geoprov prove EVENT_ID` (inclusion proof) and `geoprov prove --consistency OLD NEW`
//! (consistency proof between two stored checkpoints), printed as JSON on stdout.

use std::process::ExitCode;

use clap::Args;

use super::{open_store_to_read, CliError};
use crate::config::Config;
use crate::tlog_service::{consistency_proof, inclusion_proof, LogServiceError};

/// Flags of `geoprov prove`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    /// The event to prove included (64 hex digits).
    #[arg(required_unless_present = "consistency")]
    event_id: Option<String>,
    /// Prove that the checkpoint of tree size NEW extends the one of size OLD (both stored).
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "event_id")]
    consistency: Option<Vec<u64>>,
}

fn failed(e: LogServiceError) -> CliError {
    match e {
        LogServiceError::Store(e) => e.into(),
        LogServiceError::Key(msg) => CliError::Usage(msg),
        other => CliError::Failed(other.to_string()),
    }
}

/// Print the proof.
pub async fn run(config: &Config, args: ProveArgs) -> Result<ExitCode, CliError> {
    let store = open_store_to_read(config).await?;
    let json = match (&args.consistency, &args.event_id) {
        (Some(sizes), _) => {
            let [old, new] = sizes.as_slice() else {
                return Err(CliError::Usage("--consistency takes OLD NEW".into()));
            };
            let log = crate::store::transparency_log(store.as_ref())?;
            let proof = consistency_proof(log, *old, *new).await.map_err(failed)?;
            serde_json::to_string_pretty(&proof)
        }
        (None, Some(id)) => {
            let event_id = crate::store::resolve_event_id(store.as_ref(), id)
                .await
                .map_err(CliError::from)?;
            let proof = inclusion_proof(store.as_ref(), &event_id)
                .await
                .map_err(failed)?;
            serde_json::to_string_pretty(&proof)
        }
        (None, None) => {
            return Err(CliError::Usage(
                "give an EVENT_ID or --consistency OLD NEW".into(),
            ))
        }
    }
    .map_err(|e| CliError::Failed(format!("cannot write the proof: {e}")))?;
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

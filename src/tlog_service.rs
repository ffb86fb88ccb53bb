//! The transparency log's I/O side, shared by the CLI, the checkpointer and the HTTP API: the
//! log signing key file, writing a signed checkpoint of the store's current tree head, and
//! building and checking inclusion and consistency proofs.
//!
//! Not for: the Merkle math, the leaf encoding or the note format (all pure, in [`crate::tlog`]),
//! nor re-checking the whole log (that is [`crate::verify`]).
//!
//! # The signing key
//!
//! One Ed25519 key signs the checkpoints of a log; its key name is the checkpoints' origin line.
//! It lives in `<data dir>/log-signing.key` unless `--log-key FILE` says otherwise, as the
//! signed-note private key text (`PRIVATE+KEY+<name>+<id>+<base64>`), file mode 0600. The name
//! defaults to `geoprov/<hostname>` ([`default_key_name`]). `geoprov keygen` writes it and prints
//! the verifier key (`<name>+<8 hex id>+<base64>`), which auditors keep outside the database.
//!
//! # Proofs
//!
//! Proofs are computed from stored hashes, anchored to a stored signed checkpoint of exactly
//! their tree size, so an offline checker needs only the verifier key. The store keeps the leaf
//! hashes, and the checkpointer also stores the interior nodes of every complete perfect subtree
//! of [`NODE_MIN_HEIGHT`] and up ([`materialize_nodes`]). A proof reads the nodes it needs, and
//! leaf hashes only under the lowest of them (at most about 2 x 1,024): O(log n) round trips
//! instead of reading all n leaf hashes. Where nodes are missing (not stored yet, or a role that
//! may not write them) it falls back to the leaves. Nodes are a cache, so they are not trusted:
//! a proof built from them is checked against the checkpoint's root before it is returned, and
//! rebuilt from the leaves alone if the check fails.

use std::io::Write as _;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::event::event_id::event_id_of_payload_json;
use crate::event::EventId;
use crate::store::{StoreError, TransparencyLog, TreeHead};
use crate::tlog::{
    aligned_subtrees, consistency_proof_indexes, event_leaf_hash, fold_subtrees,
    format_recorded_at, inclusion_proof_indexes, node_hash, root_from_leaf_hashes,
    verify_consistency, verify_inclusion, Checkpoint, CompactRange, Hash, NodeId, Signer,
    TlogError, Verifier,
};

/// Leaf hashes (or nodes) read per store call while hashing a subtree for a proof.
const HASH_PAGE: u64 = 65_536;

/// The lowest height of the interior nodes [`materialize_nodes`] stores: each covers 1,024
/// leaves, so a proof reads at most about 2 x 1,024 leaf hashes under the lowest nodes, and the
/// nodes add about one row per 512 events.
pub const NODE_MIN_HEIGHT: u32 = 10;

/// Nodes computed and stored per round trip by [`materialize_nodes`] (64 x 1,024 leaf hashes
/// read at a time at the lowest height).
const NODE_PAGE: u64 = 64;

/// What went wrong with keys, checkpoints or proofs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogServiceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file or key text is missing, unreadable or malformed; the user must act.
    #[error("{0}")]
    Key(String),
    /// The event or checkpoint asked for does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The event exists but no stored checkpoint covers it yet.
    #[error("{0}")]
    NotCovered(String),
    /// A proof, note or key did not check out, or is malformed: evidence of tampering or of the
    /// wrong key.
    #[error("{0}")]
    Invalid(String),
}

/// `geoprov/<hostname>`, the default key name and checkpoint origin. The host name comes from
/// `/proc/sys/kernel/hostname`, then `$HOSTNAME`, then `localhost`; characters other than ASCII
/// letters, digits, `.`, `-` and `_` become `-` (key names allow no spaces or `+`).
#[must_use]
pub fn default_key_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("geoprov/{host}")
}

/// Reads a signer key file.
///
/// # Errors
///
/// [`LogServiceError::Key`] when the file cannot be read or does not hold a signer key.
pub fn load_signer(path: &Path) -> Result<Signer, LogServiceError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LogServiceError::Key(format!(
            "cannot read the log signing key {}: {e}",
            path.display()
        ))
    })?;
    warn_if_readable_by_others(path);
    Signer::from_private_key_text(&text).map_err(|e| {
        LogServiceError::Key(format!("{} is not a log signing key: {e}", path.display()))
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                message = "The log signing key is readable by other users; chmod 600 it.",
                path = %path.display(),
                mode = format!("{mode:o}"),
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Writes `signer`'s private key text to `path` with mode 0600 (creating the parent
/// directory). Refuses an existing file unless `force`.
///
/// # Errors
///
/// [`LogServiceError::Key`] when the file exists (without `force`) or cannot be written.
pub fn write_key_file(path: &Path, signer: &Signer, force: bool) -> Result<(), LogServiceError> {
    let fail = |what: &str, e: std::io::Error| {
        LogServiceError::Key(format!("cannot {what} {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::config::ensure_dir(parent).map_err(LogServiceError::Key)?;
    }
    if path.exists() {
        if !force {
            return Err(LogServiceError::Key(format!(
                "{} already exists; pass --force to replace it (checkpoints signed with the old \
                 key then no longer verify with the new verifier key)",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| fail("remove", e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| fail("create", e))?;
    file.write_all(format!("{}\n", signer.private_key_text()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| fail("write", e))?;
    Ok(())
}

/// The signer for `serve` and `worker`: loads `path`; when `path` is the default location and
/// does not exist yet, creates a fresh key there named [`default_key_name`] and returns
/// `(signer, true)` so the caller logs the verifier key once.
///
/// # Errors
///
/// [`LogServiceError::Key`] when an explicitly given file is missing, or the file is unusable.
pub fn load_or_create_signer(
    path: &Path,
    is_default_path: bool,
) -> Result<(Signer, bool), LogServiceError> {
    if is_default_path && !path.exists() {
        let signer = Signer::generate(&default_key_name())
            .map_err(|e| LogServiceError::Key(e.to_string()))?;
        match write_key_file(path, &signer, false) {
            Ok(()) => return Ok((signer, true)),
            // Another process created it first: use theirs.
            Err(_) if path.exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok((load_signer(path)?, false))
}

/// A verifier from key text, or from a file holding the key text (either a verifier key, or a
/// signer key file whose public half is taken).
///
/// # Errors
///
/// [`LogServiceError::Key`] when neither parses.
pub fn parse_verifier(text_or_file: &str) -> Result<Verifier, LogServiceError> {
    let text = if Path::new(text_or_file).is_file() {
        std::fs::read_to_string(text_or_file).map_err(|e| {
            LogServiceError::Key(format!("cannot read the key file {text_or_file}: {e}"))
        })?
    } else {
        text_or_file.to_owned()
    };
    if let Ok(verifier) = Verifier::from_key_text(&text) {
        return Ok(verifier);
    }
    if let Ok(signer) = Signer::from_private_key_text(&text) {
        return Ok(signer.verifier());
    }
    Err(LogServiceError::Key(format!(
        "'{}' is not a verifier key (<name>+<8 hex id>+<base64>) nor a file holding one",
        text_or_file.chars().take(80).collect::<String>()
    )))
}

/// Signs and stores a checkpoint of the log's current head, unless the head is empty or
/// already checkpointed. Returns the tree size written, if any.
///
/// # Errors
///
/// The store's error, or [`LogServiceError::Key`] when the key name is not a valid origin.
pub async fn write_checkpoint(
    log: &dyn TransparencyLog,
    signer: &Signer,
) -> Result<Option<u64>, LogServiceError> {
    let head = log.tree_head().await?;
    if head.size == 0 {
        return Ok(None);
    }
    if let Some(latest) = log.latest_checkpoint().await? {
        if latest.tree_size >= head.size {
            return Ok(None);
        }
    }
    let note = signer
        .sign(&Checkpoint {
            origin: signer.name().to_owned(),
            size: head.size,
            root_hash: head.root,
        })
        .map_err(|e| LogServiceError::Key(e.to_string()))?;
    let added = add_checkpoint(log, head.size, head.root, &note).await?;
    if added {
        crate::metrics::checkpoint_written(head.size);
    }
    Ok(added.then_some(head.size))
}

/// Stores a signed checkpoint note for `tree_size` whose root is `root_hash`, by the rules every
/// store follows: a checkpoint MUST NOT be beyond the log, one at the log's current size MUST
/// carry the log's root, and one per size is kept (storing the same root again is a no-op that
/// returns `false`; another root for a stored size is refused). The log head only grows, so
/// reading it before the insert is as good as reading it in the insert's transaction.
///
/// # Errors
///
/// [`StoreError::Query`] naming the broken rule, or the store's error.
pub async fn add_checkpoint(
    log: &dyn TransparencyLog,
    tree_size: u64,
    root_hash: Hash,
    note: &str,
) -> Result<bool, StoreError> {
    let head = log.tree_head().await?;
    admit_checkpoint(head, tree_size, root_hash).map_err(StoreError::Query)?;
    match log.insert_checkpoint(tree_size, root_hash, note).await? {
        None => Ok(true),
        Some(stored) if stored == root_hash => Ok(false),
        Some(_) => Err(StoreError::Query(format!(
            "a checkpoint at tree size {tree_size} with another root is already stored"
        ))),
    }
}

/// Whether a checkpoint of `tree_size` and `root_hash` may be stored in a log whose head is
/// `head` (see [`add_checkpoint`]); the reason when not.
fn admit_checkpoint(head: TreeHead, tree_size: u64, root_hash: Hash) -> Result<(), String> {
    if tree_size > head.size {
        return Err(format!(
            "a checkpoint at tree size {tree_size} is beyond the log (size {})",
            head.size
        ));
    }
    if tree_size == head.size && root_hash != head.root {
        return Err(format!(
            "the checkpoint root for tree size {tree_size} is not the log's root"
        ));
    }
    Ok(())
}

/// Stores the interior nodes of every complete perfect subtree of the log of height
/// [`NODE_MIN_HEIGHT`] and up that is not stored yet, lowest height first; returns how many it
/// stored. Reads only what is new since the last run. Idempotent and safe in several processes
/// at once (they may compute the same nodes; the store keeps one of each). Trusts the stored leaf
/// hashes, which `geoprov verify` checks; proofs check what they read from nodes anyway.
///
/// # Errors
///
/// The store's error (for instance a role without INSERT on `log_nodes`).
pub async fn materialize_nodes(log: &dyn TransparencyLog) -> Result<u64, StoreError> {
    let size = log.tree_head().await?.size;
    let mut added = 0u64;
    for height in NODE_MIN_HEIGHT..64 {
        let complete = size >> height;
        if complete == 0 {
            break;
        }
        let mut next = log.tree_nodes_end(height).await?;
        while next < complete {
            let end = complete.min(next + NODE_PAGE);
            let nodes: Vec<(u64, Hash)> = if height == NODE_MIN_HEIGHT {
                let leaves = log.leaf_hashes(next << height, end << height).await?;
                (next..)
                    .zip(leaves.chunks(1 << height))
                    .map(|(index, chunk)| (index, root_from_leaf_hashes(chunk)))
                    .collect()
            } else {
                let children = log.tree_nodes(height - 1, 2 * next, 2 * end).await?;
                if children.len() as u64 != 2 * (end - next) {
                    // The height below is not complete here (another process is still storing
                    // it): the next run goes on from here.
                    break;
                }
                (next..)
                    .zip(children.chunks_exact(2))
                    .map(|(index, pair)| (index, node_hash(&pair[0].1, &pair[1].1)))
                    .collect()
            };
            log.add_tree_nodes(height, &nodes).await?;
            added += nodes.len() as u64;
            next = end;
        }
    }
    Ok(added)
}

/// What [`fold_pages`] reads: stored leaf hashes by position, or stored nodes of one height by
/// index.
#[derive(Clone, Copy)]
enum HashSource {
    Leaves,
    Nodes(u32),
}

/// The root of the hashes of `range` of `source` taken in order as the leaves of a tree of their
/// own, read in pages; `None` when a node in the range is not stored (leaves always are, or the
/// store errs).
async fn fold_pages(
    log: &dyn TransparencyLog,
    source: HashSource,
    range: Range<u64>,
) -> Result<Option<Hash>, StoreError> {
    let mut frontier = CompactRange::new();
    let mut next = range.start;
    while next < range.end {
        let end = range.end.min(next.saturating_add(HASH_PAGE));
        let page: Vec<Hash> = match source {
            HashSource::Leaves => log.leaf_hashes(next, end).await?,
            HashSource::Nodes(height) => {
                let nodes = log.tree_nodes(height, next, end).await?;
                if nodes.len() as u64 != end - next {
                    return Ok(None);
                }
                nodes.into_iter().map(|(_, hash)| hash).collect()
            }
        };
        for hash in page {
            frontier.append(hash);
        }
        next = end;
    }
    Ok(Some(frontier.root()))
}

/// `MTH(D[range])` from the stored leaf hashes alone.
async fn leaves_subtree_hash(
    log: &dyn TransparencyLog,
    range: Range<u64>,
) -> Result<Hash, StoreError> {
    let (start, end) = (range.start, range.end);
    fold_pages(log, HashSource::Leaves, range)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("leaf hashes {start}..{end} are missing")))
}

/// The hash of node `id`: stored; else from the stored nodes of [`NODE_MIN_HEIGHT`] under it
/// when they are all there (a perfect tree of perfect subtrees has the same root); else from
/// its leaves.
async fn stored_node_hash(log: &dyn TransparencyLog, id: NodeId) -> Result<Hash, StoreError> {
    if id.height >= NODE_MIN_HEIGHT {
        if let Some(&(_, hash)) = log
            .tree_nodes(id.height, id.index, id.index + 1)
            .await?
            .first()
        {
            return Ok(hash);
        }
        let shift = id.height - NODE_MIN_HEIGHT;
        let lowest = (id.index << shift)..((id.index + 1) << shift);
        if let Some(hash) = fold_pages(log, HashSource::Nodes(NODE_MIN_HEIGHT), lowest).await? {
            return Ok(hash);
        }
    }
    leaves_subtree_hash(log, id.leaves()).await
}

/// `MTH(D[range])`: from stored nodes where the range is made of whole subtrees of the tree
/// (every range of a proof is), from the leaves otherwise or with `leaves_only`.
async fn stored_subtree_hash(
    log: &dyn TransparencyLog,
    range: Range<u64>,
    leaves_only: bool,
) -> Result<Hash, StoreError> {
    let pieces = if leaves_only {
        None
    } else {
        aligned_subtrees(range.clone())
    };
    let Some(pieces) = pieces else {
        return leaves_subtree_hash(log, range).await;
    };
    let mut hashes = Vec::with_capacity(pieces.len());
    for id in pieces {
        hashes.push(stored_node_hash(log, id).await?);
    }
    Ok(fold_subtrees(&hashes))
}

/// The subtree hashes of `ranges`, in order.
async fn proof_hashes(
    log: &dyn TransparencyLog,
    ranges: &[Range<u64>],
    leaves_only: bool,
) -> Result<Vec<Hash>, StoreError> {
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        out.push(stored_subtree_hash(log, range.clone(), leaves_only).await?);
    }
    Ok(out)
}

/// The hashes of a `what` proof over `ranges`, read through the stored tree nodes. A stored
/// node is never trusted: when those hashes do not make a proof that `checks` out against the
/// signed root, they are read again from the leaves alone, and when that gives other hashes a
/// warning says the proof was rebuilt.
async fn checked_proof_hashes(
    log: &dyn TransparencyLog,
    ranges: &[Range<u64>],
    what: &str,
    checks: impl Fn(&[Hash]) -> bool,
) -> Result<Vec<Hash>, StoreError> {
    let hashes = proof_hashes(log, ranges, false).await?;
    if checks(&hashes) {
        return Ok(hashes);
    }
    let from_leaves = proof_hashes(log, ranges, true).await?;
    if from_leaves != hashes {
        tracing::warn!(
            message = "A proof built from the stored tree nodes did not match the signed root; \
                       it was rebuilt from the leaf hashes. Run `geoprov verify` on the log.",
            proof = what
        );
    }
    Ok(from_leaves)
}

/// An inclusion proof as `geoprov prove` prints it and `GET /v1/log/proof/{event_id}` serves it.
///
/// `leaf_index`, `tree_size`, `leaf_hash`, `audit_path` (RFC 9162 order, leaf level first) and
/// `checkpoint` (the signed note of exactly `tree_size`) are all any RFC 9162 implementation
/// needs; `event_id`, `position`, `recorded_at` and `payload_json` let an auditor recompute
/// `leaf_hash` from the event itself (`geoprov/leaf/v1`, see [`crate::tlog::leaf`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The event's id (lowercase hex).
    #[serde(default)]
    pub event_id: Option<String>,
    /// The leaf's index in the tree (= its log position).
    pub leaf_index: u64,
    /// The size of the tree the proof is for (= the checkpoint's size).
    pub tree_size: u64,
    /// The leaf hash, hex.
    pub leaf_hash: String,
    /// The audit path, hex, RFC 9162 order.
    pub audit_path: Vec<String>,
    /// The signed checkpoint note of size `tree_size`.
    pub checkpoint: String,
    /// The stored log position (leaf data field).
    #[serde(default)]
    pub position: Option<u64>,
    /// The stored record time as hashed (leaf data field).
    #[serde(default)]
    pub recorded_at: Option<String>,
    /// The stored canonical payload (leaf data field).
    #[serde(default)]
    pub payload_json: Option<String>,
}

/// A consistency proof as `geoprov prove --consistency OLD NEW` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub old_size: u64,
    /// The newer tree size.
    pub new_size: u64,
    /// Root at `old_size`, hex.
    pub old_root: String,
    /// Root at `new_size`, hex.
    pub new_root: String,
    /// The proof hashes, hex, RFC 9162 order.
    pub proof: Vec<String>,
    /// The stored signed checkpoint of size `old_size`.
    pub old_checkpoint: String,
    /// The stored signed checkpoint of size `new_size`.
    pub new_checkpoint: String,
}

/// Builds the inclusion proof of `event_id` against the latest stored checkpoint.
///
/// # Errors
///
/// [`LogServiceError::NotFound`] when the event is not stored, [`LogServiceError::NotCovered`]
/// when no checkpoint covers it yet, or the store's error.
pub async fn inclusion_proof(
    store: &dyn crate::store::Store,
    event_id: &EventId,
) -> Result<InclusionProof, LogServiceError> {
    let log = crate::store::transparency_log(store)?;
    let row = store
        .get_event(event_id)
        .await?
        .ok_or_else(|| LogServiceError::NotFound(format!("no event {event_id} in the store")))?;
    let checkpoint = log
        .latest_checkpoint()
        .await?
        .filter(|c| c.tree_size > row.position);
    let Some(checkpoint) = checkpoint else {
        return Err(LogServiceError::NotCovered(format!(
            "event {event_id} (position {}) is not covered by a checkpoint yet; a running \
             worker writes one within --checkpoint-interval",
            row.position
        )));
    };
    let leaf = log.leaf_hashes(row.position, row.position + 1).await?;
    let leaf = leaf
        .first()
        .copied()
        .ok_or_else(|| StoreError::Corrupt(format!("no leaf hash at position {}", row.position)))?;
    let ranges = inclusion_proof_indexes(row.position, checkpoint.tree_size)
        .map_err(|e| LogServiceError::Invalid(e.to_string()))?;
    let (size, root) = (checkpoint.tree_size, checkpoint.root_hash);
    let audit_path = checked_proof_hashes(log, &ranges, "inclusion", |path| {
        verify_inclusion(&leaf, row.position, size, path, &root).is_ok()
    })
    .await?;
    let audit_path = audit_path.iter().map(hex::encode).collect();
    Ok(InclusionProof {
        event_id: Some(row.event_id.clone()),
        leaf_index: row.position,
        tree_size: checkpoint.tree_size,
        leaf_hash: hex::encode(leaf),
        audit_path,
        checkpoint: checkpoint.note,
        position: Some(row.position),
        recorded_at: Some(format_recorded_at(row.recorded_at)),
        payload_json: Some(row.payload_json),
    })
}

/// Builds the consistency proof between the stored checkpoints of sizes `old_size` and
/// `new_size`.
///
/// # Errors
///
/// [`LogServiceError::NotFound`] when either checkpoint is not stored,
/// [`LogServiceError::Invalid`] when `old_size > new_size`, or the store's error.
pub async fn consistency_proof(
    log: &dyn TransparencyLog,
    old_size: u64,
    new_size: u64,
) -> Result<ConsistencyProof, LogServiceError> {
    if old_size > new_size {
        return Err(LogServiceError::Invalid(format!(
            "old size {old_size} is larger than new size {new_size}"
        )));
    }
    let exact = |size: u64| async move {
        log.checkpoints(size, 1)
            .await
            .map(|found| found.into_iter().find(|c| c.tree_size == size))
    };
    let old = exact(old_size).await?.ok_or_else(|| {
        LogServiceError::NotFound(format!("no stored checkpoint of tree size {old_size}"))
    })?;
    let new = exact(new_size).await?.ok_or_else(|| {
        LogServiceError::NotFound(format!("no stored checkpoint of tree size {new_size}"))
    })?;
    let ranges = consistency_proof_indexes(old_size, new_size)
        .map_err(|e| LogServiceError::Invalid(e.to_string()))?;
    let proof = checked_proof_hashes(log, &ranges, "consistency", |proof| {
        verify_consistency(old_size, new_size, &old.root_hash, &new.root_hash, proof).is_ok()
    })
    .await?;
    let proof = proof.iter().map(hex::encode).collect();
    Ok(ConsistencyProof {
        old_size,
        new_size,
        old_root: hex::encode(old.root_hash),
        new_root: hex::encode(new.root_hash),
        proof,
        old_checkpoint: old.note,
        new_checkpoint: new.note,
    })
}

fn parse_hash(what: &str, text: &str) -> Result<Hash, LogServiceError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| LogServiceError::Invalid(format!("{what} is not 64 hex digits")))?;
    Ok(out)
}

fn parse_hashes(what: &str, texts: &[String]) -> Result<Vec<Hash>, LogServiceError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| parse_hash(&format!("{what}[{i}]"), t))
        .collect()
}

/// Opens a checkpoint note with `verifier` and checks it is of `size`.
fn open_checkpoint(
    verifier: &Verifier,
    note: &str,
    size: u64,
    what: &str,
) -> Result<Checkpoint, LogServiceError> {
    let checkpoint = verifier.verify_note(note).map_err(|e| match e {
        TlogError::InvalidSignature(_) | TlogError::UnverifiedNote(_) => {
            LogServiceError::Invalid(format!(
                "{what}: signature does not verify with key {}",
                verifier.key_text()
            ))
        }
        other => LogServiceError::Invalid(format!("{what}: {other}")),
    })?;
    if checkpoint.size != size {
        return Err(LogServiceError::Invalid(format!(
            "{what} is for tree size {}, the proof for {size}",
            checkpoint.size
        )));
    }
    Ok(checkpoint)
}

/// Checks a proof (either kind, as JSON text) offline against `verifier`; returns a one-line
/// summary of what was verified.
///
/// Inclusion: the checkpoint's signature, its size equal to `tree_size`, the RFC 9162
/// inclusion of `leaf_hash` at `leaf_index` under the checkpoint's root, and, when the leaf
/// data fields are present, `leaf_hash == leaf_hash(leaf_data(position, event_id, recorded_at,
/// payload_json))`, `position == leaf_index` and `event_id` the id the payload defines
/// (SHA-256 of Python's `json.dumps(json.loads(payload_json), sort_keys=True)`).
/// Consistency: both signatures and sizes, the roots named in the JSON equal to the notes', and
/// the RFC 9162 consistency check.
///
/// # Errors
///
/// [`LogServiceError::Invalid`] naming the first check that failed.
pub fn verify_proof(text: &str, verifier: &Verifier) -> Result<String, LogServiceError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| LogServiceError::Invalid(format!("the proof is not JSON: {e}")))?;
    if value.get("old_size").is_some() {
        let proof: ConsistencyProof = serde_json::from_value(value)
            .map_err(|e| LogServiceError::Invalid(format!("not a consistency proof: {e}")))?;
        verify_consistency_proof(&proof, verifier)
    } else {
        let proof: InclusionProof = serde_json::from_value(value)
            .map_err(|e| LogServiceError::Invalid(format!("not an inclusion proof: {e}")))?;
        verify_inclusion_proof(&proof, verifier)
    }
}

fn verify_inclusion_proof(
    proof: &InclusionProof,
    verifier: &Verifier,
) -> Result<String, LogServiceError> {
    let checkpoint = open_checkpoint(verifier, &proof.checkpoint, proof.tree_size, "checkpoint")?;
    let leaf = parse_hash("leaf_hash", &proof.leaf_hash)?;
    let path = parse_hashes("audit_path", &proof.audit_path)?;
    if let (Some(position), Some(event_id), Some(recorded_at), Some(payload_json)) = (
        proof.position,
        proof.event_id.as_deref(),
        proof.recorded_at.as_deref(),
        proof.payload_json.as_deref(),
    ) {
        if position != proof.leaf_index {
            return Err(LogServiceError::Invalid(format!(
                "position {position} is not leaf_index {}",
                proof.leaf_index
            )));
        }
        if event_id_of_payload_json(payload_json)
            .map(|id| id.to_hex())
            .as_deref()
            != Ok(event_id)
        {
            return Err(LogServiceError::Invalid(
                "payload_json does not hash to event_id".into(),
            ));
        }
        let recomputed = event_leaf_hash(position, event_id, recorded_at, payload_json)
            .map_err(|e| LogServiceError::Invalid(e.to_string()))?;
        if recomputed != leaf {
            return Err(LogServiceError::Invalid(
                "leaf_hash is not the hash of the event's leaf data".into(),
            ));
        }
    }
    verify_inclusion(
        &leaf,
        proof.leaf_index,
        proof.tree_size,
        &path,
        &checkpoint.root_hash,
    )
    .map_err(|e| LogServiceError::Invalid(format!("inclusion proof does not verify: {e}")))?;
    Ok(format!(
        "inclusion proof OK: leaf {} is in the tree of size {} signed by {}",
        proof.leaf_index,
        proof.tree_size,
        verifier.name()
    ))
}

fn verify_consistency_proof(
    proof: &ConsistencyProof,
    verifier: &Verifier,
) -> Result<String, LogServiceError> {
    let old = open_checkpoint(
        verifier,
        &proof.old_checkpoint,
        proof.old_size,
        "old_checkpoint",
    )?;
    let new = open_checkpoint(
        verifier,
        &proof.new_checkpoint,
        proof.new_size,
        "new_checkpoint",
    )?;
    if parse_hash("old_root", &proof.old_root)? != old.root_hash {
        return Err(LogServiceError::Invalid(
            "old_root is not the old checkpoint's root".into(),
        ));
    }
    if parse_hash("new_root", &proof.new_root)? != new.root_hash {
        return Err(LogServiceError::Invalid(
            "new_root is not the new checkpoint's root".into(),
        ));
    }
    let hashes = parse_hashes("proof", &proof.proof)?;
    verify_consistency(
        proof.old_size,
        proof.new_size,
        &old.root_hash,
        &new.root_hash,
        &hashes,
    )
    .map_err(|e| LogServiceError::Invalid(format!("consistency proof does not verify: {e}")))?;
    Ok(format!(
        "consistency proof OK: the tree of size {} extends the tree of size {} (signed by {})",
        proof.new_size,
        proof.old_size,
        verifier.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_key_name_is_a_valid_key_name() {
        let name = default_key_name();
        assert!(name.starts_with("geoprov/"));
        assert!(Signer::generate(&name).is_ok(), "{name}");
    }

    #[test]
    fn key_files_are_private_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::config::default_key_path(&dir.path().join("k"));
        let signer = Signer::generate("test/log").unwrap();
        write_key_file(&path, &signer, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(matches!(
            write_key_file(&path, &signer, false),
            Err(LogServiceError::Key(_))
        ));
        let loaded = load_signer(&path).unwrap();
        assert_eq!(loaded.verifier_key_text(), signer.verifier_key_text());
        let other = Signer::generate("test/log").unwrap();
        write_key_file(&path, &other, true).unwrap();
        assert_eq!(
            load_signer(&path).unwrap().verifier_key_text(),
            other.verifier_key_text()
        );
        let verifier = parse_verifier(&other.verifier_key_text()).unwrap();
        assert_eq!(verifier.key_text(), other.verifier_key_text());
        assert!(parse_verifier("nonsense").is_err());
    }
}

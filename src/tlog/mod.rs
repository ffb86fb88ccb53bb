//! The transparency-log math: RFC 6962 / RFC 9162 Merkle tree hashing, compact ranges
//! (frontiers), inclusion and consistency proofs, the canonical leaf encoding of a stored
//! event, and C2SP checkpoints signed as C2SP signed notes with Ed25519.
//!
//! This module is **pure**: plain synchronous functions over byte strings and a one-method
//! [`HashReader`] trait. It is what `geoprov verify`, `geoprov prove`, the store's append path
//! and an offline auditor share, so that all of them compute the same bytes.
//!
//! What it is **not**:
//! - no storage: it never opens a database or a file; the store persists the leaf hashes and the
//!   [`CompactRange`] frontier and hands leaf hashes back through [`HashReader`];
//! - no HTTP and no async: nothing here awaits, spawns or imports tokio;
//! - no key files: [`Signer`] turns key *text* into a key and back; where that text lives
//!   (and its file mode) is the caller's business;
//! - no tile encoding (C2SP tlog-tiles) and no witness cosignatures.
//!
//! # Layout
//!
//! - [`merkle`]: `leaf_hash`, `node_hash`, [`CompactRange`], proofs and their verification,
//!   with function names taken from the RFCs.
//! - [`leaf`]: the exact bytes a stored event contributes as a leaf (`geoprov/leaf/v1`: the
//!   tag, the u64-big-endian log position, then `event_id`, `recorded_at` and `payload_json`,
//!   each u32-big-endian-length prefixed).
//! - [`checkpoint`]: the C2SP tlog-checkpoint body, Ed25519 signed notes, key texts.

pub mod checkpoint;
pub mod leaf;
pub mod merkle;

pub use checkpoint::{key_id, Checkpoint, Signer, Verifier, MAX_NOTE_BYTES, MAX_NOTE_SIGNATURES};
pub use leaf::{event_leaf_hash, format_recorded_at, leaf_data, LEAF_VERSION_TAG};
pub use merkle::{
    aligned_subtrees, consistency_proof, consistency_proof_indexes, empty_root, fold_subtrees,
    inclusion_proof, inclusion_proof_indexes, leaf_hash, node_hash, root_from_leaf_hashes,
    subtree_hash, verify_consistency, verify_inclusion, CompactRange, HashReader, NodeId,
    MAX_TREE_SIZE,
};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// What kind of failure a [`TlogError`] is, so that callers branch on a classifier and never
/// on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlogErrorKind {
    /// The caller asked for something impossible (an index outside the tree, an old size
    /// larger than the new one, a frontier whose hash count does not match its size).
    /// Retrying with the same arguments fails the same way.
    InvalidArgument,
    /// Input from outside was not well formed: a proof of the wrong shape, a note, a
    /// checkpoint body or a key text that does not parse.
    Malformed,
    /// Well-formed data did not check out: a recomputed root differs, a signature is wrong,
    /// no signature by the expected key. This is the evidence of tampering (or of the wrong
    /// key) that `geoprov verify` reports with exit code 1.
    VerificationFailed,
    /// The [`HashReader`] could not supply the hashes (a store failure). May be transient.
    Storage,
}

/// Errors of the transparency-log module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlogError {
    /// An index, size or range argument is impossible; the message says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A proof has the wrong number of hashes for its index and sizes.
    #[error("malformed proof: {0}")]
    MalformedProof(String),
    /// A recomputed root hash differs from the expected one.
    #[error("{what} mismatch: computed {computed}, expected {expected}")]
    RootMismatch {
        /// Which root: "tree root", "old tree root" or "new tree root".
        what: &'static str,
        /// Hex of the root recomputed from the proof.
        computed: String,
        /// Hex of the root the caller expected.
        expected: String,
    },
    /// A signed note is not well formed (C2SP signed-note syntax).
    #[error("malformed note: {0}")]
    MalformedNote(String),
    /// A checkpoint body is not well formed (C2SP tlog-checkpoint syntax).
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(String),
    /// A signer or verifier key text is not well formed, or its key id does not match.
    #[error("malformed key: {0}")]
    MalformedKey(String),
    /// A signature line by the expected key is present but does not verify.
    #[error("invalid signature by key {0}")]
    InvalidSignature(String),
    /// The note carries no signature by the expected key.
    #[error("note has no signature by key {0}")]
    UnverifiedNote(String),
    /// The [`HashReader`] failed; the source is the store's own error.
    #[error("reading leaf hashes failed: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The [`HashReader`] answered with the wrong number of hashes.
    #[error("hash reader returned {returned} hashes for {requested} indexes")]
    ShortRead {
        /// How many indexes were asked for.
        requested: usize,
        /// How many hashes came back.
        returned: usize,
    },
}

impl TlogError {
    /// The classifier callers MUST branch on (instead of the message text).
    #[must_use]
    pub fn kind(&self) -> TlogErrorKind {
        match self {
            TlogError::InvalidArgument(_) => TlogErrorKind::InvalidArgument,
            TlogError::MalformedProof(_)
            | TlogError::MalformedNote(_)
            | TlogError::MalformedCheckpoint(_)
            | TlogError::MalformedKey(_) => TlogErrorKind::Malformed,
            TlogError::RootMismatch { .. }
            | TlogError::InvalidSignature(_)
            | TlogError::UnverifiedNote(_) => TlogErrorKind::VerificationFailed,
            TlogError::Read(_) | TlogError::ShortRead { .. } => TlogErrorKind::Storage,
        }
    }

    /// Wraps a store's error for returning from [`HashReader::read_hashes`].
    pub fn read<E>(err: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        TlogError::Read(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_classify_errors() {
        assert_eq!(
            TlogError::InvalidArgument("x".into()).kind(),
            TlogErrorKind::InvalidArgument
        );
        assert_eq!(
            TlogError::MalformedNote("x".into()).kind(),
            TlogErrorKind::Malformed
        );
        assert_eq!(
            TlogError::UnverifiedNote("k".into()).kind(),
            TlogErrorKind::VerificationFailed
        );
        let io = std::io::Error::other("disk on fire");
        let e = TlogError::read(io);
        assert_eq!(e.kind(), TlogErrorKind::Storage);
        assert!(e.to_string().contains("disk on fire"));
    }
}

//! RFC 6962 / RFC 9162 Merkle tree hashing, compact ranges and proofs.
//!
//! Names follow the RFCs: a leaf's hash is `SHA-256(0x00 || data)` ([`leaf_hash`]), an interior
//! node's is `SHA-256(0x01 || left || right)` ([`node_hash`]), the empty tree's root is
//! `SHA-256("")` ([`empty_root`]); `MTH(D[n])` splits `n` leaves at the largest power of two
//! smaller than `n` (RFC 6962 section 2.1), so the tree is never padded or duplicated.
//!
//! The store keeps the *leaf* hashes, indexed by log position, plus one [`CompactRange`]
//! (the frontier) so that appending a leaf and computing the current root cost O(log n), and a
//! cache of interior nodes ([`NodeId`]; [`aligned_subtrees`] says which of them make up a proof's
//! range).
//! Proofs are computed by [`inclusion_proof`] and [`consistency_proof`], which hash subtrees
//! up from the leaves that a [`HashReader`] returns; their paired [`inclusion_proof_indexes`]
//! and [`consistency_proof_indexes`] say which leaf ranges those are, so a store can fetch
//! them in one query first. [`verify_inclusion`] and [`verify_consistency`] are the RFC 9162
//! section 2.1.3.2 and 2.1.4.2 algorithms, verbatim, and need no store.
//!
//! Written by hand rather than with a crate: `ct-merkle` (checked at 0.3.0), the one
//! maintained RFC 6962 crate, builds proofs either from a tree it holds whole in memory or from
//! leaf indexes the caller fetches, but has no persisted frontier (our O(1) root and O(log n)
//! append at commit), cannot build a proof from stored interior subtree roots (`log_nodes`, what
//! makes a proof O(log n) reads), is on `digest` 0.11 where the rest of the build uses
//! `sha2` 0.10 (a second hash stack), and says of itself that it is unaudited. The hashing is
//! four lines over `sha2`; the proofs are RFC 9162's algorithms, pinned by the RFC's and the
//! transparency-dev test vectors in the tests, and by a naive recomputation for every tree size
//! up to 300.
//!
//! Not here: storage, tiles, signing (see [`super::checkpoint`]).

use std::ops::Range;

use sha2::{Digest, Sha256};

use super::{Hash, TlogError};

/// Domain-separation prefix of a leaf hash (RFC 6962 section 2.1).
pub(crate) const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash (RFC 6962 section 2.1).
const NODE_PREFIX: u8 = 0x01;
/// The largest tree size geoprov handles: log positions are SQL `BIGINT` (i64), so sizes stay
/// at or below `i64::MAX`; this also keeps [`CompactRange::append`] free of overflow.
pub const MAX_TREE_SIZE: u64 = (1u64 << 63) - 1;
/// Leaf hashes requested from a [`HashReader`] per call while hashing a large subtree; bounds
/// the memory of [`subtree_hash`] (32 bytes per hash plus 8 per index).
const READ_CHUNK: u64 = 1 << 14;

/// `SHA-256(0x00 || data)`: the hash of one leaf (RFC 6962 section 2.1).
#[must_use]
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node (RFC 6962 section 2.1).
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `SHA-256("")`: the root of the empty tree (RFC 6962 section 2.1).
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

/// The largest power of two strictly smaller than `n`; the RFC's split point `k`.
/// Callers MUST pass `n >= 2` (for `n < 2` it returns 0, which no caller uses).
fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    1u64 << (n - 1).ilog2()
}

/// Same as [`split_point`], for slice lengths.
fn split_point_usize(n: usize) -> usize {
    if n < 2 {
        return 0;
    }
    1usize << (n - 1).ilog2()
}

/// `MTH(D[n])` computed by its recursive definition (RFC 6962 section 2.1) from the leaf hashes.
///
/// O(n) time and O(log n) stack; meant for tests and small trees. A store MUST use
/// [`CompactRange`] instead of calling this on the whole log.
#[must_use]
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [single] => *single,
        _ => {
            let (left, right) = leaves.split_at(split_point_usize(leaves.len()));
            node_hash(&root_from_leaf_hashes(left), &root_from_leaf_hashes(right))
        }
    }
}

/// The frontier of a log: the roots of the perfect subtrees that make up leaves `0..size`,
/// largest (leftmost) first, one per set bit of `size`.
///
/// This is all a log needs to keep to append in O(log n) and to produce the root at its current
/// size; a store persists `(size(), hashes())` next to its log head and rebuilds it with
/// [`CompactRange::from_parts`]. (transparency-dev calls the same thing a compact range over
/// `[0, size)`; Certificate Transparency code calls it the frontier.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    /// Number of leaves covered. Positions are BIGINT in SQL, so it stays below 2^63.
    size: u64,
    /// Perfect-subtree roots, largest first; `hashes.len() == size.count_ones()` always holds.
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The frontier of the empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from what [`size`](Self::size) and [`hashes`](Self::hashes) returned.
    ///
    /// # Errors
    ///
    /// [`TlogError::InvalidArgument`] when `size` exceeds [`MAX_TREE_SIZE`] or `hashes.len()`
    /// is not the number of set bits of `size` (the stored frontier is corrupt or belongs to
    /// another size).
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Self, TlogError> {
        if size > MAX_TREE_SIZE {
            return Err(TlogError::InvalidArgument(format!(
                "compact range size {size} exceeds the maximum tree size {MAX_TREE_SIZE}"
            )));
        }
        let expected = size.count_ones();
        if usize::try_from(expected).ok() != Some(hashes.len()) {
            return Err(TlogError::InvalidArgument(format!(
                "a compact range of size {size} has {expected} hashes, got {}",
                hashes.len()
            )));
        }
        Ok(Self { size, hashes })
    }

    /// Appends the leaf with hash `leaf_hash` at position `size()`; O(log n) node hashes.
    ///
    /// The caller MUST append leaves in log order (position `size()` next) and MUST NOT go past
    /// 2^64 - 1 leaves (unreachable from a range built by `new` or `from_parts`).
    pub fn append(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut size = self.size;
        // Each trailing 1 bit of the old size is a perfect subtree of the same height as the
        // one being carried: merge them, like binary addition.
        while size & 1 == 1 {
            if let Some(left) = self.hashes.pop() {
                hash = node_hash(&left, &hash);
            }
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// Number of leaves appended so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest first; persist them together with [`size`](Self::size).
    #[must_use]
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The frontier as the stores persist it (`log_head.frontier`): the perfect-subtree roots,
    /// largest first, as concatenated 32-byte hashes. The size is stored beside it.
    #[must_use]
    pub fn to_frontier_bytes(&self) -> Vec<u8> {
        self.hashes.concat()
    }

    /// Reads back what [`to_frontier_bytes`](Self::to_frontier_bytes) wrote for a log of
    /// `size` leaves.
    ///
    /// # Errors
    ///
    /// [`TlogError::InvalidArgument`] when `bytes` is not a whole number of 32-byte hashes, or
    /// as [`from_parts`](Self::from_parts).
    pub fn from_frontier_bytes(size: u64, bytes: &[u8]) -> Result<Self, TlogError> {
        if !bytes.len().is_multiple_of(32) {
            return Err(TlogError::InvalidArgument(format!(
                "a frontier of {} bytes is not a multiple of 32",
                bytes.len()
            )));
        }
        let hashes = bytes
            .chunks_exact(32)
            .filter_map(|c| Hash::try_from(c).ok())
            .collect();
        Self::from_parts(size, hashes)
    }

    /// `MTH(D[size])`: the root of the tree over all appended leaves; [`empty_root`] when empty.
    #[must_use]
    pub fn root(&self) -> Hash {
        fold_subtrees(&self.hashes)
    }
}

/// One perfect subtree of the whole tree: node `index` at `height` covers the leaves
/// `index << height .. (index + 1) << height` (height 0 is a leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    /// Levels above the leaves; the node covers `1 << height` leaves.
    pub height: u32,
    /// The node's position among the nodes of its height, from the left.
    pub index: u64,
}

impl NodeId {
    /// The leaves the node covers.
    #[must_use]
    pub fn leaves(self) -> Range<u64> {
        (self.index << self.height)..((self.index + 1) << self.height)
    }
}

/// The perfect subtrees of the whole tree that make up `range`, largest first, when
/// `MTH(D[range])` is their [`fold_subtrees`]: when `range.start` is a multiple of the largest
/// power of two not above the range's length. Every range the `*_indexes` helpers return is one
/// of those, so a store that keeps interior node hashes can answer proofs from O(log n) of them.
/// `None` for an empty range or one that starts elsewhere.
#[must_use]
pub fn aligned_subtrees(range: Range<u64>) -> Option<Vec<NodeId>> {
    if range.start >= range.end {
        return None;
    }
    let len = range.end - range.start;
    let top = len.ilog2();
    if range.start & ((1u64 << top) - 1) != 0 {
        return None;
    }
    let mut start = range.start;
    let mut out = Vec::with_capacity(len.count_ones() as usize);
    for height in (0..=top).rev() {
        if len & (1u64 << height) != 0 {
            out.push(NodeId {
                height,
                index: start >> height,
            });
            start += 1u64 << height;
        }
    }
    Some(out)
}

/// `MTH` of consecutive perfect subtrees given largest first, as [`aligned_subtrees`] lists
/// them: the rightmost two are joined first, as in [`CompactRange::root`]. [`empty_root`] for
/// none.
#[must_use]
pub fn fold_subtrees(hashes: &[Hash]) -> Hash {
    let mut iter = hashes.iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    iter.fold(*last, |acc, left| node_hash(left, &acc))
}

/// Reads leaf hashes by leaf index (log position). The store implements it over the hashes it
/// keeps; `[Hash]` and `Vec<Hash>` implement it with index = position in the slice.
///
/// Contract: the result MUST have exactly one hash per requested index, in the order requested
/// (duplicates included); an index at or beyond the log size MUST be an error, never a made-up
/// hash. Implementations MUST NOT block on async work from inside a runtime thread: prefetch
/// with the `*_indexes` helpers and read from memory instead.
pub trait HashReader {
    /// Returns the leaf hashes at `indexes`, in order.
    ///
    /// # Errors
    ///
    /// A [`TlogError`] (usually [`TlogError::Read`]) when a hash cannot be read.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError>;
}

impl HashReader for [Hash] {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.get(i))
                    .copied()
                    .ok_or_else(|| {
                        TlogError::InvalidArgument(format!(
                            "leaf index {index} is beyond the {} stored hashes",
                            self.len()
                        ))
                    })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        self.as_slice().read_hashes(indexes)
    }
}

impl<T: HashReader + ?Sized> HashReader for &T {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
        (**self).read_hashes(indexes)
    }
}

/// `MTH(D[start:end])`: the root of the leaves in `range` taken as a tree of their own, read
/// through `reader` in chunks (memory stays flat however large the range).
///
/// For every range returned by the `*_indexes` helpers this is the hash of that node of the
/// whole tree.
///
/// # Errors
///
/// [`TlogError::InvalidArgument`] for an empty range; the reader's error; or
/// [`TlogError::ShortRead`] when the reader returns the wrong number of hashes.
pub fn subtree_hash<R: HashReader + ?Sized>(
    range: Range<u64>,
    reader: &R,
) -> Result<Hash, TlogError> {
    if range.start >= range.end {
        return Err(TlogError::InvalidArgument(format!(
            "empty leaf range {}..{}",
            range.start, range.end
        )));
    }
    let mut frontier = CompactRange::new();
    let mut start = range.start;
    while start < range.end {
        let end = range.end.min(start.saturating_add(READ_CHUNK));
        let indexes: Vec<u64> = (start..end).collect();
        let hashes = reader.read_hashes(&indexes)?;
        if hashes.len() != indexes.len() {
            return Err(TlogError::ShortRead {
                requested: indexes.len(),
                returned: hashes.len(),
            });
        }
        for hash in hashes {
            frontier.append(hash);
        }
        start = end;
    }
    Ok(frontier.root())
}

/// The leaf ranges whose subtree hashes make up the inclusion proof (audit path) of leaf
/// `index` in the tree of `size` leaves, in proof order (leaf level first): RFC 6962
/// section 2.1.1 `PATH(m, D[n])`, RFC 9162 section 2.1.3.1.
///
/// The ranges are disjoint and cover `0..size` except `index`. A store MAY prefetch their
/// leaves and then call [`inclusion_proof`] with an in-memory reader.
///
/// # Errors
///
/// [`TlogError::InvalidArgument`] when `index >= size`.
pub fn inclusion_proof_indexes(index: u64, size: u64) -> Result<Vec<Range<u64>>, TlogError> {
    if index >= size {
        return Err(TlogError::InvalidArgument(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    let (mut lo, mut hi) = (0u64, size);
    let mut siblings = Vec::new();
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            siblings.push(lo + k..hi);
            hi = lo + k;
        } else {
            siblings.push(lo..lo + k);
            lo += k;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// The inclusion proof (audit path) of leaf `index` in the tree of `size` leaves, RFC 9162
/// order, computed from the leaf hashes `reader` returns. Empty for a tree of one leaf.
///
/// # Errors
///
/// As [`inclusion_proof_indexes`] and [`subtree_hash`].
pub fn inclusion_proof<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, TlogError> {
    inclusion_proof_indexes(index, size)?
        .into_iter()
        .map(|range| subtree_hash(range, reader))
        .collect()
}

/// The leaf ranges whose subtree hashes make up the consistency proof from the tree of
/// `old_size` leaves to the tree of `new_size` leaves, in proof order: RFC 6962 section 2.1.2
/// `PROOF(m, D[n]) = SUBPROOF(m, D[n], true)`, RFC 9162 section 2.1.4.1.
///
/// Empty when `old_size == 0` or `old_size == new_size` (nothing to prove).
///
/// # Errors
///
/// [`TlogError::InvalidArgument`] when `old_size > new_size`.
pub fn consistency_proof_indexes(
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Range<u64>>, TlogError> {
    if old_size > new_size {
        return Err(TlogError::InvalidArgument(format!(
            "old tree size {old_size} is larger than new tree size {new_size}"
        )));
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // Walk SUBPROOF down from the root: `m` is the old size relative to the current subtree
    // `lo..hi`, `whole` is the RFC's flag `b` (the subtree is the old tree itself).
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new_size, old_size, true);
    let mut terminal = None;
    let mut siblings = Vec::new();
    loop {
        if m == hi - lo {
            if !whole {
                terminal = Some(lo..hi);
            }
            break;
        }
        let k = split_point(hi - lo);
        if m <= k {
            siblings.push(lo + k..hi);
            hi = lo + k;
        } else {
            siblings.push(lo..lo + k);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    Ok(terminal
        .into_iter()
        .chain(siblings.into_iter().rev())
        .collect())
}

/// The consistency proof from the tree of `old_size` leaves to the tree of `new_size` leaves,
/// computed from the leaf hashes `reader` returns.
///
/// # Errors
///
/// As [`consistency_proof_indexes`] and [`subtree_hash`].
pub fn consistency_proof<R: HashReader + ?Sized>(
    old_size: u64,
    new_size: u64,
    reader: &R,
) -> Result<Vec<Hash>, TlogError> {
    consistency_proof_indexes(old_size, new_size)?
        .into_iter()
        .map(|range| subtree_hash(range, reader))
        .collect()
}

fn root_mismatch(what: &'static str, computed: &Hash, expected: &Hash) -> TlogError {
    TlogError::RootMismatch {
        what,
        computed: hex::encode(computed),
        expected: hex::encode(expected),
    }
}

/// Checks that `leaf_hash` is leaf `index` of the tree of `size` leaves whose root is `root`,
/// by the algorithm of RFC 9162 section 2.1.3.2.
///
/// # Errors
///
/// [`TlogError::MalformedProof`] when `index >= size` or the proof has the wrong length for
/// them; [`TlogError::RootMismatch`] when the recomputed root differs from `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), TlogError> {
    if index >= size {
        return Err(TlogError::MalformedProof(format!(
            "leaf index {index} is not below tree size {size}"
        )));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if snode == 0 {
            return Err(TlogError::MalformedProof(format!(
                "inclusion proof for leaf {index} of {size} is too long ({} hashes)",
                proof.len()
            )));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(TlogError::MalformedProof(format!(
            "inclusion proof for leaf {index} of {size} is too short ({} hashes)",
            proof.len()
        )));
    }
    if r != *root {
        return Err(root_mismatch("tree root", &r, root));
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root`, by the algorithm of RFC 9162 section 2.1.4.2.
///
/// Edge cases as in transparency-dev/merkle: equal sizes need an empty proof and equal roots;
/// an empty old tree is consistent with anything given an empty proof.
///
/// # Errors
///
/// [`TlogError::MalformedProof`] when `old_size > new_size` or the proof has the wrong length;
/// [`TlogError::RootMismatch`] when a recomputed root differs.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), TlogError> {
    if old_size > new_size {
        return Err(TlogError::MalformedProof(format!(
            "old tree size {old_size} is larger than new tree size {new_size}"
        )));
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(TlogError::MalformedProof(format!(
                "consistency proof from {old_size} to {new_size} MUST be empty, has {} hashes",
                proof.len()
            )));
        }
        if old_size == new_size && old_root != new_root {
            return Err(root_mismatch("new tree root", new_root, old_root));
        }
        return Ok(());
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(TlogError::MalformedProof(format!(
            "consistency proof from {old_size} to {new_size} is empty"
        )));
    };
    // Step 2: when the old tree is a perfect subtree its root is the proof's implicit head.
    let (head, tail): (&Hash, &[Hash]) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in tail {
        if snode == 0 {
            return Err(TlogError::MalformedProof(format!(
                "consistency proof from {old_size} to {new_size} is too long ({} hashes)",
                proof.len()
            )));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(TlogError::MalformedProof(format!(
            "consistency proof from {old_size} to {new_size} is too short ({} hashes)",
            proof.len()
        )));
    }
    if fr != *old_root {
        return Err(root_mismatch("old tree root", &fr, old_root));
    }
    if sr != *new_root {
        return Err(root_mismatch("new tree root", &sr, new_root));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::TlogErrorKind;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        let v = hex::decode(s).unwrap();
        v.try_into().unwrap()
    }

    // Reference vectors: the RFC 6962 test data used by Certificate Transparency
    // implementations, as kept in transparency-dev/merkle `proof/verify_test.go` (commit
    // 02194e9afb6c1d95b5381350007963aa70fff472), originally certificate-transparency-go's
    // merkle tests. Go numbers leaves from 1 in `inclusionProofs`; indexes below are 0-based.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// (leaf index, tree size, audit path)
    const INCLUSION: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    /// (old size, new size, proof)
    const CONSISTENCY: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    /// Arbitrary hash from the same Go test file (`sha256SomeHash`).
    const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

    fn vector_leaves() -> Vec<Hash> {
        LEAVES
            .iter()
            .map(|l| leaf_hash(&hex::decode(l).unwrap()))
            .collect()
    }

    fn hashes(v: &[&str]) -> Vec<Hash> {
        v.iter().map(|s| h(s)).collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(CompactRange::new().root(), empty_root());
        assert_eq!(root_from_leaf_hashes(&[]), empty_root());
    }

    #[test]
    fn frontier_bytes_round_trip_and_refuse_a_bad_length() {
        let mut range = CompactRange::new();
        for leaf in vector_leaves().iter().take(7) {
            range.append(*leaf);
        }
        let bytes = range.to_frontier_bytes();
        assert_eq!(bytes.len(), 3 * 32);
        let back = CompactRange::from_frontier_bytes(7, &bytes).expect("round trip");
        assert_eq!(back.root(), range.root());
        assert!(CompactRange::from_frontier_bytes(7, &bytes[..95]).is_err());
        assert!(CompactRange::from_frontier_bytes(8, &bytes).is_err());
    }

    #[test]
    fn rfc6962_roots_for_sizes_1_to_8() {
        let leaves = vector_leaves();
        let mut range = CompactRange::new();
        for (i, leaf) in leaves.iter().enumerate() {
            range.append(*leaf);
            assert_eq!(
                range.root(),
                h(ROOTS[i]),
                "compact range root at size {}",
                i + 1
            );
            assert_eq!(root_from_leaf_hashes(&leaves[..=i]), h(ROOTS[i]));
        }
    }

    #[test]
    fn rfc6962_inclusion_proofs_are_generated_and_verify() {
        let leaves = vector_leaves();
        for (index, size, want) in INCLUSION {
            let want = hashes(want);
            let got = inclusion_proof(index, size, leaves.as_slice()).unwrap();
            assert_eq!(got, want, "proof for leaf {index} of {size}");
            let root = h(ROOTS[usize::try_from(size).unwrap() - 1]);
            let leaf = leaves[usize::try_from(index).unwrap()];
            verify_inclusion(&leaf, index, size, &want, &root).unwrap();
            for (desc, probe) in corrupt_inclusion(index, size, &want, &root, &leaf) {
                assert!(
                    verify_inclusion(
                        &probe.leaf,
                        probe.index,
                        probe.size,
                        &probe.proof,
                        &probe.root
                    )
                    .is_err(),
                    "leaf {index} of {size}: verified with {desc}"
                );
            }
        }
    }

    struct InclusionProbe {
        index: u64,
        size: u64,
        leaf: Hash,
        proof: Vec<Hash>,
        root: Hash,
    }

    /// The corruptions of transparency-dev/merkle's `corruptInclusionProof`.
    fn corrupt_inclusion(
        index: u64,
        size: u64,
        proof: &[Hash],
        root: &Hash,
        leaf: &Hash,
    ) -> Vec<(String, InclusionProbe)> {
        let p = |index, size, leaf: Hash, proof: Vec<Hash>, root: Hash| InclusionProbe {
            index,
            size,
            leaf,
            proof,
            root,
        };
        let with_tail = |x: Hash| [proof, &[x]].concat();
        let with_head = |x: Hash| [&[x], proof].concat();
        let mut out = vec![
            (
                "index - 1".into(),
                p(index.wrapping_sub(1), size, *leaf, proof.to_vec(), *root),
            ),
            (
                "index + 1".into(),
                p(index + 1, size, *leaf, proof.to_vec(), *root),
            ),
            (
                "index ^ 2".into(),
                p(index ^ 2, size, *leaf, proof.to_vec(), *root),
            ),
            (
                "size * 2".into(),
                p(index, size * 2, *leaf, proof.to_vec(), *root),
            ),
            (
                "size / 2".into(),
                p(index, size / 2, *leaf, proof.to_vec(), *root),
            ),
            (
                "wrong leaf".into(),
                p(index, size, leaf_hash(b"WrongLeaf"), proof.to_vec(), *root),
            ),
            (
                "empty root".into(),
                p(index, size, *leaf, proof.to_vec(), empty_root()),
            ),
            (
                "random root".into(),
                p(index, size, *leaf, proof.to_vec(), h(SOME_HASH)),
            ),
            (
                "trailing zero hash".into(),
                p(index, size, *leaf, with_tail([0; 32]), *root),
            ),
            (
                "trailing root".into(),
                p(index, size, *leaf, with_tail(*root), *root),
            ),
            (
                "preceding zero hash".into(),
                p(index, size, *leaf, with_head([0; 32]), *root),
            ),
            (
                "preceding root".into(),
                p(index, size, *leaf, with_head(*root), *root),
            ),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.to_vec();
            wrong[i][0] ^= 8;
            out.push((
                format!("modified proof[{i}] bit 3"),
                p(index, size, *leaf, wrong, *root),
            ));
        }
        if let Some((_, head)) = proof.split_last() {
            out.push((
                "removed component".into(),
                p(index, size, *leaf, head.to_vec(), *root),
            ));
        }
        if proof.len() > 1 {
            let wrong = [&[proof[0], h(SOME_HASH)], &proof[1..]].concat();
            out.push((
                "inserted component".into(),
                p(index, size, *leaf, wrong, *root),
            ));
        }
        // A one-leaf tree has an empty proof: index + 1 and size * 2 would still be caught, but
        // "size / 2" gives size 0 and must fail too.
        out
    }

    #[test]
    fn rfc6962_consistency_proofs_are_generated_and_verify() {
        let leaves = vector_leaves();
        for (old, new, want) in CONSISTENCY {
            let want = hashes(want);
            let got = consistency_proof(old, new, leaves.as_slice()).unwrap();
            assert_eq!(got, want, "proof from {old} to {new}");
            let r1 = h(ROOTS[usize::try_from(old).unwrap() - 1]);
            let r2 = h(ROOTS[usize::try_from(new).unwrap() - 1]);
            verify_consistency(old, new, &r1, &r2, &want).unwrap();
            if want.is_empty() {
                continue;
            }
            // transparency-dev/merkle's corruptConsistencyProof.
            let tail = |x: Hash| [want.as_slice(), &[x]].concat();
            let head = |x: Hash| [&[x], want.as_slice()].concat();
            let mut probes: Vec<(String, u64, u64, Hash, Hash, Vec<Hash>)> = vec![
                ("old - 1".into(), old - 1, new, r1, r2, want.clone()),
                ("old + 1".into(), old + 1, new, r1, r2, want.clone()),
                ("old ^ 2".into(), old ^ 2, new, r1, r2, want.clone()),
                ("new * 2".into(), old, new * 2, r1, r2, want.clone()),
                ("new / 2".into(), old, new / 2, r1, r2, want.clone()),
                (
                    "wrong root1".into(),
                    old,
                    new,
                    leaf_hash(b"WrongRoot"),
                    r2,
                    want.clone(),
                ),
                (
                    "wrong root2".into(),
                    old,
                    new,
                    r1,
                    leaf_hash(b"WrongRoot"),
                    want.clone(),
                ),
                ("swapped roots".into(), old, new, r2, r1, want.clone()),
                ("empty proof".into(), old, new, r1, r2, vec![]),
                ("trailing zero".into(), old, new, r1, r2, tail([0; 32])),
                ("trailing root1".into(), old, new, r1, r2, tail(r1)),
                ("trailing root2".into(), old, new, r1, r2, tail(r2)),
                ("preceding zero".into(), old, new, r1, r2, head([0; 32])),
                ("preceding root1".into(), old, new, r1, r2, head(r1)),
                ("preceding root2".into(), old, new, r1, r2, head(r2)),
                ("preceding proof[0]".into(), old, new, r1, r2, head(want[0])),
                (
                    "truncated".into(),
                    old,
                    new,
                    r1,
                    r2,
                    want[..want.len() - 1].to_vec(),
                ),
            ];
            for i in 0..want.len() {
                let mut wrong = want.clone();
                wrong[i][0] ^= 16;
                probes.push((
                    format!("modified proof[{i}] bit 4"),
                    old,
                    new,
                    r1,
                    r2,
                    wrong,
                ));
            }
            for (desc, o, n, a, b, proof) in probes {
                assert!(
                    verify_consistency(o, n, &a, &b, &proof).is_err(),
                    "{old}->{new}: verified with {desc}"
                );
            }
        }
    }

    #[test]
    fn consistency_edge_cases_match_transparency_dev() {
        // transparency-dev/merkle TestVerifyConsistency's table.
        let (root1, root2) = (leaf_hash(b"don't care 1"), leaf_hash(b"don't care 2"));
        let e = empty_root();
        let cases: [(u64, u64, Hash, Hash, Vec<Hash>, bool); 13] = [
            (0, 0, root1, root2, vec![], true),
            (1, 1, root1, root2, vec![], true),
            (0, 0, root1, root1, vec![], false),
            (0, 1, root1, root2, vec![], false),
            (1, 1, root2, root2, vec![], false),
            (1, 0, root1, root2, vec![], true),
            (2, 1, root1, root2, vec![], true),
            (1, 2, root1, root2, vec![], true),
            (0, 0, e, root2, vec![], true),
            (1, 1, e, root2, vec![], true),
            (0, 0, e, e, vec![e], true),
            (0, 1, e, e, vec![e], true),
            (1, 1, e, e, vec![e], true),
        ];
        for (i, (m, n, a, b, proof, want_err)) in cases.into_iter().enumerate() {
            let got = verify_consistency(m, n, &a, &b, &proof);
            assert_eq!(got.is_err(), want_err, "case {i}: {m}->{n}: {got:?}");
        }
    }

    #[test]
    fn inclusion_edge_cases_match_transparency_dev() {
        // transparency-dev/merkle TestVerifyInclusion / TestVerifyInclusionSingleEntry.
        for (index, size) in [(0, 0), (1, 0), (2, 1)] {
            assert!(verify_inclusion(&h(SOME_HASH), index, size, &[], &empty_root()).is_err());
        }
        let hash = leaf_hash(b"data");
        verify_inclusion(&hash, 0, 1, &[], &hash).unwrap();
        let err = verify_inclusion(&hash, 0, 1, &[], &empty_root()).unwrap_err();
        assert_eq!(err.kind(), TlogErrorKind::VerificationFailed);
        let err = verify_inclusion(&hash, 0, 1, &[hash], &hash).unwrap_err();
        assert_eq!(err.kind(), TlogErrorKind::Malformed);
    }

    #[test]
    fn index_helpers_reject_impossible_arguments() {
        assert!(inclusion_proof_indexes(0, 0).is_err());
        assert!(inclusion_proof_indexes(5, 5).is_err());
        assert!(consistency_proof_indexes(6, 5).is_err());
        assert_eq!(consistency_proof_indexes(0, 5).unwrap(), vec![]);
        assert_eq!(consistency_proof_indexes(5, 5).unwrap(), vec![]);
        assert_eq!(
            inclusion_proof_indexes(2, 5).unwrap(),
            vec![3..4, 0..2, 4..5]
        );
        assert_eq!(
            consistency_proof_indexes(6, 8).unwrap(),
            vec![4..6, 6..8, 0..4]
        );
        // Sizes far beyond memory are fine: only ranges are computed.
        let big = inclusion_proof_indexes(1 << 40, (1 << 62) + 3).unwrap();
        assert_eq!(big.len(), 63);
        assert!(subtree_hash(3..3, vector_leaves().as_slice()).is_err());
    }

    #[test]
    fn compact_range_round_trips_through_parts() {
        let leaves = vector_leaves();
        let mut a = CompactRange::new();
        for leaf in &leaves[..5] {
            a.append(*leaf);
        }
        assert_eq!(a.hashes().len(), 2);
        let mut b = CompactRange::from_parts(a.size(), a.hashes().to_vec()).unwrap();
        for leaf in &leaves[5..] {
            b.append(*leaf);
        }
        assert_eq!(b.size(), 8);
        assert_eq!(b.root(), h(ROOTS[7]));
        assert!(CompactRange::from_parts(5, vec![[0; 32]]).is_err());
        assert!(CompactRange::from_parts(0, vec![[0; 32]]).is_err());
        assert!(CompactRange::from_parts(u64::MAX, vec![[0; 32]; 64]).is_err());
        let top = CompactRange::from_parts(MAX_TREE_SIZE, vec![[0; 32]; 63]).unwrap();
        assert_eq!(top.size(), MAX_TREE_SIZE);
        assert_eq!(
            CompactRange::from_parts(0, vec![]).unwrap(),
            CompactRange::new()
        );
    }

    /// A reader that answers with one hash too few.
    struct ShortReader;
    impl HashReader for ShortReader {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, TlogError> {
            Ok(vec![[0; 32]; indexes.len().saturating_sub(1)])
        }
    }

    /// A reader whose store is down.
    struct FailingReader;
    impl HashReader for FailingReader {
        fn read_hashes(&self, _: &[u64]) -> Result<Vec<Hash>, TlogError> {
            Err(TlogError::read(std::io::Error::other("store down")))
        }
    }

    #[test]
    fn reader_failures_surface_as_storage_errors() {
        let err = inclusion_proof(0, 4, &ShortReader).unwrap_err();
        assert!(matches!(err, TlogError::ShortRead { .. }));
        assert_eq!(err.kind(), TlogErrorKind::Storage);
        let err = consistency_proof(3, 4, &FailingReader).unwrap_err();
        assert_eq!(err.kind(), TlogErrorKind::Storage);
        // A slice reader refuses indexes it does not hold instead of inventing hashes.
        let leaves = vector_leaves();
        assert!(inclusion_proof(0, 9, leaves.as_slice()).is_err());
    }

    #[test]
    fn subtree_hash_streams_large_ranges_in_chunks() {
        let n = READ_CHUNK * 2 + 5;
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        assert_eq!(
            subtree_hash(0..n, leaves.as_slice()).unwrap(),
            root_from_leaf_hashes(&leaves)
        );
    }

    // ---- Property tests against a naive recursive tree (RFC 6962 section 2.1 definitions). ----

    const MAX_N: u64 = 300;

    fn test_leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    /// RFC 6962 PATH(m, D[n]), literally.
    fn naive_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        if d.len() <= 1 {
            return vec![];
        }
        let k = split_point_usize(d.len());
        if m < k {
            let mut p = naive_path(m, &d[..k]);
            p.push(root_from_leaf_hashes(&d[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &d[k..]);
            p.push(root_from_leaf_hashes(&d[..k]));
            p
        }
    }

    /// RFC 6962 SUBPROOF(m, D[n], b), literally.
    fn naive_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        if m == d.len() {
            return if b {
                vec![]
            } else {
                vec![root_from_leaf_hashes(d)]
            };
        }
        let k = split_point_usize(d.len());
        if m <= k {
            let mut p = naive_subproof(m, &d[..k], b);
            p.push(root_from_leaf_hashes(&d[k..]));
            p
        } else {
            let mut p = naive_subproof(m - k, &d[k..], false);
            p.push(root_from_leaf_hashes(&d[..k]));
            p
        }
    }

    fn idx(i: u64) -> usize {
        usize::try_from(i).unwrap()
    }

    #[test]
    fn compact_range_root_equals_naive_root_for_every_size_up_to_300() {
        let leaves = test_leaves(MAX_N);
        let mut range = CompactRange::new();
        for n in 1..=MAX_N {
            range.append(leaves[idx(n - 1)]);
            assert_eq!(range.size(), n);
            assert_eq!(range.hashes().len(), idx(u64::from(n.count_ones())));
            assert_eq!(
                range.root(),
                root_from_leaf_hashes(&leaves[..idx(n)]),
                "size {n}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn inclusion_proofs_verify_and_tampering_fails(
            size in 1..=MAX_N,
            index_seed in any::<u64>(),
            which in any::<usize>(),
            byte in 0..32usize,
            mask in 1..=255u8,
        ) {
            let leaves = test_leaves(size);
            let index = index_seed % size;
            let root = root_from_leaf_hashes(&leaves);
            let leaf = leaves[idx(index)];
            let proof = inclusion_proof(index, size, leaves.as_slice()).unwrap();
            prop_assert_eq!(&proof, &naive_path(idx(index), &leaves));
            let ranges = inclusion_proof_indexes(index, size).unwrap();
            prop_assert_eq!(ranges.iter().map(|r| r.end - r.start).sum::<u64>(), size - 1);
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());

            if proof.is_empty() {
                let mut bad_root = root;
                bad_root[byte] ^= mask;
                prop_assert!(verify_inclusion(&leaf, index, size, &proof, &bad_root).is_err());
            } else {
                let mut bad = proof.clone();
                bad[which % proof.len()][byte] ^= mask;
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
            }
            let mut bad_leaf = leaf;
            bad_leaf[byte] ^= mask;
            prop_assert!(verify_inclusion(&bad_leaf, index, size, &proof, &root).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_tampering_fails(
            new_size in 1..=MAX_N,
            old_seed in any::<u64>(),
            which in any::<usize>(),
            byte in 0..32usize,
            mask in 1..=255u8,
        ) {
            let leaves = test_leaves(new_size);
            let old_size = old_seed % (new_size + 1);
            let old_root = root_from_leaf_hashes(&leaves[..idx(old_size)]);
            let new_root = root_from_leaf_hashes(&leaves);
            let proof = consistency_proof(old_size, new_size, leaves.as_slice()).unwrap();
            if old_size > 0 {
                prop_assert_eq!(&proof, &naive_subproof(idx(old_size), &leaves, true));
            }
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &proof).is_ok());

            if proof.is_empty() {
                // Nothing to flip in the proof (m == n or m == 0): a changed root must fail
                // when it is checked at all (equal sizes).
                if old_size == new_size {
                    let mut bad = new_root;
                    bad[byte] ^= mask;
                    prop_assert!(verify_consistency(old_size, new_size, &old_root, &bad, &proof).is_err());
                }
            } else {
                let mut bad = proof.clone();
                bad[which % proof.len()][byte] ^= mask;
                prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &bad).is_err());
                let mut bad_old = old_root;
                bad_old[byte] ^= mask;
                prop_assert!(verify_consistency(old_size, new_size, &bad_old, &new_root, &proof).is_err());
                let mut bad_new = new_root;
                bad_new[byte] ^= mask;
                prop_assert!(verify_consistency(old_size, new_size, &old_root, &bad_new, &proof).is_err());
            }
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_up_to_64_leaves() {
        // Exhaustive over small trees, where all the boundary shapes live.
        let leaves = test_leaves(64);
        for n in 1..=64u64 {
            let d = &leaves[..idx(n)];
            let root = root_from_leaf_hashes(d);
            for i in 0..n {
                let proof = inclusion_proof(i, n, d).unwrap();
                assert_eq!(proof, naive_path(idx(i), d));
                verify_inclusion(&d[idx(i)], i, n, &proof, &root).unwrap();
            }
            for m in 0..=n {
                let proof = consistency_proof(m, n, d).unwrap();
                let old_root = root_from_leaf_hashes(&d[..idx(m)]);
                verify_consistency(m, n, &old_root, &root, &proof).unwrap();
            }
        }
    }

    #[test]
    fn every_proof_range_is_a_fold_of_aligned_subtrees() {
        let leaves: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let node = |id: NodeId| -> Hash {
            let r = id.leaves();
            root_from_leaf_hashes(&leaves[idx(r.start)..idx(r.end)])
        };
        let check = |range: Range<u64>| {
            let ids = aligned_subtrees(range.clone())
                .unwrap_or_else(|| panic!("{range:?} is not aligned"));
            assert_eq!(
                ids.iter()
                    .map(|id| id.leaves().end - id.leaves().start)
                    .sum::<u64>(),
                range.end - range.start
            );
            let hashes: Vec<Hash> = ids.into_iter().map(node).collect();
            assert_eq!(
                fold_subtrees(&hashes),
                root_from_leaf_hashes(&leaves[idx(range.start)..idx(range.end)]),
                "{range:?}"
            );
        };
        for size in (1..=70u64).chain([255, 256, 257, 300]) {
            let step = if size > 70 { 17 } else { 1 };
            for index in (0..size).step_by(step) {
                inclusion_proof_indexes(index, size)
                    .unwrap()
                    .into_iter()
                    .for_each(check);
            }
            for old in (1..=size).step_by(step) {
                consistency_proof_indexes(old, size)
                    .unwrap()
                    .into_iter()
                    .for_each(check);
            }
        }
        assert_eq!(aligned_subtrees(3..5), None, "starts off the 2-leaf grid");
        assert_eq!(aligned_subtrees(4..4), None);
        assert_eq!(
            aligned_subtrees(8..15),
            Some(vec![
                NodeId {
                    height: 2,
                    index: 2
                },
                NodeId {
                    height: 1,
                    index: 6
                },
                NodeId {
                    height: 0,
                    index: 14
                },
            ])
        );
    }
}

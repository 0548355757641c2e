//! The RFC 6962 Merkle tree: an append-only log of leaf hashes with roots,
//! inclusion proofs and consistency proofs for any earlier size, and the
//! verification of both proofs (the algorithms of RFC 9162 §2.1.3.2 and
//! §2.1.4.2, which compute the same trees as RFC 6962 §2.1).

use crate::error::{ProofError, RecordError};
use crate::hash::{Hash, empty_root, leaf_hash, node_hash};
use crate::record::{Event, Record, Timestamp};

/// Complete subtrees of `2^CACHE_LEVEL` leaves and larger are cached, so a
/// root or proof costs O(log n) lookups plus at most `2^CACHE_LEVEL` hashes,
/// while the cache adds only `32 / 2^(CACHE_LEVEL-1)` bytes per leaf.
const CACHE_LEVEL: u32 = 8;

/// An append-only Merkle log over leaf hashes (RFC 6962 §2.1).
///
/// It keeps every leaf hash (32 bytes per record) plus the hashes of
/// complete subtrees of 256 leaves and more (about 0.25 bytes per record),
/// so it can compute the root of any earlier size, and inclusion and
/// consistency proofs against it, without re-hashing the whole log.
#[derive(Debug, Clone, Default)]
pub struct MerkleLog {
    leaves: Vec<Hash>,
    /// `cache[k][i]` is the hash of leaves `[i * 2^L, (i + 1) * 2^L)` with
    /// `L = CACHE_LEVEL + k`.
    cache: Vec<Vec<Hash>>,
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a log from stored leaf hashes, in order.
    pub fn from_leaf_hashes(hashes: impl IntoIterator<Item = Hash>) -> Self {
        let mut log = Self::new();
        for h in hashes {
            log.push_leaf_hash(h);
        }
        log
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// Appends raw leaf bytes (for audit records: the canonical JSON line);
    /// returns the leaf's index.
    pub fn push_leaf(&mut self, leaf: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(leaf))
    }

    /// Appends a leaf by its hash; returns the leaf's index.
    pub fn push_leaf_hash(&mut self, hash: Hash) -> u64 {
        let index = self.size();
        self.leaves.push(hash);
        let n = self.leaves.len();
        let mut level = CACHE_LEVEL;
        while level < usize::BITS && n.is_multiple_of(1usize << level) {
            let i = n / (1usize << level) - 1;
            let h = if level == CACHE_LEVEL {
                self.subtree(level, i)
            } else {
                let below = &self.cache[(level - 1 - CACHE_LEVEL) as usize];
                node_hash(&below[2 * i], &below[2 * i + 1])
            };
            let k = (level - CACHE_LEVEL) as usize;
            if self.cache.len() <= k {
                self.cache.push(Vec::new());
            }
            self.cache[k].push(h);
            level += 1;
        }
        index
    }

    /// The record that comes next: sequence number `size + 1`, linked to
    /// the hash of the last leaf (or [`Hash::ZERO`] for the first record).
    /// Append its [`Record::to_line`] with [`MerkleLog::append_record`].
    pub fn seal(&self, time: Timestamp, event: Event) -> Record {
        Record::from_parts(self.size() + 1, self.last_leaf_hash(), time, event)
    }

    /// Appends `record` after checking that it is the next one (its
    /// sequence number is `size + 1` and its `prev` link is the hash of the
    /// last leaf). Returns the record's leaf hash.
    pub fn append_record(&mut self, record: &Record) -> Result<Hash, RecordError> {
        let expected = self.size() + 1;
        if record.seq() != expected {
            return Err(RecordError::OutOfSequence {
                expected,
                found: record.seq(),
            });
        }
        if record.prev() != self.last_leaf_hash() {
            return Err(RecordError::BrokenLink { seq: record.seq() });
        }
        let h = leaf_hash(&record.to_line());
        self.push_leaf_hash(h);
        Ok(h)
    }

    /// Drops every leaf after the first `size` (nothing if the log is not
    /// longer): the tree of the first `size` leaves, as if the rest had
    /// never been pushed.
    pub fn truncate(&mut self, size: u64) {
        let Ok(n) = usize::try_from(size) else {
            return;
        };
        if n >= self.leaves.len() {
            return;
        }
        self.leaves.truncate(n);
        for (k, level) in self.cache.iter_mut().enumerate() {
            level.truncate(n >> (CACHE_LEVEL as usize + k));
        }
        while self.cache.last().is_some_and(Vec::is_empty) {
            self.cache.pop();
        }
    }

    /// The hash of leaf `index`, if it exists.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.leaves.get(usize::try_from(index).ok()?).copied()
    }

    /// The hash of the last leaf, or [`Hash::ZERO`] for an empty log.
    pub fn last_leaf_hash(&self) -> Hash {
        self.leaves.last().copied().unwrap_or(Hash::ZERO)
    }

    /// The root of the tree of the first `size` leaves (RFC 6962 MTH).
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        let size = self.check_size(size)?;
        Ok(self.mth(0, size))
    }

    /// The root of the whole log.
    pub fn current_root(&self) -> Hash {
        self.mth(0, self.leaves.len())
    }

    /// The audit path for leaf `index` in the tree of size `size`
    /// (RFC 6962 §2.1.1), from the leaf up.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        let n = self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.path(index as usize, 0, n, &mut out);
        Ok(out)
    }

    /// The consistency proof between the trees of `old_size` and
    /// `new_size` leaves (RFC 6962 §2.1.2). Empty when `old_size` is 0 or
    /// equal to `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, ProofError> {
        let n = self.check_size(new_size)?;
        if old_size > new_size {
            return Err(ProofError::SizesOutOfOrder { old_size, new_size });
        }
        let mut out = Vec::new();
        if old_size > 0 && old_size < new_size {
            self.subproof(old_size as usize, 0, n, true, &mut out);
        }
        Ok(out)
    }

    /// The compact form of the tree of the first `size` leaves: the roots of
    /// its maximal complete subtrees, left to right (one per set bit of
    /// `size`). A bundle that starts after record `size` carries it, so a
    /// verifier can go on hashing from there.
    pub fn frontier(&self, size: u64) -> Result<Vec<Hash>, ProofError> {
        let n = self.check_size(size)?;
        let mut out = Vec::new();
        let mut start = 0;
        for bit in (0..usize::BITS).rev() {
            let width = 1usize << bit;
            if n & width != 0 {
                out.push(self.mth(start, start + width));
                start += width;
            }
        }
        Ok(out)
    }

    fn check_size(&self, size: u64) -> Result<usize, ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeBeyondLog {
                size,
                log_size: self.size(),
            });
        }
        Ok(size as usize)
    }

    /// Hash of the complete subtree of `2^level` leaves starting at leaf
    /// `index * 2^level`; the subtree must be complete.
    fn subtree(&self, level: u32, index: usize) -> Hash {
        if level == 0 {
            return self.leaves[index];
        }
        if level >= CACHE_LEVEL
            && let Some(h) = self
                .cache
                .get((level - CACHE_LEVEL) as usize)
                .and_then(|l| l.get(index))
        {
            return *h;
        }
        node_hash(
            &self.subtree(level - 1, 2 * index),
            &self.subtree(level - 1, 2 * index + 1),
        )
    }

    /// MTH of leaves `[start, end)`. Every range the RFC 6962 recursions
    /// reach is aligned: `start` is a multiple of the largest power of two
    /// not above `end - start`.
    fn mth(&self, start: usize, end: usize) -> Hash {
        let n = end - start;
        match n {
            0 => empty_root(),
            1 => self.leaves[start],
            _ if n.is_power_of_two() && start.is_multiple_of(n) => {
                self.subtree(n.trailing_zeros(), start / n)
            }
            _ => {
                let k = split(n);
                node_hash(&self.mth(start, start + k), &self.mth(start + k, end))
            }
        }
    }

    /// PATH(m, D[start:end]) of RFC 6962 §2.1.1.
    fn path(&self, m: usize, start: usize, end: usize, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.mth(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.mth(start, start + k));
        }
    }

    /// SUBPROOF(m, D[start:end], b) of RFC 6962 §2.1.2.
    fn subproof(&self, m: usize, start: usize, end: usize, complete: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.mth(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.mth(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.mth(start, start + k));
        }
    }
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split(n: usize) -> usize {
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves
/// whose root is `root`, given the audit path `proof` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `new_size` leaves with root `new_root` extends
/// the tree of `old_size` leaves with root `old_root`, given the
/// consistency proof `proof` (RFC 9162 §2.1.4.2).
///
/// Every tree extends the empty tree, with an empty proof; equal sizes need
/// equal roots and an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old_size == new_size && old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // 0 < old_size < new_size from here on.
    let (first, rest) = match proof.split_first() {
        Some(split) => split,
        None => return Err(ProofError::WrongLength),
    };
    // If old_size is a power of two, the old root is the first node of the
    // path and the proof does not repeat it.
    let (seed, path) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = *seed;
    let mut s_r = *seed;
    for c in path {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if f_r != *old_root || s_r != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A tree kept only as its frontier (the roots of its maximal complete
/// subtrees, a compact range): O(log n) memory, enough to append leaves
/// and compute the current root, but not older roots or proofs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// A frontier taken from [`MerkleLog::frontier`]; `None` if the number
    /// of hashes is not the number of set bits of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<Self> {
        (hashes.len() == size.count_ones() as usize).then_some(Self { size, hashes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, left to right (one per set bit of the size).
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf by its hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            // The frontier has one hash per set bit of `size`.
            let Some(left) = self.hashes.pop() else { break };
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// The root of the tree of every leaf pushed (RFC 6962 MTH).
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |r, left| node_hash(left, &r)),
        }
    }
}

#[cfg(test)]
mod tests;

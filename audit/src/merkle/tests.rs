//! Merkle tree tests: the RFC 6962 vectors used by Certificate Transparency
//! implementations (transparency-dev/merkle, formerly trillian), a naive
//! reference implementation, and property tests.

use proptest::prelude::*;

use super::*;

fn h(text: &str) -> Hash {
    text.parse().unwrap()
}

/// The eight leaf inputs of the RFC 6962 test data.
fn vector_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap())
    .collect()
}

/// Roots of the trees of sizes 1 to 8 over [`vector_leaves`].
const VECTOR_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, audit path) from the same test data.
fn vector_inclusion() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// (old size, new size, consistency proof) from the same test data.
fn vector_consistency() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

fn vector_log() -> MerkleLog {
    let mut log = MerkleLog::new();
    for leaf in vector_leaves() {
        log.push_leaf(&leaf);
    }
    log
}

/// MTH straight from RFC 6962 §2.1, over leaf hashes.
fn reference_mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&reference_mth(&leaves[..k]), &reference_mth(&leaves[k..]))
        }
    }
}

fn numbered_log(n: u64) -> MerkleLog {
    MerkleLog::from_leaf_hashes((0..n).map(|i| leaf_hash(&i.to_be_bytes())))
}

fn flip(h: &Hash) -> Hash {
    let mut b = h.0;
    b[0] ^= 0x08;
    Hash(b)
}

#[test]
fn rfc6962_vector_roots() {
    let log = vector_log();
    assert_eq!(log.root(0).unwrap(), empty_root());
    for (size, want) in (1..=8).zip(VECTOR_ROOTS) {
        assert_eq!(log.root(size).unwrap(), h(want), "root of size {size}");
    }
    assert_eq!(log.current_root(), h(VECTOR_ROOTS[7]));
}

#[test]
fn rfc6962_vector_inclusion_proofs() {
    let log = vector_log();
    let leaves = vector_leaves();
    for (index, size, want) in vector_inclusion() {
        let proof = log.inclusion_proof(index, size).unwrap();
        assert_eq!(proof, want, "proof for leaf {index} in size {size}");
        let leaf = leaf_hash(&leaves[index as usize]);
        let root = h(VECTOR_ROOTS[size as usize - 1]);
        verify_inclusion(&leaf, index, size, &proof, &root).unwrap();

        // The corruptions transparency-dev/merkle probes: each must fail.
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (index.wrapping_sub(1), size, leaf, root, proof.clone()),
            (index + 1, size, leaf, root, proof.clone()),
            (index ^ 2, size, leaf, root, proof.clone()),
            (index, size * 2, leaf, root, proof.clone()),
            (index, size / 2, leaf, root, proof.clone()),
            (index, size, leaf_hash(b"WrongLeaf"), root, proof.clone()),
            (index, size, leaf, empty_root(), proof.clone()),
            (index, size, leaf, flip(&root), proof.clone()),
            (
                index,
                size,
                leaf,
                root,
                [proof.clone(), vec![root]].concat(),
            ),
            (
                index,
                size,
                leaf,
                root,
                [vec![root], proof.clone()].concat(),
            ),
        ];
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i] = flip(&p[i]);
            probes.push((index, size, leaf, root, p));
        }
        if !proof.is_empty() {
            probes.push((index, size, leaf, root, proof[..proof.len() - 1].to_vec()));
        }
        for (n, (i, s, l, r, p)) in probes.into_iter().enumerate() {
            assert!(
                verify_inclusion(&l, i, s, &p, &r).is_err(),
                "probe {n} for leaf {index} size {size} verified"
            );
        }
    }
}

#[test]
fn rfc6962_vector_consistency_proofs() {
    let log = vector_log();
    for (old, new, want) in vector_consistency() {
        let proof = log.consistency_proof(old, new).unwrap();
        assert_eq!(proof, want, "proof {old} -> {new}");
        let r1 = h(VECTOR_ROOTS[old as usize - 1]);
        let r2 = h(VECTOR_ROOTS[new as usize - 1]);
        verify_consistency(old, new, &r1, &r2, &proof).unwrap();
        if proof.is_empty() {
            continue;
        }
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (old - 1, new, r1, r2, proof.clone()),
            (old + 1, new, r1, r2, proof.clone()),
            (old ^ 2, new, r1, r2, proof.clone()),
            (old, new * 2, r1, r2, proof.clone()),
            (old, new / 2, r1, r2, proof.clone()),
            (old, new, leaf_hash(b"WrongRoot"), r2, proof.clone()),
            (old, new, r1, leaf_hash(b"WrongRoot"), proof.clone()),
            (old, new, r2, r1, proof.clone()),
            (old, new, r1, r2, vec![]),
            (old, new, r1, r2, [proof.clone(), vec![r1]].concat()),
            (old, new, r1, r2, [proof.clone(), vec![r2]].concat()),
            (old, new, r1, r2, [vec![r1], proof.clone()].concat()),
            (old, new, r1, r2, [vec![r2], proof.clone()].concat()),
            (old, new, r1, r2, [vec![proof[0]], proof.clone()].concat()),
            (old, new, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i] = flip(&p[i]);
            probes.push((old, new, r1, r2, p));
        }
        for (n, (o, s, a, b, p)) in probes.into_iter().enumerate() {
            assert!(
                verify_consistency(o, s, &a, &b, &p).is_err(),
                "probe {n} for {old} -> {new} verified"
            );
        }
    }
}

#[test]
fn trivial_consistency_cases() {
    let a = leaf_hash(b"a");
    let b = leaf_hash(b"b");
    verify_consistency(0, 0, &a, &a, &[]).unwrap();
    verify_consistency(0, 5, &a, &b, &[]).unwrap();
    verify_consistency(3, 3, &b, &b, &[]).unwrap();
    assert!(verify_consistency(3, 3, &a, &b, &[]).is_err());
    assert!(verify_consistency(0, 5, &a, &b, &[a]).is_err());
    assert!(verify_consistency(3, 3, &a, &a, &[a]).is_err());
    assert!(verify_consistency(4, 3, &a, &b, &[]).is_err());
    assert!(verify_consistency(1, 2, &a, &b, &[]).is_err());
    assert!(verify_inclusion(&a, 0, 0, &[], &a).is_err());
    verify_inclusion(&a, 0, 1, &[], &a).unwrap();
    assert!(verify_inclusion(&a, 0, 1, &[], &b).is_err());
}

#[test]
fn misuse_is_reported() {
    let log = numbered_log(5);
    assert!(matches!(
        log.root(6),
        Err(ProofError::SizeBeyondLog { size: 6, .. })
    ));
    assert!(matches!(
        log.inclusion_proof(5, 5),
        Err(ProofError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        log.consistency_proof(4, 3),
        Err(ProofError::SizesOutOfOrder { .. })
    ));
    assert_eq!(log.leaf_hash(5), None);
}

#[test]
fn cached_subtrees_match_the_reference_across_levels() {
    // 2^CACHE_LEVEL * 4 + a bit: roots cross cached and uncached subtrees.
    let n = 1100;
    let log = numbered_log(n);
    let leaves: Vec<Hash> = (0..n).map(|i| log.leaf_hash(i).unwrap()).collect();
    for size in [
        1, 2, 255, 256, 257, 511, 512, 513, 767, 768, 1024, 1025, 1099, 1100,
    ] {
        assert_eq!(
            log.root(size).unwrap(),
            reference_mth(&leaves[..size as usize]),
            "size {size}"
        );
    }
}

#[test]
fn frontier_matches_log() {
    let log = numbered_log(700);
    let mut f = Frontier::default();
    for i in 0..700 {
        assert_eq!(f.root(), log.root(i).unwrap());
        let from_log = Frontier::from_parts(i, log.frontier(i).unwrap()).unwrap();
        assert_eq!(from_log.root(), f.root(), "size {i}");
        f.push(log.leaf_hash(i).unwrap());
    }
    assert!(Frontier::from_parts(3, vec![]).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn roots_match_reference(n in 0u64..600) {
        let log = numbered_log(n);
        let leaves: Vec<Hash> = (0..n).map(|i| log.leaf_hash(i).unwrap()).collect();
        prop_assert_eq!(log.current_root(), reference_mth(&leaves));
    }

    #[test]
    fn inclusion_proofs_verify_and_tampering_fails(
        size in 1u64..700,
        index_seed in any::<u64>(),
        pick in any::<u64>(),
    ) {
        let log = numbered_log(size + 5);
        let index = index_seed % size;
        let root = log.root(size).unwrap();
        let leaf = log.leaf_hash(index).unwrap();
        let proof = log.inclusion_proof(index, size).unwrap();
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_ok());
        // A changed leaf, index, root or proof element fails.
        prop_assert!(verify_inclusion(&flip(&leaf), index, size, &proof, &root).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root)).is_err());
        let other = (index + 1 + pick % size.max(2)) % size;
        if other != index {
            prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
        }
        if !proof.is_empty() {
            let mut p = proof.clone();
            let i = (pick as usize) % p.len();
            p[i] = flip(&p[i]);
            prop_assert!(verify_inclusion(&leaf, index, size, &p, &root).is_err());
        }
        prop_assert!(verify_inclusion(&leaf, index, size + 1, &proof, &log.root(size + 1).unwrap()).is_err()
            || log.inclusion_proof(index, size + 1).unwrap() == proof);
    }

    #[test]
    fn consistency_proofs_verify_and_wrong_roots_fail(
        a in 0u64..700,
        b in 0u64..700,
        pick in any::<u64>(),
    ) {
        let (old, new) = if a <= b { (a, b) } else { (b, a) };
        let log = numbered_log(new + 3);
        let r1 = log.root(old).unwrap();
        let r2 = log.root(new).unwrap();
        let proof = log.consistency_proof(old, new).unwrap();
        prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_ok());
        if old > 0 {
            prop_assert!(verify_consistency(old, new, &flip(&r1), &r2, &proof).is_err());
            prop_assert!(verify_consistency(old, new, &r1, &flip(&r2), &proof).is_err());
        }
        if !proof.is_empty() {
            let mut p = proof.clone();
            let i = (pick as usize) % p.len();
            p[i] = flip(&p[i]);
            prop_assert!(verify_consistency(old, new, &r1, &r2, &p).is_err());
            // The proof does not carry over to another new size.
            let r3 = log.root(new + 1).unwrap();
            prop_assert!(verify_consistency(old, new + 1, &r1, &r3, &proof).is_err()
                || log.consistency_proof(old, new + 1).unwrap() == proof);
        }
    }
}

#[test]
fn truncate_gives_the_tree_of_the_prefix() {
    for n in [0u64, 1, 255, 256, 257, 700, 1024, 1500] {
        let mut log = MerkleLog::new();
        for i in 0..1500u64 {
            log.push_leaf(&i.to_be_bytes());
        }
        log.truncate(n);
        let mut fresh = MerkleLog::new();
        for i in 0..n {
            fresh.push_leaf(&i.to_be_bytes());
        }
        assert_eq!(log.size(), n);
        assert_eq!(log.current_root(), fresh.current_root(), "size {n}");
        // Pushing again gives the same tree as never having truncated.
        for i in n..(n + 300) {
            log.push_leaf(&i.to_be_bytes());
            fresh.push_leaf(&i.to_be_bytes());
        }
        assert_eq!(log.current_root(), fresh.current_root(), "size {n} + 300");
        assert_eq!(log.frontier(n).unwrap(), fresh.frontier(n).unwrap());
    }
}

#[test]
fn a_frontier_follows_the_log() {
    let mut log = MerkleLog::new();
    let mut f = Frontier::default();
    for i in 0..600u64 {
        assert_eq!(f.root(), log.current_root());
        log.push_leaf(&i.to_be_bytes());
        f.push(crate::hash::leaf_hash(&i.to_be_bytes()));
        assert_eq!(f.hashes(), log.frontier(i + 1).unwrap().as_slice());
    }
}

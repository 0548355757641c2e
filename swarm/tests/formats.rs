//! The on-disk formats read from real Docker 20.10.24 state directories.
//!
//! The fixtures under `tests/fixtures/` are copies of a throw-away swarm's
//! manager state directory (the swarm was left; its keys protect nothing):
//!
//! * `autolock`: autolock on, no snapshot; its WAL was cut at a record
//!   boundary after index 116 to keep the fixtures small.
//! * `rotated`: after `docker swarm unlock-key --rotate` with
//!   `--snapshot-interval 5`: a snapshot at index 0x326.
//! * `unlocked`: autolock turned off: plain `PRIVATE KEY`, raft-dek NONE,
//!   a snapshot at index 0x32b.
//!
//! Each has its `unlock-key` file beside `certificates/` (for `unlocked`,
//! the last key before autolock was turned off). WAL segments are cut just
//! past their last record (no 64 MB zero tail) and `*.tmp` spares dropped.
//! Tests that damage a directory work on a copy in a temporary directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use moat_swarm::dir::StateDir;
use moat_swarm::error::{NoticeKind, SwarmError};
use moat_swarm::key::{KeyProtection, UnlockKey};
use moat_swarm::raftlog::{EntryKind, read_log, verify};
use moat_swarm::record::RecordAlgorithm;
use moat_swarm::snap::parse_snapshot;
use moat_swarm::wal::{SegmentEnd, parse_segment};

const SEGMENT: &str = "raft/wal-v3-encrypted/0000000000000000-0000000000000000.wal";
const ROTATED_SNAP: &str = "raft/snap-v3-encrypted/0000000000000002-0000000000000326.snap";
const UNLOCKED_SNAP: &str = "raft/snap-v3-encrypted/0000000000000002-000000000000032b.snap";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn key_of(name: &str) -> UnlockKey {
    fs::read_to_string(fixture(name).join("unlock-key"))
        .expect("key file")
        .parse()
        .expect("the fixture key parses")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

/// A copy of a fixture in a temporary directory.
fn copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join("swarm");
    copy_dir(&fixture(name), &dst);
    (tmp, dst)
}

// --- a small WAL writer for the tests (etcd's framing and CRC chain) ---

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let c = b[*pos];
        *pos += 1;
        v |= u64::from(c & 0x7f) << shift;
        shift += 7;
        if c < 0x80 {
            return v;
        }
    }
}

/// The (type, data) of every record in a segment, and the offset of each frame.
fn records(seg: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + 8 <= seg.len() {
        let lf = u64::from_le_bytes(seg[off..off + 8].try_into().expect("8"));
        if lf == 0 {
            break;
        }
        let n = (lf & 0x00FF_FFFF_FFFF_FFFF) as usize;
        let pad = if lf >> 63 == 1 {
            ((lf >> 56) & 7) as usize
        } else {
            0
        };
        let rec = &seg[off + 8..off + 8 + n];
        let mut p = 0;
        let (mut t, mut data) = (0u8, Vec::new());
        while p < rec.len() {
            let key = read_varint(rec, &mut p);
            match key {
                0x08 => t = u8::try_from(read_varint(rec, &mut p)).expect("type"),
                0x10 => {
                    read_varint(rec, &mut p);
                }
                0x1a => {
                    let l = usize::try_from(read_varint(rec, &mut p)).expect("len");
                    data = rec[p..p + l].to_vec();
                    p += l;
                }
                _ => panic!("unexpected field"),
            }
        }
        out.push((off as u64, t, data));
        off += 8 + n + pad;
    }
    out
}

/// Writes records with a fresh CRC chain starting at `crc`.
fn write_segment(recs: &[(u8, Vec<u8>)], mut crc: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, data) in recs {
        if *t != 4 {
            crc = crc32c::crc32c_append(crc, data);
        }
        let mut rec = vec![0x08, *t, 0x10];
        varint(u64::from(crc), &mut rec);
        if *t != 4 || !data.is_empty() {
            rec.push(0x1a);
            varint(data.len() as u64, &mut rec);
            rec.extend_from_slice(data);
        }
        let pad = (8 - rec.len() % 8) % 8;
        let mut lf = rec.len() as u64;
        if pad != 0 {
            lf |= (0x80 | pad as u64) << 56;
        }
        out.extend_from_slice(&lf.to_le_bytes());
        out.extend_from_slice(&rec);
        out.resize(out.len() + pad, 0);
    }
    out
}

fn strip(recs: Vec<(u64, u8, Vec<u8>)>) -> Vec<(u8, Vec<u8>)> {
    recs.into_iter().map(|(_, t, d)| (t, d)).collect()
}

/// The raft index of an entry record's data (raftpb.Entry field 3).
fn entry_index(data: &[u8]) -> u64 {
    let mut p = 0;
    while p < data.len() {
        let key = read_varint(data, &mut p);
        match key & 7 {
            0 => {
                let v = read_varint(data, &mut p);
                if key >> 3 == 3 {
                    return v;
                }
            }
            2 => {
                let l = usize::try_from(read_varint(data, &mut p)).expect("len");
                p += l;
            }
            _ => panic!("unexpected wire type"),
        }
    }
    panic!("no index")
}

// --- keys ---

#[test]
fn autolock_key_file_facts_need_no_key() {
    let dir = StateDir::open(fixture("autolock")).expect("opens");
    let key = dir.node_key().expect("parses");
    assert_eq!(key.pem_tag(), "ENCRYPTED PRIVATE KEY");
    assert_eq!(key.kek_version(), Some(0));
    assert_eq!(
        key.protection(),
        &KeyProtection::Pkcs8Pbes2 {
            kdf: "PBKDF2-HMAC-SHA1".into(),
            iterations: 2048,
            cipher: "AES-256-CBC".into()
        }
    );
    assert_eq!(
        key.raft_dek_algorithm(),
        Some(RecordAlgorithm::SecretboxSalsa20Poly1305)
    );
    assert!(!key.dek_readable_without_key());
    assert!(!key.needs_rotation());

    // Locked without a key, and the message says what to pass.
    let e = dir.open_keys(None).expect_err("locked");
    assert!(matches!(e, SwarmError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("--unlock-key-file"), "{e}");
}

#[test]
fn each_fixture_opens_with_its_key_and_the_tls_key_matches_the_cert() {
    for name in ["autolock", "rotated"] {
        let dir = StateDir::open(fixture(name)).expect("opens");
        let opened = dir.open_keys(Some(&key_of(name))).expect("the key opens");
        assert_eq!(opened.tls_key_matches_cert, Some(true), "{name}");
        assert!(opened.keys.current.is_some());
        assert!(opened.keys.pending.is_none());
        assert_eq!(
            opened.keys.current_alg,
            Some(RecordAlgorithm::SecretboxSalsa20Poly1305)
        );
        assert!(opened.notices.is_empty(), "{name}: {:?}", opened.notices);
    }
    let rotated = StateDir::open(fixture("rotated")).expect("opens");
    assert_eq!(rotated.node_key().expect("parses").kek_version(), Some(765));
}

#[test]
fn the_old_key_after_rotation_is_the_wrong_key() {
    let dir = StateDir::open(fixture("rotated")).expect("opens");
    let e = dir
        .open_keys(Some(&key_of("autolock")))
        .expect_err("wrong key");
    match &e {
        SwarmError::WrongUnlockKey { check } => assert!(check.contains("raft-dek"), "{check}"),
        other => panic!("expected WrongUnlockKey, got {other}"),
    }
}

#[test]
fn a_mistyped_key_is_a_format_error_that_does_not_echo_it() {
    let good = fs::read_to_string(fixture("autolock").join("unlock-key")).expect("key");
    let good = good.trim();
    let dropped = &good[..good.len() - 1];
    let swapped = good.replacen("SWMKEY-1-", "SWMKEY-l-", 1);
    let spaced = format!("{} {}", &good[..20], &good[20..]);
    for bad in [dropped, swapped.as_str(), spaced.as_str()] {
        let e = bad.parse::<UnlockKey>().expect_err("refused");
        assert!(matches!(e, SwarmError::UnlockKeyFormat { .. }), "{e}");
        assert!(!e.to_string().contains(&good[12..30]), "{e}");
        assert!(!format!("{e:?}").contains(&good[12..30]));
    }
    assert_eq!(format!("{:?}", key_of("autolock")), "UnlockKey(…)");
}

#[test]
fn unlocked_fixture_reads_without_a_key() {
    let dir = StateDir::open(fixture("unlocked")).expect("opens");
    let key = dir.node_key().expect("parses");
    assert_eq!(key.pem_tag(), "PRIVATE KEY");
    assert_eq!(key.protection(), &KeyProtection::Plain);
    assert_eq!(key.kek_version(), Some(810));
    assert!(key.dek_readable_without_key());
    let opened = dir.open_keys(None).expect("no key needed");
    assert_eq!(opened.tls_key_matches_cert, Some(true));
    assert_eq!(opened.keys.current_alg, Some(RecordAlgorithm::None));

    // A key given anyway is reported as not needed, not used.
    let with = dir
        .open_keys(Some(&key_of("unlocked")))
        .expect("still opens");
    assert!(
        with.notices
            .iter()
            .any(|n| n.kind == NoticeKind::KeyNotNeeded)
    );

    // The DEK is the same as under autolock: the rotated fixture's data opens with it.
    let log = read_log(&dir, Some(&opened.keys)).expect("reads");
    let snap = log.snapshot.as_ref().expect("snapshot");
    assert_eq!(snap.index, 0x32b);
    assert!(snap.plaintext.is_some());
}

// --- the raft log ---

#[test]
fn autolock_log_decrypts_every_entry() {
    let dir = StateDir::open(fixture("autolock")).expect("opens");
    let keys = dir
        .open_keys(Some(&key_of("autolock")))
        .expect("opens")
        .keys;
    let log = read_log(&dir, Some(&keys)).expect("reads");
    assert!(log.snapshot.is_none());
    assert_eq!(log.entries.len(), 116);
    assert_eq!(log.hard_state.commit, 116);
    assert_eq!(log.hard_state.term, 2);
    let indexes: Vec<u64> = log.entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..=116).collect::<Vec<_>>());
    assert_eq!(log.entries[0].kind, EntryKind::ConfChange);
    // Index 2 is the new leader's empty no-op, encrypted too.
    assert_eq!(log.entries[1].plaintext.as_ref().map(|p| p.len()), Some(0));
    assert!(
        log.entries
            .iter()
            .all(|e| e.plaintext.is_some() && e.committed && !e.before_snapshot)
    );
    assert!(
        log.entries
            .iter()
            .all(|e| e.algorithm == RecordAlgorithm::SecretboxSalsa20Poly1305)
    );
    assert_eq!(
        log.algorithms_seen.iter().copied().collect::<Vec<_>>(),
        vec![RecordAlgorithm::SecretboxSalsa20Poly1305]
    );
    assert_eq!(log.members.len(), 1);
    assert_eq!(log.members[0].addr, "127.0.0.1:2377");
    assert!(
        !log.notices
            .iter()
            .any(|n| n.kind == NoticeKind::Uncommitted)
    );

    // Without keys: the same entries, nothing decrypted.
    let bare = read_log(&dir, None).expect("reads without keys");
    assert_eq!(bare.entries.len(), 116);
    assert!(bare.entries.iter().all(|e| e.plaintext.is_none()));
}

#[test]
fn rotated_snapshot_and_the_entries_after_it_decrypt() {
    let dir = StateDir::open(fixture("rotated")).expect("opens");
    let keys = dir.open_keys(Some(&key_of("rotated"))).expect("opens").keys;
    let log = read_log(&dir, Some(&keys)).expect("reads");
    let snap = log.snapshot.as_ref().expect("a snapshot");
    assert_eq!(snap.file, ROTATED_SNAP);
    assert_eq!((snap.index, snap.term), (0x326, 2));
    assert_eq!(snap.conf_nodes.len(), 1);
    assert_eq!(snap.algorithm, RecordAlgorithm::SecretboxSalsa20Poly1305);
    let plain = snap.plaintext.as_ref().expect("decrypted");
    // api.Snapshot starts with its membership (field 2) or version (field 1).
    assert!(matches!(plain.first(), Some(0x08 | 0x12)));
    let after: Vec<_> = log.entries.iter().filter(|e| e.index > 0x326).collect();
    assert_eq!(
        after.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![807, 808, 809, 810]
    );
    assert!(
        after
            .iter()
            .all(|e| e.plaintext.is_some() && !e.before_snapshot)
    );
    assert!(
        log.entries
            .iter()
            .filter(|e| e.index <= 0x326)
            .all(|e| e.before_snapshot && e.plaintext.is_none())
    );
    assert!(
        !log.notices
            .iter()
            .any(|n| n.kind == NoticeKind::SnapshotMismatch),
        "{:?}",
        log.notices
    );
}

#[test]
fn verify_passes_on_every_fixture_with_sensible_counts() {
    for (name, entries, snapshots, snap_index, wal_bytes) in [
        ("autolock", 116, 0, 0, 65_856),
        ("rotated", 810, 1, 0x326, 467_576),
        ("unlocked", 811, 1, 0x32b, 469_144),
    ] {
        let dir = StateDir::open(fixture(name)).expect("opens");
        let keys = dir.open_keys(Some(&key_of(name))).expect("opens").keys;
        let r = verify(&dir, Some(&keys)).expect("verifies");
        assert_eq!(r.segments, 1, "{name}");
        assert_eq!(r.entries, entries, "{name}");
        assert_eq!(
            r.entries_authenticated, entries,
            "{name}: same DEK throughout"
        );
        assert_eq!(r.entries_retired_key, 0, "{name}");
        assert_eq!(r.snapshots_checked, snapshots, "{name}");
        assert_eq!(r.snapshot_index, snap_index, "{name}");
        assert_eq!(r.snapshot_authenticated, snapshots == 1, "{name}");
        assert_eq!(r.wal_bytes, wal_bytes, "{name}");
        assert!(
            r.records > entries * 2,
            "{name}: entries, states, metadata, crc"
        );
        assert_eq!(r.uncommitted, 0, "{name}");
        serde_json::to_string(&r).expect("serializes");
    }
    // Without a key on a locked node: CRCs checked, nothing authenticated.
    let dir = StateDir::open(fixture("autolock")).expect("opens");
    let r = verify(&dir, None).expect("verifies");
    assert_eq!(r.entries_not_authenticated, 116);
    assert_eq!(r.entries_authenticated, 0);
}

// --- damage ---

#[test]
fn a_flipped_wal_byte_is_a_crc_error_naming_file_and_offset() {
    let (_tmp, root) = copy_of("autolock");
    let path = root.join(SEGMENT);
    let mut seg = fs::read(&path).expect("read");
    // The frame at 392 is index 3 (a 1719-byte entry); flip a byte inside its data.
    seg[392 + 8 + 200] ^= 0x01;
    fs::write(&path, &seg).expect("write");
    let dir = StateDir::open(&root).expect("opens");
    for result in [
        read_log(&dir, None).map(|_| ()),
        verify(&dir, None).map(|_| ()),
    ] {
        let e = result.expect_err("corrupt");
        match &e {
            SwarmError::Crc {
                file,
                offset,
                expected,
                found,
            } => {
                assert_eq!(file, SEGMENT);
                assert_eq!(*offset, 392);
                assert_ne!(expected, found);
            }
            other => panic!("expected a CRC error, got {other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("at byte 392") && msg.contains("fresh copy"),
            "{msg}"
        );
    }
}

#[test]
fn the_test_wal_writer_reproduces_the_real_segment() {
    let seg = fs::read(fixture("autolock").join(SEGMENT)).expect("read");
    assert_eq!(write_segment(&strip(records(&seg)), 0), seg);
}

#[test]
fn a_changed_ciphertext_with_a_good_crc_is_an_auth_error() {
    let (_tmp, root) = copy_of("autolock");
    let path = root.join(SEGMENT);
    let mut recs = strip(records(&fs::read(&path).expect("read")));
    let (i, (_, data)) = recs
        .iter_mut()
        .enumerate()
        .find(|(_, (t, d))| *t == 2 && entry_index(d) == 50)
        .expect("index 50");
    let mid = data.len() / 2;
    data[mid] ^= 0x80;
    fs::write(&path, write_segment(&recs, 0)).expect("write");
    let offset = records(&fs::read(&path).expect("read"))[i].0;

    let dir = StateDir::open(&root).expect("opens");
    let keys = dir
        .open_keys(Some(&key_of("autolock")))
        .expect("opens")
        .keys;
    let e = read_log(&dir, Some(&keys)).expect_err("tampered");
    match &e {
        SwarmError::Auth {
            file,
            offset: o,
            index,
        } => {
            assert_eq!(file, SEGMENT);
            assert_eq!(*o, offset);
            assert_eq!(*index, Some(50));
        }
        other => panic!("expected an Auth error, got {other}"),
    }
    assert!(matches!(
        verify(&dir, Some(&keys)),
        Err(SwarmError::Auth { .. })
    ));
    // Without keys the CRC chain is all that is checked, and it holds.
    assert_eq!(read_log(&dir, None).expect("reads").entries.len(), 116);
}

#[test]
fn a_torn_tail_in_the_last_segment_is_a_notice() {
    let (_tmp, root) = copy_of("autolock");
    let path = root.join(SEGMENT);
    let seg = fs::read(&path).expect("read");
    let recs = records(&seg);
    let (last_entry_at, _, _) = *recs
        .iter()
        .rev()
        .find(|(_, t, _)| *t == 2)
        .expect("an entry");
    assert_eq!(last_entry_at, 65_384);
    fs::write(&path, &seg[..last_entry_at as usize + 100]).expect("truncate");

    let dir = StateDir::open(&root).expect("opens");
    let keys = dir
        .open_keys(Some(&key_of("autolock")))
        .expect("opens")
        .keys;
    let log = read_log(&dir, Some(&keys)).expect("reads up to the tear");
    assert_eq!(log.entries.len(), 115);
    let n = log
        .notices
        .iter()
        .find(|n| n.kind == NoticeKind::TornTail)
        .expect("a torn-tail notice");
    assert_eq!(n.file, SEGMENT);
    assert_eq!(n.offset, Some(last_entry_at));
    // verify accepts a torn tail too (a crash leaves one), with the notice.
    let r = verify(&dir, Some(&keys)).expect("verifies");
    assert!(r.notices.iter().any(|n| n.kind == NoticeKind::TornTail));

    // The same record zero-filled in place (etcd's torn write) is a notice as well.
    let mut zeroed = seg.clone();
    for b in &mut zeroed[last_entry_at as usize + 8..] {
        *b = 0;
    }
    fs::write(&path, &zeroed).expect("write");
    let log = read_log(&dir, Some(&keys)).expect("reads");
    assert_eq!(log.entries.len(), 115);
}

#[test]
fn a_bad_record_in_an_earlier_segment_is_an_error() {
    // Split the WAL into two segments the way etcd cuts one: the new
    // segment starts with the running CRC, the metadata and the hard state.
    let (_tmp, root) = copy_of("autolock");
    let path = root.join(SEGMENT);
    let recs = strip(records(&fs::read(&path).expect("read")));
    let cut = recs
        .iter()
        .position(|(t, d)| *t == 2 && entry_index(d) == 60)
        .expect("index 60");
    let meta = recs[1].clone();
    let state = recs[..cut]
        .iter()
        .rev()
        .find(|(t, _)| *t == 3)
        .expect("state")
        .clone();
    let first = write_segment(&recs[..cut], 0);
    let mut running = 0u32;
    for (t, d) in &recs[..cut] {
        if *t != 4 {
            running = crc32c::crc32c_append(running, d);
        }
    }
    let mut second_recs = vec![(4u8, Vec::new()), meta, state];
    second_recs.extend_from_slice(&recs[cut..]);
    let second = write_segment(&second_recs, running);
    fs::write(&path, &first).expect("write");
    let second_name = root.join("raft/wal-v3-encrypted/0000000000000001-000000000000003c.wal");
    fs::write(&second_name, &second).expect("write");

    let dir = StateDir::open(&root).expect("opens");
    let keys = dir
        .open_keys(Some(&key_of("autolock")))
        .expect("opens")
        .keys;
    let log = read_log(&dir, Some(&keys)).expect("two segments read");
    assert_eq!(log.entries.len(), 116);
    assert!(log.entries.iter().all(|e| e.plaintext.is_some()));
    assert_eq!(verify(&dir, Some(&keys)).expect("verifies").segments, 2);

    // Torn at the end of the *first* segment: an error, not a notice.
    fs::write(&path, &first[..first.len() - 20]).expect("truncate");
    let e = read_log(&dir, Some(&keys)).expect_err("hard error");
    assert!(
        matches!(e, SwarmError::Torn { .. } | SwarmError::Crc { .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("0000000000000000-0000000000000000.wal"),
        "{e}"
    );
}

#[test]
fn a_missing_entry_after_the_snapshot_is_a_gap() {
    let (_tmp, root) = copy_of("rotated");
    let path = root.join(SEGMENT);
    let mut recs = strip(records(&fs::read(&path).expect("read")));
    recs.retain(|(t, d)| !(*t == 2 && entry_index(d) == 808));
    fs::write(&path, write_segment(&recs, 0)).expect("write");
    let dir = StateDir::open(&root).expect("opens");
    let e = read_log(&dir, None).expect_err("gap");
    assert!(matches!(e, SwarmError::Gap { .. }), "{e}");
    assert!(e.to_string().contains("808..=808"), "{e}");
}

#[test]
fn an_unknown_record_type_is_kept_not_a_panic() {
    let (_tmp, root) = copy_of("autolock");
    let path = root.join(SEGMENT);
    let mut recs = strip(records(&fs::read(&path).expect("read")));
    recs.insert(10, (9, b"from the future".to_vec()));
    fs::write(&path, write_segment(&recs, 0)).expect("write");
    let dir = StateDir::open(&root).expect("opens");
    let log = read_log(&dir, None).expect("reads");
    assert_eq!(log.entries.len(), 116);
    assert!(
        log.notices
            .iter()
            .any(|n| n.kind == NoticeKind::UnknownRecord)
    );
    assert!(verify(&dir, None).is_ok());
}

#[test]
fn a_preallocated_zero_tail_is_not_read_as_records() {
    let (_tmp, root) = copy_of("autolock");
    let path = root.join(SEGMENT);
    let mut seg = fs::read(&path).expect("read");
    seg.resize(seg.len() + 3 * 1024 * 1024 + 5, 0);
    fs::write(&path, &seg).expect("write");
    fs::write(root.join("raft/wal-v3-encrypted/0.tmp"), [0u8; 4096]).expect("tmp");
    let dir = StateDir::open(&root).expect("opens");
    let r = verify(&dir, None).expect("verifies");
    assert_eq!(r.wal_bytes, 65_856);
    assert_eq!(r.entries, 116);
    assert!(
        r.notices
            .iter()
            .any(|n| n.kind == NoticeKind::IgnoredFile && n.file.ends_with("0.tmp"))
    );
}

#[test]
fn a_broken_snapshot_falls_back_to_an_older_one_or_to_none() {
    // Only one snapshot: reported, and the log is read from the WAL alone.
    let (_tmp, root) = copy_of("rotated");
    let snap = root.join(ROTATED_SNAP);
    let mut bytes = fs::read(&snap).expect("read");
    bytes[1] ^= 0x01; // inside the CRC varint
    fs::write(&snap, &bytes).expect("write");
    let dir = StateDir::open(&root).expect("opens");
    let keys = dir.open_keys(Some(&key_of("rotated"))).expect("opens").keys;
    let log = read_log(&dir, Some(&keys)).expect("reads");
    assert!(log.snapshot.is_none());
    let n = log
        .notices
        .iter()
        .find(|n| n.kind == NoticeKind::BrokenSnapshot)
        .expect("a broken-snapshot notice");
    assert_eq!(n.file, ROTATED_SNAP);
    assert!(n.message.contains("CRC-32C mismatch"), "{}", n.message);
    assert_eq!(log.entries.len(), 810);
    assert!(log.entries.iter().all(|e| e.plaintext.is_some()));
    // verify checks every snapshot and fails on it.
    assert!(matches!(
        verify(&dir, Some(&keys)),
        Err(SwarmError::Crc { .. })
    ));

    // Two snapshots, the newest broken: the older one is used.
    let (_tmp2, root2) = copy_of("unlocked");
    fs::copy(
        fixture("rotated").join(ROTATED_SNAP),
        root2.join(ROTATED_SNAP),
    )
    .expect("copy");
    let newest = root2.join(UNLOCKED_SNAP);
    let mut b = fs::read(&newest).expect("read");
    let last = b.len() - 1;
    b[last] ^= 0x01;
    fs::write(&newest, &b).expect("write");
    let dir2 = StateDir::open(&root2).expect("opens");
    let log2 = read_log(&dir2, None).expect("reads");
    let s = log2.snapshot.as_ref().expect("the older snapshot");
    assert_eq!(s.index, 0x326);
    assert!(s.plaintext.is_none(), "sealed, no key given");
    assert!(
        log2.notices
            .iter()
            .any(|n| n.kind == NoticeKind::BrokenSnapshot)
    );
}

#[test]
fn snapshot_bytes_parse_on_their_own() {
    let bytes = fs::read(fixture("rotated").join(ROTATED_SNAP)).expect("read");
    let s = parse_snapshot("x.snap", &bytes).expect("parses");
    assert_eq!((s.index, s.term), (0x326, 2));
    let seg = fs::read(fixture("unlocked").join(SEGMENT)).expect("read");
    let r = parse_segment("x.wal", &seg, 0);
    assert!(matches!(r.end, SegmentEnd::Clean));
    assert_eq!(r.end_offset, 469_144);
}

// --- the directory ---

#[test]
fn not_a_state_dir_says_what_is_missing_and_suggests_swarm() {
    let e = StateDir::open(fixture("")).expect_err("not a state dir");
    let msg = e.to_string();
    assert!(matches!(e, SwarmError::NotAStateDir { .. }), "{msg}");
    assert!(
        msg.contains("certificates/swarm-node.key") && msg.contains("/var/lib/docker/swarm"),
        "{msg}"
    );

    let (tmp, _root) = copy_of("autolock");
    let msg = StateDir::open(tmp.path()).expect_err("parent").to_string();
    assert!(
        msg.contains("did you mean") && msg.contains("swarm"),
        "{msg}"
    );

    let (_tmp, root) = copy_of("autolock");
    fs::remove_dir_all(root.join("raft")).expect("rm");
    let msg = StateDir::open(&root).expect_err("worker-like").to_string();
    assert!(msg.contains("worker"), "{msg}");
}

#[test]
fn files_lists_modes_and_notes_leftovers() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_tmp, root) = copy_of("rotated");
    fs::set_permissions(
        root.join("certificates/swarm-node.key"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(root.join("certificates/.swarm-node.crt"), b"x").expect("leftover");
    fs::create_dir(root.join("raft/wal-v3")).expect("legacy");
    let dir = StateDir::open(&root).expect("opens");
    let files = dir.files().expect("lists");
    let find = |p: &str| {
        files
            .iter()
            .find(|f| f.rel_path == p)
            .unwrap_or_else(|| panic!("{p} listed"))
    };
    assert_eq!(find(".").mode, 0o700);
    assert_eq!(find("certificates/swarm-node.key").mode, 0o600);
    assert_eq!(find(SEGMENT).size, 467_576);
    assert_eq!(find(ROTATED_SNAP).size, 7680);
    let kinds: Vec<_> = dir.notices().iter().map(|n| n.kind).collect();
    assert!(
        kinds.contains(&NoticeKind::LeftoverFile) && kinds.contains(&NoticeKind::LegacyDir),
        "{kinds:?}"
    );
}

#[test]
fn reading_changes_nothing_in_the_state_dir() {
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime, u32)> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            let m = fs::metadata(&d).expect("meta");
            out.insert(
                d.clone(),
                (
                    Vec::new(),
                    m.modified().expect("mtime"),
                    m.permissions().mode(),
                ),
            );
            for e in fs::read_dir(&d).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let m = fs::metadata(&p).expect("meta");
                    out.insert(
                        p.clone(),
                        (
                            fs::read(&p).expect("read"),
                            m.modified().expect("mtime"),
                            m.permissions().mode(),
                        ),
                    );
                }
            }
        }
        out
    }
    for name in ["autolock", "rotated", "unlocked"] {
        let (_tmp, root) = copy_of(name);
        let before = snapshot(&root);
        let dir = StateDir::open(&root).expect("opens");
        dir.files().expect("lists");
        let keys = dir.open_keys(Some(&key_of(name))).expect("opens").keys;
        read_log(&dir, Some(&keys)).expect("reads");
        verify(&dir, Some(&keys)).expect("verifies");
        let _ = dir.open_keys(None);
        assert!(
            before == snapshot(&root),
            "{name}: the state directory changed"
        );
    }
}

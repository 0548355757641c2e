use super::*;
use moat_audit::{Action, Actor, Details, Event, Outcome, Text, Timestamp};
use moat_lock::{Dek, DekSet, DekVersion};
use moat_pki::{ClusterId, NodeId};

fn cipher(cluster: ClusterId, node: NodeId) -> Arc<RecordCipher> {
    Arc::new(RecordCipher::new(
        cluster,
        node,
        DekSet::new(Dek::generate(DekVersion(1)).unwrap()),
    ))
}

/// `n` linked record lines, from record 1.
fn lines(n: u64) -> Vec<String> {
    let mut log = MerkleLog::new();
    let mut out = Vec::new();
    for i in 0..n {
        let event = Event {
            node: "0123456789abcdefghijklmn00".parse().unwrap(),
            actor: Actor::local_operator(),
            action: Action::POLICY_UPDATE,
            target: Text::new("target", &format!("t{i}")).unwrap(),
            outcome: Outcome::Success,
            details: Details::new(),
        };
        let time = Timestamp::from_unix(1_700_000_000 + i as i64).unwrap();
        let line = log.seal(time, event).to_line();
        log.push_leaf(&line);
        out.push(String::from_utf8(line).unwrap());
    }
    out
}

fn tree_of(lines: &[String]) -> MerkleLog {
    let mut t = MerkleLog::new();
    for l in lines {
        t.push_leaf(l.as_bytes());
    }
    t
}

fn open(dir: &Path, c: &Arc<RecordCipher>, bytes: u64) -> Result<AuditSegments, StoreError> {
    AuditSegments::open(dir, c.clone(), bytes, false)
}

#[test]
fn records_read_back_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(300);
    let segs = open(dir.path(), &c, 4096).unwrap();
    segs.append(1, &all[..100]).unwrap();
    segs.append(101, &all[100..]).unwrap();
    assert!(segs.files().len() > 3, "small segments roll");
    assert_eq!(segs.last_seq(), 300);
    drop(segs);
    let segs = open(dir.path(), &c, 4096).unwrap();
    assert_eq!(segs.last_seq(), 300);
    assert!(segs.gaps().is_empty());
    assert_eq!(segs.read(1).unwrap().as_deref(), Some(all[0].as_str()));
    assert_eq!(segs.read(300).unwrap().as_deref(), Some(all[299].as_str()));
    assert_eq!(segs.read(301).unwrap(), None);
    let mut got = Vec::new();
    segs.read_range(150, 400, |seq, line| {
        got.push((seq, line));
        Ok(true)
    })
    .unwrap();
    assert_eq!(got.len(), 151);
    assert_eq!(got[0], (150, all[149].clone()));
    let expected = tree_of(&all).current_root();
    assert_eq!(
        segs.with_tree(|t| t.map(MerkleLog::current_root)),
        Some(expected)
    );
    assert_eq!(segs.last_leaf(), leaf_hash(all[299].as_bytes()));
    // No plaintext on disk.
    for (path, _, _) in segs.files() {
        let bytes = std::fs::read(path).unwrap();
        assert!(!bytes.windows(13).any(|w| w == b"policy.update"));
    }
}

#[test]
fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(20);
    let segs = open(dir.path(), &c, 1 << 20).unwrap();
    segs.append(1, &all[..10]).unwrap();
    let (path, _, _) = segs.files().pop().unwrap();
    drop(segs);
    let good = std::fs::read(&path).unwrap();
    // A frame cut short, then a frame of zeros, then a whole frame with a bad CRC.
    for tail in [vec![0, 0, 1, 0, 9, 9], vec![0; 40]] {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let segs = open(dir.path(), &c, 1 << 20).unwrap();
        assert_eq!(segs.last_seq(), 10);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            bytes.len() as u64,
            "opening writes nothing"
        );
        // The next write cuts the tail first.
        segs.truncate_after(10).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good.len() as u64);
    }
    let segs = open(dir.path(), &c, 1 << 20).unwrap();
    segs.append(11, &all[10..]).unwrap();
    drop(segs);
    let segs = open(dir.path(), &c, 1 << 20).unwrap();
    assert_eq!(segs.last_seq(), 20);
    assert_eq!(
        segs.with_tree(|t| t.map(MerkleLog::current_root)),
        Some(tree_of(&all).current_root())
    );
}

#[test]
fn a_flipped_byte_is_named_by_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let segs = open(dir.path(), &c, 1 << 20).unwrap();
    segs.append(1, &lines(10)).unwrap();
    let (path, _, _) = segs.files().pop().unwrap();
    drop(segs);
    let good = std::fs::read(&path).unwrap();
    // Header, a length, a sequence number, a payload byte in the middle,
    // the last frame's payload (CRC intact elsewhere: AEAD must catch it).
    for pos in [0, 9, 16, 24, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        match open(dir.path(), &c, 1 << 20) {
            Err(StoreError::Corrupt { path: p, at, .. }) => {
                assert_eq!(p, path, "flip at {pos}");
                assert!(at.starts_with("byte "), "{at}");
            }
            Err(e) => panic!("flip at {pos}: {e}"),
            Ok(s) => {
                // Only a flip in the final frame that leaves a torn-looking
                // tail may open, and then it must have been cut off.
                assert!(pos > good.len() / 2, "flip at {pos} accepted");
                assert!(s.last_seq() < 10, "flip at {pos} accepted whole");
                std::fs::write(&path, &good).unwrap();
            }
        }
    }
    // A CRC recomputed over a changed payload still fails: authentication.
    let mut bad = good.clone();
    let frame = 16usize;
    let len = u32::from_be_bytes(bad[frame..frame + 4].try_into().unwrap()) as usize;
    bad[frame + 20] ^= 1;
    let crc = crc32fast::hash(&bad[frame + 8..frame + 4 + len]);
    bad[frame + 4..frame + 8].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = open(dir.path(), &c, 1 << 20).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("byte 16") && text.contains("authentication"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn a_segment_from_another_manager_or_place_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterId::generate();
    let c = cipher(cluster, NodeId::generate());
    let segs = open(dir.path(), &c, 1 << 20).unwrap();
    segs.append(1, &lines(3)).unwrap();
    let (path, _, _) = segs.files().pop().unwrap();
    drop(segs);
    let good = std::fs::read(&path).unwrap();
    // Same DEK, another node: the AAD differs.
    let other = Arc::new(RecordCipher::new(
        cluster,
        NodeId::generate(),
        DekSet::new(Dek::generate(DekVersion(1)).unwrap()),
    ));
    assert!(matches!(
        open(dir.path(), &other, 1 << 20),
        Err(StoreError::Corrupt { .. })
    ));
    // Record 2's frame relabelled as record 1 (sequence and CRC fixed up).
    let f1 = 16usize;
    let l1 = u32::from_be_bytes(good[f1..f1 + 4].try_into().unwrap()) as usize;
    let f2 = f1 + 4 + l1;
    let l2 = u32::from_be_bytes(good[f2..f2 + 4].try_into().unwrap()) as usize;
    let mut moved = good[..16].to_vec();
    let mut frame = good[f2..f2 + 4 + l2].to_vec();
    frame[8..16].copy_from_slice(&1u64.to_be_bytes());
    let crc = crc32fast::hash(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_be_bytes());
    moved.extend_from_slice(&frame);
    moved.extend_from_slice(&good[f2..]);
    std::fs::write(&path, &moved).unwrap();
    let err = open(dir.path(), &c, 1 << 20).expect_err("refused");
    assert!(err.to_string().contains("authentication"), "{err}");
}

#[test]
fn truncation_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(100);
    let segs = open(dir.path(), &c, 2048).unwrap();
    segs.append(1, &all[..60]).unwrap();
    segs.truncate_after(37).unwrap();
    assert_eq!(segs.last_seq(), 37);
    assert_eq!(segs.last_leaf(), leaf_hash(all[36].as_bytes()));
    segs.append(38, &all[37..]).unwrap();
    drop(segs);
    let segs = open(dir.path(), &c, 2048).unwrap();
    assert_eq!(
        segs.with_tree(|t| t.map(MerkleLog::current_root)),
        Some(tree_of(&all).current_root())
    );
    assert!(segs.append(50, &all[49..50]).is_err(), "no overwrite");

    // Records this manager never received: a gap, and no tree.
    let dir = tempfile::tempdir().unwrap();
    let segs = open(dir.path(), &c, 1 << 20).unwrap();
    segs.append(1, &all[..3]).unwrap();
    segs.append(10, &all[9..12]).unwrap();
    assert_eq!(segs.gaps(), vec![(4, 9)]);
    assert!(segs.with_tree(|t| t.is_none()));
    drop(segs);
    let segs = open(dir.path(), &c, 1 << 20).unwrap();
    assert_eq!(segs.gaps(), vec![(4, 9)]);
    assert_eq!(segs.last_seq(), 12);
    assert_eq!(segs.read(5).unwrap(), None);
    assert_eq!(segs.read(11).unwrap().as_deref(), Some(all[10].as_str()));
}

#[test]
fn scan_never_panics_on_short_or_odd_input() {
    let c = RecordCipher::danger_plaintext(ClusterId::generate(), NodeId::generate());
    for len in 0..40 {
        let mut bytes = b"MOATAUD1\0\0\0\0\0\0\0\x01".to_vec();
        bytes.extend(std::iter::repeat_n(0xffu8, len));
        bytes.truncate(len);
        let _ = scan_segment(&bytes, &c, None);
    }
}

#[test]
fn the_fuzz_seeds_scan() {
    let c = RecordCipher::danger_plaintext(ClusterId::generate(), NodeId::generate());
    let one = include_bytes!("../../../fuzz/seeds/audit_segment/one-record.seg");
    let scan = scan_segment(one, &c, None).unwrap();
    assert_eq!((scan.first, scan.records.len(), scan.torn_at), (1, 1, None));
    let torn = include_bytes!("../../../fuzz/seeds/audit_segment/torn-tail.seg");
    let scan = scan_segment(torn, &c, None).unwrap();
    assert_eq!(scan.torn_at, Some(one.len() as u64));
}

/// `n` linked record lines from record 1, with targets named after `salt`.
fn salted(n: u64, salt: &str) -> Vec<String> {
    let mut log = MerkleLog::new();
    let mut out = Vec::new();
    for i in 0..n {
        let event = Event {
            node: "0123456789abcdefghijklmn00".parse().unwrap(),
            actor: Actor::local_operator(),
            action: Action::POLICY_UPDATE,
            target: Text::new("target", &format!("{salt}{i}")).unwrap(),
            outcome: Outcome::Success,
            details: Details::new(),
        };
        let time = Timestamp::from_unix(1_700_000_000 + i as i64).unwrap();
        let line = log.seal(time, event).to_line();
        log.push_leaf(&line);
        out.push(String::from_utf8(line).unwrap());
    }
    out
}

/// A record `seq` with `prev`, not of the log.
fn forged(seq: u64, prev: Hash, salt: &str) -> String {
    let event = Event {
        node: "0123456789abcdefghijklmn00".parse().unwrap(),
        actor: Actor::local_operator(),
        action: Action::POLICY_UPDATE,
        target: Text::new("target", salt).unwrap(),
        outcome: Outcome::Success,
        details: Details::new(),
    };
    let time = Timestamp::from_unix(1_700_000_000).unwrap();
    String::from_utf8(Record::new(seq, prev, time, event).unwrap().to_line()).unwrap()
}

fn seg_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            parse_name(name.to_str().unwrap()).is_some()
        })
        .count()
}

#[test]
fn a_gap_is_filled_newest_first_from_fetched_records() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(300);
    let segs = open(dir.path(), &c, 4096).unwrap();
    segs.append(1, &all[..50]).unwrap();
    segs.append(201, &all[200..]).unwrap();
    assert_eq!(segs.gaps(), vec![(51, 200)]);
    assert!(segs.with_tree(|t| t.is_none()));
    // The newest part first: tied to record 201 held here.
    assert!(!segs.fill(151, &all[150..200], None).unwrap());
    assert_eq!(segs.gaps(), vec![(51, 150)]);
    assert_eq!(segs.read(160).unwrap().as_deref(), Some(all[159].as_str()));
    // The rest closes the gap: tied to record 151 above and 50 below.
    assert!(segs.fill(51, &all[50..150], None).unwrap());
    assert!(segs.gaps().is_empty());
    let root = tree_of(&all).root(300).unwrap();
    assert_eq!(
        segs.with_tree(|t| t.map(|t| t.root(300).unwrap())),
        Some(root)
    );
    // Appends go on, and all of it reads back after a restart.
    let more = lines(301);
    segs.append(301, &more[300..]).unwrap();
    drop(segs);
    let segs = open(dir.path(), &c, 4096).unwrap();
    assert!(segs.gaps().is_empty());
    assert_eq!(segs.last_seq(), 301);
    assert_eq!(
        segs.with_tree(|t| t.map(|t| t.root(301).unwrap())),
        Some(tree_of(&more).root(301).unwrap())
    );
    for seq in [1, 51, 150, 151, 200, 201, 301] {
        assert_eq!(
            segs.read(seq).unwrap().as_deref(),
            Some(more[seq as usize - 1].as_str())
        );
    }
}

#[test]
fn fetched_records_that_do_not_fit_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(300);
    let segs = open(dir.path(), &c, 4096).unwrap();
    segs.append(1, &all[..50]).unwrap();
    segs.append(201, &all[200..]).unwrap();
    let files = seg_files(dir.path());
    let refused = |first: u64, batch: &[String], needle: &str| {
        match segs.fill(first, batch, None) {
            Err(FillError::Refused(why)) => assert!(why.contains(needle), "{why}"),
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(segs.gaps(), vec![(51, 200)]);
        assert_eq!(seg_files(dir.path()), files, "nothing written");
        assert_eq!(segs.read(160).unwrap(), None, "nothing served");
    };
    // Another log's records (a peer of another cluster, or lying).
    let other = salted(300, "x");
    refused(
        151,
        &other[150..200],
        "record 200 does not hash to the link",
    );
    // One record changed, its successor's link left alone.
    let mut tampered = all[150..200].to_vec();
    let prev = Record::from_line(tampered[9].as_bytes()).unwrap().prev();
    tampered[9] = forged(160, prev, "changed");
    refused(151, &tampered, "record 161 does not link to record 160");
    // A whole chain rewritten from record 151 on: the links hold, but the
    // last does not hash to what record 201 (held here) links to.
    let mut chain = Vec::new();
    let mut prev = leaf_hash(all[149].as_bytes());
    for seq in 151..=200 {
        let line = forged(seq, prev, &format!("f{seq}"));
        prev = leaf_hash(line.as_bytes());
        chain.push(line);
    }
    refused(151, &chain, "record 200 does not hash to the link");
    // Records in the wrong places, or not records.
    refused(
        152,
        &all[150..199],
        "record 151 was sent in the place of record 152",
    );
    refused(151, &["{}".to_string()], "record 151 is not a valid record");
    // The right records still go in.
    assert!(segs.fill(51, &all[50..200], None).unwrap());
}

#[test]
fn a_gap_at_the_end_is_tied_to_the_states_last_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(120);
    let segs = open(dir.path(), &c, 4096).unwrap();
    segs.append(1, &all[..20]).unwrap();
    let last = leaf_hash(all[119].as_bytes());
    // Without the state's word, nothing can be checked.
    assert!(matches!(
        segs.fill(21, &all[20..], None),
        Err(FillError::Store(_))
    ));
    let wrong = leaf_hash(b"another");
    assert!(matches!(
        segs.fill(21, &all[20..], Some(wrong)),
        Err(FillError::Refused(_))
    ));
    assert!(!segs.fill(61, &all[60..], Some(last)).unwrap());
    assert!(segs.fill(21, &all[20..60], None).unwrap());
    segs.append(121, &lines(121)[120..]).unwrap();
    assert_eq!(segs.last_seq(), 121);
    assert!(segs.gaps().is_empty());
}

#[test]
fn archived_segments_are_dropped_and_their_leaf_hashes_kept() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(300);
    let segs = open(dir.path(), &c, 4096).unwrap();
    segs.append(1, &all).unwrap();
    let before = seg_files(dir.path());
    let dropped = segs.drop_below(150).unwrap();
    assert!(dropped > 0);
    assert_eq!(seg_files(dir.path()), before - dropped);
    let floor = segs.floor();
    assert!(floor > 1 && floor <= 150, "{floor}");
    assert!(segs.gaps().is_empty(), "archived records are not a gap");
    assert_eq!(segs.read(1).unwrap(), None);
    assert!(dir.path().join(LEAVES_FILE).is_file());
    let root = tree_of(&all).root(300).unwrap();
    // The whole tree survives a restart: leaf hashes, then the segments.
    drop(segs);
    let segs = open(dir.path(), &c, 4096).unwrap();
    assert_eq!(segs.floor(), floor);
    assert!(segs.gaps().is_empty());
    assert_eq!(
        segs.with_tree(|t| t.map(|t| t.root(300).unwrap())),
        Some(root)
    );
    assert_eq!(segs.leaf(1).unwrap(), Some(leaf_hash(all[0].as_bytes())));
    // Archived records are never fetched again.
    assert!(matches!(
        segs.fill(1, &all[..1], None),
        Err(FillError::Store(_)) | Err(FillError::Refused(_))
    ));
    // A second archival extends the file; a DEK rotation seals it again.
    segs.drop_below(250).unwrap();
    assert!(segs.floor() > floor);
    drop(segs);
    let segs = open(dir.path(), &c, 4096).unwrap();
    assert_eq!(
        segs.with_tree(|t| t.map(|t| t.root(300).unwrap())),
        Some(root)
    );
    // The leaf hashes file is checked: a changed byte stops the store.
    drop(segs);
    let path = dir.path().join(LEAVES_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = open(dir.path(), &c, 4096).unwrap_err().to_string();
    assert!(err.contains(LEAVES_FILE), "{err}");
}

#[test]
fn the_leaf_hashes_file_never_panics_on_odd_input() {
    let c = cipher(ClusterId::generate(), NodeId::generate());
    for bytes in [
        &b""[..],
        b"MOATAUDL",
        b"MOATAUDL\xff\xff\xff\xff\xff\xff\xff\xff",
        b"MOATAUDL\0\0\0\0\0\0\0\x01abc",
    ] {
        assert!(parse_leaves(bytes, &c).is_err());
    }
}

#[test]
fn a_dek_rotation_seals_the_leaf_hashes_of_archived_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(300);
    let segs = open(dir.path(), &c, 4096).unwrap();
    segs.append(1, &all).unwrap();
    assert!(segs.drop_below(150).unwrap() > 0);
    c.with_deks(|d| d.begin_rotation().map(|p| p.version()))
        .unwrap()
        .unwrap();
    // The segments and the leaf hashes file, sealed with the new DEK.
    assert!(segs.reseal().unwrap() >= 2);
    c.with_deks(|d| d.complete_rotation().map(drop))
        .unwrap()
        .unwrap();
    drop(segs);
    // Only the new DEK is loaded now.
    let segs = open(dir.path(), &c, 4096).unwrap();
    assert_eq!(
        segs.with_tree(|t| t.map(|t| t.root(300).unwrap())),
        Some(tree_of(&all).root(300).unwrap())
    );
}

#[test]
fn a_crash_during_a_fill_leaves_the_gap_and_nothing_half_written_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let c = cipher(ClusterId::generate(), NodeId::generate());
    let all = lines(300);
    let segs = open(dir.path(), &c, 4096).unwrap();
    segs.append(1, &all[..50]).unwrap();
    segs.append(201, &all[200..]).unwrap();
    segs.fill(151, &all[150..200], None).unwrap();
    drop(segs);
    // What a crash in the middle of the next chunk's write leaves: its
    // temporary file, not renamed into place.
    let name = format!(".{}.tmp-CRASHED", segment_name(51));
    std::fs::write(dir.path().join(&name), b"MOATAUD1\0\0\0\0\0\0\0\x33garbage").unwrap();
    let segs = open(dir.path(), &c, 4096).unwrap();
    assert_eq!(
        segs.gaps(),
        vec![(51, 150)],
        "the written chunk stays, the cut one is not there"
    );
    assert_eq!(segs.read(100).unwrap(), None);
    assert_eq!(segs.read(151).unwrap().as_deref(), Some(all[150].as_str()));
    // Fetched again, it goes in.
    assert!(segs.fill(51, &all[50..150], None).unwrap());
    // A chunk's file cut short (a file system that tore the rename) is not
    // taken as records: the store refuses to start, naming it.
    drop(segs);
    let path = dir.path().join(segment_name(51));
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 7).unwrap();
    let err = open(dir.path(), &c, 4096).unwrap_err().to_string();
    assert!(err.contains(&segment_name(51)), "{err}");
}

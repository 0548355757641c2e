//! The SwarmKit store rebuilt from the real Docker 20.10.24 fixtures
//! (`tests/fixtures/`, see `formats.rs` for what each one is), and its
//! redacted JSON dump.
//!
//! What was done to the throw-away swarm: `docker swarm init --autolock`,
//! secret `s1` = `hunter2`, service `web` with `PASSWORD=topsecret` in its
//! environment (the `autolock` copy was cut at index 116, before the next
//! steps); then `--cert-expiry 720h`, an external CA, `--snapshot-interval
//! 5`, `unlock-key --rotate`, secret `s2` = `second-secret-value`, config
//! `c1` = `cfgdata`, a join-token rotation (`rotated`); then autolock off
//! (`unlocked`).

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use moat_swarm::dir::StateDir;
use moat_swarm::dump::{DumpOptions, dump, dump_object, dump_rebuilt, summary};
use moat_swarm::key::UnlockKey;
use moat_swarm::proto::{self, TaskRuntime};
use moat_swarm::raftlog::{EntryKind, LogEntry, RaftLog, read_log};
use moat_swarm::record::RecordAlgorithm;
use moat_swarm::store::{
    Applied, ObjectKind, RebuildOptions, Rebuilt, Rejection, Store, StoreError,
};
use prost::Message;
use zeroize::Zeroizing;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn key_text(name: &str) -> String {
    fs::read_to_string(fixture(name).join("unlock-key"))
        .expect("key file")
        .trim()
        .to_owned()
}

fn key_of(name: &str) -> UnlockKey {
    key_text(name).parse().expect("the fixture key parses")
}

/// The KEK's 32 bytes (the unlock key's base64 without padding).
fn kek_bytes(name: &str) -> Vec<u8> {
    let text = key_text(name);
    let b64 = text.strip_prefix("SWMKEY-1-").expect("prefix");
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64)
        .expect("base64")
}

/// The raft log of a fixture, decrypted with its unlock key (none for
/// `unlocked`, where autolock is off).
fn log_of(name: &str) -> RaftLog {
    let dir = StateDir::open(fixture(name)).expect("opens");
    let key = (name != "unlocked").then(|| key_of(name));
    let opened = dir.open_keys(key.as_ref()).expect("keys open");
    read_log(&dir, Some(&opened.keys)).expect("the log reads")
}

fn rebuilt(name: &str) -> Rebuilt {
    Store::rebuild(&log_of(name)).expect("the store rebuilds")
}

fn names<T>(items: &[T], name: impl Fn(&T) -> Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .filter_map(|i| name(i).map(str::to_owned))
        .collect();
    v.sort();
    v
}

fn secret_names(store: &Store) -> Vec<String> {
    names(&store.secrets().expect("secrets decode"), |s| {
        s.spec
            .as_ref()?
            .annotations
            .as_ref()
            .map(|a| a.name.as_str())
    })
}

fn secret_data(store: &Store, name: &str) -> Vec<u8> {
    store
        .secrets()
        .expect("secrets decode")
        .iter()
        .filter_map(|s| s.spec.as_ref())
        .find(|s| s.annotations.as_ref().is_some_and(|a| a.name == name))
        .map(|s| s.data.clone())
        .expect("secret found")
}

fn web_container(store: &Store) -> proto::ContainerSpec {
    let services = store.services().expect("services decode");
    assert_eq!(services.len(), 1);
    let spec = services[0].spec.as_ref().expect("spec");
    assert_eq!(
        spec.annotations.as_ref().map(|a| a.name.as_str()),
        Some("web")
    );
    match spec.task.as_ref().and_then(|t| t.runtime.as_ref()) {
        Some(TaskRuntime::Container(c)) => c.clone(),
        _ => panic!("web runs a container"),
    }
}

fn cluster(store: &Store) -> proto::Cluster {
    store
        .cluster()
        .expect("the cluster decodes")
        .expect("a cluster")
}

fn cert_expiry(c: &proto::Cluster) -> Option<i64> {
    c.spec
        .as_ref()?
        .ca_config
        .as_ref()?
        .node_cert_expiry
        .map(|d| d.seconds)
}

fn autolock_on(c: &proto::Cluster) -> bool {
    c.spec
        .as_ref()
        .and_then(|s| s.encryption_config.as_ref())
        .is_some_and(|e| e.auto_lock_managers)
}

fn join_token_secrets(c: &proto::Cluster) -> Vec<String> {
    let t = c
        .root_ca
        .as_ref()
        .and_then(|r| r.join_tokens.as_ref())
        .expect("join tokens");
    [&t.worker, &t.manager]
        .iter()
        .map(|tok| {
            let (_, secret) = tok.rsplit_once('-').expect("a SWMTKN token");
            assert_eq!(secret.len(), 25, "the secret part of a join token");
            secret.to_owned()
        })
        .collect()
}

#[test]
fn autolock_store_comes_from_the_wal_alone() {
    let r = rebuilt("autolock");
    assert_eq!(r.snapshot_index, None);
    // 116 entries: the first is the ConfChange adding this manager, the
    // second the leader's no-op.
    assert_eq!(r.conf_changes, 1);
    assert_eq!(r.applied_entries, 115);
    assert_eq!(r.noop_entries, 1);
    assert_eq!(r.rejected_entries, 0);
    assert_eq!(r.uncommitted_entries, 0);
    assert_eq!(r.last_applied_index, 116);
    assert!(r.notices.is_empty(), "{:?}", r.notices);

    let s = &r.store;
    assert_eq!(s.count(ObjectKind::Node), 1);
    assert_eq!(s.count(ObjectKind::Network), 3);
    assert_eq!(s.count(ObjectKind::Config), 0);
    assert_eq!(secret_names(s), ["s1"]);
    assert_eq!(secret_data(s, "s1"), b"hunter2");
    assert!(
        web_container(s)
            .env
            .contains(&"PASSWORD=topsecret".to_owned())
    );

    let members: Vec<_> = s.members().collect();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].addr, "127.0.0.1:2377");
    let nodes = s.nodes().expect("nodes decode");
    assert_eq!(members[0].node_id, nodes[0].id);
    assert_eq!(nodes[0].role, proto::node_role::MANAGER);

    let c = cluster(s);
    assert!(autolock_on(&c));
    // The cut came before `--cert-expiry 720h`: the default, 90 days.
    assert_eq!(cert_expiry(&c), Some(7_776_000));
    assert_eq!(c.unlock_keys.len(), 1);
    assert_eq!(c.unlock_keys[0].subsystem, "swarm-manager");
    // The store holds the KEK itself.
    assert!(key_of("autolock").ct_eq(&c.unlock_keys[0].key));
    let root = c.root_ca.as_ref().expect("root CA");
    assert!(root.ca_key.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
    let ca_pem = fs::read(fixture("autolock").join("certificates/swarm-root-ca.crt")).expect("ca");
    assert_eq!(root.ca_cert, ca_pem);
}

#[test]
fn rotated_store_is_the_snapshot_then_the_entries_after_it() {
    let log = log_of("rotated");
    let snap_index = log.snapshot.as_ref().map(|s| s.index);
    assert_eq!(snap_index, Some(0x326));
    let r = Store::rebuild(&log).expect("rebuilds");
    assert_eq!(r.snapshot_index, Some(0x326));
    assert_eq!(r.applied_entries, 4);
    assert_eq!(r.last_applied_index, 0x32a);
    assert_eq!(r.uncommitted_entries, 0);

    let s = &r.store;
    assert_eq!(secret_names(s), ["s1", "s2"]);
    assert_eq!(secret_data(s, "s1"), b"hunter2");
    assert_eq!(secret_data(s, "s2"), b"second-secret-value");
    let configs = s.configs().expect("configs decode");
    assert_eq!(configs.len(), 1);
    let spec = configs[0].spec.as_ref().expect("spec");
    assert_eq!(
        spec.annotations.as_ref().map(|a| a.name.as_str()),
        Some("c1")
    );
    assert_eq!(spec.data, b"cfgdata");
    let web = web_container(s);
    assert_eq!(web.secrets.len(), 2);
    assert_eq!(web.configs.len(), 1);
    assert_eq!(web.configs[0].config_name, "c1");

    let c = cluster(s);
    assert!(autolock_on(&c));
    assert_eq!(cert_expiry(&c), Some(2_592_000));
    // After `unlock-key --rotate` the store holds the new KEK.
    assert!(key_of("rotated").ct_eq(&c.unlock_keys[0].key));
    assert!(!key_of("autolock").ct_eq(&c.unlock_keys[0].key));
    // The join tokens were rotated: same digest, new secrets.
    let before = join_token_secrets(&cluster(&rebuilt("autolock").store));
    let after = join_token_secrets(&c);
    assert_ne!(before, after);

    // The snapshot alone is the store before entries 0x327..=0x32a, which
    // update two tasks and remove three (7 actions).
    assert_eq!(r.actions, 7);
    let from_snap = Store::from_snapshot(
        log.snapshot
            .as_ref()
            .and_then(|s| s.plaintext.as_ref())
            .expect("plaintext"),
    )
    .expect("the snapshot decodes");
    assert_eq!(secret_names(&from_snap), ["s1", "s2"]);
    assert_eq!(from_snap.count(ObjectKind::Config), 1);
    assert_eq!(
        from_snap.count(ObjectKind::Task),
        s.count(ObjectKind::Task) + 3
    );
}

#[test]
fn unlocked_store_needs_no_key() {
    let dir = StateDir::open(fixture("unlocked")).expect("opens");
    let opened = dir.open_keys(None).expect("no key needed");
    let log = read_log(&dir, Some(&opened.keys)).expect("reads");
    let r = Store::rebuild(&log).expect("rebuilds");
    assert_eq!(r.snapshot_index, Some(0x32b));
    assert_eq!(r.applied_entries, 0);
    let s = &r.store;
    assert_eq!(secret_names(s), ["s1", "s2"]);
    assert_eq!(s.count(ObjectKind::Config), 1);
    let c = cluster(s);
    assert!(!autolock_on(&c));
    assert!(c.unlock_keys.is_empty());
    assert_eq!(cert_expiry(&c), Some(2_592_000));
}

#[test]
fn without_keys_the_rebuild_says_which_entry_is_sealed() {
    let dir = StateDir::open(fixture("autolock")).expect("opens");
    let log = read_log(&dir, None).expect("reads without keys");
    let err = Store::rebuild(&log).expect_err("sealed entries");
    assert!(matches!(err, StoreError::NotDecrypted { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("entry 1") && text.contains("unlock key"),
        "{text}"
    );
}

/// Every secret value and key of a fixture, as they could appear in text.
fn secrets_of(name: &str, r: &Rebuilt) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut v: Vec<String> = ["hunter2", "topsecret", "EC PRIVATE KEY"]
        .map(str::to_owned)
        .to_vec();
    if name != "autolock" {
        v.extend(["second-secret-value", "cfgdata"].map(str::to_owned));
    }
    let kek = kek_bytes(name);
    v.push(hex(&kek));
    v.push(b64.encode(&kek));
    v.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(&kek));
    let c = cluster(&r.store);
    v.extend(join_token_secrets(&c));
    for k in c.network_bootstrap_keys.iter().chain(&c.unlock_keys) {
        v.push(b64.encode(&k.key));
    }
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_dump_never_shows_a_secret_unless_asked() {
    for name in ["autolock", "rotated", "unlocked"] {
        let r = rebuilt(name);
        let secrets = secrets_of(name, &r);
        let hidden = dump_rebuilt(&r, DumpOptions::default());
        let text = serde_json::to_string_pretty(&hidden).expect("json");
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{name}: {s} in the redacted dump"
            );
        }
        assert_eq!(hidden["secrets_shown"], false);
        assert!(text.contains("PASSWORD=<redacted>"));
        assert!(
            text.contains("-<redacted>\""),
            "join tokens keep their digest"
        );

        let shown = dump(&r.store, DumpOptions { show_secrets: true });
        let text = shown.to_string();
        for s in ["hunter2", "topsecret", "EC PRIVATE KEY"] {
            assert!(text.contains(s), "{name}: {s} missing with --show-secrets");
        }
        if name != "autolock" {
            assert!(text.contains("second-secret-value") && text.contains("cfgdata"));
        }
        for s in join_token_secrets(&cluster(&r.store)) {
            assert!(text.contains(&s));
        }
        if name != "unlocked" {
            let kek = base64::engine::general_purpose::STANDARD.encode(kek_bytes(name));
            assert!(
                text.contains(&kek),
                "{name}: the unlock key in the store is shown"
            );
        }
    }
}

#[test]
fn the_dump_is_deterministic_and_sorted() {
    let r = rebuilt("rotated");
    let a = dump_rebuilt(&r, DumpOptions::default()).to_string();
    let b = dump_rebuilt(&rebuilt("rotated"), DumpOptions::default()).to_string();
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_str(&a).expect("json");
    let tasks = v["objects"]["tasks"].as_array().expect("tasks");
    let ids: Vec<&str> = tasks.iter().filter_map(|t| t["id"].as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert_eq!(ids.len(), 5);
    assert_eq!(v["counts"]["secrets"], 2);
    assert_eq!(v["rebuild"]["snapshot_index"], 0x326);
    assert_eq!(v["rebuild"]["applied_entries"], 4);
    let c = &v["objects"]["clusters"][0];
    assert_eq!(
        c["spec"]["ca_config"]["node_cert_expiry"]["seconds"],
        2_592_000
    );
    assert_eq!(
        c["spec"]["ca_config"]["node_cert_expiry"]["text"],
        "720h (30d)"
    );
    assert_eq!(c["spec"]["encryption_config"]["auto_lock_managers"], true);
    assert!(
        c["root_ca"]["ca_cert"]
            .as_str()
            .is_some_and(|p| p.starts_with("-----BEGIN CERTIFICATE-----"))
    );
    assert!(
        c["meta"]["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
    );
    assert_eq!(v["objects"]["nodes"][0]["status"]["state"], "READY");
    // The tables cover every field Docker 20.10 wrote.
    assert!(
        !a.contains("unknown_"),
        "a field missing from the dump tables"
    );

    let sum = summary(&r);
    assert_eq!(sum.counts["configs"], 1);
    assert_eq!(sum.members, 1);
}

#[test]
fn unknown_fields_are_kept_in_the_dump() {
    let r = rebuilt("rotated");
    let (_, secret) = r
        .store
        .objects_of(ObjectKind::Secret)
        .next()
        .expect("a secret");
    let mut b = secret.to_vec();
    // Field 77 (bytes "abc"), field 78 (varint 5).
    b.extend_from_slice(&[0xea, 0x04, 0x03, b'a', b'b', b'c', 0xf0, 0x04, 0x05]);
    let v = dump_object(ObjectKind::Secret, &b, DumpOptions::default());
    assert_eq!(
        v["unknown_77"],
        serde_json::json!({"wire_type": 2, "len": 3})
    );
    assert_eq!(
        v["unknown_78"],
        serde_json::json!({"wire_type": 0, "varint": 5})
    );
    let v = dump_object(ObjectKind::Secret, &b, DumpOptions { show_secrets: true });
    assert_eq!(v["unknown_77"]["hex"], "616263");
    // The typed view ignores it and still decodes.
    let s = proto::Secret::decode(b.as_slice()).expect("decodes");
    assert!(!s.id.is_empty());
}

// --- hand-made logs ---

fn entry(index: u64, kind: EntryKind, committed: bool, plaintext: Vec<u8>) -> LogEntry {
    LogEntry {
        index,
        term: 1,
        kind,
        committed,
        before_snapshot: false,
        algorithm: RecordAlgorithm::None,
        plaintext: Some(Zeroizing::new(plaintext)),
        file: String::new(),
        offset: 0,
    }
}

fn put_secret(action: i32, id: &str, data: &[u8]) -> Vec<u8> {
    let mut spec = proto::SecretSpec::default();
    spec.data = data.to_vec();
    spec.annotations = Some(proto::Annotations {
        name: id.into(),
        ..Default::default()
    });
    proto::InternalRaftRequest {
        id: 1,
        action: vec![proto::StoreAction {
            action,
            target: Some(proto::StoreTarget::Secret(proto::Secret {
                id: id.into(),
                spec: Some(spec),
                ..Default::default()
            })),
        }],
    }
    .encode_to_vec()
}

use proto::store_action_kind::{CREATE, UPDATE};

#[test]
fn a_later_entry_truncates_the_ones_at_and_after_its_index() {
    let log = RaftLog {
        entries: vec![
            entry(1, EntryKind::Normal, true, put_secret(CREATE, "a", b"one")),
            entry(2, EntryKind::Normal, true, put_secret(UPDATE, "a", b"two")),
            entry(
                3,
                EntryKind::Normal,
                true,
                put_secret(UPDATE, "a", b"three"),
            ),
            // A new leader overwrote index 2 onwards.
            entry(
                2,
                EntryKind::Normal,
                true,
                put_secret(UPDATE, "a", b"other"),
            ),
        ],
        ..Default::default()
    };
    let r = Store::rebuild(&log).expect("rebuilds");
    assert_eq!(r.applied_entries, 2);
    assert_eq!(r.last_applied_index, 2);
    assert_eq!(secret_data(&r.store, "a"), b"other");
}

#[test]
fn uncommitted_entries_are_counted_and_applied_only_on_request() {
    let log = RaftLog {
        entries: vec![
            entry(1, EntryKind::Normal, true, put_secret(CREATE, "a", b"one")),
            entry(2, EntryKind::Normal, true, Vec::new()),
            entry(
                3,
                EntryKind::Normal,
                false,
                put_secret(UPDATE, "a", b"maybe"),
            ),
        ],
        ..Default::default()
    };
    let r = Store::rebuild(&log).expect("rebuilds");
    assert_eq!(r.uncommitted_entries, 1);
    assert!(!r.uncommitted_applied);
    assert_eq!(r.noop_entries, 1);
    assert_eq!(secret_data(&r.store, "a"), b"one");
    assert!(r.notices.iter().any(|n| n.contains("not committed")));
    let r = Store::rebuild_with(
        &log,
        RebuildOptions {
            include_uncommitted: true,
        },
    )
    .expect("rebuilds");
    assert_eq!(r.uncommitted_entries, 1);
    assert_eq!(secret_data(&r.store, "a"), b"maybe");
}

#[test]
fn rejected_requests_and_gaps_are_reported_not_fatal() {
    let log = RaftLog {
        entries: vec![
            entry(1, EntryKind::Normal, true, put_secret(UPDATE, "x", b"?")),
            entry(3, EntryKind::Normal, true, put_secret(CREATE, "a", b"one")),
            entry(4, EntryKind::Unknown(7), true, vec![1, 2, 3]),
        ],
        ..Default::default()
    };
    let r = Store::rebuild(&log).expect("rebuilds");
    assert_eq!(r.rejected_entries, 1);
    assert_eq!(r.unknown_entries, 1);
    assert_eq!(r.store.count(ObjectKind::Secret), 1);
    assert!(
        r.notices
            .iter()
            .any(|n| n.contains("raft entry 1 was not applied"))
    );
    assert!(
        r.notices
            .iter()
            .any(|n| n.contains("entries 2 to 2 are missing"))
    );
}

#[test]
fn a_bad_entry_names_its_index() {
    let log = RaftLog {
        entries: vec![entry(5, EntryKind::Normal, true, vec![0x12, 0x09, 0x01])],
        ..Default::default()
    };
    let err = Store::rebuild(&log).expect_err("malformed");
    assert!(
        matches!(err, StoreError::BadEntry { index: Some(5), .. }),
        "{err}"
    );
    assert!(err.to_string().contains("raft entry 5"));
}

#[test]
fn unknown_snapshot_version_is_refused() {
    let snap = proto::Snapshot {
        version: 1,
        ..Default::default()
    };
    let err = Store::from_snapshot(&snap.encode_to_vec()).expect_err("refused");
    assert!(err.to_string().contains("unknown snapshot version 1"));
}

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn poke(bytes: &[u8]) {
    let _ = Store::from_snapshot(bytes);
    let mut s = Store::new();
    let _ = s.apply(bytes);
    let _ = s.apply_conf_change(bytes);
    let _ = dump(&s, DumpOptions::default());
    for kind in ObjectKind::ALL {
        let _ = dump_object(kind, bytes, DumpOptions { show_secrets: true });
    }
}

#[test]
fn malformed_and_random_bytes_give_errors_not_panics() {
    let mut rng = Rng(0x5eed);
    for len in 0..200 {
        let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        poke(&b);
    }
    // Damaged copies of real plaintexts: cut short, bits flipped.
    let log = log_of("rotated");
    let mut samples: Vec<Vec<u8>> = log
        .entries
        .iter()
        .filter_map(|e| e.plaintext.as_ref().map(|p| p.to_vec()))
        .collect();
    if let Some(p) = log.snapshot.as_ref().and_then(|s| s.plaintext.as_ref()) {
        samples.push(p.to_vec());
    }
    assert!(samples.len() >= 5);
    for sample in &samples {
        for _ in 0..50 {
            let cut = rng.below(sample.len() + 1);
            poke(&sample[..cut]);
            let mut flipped = sample.clone();
            for _ in 0..3 {
                let i = rng.below(flipped.len());
                if let Some(b) = flipped.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            poke(&flipped);
        }
    }
    // A cut snapshot is an error, not a smaller store.
    let snap = log
        .snapshot
        .as_ref()
        .and_then(|s| s.plaintext.as_ref())
        .expect("plaintext");
    assert!(Store::from_snapshot(&snap[..snap.len() - 3]).is_err());
    // An action with a target field from the future rejects its request.
    let mut s = Store::new();
    assert_eq!(
        s.apply(&[0x12, 0x04, 0x08, 0x01, 0x5a, 0x00]).ok(),
        Some(Applied::Rejected(Rejection::UnknownTarget {
            field: Some(11)
        }))
    );
}

#![no_main]
//! Fuzzes the SwarmKit store rebuilt offline (`moat_swarm::store`) and its
//! JSON dump (`moat_swarm::dump`): the decrypted plaintexts of a Docker
//! Swarm manager's raft snapshot and entries.
//!
//! Each input is read as an `api.Snapshot` (`Store::from_snapshot`), as an
//! `InternalRaftRequest` applied to a store holding one secret
//! (`Store::apply`), as a `raftpb.ConfChange` (`Store::apply_conf_change`),
//! and as one object of every kind (`dump::dump_object`). Beyond "no
//! panic": a store from a snapshot holds no more objects than the input has
//! bytes; a request that fails or is rejected changes nothing; dumps are
//! deterministic; the base secret's value never shows in a redacted dump.

use libfuzzer_sys::fuzz_target;
use moat_swarm::dump::{DumpOptions, dump, dump_object};
use moat_swarm::store::{Applied, ObjectKind, Store};

const HIDDEN: DumpOptions = DumpOptions {
    show_secrets: false,
};
const SHOWN: DumpOptions = DumpOptions { show_secrets: true };

/// The value of the base store's secret: never in a redacted dump.
const VALUE: &[u8] = b"fuzz-secret-value-9f2c";

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = Store::from_snapshot(data) {
        let objects = store.objects().count();
        assert!(
            objects <= data.len() / 2,
            "{objects} objects from {} bytes",
            data.len()
        );
        let a = dump(&store, SHOWN).to_string();
        assert_eq!(a, dump(&store, SHOWN).to_string());
        let _ = dump(&store, HIDDEN).to_string();
    }

    let mut store = base();
    let before = dump(&store, SHOWN).to_string();
    match store.apply(data) {
        Ok(Applied::Actions { count }) => assert!(count <= data.len() / 2),
        Ok(Applied::NoOp) | Ok(Applied::Rejected(_)) | Err(_) => {
            assert_eq!(
                before,
                dump(&store, SHOWN).to_string(),
                "a failed request changed the store"
            );
        }
    }
    let hidden = dump(&store, HIDDEN).to_string();
    if store.get(ObjectKind::Secret, "base").is_some() && !contains(data, VALUE) {
        assert!(!hidden.contains(std::str::from_utf8(VALUE).unwrap_or("")));
    }

    let _ = store.apply_conf_change(data);
    let _ = dump(&store, HIDDEN).to_string();

    for kind in ObjectKind::ALL {
        let a = dump_object(kind, data, HIDDEN).to_string();
        assert_eq!(a, dump_object(kind, data, HIDDEN).to_string());
        let _ = dump_object(kind, data, SHOWN).to_string();
    }
});

/// A store holding one secret, id `base` (encoded by hand: field 1 of
/// `InternalRaftRequest` is its id, 2 an action; action 1 CREATE, target 7
/// a secret; the secret's id is field 1, its spec 3, the spec's data 2).
fn base() -> Store {
    fn field(number: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![number << 3 | 2, body.len() as u8];
        v.extend_from_slice(body);
        v
    }
    let spec = field(2, VALUE);
    let mut secret = field(1, b"base");
    secret.extend(field(3, &spec));
    let mut action = vec![0x08, 0x01];
    action.extend(field(7, &secret));
    let mut request = vec![0x08, 0x01];
    request.extend(field(2, &action));
    let mut store = Store::new();
    assert_eq!(
        store.apply(&request).ok(),
        Some(Applied::Actions { count: 1 })
    );
    store
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

//! Writes the seed corpora under `fuzz/seeds/<target>/` (not a fuzz target).
//!
//! Run once from the repository root, on stable:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --features gen-seeds --bin gen_seeds
//! ```
//!
//! Every key, CA and token it creates is freshly generated and thrown away;
//! the only fixed key is the fuzz fixture [`moat_fuzz::FIXTURE_UNLOCK_KEY`].
//! Running it again replaces the seeds with equivalent new ones.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moat_audit::{
    Action, Actor, Bundle, Details, Event, HeadSigner, MerkleLog, Outcome, Text, Timestamp,
};
use moat_backup::{BackupFile, Manifest, Protection, write_backup};
use moat_node::FUZZ_METHODS;
use serde_json::json;
use zeroize::Zeroizing;

use moat_fuzz::{FIXTURE_AAD, FIXTURE_AGE_IDENTITY, FIXTURE_UNLOCK_KEY, fixture_key};
use moat_lock::{KdfParams, KeySource, Passphrase, UnlockKey, seal, unseal};
use moat_pki::{
    CertExpiry, ClusterId, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role, RootCa,
    RootOptions, TrustRoots, VerifiedCsr, inspect,
};
use moat_tokens::JoinToken;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    // `gen_seeds backup audit_bundle` writes only those targets' seeds.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let write = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        if !only.is_empty() && !only.iter().any(|t| t == target) {
            return Ok(());
        }
        let dir: PathBuf = seeds.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        Ok(())
    };

    // Certificates: a root per key algorithm, and worker/manager node
    // certificates, as DER and as a PEM chain. Same fixed time as the csr
    // target.
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000)?;
    let cluster = ClusterId::generate();
    let root = RootCa::generate(cluster, &RootOptions::default(), now)?;
    let ed_root = RootCa::generate(
        cluster,
        &RootOptions {
            algorithm: KeyAlgorithm::Ed25519,
            generation: 2,
            ..RootOptions::default()
        },
        now,
    )?;
    write("cert_inspect", "root-p256.der", root.certificate())?;
    write("cert_inspect", "root-ed25519.der", ed_root.certificate())?;

    // CSRs for both key algorithms; each also becomes a node certificate.
    for (algorithm, role) in [
        (KeyAlgorithm::EcdsaP256, Role::Worker),
        (KeyAlgorithm::Ed25519, Role::Manager),
    ] {
        let csr = PrivateKey::generate(algorithm)?.csr()?;
        VerifiedCsr::from_der(csr.as_ref())?;
        write("csr", &format!("{algorithm}.der"), csr.as_ref())?;

        let issued = root.sign_csr(
            csr.as_ref(),
            NodeId::generate(),
            role,
            CertExpiry::DEFAULT,
            now,
        )?;
        let name = format!("node-{}-{algorithm}", role.organizational_unit());
        write("cert_inspect", &format!("{name}.der"), issued.der.as_ref())?;
        let mut chain = pem(issued.der.as_ref());
        chain.push_str(&root.certificate_pem());
        assert_eq!(inspect(chain.as_bytes())?.len(), 2);
        write(
            "cert_inspect",
            &format!("{name}-chain.pem"),
            chain.as_bytes(),
        )?;
    }

    // Join tokens pinning the root bundle; one with surrounding whitespace.
    let token = JoinToken::generate(root.certificate_pem().as_bytes())?;
    let text = token.expose_secret();
    text.parse::<JoinToken>()?;
    write("token", "token.txt", text.as_bytes())?;
    write(
        "token",
        "token-padded.txt",
        format!("  {}\n", text.as_str()).as_bytes(),
    )?;

    // Unlock keys: the fixture and a fresh one.
    let fresh = UnlockKey::generate()?;
    let fixture_text = fixture_key().expose_for_operator();
    assert_eq!(
        fixture_text.as_str(),
        FIXTURE_UNLOCK_KEY,
        "fixture key is not canonical"
    );
    write("unlock_key", "fixture.txt", FIXTURE_UNLOCK_KEY.as_bytes())?;
    write(
        "unlock_key",
        "fresh.txt",
        fresh.expose_for_operator().as_bytes(),
    )?;

    // Sealed blobs: three sealed with the fixture key for the fixture AAD
    // (the sealed_blob target opens these), one with another key, and one
    // passphrase blob (header with argon2id parameters).
    let key = KeySource::Key(fixture_key());
    for (name, key_id, plaintext) in [
        ("fixture-empty.bin", 1, &b""[..]),
        ("fixture-short.bin", 2, &b"seed plaintext"[..]),
        ("fixture-32.bin", 7, &[0x42; 32][..]),
    ] {
        let blob = seal(key, key_id, &FIXTURE_AAD, plaintext)?;
        assert_eq!(
            unseal(key, &FIXTURE_AAD, &blob)?.plaintext.as_slice(),
            plaintext
        );
        write("sealed_blob", name, &blob)?;
    }
    write(
        "sealed_blob",
        "other-key.bin",
        &seal(KeySource::Key(&fresh), 3, &FIXTURE_AAD, b"other key")?,
    )?;
    let passphrase = Passphrase::new("fuzz seed passphrase".to_string().into())?;
    write(
        "sealed_blob",
        "passphrase.bin",
        &seal(
            KeySource::Passphrase(&passphrase, KdfParams::minimum()),
            4,
            &FIXTURE_AAD,
            b"passphrase",
        )?,
    )?;

    network_and_file_seeds(&write, &root, &token, now)?;

    println!("seeds written to {}", seeds.display());
    Ok(())
}

/// Seeds of the targets for network and file input: cluster RPC bodies,
/// control-API requests, audit bundles, backups.
fn network_and_file_seeds(
    write: &dyn Fn(&str, &str, &[u8]) -> Result<()>,
    root: &RootCa,
    token: &JoinToken,
    now: OffsetDateTime,
) -> Result<()> {
    let manager_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?;
    let manager = NodeId::generate();
    let csr_pem = {
        let csr = PrivateKey::generate(KeyAlgorithm::EcdsaP256)?.csr()?;
        let b64 = data_encoding::BASE64.encode(csr.as_ref());
        let mut out = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE REQUEST-----\n");
        out
    };
    let issued = root.sign_csr(
        manager_key.csr()?.as_ref(),
        manager,
        Role::Manager,
        CertExpiry::DEFAULT,
        now,
    )?;
    let chain = vec![issued.der.clone()];
    let roots = TrustRoots::new(vec![root.certificate().clone()])?;
    let id = serde_json::to_value(manager)?;

    // Cluster RPC bodies: the first byte is the index of the method in
    // moat_node::FUZZ_METHODS.
    let time = Timestamp::from_datetime(now)?;
    let event = audit_event(manager, 1)?;
    let rpc = |name: &str, method: &str, body: serde_json::Value| -> Result<()> {
        let index = FUZZ_METHODS
            .iter()
            .position(|m| *m == method)
            .ok_or("unknown method")?;
        let mut bytes = vec![u8::try_from(index)?];
        bytes.extend_from_slice(&serde_json::to_vec_pretty(&body)?);
        write("cluster_rpc", name, &bytes)
    };
    let join = json!({
        "token": token.expose_secret().as_str(),
        "csr_pem": csr_pem,
        "hostname": "worker-1",
        "advertise_addr": "10.0.0.2:4377",
        "rejoin": null,
    });
    rpc("join.json", "join", join.clone())?;
    let mut rejoin = join;
    rejoin["rejoin"] = json!({
        "chain_pem": pem(issued.der.as_ref()),
        "signature_b64": data_encoding::BASE64.encode(&manager_key.sign(b"seed")?),
    });
    rpc("rejoin.json", "join", rejoin)?;
    rpc(
        "ca-bundle-ok.json",
        "ca_bundle answer",
        json!({"Ok": {"roots_pem": root.certificate_pem()}}),
    )?;
    rpc(
        "ca-bundle-err.json",
        "ca_bundle answer",
        json!({"Err": {"kind": "not_leader", "message": "this manager is not the leader",
            "hint": "ask the leader", "leader": {"id": id, "addr": "10.0.0.1:4377"}}}),
    )?;
    rpc("renew.json", "renew", json!({"csr_pem": csr_pem}))?;
    rpc(
        "heartbeat.json",
        "heartbeat",
        json!({"address": "10.0.0.2:4377"}),
    )?;
    rpc(
        "propose.json",
        "propose",
        json!({"command": {"RemoveNode": {"id": id, "until": 1_800_000_000}}}),
    )?;
    // A batch as the leader's proposer makes them (D47), holding what
    // `apply` refuses: a batch in a batch, a batch in a `Once`.
    rpc(
        "propose-batch.json",
        "propose",
        json!({"command": {"Batch": [
            {"RemoveNode": {"id": id, "until": 1_800_000_000}},
            {"Once": {"id": 12_345_678_901_234_567_890_u64,
                "command": {"PruneRemoved": {"now": 1_800_000_000}}}},
            {"Batch": [{"PruneRemoved": {"now": 1}}, {"Batch": []}]},
            {"Once": {"id": 7, "command": {"Batch": [{"SetNodeStatus": {"id": id, "ready": false}}]}}},
        ]}}),
    )?;
    rpc(
        "add-voter.json",
        "add_voter",
        json!({"addr": "10.0.0.3:4377"}),
    )?;
    rpc(
        "admin.json",
        "admin",
        json!({"req": {"Remove": {"id": id, "force": false}},
            "by": {"node": id, "actor": "operator:local"}}),
    )?;
    rpc(
        "audit-forward.json",
        "audit_forward",
        json!({"events": [{"journal_seq": 1, "time": 1_800_000_000, "event": event}]}),
    )?;

    // Control-API requests: the first byte picks the type, in the order
    // of the match in fuzz_targets/control_api.rs.
    let requests = [
        json!({"listen_addr": "0.0.0.0:4377", "advertise_addr": "10.0.0.1:4377",
            "cert_expiry_seconds": 7_776_000, "autolock": true, "force_new_cluster": false}),
        json!({"token": token.expose_secret().as_str(), "remote_addr": "10.0.0.1:4377",
            "listen_addr": "0.0.0.0:4377", "advertise_addr": null, "rejoin": false}),
        json!({"force": true}),
        json!({"recipients": ["age1qqqq"], "passphrase": "correct horse", "insecure_plaintext": false}),
        json!({"role": "worker", "rotate": true}),
        json!({"role": "manager", "ttl_seconds": 3600, "uses": 1,
            "labels": {"zone": "a"}, "description": "one node"}),
        json!({"id": "tok-1234"}),
        json!({"node": "worker-1"}),
        json!({"node": "worker-1", "role": "manager"}),
        json!({"node": "worker-1", "force": false}),
        json!({"node": "worker-1", "label_add": {"zone": "a"}, "label_rm": ["old"],
            "availability": "drain"}),
        json!({"cert_expiry_seconds": 86_400, "token_ttl_seconds": 3600, "autolock": false}),
        json!({"key": FIXTURE_UNLOCK_KEY, "share": null}),
        json!({"since": 0, "limit": 100}),
        json!({"since": 5}),
        json!({"seq": 3}),
        json!({"value": "a secret"}),
        json!({"cert_expiry_seconds": null, "ca_cert_pem": root.certificate_pem(),
            "ca_key_pem": "not a key", "force": false}),
        json!({}),
    ];
    for (i, body) in requests.iter().enumerate() {
        let mut bytes = vec![u8::try_from(i)?];
        bytes.extend_from_slice(&serde_json::to_vec(body)?);
        write("control_api", &format!("{i:02}.json"), &bytes)?;
    }

    // Audit bundles: a full export of 6 records with heads at 3 and 6, and
    // the part of it after record 3.
    let signer = HeadSigner::new(&manager_key, &chain, &roots, now)?;
    let mut log = MerkleLog::new();
    let mut records = Vec::new();
    let mut heads = Vec::new();
    for i in 1..=6 {
        let r = log.seal(time, audit_event(manager, i)?);
        log.append_record(&r)?;
        if i % 3 == 0 {
            heads.push(signer.sign(i, log.current_root(), time)?);
        }
        records.push(r);
    }
    let mut full = Bundle::new(root.certificate_pem(), heads.clone());
    for r in &records {
        full.push_record(&r.to_line())?;
    }
    write("audit_bundle", "full.bundle", &full.to_one_file()?)?;
    let mut part =
        Bundle::new(root.certificate_pem(), heads[1..].to_vec()).with_base(3, log.frontier(3)?);
    for r in &records[3..] {
        part.push_record(&r.to_line())?;
    }
    write("audit_bundle", "since-3.bundle", &part.to_one_file()?)?;

    // Backups: signed (format 2) plaintext and encrypted to the fixture
    // identity, and an unsigned format-1 plaintext one framed by hand.
    let manifest = Manifest {
        format: moat_backup::FORMAT_VERSION,
        moat_version: "0.0.0-seed".into(),
        cluster_id: root.cluster_id().to_string(),
        node_id: manager.to_string(),
        created_at: now.unix_timestamp(),
        raft_index: 42,
        raft_term: 3,
        nodes: 2,
        managers: 1,
        autolock: false,
        files: Vec::new(),
    };
    let files = vec![
        BackupFile::new(
            "node.json",
            0o600,
            Zeroizing::new(b"{\"seed\":true}".to_vec()),
        ),
        BackupFile::new(
            "certs/root.pem",
            0o644,
            Zeroizing::new(root.certificate_pem().into_bytes()),
        ),
    ];
    let backup_signer = moat_backup::Signer::new(Arc::new(manager_key), chain, roots);
    let recipient = moat_backup::parse_identity_file(FIXTURE_AGE_IDENTITY)?
        .first()
        .ok_or("no fixture identity")?
        .recipient();
    for (name, protection) in [
        ("signed-plaintext.bin", Protection::InsecurePlaintext),
        ("signed-age.bin", Protection::Recipients(vec![recipient])),
    ] {
        let mut out = Vec::new();
        write_backup(
            &mut out,
            manifest.clone(),
            &files,
            protection,
            &backup_signer,
        )?;
        write("backup", name, &out)?;
    }
    let v1 = Manifest {
        format: 1,
        files: files
            .iter()
            .map(|f| moat_backup::FileEntry {
                path: f.path.clone(),
                len: f.data.len() as u64,
                sha256: data_encoding::HEXLOWER
                    .encode(ring::digest::digest(&ring::digest::SHA256, &f.data).as_ref()),
                mode: f.mode,
            })
            .collect(),
        ..manifest
    };
    let manifest_json = serde_json::to_vec(&v1)?;
    let mut v1_bytes = b"MOATBACKUP1\n".to_vec();
    v1_bytes.extend_from_slice(&u32::try_from(manifest_json.len())?.to_be_bytes());
    v1_bytes.extend_from_slice(&manifest_json);
    v1_bytes.extend_from_slice(&u32::try_from(files.len())?.to_be_bytes());
    for f in &files {
        v1_bytes.extend_from_slice(&u16::try_from(f.path.len())?.to_be_bytes());
        v1_bytes.extend_from_slice(f.path.as_bytes());
        v1_bytes.extend_from_slice(&f.mode.to_be_bytes());
        v1_bytes.extend_from_slice(&(f.data.len() as u64).to_be_bytes());
        v1_bytes.extend_from_slice(&f.data);
    }
    let trailer = ring::digest::digest(&ring::digest::SHA256, &v1_bytes);
    v1_bytes.extend_from_slice(trailer.as_ref());
    write("backup", "unsigned-v1-plaintext.bin", &v1_bytes)?;
    Ok(())
}

/// One audit event of the kind a manager records.
fn audit_event(node: NodeId, i: u64) -> Result<Event> {
    let mut details = Details::new();
    details.insert("serial", &format!("{i:08x}"))?;
    Ok(Event {
        node,
        actor: Actor::node(node),
        action: Action::CERT_RENEW,
        target: Text::new("target", &format!("node:worker-{i}"))?,
        outcome: Outcome::Success,
        details,
    })
}

/// DER certificate as PEM (the pki crate keeps its encoder private).
fn pem(der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

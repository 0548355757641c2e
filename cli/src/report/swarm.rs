//! The sections of a Docker Swarm manager's report
//! (`moat audit report --docker-swarm DIR`): the same layout, formats and
//! findings as a moat cluster's, filled from [`SwarmInventory`].

use moat_api::{SwarmCert, SwarmInventory, TlsProbe};
use moat_report::{Finding, human_duration, short_id};
use time::OffsetDateTime;

use super::{Body, Cell, Report, ReportFormat, Section, Subject, Tone, render_any};

/// The Swarm report in `format`.
pub(crate) fn render_swarm(
    inv: &SwarmInventory,
    findings: &[Finding],
    policy: &moat_report::Policy,
    format: ReportFormat,
    now: OffsetDateTime,
) -> String {
    let mut inv = inv.clone();
    inv.nodes
        .sort_by(|a, b| crate::render::node_order((&a.hostname, &a.id), (&b.hostname, &b.id)));
    render_any(&inv, findings, policy, format, now)
}

impl Subject for SwarmInventory {
    fn heading(&self) -> String {
        format!(
            "moat compliance report for Docker Swarm {} (state directory {})",
            self.cluster_id, self.state_dir
        )
    }

    fn html_title(&self) -> String {
        format!(
            "moat compliance report: Docker Swarm {}",
            short_id(&self.cluster_id)
        )
    }

    fn html_meta(&self) -> Vec<(&'static str, String, bool)> {
        vec![
            ("Docker Swarm", self.cluster_id.clone(), true),
            ("state directory", self.state_dir.clone(), true),
            ("read", self.generated_at.clone(), false),
        ]
    }

    fn sections(r: &Report<'_, Self>) -> Vec<Section> {
        let mut out = vec![
            r.swarm_manager(),
            r.swarm_root_ca(),
            r.swarm_certificates(),
            r.swarm_nodes(),
            r.swarm_keys(),
            r.swarm_raft(),
            r.swarm_tokens(),
            r.swarm_services(),
            r.secrets(
                &r.inv.secrets,
                if r.inv.store_read {
                    "no secrets or configs"
                } else {
                    "not read (no unlock key)"
                },
            ),
            r.swarm_files(),
        ];
        if let Some(p) = &r.inv.probe {
            out.push(r.swarm_probe(p));
            out.push(r.swarm_chain(p));
        }
        out.push(r.policy_section());
        out
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// An optional fact: `not read` when the store could not be.
fn known<T>(v: Option<T>, f: impl FnOnce(T) -> Cell) -> Cell {
    v.map_or_else(|| Cell::new("not read (no unlock key)", Tone::Warn), f)
}

impl Report<'_, SwarmInventory> {
    fn swarm_manager(&self) -> Section {
        let inv = self.inv;
        let mut fields = vec![
            ("State directory", Cell::long(&inv.state_dir)),
            ("Cluster", Cell::mono(&inv.cluster_id)),
            (
                "This node",
                Cell::mono(format!("{} ({})", inv.node_id, inv.node_role)),
            ),
            (
                "Unlock key",
                Cell::plain(if inv.unlock_key_given {
                    "given"
                } else {
                    "not given"
                }),
            ),
            (
                "Store",
                if inv.store_read {
                    Cell::new("decrypted and read", Tone::Good)
                } else {
                    Cell::new("not read", Tone::Warn)
                },
            ),
        ];
        for n in &inv.notices {
            fields.push(("Notice", Cell::new(n, Tone::Warn)));
        }
        for n in &inv.not_checked {
            fields.push(("Not checked", Cell::new(n, Tone::Warn)));
        }
        Section {
            title: "Docker Swarm manager",
            body: Body::Fields(fields),
            note: Some(
                "Read offline from a copy of the manager's state directory; nothing in it was \
                 changed."
                    .into(),
            ),
        }
    }

    fn swarm_root_ca(&self) -> Section {
        let inv = self.inv;
        let r = &inv.root_ca;
        let mut fields = vec![
            ("Subject", Cell::plain(&r.subject)),
            ("Key", self.algorithm(&r.algorithm)),
            ("Signature", Cell::plain(&r.signature_algorithm)),
            ("Fingerprint", Cell::mono(&r.fingerprint)),
            ("Serial", Cell::mono(&r.serial)),
            ("Valid from", self.when(&r.not_before, false)),
            ("Valid until", self.when(&r.not_after, true)),
            (
                "Same as the store's",
                known(inv.root_ca_matches_store, |m| {
                    Cell::flag(m, "yes", "no: the file differs")
                }),
            ),
            (
                "Private key in the store",
                known(inv.root_ca_key_in_store, |k| {
                    if k {
                        Cell::new(
                            format!(
                                "yes, unencrypted ({}) inside the encrypted store",
                                inv.root_ca_key_format.as_deref().unwrap_or("PEM")
                            ),
                            Tone::Warn,
                        )
                    } else {
                        Cell::new("no (external CA)", Tone::Good)
                    }
                }),
            ),
        ];
        fields.push((
            "Rotation",
            match &inv.root_rotation {
                Some(rot) => Cell::new(
                    format!(
                        "under way to {} ({})",
                        rot.new_root.subject, rot.new_root.fingerprint
                    ),
                    Tone::Warn,
                ),
                None if inv.store_read => Cell::plain("none under way"),
                None => Cell::new("not read (no unlock key)", Tone::Warn),
            },
        ));
        Section {
            title: "Root CA",
            body: Body::Fields(fields),
            note: None,
        }
    }

    fn cert_fields(&self, c: &SwarmCert) -> Vec<(&'static str, Cell)> {
        vec![
            ("Subject", Cell::long(&c.subject)),
            ("Key", self.algorithm(&c.algorithm)),
            ("Signature", Cell::plain(&c.signature_algorithm)),
            ("Names", Cell::long(c.sans.join(", "))),
            ("Serial", Cell::mono(&c.serial)),
            (
                "Issued by the root CA",
                Cell::flag(c.issued_by_root, "yes", "no"),
            ),
            (
                "Lifetime",
                Cell::plain(human_duration(std::time::Duration::from_secs(
                    c.lifetime_seconds,
                ))),
            ),
            ("Expires", self.when(&c.not_after, true)),
        ]
    }

    fn swarm_certificates(&self) -> Section {
        let inv = self.inv;
        let mut fields = vec![(
            "Node certificate lifetime",
            known(inv.cert_expiry_seconds, |s| {
                let text = human_duration(std::time::Duration::from_secs(s));
                if s > self.policy.node_cert_max_lifetime.as_secs() {
                    Cell::new(
                        format!(
                            "{text} (policy: at most {})",
                            self.policy.node_cert_max_lifetime
                        ),
                        Tone::Bad,
                    )
                } else {
                    Cell::new(text, Tone::Good)
                }
            }),
        )];
        fields.push((
            "External CAs",
            if inv.external_cas.is_empty() {
                known(inv.store_read.then_some(()), |()| Cell::plain("none"))
            } else {
                Cell::long(
                    inv.external_cas
                        .iter()
                        .map(|c| format!("{} ({})", c.url, c.protocol))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            },
        ));
        fields.push((
            "Signing CA supplied",
            known(inv.signing_ca_supplied, |b| Cell::plain(yes_no(b))),
        ));
        fields.push((
            "FIPS mode",
            known(inv.fips, |b| {
                Cell::new(
                    if b { "on" } else { "off" },
                    if b { Tone::Good } else { Tone::Plain },
                )
            }),
        ));
        for (k, v) in self.cert_fields(&inv.node_cert) {
            fields.push((
                match k {
                    "Subject" => "This node's certificate",
                    other => other,
                },
                v,
            ));
        }
        Section {
            title: "Certificates",
            body: Body::Fields(fields),
            note: None,
        }
    }

    fn swarm_nodes(&self) -> Section {
        let rows = self
            .inv
            .nodes
            .iter()
            .map(|n| {
                vec![
                    Cell::long(&n.hostname),
                    Cell::mono(short_id(&n.id)),
                    Cell::plain(&n.role),
                    Cell::new(
                        &n.status,
                        if n.status == "ready" {
                            Tone::Good
                        } else {
                            Tone::Warn
                        },
                    ),
                    Cell::plain(&n.availability),
                    Cell::plain(&n.manager_status),
                    match &n.cert {
                        Some(c) => self.when(&c.not_after, true),
                        None => Cell::new("not in the store", Tone::Warn),
                    },
                    Cell::plain(&n.cert_source),
                ]
            })
            .collect();
        Section {
            title: "Nodes",
            body: Body::Table {
                headers: &[
                    "HOSTNAME",
                    "ID",
                    "ROLE",
                    "STATUS",
                    "AVAILABILITY",
                    "MANAGER",
                    "CERTIFICATE EXPIRES",
                    "FROM",
                ],
                rows,
                empty: "not read (no unlock key)",
            },
            note: Some(
                "The store keeps no certificate for the first manager: its expiry comes from \
                 its own certificate file when this is that node."
                    .into(),
            ),
        }
    }

    fn swarm_keys(&self) -> Section {
        let a = &self.inv.autolock;
        let k = &self.inv.key_protection;
        let fields = vec![
            ("Autolock", Cell::flag(a.on, "on", "off")),
            (
                "swarm-node.key",
                Cell::new(
                    format!("{} ({})", k.pem_type, k.scheme),
                    if k.weak || !a.key_file_encrypted {
                        Tone::Bad
                    } else {
                        Tone::Good
                    },
                ),
            ),
            (
                "TLS key matches the certificate",
                known(k.matches_cert, |m| Cell::flag(m, "yes", "no")),
            ),
            (
                "raft data key (raft-dek)",
                if a.data_key_readable_without_key {
                    Cell::new("in clear: readable without the unlock key", Tone::Bad)
                } else {
                    Cell::new("wrapped under the unlock key (secretbox)", Tone::Good)
                },
            ),
            (
                "Autolock in the cluster spec",
                known(a.cluster_setting, |b| {
                    Cell::plain(if b { "on" } else { "off" })
                }),
            ),
            (
                "Unlock key in the store",
                known(a.unlock_key_in_store, |b| Cell::plain(yes_no(b))),
            ),
            (
                "Key given is the current one",
                match a.given_key_is_current {
                    Some(b) => Cell::flag(b, "yes", "no: the store holds a newer one"),
                    None => Cell::plain("not checked"),
                },
            ),
            ("Places agree", Cell::flag(a.consistent, "yes", "no")),
            (
                "Key version (kek-version)",
                Cell::plain(
                    a.kek_version
                        .map_or_else(|| "none".into(), |v| v.to_string()),
                ),
            ),
            (
                "Data key rotation",
                if a.pending_data_key {
                    Cell::new("pending key present: rotation half done", Tone::Warn)
                } else if a.needs_rotation {
                    Cell::new("needs rotation", Tone::Warn)
                } else {
                    Cell::plain("none under way")
                },
            ),
        ];
        Section {
            title: "Autolock and keys",
            body: Body::Fields(fields),
            note: Some(
                "The unlock key is the 32 bytes after SWMKEY-1-, used as is (no key \
                 derivation): it wraps the raft data key and is the PBKDF2 password of the TLS \
                 key."
                    .into(),
            ),
        }
    }

    fn swarm_raft(&self) -> Section {
        let r = &self.inv.raft;
        let fields = vec![
            (
                "Record encryption",
                if r.algorithms.is_empty() {
                    Cell::plain("no records read")
                } else {
                    Cell::plain(r.algorithms.join(", "))
                },
            ),
            ("WAL segments", Cell::plain(r.wal_segments.to_string())),
            (
                "Entries",
                Cell::plain(format!(
                    "{} in the WAL, up to index {} (committed: {}{})",
                    r.entries,
                    r.last_index,
                    r.commit_index,
                    if r.uncommitted > 0 {
                        format!(", {} not yet", r.uncommitted)
                    } else {
                        String::new()
                    }
                )),
            ),
            (
                "Snapshot",
                match (r.snapshot_index, r.snapshot_bytes) {
                    (Some(i), Some(b)) => Cell::plain(format!("through index {i}, {b} bytes")),
                    (Some(i), None) => Cell::plain(format!("through index {i}")),
                    _ => Cell::plain("none yet"),
                },
            ),
            (
                "Snapshot interval",
                known(r.snapshot_interval, |v| Cell::plain(format!("{v} entries"))),
            ),
            (
                "Old snapshots kept",
                known(r.keep_old_snapshots, |v| Cell::plain(v.to_string())),
            ),
            ("Members", Cell::long(r.members.join(", "))),
        ];
        Section {
            title: "Raft log",
            body: Body::Fields(fields),
            note: None,
        }
    }

    fn swarm_tokens(&self) -> Section {
        let rows = self
            .inv
            .join_tokens
            .iter()
            .map(|t| {
                vec![
                    Cell::plain(&t.role),
                    Cell::plain(&t.format),
                    Cell::mono(&t.fingerprint),
                    Cell::flag(t.ca_digest_matches, "current root", "another root"),
                    match (&t.changed_at, &t.made_at_or_after) {
                        (Some(at), _) => self.when(at, false),
                        (None, Some(bound)) => Cell::plain(format!(
                            "not in the log kept: made at or after {bound} (the swarm's creation)"
                        )),
                        (None, None) => Cell::plain("unknown"),
                    },
                ]
            })
            .collect();
        Section {
            title: "Join tokens",
            body: Body::Table {
                headers: &["ROLE", "FORMAT", "FINGERPRINT", "CA DIGEST", "MADE"],
                rows,
                empty: "not read (no unlock key)",
            },
            note: Some(
                "Fingerprints only (sha256 of the whole token, first 16 hex digits). Swarm \
                 stores no issue time: the time shown is when the log shows it changing."
                    .into(),
            ),
        }
    }

    fn swarm_services(&self) -> Section {
        let rows = self
            .inv
            .services
            .iter()
            .map(|s| {
                vec![
                    Cell::plain(&s.name),
                    Cell::plain(match s.replicas {
                        Some(n) => format!("{} ({n})", s.mode),
                        None => s.mode.clone(),
                    }),
                    Cell::long(&s.image),
                    Cell::long(s.secrets.join(", ")),
                    Cell::long(s.configs.join(", ")),
                    Cell::plain(s.env_vars.to_string()),
                    Cell::plain(yes_no(s.registry_auth)),
                ]
            })
            .collect();
        Section {
            title: "Services",
            body: Body::Table {
                headers: &[
                    "NAME",
                    "MODE",
                    "IMAGE",
                    "SECRETS",
                    "CONFIGS",
                    "ENV",
                    "REGISTRY AUTH",
                ],
                rows,
                empty: "no services (or not read)",
            },
            note: Some("Environment values and credentials are never shown.".into()),
        }
    }

    fn swarm_files(&self) -> Section {
        let rows = self
            .inv
            .files
            .iter()
            .map(|f| {
                vec![
                    Cell::long(&f.path),
                    Cell::new(&f.mode, if f.too_open { Tone::Bad } else { Tone::Plain }),
                    Cell::plain(&f.expected),
                    Cell::plain(format!("{} bytes", f.size)),
                ]
            })
            .collect();
        Section {
            title: "Files",
            body: Body::Table {
                headers: &["PATH", "MODE", "AT MOST", "SIZE"],
                rows,
                empty: "no files",
            },
            note: None,
        }
    }

    fn swarm_probe(&self, p: &TlsProbe) -> Section {
        let suites: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| {
                if s.weak {
                    format!(
                        "{} {} (weak: {})",
                        s.version,
                        s.name,
                        s.weaknesses.join(", ")
                    )
                } else {
                    format!("{} {}", s.version, s.name)
                }
            })
            .collect();
        let mut fields = vec![
            ("Address", Cell::mono(&p.address)),
            ("Probed", self.when(&p.probed_at, false)),
            ("Versions", Cell::plain(p.versions.join(", "))),
            ("Cipher suites", Cell::long(suites.join(", "))),
            (
                "Key exchange",
                Cell::new(
                    p.key_exchange_groups
                        .iter()
                        .map(|g| format!("{} ({})", g.name, g.versions.join(", ")))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if p.post_quantum {
                        Tone::Good
                    } else {
                        Tone::Warn
                    },
                ),
            ),
            (
                "Client certificate asked",
                Cell::plain(yes_no(p.client_cert_requested)),
            ),
        ];
        if let Some(n) = &p.negotiated {
            fields.push((
                "moat's client negotiated",
                Cell::plain(format!(
                    "{} {} {}",
                    n.version,
                    n.cipher_suite,
                    n.key_exchange_group.as_deref().unwrap_or("")
                )),
            ));
        }
        for n in &p.notes {
            fields.push(("Note", Cell::plain(n)));
        }
        Section {
            title: "TLS probe",
            body: Body::Fields(fields),
            note: None,
        }
    }

    fn swarm_chain(&self, p: &TlsProbe) -> Section {
        let rows = p
            .chain
            .iter()
            .map(|c| {
                vec![
                    Cell::long(&c.subject),
                    Cell::long(&c.issuer),
                    self.algorithm(&c.key_algorithm),
                    self.when(&c.not_after, true),
                    Cell::mono(&c.sha256),
                ]
            })
            .collect();
        Section {
            title: "Certificate chain presented",
            body: Body::Table {
                headers: &["SUBJECT", "ISSUER", "KEY", "EXPIRES", "FINGERPRINT"],
                rows,
                empty: "no certificate seen",
            },
            note: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use moat_report::fixtures::{NOW, swarm_default, swarm_locked};
    use moat_report::{Policy, swarm_findings};

    use super::*;

    fn rendered(inv: &SwarmInventory, format: ReportFormat) -> String {
        let policy = Policy::default();
        let findings = swarm_findings(inv, &policy, NOW);
        render_swarm(inv, &findings, &policy, format, NOW)
    }

    #[test]
    fn the_table_has_every_section_and_escapes_what_the_swarm_wrote() {
        let mut inv = swarm_default();
        inv.nodes[0].hostname = "evil\u{1b}[2J\nhost".into();
        let text = rendered(&inv, ReportFormat::Table);
        assert!(
            text.starts_with("moat compliance report for Docker Swarm 7k3xq0m9r2l8w5v1c4n6b0z2t")
        );
        for section in [
            "\nDocker Swarm manager\n",
            "\nRoot CA\n",
            "\nCertificates\n",
            "\nNodes\n",
            "\nAutolock and keys\n",
            "\nRaft log\n",
            "\nJoin tokens\n",
            "\nServices\n",
            "\nSecrets and configs\n",
            "\nFiles\n",
            "\nTLS probe\n",
            "\nCertificate chain presented\n",
            "\nPolicy\n",
            "\nFindings\n",
        ] {
            assert!(text.contains(section), "{section:?} in\n{text}");
        }
        assert!(
            text.contains("FAIL: "),
            "autolock off fails the default policy"
        );
        assert!(!text.contains('\u{1b}'));
        assert!(text.contains("evil\\u{1b}[2J\\nhost"));
        assert!(text.contains("in clear: readable without the unlock key"));
        assert!(
            text.contains(
                "TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA (weak: CBC mode, SHA-1 MAC)"
            )
        );
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn a_locked_swarm_says_what_was_not_read() {
        let text = rendered(&swarm_locked(), ReportFormat::Table);
        assert!(text.contains("Store:           not read"), "{text}");
        assert!(text.contains("Not checked:     the raft store"));
        assert!(text.contains("not read (no unlock key)"));
        assert!(!text.contains("\nTLS probe\n"), "no probe was asked for");
    }

    #[test]
    fn html_escapes_and_json_reads_back() {
        let mut inv = swarm_default();
        inv.services.push(moat_api::SwarmService {
            id: "x".into(),
            name: "<script>alert(1)</script>".into(),
            mode: "global".into(),
            replicas: None,
            image: "img".into(),
            secrets: vec![],
            configs: vec![],
            env_vars: 0,
            registry_auth: false,
        });
        let html = rendered(&inv, ReportFormat::Html);
        assert!(!html.contains("<script>alert(1)</script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("<title>moat compliance report: Docker Swarm"));
        let json: serde_json::Value =
            serde_json::from_str(&rendered(&inv, ReportFormat::Json)).expect("JSON");
        let back: SwarmInventory =
            serde_json::from_value(json["inventory"].clone()).expect("inventory reads back");
        assert_eq!(back.services.len(), 1);
        assert_eq!(json["fails"], true);
        assert!(json["findings"].as_array().is_some_and(|f| !f.is_empty()));
    }
}

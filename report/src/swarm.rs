//! The checks of a Docker Swarm manager's inventory
//! ([`SwarmInventory`], read offline from its state directory): the same
//! policy, severities and finding shape as a moat cluster's, with fixes in
//! Docker's own commands.

use moat_api::{SwarmCert, SwarmInventory};
use time::OffsetDateTime;

use crate::checks::{Checks, parse_time};
use crate::{Finding, Policy, Severity, human_duration, percent, short_id};

/// The runbook the Swarm fixes point to.
const RUNBOOK: &str = "docs/runbooks/audit-docker-swarm.md";

/// The findings of checking a Swarm manager's `inv` against `policy` at
/// `now`, worst first.
pub fn swarm_findings(inv: &SwarmInventory, policy: &Policy, now: OffsetDateTime) -> Vec<Finding> {
    let mut c = Checks {
        policy,
        now,
        out: Vec::new(),
    };
    c.swarm_unread(inv);
    c.swarm_autolock(inv);
    c.swarm_key(inv);
    c.swarm_ca(inv);
    c.swarm_certs(inv);
    c.swarm_tokens(inv);
    c.swarm_raft(inv);
    c.swarm_files(inv);
    c.swarm_secrets(inv);
    if let Some(probe) = &inv.probe {
        c.swarm_probe(inv, probe);
    }
    let mut out = c.out;
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

impl Checks<'_> {
    fn swarm_unread(&mut self, inv: &SwarmInventory) {
        for what in &inv.not_checked {
            self.push(
                Severity::Info,
                "not checked",
                what.clone(),
                format!(
                    "run the report again with the manager's unlock key \
                     (`--unlock-key-file FILE`; `docker swarm unlock-key -q` on a running \
                     manager shows it) ({RUNBOOK})"
                ),
            );
        }
    }

    fn swarm_autolock(&mut self, inv: &SwarmInventory) {
        let a = &inv.autolock;
        let turn_on = format!(
            "`docker swarm update --autolock=true` on a manager, then keep the unlock key it \
             prints away from the managers' disks; a manager then starts locked until \
             `docker swarm unlock` ({RUNBOOK}#autolock)"
        );
        if !a.on && self.policy.require_autolock {
            let problem = if a.data_key_readable_without_key {
                "autolock is off: the raft data key sits in clear in the `raft-dek` header of \
                 certificates/swarm-node.key, beside the node's unencrypted TLS key, so anyone \
                 with a copy of this disk (a backup, a snapshot of the VM) reads the whole store: \
                 the root CA's private key, every secret, the join tokens"
            } else {
                "autolock is off on this cluster"
            };
            self.push(Severity::High, "autolock", problem, turn_on.clone());
        }
        if !a.consistent {
            let mut places = vec![
                format!(
                    "swarm-node.key {}",
                    if a.key_file_encrypted {
                        "encrypted"
                    } else {
                        "in clear"
                    }
                ),
                format!(
                    "raft-dek {}",
                    if a.data_key_wrapped {
                        "wrapped"
                    } else {
                        "in clear"
                    }
                ),
            ];
            if let Some(on) = a.cluster_setting {
                places.push(format!("cluster setting {}", if on { "on" } else { "off" }));
            }
            if let Some(held) = a.unlock_key_in_store {
                places.push(format!(
                    "unlock key {}in the store",
                    if held { "" } else { "not " }
                ));
            }
            self.push(
                Severity::Medium,
                "autolock",
                format!(
                    "the places that show autolock disagree ({}): a change of the setting that \
                     this manager has not finished applying, or files from different times",
                    places.join(", ")
                ),
                format!(
                    "if Docker is running, wait a minute and copy the state directory again; if \
                     it stays, set it once more: `docker swarm update --autolock=true` \
                     ({RUNBOOK}#autolock)"
                ),
            );
        }
        if a.given_key_is_current == Some(false) {
            self.push(
                Severity::Low,
                "unlock key",
                "the key given opens this node's files, but the store holds a newer one: this \
                 copy was taken between an unlock-key rotation and this node re-wrapping its \
                 keys",
                format!("copy the state directory again after the rotation settles ({RUNBOOK})"),
            );
        }
        if a.pending_data_key || a.needs_rotation {
            self.push(
                Severity::Medium,
                "raft data key",
                if a.pending_data_key {
                    "a data key rotation was left half done (`raft-dek-pending` is set): new \
                     entries are sealed with the pending key while older ones still need the \
                     current one"
                } else {
                    "`raft-dek-needs-rotation` is set: the data key that may have sat in clear \
                     (before autolock was turned on) has not been replaced yet"
                },
                format!(
                    "start the manager's Docker and unlock it: it finishes the rotation by \
                     writing a snapshot; check again with this report ({RUNBOOK}#autolock)"
                ),
            );
        }
    }

    fn swarm_key(&mut self, inv: &SwarmInventory) {
        let k = &inv.key_protection;
        if k.weak {
            self.push(
                Severity::High,
                "node TLS key",
                format!(
                    "certificates/swarm-node.key uses {}: the legacy PEM encryption, whose key \
                     is one MD5 pass over the unlock key",
                    k.scheme
                ),
                format!(
                    "rotate the unlock key (`docker swarm unlock-key --rotate`) on Docker 17.06 \
                     or later: the key file is rewritten as PKCS#8 ({RUNBOOK})"
                ),
            );
        }
        if k.matches_cert == Some(false) {
            self.push(
                Severity::High,
                "node TLS key",
                "the key in certificates/swarm-node.key is not the key of \
                 certificates/swarm-node.crt: the node cannot prove its identity, or one of the \
                 files was replaced",
                format!("compare the files with the running manager's, and take a fresh copy ({RUNBOOK})"),
            );
        }
    }

    fn swarm_ca(&mut self, inv: &SwarmInventory) {
        let rotate = format!(
            "`docker swarm ca --rotate` on a manager: a new root, cross-signed by this one, that \
             every node renews onto ({RUNBOOK}#the-root-ca)"
        );
        self.root(
            &inv.root_ca,
            &rotate,
            "`openssl x509 -noout -dates -in certificates/swarm-root-ca.crt`",
        );
        if inv.root_ca_matches_store == Some(false) {
            self.push(
                Severity::High,
                "root CA",
                "certificates/swarm-root-ca.crt is not the root CA in the raft store: the node \
                 trusts a different root than the cluster signs with",
                format!("take a fresh copy; if it stays, the file was replaced ({RUNBOOK})"),
            );
        }
        if let Some(r) = &inv.root_rotation {
            self.push(
                Severity::Info,
                "root CA",
                format!(
                    "a root CA rotation is under way, to {} ({}){}",
                    r.new_root.subject,
                    r.new_root.fingerprint,
                    if r.cross_signed {
                        ""
                    } else {
                        ", without a cross-signed certificate"
                    }
                ),
                "`docker swarm ca` shows its progress; it finishes once every node has renewed",
            );
        }
        if inv.root_ca_key_in_store == Some(true) {
            let (severity, who) = if inv.autolock.on {
                (
                    Severity::Low,
                    "every manager, and anyone holding a manager's disk together with the \
                     unlock key,",
                )
            } else {
                (Severity::High, "anyone with a copy of a manager's disk")
            };
            self.push(
                severity,
                "root CA key",
                format!(
                    "the root CA's private key is kept unencrypted inside the raft store (only \
                     the store's data key covers it, as {}): {who} can sign node certificates of \
                     any role that every node trusts until the root expires ({})",
                    inv.root_ca_key_format
                        .as_deref()
                        .unwrap_or("a PEM private key"),
                    inv.root_ca.not_after
                ),
                format!(
                    "Swarm has no way to keep its own CA key out of the store: sign with an \
                     external CA instead (`docker swarm ca --rotate --external-ca \
                     protocol=cfssl,url=… --ca-cert ROOT.pem`), and turn autolock on \
                     ({RUNBOOK}#the-root-ca)"
                ),
            );
        }
        for ca in &inv.external_cas {
            self.push(
                Severity::Info,
                "external CA",
                format!(
                    "node certificates are signed by the external CA at {} ({}){}",
                    ca.url,
                    ca.protocol,
                    if ca.has_ca_cert {
                        ""
                    } else {
                        ", with no CA certificate given"
                    }
                ),
                "check that it is reachable from every manager and how it authenticates them",
            );
        }
        if inv.fips == Some(false) {
            self.push(
                Severity::Info,
                "FIPS mode",
                "the cluster does not run in FIPS mode: its raft records are sealed with \
                 XSalsa20-Poly1305 and its keys wrapped with NaCl secretbox, which are not \
                 FIPS 140 approved",
                "Docker CE cannot turn FIPS mode on; a cluster that must be FIPS 140 compliant \
                 needs an engine built for it (set when the swarm is created)",
            );
        }
    }

    fn swarm_certs(&mut self, inv: &SwarmInventory) {
        // Without the store, the cluster's setting is read off this node's
        // certificate, which Swarm backdates by an hour.
        let lifetime = inv.cert_expiry_seconds.unwrap_or(
            inv.node_cert
                .lifetime_seconds
                .saturating_sub(SWARM_BACKDATE),
        );
        self.cert_lifetime(
            lifetime,
            &format!(
                "`docker swarm update --cert-expiry {}` then `docker swarm ca --rotate` so \
                 existing certificates are reissued (a new expiry only applies at the next \
                 renewal) ({RUNBOOK}#certificates)",
                swarm_hours(self.policy.node_cert_max_lifetime.as_secs())
            ),
        );
        let this_node = format!("this node's certificate ({})", short_id(&inv.node_id));
        self.swarm_cert(&this_node, &inv.node_cert);
        for n in &inv.nodes {
            if n.id == inv.node_id || n.cert_source != "store" {
                continue;
            }
            if let Some(cert) = &n.cert {
                let subject = format!("node {} ({})", n.hostname, short_id(&n.id));
                self.swarm_cert(&subject, cert);
            }
        }
    }

    fn swarm_cert(&mut self, subject: &str, cert: &SwarmCert) {
        let renew = format!(
            "Swarm renews a node certificate when 50-80 % of its life has passed; a node that \
             does not is down or cannot reach a manager: `docker node ls`, then \
             `docker swarm ca --rotate` to reissue every certificate ({RUNBOOK}#certificates)"
        );
        self.algorithm(subject, &cert.algorithm, Severity::Medium, &renew);
        if !cert.issued_by_root {
            self.push(
                Severity::High,
                subject,
                format!(
                    "it was not issued by the root CA in certificates/swarm-root-ca.crt \
                     (issuer: {})",
                    cert.issuer
                ),
                renew.clone(),
            );
        }
        let Some(not_after) = self.time(Severity::Medium, subject, "end", &cert.not_after, &renew)
        else {
            return;
        };
        let left = not_after - self.now;
        if left.is_negative() {
            self.push(
                Severity::Critical,
                subject,
                format!(
                    "expired {} ago ({}): the node cannot talk to the managers",
                    human_duration(left.unsigned_abs()),
                    cert.not_after
                ),
                renew,
            );
            return;
        }
        let life = cert.lifetime_seconds.max(1) as f64;
        let fraction = left.as_seconds_f64() / life;
        if fraction < self.policy.cert_renew_fraction.get() {
            self.push(
                Severity::High,
                subject,
                format!(
                    "it has {} of its lifetime left (expires in {}, {}): its renewal is overdue",
                    percent(fraction),
                    human_duration(left.unsigned_abs()),
                    cert.not_after
                ),
                renew,
            );
        }
    }

    fn swarm_tokens(&mut self, inv: &SwarmInventory) {
        for t in &inv.join_tokens {
            let subject = format!("{} join token {}", t.role, t.fingerprint);
            let fix = format!(
                "`docker swarm join-token --rotate {}`, and rotate on a schedule: Swarm tokens \
                 never expire by themselves ({RUNBOOK}#join-tokens)",
                t.role
            );
            if !t.ca_digest_matches {
                self.push(
                    Severity::Medium,
                    &subject,
                    "the CA digest inside it is not the current root CA's: it was made for \
                     another root, and a node joining with it would refuse this cluster's \
                     managers",
                    fix.clone(),
                );
            }
            match (&t.changed_at, &t.made_at_or_after) {
                (Some(at), _) => {
                    self.age(&subject, "made", Some(at), self.policy.token_max_age, &fix);
                }
                (None, Some(bound)) => {
                    let Some(t0) = parse_time(bound) else {
                        continue;
                    };
                    let age = self.now - t0;
                    if age > self.policy.token_max_age.signed() {
                        self.push(
                            Severity::Low,
                            &subject,
                            format!(
                                "Swarm records no issue time, and the log kept does not show it \
                                 being made: it may be as old as {} ({bound}), over the \
                                 policy's {}",
                                human_duration(age.unsigned_abs()),
                                self.policy.token_max_age
                            ),
                            fix,
                        );
                    }
                }
                (None, None) => self.push(
                    Severity::Info,
                    &subject,
                    "Swarm records no issue time, so its age is unknown",
                    fix,
                ),
            }
        }
    }

    fn swarm_raft(&mut self, inv: &SwarmInventory) {
        for alg in &inv.raft.algorithms {
            let lower = alg.to_ascii_lowercase();
            if lower.starts_with("none") {
                self.push(
                    Severity::High,
                    "raft log",
                    "some raft records are stored without encryption (algorithm NONE)",
                    format!("report it to Docker: every record should be sealed ({RUNBOOK})"),
                );
            } else if lower.starts_with("unknown") {
                self.push(
                    Severity::Medium,
                    "raft log",
                    format!("raft records use an algorithm this report does not know ({alg})"),
                    format!("check the Docker version that wrote them ({RUNBOOK})"),
                );
            }
        }
    }

    fn swarm_files(&mut self, inv: &SwarmInventory) {
        for f in inv.files.iter().filter(|f| f.too_open) {
            let key = f.path.ends_with(".key") || f.path.starts_with("raft");
            self.push(
                if key {
                    Severity::High
                } else {
                    Severity::Medium
                },
                &format!("file {}", f.path),
                format!(
                    "its mode is {}, more open than {}: other users on the machine can read it",
                    f.mode, f.expected
                ),
                format!("`chmod {} {}` in the state directory", f.expected, f.path),
            );
        }
    }

    fn swarm_secrets(&mut self, inv: &SwarmInventory) {
        for s in inv.secrets.iter().filter(|s| s.kind == "secret") {
            self.age(
                &format!("secret {}", s.name),
                "created",
                Some(&s.updated_at),
                self.policy.secret_max_age,
                &format!(
                    "Swarm secrets cannot change: create a new one and move the services onto \
                     it (`docker service update --secret-rm {0} --secret-add \
                     source={0}-v2,target={0} SERVICE`) ({RUNBOOK}#secrets)",
                    s.name
                ),
            );
        }
        for svc in inv.services.iter().filter(|s| s.registry_auth) {
            self.push(
                Severity::Info,
                &format!("service {}", svc.name),
                "its spec carries registry credentials (`--with-registry-auth`), stored in the \
                 raft store and sent to every node that runs it",
                "use a credential helper on the nodes instead, or a token with pull rights only",
            );
        }
    }

    fn swarm_probe(&mut self, inv: &SwarmInventory, probe: &moat_api::TlsProbe) {
        let subject = format!("TLS on {}", probe.address);
        let fix = format!(
            "Docker's swarm port offers what its Go TLS defaults allow, and Swarm has no setting \
             to narrow it: keep port 2377 reachable from the nodes only ({RUNBOOK}#tls)"
        );
        self.tls_versions(&subject, &probe.versions, &fix);
        let weak: Vec<String> = probe
            .cipher_suites
            .iter()
            .filter(|s| s.weak)
            .map(|s| format!("{} {} ({})", s.version, s.name, s.weaknesses.join(", ")))
            .collect();
        if !weak.is_empty() {
            self.push(
                Severity::Medium,
                &subject,
                format!("accepts weak cipher suites: {}", weak.join(", ")),
                fix.clone(),
            );
        }
        if !probe.post_quantum && !probe.key_exchange_groups.is_empty() {
            self.push(
                Severity::Low,
                &subject,
                format!(
                    "no post-quantum key exchange (groups: {}): traffic recorded today, which \
                     carries the raft log with the CA key and every secret between managers, \
                     could be decrypted later",
                    probe
                        .key_exchange_groups
                        .iter()
                        .map(|g| g.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                fix.clone(),
            );
        }
        if inv.probe_chain_from_root == Some(false) {
            self.push(
                Severity::High,
                &subject,
                "the manager answering there presents a certificate that the root CA of this \
                 state directory did not sign: the probe reached another swarm, or the copy is \
                 not from this manager's cluster",
                fix,
            );
        }
    }
}

/// How far Swarm backdates a node certificate's start (seconds).
const SWARM_BACKDATE: u64 = 3600;

/// Seconds as Docker's `--cert-expiry` wants them: whole hours (`168h`).
fn swarm_hours(secs: u64) -> String {
    format!("{}h", secs.div_ceil(3600).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, swarm_default, swarm_locked};

    fn about<'a>(fs: &'a [Finding], subject: &str, words: &str) -> Option<&'a Finding> {
        fs.iter()
            .find(|f| f.subject.contains(subject) && f.problem.contains(words))
    }

    #[test]
    fn a_default_swarm_fails_on_autolock_and_its_ca_key_on_disk() {
        let fs = swarm_findings(&swarm_default(), &Policy::default(), NOW);
        let autolock = about(&fs, "autolock", "raft-dek").expect("autolock finding");
        assert_eq!(autolock.severity, Severity::High);
        assert!(autolock.fix.contains("docker swarm update --autolock=true"));
        let ca_key = about(&fs, "root CA key", "unencrypted").expect("CA key finding");
        assert_eq!(
            ca_key.severity,
            Severity::High,
            "autolock off: readable from disk"
        );
        let life = about(&fs, "node certificate lifetime", "3 months").expect("lifetime");
        assert_eq!(life.severity, Severity::Medium);
        assert!(life.fix.contains("--cert-expiry 168h"), "{}", life.fix);
        let tls = about(&fs, "TLS on 127.0.0.1:2377", "TLSv1.2").expect("TLS 1.2 finding");
        assert_eq!(tls.severity, Severity::High);
        assert!(about(&fs, "TLS on", "CBC mode").is_some());
        assert!(about(&fs, "TLS on", "post-quantum").is_some());
        assert!(about(&fs, "FIPS", "FIPS").is_some());
        assert!(crate::fails(&fs, &Policy::default()));
        // Worst first.
        assert!(fs.windows(2).all(|w| w[0].severity >= w[1].severity));
    }

    #[test]
    fn with_autolock_on_the_ca_key_in_the_store_is_low_and_autolock_no_finding() {
        let mut inv = swarm_default();
        inv.autolock.on = true;
        inv.autolock.data_key_readable_without_key = false;
        let fs = swarm_findings(&inv, &Policy::default(), NOW);
        assert!(about(&fs, "autolock", "").is_none());
        let ca_key = about(&fs, "root CA key", "unencrypted").expect("CA key finding");
        assert_eq!(ca_key.severity, Severity::Low);
    }

    #[test]
    fn a_locked_swarm_says_what_it_could_not_check_and_judges_the_files() {
        let fs = swarm_findings(&swarm_locked(), &Policy::default(), NOW);
        let unread = about(&fs, "not checked", "raft store").expect("not checked");
        assert_eq!(unread.severity, Severity::Info);
        assert!(unread.fix.contains("--unlock-key-file"));
        // The lifetime still comes from this node's certificate file.
        assert!(about(&fs, "node certificate lifetime", "3 months").is_some());
        assert!(about(&fs, "autolock", "").is_none());
        assert!(
            about(&fs, "root CA key", "").is_none(),
            "unknown, not guessed"
        );
    }

    #[test]
    fn stale_and_old_tokens_expiring_certificates_and_open_files_are_found() {
        let mut inv = swarm_default();
        inv.join_tokens[0].ca_digest_matches = false;
        inv.join_tokens[0].made_at_or_after = Some(crate::fixtures::at(time::Duration::days(-400)));
        inv.node_cert.not_after = crate::fixtures::at(time::Duration::days(2));
        inv.files[0].mode = "0644".into();
        inv.files[0].too_open = true;
        inv.autolock.pending_data_key = true;
        inv.key_protection.weak = true;
        let fs = swarm_findings(&inv, &Policy::default(), NOW);
        assert!(about(&fs, "worker join token", "another root").is_some());
        let old = about(&fs, "worker join token", "may be as old").expect("token age");
        assert_eq!(old.severity, Severity::Low);
        let near = about(&fs, "this node's certificate", "lifetime left").expect("near expiry");
        assert_eq!(near.severity, Severity::High);
        let file = about(&fs, "file certificates/swarm-node.key", "0644").expect("mode");
        assert_eq!(file.severity, Severity::High);
        assert!(file.fix.contains("chmod 0600"));
        assert!(about(&fs, "raft data key", "half done").is_some());
        assert!(about(&fs, "node TLS key", "MD5").is_some());
    }

    #[test]
    fn a_policy_can_accept_a_default_swarm_cert_lifetime_and_tls_1_2() {
        let policy = Policy::parse(
            b"node_cert_max_lifetime = \"90d\"\nmin_tls_version = \"TLSv1.2\"\nrequire_autolock = false\n",
        )
        .expect("policy");
        let fs = swarm_findings(&swarm_default(), &policy, NOW);
        assert!(about(&fs, "node certificate lifetime", "").is_none());
        assert!(about(&fs, "TLS on", "below the policy").is_none());
        assert!(about(&fs, "autolock", "").is_none());
    }

    #[test]
    fn swarm_hours_round_up_to_whole_hours() {
        assert_eq!(swarm_hours(7 * 86_400), "168h");
        assert_eq!(swarm_hours(1), "1h");
        assert_eq!(swarm_hours(0), "1h");
    }
}

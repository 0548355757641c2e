//! The checks, one test per check or rule, on the samples in
//! `crate::fixtures`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use moat_api::{CryptoInventory, KeyAge};
use time::Duration;

use crate::fixtures::{NOW, ROOT_FP, at, healthy, malformed, troubled};
use crate::{
    CertLife, Finding, Policy, Severity, Summary, TlsVersion, fails, findings, issued_by_root,
    worst,
};

fn check(inv: &CryptoInventory) -> Vec<Finding> {
    findings(inv, &Policy::default(), NOW)
}

/// The findings about subjects containing `subject`.
fn about<'a>(fs: &'a [Finding], subject: &str) -> Vec<&'a Finding> {
    fs.iter().filter(|f| f.subject.contains(subject)).collect()
}

/// The one finding about `subject`, of `severity`, whose problem says
/// `problem`.
fn assert_one(fs: &[Finding], subject: &str, severity: Severity, problem: &str) {
    let found = about(fs, subject);
    assert_eq!(found.len(), 1, "one finding about {subject}: {fs:#?}");
    assert_eq!(found[0].severity, severity, "{:#?}", found[0]);
    assert!(found[0].problem.contains(problem), "{:#?}", found[0]);
    assert!(
        found[0].fix.contains("moat ") || found[0].fix.contains("docs/"),
        "a fix names a command or runbook: {:#?}",
        found[0]
    );
}

#[test]
fn a_healthy_cluster_has_no_findings() {
    assert_eq!(check(&healthy()), vec![]);
}

#[test]
fn cert_with_20_percent_left_is_high_and_50_percent_is_not() {
    let mut inv = healthy();
    inv.nodes[1].not_before = Some(at(Duration::hours(-20)));
    inv.nodes[1].not_after = at(Duration::hours(5)); // 5 of 25 h: 20 %
    let fs = check(&inv);
    assert_one(
        &fs,
        "node web-1",
        Severity::High,
        "20 % of its lifetime left",
    );
    assert!(fs[0].fix.contains("moat node inspect a8c2e4g6j8l0"));
    assert!(fs[0].fix.contains("docs/runbooks/certificates.md"));
    // 50 % left (the healthy inventory) is no finding.
    assert_eq!(about(&check(&healthy()), "node"), Vec::<&Finding>::new());
}

#[test]
fn a_down_node_is_told_to_come_back_up() {
    let mut inv = healthy();
    inv.nodes[1].ready = false;
    inv.nodes[1].not_before = Some(at(Duration::hours(-22)));
    inv.nodes[1].not_after = at(Duration::hours(2));
    let fs = check(&inv);
    assert_one(&fs, "node web-1", Severity::High, "lifetime left");
    assert!(fs[0].fix.contains("the node is down"), "{}", fs[0].fix);
}

#[test]
fn without_a_start_the_lifetime_is_the_clusters() {
    let mut inv = healthy();
    inv.nodes[1].not_before = None;
    inv.nodes[1].not_after = at(Duration::hours(4)); // 4 of 24 h
    assert_one(&check(&inv), "web-1", Severity::High, "17 %");
    inv.nodes[1].not_after = at(Duration::hours(12));
    assert_eq!(check(&inv), vec![]);
    // No start and no cluster lifetime: only expiry can be checked.
    inv.cert_expiry_seconds = 0;
    inv.nodes[1].not_after = at(Duration::minutes(1));
    assert_eq!(check(&inv), vec![]);
}

#[test]
fn an_expired_cert_is_critical() {
    let mut inv = healthy();
    inv.nodes[0].not_before = Some(at(Duration::hours(-30)));
    inv.nodes[0].not_after = at(Duration::hours(-6));
    let fs = check(&inv);
    assert_one(
        &fs,
        "node manager-1",
        Severity::Critical,
        "expired 6 hours ago",
    );
    assert!(fs[0].fix.contains("#a-node-whose-certificate-expired"));
}

#[test]
fn root_expiring_in_100_days_is_a_finding_and_in_2_years_is_not() {
    let mut inv = healthy();
    inv.root_ca.not_after = at(Duration::days(100));
    let fs = check(&inv);
    assert_one(&fs, "root CA", Severity::Medium, "expires in 3 months");
    assert!(fs[0].fix.contains("moat ca --rotate"));
    inv.root_ca.not_after = at(Duration::days(30));
    assert_one(&check(&inv), "root CA", Severity::High, "expires in");
    inv.root_ca.not_after = at(Duration::days(-1));
    assert_one(&check(&inv), "root CA", Severity::Critical, "expired");
    inv.root_ca.not_after = at(Duration::days(730));
    assert_eq!(check(&inv), vec![]);
}

#[test]
fn a_token_40_days_old_is_a_finding_and_1_day_is_not() {
    let mut inv = healthy();
    inv.join_tokens[0].created_at = Some(at(Duration::days(-40)));
    let fs = check(&inv);
    assert_one(
        &fs,
        "join token 3f9k2d0a7u1c5e9b",
        Severity::Medium,
        "5 weeks old",
    );
    assert!(
        fs[0].fix.contains("moat join-token --rotate worker"),
        "{}",
        fs[0].fix
    );
    assert!(fs[0].fix.contains("--token-ttl 30d"), "{}", fs[0].fix);

    let mut inv = healthy();
    inv.join_tokens[1].created_at = Some(at(Duration::days(-40)));
    let fs = check(&inv);
    assert_one(&fs, "join token 7u1c5e9b3f9k2d0a", Severity::Medium, "old");
    assert!(
        fs[0]
            .fix
            .contains("moat join-token revoke 7u1c5e9b3f9k2d0a")
    );

    // An old token that already stopped working is no risk.
    inv.join_tokens[1].expires_at = Some(at(Duration::days(-30)));
    assert_eq!(check(&inv), vec![]);
    // One day old (the healthy inventory) is no finding.
    assert_eq!(check(&healthy()), vec![]);
}

#[test]
fn a_token_of_unknown_age_is_info() {
    let mut inv = healthy();
    inv.join_tokens[0].created_at = None;
    assert_one(&check(&inv), "join token", Severity::Info, "not recorded");
}

#[test]
fn autolock_off_is_high_unless_the_policy_allows_it() {
    let mut inv = healthy();
    inv.autolock = false;
    inv.unlock_key = None;
    let fs = check(&inv);
    assert_one(&fs, "autolock", Severity::High, "autolock is off");
    assert!(fs[0].fix.contains("moat update --autolock=true"));
    assert!(fs[0].fix.contains("docs/runbooks/unlock-a-manager.md"));
    let lax = Policy {
        require_autolock: false,
        ..Policy::default()
    };
    assert_eq!(findings(&inv, &lax, NOW), vec![]);
    assert_eq!(
        about(&check(&healthy()), "autolock"),
        Vec::<&Finding>::new()
    );
}

#[test]
fn a_dek_100_days_old_is_a_finding_and_10_days_is_not() {
    let mut inv = healthy();
    inv.data_key.created_at = Some(at(Duration::days(-100)));
    let fs = check(&inv);
    assert_one(&fs, "data key v3", Severity::Medium, "3 months old");
    assert!(fs[0].fix.contains("docs/runbooks/rotate-the-unlock-key.md"));
    assert_eq!(
        about(&check(&healthy()), "data key"),
        Vec::<&Finding>::new()
    );
}

#[test]
fn an_unlock_key_200_days_old_is_a_finding_and_10_days_is_not() {
    let mut inv = healthy();
    inv.unlock_key = Some(KeyAge {
        version: 4,
        set_at: Some(at(Duration::days(-200))),
    });
    let fs = check(&inv);
    assert_one(&fs, "unlock key (generation 4)", Severity::Medium, "old");
    assert!(fs[0].fix.contains("moat unlock-key --rotate"));
    assert_eq!(
        about(&check(&healthy()), "unlock key"),
        Vec::<&Finding>::new()
    );
}

#[test]
fn a_node_on_another_root_is_high() {
    let mut inv = healthy();
    inv.nodes[1].issuer_fingerprint = "sha256:0000".into();
    assert_one(&check(&inv), "node web-1", Severity::High, "another root");
    // Case does not matter.
    let mut inv = healthy();
    inv.nodes[1].issuer_fingerprint = ROOT_FP.to_uppercase();
    assert_eq!(check(&inv), vec![]);
}

#[test]
fn an_algorithm_outside_the_policy_is_a_finding_and_an_unrecorded_one_low() {
    let mut inv = healthy();
    inv.nodes[1].algorithm = "RSA 2048".into();
    assert_one(
        &check(&inv),
        "web-1",
        Severity::Medium,
        "RSA 2048 is not allowed",
    );
    inv.nodes[1].algorithm = String::new();
    assert_one(&check(&inv), "web-1", Severity::Low, "not recorded");
    let mut inv = healthy();
    inv.root_ca.algorithm = "RSA 1024".into();
    assert_one(&check(&inv), "root CA", Severity::High, "not allowed");
    inv.root_ca.algorithm = "ed25519".into(); // case does not matter
    assert_eq!(check(&inv), vec![]);
}

#[test]
fn tls_below_the_minimum_is_high() {
    let mut inv = healthy();
    inv.tls.versions = vec!["TLSv1.2".into(), "TLSv1.3".into()];
    assert_one(&check(&inv), "TLS", Severity::High, "accepts TLSv1.2");
    inv.tls.versions = vec!["TLSv1_3".into(), "QUICv9".into()];
    assert_one(&check(&inv), "TLS", Severity::Low, "does not know");
    let lax = Policy {
        min_tls_version: TlsVersion::Tls12,
        ..Policy::default()
    };
    let mut inv = healthy();
    inv.tls.versions = vec!["TLSv1.2".into(), "TLSv1.3".into()];
    assert_eq!(findings(&inv, &lax, NOW), vec![]);
}

#[test]
fn unsigned_audit_records_are_low() {
    let mut inv = healthy();
    inv.audit.records = 127;
    assert_one(
        &check(&inv),
        "audit log",
        Severity::Low,
        "7 records are not yet covered by a signed tree head",
    );
    inv.audit.last_head_size = None;
    inv.audit.last_head_at = None;
    assert_one(&check(&inv), "audit log", Severity::Low, "127 records");
    inv.audit.records = 0;
    assert_eq!(check(&inv), vec![]);
}

#[test]
fn a_snapshot_near_its_limit_is_a_finding() {
    let mut inv = healthy();
    inv.audit.snapshot_bytes = Some(127 << 20);
    assert_eq!(check(&inv), vec![]);
    inv.audit.snapshot_bytes = Some(128 << 20);
    assert_one(
        &check(&inv),
        "audit log",
        Severity::Medium,
        "the store's snapshot is 128 MiB, 50 % of its 256 MiB limit, and the audit log (120 records)",
    );
    inv.audit.snapshot_bytes = Some(210 << 20);
    assert_one(
        &check(&inv),
        "audit log",
        Severity::High,
        "82 % of its 256 MiB",
    );
    // An older manager says nothing about it; a zero limit is no limit.
    inv.audit.snapshot_limit_bytes = Some(0);
    assert_eq!(check(&inv), vec![]);
    inv.audit.snapshot_limit_bytes = None;
    assert_eq!(check(&inv), vec![]);
}

/// Guards: inventory text is data; nothing in it may panic a check.
#[test]
fn malformed_inventory_values_are_findings_not_panics() {
    let fs = check(&malformed());
    assert_one(&fs, "root CA", Severity::Medium, "not an RFC 3339 time");
    assert_one(&fs, "manager-1", Severity::Medium, "not an RFC 3339 time");
    assert_one(&fs, "web-1", Severity::Low, "certificate start");
    assert_one(&fs, "join token", Severity::Low, "not an RFC 3339 time");
    assert_one(&fs, "unlock key", Severity::Low, "not an RFC 3339 time");
    assert_one(&fs, "data key", Severity::Low, "not an RFC 3339 time");
    assert_one(&fs, "audit log", Severity::Low, "newest head time");
}

#[test]
fn findings_come_worst_first() {
    let mut inv = healthy();
    inv.audit.records = 121; // low
    inv.autolock = false; // high
    inv.nodes[0].not_after = at(Duration::hours(-1)); // critical
    inv.join_tokens[0].created_at = Some(at(Duration::days(-60))); // medium
    let fs = check(&inv);
    let severities: Vec<Severity> = fs.iter().map(|f| f.severity).collect();
    assert_eq!(
        severities,
        [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low
        ]
    );
    assert_eq!(worst(&fs), Some(Severity::Critical));
    assert!(fails(&fs, &Policy::default()));
    assert_eq!(worst(&[]), None);
    assert!(!fails(&[], &Policy::default()));
    // Only medium and low left: passes at `fail_on = "high"`, not at
    // `"medium"`.
    let rest = &fs[2..];
    assert!(!fails(rest, &Policy::default()));
    let strict = Policy {
        fail_on: Severity::Medium,
        ..Policy::default()
    };
    assert!(fails(rest, &strict));
}

#[test]
fn cert_life_is_what_the_node_check_sees() {
    let inv = troubled();
    let policy = Policy::default();
    let life = |i: usize| CertLife::of(&inv, &inv.nodes[i], NOW).unwrap();
    // Half of 24 h left: fine.
    assert_eq!(life(0).left, Duration::hours(12));
    assert_eq!(life(0).fraction, Some(0.5));
    assert!(!life(0).renewal_overdue(&policy));
    // 3 of 24 h left: overdue, as its finding says.
    assert_eq!(life(2).fraction, Some(0.125));
    assert!(life(2).renewal_overdue(&policy));
    // Expired.
    assert!(life(1).left.is_negative());
    // No usable end, no life.
    assert_eq!(CertLife::of(&malformed(), &malformed().nodes[0], NOW), None);
    assert!(issued_by_root(&inv, &inv.nodes[0]));
    assert!(!issued_by_root(&inv, &inv.nodes[3]));
}

#[test]
fn the_troubled_sample_has_a_finding_in_every_section() {
    let fs = check(&troubled());
    for subject in [
        "root CA",
        "node <script>",
        "db-2",
        "legacy-7",
        "join token",
        "data key",
        "audit log",
        "secret db_password",
    ] {
        assert!(!about(&fs, subject).is_empty(), "{subject}: {fs:#?}");
    }
    let summary = Summary::of(&fs);
    assert_eq!(summary.critical, 1);
    assert_eq!(summary.count(Severity::Critical), 1);
    assert_eq!(worst(&fs), Some(Severity::Critical));
}

#[test]
fn an_old_secret_is_a_finding_and_a_config_never() {
    let mut inv = healthy();
    assert!(
        about(&check(&inv), "secret").is_empty(),
        "10 days is within 90"
    );
    inv.secrets[0].updated_at = "2020-01-01T00:00:00Z".into();
    let fs = check(&inv);
    let old = about(&fs, "secret db_password (version 2)");
    assert_eq!(old.len(), 1, "{fs:#?}");
    assert_eq!(old[0].severity, Severity::Medium);
    assert!(
        old[0].fix.contains("moat secret update db_password"),
        "{:?}",
        old[0]
    );
    inv.secrets[0].kind = "config".into();
    assert!(about(&check(&inv), "db_password").is_empty());
}

#[test]
fn a_service_without_identity_and_an_expired_task_certificate_are_findings() {
    let inv = troubled();
    let fs = check(&inv);
    assert_one(&fs, "service web", Severity::Medium, "no workload identity");
    assert_one(
        &fs,
        "workload certificate of task",
        Severity::High,
        "did not renew it",
    );
    // A policy that does not ask for identities: no finding about it.
    let lax = Policy {
        require_workload_identity: false,
        ..Policy::default()
    };
    assert!(about(&findings(&inv, &lax, NOW), "service web").is_empty());
    // The healthy sample's certificate, 40 minutes from its end: none.
    assert!(about(&check(&healthy()), "workload").is_empty());
}

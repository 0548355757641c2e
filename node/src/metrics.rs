//! The Prometheus endpoint (`moat daemon --metrics-addr A:P`, off by
//! default): `GET /metrics` in the text exposition format, plain HTTP.
//!
//! It tells certificate and CA expiry, certificate renewal failures, token
//! ages, raft state, each node's Ready/Down status, whether the node is
//! locked, the audit log's size and failed unlock attempts. No
//! secret is ever a metric; node ids and host names are (bind it to a
//! private address). See docs/daemon.md for the list.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use moat_api::ErrorKind;
use tokio::net::TcpListener;

use moat_store::model::NodeRecord;

use crate::daemon::{Daemon, Phase};
use crate::error::NodeError;

/// Binds the metrics listener.
pub(crate) async fn bind(addr: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|e| {
        NodeError::new(
            ErrorKind::InvalidArgument,
            format!("cannot listen for metrics on {addr}: {e}"),
        )
        .hint("give --metrics-addr a free ADDRESS:PORT of this machine, e.g. 127.0.0.1:9377")
    })
}

/// Serves `/metrics` until the daemon stops.
pub(crate) async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(daemon);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

async fn metrics(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&d).await,
    )
}

/// A label value, escaped as the exposition format wants.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes one metric family: its help, type and samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// The metrics text.
pub(crate) async fn render(d: &Daemon) -> String {
    let mut out = Out(String::new());
    let now = d.clock.unix();
    let phase = d.phase.read().await;
    out.gauge(
        "moat_locked",
        "1 while this manager is locked and waits for its unlock key.",
        u8::from(matches!(&*phase, Phase::Locked(_))),
    );
    out.family(
        "moat_unlock_failures_total",
        "counter",
        "Failed unlock attempts since the daemon started.",
    );
    out.sample(
        "moat_unlock_failures_total",
        &[],
        d.failed_unlocks.load(Ordering::Relaxed),
    );
    let Phase::Member { node, .. } = &*phase else {
        return out.0;
    };
    let node = node.clone();
    drop(phase);
    if let Some(identity) = node.tls.identity() {
        out.gauge(
            "moat_cert_expiry_timestamp_seconds",
            "End of this node's certificate validity (Unix seconds).",
            identity.not_after.unix_timestamp(),
        );
        out.gauge(
            "moat_cert_not_before_timestamp_seconds",
            "Start of this node's certificate validity (Unix seconds): renewal is due between 50 and 80 % of the way to its end.",
            identity.not_before.unix_timestamp(),
        );
    }
    out.family(
        "moat_cert_renewal_failures_total",
        "counter",
        "Certificate renewals of this node that failed (refused, or no manager answered) since the daemon started.",
    );
    out.sample(
        "moat_cert_renewal_failures_total",
        &[],
        node.renewal_failures.load(Ordering::Relaxed),
    );
    let Some(m) = node.manager() else {
        return out.0;
    };
    let (seen, suppressed) = {
        let r = m.refusals.lock().unwrap_or_else(|p| p.into_inner());
        (r.seen, r.suppressed)
    };
    out.family(
        "moat_join_refusals_total",
        "counter",
        "Join requests this manager refused since it started.",
    );
    out.sample("moat_join_refusals_total", &[], seen);
    out.family(
        "moat_join_refusals_unrecorded_total",
        "counter",
        "Refused joins over the audit rate limit: counted in a summary record, not recorded one by one.",
    );
    out.sample("moat_join_refusals_unrecorded_total", &[], suppressed);
    let refused = m.renewals.lock().unwrap_or_else(|p| p.into_inner()).refused;
    out.family(
        "moat_renewals_refused_total",
        "counter",
        "Certificate renewals this manager refused as too frequent since it started.",
    );
    out.sample("moat_renewals_refused_total", &[], refused);
    let deferred = m
        .forwards
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .deferred;
    out.family(
        "moat_audit_forwards_deferred_total",
        "counter",
        "Journal events from nodes turned away as too many at once (they stay in the node's journal and are forwarded later).",
    );
    out.sample("moat_audit_forwards_deferred_total", &[], deferred);
    let snapshot = m.applied.read().map(|a| a.snapshot_bytes).unwrap_or(0);
    out.gauge(
        "moat_snapshot_bytes",
        "Bytes of this manager's newest store snapshot (the whole state, the audit log included); 0 before the first.",
        snapshot,
    );
    out.gauge(
        "moat_snapshot_limit_bytes",
        "The most a store snapshot may hold: past it, managers cannot load or send it.",
        moat_store::MAX_SNAPSHOT_BYTES,
    );
    let metrics = m.raft.metrics().borrow().clone();
    out.gauge(
        "moat_raft_term",
        "The raft term this manager is in.",
        metrics.current_term,
    );
    out.gauge(
        "moat_raft_is_leader",
        "1 if this manager leads the raft group.",
        u8::from(metrics.current_leader == Some(node.id)),
    );
    out.family(
        "moat_raft_leader",
        "gauge",
        "The leader this manager knows (value 1, leader id as a label).",
    );
    if let Some(leader) = metrics.current_leader {
        out.sample("moat_raft_leader", &[("leader", &leader.to_string())], 1);
    }
    out.family(
        "moat_raft_quorum_ack_age_seconds",
        "gauge",
        "On the leader: seconds since a quorum of managers last acknowledged it; no sample on a follower.",
    );
    if let Some(ms) = metrics.millis_since_quorum_ack {
        out.sample("moat_raft_quorum_ack_age_seconds", &[], seconds(ms));
    }
    out.gauge(
        "moat_raft_last_log_index",
        "Index of the last raft log entry on this manager.",
        metrics.last_log_index.unwrap_or(0),
    );
    out.gauge(
        "moat_raft_commit_index",
        "Index of the last raft log entry applied on this manager (committed).",
        metrics.last_applied.map(|l| l.index).unwrap_or(0),
    );
    let Ok(state) = m.local_state() else {
        return out.0;
    };
    nodes(&mut out, state.nodes.values());
    out.gauge(
        "moat_cert_lifetime_seconds",
        "The cluster's node certificate lifetime (moat update --cert-expiry), seconds.",
        state.policy.cert_expiry_secs,
    );
    if let Some(ca) = &state.ca
        && let Ok(Some(root)) =
            moat_pki::inspect(ca.root_cert_pem.as_bytes()).map(|r| r.into_iter().next())
        && let Ok(t) = time::OffsetDateTime::parse(
            &root.not_after,
            &time::format_description::well_known::Rfc3339,
        )
    {
        out.gauge(
            "moat_root_ca_expiry_timestamp_seconds",
            "End of the root CA certificate's validity (Unix seconds).",
            t.unix_timestamp(),
        );
    }
    out.family(
        "moat_join_token_age_seconds",
        "gauge",
        "Age of each join token (standing and scoped), seconds.",
    );
    for t in crate::tokens::token_summaries(&state) {
        let Some(created) = t.created_at.as_deref().and_then(|c| {
            time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
        }) else {
            continue;
        };
        out.sample(
            "moat_join_token_age_seconds",
            &[("id", &t.id), ("kind", &t.kind), ("role", t.role.as_str())],
            now.saturating_sub(created.unix_timestamp()).max(0),
        );
    }
    out.gauge(
        "moat_audit_records",
        "Records in the cluster's audit log (the last sequence number).",
        state.audit.size(),
    );
    out.gauge(
        "moat_audit_signed_size",
        "Records covered by the newest signed tree head.",
        state.audit.last_head().map(|h| h.size).unwrap_or(0),
    );
    out.gauge(
        "moat_autolock",
        "1 if autolock is on.",
        u8::from(state.policy.autolock),
    );
    out.0
}

/// Milliseconds as seconds, to the millisecond.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The per-node families, from the node records of the store: each
/// node's certificate end and whether the leader last committed it Ready.
fn nodes<'a>(out: &mut Out, nodes: impl Iterator<Item = &'a NodeRecord> + Clone) {
    let labels = |n: &NodeRecord| (n.id.to_string(), n.hostname.clone(), n.role.as_str());
    out.family(
        "moat_node_cert_expiry_timestamp_seconds",
        "gauge",
        "End of each node's recorded certificate validity (Unix seconds).",
    );
    for n in nodes.clone() {
        let (id, hostname, role) = labels(n);
        out.sample(
            "moat_node_cert_expiry_timestamp_seconds",
            &[("node", &id), ("hostname", &hostname), ("role", role)],
            n.cert_not_after,
        );
    }
    out.family(
        "moat_node_ready",
        "gauge",
        "1 if the leader last recorded the node Ready (heartbeating), 0 if Down.",
    );
    for n in nodes {
        let (id, hostname, role) = labels(n);
        out.sample(
            "moat_node_ready",
            &[("node", &id), ("hostname", &hostname), ("role", role)],
            u8::from(n.ready),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_pki::NodeId;
    use moat_store::model::ClusterState;

    #[test]
    fn every_node_has_its_certificate_end_and_its_status() {
        let mut state = ClusterState::default();
        let (up, down) = (NodeId::generate(), NodeId::generate());
        crate::testing::add_worker(&mut state, up, "w-up", true);
        crate::testing::add_worker(&mut state, down, "w-down", false);
        let mut out = Out(String::new());
        nodes(&mut out, state.nodes.values());
        let text = out.0;
        for family in ["moat_node_cert_expiry_timestamp_seconds", "moat_node_ready"] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} gauge\n")).count(),
                1,
                "{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "moat_node_ready{{node=\"{up}\",hostname=\"w-up\",role=\"worker\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "moat_node_ready{{node=\"{down}\",hostname=\"w-down\",role=\"worker\"}} 0\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "moat_node_cert_expiry_timestamp_seconds{{node=\"{down}\",hostname=\"w-down\",role=\"worker\"}} 0\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn milliseconds_are_written_as_seconds() {
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(1_234), "1.234");
        assert_eq!(seconds(61_005), "61.005");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = Out(String::new());
        out.sample("m", &[("host", "x\"}")], 1);
        assert_eq!(out.0, "m{host=\"x\\\"}\"} 1\n");
    }
}

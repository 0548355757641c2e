//! How cluster answers look to people.
//!
//! Pure functions from control API values (and, where time matters, a
//! `now`) to text on a writer, so that their output is snapshot-tested
//! exactly as `moat` prints it. Wording follows Docker's, with "cluster"
//! for "swarm". Every string from the daemon is printed escaped
//! ([`safe`]): a host name or a label a member chose cannot drive the
//! terminal.

use std::cmp::Ordering;
use std::io::{self, Write};
use std::path::PathBuf;

use moat_api::{
    Availability, Host, Info, InitResponse, JoinResponse, JoinTokenResponse, ManagerStatus,
    NodeInfo, NodeState, NodeStatus,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::output::{safe, write_fields, write_table};

/// `moat init`'s answer.
pub(crate) fn init(out: &mut impl Write, r: &InitResponse) -> io::Result<()> {
    writeln!(
        out,
        "Cluster initialized: current node ({}) is now a manager.",
        safe(&r.node_id)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "To add a worker to this cluster, run the following command:"
    )?;
    writeln!(out)?;
    join_command(out, r.worker_token.expose_secret(), &r.advertise_addr)?;
    writeln!(out)?;
    writeln!(
        out,
        "To add a manager to this cluster, run `moat join-token manager` and follow the instructions."
    )?;
    if let Some(key) = &r.unlock_key {
        writeln!(out)?;
        unlock_key(out, key.expose_secret())?;
    }
    Ok(())
}

/// The unlock key and what to do with it (Docker's wording).
pub(crate) fn unlock_key(out: &mut impl Write, key: &str) -> io::Result<()> {
    writeln!(
        out,
        "To unlock a moat manager after it restarts, run `moat unlock` and"
    )?;
    writeln!(out, "provide the following key:")?;
    writeln!(out)?;
    writeln!(out, "    {key}")?;
    writeln!(out)?;
    writeln!(
        out,
        "Remember to store this key in a password manager, since without it you"
    )?;
    writeln!(out, "will not be able to restart the manager.")
}

/// The shares of a split unlock key.
pub(crate) fn unlock_shares(
    out: &mut impl Write,
    threshold: u8,
    shares: &[impl AsRef<str>],
) -> io::Result<()> {
    let n = shares.len();
    writeln!(
        out,
        "The unlock key is split into {n} shares; any {threshold} of them unlock a manager."
    )?;
    writeln!(
        out,
        "Each holder runs `moat unlock` on the locked manager and enters their share."
    )?;
    writeln!(out)?;
    for (i, share) in shares.iter().enumerate() {
        writeln!(out, "Share {} of {n}:", i + 1)?;
        writeln!(out, "    {}", share.as_ref())?;
        writeln!(out)?;
    }
    writeln!(
        out,
        "Give each share to a different person and keep no copy of the whole key."
    )?;
    writeln!(
        out,
        "Fewer than {threshold} shares reveal nothing about the key."
    )
}

/// `moat join`'s answer.
pub(crate) fn join(out: &mut impl Write, r: &JoinResponse) -> io::Result<()> {
    writeln!(out, "This node joined the cluster as a {}.", r.role)
}

/// `moat join-token`'s answer: the join command, or with `quiet` only the
/// token.
pub(crate) fn join_token(
    out: &mut impl Write,
    r: &JoinTokenResponse,
    quiet: bool,
) -> io::Result<()> {
    if quiet {
        return writeln!(out, "{}", r.token.expose_secret());
    }
    if r.rotated {
        writeln!(out, "Successfully rotated {} join token.", r.role)?;
        writeln!(out)?;
    }
    writeln!(
        out,
        "To add a {} to this cluster, run the following command:",
        r.role
    )?;
    writeln!(out)?;
    join_command(out, r.token.expose_secret(), &r.addr)?;
    writeln!(out)
}

/// The command that joins a node, indented: the token in the
/// environment of `moat join`, not in its arguments, where every local
/// user could read it (`ps`); see `moat join` in docs/cli.md.
pub(crate) fn join_command(out: &mut impl Write, token: &str, addr: &str) -> io::Result<()> {
    writeln!(out, "    {}", safe(&join_command_text(token, addr)))
}

/// The join command as one line, unescaped (for JSON, which escapes it);
/// wiped on drop, as it holds the token.
pub(crate) fn join_command_text(token: &str, addr: &str) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!("{JOIN_TOKEN_ENV}={token} moat join {addr}"))
}

/// The environment variable `moat join` reads its token from.
pub(crate) const JOIN_TOKEN_ENV: &str = "MOAT_JOIN_TOKEN";

/// `moat node ls`: one row per node, sorted by host name (`manager-2`
/// before `manager-10`), the answering node's id followed by `*`.
pub(crate) fn node_table(
    out: &mut impl Write,
    nodes: &[NodeInfo],
    now: OffsetDateTime,
) -> io::Result<()> {
    let rows: Vec<Vec<String>> = sorted(nodes)
        .into_iter()
        .map(|n| {
            vec![
                if n.is_self {
                    format!("{} *", n.id)
                } else {
                    n.id.clone()
                },
                n.hostname.clone(),
                status(n.status).into(),
                availability(n.availability).into(),
                n.manager_status.map_or("", manager_status).into(),
                expires(&n.cert_not_after, now),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER STATUS",
            "CERT EXPIRES",
        ],
        &rows,
    )
}

/// `moat node ls -q`: the ids, in the table's order.
pub(crate) fn node_ids(out: &mut impl Write, nodes: &[NodeInfo]) -> io::Result<()> {
    for n in sorted(nodes) {
        writeln!(out, "{}", safe(&n.id))?;
    }
    Ok(())
}

/// `moat node inspect`: aligned `Key: value` lines.
pub(crate) fn node_fields(
    out: &mut impl Write,
    n: &NodeInfo,
    now: OffsetDateTime,
) -> io::Result<()> {
    let mut fields = vec![
        ("ID", n.id.clone()),
        ("Hostname", n.hostname.clone()),
        ("This node", yes_no(n.is_self).into()),
        ("Role", n.role.to_string()),
        ("Status", status(n.status).into()),
        ("Availability", availability(n.availability).into()),
    ];
    if let Some(m) = n.manager_status {
        fields.push(("Manager status", manager_status(m).into()));
    }
    fields.extend([
        ("Address", n.address.clone()),
        (
            "Labels",
            if n.labels.is_empty() {
                "none".into()
            } else {
                n.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "Cert expires",
            match parse_time(&n.cert_not_after) {
                Some(t) => format!("{} ({})", n.cert_not_after, relative(t, now)),
                None => n.cert_not_after.clone(),
            },
        ),
        ("Cert serial", n.cert_serial.clone()),
        ("Cert issuer", n.cert_issuer_fingerprint.clone()),
    ]);
    write_fields(out, &fields)
}

/// `moat info`: the cluster section of `docker info`, for moat.
pub(crate) fn info(out: &mut impl Write, i: &Info, now: OffsetDateTime) -> io::Result<()> {
    writeln!(out, "Cluster: {}", node_state(i.state))?;
    if i.state == NodeState::Inactive {
        return Ok(());
    }
    if i.state == NodeState::Locked {
        for (key, value) in [
            ("NodeID", &i.node_id),
            ("ClusterID", &i.cluster_id),
            ("Error", &i.error),
        ] {
            if let Some(v) = value {
                writeln!(out, " {key}: {}", safe(v))?;
            }
        }
        return Ok(());
    }
    if let Some(id) = &i.node_id {
        writeln!(out, " NodeID: {}", safe(id))?;
    }
    if let Some(e) = &i.error {
        writeln!(out, " Error: {}", safe(e))?;
    }
    writeln!(out, " Is Manager: {}", i.is_manager)?;
    if let Some(c) = &i.cluster_id {
        writeln!(out, " ClusterID: {}", safe(c))?;
    }
    if i.is_manager && i.error.is_none() && i.state == NodeState::Active {
        writeln!(out, " Managers: {}", i.managers)?;
        writeln!(out, " Nodes: {}", i.nodes)?;
        writeln!(out, " CA Configuration:")?;
        writeln!(
            out,
            "  Expiry Duration: {}",
            exact_duration(i.cert_expiry_seconds)
        )?;
        match &i.root_rotation {
            Some(r) => writeln!(out, "  Root Rotation In Progress: true ({})", safe(r))?,
            None => writeln!(out, "  Root Rotation In Progress: false")?,
        }
        writeln!(out, " Autolock Managers: {}", i.autolock)?;
        if let Some(at) = &i.unlock_key_set_at {
            writeln!(
                out,
                " Unlock Key Set: {} (generation {})",
                safe(at),
                i.unlock_key_generation
            )?;
        }
        if let Some(v) = i.data_key_version {
            writeln!(out, " Store Data Key Version: {v}")?;
        }
    }
    if let Some(a) = &i.node_address {
        writeln!(out, " Node Address: {}", safe(a))?;
    }
    if let Some(t) = &i.cert_not_after {
        let when =
            parse_time(t).map_or_else(|| t.clone(), |at| format!("{t} ({})", relative(at, now)));
        writeln!(out, " Node Certificate Expires: {}", safe(&when))?;
    }
    if !i.manager_addresses.is_empty() {
        writeln!(out, " Manager Addresses:")?;
        let mut addrs: Vec<&String> = i.manager_addresses.iter().collect();
        addrs.sort();
        for a in addrs {
            writeln!(out, "  {}", safe(a))?;
        }
    }
    Ok(())
}

/// What `moat dev` reports once its cluster is up. No `Debug`: it holds
/// the join tokens.
pub(crate) struct DevSummary {
    /// Where the nodes' state directories are.
    pub(crate) dir: PathBuf,
    /// Whether `dir` is removed when `moat dev` stops.
    pub(crate) removed_on_exit: bool,
    /// How to run this `moat` from a shell: `moat`, or its path when
    /// `moat` on PATH is not it.
    pub(crate) moat: String,
    /// The `--dir` that `moat dev restart` needs, if any (none for a
    /// temporary directory, which it finds by itself).
    pub(crate) restart_dir: Option<PathBuf>,
    /// The nodes, managers first.
    pub(crate) nodes: Vec<DevNode>,
    /// The address nodes join.
    pub(crate) join_addr: String,
    /// The worker join token.
    pub(crate) worker_token: String,
    /// The manager join token.
    pub(crate) manager_token: String,
}

/// One node of a `moat dev` cluster.
pub(crate) struct DevNode {
    /// `manager-1`, `worker-2`, …
    pub(crate) name: String,
    /// Its control socket.
    pub(crate) host: Host,
    /// Its daemon's process id.
    pub(crate) pid: Option<u32>,
    /// Where it serves Prometheus metrics, if it does.
    pub(crate) metrics_addr: Option<String>,
    /// Whether it is the Raft leader.
    pub(crate) leader: bool,
}

pub(crate) fn dev_summary(out: &mut impl Write, s: &DevSummary) -> io::Result<()> {
    writeln!(
        out,
        "Cluster ready. Nodes, their control sockets and daemons:"
    )?;
    writeln!(out)?;
    let width = s.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
    let host_width = s
        .nodes
        .iter()
        .map(|n| n.host.to_string().len())
        .max()
        .unwrap_or(0);
    for n in &s.nodes {
        let pid = n.pid.map(|p| format!("pid {p}")).unwrap_or_default();
        let metrics = n
            .metrics_addr
            .as_ref()
            .map(|a| format!("   metrics http://{a}/metrics"))
            .unwrap_or_default();
        let line = format!(
            "    {:<width$}   MOAT_HOST={:<host_width$}   {pid:<10}{metrics}{}",
            n.name,
            n.host.to_string(),
            if n.leader { "   (leader)" } else { "" }
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    writeln!(out)?;
    write_fields(
        out,
        &[
            ("Join address", s.join_addr.clone()),
            ("Worker join token", s.worker_token.clone()),
            ("Manager join token", s.manager_token.clone()),
        ],
    )?;
    writeln!(out)?;
    let leader = s.nodes.iter().find(|n| n.leader);
    if let Some(n) = leader.or_else(|| s.nodes.first()) {
        writeln!(out, "Try:")?;
        writeln!(out)?;
        writeln!(out, "    export MOAT_HOST={}; {} node ls", n.host, s.moat)?;
        if let (Some(leader), Some(pid)) = (leader, n.pid) {
            let dir = s
                .restart_dir
                .as_ref()
                .map(|d| format!(" --dir {}", d.display()))
                .unwrap_or_default();
            writeln!(
                out,
                "    kill -9 {pid}    # the leader: watch another manager take over"
            )?;
            writeln!(out, "    {} dev restart {}{dir}", s.moat, leader.name)?;
        }
        writeln!(out)?;
    }
    if s.moat != "moat" {
        writeln!(
            out,
            "`moat` on your PATH is not this binary: `cargo install --path cli` puts it \
             there (see docs/install.md)."
        )?;
    }
    writeln!(
        out,
        "Logs are in {}/<node>/daemon.log. Press Ctrl-C to stop the cluster{}.",
        s.dir.display(),
        if s.removed_on_exit {
            " and remove its directory"
        } else {
            ""
        }
    )
}

/// Docker's `units.HumanDuration`, in lower case (`less than a second`,
/// `about a minute`, `5 minutes`, …): moat-report words its findings with
/// it, and the tables here the same way.
pub(crate) use moat_report::human_duration;

/// `in 23 hours` or `expired 2 days ago`.
pub(crate) fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let d = t - now;
    let span = human_duration(d.unsigned_abs());
    if d.is_negative() {
        format!("expired {span} ago")
    } else {
        format!("in {span}")
    }
}

/// A configured duration, exactly: `1 day`, `90 days`, `1 hour 30
/// minutes`, `45 seconds`.
pub(crate) fn exact_duration(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "day"),
        (secs / 3600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
        (secs % 60, "second"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if text.is_empty() {
        "0 seconds".into()
    } else {
        text.join(" ")
    }
}

/// The `CERT EXPIRES` cell: relative when the time parses, else as given.
fn expires(not_after: &str, now: OffsetDateTime) -> String {
    parse_time(not_after).map_or_else(|| not_after.to_owned(), |t| relative(t, now))
}

pub(crate) fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

fn sorted(nodes: &[NodeInfo]) -> Vec<&NodeInfo> {
    let mut v: Vec<&NodeInfo> = nodes.iter().collect();
    v.sort_by(|a, b| node_order((&a.hostname, &a.id), (&b.hostname, &b.id)));
    v
}

/// The order `moat node ls` lists nodes in, given `(host name, id)`: by
/// host name (`manager-2` before `manager-10`), then by id. The compliance
/// report lists its nodes in this order too.
pub(crate) fn node_order(a: (&str, &str), b: (&str, &str)) -> Ordering {
    natural_cmp(a.0, b.0).then_with(|| a.1.cmp(b.1))
}

/// Orders strings with runs of digits compared as numbers (`node-2` <
/// `node-10`).
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn status(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Ready => "Ready",
        NodeStatus::Down => "Down",
    }
}

fn availability(a: Availability) -> &'static str {
    match a {
        Availability::Active => "Active",
        Availability::Pause => "Pause",
        Availability::Drain => "Drain",
    }
}

fn manager_status(m: ManagerStatus) -> &'static str {
    match m {
        ManagerStatus::Leader => "Leader",
        ManagerStatus::Reachable => "Reachable",
        ManagerStatus::Unreachable => "Unreachable",
    }
}

fn node_state(s: NodeState) -> &'static str {
    match s {
        NodeState::Inactive => "inactive",
        NodeState::Active => "active",
        NodeState::Locked => "locked",
        NodeState::Error => "error",
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

mod services;
#[cfg(test)]
mod tests;

pub(crate) use services::{service_fields, service_ids, service_table, task_table};

/// `moat join-token ls`: one row per token, never a secret.
pub(crate) fn token_ls(out: &mut impl Write, tokens: &[moat_api::TokenSummary]) -> io::Result<()> {
    let headers = [
        "ID",
        "KIND",
        "ROLE",
        "CREATED",
        "EXPIRES",
        "USES LEFT",
        "DESCRIPTION",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for t in tokens {
        rows.push(vec![
            t.id.clone(),
            t.kind.clone(),
            t.role.to_string(),
            t.created_at.clone().unwrap_or_else(|| "-".into()),
            t.expires_at.clone().unwrap_or_else(|| "never".into()),
            t.uses_left
                .map_or_else(|| "unlimited".into(), |u| u.to_string()),
            t.description.clone(),
        ]);
    }
    crate::output::write_table(out, &headers, &rows)
}

//! `moat node …`: the cluster's nodes, through a manager's control API.

use std::io::{self, Write};

use moat_api::{
    NodeInfo, NodeRef, NodeRemoveRequest, NodeRemoveResponse, NodeUpdateRequest, Role,
    RoleChangeRequest, RoleChangeResponse, path,
};
use time::OffsetDateTime;

use crate::args::{Format, NodeInspect, NodeLs, NodeNames, NodeRm, NodeUpdate};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, safe, warn, write_json};
use crate::render;

pub(crate) fn ls(args: &NodeLs) -> Result<(), Failure> {
    let nodes: Vec<NodeInfo> =
        block_on(async { client(&args.host).get(path::NODES).await.or_fail() })?;
    let mut out = crate::output::stdout();
    if args.quiet {
        render::node_ids(&mut out, &nodes)?;
    } else {
        match args.format {
            Format::Json => write_json(&mut out, &nodes)?,
            Format::Table => render::node_table(&mut out, &nodes, OffsetDateTime::now_utc())?,
        }
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn inspect(args: &NodeInspect) -> Result<(), Failure> {
    let request = NodeRef {
        node: args.node.clone(),
    };
    let node: NodeInfo = block_on(async {
        client(&args.host)
            .post(path::NODE_INSPECT, &request)
            .await
            .or_fail()
    })?;
    let mut out = crate::output::stdout();
    match args.format {
        Format::Json => write_json(&mut out, &node)?,
        Format::Table => render::node_fields(&mut out, &node, OffsetDateTime::now_utc())?,
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn promote(args: &NodeNames) -> Result<(), Failure> {
    change_role(args, Role::Manager)
}

pub(crate) fn demote(args: &NodeNames) -> Result<(), Failure> {
    change_role(args, Role::Worker)
}

pub(crate) fn rm(args: &NodeRm) -> Result<(), Failure> {
    let api = client(&args.host);
    each(&args.nodes, |node| {
        let api = api.clone();
        async move {
            let request = NodeRemoveRequest {
                node: node.clone(),
                force: args.force,
            };
            let removed: NodeRemoveResponse =
                api.post(path::NODE_REMOVE, &request).await.or_fail()?;
            if removed.was_manager {
                crate::output::warn(&format!(
                    "{node} was a manager: it held the cluster's CA key. If its key or disk may be compromised, run `moat ca --rotate` to retire everything that key could sign (docs/runbooks/rotate-the-ca.md)."
                ));
            }
            Ok(node)
        }
    })
}

pub(crate) fn update(args: &NodeUpdate) -> Result<(), Failure> {
    let request = NodeUpdateRequest {
        node: args.node.clone(),
        label_add: args.label_map(),
        label_rm: args.label_rm.clone(),
        availability: args.availability.map(Into::into),
    };
    let _: NodeInfo = block_on(async {
        client(&args.host)
            .post(path::NODE_UPDATE, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", safe(&args.node))?;
    out.flush()?;
    Ok(())
}

/// Promotes or demotes every node named, Docker's way: one line per node,
/// the daemon's warning (e.g. an even number of managers) on stderr.
fn change_role(args: &NodeNames, role: Role) -> Result<(), Failure> {
    let api = client(&args.host);
    each(&args.nodes, |node| {
        let api = api.clone();
        async move {
            let request = RoleChangeRequest {
                node: node.clone(),
                role,
            };
            let answer: RoleChangeResponse = api.post(path::NODE_ROLE, &request).await.or_fail()?;
            if let Some(w) = &answer.warning {
                warn(w);
            }
            Ok(match (role, answer.unchanged) {
                (Role::Manager, false) => {
                    format!("Node {node} promoted to a manager in the cluster.")
                }
                (Role::Manager, true) => format!("Node {node} is already a manager."),
                (Role::Worker, false) => format!("Manager {node} demoted in the cluster."),
                (Role::Worker, true) => format!("Node {node} is already a worker."),
            })
        }
    })
}

/// Runs `f` for every node in order, printing the line it returns on
/// stdout or its failure on stderr; fails (exit 1) if any failed.
fn each<F, Fut>(nodes: &[String], f: F) -> Result<(), Failure>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, Failure>>,
{
    block_on(async {
        let mut failed = false;
        for node in nodes {
            match f(node.clone()).await {
                Ok(line) => {
                    let mut out = io::stdout().lock();
                    writeln!(out, "{}", safe(&line))?;
                    out.flush()?;
                }
                Err(failure) => {
                    if nodes.len() == 1 {
                        return Err(failure);
                    }
                    failure.print();
                    failed = true;
                }
            }
        }
        if failed {
            Err(Failure::reported())
        } else {
            Ok(())
        }
    })
}

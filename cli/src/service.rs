//! `moat service …` and `moat node ps`: services through a manager's
//! control API, and the wait for their tasks (Docker's "converged").

use std::collections::BTreeSet;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use moat_api::{
    Client, NodeRef, ServiceChanged, ServiceCreateRequest, ServiceInfo, ServiceRef,
    ServiceRemoveRequest, ServiceRemoveResponse, ServiceScaleRequest, ServiceSettings,
    ServiceUpdateRequest, TaskInfo, path,
};
use time::OffsetDateTime;

use crate::args::{
    FailureActionArg, Format, ModeArg, NodePs, RestartConditionArg, RuntimeArg, ServiceCreate,
    ServiceFlags, ServiceInspect, ServiceLogs, ServiceLs, ServicePs, ServiceRm, ServiceRollback,
    ServiceScale, ServiceUpdate,
};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, safe, write_json};
use crate::render;

/// How often the wait looks at the tasks.
const POLL: Duration = Duration::from_millis(50);

pub(crate) fn create(args: &ServiceCreate) -> Result<(), Failure> {
    let request = ServiceCreateRequest {
        name: args.name.clone(),
        mode: args.mode.map(|m| {
            match m {
                ModeArg::Replicated => "replicated",
                ModeArg::Global => "global",
            }
            .to_owned()
        }),
        runtime: args.runtime.map(|r| {
            match r {
                RuntimeArg::Process => "process",
                RuntimeArg::Docker => "docker",
            }
            .to_owned()
        }),
        image: args.image.clone(),
        args: args.args.clone(),
        env: args.env.clone(),
        labels: args.label.iter().cloned().collect(),
        secrets: args.secret.clone(),
        configs: args.config.clone(),
        settings: settings(&args.flags),
    };
    let api = client(&args.host);
    block_on(async {
        let created: ServiceChanged = api.post(path::SERVICE_CREATE, &request).await.or_fail()?;
        print_line(&created.id)?;
        if !args.flags.detach {
            converge(&api, &created.id, &BTreeSet::new()).await?;
        }
        Ok(())
    })
}

pub(crate) fn ls(args: &ServiceLs) -> Result<(), Failure> {
    let services: Vec<ServiceInfo> =
        block_on(async { client(&args.host).get(path::SERVICES).await.or_fail() })?;
    let mut out = crate::output::stdout();
    if args.quiet {
        render::service_ids(&mut out, &services)?;
    } else {
        match args.format {
            Format::Json => write_json(&mut out, &services)?,
            Format::Table => render::service_table(&mut out, &services)?,
        }
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn ps(args: &ServicePs) -> Result<(), Failure> {
    let request = ServiceRef {
        service: args.service.clone(),
    };
    let mut tasks: Vec<TaskInfo> = block_on(async {
        client(&args.host)
            .post(path::SERVICE_PS, &request)
            .await
            .or_fail()
    })?;
    if args.running {
        tasks.retain(|t| t.desired_state == "running");
    }
    print_tasks(&tasks, args.format)
}

pub(crate) fn node_ps(args: &NodePs) -> Result<(), Failure> {
    let request = NodeRef {
        node: args.node.clone(),
    };
    let tasks: Vec<TaskInfo> = block_on(async {
        client(&args.host)
            .post(path::NODE_PS, &request)
            .await
            .or_fail()
    })?;
    print_tasks(&tasks, args.format)
}

fn print_tasks(tasks: &[TaskInfo], format: Format) -> Result<(), Failure> {
    let mut out = crate::output::stdout();
    match format {
        Format::Json => write_json(&mut out, &tasks)?,
        Format::Table => render::task_table(&mut out, tasks, OffsetDateTime::now_utc())?,
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn inspect(args: &ServiceInspect) -> Result<(), Failure> {
    let request = ServiceRef {
        service: args.service.clone(),
    };
    let service: ServiceInfo = block_on(async {
        client(&args.host)
            .post(path::SERVICE_INSPECT, &request)
            .await
            .or_fail()
    })?;
    let mut out = crate::output::stdout();
    match args.format {
        Format::Json => write_json(&mut out, &service)?,
        Format::Table => render::service_fields(&mut out, &service)?,
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn scale(args: &ServiceScale) -> Result<(), Failure> {
    let request = ServiceScaleRequest {
        scales: args.scales.clone(),
    };
    let api = client(&args.host);
    block_on(async {
        let mut before = Vec::new();
        if !args.detach {
            for (name, _) in &args.scales {
                before.push(tasks_before(&api, name).await?);
            }
        }
        let changed: Vec<ServiceChanged> =
            api.post(path::SERVICE_SCALE, &request).await.or_fail()?;
        for (c, (_, n)) in changed.iter().zip(&args.scales) {
            print_line(&format!("{} scaled to {n}", c.name))?;
        }
        if !args.detach {
            for (c, known) in changed.iter().zip(&before) {
                converge(&api, &c.id, known).await?;
            }
        }
        Ok(())
    })
}

pub(crate) fn update(args: &ServiceUpdate) -> Result<(), Failure> {
    let request = ServiceUpdateRequest {
        service: args.service.clone(),
        image: args.image.clone(),
        args: args
            .args
            .as_ref()
            .map(|a| a.split_whitespace().map(str::to_owned).collect()),
        env_add: args.env_add.clone(),
        env_rm: args.env_rm.clone(),
        constraint_add: args.constraint_add.clone(),
        constraint_rm: args.constraint_rm.clone(),
        secret_add: args.secret_add.clone(),
        secret_rm: args.secret_rm.clone(),
        config_add: args.config_add.clone(),
        config_rm: args.config_rm.clone(),
        force: args.force,
        settings: settings(&args.flags),
    };
    let api = client(&args.host);
    block_on(async {
        let known = if args.flags.detach {
            BTreeSet::new()
        } else {
            tasks_before(&api, &args.service).await?
        };
        let changed: ServiceChanged = api.post(path::SERVICE_UPDATE, &request).await.or_fail()?;
        print_line(&changed.name)?;
        if !args.flags.detach {
            converge(&api, &changed.id, &known).await?;
        }
        Ok(())
    })
}

pub(crate) fn rollback(args: &ServiceRollback) -> Result<(), Failure> {
    let request = ServiceRef {
        service: args.service.clone(),
    };
    let api = client(&args.host);
    block_on(async {
        let known = if args.detach {
            BTreeSet::new()
        } else {
            tasks_before(&api, &args.service).await?
        };
        let changed: ServiceChanged = api.post(path::SERVICE_ROLLBACK, &request).await.or_fail()?;
        print_line(&changed.name)?;
        if !args.detach {
            converge(&api, &changed.id, &known).await?;
        }
        Ok(())
    })
}

pub(crate) fn rm(args: &ServiceRm) -> Result<(), Failure> {
    let request = ServiceRemoveRequest {
        services: args.services.clone(),
    };
    let removed: ServiceRemoveResponse = block_on(async {
        client(&args.host)
            .post(path::SERVICE_REMOVE, &request)
            .await
            .or_fail()
    })?;
    for name in &removed.removed {
        print_line(name)?;
    }
    Ok(())
}

pub(crate) fn logs(args: &ServiceLogs) -> Result<(), Failure> {
    let request = moat_api::ServiceLogsRequest {
        service: args.service.clone(),
        tail_bytes: args.tail_bytes,
    };
    let logs: Vec<moat_api::TaskLog> = block_on(async {
        client(&args.host)
            .post(path::SERVICE_LOGS, &request)
            .await
            .or_fail()
    })?;
    let mut out = crate::output::stdout();
    match args.format {
        Format::Json => write_json(&mut out, &logs)?,
        Format::Table => {
            // Docker's prefix: `web.1.<task id>@<node> | line`.
            for l in &logs {
                let node = l.node.as_deref().unwrap_or_else(|| short(&l.node_id));
                let prefix = format!("{}.{}@{}", l.name, short(&l.task_id), node);
                for line in l.output.lines() {
                    writeln!(out, "{} | {}", safe(&prefix), safe(line))?;
                }
                if let Some(e) = &l.error {
                    crate::output::warn(&format!("{prefix}: no output: {e}"));
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// An id's first 12 characters, as Docker shortens them.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn print_line(line: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", safe(line))?;
    out.flush()?;
    Ok(())
}

/// The flags `create` and `update` share, as the API takes them.
fn settings(f: &ServiceFlags) -> ServiceSettings {
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ServiceSettings {
        replicas: f.replicas,
        constraints: f.constraint.clone(),
        placement_prefs: f.placement_pref.clone(),
        restart_condition: f.restart_condition.map(|c| {
            match c {
                RestartConditionArg::Any => "any",
                RestartConditionArg::OnFailure => "on-failure",
                RestartConditionArg::None => "none",
            }
            .to_owned()
        }),
        restart_delay_ms: ms(f.restart_delay),
        restart_max_attempts: f.restart_max_attempts,
        update_parallelism: f.update_parallelism,
        update_delay_ms: ms(f.update_delay),
        update_failure_action: f.update_failure_action.map(|a| {
            match a {
                FailureActionArg::Pause => "pause",
                FailureActionArg::Rollback => "rollback",
            }
            .to_owned()
        }),
        update_monitor_ms: ms(f.update_monitor),
        stop_grace_ms: ms(f.stop_grace_period),
        identity: f.no_identity.then_some(false),
        identity_ttl_secs: f.identity_ttl.map(|d| d.as_secs()),
    }
}

/// Where a service's tasks are: converged (every wanted task of the
/// current version runs), failed (one of them ended or was rejected), or
/// on the way.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Converged,
    Failed(String),
    Waiting {
        running: u64,
        desired: u64,
        why: Option<String>,
    },
}

/// `known`: the tasks that existed when the wait began; their failures
/// are history, not this command's.
fn progress(service: &ServiceInfo, tasks: &[TaskInfo], known: &BTreeSet<String>) -> Progress {
    if let Some(u) = &service.update_status
        && (u.state == "paused" || u.state == "rollback_paused")
    {
        return Progress::Failed(format!("update {}: {}", u.state, u.message));
    }
    let live: Vec<&TaskInfo> = tasks
        .iter()
        .filter(|t| t.desired_state == "running" && t.version == service.version)
        .collect();
    // A new task of this version that failed, whatever is wanted of it
    // now (the restart policy may have given it up already).
    if let Some(t) = tasks.iter().find(|t| {
        t.version == service.version
            && !known.contains(&t.id)
            && matches!(t.state.as_str(), "failed" | "rejected")
    }) {
        let why = t.error.clone().unwrap_or_else(|| t.message.clone());
        return Progress::Failed(format!("task {} {}: {why}", t.name, t.state));
    }
    let running = live.iter().filter(|t| t.state == "running").count() as u64;
    let old_running = tasks
        .iter()
        .filter(|t| t.version != service.version && t.desired_state == "running")
        .count();
    let desired = service.desired;
    if running >= desired && old_running == 0 && (desired > 0 || service.mode == "replicated") {
        return Progress::Converged;
    }
    let why = live
        .iter()
        .find(|t| t.state == "pending" && !t.message.is_empty())
        .map(|t| format!("{}: {}", t.name, t.message));
    Progress::Waiting {
        running,
        desired,
        why,
    }
}

/// The tasks service `id` has now: what the command about to run did not
/// make (their failures are history, not its own).
async fn tasks_before(api: &Client, id: &str) -> Result<BTreeSet<String>, Failure> {
    let request = ServiceRef {
        service: id.to_owned(),
    };
    let tasks: Vec<TaskInfo> = api.post(path::SERVICE_PS, &request).await.or_fail()?;
    Ok(tasks.into_iter().map(|t| t.id).collect())
}

/// Waits until service `id` converges, showing the progress on standard
/// error; fails at the first task not in `known` that fails to start.
async fn converge(api: &Client, id: &str, known: &BTreeSet<String>) -> Result<(), Failure> {
    let request = ServiceRef {
        service: id.to_owned(),
    };
    let tty = io::stderr().is_terminal();
    let mut last = String::new();
    loop {
        let service: ServiceInfo = api.post(path::SERVICE_INSPECT, &request).await.or_fail()?;
        let tasks: Vec<TaskInfo> = api.post(path::SERVICE_PS, &request).await.or_fail()?;
        match progress(&service, &tasks, known) {
            Progress::Converged => {
                if tty {
                    let _ = writeln!(
                        io::stderr().lock(),
                        "\r\x1b[2Koverall progress: {0} out of {0} tasks",
                        service.desired
                    );
                }
                crate::output::progress("verify: Service converged");
                return Ok(());
            }
            Progress::Failed(why) => {
                if tty {
                    let _ = writeln!(io::stderr().lock());
                }
                return Err(Failure::new(
                    anyhow::anyhow!("service {} did not converge: {why}", service.name),
                    format!(
                        "see `moat service ps {}`; the service stays as created: fix it with `moat service update` or remove it with `moat service rm`",
                        service.name
                    ),
                ));
            }
            Progress::Waiting {
                running,
                desired,
                why,
            } => {
                let mut line = format!("overall progress: {running} out of {desired} tasks");
                if let Some(w) = why {
                    line.push_str(&format!(" ({w})"));
                }
                if line != last {
                    if tty {
                        let mut err = io::stderr().lock();
                        let _ = write!(err, "\r\x1b[2K{}", safe(&line));
                        let _ = err.flush();
                    } else {
                        crate::output::progress(&line);
                    }
                    last = line;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(desired: u64, version: u64) -> ServiceInfo {
        ServiceInfo {
            id: "S".into(),
            name: "web".into(),
            mode: "replicated".into(),
            desired,
            running: 0,
            runtime: "process".into(),
            image: "x".into(),
            args: vec![],
            env: vec![],
            labels: Default::default(),
            constraints: vec![],
            placement_prefs: vec![],
            restart_condition: "any".into(),
            restart_delay_ms: 0,
            restart_max_attempts: None,
            update_parallelism: 1,
            update_delay_ms: 0,
            update_failure_action: "pause".into(),
            update_monitor_ms: 0,
            stop_grace_ms: 0,
            version,
            created_at: String::new(),
            updated_at: String::new(),
            update_status: None,
            has_previous_spec: false,
            secrets: Vec::new(),
            identity: None,
        }
    }

    fn task(slot: u64, state: &str, desired: &str, version: u64) -> TaskInfo {
        TaskInfo {
            id: format!("T{slot}{state}"),
            name: format!("web.{slot}"),
            service_id: "S".into(),
            service: "web".into(),
            slot,
            node_id: None,
            node: None,
            image: "x".into(),
            desired_state: desired.into(),
            state: state.into(),
            since: String::new(),
            since_unix_ms: 0,
            message: String::new(),
            error: Some("exit status 3".into()),
            pid: None,
            container_id: None,
            exit_code: None,
            version,
            attempt: 0,
        }
    }

    #[test]
    fn the_wait_ends_on_convergence_or_the_first_failure() {
        let none = BTreeSet::new();
        let s = service(2, 1);
        let running = [
            task(1, "running", "running", 1),
            task(2, "running", "running", 1),
        ];
        assert_eq!(progress(&s, &running, &none), Progress::Converged);
        let half = [
            task(1, "running", "running", 1),
            task(2, "starting", "running", 1),
        ];
        assert!(matches!(
            progress(&s, &half, &none),
            Progress::Waiting {
                running: 1,
                desired: 2,
                ..
            }
        ));
        let failed = [
            task(1, "running", "running", 1),
            task(2, "failed", "running", 1),
        ];
        match progress(&s, &failed, &none) {
            Progress::Failed(why) => assert!(why.contains("web.2 failed: exit status 3"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A failure from before the wait (shut down, replaced) does not
        // count; one while it waits does, even if already given up.
        let history = [
            task(1, "running", "running", 1),
            task(2, "running", "running", 1),
            task(2, "failed", "shutdown", 1),
        ];
        let old: BTreeSet<String> = [history[2].id.clone()].into();
        assert_eq!(progress(&s, &history, &old), Progress::Converged);
        assert!(matches!(progress(&s, &history, &none), Progress::Failed(_)));
        // An update: old-version tasks still wanted means not done.
        let s2 = service(2, 2);
        let mixed = [
            task(1, "running", "running", 2),
            task(2, "running", "running", 1),
        ];
        assert!(matches!(
            progress(&s2, &mixed, &none),
            Progress::Waiting { .. }
        ));
    }
}

//! Tables of services and tasks (`service ls`, `service ps`, `node ps`,
//! `service inspect`), in Docker's columns.

use std::io::{self, Write};

use moat_api::{ServiceInfo, TaskInfo};
use time::OffsetDateTime;

use super::human_duration;
use crate::output::{safe, write_fields, write_table};

/// `moat service ls`.
pub(crate) fn service_table(out: &mut impl Write, services: &[ServiceInfo]) -> io::Result<()> {
    let mut sorted: Vec<&ServiceInfo> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = sorted
        .into_iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone(),
                s.mode.clone(),
                format!("{}/{}", s.running, s.desired),
                format!("{} ({})", command_line(&s.image, &s.args), s.runtime),
            ]
        })
        .collect();
    write_table(out, &["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], &rows)
}

/// `moat service ls -q`.
pub(crate) fn service_ids(out: &mut impl Write, services: &[ServiceInfo]) -> io::Result<()> {
    let mut sorted: Vec<&ServiceInfo> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for s in sorted {
        writeln!(out, "{}", safe(&s.id))?;
    }
    Ok(())
}

/// `moat service ps` and `moat node ps`: the daemon's order (service,
/// slot, newest first); older tasks of a slot are marked `\_` as Docker
/// marks them.
pub(crate) fn task_table(
    out: &mut impl Write,
    tasks: &[TaskInfo],
    now: OffsetDateTime,
) -> io::Result<()> {
    let mut previous: Option<(&str, u64, Option<&str>)> = None;
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let slot = (t.service_id.as_str(), t.slot, t.node_id.as_deref());
            let history = previous == Some(slot);
            previous = Some(slot);
            vec![
                t.id.clone(),
                if history {
                    format!(" \\_ {}", t.name)
                } else {
                    t.name.clone()
                },
                t.image.clone(),
                t.node
                    .clone()
                    .or_else(|| t.node_id.clone())
                    .unwrap_or_default(),
                capitalized(&t.desired_state),
                current_state(t, now),
                t.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    )
}

/// `Running 5 seconds ago`; a pending task says why instead.
fn current_state(t: &TaskInfo, now: OffsetDateTime) -> String {
    let since = OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.since_unix_ms) * 1_000_000)
        .unwrap_or(now);
    let ago = human_duration((now - since).unsigned_abs());
    let mut s = format!("{} {ago} ago", capitalized(&t.state));
    if t.state == "pending" && !t.message.is_empty() {
        s.push_str(&format!(": {}", t.message));
    }
    s
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn command_line(image: &str, args: &[String]) -> String {
    if args.is_empty() {
        image.to_owned()
    } else {
        format!("{image} {}", args.join(" "))
    }
}

/// `moat service inspect`: aligned `Key: value` lines.
pub(crate) fn service_fields(out: &mut impl Write, s: &ServiceInfo) -> io::Result<()> {
    let ms = |v: u64| format!("{:?}", std::time::Duration::from_millis(v));
    let mut fields = vec![
        ("ID", s.id.clone()),
        ("Name", s.name.clone()),
        ("Mode", s.mode.clone()),
        (
            "Replicas",
            format!("{} running of {}", s.running, s.desired),
        ),
        ("Runtime", s.runtime.clone()),
        ("Image", s.image.clone()),
        ("Args", s.args.join(" ")),
        ("Env", s.env.join(", ")),
        ("Constraints", s.constraints.join(", ")),
        ("Placement prefs", s.placement_prefs.join(", ")),
        (
            "Restart policy",
            format!(
                "{}, delay {}, max attempts {}",
                s.restart_condition,
                ms(s.restart_delay_ms),
                s.restart_max_attempts
                    .map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
            ),
        ),
        (
            "Update config",
            format!(
                "parallelism {}, delay {}, on failure {}, monitor {}",
                s.update_parallelism,
                ms(s.update_delay_ms),
                s.update_failure_action,
                ms(s.update_monitor_ms)
            ),
        ),
        ("Stop grace period", ms(s.stop_grace_ms)),
        (
            "Secrets",
            s.secrets
                .iter()
                .map(|u| {
                    format!(
                        "{} {}@{}{} as {} ({})",
                        u.kind,
                        u.name,
                        u.version,
                        if u.pinned { " pinned" } else { "" },
                        u.target,
                        u.mode
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "Identity",
            s.identity.as_ref().map_or_else(
                || "none (--no-identity)".to_owned(),
                |i| {
                    format!(
                        "{}, certificates for {}",
                        i.spiffe_id,
                        humantime::format_duration(std::time::Duration::from_secs(i.ttl_secs))
                    )
                },
            ),
        ),
        ("Version", s.version.to_string()),
        ("Created", s.created_at.clone()),
        ("Updated", s.updated_at.clone()),
    ];
    if let Some(u) = &s.update_status {
        let mut text = format!("{} (started {})", u.state, u.started_at);
        if !u.message.is_empty() {
            text.push_str(&format!(": {}", u.message));
        }
        fields.push(("Update status", text));
    }
    write_fields(out, &fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, slot: u64, state: &str, desired: &str, since_ms: i64) -> TaskInfo {
        TaskInfo {
            id: id.into(),
            name: format!("web.{slot}"),
            service_id: "S".into(),
            service: "web".into(),
            slot,
            node_id: Some("N1".into()),
            node: Some("m1".into()),
            image: "/bin/sleep".into(),
            desired_state: desired.into(),
            state: state.into(),
            since: String::new(),
            since_unix_ms: since_ms,
            message: "no suitable node (constraint node.labels.zone==a matched 0 of 5 nodes)"
                .into(),
            error: None,
            pid: None,
            container_id: None,
            exit_code: None,
            version: 1,
            attempt: 0,
        }
    }

    #[test]
    fn ps_marks_history_and_says_why_a_task_waits() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let tasks = vec![
            task("T2", 1, "running", "running", 999_995_000),
            task("T1", 1, "failed", "shutdown", 999_000_000),
            task("T3", 2, "pending", "running", 999_999_000),
        ];
        let mut out = Vec::new();
        task_table(&mut out, &tasks, now).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].contains("web.1") && !lines[1].contains("\\_"),
            "{text}"
        );
        assert!(lines[1].contains("Running 5 seconds ago"), "{text}");
        assert!(
            lines[2].contains("\\_ web.1") && lines[2].contains("Failed"),
            "{text}"
        );
        assert!(lines[2].contains("Shutdown"), "{text}");
        assert!(
            lines[3].contains("Pending") && lines[3].contains("matched 0 of 5 nodes"),
            "{text}"
        );
    }
}
